//! The fuzzing seeds of the net formats (fuzz/corpus, written by fuzz/seeds.py)
//! are real messages: each decodes, and re-encodes to the same bytes. A seed
//! that stopped decoding would leave its fuzz target starting from noise.

use std::path::PathBuf;

use monofs_net::proto::{Request, Response};
use monofs_net::state::ClusterState;
use monofs_net::{dir, ns};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {}", d.display());
    v
}

#[test]
fn proto_seeds_decode() {
    for (name, body) in seeds("net_proto") {
        let mut out = Vec::new();
        match (Request::decode(&body), Response::decode(&body)) {
            (Ok(r), _) => r.encode(&mut out),
            (_, Ok(r)) => r.encode(&mut out),
            (Err(a), Err(b)) => panic!("{name}: {a} / {b}"),
        }
        assert_eq!(out, body, "{name}");
    }
}

#[test]
fn record_seeds_decode() {
    for (name, raw) in seeds("dir_record") {
        let entries = dir::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(dir::encode(&entries).unwrap(), raw, "{name}");
    }
    for (name, raw) in seeds("ns_record") {
        let entries = ns::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ns::encode(&entries).unwrap(), raw, "{name}");
    }
}

#[test]
fn cluster_state_seeds_decode() {
    for (name, raw) in seeds("cluster_state") {
        let state = ClusterState::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(state.encode().unwrap(), raw, "{name}");
    }
}
