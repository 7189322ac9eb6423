//! The cluster client against real nodes that fail: a restart, a node that
//! accepts connections and never answers, a node that is down, health probes.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use monofs_net::client::{Cluster, NodeClient, GET_TIMEOUT};
use monofs_net::proto::NodeAddr;

fn node(id: &str, addr: &str) -> NodeAddr {
    NodeAddr { id: id.into(), addr: addr.into() }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// An address where nothing listens.
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A listener that accepts connections and never reads or writes a byte.
fn black_hole() -> (String, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !s.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((c, _)) => held.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (addr, stop)
}

/// Start node "n1" again on its old port, which the old node may hold for a moment.
fn restart(db: &std::path::Path, shards: usize, addr: &str) -> monofs_engine::NodeHandle {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match start_at(db, shards, port_of(addr)) {
            Ok(n) => return n,
            Err(e) if Instant::now() < end && format!("{e:#}").contains("in use") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("restart failed: {e:#}"),
        }
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `monofs` binary of this build (target/release/monofs next to target/release/deps/).
fn monofs_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("monofs");
    assert!(bin.exists(), "{} missing: build it first (cargo build --release -p monofs)", bin.display());
    bin
}

/// `monofs node` "n1" with one shard on `port`, as its own process, once it
/// says it is ready (a connection could still reach the listener of a process
/// just killed: the kernel releases io_uring's files after the process exits).
fn node_process(db: &std::path::Path, key_file: &std::path::Path, port: u16) -> std::process::Child {
    let log = db.with_extension("log");
    let ready = || std::fs::read_to_string(&log).unwrap_or_default().matches("node ready").count();
    let before = ready();
    let child = std::process::Command::new(monofs_bin())
        .args(["node", "--node-id", "n1", "--shards", "1", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db-path")
        .arg(db)
        .arg("--cluster-key-file")
        .arg(key_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the node to be ready", Duration::from_secs(30), || ready() > before);
    child
}

/// A node process restart closes every pooled connection; the next calls
/// reconnect and succeed, and no error reaches the caller.
#[test]
fn node_restart_is_not_an_error() {
    let db = db_dir("cluster-restart");
    let key_file = db.join("cluster.key");
    test_key().write_new(&key_file).unwrap();
    let data = db.join("data");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut n = node_process(&data, &key_file, port);
    let cluster = Cluster::new(vec![node("n1", &addr)], 1, &test_key());
    let items: Vec<_> = (0..32).map(|i| (key(i), value(i, 3000))).collect();
    cluster.put_batch(items.clone()).unwrap();
    // Several pooled connections, as concurrent requests leave behind.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for (k, v) in &items {
                    assert_eq!(cluster.get(k, 0, u32::MAX).unwrap().as_ref(), Some(v));
                }
            });
        }
    });
    n.kill().unwrap();
    n.wait().unwrap();
    let mut n = node_process(&data, &key_file, port);
    for (k, v) in &items {
        assert_eq!(cluster.get(k, 0, u32::MAX).unwrap().as_ref(), Some(v), "after the restart");
    }
    cluster.put_batch(vec![(key(100), value(100, 10))]).unwrap();
    let h = &cluster.health()[0];
    assert!(h.retries_total >= 1, "stale connections were replaced: {h:?}");
    assert_eq!((h.failures_total, h.consecutive_failures), (0, 0), "{h:?}");
    n.kill().unwrap();
    n.wait().unwrap();
}

/// RF 2 over a real node and a node that never answers: a key the silent node
/// owns first is read from the other replica after the operation timeout, and
/// meanwhile requests for keys the silent node does not hold go straight through.
#[test]
fn silent_node_is_passed_over_without_stalling_others() {
    let (da, db) = (db_dir("silent-a"), db_dir("silent-b"));
    let (na, aa) = start_named(&da, 1, "a");
    let (nb, ab) = start_named(&db, 1, "b");
    let (ah, stop) = black_hole();
    let nodes = vec![node("a", &aa), node("b", &ab), node("h", &ah)];
    let writer = Cluster::new(nodes.clone(), 2, &test_key());
    let keys: Vec<Vec<u8>> = (0..200).map(key).collect();
    let h = 2;
    let stalled = keys.iter().find(|k| writer.owners(k)[0] == h).unwrap().clone();
    let clear: Vec<Vec<u8>> = keys.iter().filter(|k| !writer.owners(k).contains(&h)).take(20).cloned().collect();
    assert!(!clear.is_empty());
    // The silent owner is replaced: the write still lands on two nodes.
    let mut items = vec![(stalled.clone(), value(1, 100))];
    items.extend(clear.iter().map(|k| (k.clone(), value(2, 100))));
    writer.put_batch(items).unwrap();

    let reader = Cluster::new(nodes, 2, &test_key());
    assert_eq!(reader.read_order(&stalled)[0], h);
    let r2 = reader.clone();
    let k2 = stalled.clone();
    let slow = std::thread::spawn(move || r2.get(&k2, 0, u32::MAX));
    let (mut done, mut worst) = (0, Duration::ZERO);
    while !slow.is_finished() {
        for k in &clear {
            let t = Instant::now();
            assert_eq!(reader.get(k, 0, u32::MAX).unwrap(), Some(value(2, 100)));
            worst = worst.max(t.elapsed());
            done += 1;
        }
    }
    assert_eq!(slow.join().unwrap().unwrap(), Some(value(1, 100)), "read from the other replica");
    assert!(done > 0);
    assert!(worst < GET_TIMEOUT, "a request for other nodes waited {worst:?} behind the silent node");
    let hh = &reader.health()[h];
    assert!(hh.consecutive_failures >= 1 && hh.timeouts_total >= 1 && hh.last_error.is_some(), "{hh:?}");
    // Once more: while backed off, the silent node comes after the other owner
    // of its keys (a backoff ends: the read is retried until one sees it).
    wait_until("a read while the silent node is backed off", Duration::from_secs(60), || {
        let t = Instant::now();
        let first = reader.read_order(&stalled)[0] != h;
        assert_eq!(reader.get(&stalled, 0, u32::MAX).unwrap(), Some(value(1, 100)));
        first && t.elapsed() < GET_TIMEOUT
    });
    println!("silent node: {done} reads for other nodes served while one read waited for it; slowest {worst:?}");
    stop.store(true, Ordering::SeqCst);
    na.shutdown().unwrap();
    nb.shutdown().unwrap();
}

