mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;

use common::*;
use monofs_net::client::{Cluster, Conn, NetError};
use monofs_net::hrw::shard_of;
use monofs_net::auth::MAC_LEN;
use monofs_net::proto::{NodeAddr, Request, Response};

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn shard_addr(addr: &str, shard: u16) -> String {
    format!("127.0.0.1:{}", port_of(addr) + shard)
}

#[test]
fn put_get_stat_round_trip_two_shards() {
    let db = db_dir("roundtrip");
    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    assert_eq!(c.shards(), 2);

    let big = value(99, 1 << 20);
    let mut items: Vec<(Vec<u8>, Vec<u8>)> = (0..64).map(|i| (key(i), value(i, i as usize * 37))).collect();
    items.push((b"Bbig".to_vec(), big.clone()));
    items.push((b"Tempty".to_vec(), Vec::new()));
    c.put_batch(items.clone()).unwrap();
    // Both shards got keys.
    let per_shard: Vec<usize> =
        (0..2).map(|s| items.iter().filter(|(k, _)| shard_of(k, 2) == s).count()).collect();
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");

    for (k, v) in &items {
        assert_eq!(c.stat(k).unwrap(), Some(v.len() as u64));
        assert_eq!(c.get(k, 0, u32::MAX).unwrap().as_deref(), Some(&v[..]));
    }
    // Range reads, clamped to the value.
    assert_eq!(c.get(b"Bbig", 1000, 4096).unwrap().unwrap(), &big[1000..5096]);
    assert_eq!(c.get(b"Bbig", (1 << 20) - 10, 4096).unwrap().unwrap(), &big[(1 << 20) - 10..]);
    assert_eq!(c.get(b"Bbig", 1 << 20, 10).unwrap().unwrap(), Vec::<u8>::new());
    assert_eq!(c.get(b"Bbig", u64::MAX, u32::MAX).unwrap().unwrap(), Vec::<u8>::new());
    assert_eq!(c.get(b"Bbig", 5, 0).unwrap().unwrap(), Vec::<u8>::new());
    // Unknown keys.
    assert_eq!(c.get(b"Bnope", 0, 10).unwrap(), None);
    assert_eq!(c.stat(b"Bnope").unwrap(), None);

    // A later put supersedes the earlier one.
    c.put_batch(vec![(key(3), b"new value".to_vec())]).unwrap();
    assert_eq!(c.get(&key(3), 0, 100).unwrap().unwrap(), b"new value");
    assert_eq!(c.stat(&key(3)).unwrap(), Some(9));

    // Through the cluster client too.
    let cluster = Cluster::new(vec![NodeAddr { id: "n1".into(), addr: addr.clone() }], 1, &test_key());
    cluster.put_batch(vec![(b"Nns".to_vec(), b"namespace".to_vec())]).unwrap();
    assert_eq!(cluster.get(b"Nns", 0, 100).unwrap().unwrap(), b"namespace");

    // HELLO on each shard's port names that shard.
    for s in 0..2u16 {
        let mut conn = Conn::connect(&shard_addr(&addr, s), &test_key()).unwrap();
        assert_eq!(
            conn.call(&Request::Hello).unwrap(),
            Response::HelloOk { node_id: "n1".into(), shards: 2, this_shard: s }
        );
    }

    // A misdirected key is answered with the shard that owns it.
    let k = (1000..).map(key).find(|k| shard_of(k, 2) == 1).unwrap();
    let mut conn0 = Conn::connect(&shard_addr(&addr, 0), &test_key()).unwrap();
    assert_eq!(conn0.call(&Request::Get { key: k.clone(), offset: 0, len: 1 }).unwrap(), Response::WrongShard(1));
    assert_eq!(conn0.call(&Request::Stat { key: k.clone() }).unwrap(), Response::WrongShard(1));
    assert_eq!(conn0.call(&Request::PutBatch(vec![(k.clone(), b"x".to_vec())])).unwrap(), Response::WrongShard(1));
    // The refused put stored nothing anywhere.
    assert_eq!(c.stat(&k).unwrap(), None);
    // The connection is still usable after WRONG_SHARD.
    assert!(matches!(conn0.call(&Request::Hello).unwrap(), Response::HelloOk { this_shard: 0, .. }));

    let m = node.metrics().total();
    assert!(m.puts >= items.len() as u64 && m.gets > 0 && m.bytes_written > 0, "{m:?}");
    assert_eq!(m.checksum_failures, 0);
    node.shutdown().unwrap();
}

