//! A node serves only peers that hold the cluster key, and only frames that verify.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use monofs_net::auth::{AuthError, ClientHandshake, FrameKey, SERVER_HELLO_LEN};
use monofs_net::client::{Conn, NetError, NodeClient};
use monofs_net::key::{ClusterKey, KEY_LEN};
use monofs_net::proto::{frame, Request, Response};

fn key(i: u32) -> Vec<u8> {
    format!("auth-{i}").into_bytes()
}

fn log_bytes(db: &std::path::Path) -> Vec<u8> {
    std::fs::read(db.join("shard-0.log")).unwrap()
}

fn plain_frame(req: &Request) -> Vec<u8> {
    let mut body = Vec::new();
    req.encode(&mut body);
    frame(&body).expect("a test request fits a frame")
}

#[test]
fn peers_without_the_key_read_and_write_nothing() {
    let db = db_dir("auth-nokey");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    c.put_batch(vec![(key(1), b"secret".to_vec())]).unwrap();
    let before = log_bytes(&db);

    // A wrong key: refused at the handshake, with the reason.
    let wrong = ClusterKey::from_bytes([0x11; KEY_LEN]);
    let err = NodeClient::connect("n1", &addr, &wrong).err().expect("a wrong key must be refused");
    assert!(matches!(err, NetError::Auth { source: AuthError::WrongKey, .. }), "{err}");
    assert_eq!(err.to_string(), format!("{addr}: authentication failed: peer does not hold this cluster's key"));
    assert!(Conn::connect(&addr, &wrong).is_err());

    // No key at all: the old unauthenticated protocol. A write of a namespace-like
    // record, and a read; neither is answered.
    let put = Request::PutBatch(vec![(b"ns:root".to_vec(), vec![0xee; 200])]);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&plain_frame(&put)).unwrap();
    assert!(read_to_end_or_reset(&mut s).is_empty(), "a frame without the handshake was answered");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&plain_frame(&Request::Get { key: key(1), offset: 0, len: 100 })).unwrap();
    assert!(read_to_end_or_reset(&mut s).is_empty(), "a read without the handshake was answered");

    // A peer that finished the handshake with the wrong key and sends frames anyway.
    let mut s = TcpStream::connect(&addr).unwrap();
    let (hs, hello) = ClientHandshake::start(&FrameKey::new(&wrong));
    s.write_all(&hello).unwrap();
    let mut answer = [0u8; SERVER_HELLO_LEN];
    s.read_exact(&mut answer).unwrap();
    let fin = hs.finish(&answer);
    assert!(matches!(fin.session, Err(AuthError::WrongKey)));
    s.write_all(&fin.proof.unwrap()).unwrap();
    let _ = s.write_all(&plain_frame(&put));
    assert!(read_to_end_or_reset(&mut s).is_empty());

    assert_eq!(log_bytes(&db), before, "the log changed");
    assert_eq!(c.get(b"ns:root", 0, 10).unwrap(), None);
    assert_eq!(c.get(&key(1), 0, 10).unwrap().unwrap(), b"secret");
    assert!(node.metrics().total().auth_failures >= 4, "{:?}", node.metrics().total());
    node.shutdown().unwrap();
}

#[test]
fn recorded_session_replayed_and_tampered_frames_are_refused() {
    let db = db_dir("auth-replay");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    let frame_key = FrameKey::new(&test_key());

    // Record every byte an honest client sends for PUT k=v1.
    let mut recorded = Vec::new();
    let mut s = TcpStream::connect(&addr).unwrap();
    let (hs, hello) = ClientHandshake::start(&frame_key);
    s.write_all(&hello).unwrap();
    recorded.extend_from_slice(&hello);
    let mut answer = [0u8; SERVER_HELLO_LEN];
    s.read_exact(&mut answer).unwrap();
    let fin = hs.finish(&answer);
    let proof = fin.proof.unwrap();
    let mut session = fin.session.unwrap();
    s.write_all(&proof).unwrap();
    recorded.extend_from_slice(&proof);
    let mut body = Vec::new();
    Request::PutBatch(vec![(key(7), b"v1".to_vec())]).encode(&mut body);
    let put = sealed(&mut session, &body);
    s.write_all(&put).unwrap();
    recorded.extend_from_slice(&put);
    let mut resp = [0u8; 4 + 1 + monofs_net::auth::MAC_LEN];
    s.read_exact(&mut resp).unwrap();
    session.open(&[&resp[..5]], &resp[5..]).unwrap();
    assert_eq!(Response::decode(&resp[4..5]).unwrap(), Response::Ok);
    drop(s);

    c.put_batch(vec![(key(7), b"v2".to_vec())]).unwrap();
    let before = log_bytes(&db);
    let failures = node.metrics().total().auth_failures;

    // The whole recorded conversation, replayed on a new connection: the node's
    // nonce differs, so the recorded proof does not verify and v1 does not come back.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&recorded).unwrap();
    let got = read_to_end_or_reset(&mut s);
    assert_eq!(got.len(), SERVER_HELLO_LEN, "only the node's hello, no reply to the replayed frame");

    // An authenticated peer whose frame was modified in flight (v2 -> v3).
    let (mut s, mut session) = raw_session(&addr, &test_key());
    let mut f = sealed(&mut session, &body);
    let at = f.len() - monofs_net::auth::MAC_LEN - 1;
    f[at] = b'3';
    s.write_all(&f).unwrap();
    assert!(read_to_end_or_reset(&mut s).is_empty());

    // The same frame replayed twice within one connection: the second is refused.
    let (mut s, mut session) = raw_session(&addr, &test_key());
    let mut body2 = Vec::new();
    Request::Stat { key: key(7) }.encode(&mut body2);
    let stat = sealed(&mut session, &body2);
    s.write_all(&stat).unwrap();
    s.write_all(&stat).unwrap();
    let got = read_to_end_or_reset(&mut s);
    assert_eq!(got.len(), 4 + 9 + monofs_net::auth::MAC_LEN, "one SIZE reply, then closed: {got:?}");

    assert_eq!(c.get(&key(7), 0, 10).unwrap().unwrap(), b"v2");
    assert_eq!(log_bytes(&db), before, "the log changed");
    assert_eq!(node.metrics().total().auth_failures, failures + 3);
    node.shutdown().unwrap();
}
