//! A stand-in storage node for the router's unit tests: one shard holding its
//! values in memory, authenticated with a fixed test key like a real node,
//! over real TCP (the real node has its own tests; the end-to-end suite covers
//! the pair).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use monofs_net::auth::{AuthStream, FrameKey};
use monofs_net::ns::NsEntry;
use monofs_net::proto::{NodeAddr, Request, Response};
use monofs_net::state::ClusterState;

/// The cluster key of the router and its stand-in node.
pub fn key() -> monofs_net::key::ClusterKey {
    monofs_net::key::ClusterKey::from_bytes([3; monofs_net::key::KEY_LEN])
}

/// A one-shard node holding its values in memory.
pub fn start() -> NodeAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let store: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let (s, store) = (s.unwrap(), store.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = AuthStream::accept(s, &FrameKey::new(&key())) else {
                    return;
                };
                while let Ok(Some(body)) = s.read_frame() {
                    let mut st = store.lock().unwrap();
                    let resp = match Request::decode(&body).unwrap() {
                        Request::Hello => Response::HelloOk {
                            node_id: "n1".into(),
                            shards: 1,
                            this_shard: 0,
                        },
                        Request::PutBatch(items) => {
                            st.extend(items);
                            Response::Ok
                        }
                        Request::MergeState(raw) => {
                            let key = monofs_net::keys::cluster_state();
                            let mut state = st
                                .get(&key)
                                .map(|v| ClusterState::decode(v).unwrap())
                                .unwrap_or_default();
                            state.join(ClusterState::decode(&raw).unwrap());
                            let joined = state.encode().unwrap();
                            st.insert(key, joined.clone());
                            Response::Data(joined)
                        }
                        Request::Get { key, offset, len } => match st.get(&key) {
                            Some(v) => {
                                let start = (offset as usize).min(v.len());
                                Response::Data(
                                    v[start..(start + len as usize).min(v.len())].to_vec(),
                                )
                            }
                            None => Response::NotFound,
                        },
                        other => Response::Error(format!("not a node request: {other:?}")),
                    };
                    let mut out = Vec::new();
                    resp.encode(&mut out);
                    drop(st);
                    s.write_frame(&out).unwrap();
                }
            });
        }
    });
    NodeAddr {
        id: "n1".into(),
        addr,
    }
}

pub fn repo(path: &str) -> NsEntry {
    NsEntry {
        path: path.into(),
        url: format!("https://{path}"),
        git_ref: "main".into(),
        commit: [1; 20],
        root_tree: [2; 20],
        commit_time: 1_600_000_000,
        root_subdirs: 0,
    }
}