#[test]
fn concurrent_batches_on_one_shard() {
    let db = db_dir("concurrent");
    let (node, addr) = start_node(&db, 1);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let c = client(&addr);
                for b in 0..25u32 {
                    let batch = (0..8u32).map(|j| {
                        let i = t * 10_000 + b * 100 + j;
                        (key(i), value(i, (i % 7000) as usize))
                    });
                    c.put_batch(batch.collect()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    node.shutdown().unwrap();
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    for t in 0..4u32 {
        for b in 0..25u32 {
            for j in 0..8u32 {
                let i = t * 10_000 + b * 100 + j;
                assert_eq!(c.get(&key(i), 0, u32::MAX).unwrap().unwrap(), value(i, (i % 7000) as usize));
            }
        }
    }
    node.shutdown().unwrap();
}

#[test]
fn restart_serves_the_same_data() {
    let db = db_dir("restart");
    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    let sizes = [0usize, 1, 100, 4064, 4065, 5000, 1 << 20, 70_000];
    let expect: Vec<(Vec<u8>, Vec<u8>)> =
        (0..400u32).map(|i| (key(i), value(i, sizes[i as usize % sizes.len()]))).collect();
    for chunk in expect.chunks(16) {
        c.put_batch(chunk.to_vec()).unwrap();
    }
    // Superseded values must not come back after restart.
    c.put_batch(vec![(key(7), b"latest".to_vec())]).unwrap();
    let before = node.metrics().total();
    node.shutdown().unwrap();

    let port = port_of(&addr);
    let node = start_at(&db, 2, port).or_else(|_| start_at(&db, 2, port)).map(|n| (n, addr.clone()));
    let (node, addr) = match node {
        Ok(x) => x,
        // Someone took the port meanwhile: any port will do for this test.
        Err(_) => start_node(&db, 2),
    };
    let after = node.metrics().total();
    assert_eq!(after.keys, before.keys);
    assert_eq!(after.log_bytes, before.log_bytes);
    let c = client(&addr);
    for (i, (k, v)) in expect.iter().enumerate() {
        let want: &[u8] = if i == 7 { b"latest" } else { v };
        assert_eq!(c.get(k, 0, u32::MAX).unwrap().as_deref(), Some(want), "key {i}");
        assert_eq!(c.stat(k).unwrap(), Some(want.len() as u64));
    }
    // Appending after a restart continues the log.
    c.put_batch(vec![(key(100_000), b"after restart".to_vec())]).unwrap();
    node.shutdown().unwrap();
    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    assert_eq!(c.get(&key(100_000), 0, 100).unwrap().unwrap(), b"after restart");
    assert_eq!(c.get(&key(399), 0, u32::MAX).unwrap().unwrap(), expect[399].1);
    node.shutdown().unwrap();
}

#[test]
fn torn_tail_is_cut_off() {
    let db = db_dir("torn");
    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    // One batch per key so each key's record lies after the previous one.
    let n = 20u32;
    for i in 0..n {
        c.put_batch(vec![(key(i), value(i, 5000))]).unwrap();
    }
    node.shutdown().unwrap();

    let last_of = |s: u16| (0..n).rev().find(|&i| shard_of(&key(i), 2) == s).unwrap();
    let torn_key = last_of(0);
    // Shard 0: cut its last record in half.
    let log0 = db.join("shard-0.log");
    let len0 = std::fs::metadata(&log0).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&log0).unwrap();
    f.set_len(len0 - 4096 - 100).unwrap();
    drop(f);
    // Shard 1: garbage after its last record, as a crash mid-append could leave.
    let log1 = db.join("shard-1.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log1).unwrap();
    f.write_all(&value(7, 1000)).unwrap();
    drop(f);

    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    for i in 0..n {
        let got = c.get(&key(i), 0, u32::MAX).unwrap();
        if i == torn_key {
            assert_eq!(got, None, "torn key {i} must be gone");
        } else {
            assert_eq!(got, Some(value(i, 5000)), "key {i}");
        }
    }
    assert_eq!(node.metrics().total().keys, n as u64 - 1);
    // The cut bytes were kept aside for inspection.
    let saved: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".log.cut-"))
        .collect();
    assert_eq!(saved.len(), 2, "{saved:?}");
    // The cut tails are gone from disk, so new appends follow the last good record.
    assert_eq!(std::fs::metadata(&log0).unwrap().len() % 4096, 0);
    assert_eq!(std::fs::metadata(&log1).unwrap().len() % 4096, 0);
    c.put_batch(vec![(key(torn_key), b"rewritten".to_vec())]).unwrap();
    c.put_batch(vec![(key(last_of(1)), b"rewritten too".to_vec())]).unwrap();
    node.shutdown().unwrap();

    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    assert_eq!(c.get(&key(torn_key), 0, 100).unwrap().unwrap(), b"rewritten");
    assert_eq!(c.get(&key(last_of(1)), 0, 100).unwrap().unwrap(), b"rewritten too");
    assert_eq!(node.metrics().total().keys, n as u64);
    node.shutdown().unwrap();
}

