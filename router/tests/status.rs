//! `GET /api/status` and the node series of `/metrics` over real sockets, with
//! a real node, a node that is down and one that accepts connections and never
//! answers.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::request;
use monofs_net::key::{ClusterKey, KEY_LEN};
use monofs_net::proto::NodeAddr;
use monofs_router::health::HealthConfig;
use serde_json::Value;

fn key() -> ClusterKey {
    ClusterKey::from_bytes([9; KEY_LEN])
}

/// Node "a", one shard, its log under target/ (O_DIRECT does not work on tmpfs).
fn start_node() -> (monofs_engine::NodeHandle, String) {
    let db = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/router-tests")
        .join(format!("status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&db);
    std::fs::create_dir_all(&db).unwrap();
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Ok(h) = monofs_engine::start(monofs_engine::NodeConfig {
            addr,
            node_id: "a".into(),
            db_path: db.clone(),
            shards: 1,
            cluster_key: key(),
        }) {
            return (h, addr.to_string());
        }
    }
    panic!("no free port for the node");
}

fn status(at: SocketAddr) -> (Value, Duration) {
    let t = Instant::now();
    let (code, body) = request(at, "GET", "/api/status", None, "");
    assert_eq!(code, 200, "{body}");
    (serde_json::from_str(&body).unwrap(), t.elapsed())
}

#[test]
fn status_shows_every_node_and_does_not_wait_for_a_silent_one() {
    let (node, a) = start_node();
    monofs_net::client::NodeClient::connect("a", &a, &key()).unwrap().put_batch(vec![(b"Bx".to_vec(), vec![1; 10])]).unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let nodes = vec![
        NodeAddr { id: "a".into(), addr: a.clone() },
        NodeAddr { id: "d".into(), addr: dead },
        NodeAddr { id: "s".into(), addr: silent.local_addr().unwrap().to_string() },
    ];
    let h = monofs_router::start(monofs_router::RouterConfig {
        nfs_listen: any,
        portmap_port: None,
        http_listen: any,
        nodes,
        replication: 2,
        fetchers: Vec::new(),
        refresh_interval: None,
        cluster_key: key(),
        admin_token: None,
        exports: monofs_nfs::Exports::default(),
        nfs_limits: monofs_nfs::Limits::default(),
        health: HealthConfig { interval: Duration::from_millis(100), unhealthy_threshold: Duration::from_millis(1500) },
        router_id: "status-test".into(),
        repair: Default::default(),
        caches: Default::default(),
    })
    .unwrap();
    let healthy = |v: &Value| -> Vec<bool> {
        v["nodes"].as_array().unwrap().iter().map(|n| n["healthy"].as_bool().unwrap()).collect()
    };
    let end = Instant::now() + Duration::from_secs(60);
    let (v, took) = loop {
        let (v, took) = status(h.http_addr);
        if healthy(&v) == [true, false, false] {
            break (v, took);
        }
        assert!(Instant::now() < end, "health never settled: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The silent node's stats are given up on after 2 s; the answer is not held longer.
    assert!(took < Duration::from_secs(10), "status took {took:?}");
    let r = &v["router"];
    assert!(r["listen"].as_str().unwrap().contains("http="), "{v}");
    assert_eq!(r["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert!(r["uptime_secs"].is_u64());
    assert_eq!(v["replication"]["factor"], 2);
    assert_eq!((v["cluster"]["nodes"].as_u64(), v["cluster"]["healthy"].as_u64()), (Some(3), Some(1)));
    let n = v["nodes"].as_array().unwrap();
    assert_eq!((n[0]["id"].as_str(), n[0]["addr"].as_str()), (Some("a"), Some(a.as_str())));
    let st = &n[0]["stats"];
    // The test's key and the cluster state (the router's heartbeat).
    assert_eq!((st["keys"].as_u64(), st["damaged"].as_u64(), st["shards"].as_u64()), (Some(2), Some(0), Some(1)), "{v}");
    assert!(st["bytes"].as_u64() > Some(10), "{v}");
    assert!(st["log_bytes"].as_u64() > Some(0), "{v}");
    assert!(n[0]["latency_us"].is_u64() && n[0]["last_ok_ms_ago"].is_u64(), "{v}");
    assert_eq!(n[0]["consecutive_failures"], 0);
    assert_eq!(n[0]["excluded"], false);
    for bad in &n[1..] {
        assert!(bad["stats_error"].is_string() && bad["last_ok_ms_ago"].is_null(), "{bad}");
    }
    // Refused at once; the silent node is unhealthy for want of an answer within
    // the threshold, before its first probe even timed out.
    assert!(n[1]["last_error"].is_string() && n[1]["consecutive_failures"].as_u64() >= Some(1), "{v}");
    assert!(n[2]["stats_error"].as_str().unwrap().contains("no answer within 2s"), "{v}");

    let (code, m) = request(h.http_addr, "GET", "/metrics", None, "");
    assert_eq!(code, 200);
    for line in ["monofs_router_node_healthy{node=\"a\"} 1", "monofs_router_node_healthy{node=\"d\"} 0", "monofs_router_node_healthy{node=\"s\"} 0"] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
    assert!(m.contains("monofs_router_node_request_failures_total{node=\"d\"}"));
    assert!(m.contains("# TYPE monofs_router_node_connection_retries_total counter"));
    println!("status with a silent node answered in {took:?}");
    h.shutdown();
    node.shutdown().unwrap();
}