/// RF 2, one of 3 nodes down: every item lands on the two live nodes; with
/// two down, fewer than RF nodes can take it and the write fails.
#[test]
fn write_with_a_node_down_lands_on_rf_nodes() {
    let (da, db) = (db_dir("down-a"), db_dir("down-b"));
    let (na, aa) = start_named(&da, 1, "a");
    let (nb, ab) = start_named(&db, 1, "b");
    let cluster = Cluster::new(vec![node("a", &aa), node("b", &ab), node("c", &dead_addr())], 2, &test_key());
    let items: Vec<_> = (0..60).map(|i| (key(i), value(i, 500))).collect();
    assert!(items.iter().filter(|(k, _)| cluster.owners(k).contains(&2)).count() > 0);
    cluster.put_batch(items.clone()).unwrap();
    let (ca, cb) = (NodeClient::connect("a", &aa, &test_key()).unwrap(), NodeClient::connect("b", &ab, &test_key()).unwrap());
    for (k, v) in &items {
        assert_eq!(ca.get(k, 0, u32::MAX).unwrap().as_ref(), Some(v));
        assert_eq!(cb.get(k, 0, u32::MAX).unwrap().as_ref(), Some(v));
        assert_eq!(cluster.get(k, 0, u32::MAX).unwrap().as_ref(), Some(v));
        assert_eq!(cluster.stat(k).unwrap(), Some(v.len() as u64), "an owner that answers decides");
    }
    assert!(!cluster.health()[2].healthy);
    nb.shutdown().unwrap();
    let err = cluster.put_batch(vec![(key(1000), value(1, 10))]).unwrap_err().to_string();
    assert!(err.contains("fewer than 2 nodes"), "{err}");
    na.shutdown().unwrap();
}

/// Probed every 100 ms with a 1 s threshold: a node that stops answering turns
/// unhealthy and goes after the healthy ones; back up, it is healthy again.
#[test]
fn health_follows_probes() {
    let (da, db) = (db_dir("probe-a"), db_dir("probe-n1"));
    let (na, aa) = start_named(&da, 1, "a");
    let (n1, a1) = start_node(&db, 1);
    let cluster = Cluster::new(vec![node("a", &aa), node("n1", &a1)], 1, &test_key());
    cluster.set_unhealthy_threshold(Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (c, s) = (cluster.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                for id in ["a", "n1"] {
                    c.probe(id);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let healthy = |i: usize| cluster.health()[i].healthy;
    wait_until("both nodes probed", Duration::from_secs(10), || cluster.health().iter().all(|h| h.latency_us.is_some()));
    assert!(healthy(0) && healthy(1));
    let k = (0..100).map(key).find(|k| cluster.owners(k) == [1]).unwrap();
    assert_eq!(cluster.read_order(&k), [1, 0]);
    n1.shutdown().unwrap();
    wait_until("n1 unhealthy", Duration::from_secs(20), || !healthy(1));
    let h = &cluster.health()[1];
    assert!(h.consecutive_failures >= 1 && h.last_error.is_some(), "{h:?}");
    assert!(healthy(0));
    // Its keys stay with it (owners do not change), but it is asked last.
    assert_eq!(cluster.owners(&k), [1]);
    assert_eq!(cluster.read_order(&k), [1, 0]);
    let n1 = restart(&db, 1, &a1);
    wait_until("n1 healthy again", Duration::from_secs(20), || healthy(1));
    assert_eq!(cluster.health()[1].consecutive_failures, 0);
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    n1.shutdown().unwrap();
    na.shutdown().unwrap();
}

/// Failed-over nodes lose their ownership to the next HRW nodes; a membership
/// change keeps the clients of the nodes that stay.
#[test]
fn exclusion_and_membership_change() {
    let (da, db) = (db_dir("member-a"), db_dir("member-b"));
    let (na, aa) = start_named(&da, 1, "a");
    let (nb, ab) = start_named(&db, 1, "b");
    let cluster = Cluster::new(vec![node("a", &aa), node("b", &ab)], 1, &test_key());
    let k = (0..100).map(key).find(|k| cluster.owners(k) == [0]).unwrap();
    cluster.put_batch(vec![(k.clone(), value(7, 70))]).unwrap();
    cluster.set_excluded(["a".to_string()].into());
    assert_eq!(cluster.owners(&k), [1]);
    assert_eq!(cluster.read_order(&k), [1, 0]);
    // Still found on its old owner: b answers NOT_FOUND, a has it.
    assert_eq!(cluster.get(&k, 0, u32::MAX).unwrap(), Some(value(7, 70)));
    assert!(cluster.health()[0].excluded);
    cluster.set_nodes(vec![node("b", &ab)]).unwrap();
    assert_eq!(cluster.nodes(), vec![node("b", &ab)]);
    assert!(cluster.excluded().is_empty());
    assert_eq!(cluster.get(&k, 0, u32::MAX).unwrap(), None);
    assert!(cluster.set_nodes(Vec::new()).is_err());
    na.shutdown().unwrap();
    nb.shutdown().unwrap();
}
