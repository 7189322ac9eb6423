//! A node whose disk fills up or whose fdatasync fails, and a replicated read
//! around a damaged record.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use monofs_engine::fault::{self, Fault};
use monofs_engine::log::NO_SPACE_RETRY;
use monofs_net::client::{Cluster, Conn};
use monofs_net::proto::{NodeAddr, Request, Response};

const NO_SPACE: &str = "no space left on device: node n1 shard 0 refuses writes; reads continue";

fn put_err(c: &monofs_net::client::NodeClient, k: Vec<u8>, v: Vec<u8>) -> String {
    match c.put_batch(vec![(k, v)]) {
        Ok(()) => panic!("write accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn no_space_refuses_writes_keeps_reads_and_recovers() {
    let db = db_dir("nospace");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    c.put_batch(vec![(key(1), value(1, 5000))]).unwrap();

    fault::inject(&db, Fault::NoSpace);
    let e = put_err(&c, key(2), value(2, 100_000));
    assert!(e.contains(NO_SPACE), "{e}");
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    assert_eq!(c.stat(&key(2)).unwrap(), None, "a refused write is not indexed");
    // Space is back, but writes are tried again only after the back-off.
    fault::clear(&db);
    let e = put_err(&c, key(2), value(2, 100_000));
    assert!(e.contains(NO_SPACE), "{e}");
    std::thread::sleep(NO_SPACE_RETRY + Duration::from_millis(200));
    c.put_batch(vec![(key(2), value(2, 100_000))]).unwrap();
    assert_eq!(c.get(&key(2), 0, u32::MAX).unwrap(), Some(value(2, 100_000)));
    node.shutdown().unwrap();

    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    assert_eq!(c.get(&key(2), 0, u32::MAX).unwrap(), Some(value(2, 100_000)));
    let m = node.metrics().total();
    assert_eq!((m.keys, m.damaged), (2, 0));
    node.shutdown().unwrap();
}

#[test]
fn failed_fdatasync_refuses_writes_until_restart() {
    let db = db_dir("fsyncfail");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    c.put_batch(vec![(key(1), value(1, 5000))]).unwrap();

    fault::inject(&db, Fault::FdatasyncFails);
    let e = put_err(&c, key(2), value(2, 3000));
    assert!(e.contains("fdatasync"), "{e}");
    assert_eq!(c.stat(&key(2)).unwrap(), None, "nothing of the failed group is acknowledged or indexed");
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    // The page state is unknown after a failed fdatasync: no more writes, even
    // once fdatasync would succeed again.
    fault::clear(&db);
    std::thread::sleep(NO_SPACE_RETRY + Duration::from_millis(200));
    let e = put_err(&c, key(3), value(3, 3000));
    assert!(e.contains("refuses writes after an earlier I/O failure"), "{e}");
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    node.shutdown().unwrap();

    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    c.put_batch(vec![(key(3), value(3, 3000))]).unwrap();
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    assert_eq!(c.get(&key(3), 0, u32::MAX).unwrap(), Some(value(3, 3000)));
    node.shutdown().unwrap();
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(name: &str, size: &str) -> SmallFs {
        let dir = db_dir(name);
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir).status();
        assert!(ok.is_ok_and(|s| s.success()), "mount -t tmpfs on {}", dir.display());
        SmallFs(dir)
    }

    /// Write a file until the file system is full.
    fn fill(&self) -> PathBuf {
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0x55u8; 16 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[1]);
        p
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn cut_files(db: &Path) -> Vec<String> {
    std::fs::read_dir(db)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".log.cut-"))
        .collect()
}

