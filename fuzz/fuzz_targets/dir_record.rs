//! Directory records: decode, and decode → encode → decode gives the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monofs_net::dir;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = dir::decode(data) else { return };
    // The decoder does not require sorted names; `encode` expects them sorted
    // and unique, as every writer produces them.
    let sorted = entries.windows(2).all(|w| w[0].name < w[1].name);
    if !sorted {
        return;
    }
    if data.len() > monofs_net::MAX_RECORD {
        return;
    }
    let enc = dir::encode(&entries).expect("a decoded record is within every limit");
    assert_eq!(enc, data, "re-encodes differently");
    assert_eq!(dir::decode(&enc).unwrap(), entries);
    for e in &entries {
        assert!(dir::find(&entries, &e.name).is_some());
    }
});