#[test]
fn corrupt_record_is_never_served() {
    let db = db_dir("corrupt");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    let a = value(1, 3000);
    let b = value(2, 10_000);
    c.put_batch(vec![(key(1), a.clone())]).unwrap();
    c.put_batch(vec![(key(2), b.clone())]).unwrap();
    assert_eq!(c.get(&key(2), 0, u32::MAX).unwrap().unwrap(), b);

    // The file header is one block, key(1)'s record the next; key(2)'s starts at 8192,
    // its value (3 blocks) after the 32-byte header, the key and the 3-entry table.
    let at = 8192 + 32 + key(2).len() as u64 + 3 * 8 + 5000;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(db.join("shard-0.log")).unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    assert_eq!(byte[0], b[5000]);
    f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // Byte 5000 lies in value block 1 (4096..8192): every read touching it fails.
    for (off, len) in [(0u64, u32::MAX), (4990, 20), (5000, 1), (4096, 4096), (8000, 2000)] {
        match c.get(&key(2), off, len) {
            Err(NetError::Remote { message, .. }) => assert!(message.contains("checksum"), "{message}"),
            other => panic!("corrupt block served: {:?}", other.map(|o| o.map(|v| v.len()))),
        }
    }
    // Blocks 0 and 2 are intact, verified and served.
    assert_eq!(c.get(&key(2), 0, 10).unwrap().unwrap(), &b[..10]);
    assert_eq!(c.get(&key(2), 8192, 4096).unwrap().unwrap(), &b[8192..]);
    // Other records are unaffected.
    assert_eq!(c.get(&key(1), 0, u32::MAX).unwrap().unwrap(), a);
    assert!(node.metrics().total().checksum_failures >= 5);
    node.shutdown().unwrap();
}

#[test]
fn corrupt_block_of_a_chunk_is_refused_only_where_read() {
    let db = db_dir("corrupt-chunk");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    let k = b"Bchunk".to_vec();
    let v = value(5, 1 << 20);
    c.put_batch(vec![(k.clone(), v.clone())]).unwrap();
    // A 1 MiB value starts one block into its record (header, key, table before it).
    let block = |i: u64| 4096 + 4096 + i * 4096;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(db.join("shard-0.log")).unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, block(100) + 7).unwrap();
    assert_eq!(byte[0], v[100 * 4096 + 7]);
    f.write_all_at(&[byte[0] ^ 1], block(100) + 7).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // A block other than the damaged one: served.
    assert_eq!(c.get(&k, 99 * 4096, 4096).unwrap().unwrap(), &v[99 * 4096..100 * 4096]);
    assert_eq!(c.get(&k, 101 * 4096 + 5, 4096).unwrap().unwrap(), &v[101 * 4096 + 5..102 * 4096 + 5]);
    // The damaged block: refused, alone or within a larger range.
    for (off, len) in [(100 * 4096u64, 4096u32), (100 * 4096 + 7, 1), (99 * 4096 + 1, 4096), (0, u32::MAX)] {
        match c.get(&k, off, len) {
            Err(NetError::Remote { message, .. }) => assert!(message.contains("value block 100"), "{message}"),
            other => panic!("corrupt block served: {:?}", other.map(|o| o.map(|v| v.len()))),
        }
    }
    assert_eq!(node.metrics().total().checksum_failures, 4);
    node.shutdown().unwrap();
}

