//! The namespace record: decode → encode → decode round trip, and upsert keeps it valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monofs_net::ns;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = ns::decode(data) else { return };
    if data.len() > monofs_net::MAX_RECORD {
        return;
    }
    let enc = ns::encode(&entries).expect("a decoded record is within every limit");
    assert_eq!(enc, data, "re-encodes differently");
    assert_eq!(ns::decode(&enc).unwrap(), entries);
    if let Some(first) = entries.first() {
        let mut v = entries.clone();
        ns::upsert(&mut v, first.clone());
        let _ = ns::encode(&v);
    }
});
