//! Measurements, not checks (ignored by default; run in release):
//! `cargo test --release -p monofs-engine --test perf -- --ignored --nocapture --test-threads 1`
//! `PERF_QD` sets the GET queue depth (64), `PERF_SECS` the duration (3).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use monofs_net::proto::{Request, Response};

const CHUNK: usize = 1 << 20;

fn chunk_key(i: u64) -> Vec<u8> {
    let mut oid = [0u8; 20];
    oid[..8].copy_from_slice(&i.to_be_bytes());
    monofs_net::keys::blob_chunk(&oid, 0)
}

fn env_or(name: &str, d: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn populate(addr: &str, n: u64, size: usize, per_batch: u64) {
    let c = client(addr);
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let m = per_batch.min(n - i);
        c.put_batch((i..i + m).map(|j| (chunk_key(j), value(j as u32, size))).collect()).unwrap();
        i += m;
    }
    eprintln!("perf: stored {n} × {size} bytes in {:.2} s", t.elapsed().as_secs_f64());
}

/// 4 KiB GETs at random aligned offsets of 1 MiB chunks (the NFS read4k pattern).
#[test]
#[ignore]
fn chunk_read4k() {
    let db = db_dir("perf-read4k");
    let (node, addr) = start_node(&db, 1);
    let chunks = 256u64;
    populate(&addr, chunks, CHUNK, 7);
    let qd = env_or("PERF_QD", 64);
    let secs = env_or("PERF_SECS", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..qd)
        .map(|t| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = monofs_net::client::Conn::connect(&addr, &test_key()).unwrap();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t << 32);
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = chunk_key(rng % chunks);
                    let offset = (rng >> 20) % 256 * 4096;
                    let t0 = Instant::now();
                    match conn.call(&Request::Get { key, offset, len: 4096 }).unwrap() {
                        Response::Data(d) if d.len() == 4096 => {}
                        other => panic!("{other:?}"),
                    }
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    eprintln!(
        "perf: read4k of 1 MiB chunks, QD {qd}: {:.0} GET/s, p50 {} us, p99 {} us",
        lat.len() as f64 / secs as f64,
        q(0.5),
        q(0.99)
    );
    node.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&db);
}

/// Start-up scan of a 1 GiB log (every meta and block checksum verified).
#[test]
#[ignore]
fn scan_1gib() {
    for (name, size, n, per_batch) in [("1 MiB", CHUNK, 1024u64, 7u64), ("4000 B", 4000, 262_144, 1024)] {
        let db = db_dir("perf-scan");
        let (node, addr) = start_node(&db, 1);
        populate(&addr, n, size, per_batch);
        node.shutdown().unwrap();
        let bytes = std::fs::metadata(db.join("shard-0.log")).unwrap().len();
        // Cold: drop the page cache's copy (O_DIRECT bypasses it anyway).
        let t = Instant::now();
        let node = start_at(&db, 1, 0).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(node.metrics().total().keys, n);
        eprintln!(
            "perf: start-up scan of {:.2} GiB ({n} values of {name}): {secs:.2} s ({:.0} MB/s)",
            bytes as f64 / (1u64 << 30) as f64,
            bytes as f64 / secs / 1e6
        );
        node.shutdown().unwrap();
        let _ = std::fs::remove_dir_all(&db);
    }
}