#[test]
fn old_format_log_is_refused() {
    let db = db_dir("oldformat");
    // A version 1 file header, as written before per-block checksums.
    let mut h = vec![0u8; 4096];
    h[..8].copy_from_slice(b"MONOFSLG");
    h[8..12].copy_from_slice(&1u32.to_be_bytes());
    h[14..16].copy_from_slice(&1u16.to_be_bytes());
    std::fs::write(db.join("shard-0.log"), &h).unwrap();
    let err = start_at(&db, 1, 0).err().expect("an old-format log must be refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("log format version 1 is not supported") && msg.contains("shard-0.log"), "{msg}");
    // Left as it was.
    assert_eq!(std::fs::read(db.join("shard-0.log")).unwrap(), h);
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let db = db_dir("malformed");
    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    c.put_batch(vec![(key(1), b"one".to_vec())]).unwrap();

    // An idle, healthy connection opened before the bad ones.
    let mut good = Conn::connect(&shard_addr(&addr, 0), &test_key()).unwrap();

    // Over-long frame header from an authenticated peer: closed without an answer.
    let (mut s, _) = raw_session(&addr, &test_key());
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(read_to_end_or_reset(&mut s), Vec::<u8>::new());

    // Undecodable body: an ERROR frame (with its MAC), then closed.
    for body in [vec![0x77u8], vec![], vec![0x03, 0, 200]] {
        let (mut s, mut session) = raw_session(&addr, &test_key());
        s.write_all(&sealed(&mut session, &body)).unwrap();
        let got = read_to_end_or_reset(&mut s);
        assert!(got.len() > 5 + MAC_LEN, "{got:?}");
        let n = u32::from_be_bytes(got[..4].try_into().unwrap()) as usize;
        assert_eq!(got.len(), 4 + n + MAC_LEN);
        session.open(&[&got[..4 + n]], &got[4 + n..]).unwrap();
        assert!(matches!(Response::decode(&got[4..4 + n]).unwrap(), Response::Error(_)));
    }

    // A peer that hangs up mid-body.
    let (mut s, _) = raw_session(&addr, &test_key());
    s.write_all(&1000u32.to_be_bytes()).unwrap();
    s.write_all(&[1, 2, 3]).unwrap();
    drop(s);

    // INGEST is not for nodes.
    let mut conn = Conn::connect(&addr, &test_key()).unwrap();
    let ingest = Request::Ingest(monofs_net::proto::IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
        url: "file:///x".into(),
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes: vec![],
    });
    assert!(matches!(conn.call(&ingest), Err(NetError::Remote { .. })));

    // Everyone else is still served.
    assert!(matches!(good.call(&Request::Hello).unwrap(), Response::HelloOk { .. }));
    assert_eq!(c.get(&key(1), 0, 10).unwrap().unwrap(), b"one");
    let c2 = client(&addr);
    assert_eq!(c2.stat(&key(1)).unwrap(), Some(3));
    assert!(node.metrics().total().protocol_errors >= 4);
    node.shutdown().unwrap();
}

#[test]
fn port_in_use_and_bad_config_are_errors() {
    let db = db_dir("badcfg");
    let (node, addr) = start_node(&db, 2);
    // Shard 1's port is taken by the running node.
    let err = start_at(&db_dir("badcfg2"), 1, port_of(&addr) + 1).err().expect("port in use must fail");
    assert!(format!("{err:#}").contains("binding"), "{err:#}");
    assert!(start_at(&db, 0, 1).is_err());
    // A db path that is a file.
    let file = db.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    assert!(start_at(&file, 1, 0).is_err());
    node.shutdown().unwrap();
    // Reopening a db with another shard count would misplace keys.
    let err = start_at(&db, 3, 0).err().expect("shard count change must fail");
    assert!(format!("{err:#}").contains("shards"), "{err:#}");
    assert!(!db.join("shard-2.log").exists());
    assert_eq!(monofs_engine::check_io_uring(), Ok(()));
}
