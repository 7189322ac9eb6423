//! The cluster state: decode → encode round trip, and joining a decoded state
//! with itself and with a stamped update keeps it valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monofs_net::state::{ClusterState, Entry};

fuzz_target!(|data: &[u8]| {
    let Ok(state) = ClusterState::decode(data) else { return };
    let enc = state.encode().expect("a decoded state is within every limit");
    assert_eq!(enc, data, "re-encodes differently");
    let mut joined = state.clone();
    joined.join(state.clone());
    assert_eq!(joined, state, "join is not idempotent");
    if let Some(name) = state.entries.keys().next().cloned() {
        let top = state.max_stamp().tick(0);
        joined.insert(name.clone(), Entry { stamp: top, writer: String::new(), value: None });
        assert_eq!(joined.value(&name), None, "a later stamp does not win");
        let _ = joined.encode();
    }
});
