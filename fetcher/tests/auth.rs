//! A fetcher serves only peers holding the cluster key, and presents it to the nodes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use monofs_fetcher::{start, FetcherConfig};
use monofs_net::auth::AuthError;
use monofs_net::client::{Conn, NetError};
use monofs_net::key::{ClusterKey, KEY_LEN};
use monofs_net::proto::{frame, ContentMode, IngestRequest, Request, Response, SourceKind};

fn ingest_req(url: String, node: &FakeNode) -> IngestRequest {
    IngestRequest {
        kind: SourceKind::Git,
        content: ContentMode::Eager,
        url,
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes: vec![node.node_addr()],
    }
}

fn status(addr: &str) -> serde_json::Value {
    match Conn::connect(addr, &test_key()).unwrap().call(&Request::Status).unwrap() {
        Response::Data(d) => serde_json::from_slice(&d).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ingest_without_the_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let mut cfg = FetcherConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("cache"), test_key());
    cfg.allow_local_sources = true;
    let h = start(cfg).unwrap();
    let addr = h.local_addr().to_string();
    let req = ingest_req(repo.display().to_string(), &node);

    // A wrong key: refused at the handshake.
    let wrong = ClusterKey::from_bytes([0x11; KEY_LEN]);
    let err = Conn::connect(&addr, &wrong).err().expect("a wrong key must be refused");
    assert!(matches!(err, NetError::Auth { source: AuthError::WrongKey, .. }), "{err}");

    // No key: a plain INGEST frame is closed without an answer.
    let mut body = Vec::new();
    Request::Ingest(req.clone()).encode(&mut body);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&frame(&body).unwrap()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "answered without the handshake: {got:?}");

    assert_eq!(node.total_puts(), 0, "nothing was stored");
    let st = status(&addr);
    assert_eq!(st["repos_cached"], 0, "nothing was fetched: {st}");
    assert!(st["auth_failures"].as_u64().unwrap() >= 2, "{st}");

    // With the key the same request is served.
    let mut conn = Conn::connect(&addr, &test_key()).unwrap();
    conn.send(&Request::Ingest(req)).unwrap();
    loop {
        match conn.recv().unwrap() {
            Response::Progress { .. } => {}
            Response::IngestDone(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(node.total_puts() > 0);
    h.shutdown();
}

#[test]
fn fetcher_with_another_key_is_refused_by_the_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let other = ClusterKey::from_bytes([0x22; KEY_LEN]);
    let mut cfg = FetcherConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("cache"), other.clone());
    cfg.allow_local_sources = true;
    let h = start(cfg).unwrap();
    let addr = h.local_addr().to_string();
    let mut conn = Conn::connect(&addr, &other).unwrap();
    conn.send(&Request::Ingest(ingest_req(repo.display().to_string(), &node))).unwrap();
    let msg = loop {
        match conn.recv() {
            Ok(Response::Progress { .. }) => {}
            Err(NetError::Remote { message, .. }) => break message,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(msg.contains("authentication failed: peer does not hold this cluster's key"), "{msg}");
    assert_eq!(node.total_puts(), 0);
    h.shutdown();
}