/// The real thing: an 8 MiB tmpfs (O_DIRECT works on tmpfs since Linux 6.6).
#[test]
fn full_filesystem() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED full_filesystem: mounting a small tmpfs needs root");
        return;
    }
    let fs = SmallFs::mount("fullfs", "8m");
    let db = fs.0.join("db");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    c.put_batch(vec![(key(1), value(1, 5000))]).unwrap();
    let filler = fs.fill();

    // A write that does not fit: refused with the clear error, reads go on.
    let e = put_err(&c, key(2), value(2, 256 << 10));
    assert!(e.contains(NO_SPACE), "{e}");
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    assert_eq!(c.stat(&key(2)).unwrap(), None);
    // Space freed: after the back-off the next write goes through, at the log end
    // the failed one left.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(NO_SPACE_RETRY + Duration::from_millis(200));
    c.put_batch(vec![(key(2), value(2, 256 << 10))]).unwrap();
    assert_eq!(c.get(&key(2), 0, u32::MAX).unwrap(), Some(value(2, 256 << 10)));
    let log_len = std::fs::metadata(db.join("shard-0.log")).unwrap().len();
    assert_eq!(log_len, 4096 + 8192 + 4096 + (256 << 10));
    node.shutdown().unwrap();

    // A torn tail, then a full disk: the node starts, cuts the tail without a
    // copy (there is no room for one), serves reads, refuses writes.
    let mut f = std::fs::OpenOptions::new().append(true).open(db.join("shard-0.log")).unwrap();
    f.write_all(&value(9, 64 << 10)).unwrap();
    drop(f);
    let filler = fs.fill();
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    assert_eq!(cut_files(&db), Vec::<String>::new());
    assert_eq!(std::fs::metadata(db.join("shard-0.log")).unwrap().len(), log_len);
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap(), Some(value(1, 5000)));
    assert_eq!(c.get(&key(2), 0, u32::MAX).unwrap(), Some(value(2, 256 << 10)));
    let e = put_err(&c, key(3), value(3, 1 << 20));
    assert!(e.contains(NO_SPACE), "{e}");
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(NO_SPACE_RETRY + Duration::from_millis(200));
    c.put_batch(vec![(key(3), value(3, 1 << 20))]).unwrap();
    assert_eq!(c.get(&key(3), 0, u32::MAX).unwrap(), Some(value(3, 1 << 20)));
    node.shutdown().unwrap();
}

fn damaged(addr: &str) -> serde_json::Value {
    match Conn::connect(addr, &test_key()).unwrap().call(&Request::Damaged).unwrap() {
        Response::Data(d) => serde_json::from_slice(&d).unwrap(),
        other => panic!("DAMAGED answered {other:?}"),
    }
}

/// RF 2: a record whose meta is damaged on one node is skipped there (NOT_FOUND,
/// listed by DAMAGED) and read from the other replica; the rest of that node's
/// log is served.
#[test]
fn damaged_record_is_read_from_the_other_replica() {
    let (db1, db2) = (db_dir("replica-a"), db_dir("replica-b"));
    let (n1, a1) = start_named(&db1, 1, "a");
    let (n2, a2) = start_named(&db2, 1, "b");
    let nodes = vec![NodeAddr { id: "a".into(), addr: a1 }, NodeAddr { id: "b".into(), addr: a2 }];
    let cluster = Cluster::new(nodes, 2, &test_key());
    let items: Vec<_> = (0..20).map(|i| (key(i), value(i, 6000))).collect();
    for it in &items {
        cluster.put_batch(vec![it.clone()]).unwrap();
    }
    n1.shutdown().unwrap();
    n2.shutdown().unwrap();
    // Record 5 of node a: 3 blocks each (header, key, table, 6000 bytes), from 4096.
    let at = 4096 + 5 * 8192 + 30; // in the sequence number
    let log = db1.join("shard-0.log");
    let mut b = std::fs::read(&log).unwrap();
    b[at] ^= 0x08;
    std::fs::write(&log, &b).unwrap();

    let (n1, a1) = start_named(&db1, 1, "a");
    let (n2, a2) = start_named(&db2, 1, "b");
    let nodes = vec![NodeAddr { id: "a".into(), addr: a1.clone() }, NodeAddr { id: "b".into(), addr: a2 }];
    let node_a = monofs_net::client::NodeClient::connect("a", &a1, &test_key()).unwrap();
    assert_eq!(node_a.stat(&key(5)).unwrap(), None);
    assert_eq!(node_a.get(&key(5), 0, 10).unwrap(), None);
    assert_eq!(node_a.get(&key(6), 0, u32::MAX).unwrap(), Some(value(6, 6000)));
    let cluster = Cluster::new(nodes, 2, &test_key());
    for (k, v) in &items {
        assert_eq!(cluster.get(k, 0, u32::MAX).unwrap().as_ref(), Some(v));
    }
    let j = damaged(&a1);
    assert_eq!((j["node"].as_str(), j["total"].as_u64()), (Some("a"), Some(1)));
    let d = &j["damaged"][0];
    assert_eq!((d["offset"].as_u64(), d["length"].as_u64()), (Some(4096 + 5 * 8192), Some(8192)));
    assert_eq!(d["key"].as_str(), Some(monofs_engine::damage::hex(&key(5)).as_str()));
    assert_eq!(d["found"], "skipped");
    assert_eq!(n1.metrics().total().damaged, 1);
    assert_eq!(n2.metrics().total().damaged, 0);
    n1.shutdown().unwrap();
    n2.shutdown().unwrap();
}
