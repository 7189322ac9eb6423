//! The HTTP API's boundary, over real sockets: state-changing requests need the
//! admin token; the read-only endpoints stay open.

mod common;

use std::net::SocketAddr;

use common::request;

use monofs_net::key::{ClusterKey, KEY_LEN};
use monofs_router::admin_token::AdminToken;

fn start(token: Option<AdminToken>) -> monofs_router::RouterHandle {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    monofs_router::start(monofs_router::RouterConfig {
        nfs_listen: any,
        portmap_port: None,
        http_listen: any,
        // Nothing listens there: these requests never reach a node.
        nodes: monofs_net::client::parse_nodes("n1=127.0.0.1:9").unwrap(),
        replication: 1,
        fetchers: Vec::new(),
        refresh_interval: None,
        cluster_key: ClusterKey::from_bytes([5; KEY_LEN]),
        admin_token: token,
        exports: monofs_nfs::Exports::default(),
        health: Default::default(),
        nfs_limits: monofs_nfs::Limits::default(),
        router_id: "r1".into(),
        repair: Default::default(),
        caches: Default::default(),
    })
    .unwrap()
}

#[test]
fn mutating_endpoints_need_the_token() {
    let token = AdminToken::generate().unwrap();
    let h = start(Some(token.clone()));
    let a = h.http_addr;
    let ingest = r#"{"url": "https://example.invalid/x/y"}"#;

    let (code, body) = request(a, "POST", "/api/ingest", None, ingest);
    assert_eq!(code, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("admin token"), "{body}");
    let (code, body) = request(a, "POST", "/api/ingest", Some("Bearer 0123456789abcdef0123"), ingest);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("wrong admin token"), "{body}");
    let (code, _) = request(a, "POST", "/api/refresh", None, r#"{"path": "/x"}"#);
    assert_eq!(code, 401);

    // With the token the request gets through to the ingest, which fails for
    // want of fetchers: a 200 stream ending in done:false.
    let (code, body) = request(a, "POST", "/api/ingest", Some(&token.bearer()), ingest);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"done\":false"), "{body}");
    // Body checks come after authentication.
    let (code, _) = request(a, "POST", "/api/ingest", Some(&token.bearer()), "{}");
    assert_eq!(code, 400);

    let (code, _) = request(a, "GET", "/healthz", None, "");
    assert_eq!(code, 200);
    let (code, _) = request(a, "GET", "/metrics", None, "");
    assert_eq!(code, 200);
    h.shutdown();
}

#[test]
fn without_a_token_loopback_may_change_state() {
    let h = start(None);
    let (code, body) = request(h.http_addr, "POST", "/api/ingest", None, "{}");
    assert_eq!(code, 400, "past the boundary, refused for its body: {body}");
    h.shutdown();
}
