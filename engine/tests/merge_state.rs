//! MERGE_STATE: concurrent merges of the cluster state on one node lose no
//! entry, the result is durable, and the state cannot be written any other way.

mod common;

use std::sync::Arc;

use common::*;
use monofs_net::client::NodeClient;
use monofs_net::keys;
use monofs_net::proto::{Request, Response};
use monofs_net::state::{ClusterState, Entry, Hlc};

fn one(name: &str, wall_ms: u64, writer: &str, value: Option<&[u8]>) -> ClusterState {
    let mut s = ClusterState::default();
    s.insert(name.into(), Entry { stamp: Hlc { wall_ms, counter: 0 }, writer: writer.into(), value: value.map(<[u8]>::to_vec) });
    s
}

fn merge(c: &NodeClient, s: &ClusterState) -> Result<ClusterState, String> {
    let key = keys::cluster_state();
    match c.call_shard(c.shard_of(&key), &Request::MergeState(s.encode().unwrap())).map_err(|e| e.to_string())? {
        Response::Data(d) => Ok(ClusterState::decode(&d).unwrap()),
        other => Err(format!("{other:?}")),
    }
}

fn stored(c: &NodeClient) -> ClusterState {
    ClusterState::decode(&c.get(&keys::cluster_state(), 0, u32::MAX).unwrap().unwrap()).unwrap()
}

#[test]
fn concurrent_merges_lose_nothing_and_survive_restart() {
    let db = db_dir("merge-state");
    let (node, addr) = start_node(&db, 2);
    let c = Arc::new(client(&addr));
    // 8 writers × 50 merges of distinct entries, all at once on one shard.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let joined = merge(&c, &one(&format!("repo/w{t}/{i}"), 10, &format!("r{t}"), Some(b"v"))).unwrap();
                    assert!(joined.entries.contains_key(&format!("repo/w{t}/{i}")), "answer holds the merged entry");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(stored(&c).entries.len(), 400);
    // The merge rule: an older write loses, a newer one (here a removal) wins.
    let after = merge(&c, &one("repo/w0/0", 9, "zz", Some(b"older"))).unwrap();
    assert_eq!(after.value("repo/w0/0"), Some(&b"v"[..]));
    let after = merge(&c, &one("repo/w0/0", 11, "a", None)).unwrap();
    assert_eq!(after.value("repo/w0/0"), None);
    // Only MERGE_STATE writes the state.
    let err = c.put_batch(vec![(keys::cluster_state(), b"x".to_vec())]).unwrap_err();
    assert!(err.to_string().contains("MERGE_STATE only"), "{err}");
    // Garbage is refused with a clear error and changes nothing.
    let key = keys::cluster_state();
    let e = c.call_shard(c.shard_of(&key), &Request::MergeState(vec![1, 2, 3])).unwrap_err();
    assert!(e.to_string().contains("malformed cluster state"), "{e}");
    let before = stored(&c);
    drop(c);
    node.shutdown().unwrap();
    let (node, addr) = start_node(&db, 2);
    assert_eq!(stored(&client(&addr)), before, "the merged state is durable");
    node.shutdown().unwrap();
}
