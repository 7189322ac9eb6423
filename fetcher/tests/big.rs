//! A blob far above the in-memory threshold is streamed with bounded memory.
//! (Its own test binary, so the process's peak RSS is this test's alone.)

mod common;

use common::*;
use monofs_fetcher::ingest;
use monofs_net::proto::IngestRequest;
use monofs_net::{keys, CHUNK_SIZE};

const SIZE: usize = 96 << 20;

/// Compressible but not trivially so: a counter per 8 bytes, mixed.
fn chunk_of(i: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(CHUNK_SIZE);
    let start = i * CHUNK_SIZE;
    let end = (start + CHUNK_SIZE).min(SIZE);
    for off in (start..end).step_by(8) {
        let w = (off as u64 / 8).wrapping_mul(0x9E37_79B9) >> 7;
        v.extend_from_slice(&w.to_le_bytes()[..(end - off).min(8)]);
    }
    v
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap()
}

#[test]
fn big_blob_is_streamed_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("bigrepo");
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    // No delta search over the big blob when git packs it for the fetch.
    git(&r, &["config", "core.bigFileThreshold", "1m"]);
    git(&r, &["config", "core.compression", "1"]);
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(r.join("huge.bin")).unwrap());
        for i in 0..SIZE.div_ceil(CHUNK_SIZE) {
            f.write_all(&chunk_of(i)).unwrap();
        }
    }
    std::fs::write(r.join("small"), "s\n").unwrap();
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "big"]);
    let oid = monofs_net::oid_from_hex(&git_str(&r, &["rev-parse", "HEAD:huge.bin"])).unwrap();

    let node = FakeNode::start("solo", true);
    let before = peak_rss_kib();
    let t = std::time::Instant::now();
    let req = IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
        url: r.display().to_string(),
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes: vec![node.node_addr()],
    };
    let mut last = (String::new(), 0, 0);
    let mut calls = 0;
    let mut storing_since = None;
    ingest(&tmp.path().join("cache"), &test_key(), &req, &mut |p, o, b| {
        calls += 1;
        if p == "blobs" && storing_since.is_none() {
            storing_since = Some(std::time::Instant::now());
        }
        last = (p.to_string(), o, b);
    })
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let store_secs = storing_since.unwrap().elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    eprintln!(
        "ingested a {} MiB blob in {secs:.1}s (git fetch {:.1}s, storing {store_secs:.1}s = {:.0} MiB/s), \
         peak RSS {} MiB (before {} MiB), {calls} progress calls",
        SIZE >> 20,
        secs - store_secs,
        (SIZE >> 20) as f64 / store_secs,
        peak / 1024,
        before / 1024
    );
    assert_eq!(last.0, "done");
    // Blob bytes plus the one directory record.
    assert!(last.2 > SIZE as u64 + 2 && last.2 < SIZE as u64 + 200, "{last:?}");
    assert!(
        (calls as f64) < 10.0 * secs + 20.0,
        "progress is throttled: {calls} calls in {secs:.1}s"
    );
    assert!(
        peak < 90 * 1024,
        "peak RSS {peak} KiB: the blob must not be held whole"
    );

    let st = node.state.lock().unwrap();
    let n = SIZE.div_ceil(CHUNK_SIZE);
    for i in 0..n {
        match st.data.get(&keys::blob_chunk(&oid, i as u32)) {
            Some(Stored::Digest(len, h)) => {
                let want = chunk_of(i);
                assert_eq!(*len as usize, want.len(), "chunk {i}");
                assert_eq!(*h, xxhash_rust::xxh3::xxh3_64(&want), "chunk {i}");
            }
            other => panic!("chunk {i}: {other:?}"),
        }
    }
    assert!(!st.data.contains_key(&keys::blob_chunk(&oid, n as u32)));
}
