//! Lazy ingest, prefetch, FETCH_BLOB, STATUS and cache eviction, over TCP
//! against stand-in nodes.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use monofs_fetcher::{start, FetcherConfig, FetcherHandle};
use monofs_net::client::{Conn, NetError};
use monofs_net::ns::NsEntry;
use monofs_net::proto::{ContentMode, FetchBlobRequest, IngestRequest, NodeAddr, Request, Response, SourceKind};
use monofs_net::{keys, oid_from_hex, oid_hex, Oid, CHUNK_SIZE};

fn fetcher(cache: &Path, workers: usize, max_cache_bytes: u64) -> (FetcherHandle, String) {
    let mut cfg = FetcherConfig::new("127.0.0.1:0".parse().unwrap(), cache.to_path_buf(), common::test_key());
    cfg.prefetch_workers = workers;
    cfg.max_cache_bytes = max_cache_bytes;
    cfg.allow_local_sources = true;
    let h = start(cfg).unwrap();
    let addr = h.local_addr().to_string();
    (h, addr)
}

fn ingest_req(url: &str, content: ContentMode, nodes: Vec<NodeAddr>) -> IngestRequest {
    IngestRequest {
        kind: SourceKind::Git,
        content,
        url: url.into(),
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes,
    }
}

fn ingest_over(addr: &str, req: IngestRequest) -> (Result<NsEntry, String>, Vec<String>) {
    let mut conn = Conn::connect(addr, &test_key()).unwrap();
    conn.send(&Request::Ingest(req)).unwrap();
    let mut phases = Vec::new();
    loop {
        match conn.recv() {
            Ok(Response::Progress { phase, .. }) => phases.push(phase),
            Ok(Response::IngestDone(e)) => return (Ok(monofs_net::ns::decode(&e).unwrap().remove(0)), phases),
            Err(NetError::Remote { message, .. }) => return (Err(message), phases),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn status(addr: &str) -> serde_json::Value {
    match Conn::connect(addr, &test_key()).unwrap().call(&Request::Status).unwrap() {
        Response::Data(d) => serde_json::from_slice(&d).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Poll STATUS until `done` says so, for at most `secs`.
fn wait_status(addr: &str, secs: u64, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(addr);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} within {secs}s: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fetch_blob(addr: &str, url: &str, oid: Oid, size: u64, first: u32, n: u32, nodes: Vec<NodeAddr>) -> Result<(), String> {
    let req = FetchBlobRequest {
        kind: SourceKind::Git,
        url: url.into(),
        oid,
        size,
        first_chunk: first,
        chunks: n,
        replication: 1,
        nodes,
    };
    match Conn::connect(addr, &test_key()).unwrap().call(&Request::FetchBlob(req)) {
        Ok(Response::Ok) => Ok(()),
        Err(NetError::Remote { message, .. }) => Err(message),
        other => panic!("unexpected {other:?}"),
    }
}

fn keys_of(node: &FakeNode, kind: u8) -> Vec<Vec<u8>> {
    node.state.lock().unwrap().data.keys().filter(|k| k[0] == kind).cloned().collect()
}

fn blob_oid(repo: &Path, path: &str) -> Oid {
    oid_from_hex(&git_str(repo, &["rev-parse", &format!("HEAD:{path}")])).unwrap()
}

fn chunk(node: &FakeNode, oid: &Oid, i: u32) -> Option<Vec<u8>> {
    match node.state.lock().unwrap().data.get(&keys::blob_chunk(oid, i)) {
        Some(Stored::Full(v)) => Some(v.clone()),
        Some(other) => panic!("{other:?}"),
        None => None,
    }
}

/// Every blob of HEAD, stored whole and equal to git's.
fn assert_all_blobs(repo: &Path, node: &FakeNode) {
    let ls = git(repo, &["ls-tree", "-r", "-z", "HEAD"]);
    for l in ls.split(|&b| b == 0).filter(|l| !l.is_empty()) {
        let meta = std::str::from_utf8(&l[..l.iter().position(|&b| b == b'\t').unwrap()]).unwrap();
        let f: Vec<&str> = meta.split_whitespace().collect();
        if f[1] != "blob" {
            continue;
        }
        let want = git(repo, &["cat-file", "blob", f[2]]);
        let oid = oid_from_hex(f[2]).unwrap();
        let mut got = Vec::new();
        for i in 0..keys::chunk_count(want.len() as u64) {
            got.extend(chunk(node, &oid, i as u32).unwrap_or_else(|| panic!("chunk {i} of {}", f[2])));
        }
        assert!(got == want, "blob {}", f[2]);
    }
}

/// A repository with one blob of `mib` MiB (`big.bin`, compressible but not
/// trivially) next to a few small files.
fn big_repo(root: &Path, mib: usize) -> std::path::PathBuf {
    let r = root.join("bigrepo");
    std::fs::create_dir_all(r.join("docs")).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    // No delta search over the big blob when git packs it for a fetch.
    git(&r, &["config", "core.bigFileThreshold", "1m"]);
    git(&r, &["config", "core.compression", "1"]);
    let mut data = Vec::with_capacity(mib << 20);
    for off in (0..(mib << 20) + 12345).step_by(8) {
        let w = (off as u64 / 8).wrapping_mul(0x9E37_79B9) >> 7;
        data.extend_from_slice(&w.to_le_bytes());
    }
    data.truncate((mib << 20) + 12345);
    std::fs::write(r.join("big.bin"), &data).unwrap();
    for i in 0..6 {
        std::fs::write(r.join(format!("docs/f{i}.txt")), noise(300_000 + i * 1000, i as u64)).unwrap();
    }
    std::fs::write(r.join("README"), "big\n").unwrap();
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "big"]);
    r
}

#[test]
fn lazy_ingest_stores_trees_then_prefetch_stores_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let url = repo.display().to_string();

    // Without prefetch workers: the answer comes after the trees alone.
    let node = FakeNode::start("solo", false);
    let (h, addr) = fetcher(&tmp.path().join("c1"), 0, 1 << 30);
    let (r, phases) = ingest_over(&addr, ingest_req(&url, ContentMode::Lazy, vec![node.node_addr()]));
    let e = r.unwrap();
    assert_eq!(phases.first().map(String::as_str), Some("fetching"));
    assert_eq!(phases.last().map(String::as_str), Some("done"));
    assert!(phases.iter().any(|p| p == "trees") && !phases.iter().any(|p| p == "blobs"), "{phases:?}");
    assert_eq!(keys_of(&node, keys::TREE).len(), 6);
    assert!(keys_of(&node, keys::BLOB).is_empty(), "no blob before prefetch");
    assert!(node.state.lock().unwrap().data.contains_key(&keys::tree(&e.root_tree)));
    // No workers: content comes only on first read, so nothing is queued.
    std::thread::sleep(Duration::from_millis(200));
    let s = status(&addr);
    assert_eq!(s["prefetch_queued"], 0, "{s}");
    assert_eq!(s["prefetch_workers"], 0, "{s}");
    assert_eq!(s["healthy"], true);

    // FETCH_BLOB: a small blob fetched by id (the lazy ingest fetched none),
    // then clear refusals.
    let readme = blob_oid(&repo, "README.md");
    let nodes = vec![node.node_addr()];
    fetch_blob(&addr, &url, readme, 13, 0, 1, nodes.clone()).unwrap();
    assert_eq!(chunk(&node, &readme, 0).unwrap(), b"hello MonoFS\n");
    let big = blob_oid(&repo, "big.bin");
    let err = fetch_blob(&addr, &url, big, 3 << 20, 2, 2, nodes.clone()).unwrap_err();
    assert!(err.contains("which has 3 chunks"), "{err}");
    let err = fetch_blob(&addr, &url, readme, 5, 0, 1, nodes.clone()).unwrap_err();
    assert!(err.contains("has 13 bytes, the request says 5"), "{err}");
    let err = fetch_blob(&addr, &url, [7; 20], 10, 0, 1, nodes.clone()).unwrap_err();
    assert!(err.contains("is not in") && err.contains("does not have it"), "{err}");
    let s = status(&addr);
    assert_eq!((s["hits"].as_u64(), s["misses"].as_u64()), (Some(0), Some(2)), "{s}");
    assert_eq!(s["inflight_fetches"], 0);
    h.shutdown();

    // With workers: every blob arrives in the background.
    let node = FakeNode::start("solo", false);
    let (h, addr) = fetcher(&tmp.path().join("c2"), 4, 1 << 30);
    let t = Instant::now();
    ingest_over(&addr, ingest_req(&url, ContentMode::Lazy, vec![node.node_addr()])).0.unwrap();
    let s = wait_status(&addr, 20, "prefetch done", |s| s["prefetch_queued"] == 0 && s["repos"][0]["pending"] == 0);
    eprintln!("prefetched in {:.2}s: {s}", t.elapsed().as_secs_f64());
    assert_eq!(s["repos"][0]["queued"], 11);
    assert_eq!(s["repos"][0]["done"], 11);
    assert_eq!(s["repos"][0]["failed"], 0);
    assert_eq!(keys_of(&node, keys::BLOB).len(), 12);
    assert_all_blobs(&repo, &node);
    // Each chunk put once: prefetch asks before it sends.
    assert!(node.state.lock().unwrap().puts.values().all(|&n| n == 1));
    h.shutdown();
}

#[test]
fn fetch_blob_stores_exactly_the_asked_chunks_even_after_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = big_repo(tmp.path(), 40);
    let url = format!("file://{}", repo.display());
    let node = FakeNode::start("solo", false);
    let nodes = vec![node.node_addr()];
    // 1 KB: below the size of the blob-less repository, so unused entries go at once.
    let (h, addr) = fetcher(&tmp.path().join("cache"), 0, 1000);
    ingest_over(&addr, ingest_req(&url, ContentMode::Lazy, nodes.clone())).0.unwrap();
    assert!(keys_of(&node, keys::BLOB).is_empty());
    let s = wait_status(&addr, 15, "repository evicted", |s| s["repos_cached"] == 0);
    assert_eq!(s["cache_bytes"], 0, "{s}");

    let oid = blob_oid(&repo, "big.bin");
    let size = (40u64 << 20) + 12345;
    let want = std::fs::read(repo.join("big.bin")).unwrap();
    fetch_blob(&addr, &url, oid, size, 5, 3, nodes.clone()).unwrap();
    let mut got: Vec<u32> = keys_of(&node, keys::BLOB).iter().map(|k| u32::from_be_bytes(k[21..25].try_into().unwrap())).collect();
    got.sort();
    assert_eq!(got, vec![5, 6, 7], "exactly the asked chunks");
    for i in 5..8 {
        assert!(chunk(&node, &oid, i).unwrap() == want[i as usize * CHUNK_SIZE..(i as usize + 1) * CHUNK_SIZE]);
    }
    // Served again from the materialized copy, while it is there.
    let s = status(&addr);
    assert_eq!(s["misses"], 1, "{s}");
    // Evicted again (repository and materialized blob); the last, partial chunk still comes.
    wait_status(&addr, 15, "cache emptied", |s| s["repos_cached"] == 0 && s["blobs_cached"] == 0);
    fetch_blob(&addr, &url, oid, size, 40, 1, nodes.clone()).unwrap();
    assert!(chunk(&node, &oid, 40).unwrap() == want[40 * CHUNK_SIZE..]);
    assert_eq!(keys_of(&node, keys::BLOB).len(), 4);
    let s = status(&addr);
    assert_eq!(s["misses"], 2, "{s}");
    h.shutdown();
}

#[test]
fn concurrent_fetch_blobs_under_a_tiny_cache_are_all_correct() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = big_repo(tmp.path(), 33);
    let url = repo.display().to_string();
    let node = FakeNode::start("solo", false);
    let nodes = vec![node.node_addr()];
    let (h, addr) = fetcher(&tmp.path().join("cache"), 0, 1 << 20);
    ingest_over(&addr, ingest_req(&url, ContentMode::Lazy, nodes.clone())).0.unwrap();
    let big = blob_oid(&repo, "big.bin");
    let big_size = (33u64 << 20) + 12345;
    let mut asks: Vec<(Oid, u64, u32, u32)> = Vec::new();
    for i in 0..6 {
        let p = format!("docs/f{i}.txt");
        asks.push((blob_oid(&repo, &p), std::fs::metadata(repo.join(&p)).unwrap().len(), 0, 1));
    }
    for first in [0u32, 10, 20, 30, 33, 10] {
        asks.push((big, big_size, first, 1));
    }
    let want = std::fs::read(repo.join("big.bin")).unwrap();
    // Two rounds of concurrent requests (duplicates included); between them the
    // cache is emptied, so the second round fetches the repository again.
    for round in 1..=2u64 {
        let t = Instant::now();
        let threads: Vec<_> = asks
            .iter()
            .map(|&(oid, size, first, n)| {
                let (addr, url, nodes) = (addr.clone(), url.clone(), nodes.clone());
                std::thread::spawn(move || fetch_blob(&addr, &url, oid, size, first, n, nodes))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        eprintln!("round {round}: {} FETCH_BLOBs in {:.2}s", asks.len(), t.elapsed().as_secs_f64());
        for first in [0usize, 10, 20, 30, 33] {
            let end = ((first + 1) * CHUNK_SIZE).min(want.len());
            assert!(chunk(&node, &big, first as u32).unwrap() == want[first * CHUNK_SIZE..end], "chunk {first}");
        }
        for i in 0..6 {
            let p = format!("docs/f{i}.txt");
            assert_eq!(chunk(&node, &blob_oid(&repo, &p), 0).unwrap(), std::fs::read(repo.join(&p)).unwrap());
        }
        let s = wait_status(&addr, 15, "cache emptied", |s| s["cache_bytes"] == 0 && s["inflight_fetches"] == 0);
        assert!(s["evictions"].as_u64().unwrap() >= round, "{s}");
        // Removed between rounds so the second round must store them again.
        node.state.lock().unwrap().data.retain(|k, _| k[0] != keys::BLOB);
    }
    let s = status(&addr);
    assert!(s["misses"].as_u64().unwrap() >= 2, "each round fetched the repository: {s}");
    h.shutdown();
}

#[test]
fn refresh_sends_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("refresh");
    git(tmp.path(), &["init", "-q", "-b", "main", r.to_str().unwrap()]);
    let w = |p: &str, c: &str| {
        let p = r.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    };
    for d in ["vendor/a/b/c", "vendor/x", "src/deep/er", "old", "docs", "bin"] {
        w(&format!("{d}/keep.txt"), &format!("keep {d}\n"));
    }
    w("src/a.txt", "a1\n");
    w("old/gone.txt", "gone\n");
    w("docs/r1.md", "rename me\n");
    w("bin/tool", "#!/bin/sh\n");
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "A"]);
    let trees_of = |rev: &str| -> std::collections::HashSet<Vec<u8>> {
        let out = git_str(&r, &["ls-tree", "-r", "-t", "--format=%(objecttype) %(objectname)", rev]);
        let mut s: std::collections::HashSet<Vec<u8>> = out
            .lines()
            .filter_map(|l| l.strip_prefix("tree "))
            .map(|o| keys::tree(&oid_from_hex(o).unwrap()))
            .collect();
        s.insert(keys::tree(&oid_from_hex(&git_str(&r, &["rev-parse", &format!("{rev}^{{tree}}")])).unwrap()));
        s
    };
    let trees_a = trees_of("HEAD");
    let node = FakeNode::start("solo", false);
    let (h, addr) = fetcher(&tmp.path().join("cache"), 2, 1 << 30);
    let url = r.display().to_string();
    ingest_over(&addr, ingest_req(&url, ContentMode::Eager, vec![node.node_addr()])).0.unwrap();
    let puts_a = node.state.lock().unwrap().puts.clone();
    assert_eq!(puts_a.keys().filter(|k| k[0] == keys::TREE).count(), trees_a.len());

    // B: add, modify, delete, rename, mode change.
    w("src/new.txt", "new\n");
    w("src/a.txt", "a2\n");
    std::fs::remove_file(r.join("old/gone.txt")).unwrap();
    git(&r, &["mv", "docs/r1.md", "docs/r2.md"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "B"]);
    let trees_b = trees_of("HEAD");
    let (e, phases) = ingest_over(&addr, ingest_req(&url, ContentMode::Eager, vec![node.node_addr()]));
    let e = e.unwrap();
    assert_eq!(phases.last().map(String::as_str), Some("done"));
    let st = node.state.lock().unwrap();
    let mut sent_again: Vec<&Vec<u8>> = st.puts.iter().filter(|(k, &n)| n > puts_a.get(*k).copied().unwrap_or(0)).map(|(k, _)| k).collect();
    sent_again.sort();
    let trees_sent: std::collections::HashSet<Vec<u8>> =
        sent_again.iter().filter(|k| k[0] == keys::TREE).map(|k| k.to_vec()).collect();
    let new_trees: std::collections::HashSet<Vec<u8>> = trees_b.difference(&trees_a).cloned().collect();
    // Root, src, old, docs, bin changed; vendor/** and src/deep/** did not.
    assert_eq!(new_trees.len(), 5);
    assert_eq!(trees_sent, new_trees, "only the changed trees are sent");
    // Blobs: only a2 and new; the renamed and re-moded files keep their blob.
    let blobs_sent: Vec<&&Vec<u8>> = sent_again.iter().filter(|k| k[0] == keys::BLOB).collect();
    assert_eq!(blobs_sent.len(), 2, "{blobs_sent:?}");
    assert!(st.puts.values().all(|&n| n == 1), "no record is sent twice");
    let root = monofs_net::dir::decode(match st.data.get(&keys::tree(&e.root_tree)).unwrap() {
        Stored::Full(v) => v,
        _ => unreachable!(),
    })
    .unwrap();
    let names: Vec<String> = root.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
    assert_eq!(names, vec!["bin", "docs", "old", "src", "vendor"]);
    let bin = root.iter().find(|e| e.name == b"bin").unwrap().oid;
    let bin = monofs_net::dir::decode(match st.data.get(&keys::tree(&bin)).unwrap() {
        Stored::Full(v) => v,
        _ => unreachable!(),
    })
    .unwrap();
    assert_eq!(bin.iter().find(|e| e.name == b"tool").unwrap().mode, monofs_net::dir::MODE_EXEC);
    drop(st);

    // The same commit again: the root is stored, nothing is sent.
    let before = node.total_puts();
    ingest_over(&addr, ingest_req(&url, ContentMode::Lazy, vec![node.node_addr()])).0.unwrap();
    assert_eq!(node.total_puts(), before);
    h.shutdown();
}

/// A git:// server that accepts and then says nothing (`hang`) or garbage.
fn bad_remote(hang: bool) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            if !hang {
                use std::io::Write;
                let mut s = s;
                let _ = s.write_all(b"0032this is not a git server at all, sorry\n0000");
                continue;
            }
            held.push(s);
        }
    });
    port
}

#[test]
fn bad_remotes_fail_within_bounds_and_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let nodes = vec![node.node_addr()];
    let mut cfg = FetcherConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("cache"), common::test_key());
    cfg.fetch_timeout = Duration::from_secs(3);
    cfg.allow_local_sources = true;
    let h = start(cfg).unwrap();
    let addr = h.local_addr().to_string();

    let port = bad_remote(true);
    let t = Instant::now();
    let err = ingest_over(&addr, ingest_req(&format!("git://127.0.0.1:{port}/x.git"), ContentMode::Lazy, nodes.clone()))
        .0
        .unwrap_err();
    let secs = t.elapsed().as_secs_f64();
    assert!(err.contains("git did not finish within 3 s"), "{err}");
    assert!(secs < 3.0 + 2.0, "failed after {secs:.1}s, bound is the 3 s fetch timeout");

    let port = bad_remote(false);
    let t = Instant::now();
    let err = ingest_over(&addr, ingest_req(&format!("git://127.0.0.1:{port}/x.git"), ContentMode::Lazy, nodes.clone()))
        .0
        .unwrap_err();
    assert!(err.starts_with(&format!("repository 'git://127.0.0.1:{port}/x.git' could not be fetched: ")), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "garbage fails at once");

    let mut req = ingest_req(&repo.display().to_string(), ContentMode::Lazy, nodes.clone());
    req.git_ref = "no-such-branch".into();
    let err = ingest_over(&addr, req).0.unwrap_err();
    assert_eq!(err, format!("ref 'no-such-branch' not found in {}", repo.display()));
    assert_eq!(node.total_puts(), 0, "nothing stored");
    assert_eq!(status(&addr)["prefetch_queued"], 0);
    h.shutdown();
}

/// Everything the fetcher logs in this test process, captured once.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Capture(w.clone())).finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        buf
    })
    .clone()
}

/// Trees of `rev` in `repo`, the root included.
fn tree_count(repo: &Path, rev: &str) -> usize {
    1 + git_str(repo, &["ls-tree", "-r", "-t", "-d", rev]).lines().count()
}

fn blob_at(repo: &Path, rev: &str, path: &str) -> (Oid, Vec<u8>) {
    let hex = git_str(repo, &["rev-parse", &format!("{rev}:{path}")]);
    (oid_from_hex(&hex).unwrap(), git(repo, &["cat-file", "blob", &hex]))
}


/// A fetcher on a fresh cache, one stand-in node, and a generated repository
/// with a long history (`long_history_repo`).
struct Long {
    _tmp: tempfile::TempDir,
    repo: std::path::PathBuf,
    url: String,
    node: FakeNode,
    cache: std::path::PathBuf,
    h: FetcherHandle,
    addr: String,
}

impl Long {
    /// `file_url`: reach the repository as `file://…` rather than by its path.
    fn new(name: &str, commits: usize, dirs: usize, per_dir: usize, file_url: bool, workers: usize, max_cache: u64) -> Long {
        let tmp = tempfile::tempdir().unwrap();
        let repo = long_history_repo(tmp.path(), name, commits, dirs, per_dir);
        let url = if file_url { format!("file://{}", repo.display()) } else { repo.display().to_string() };
        let node = FakeNode::start("solo", false);
        let cache = tmp.path().join("cache");
        let (h, addr) = fetcher(&cache, workers, max_cache);
        Long { _tmp: tmp, repo, url, node, cache, h, addr }
    }

    fn ingest(&self, content: ContentMode) -> NsEntry {
        ingest_over(&self.addr, ingest_req(&self.url, content, vec![self.node.node_addr()])).0.unwrap()
    }

    /// Objects of each type in the fetcher's one cache repository.
    fn cached(&self) -> std::collections::HashMap<String, usize> {
        object_counts(&cache_repo(&self.cache))
    }
}

#[test]
fn lazy_ingest_of_a_long_history_fetches_the_commit_and_its_trees_only() {
    let t = Long::new("long", 3000, 7, 50, true, 0, 1 << 30);
    let (repo, url, node, addr) = (&t.repo, &t.url, &t.node, &t.addr);
    let e = t.ingest(ContentMode::Lazy);
    assert_eq!(oid_hex(&e.commit), git_str(repo, &["rev-parse", "main"]));

    let trees = tree_count(repo, "main");
    assert_eq!(trees, 8);
    let n = t.cached();
    assert_eq!(n.get("commit"), Some(&1), "one commit of 3000: {n:?}");
    assert_eq!(n.get("tree"), Some(&trees), "{n:?}");
    assert_eq!(n.get("blob"), None, "no blob: {n:?}");
    assert_eq!(keys_of(node, keys::TREE).len(), trees);
    assert!(keys_of(node, keys::BLOB).is_empty());

    // A READ's FETCH_BLOB brings that one blob, by id.
    let (oid, want) = blob_at(repo, "main", "d3/f17.txt");
    fetch_blob(addr, url, oid, want.len() as u64, 0, 1, vec![node.node_addr()]).unwrap();
    assert_eq!(chunk(node, &oid, 0).unwrap(), want);
    let n = t.cached();
    assert_eq!((n.get("commit"), n.get("blob")), (Some(&1), Some(&1)), "{n:?}");
    assert_eq!(status(addr)["misses"], 1);
    t.h.shutdown();
}

#[test]
fn prefetch_fetches_the_blobs_by_id_in_batches() {
    let t = Long::new("long", 400, 4, 25, false, 2, 1 << 30);
    t.ingest(ContentMode::Lazy);
    let s = wait_status(&t.addr, 30, "prefetch done", |s| s["prefetch_queued"] == 0 && s["repos"][0]["pending"] == 0);
    assert_eq!(s["repos"][0]["done"], 100, "{s}");
    assert_eq!(s["repos"][0]["failed"], 0, "{s}");
    assert_all_blobs(&t.repo, &t.node);
    let n = t.cached();
    assert_eq!((n.get("commit"), n.get("blob")), (Some(&1), Some(&100)), "only the commit's blobs: {n:?}");
    t.h.shutdown();
}

#[test]
fn an_evicted_blob_is_fetched_again_by_id_after_the_ref_moved_on() {
    // 1 KB of cache: every unused entry is evicted at once.
    let t = Long::new("long", 300, 3, 10, true, 0, 1000);
    let (repo, url, node, addr) = (&t.repo, &t.url, &t.node, &t.addr);
    t.ingest(ContentMode::Lazy);
    let (oid, want) = blob_at(repo, "main", "d1/f4.txt");
    // `main` is replaced by an unrelated commit: no ref reaches the blob any more.
    git(repo, &["update-ref", "-d", "refs/heads/main"]);
    let mut s = Vec::new();
    fast_import_commit(&mut s, COMMIT_TIME + 5000, false, &[("other.txt".into(), "moved on\n".into())]);
    fast_import(repo, &s);
    assert_eq!(git_str(repo, &["rev-list", "--count", "main"]), "1");
    wait_status(addr, 15, "repository evicted", |s| s["repos_cached"] == 0);

    // Only a fetch by id finds it: every branch and tag of the remote lacks it.
    fetch_blob(addr, url, oid, want.len() as u64, 0, 1, vec![node.node_addr()]).unwrap();
    assert_eq!(chunk(node, &oid, 0).unwrap(), want);
    let s = status(addr);
    assert_eq!(s["misses"], 1, "{s}");
    t.h.shutdown();
}

#[test]
fn refresh_fetches_only_the_new_commit() {
    let t = Long::new("long", 2000, 5, 20, false, 0, 1 << 30);
    let (repo, node) = (&t.repo, &t.node);
    let first = t.ingest(ContentMode::Lazy);
    let trees = tree_count(repo, "main");
    let stored = keys_of(node, keys::TREE).len();
    assert_eq!(stored, trees);

    let mut s = Vec::new();
    fast_import_commit(&mut s, COMMIT_TIME + 9000, true, &[("d2/f7.txt".into(), "changed by the refresh\n".into())]);
    fast_import(repo, &s);
    let second = t.ingest(ContentMode::Lazy);
    assert_ne!(first.commit, second.commit);
    assert_eq!(oid_hex(&second.commit), git_str(repo, &["rev-parse", "main"]));
    let n = t.cached();
    // The new commit, its root and d2: nothing of the 2000 commits before.
    assert_eq!(n.get("commit"), Some(&2), "{n:?}");
    assert_eq!(n.get("tree"), Some(&(trees + 2)), "{n:?}");
    assert_eq!(n.get("blob"), None, "{n:?}");
    assert_eq!(keys_of(node, keys::TREE).len(), stored + 2, "only the changed trees are stored");
    t.h.shutdown();
}

#[test]
fn a_remote_refusing_filters_gets_the_blobs_with_one_log_line() {
    let logs = captured_logs();
    let t = Long::new("refuses", 500, 2, 10, true, 0, 1 << 30);
    git(&t.repo, &["config", "uploadpack.allowFilter", "false"]);
    let e = t.ingest(ContentMode::Lazy);
    assert_eq!(oid_hex(&e.commit), git_str(&t.repo, &["rev-parse", "main"]));
    let n = t.cached();
    assert_eq!((n.get("commit"), n.get("blob")), (Some(&1), Some(&20)), "shallow still, with the blobs: {n:?}");
    assert_eq!(keys_of(&t.node, keys::TREE).len(), 3);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lines = text.lines().filter(|l| l.contains("refuses filtered fetches") && l.contains(&t.url)).count();
    assert_eq!(lines, 1, "{text}");
    t.h.shutdown();
}

#[test]
fn a_remote_refusing_shallow_fetches_gets_the_full_history_with_one_log_line() {
    let logs = captured_logs();
    let tmp = tempfile::tempdir().unwrap();
    let repo = long_history_repo(tmp.path(), "dumb.git", 50, 2, 5);
    // Dumb HTTP (static files) cannot serve a shallow fetch.
    git(&repo, &["update-server-info"]);
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        std::process::Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/dumb.git");
    let node = FakeNode::start("solo", false);
    let cache = tmp.path().join("cache");
    let (h, addr) = fetcher(&cache, 0, 1 << 30);
    let mut req = ingest_req(&url, ContentMode::Eager, vec![node.node_addr()]);
    req.git_ref = "main".into();
    let e = ingest_over(&addr, req).0.unwrap();
    assert_eq!(oid_hex(&e.commit), git_str(&repo, &["rev-parse", "main"]));
    assert_all_blobs(&repo, &node);
    let n = object_counts(&cache_repo(&cache));
    assert_eq!(n.get("commit"), Some(&50), "the full history: {n:?}");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lines = text.lines().filter(|l| l.contains("refuses shallow fetches") && l.contains(&url)).count();
    assert_eq!(lines, 1, "{text}");
    h.shutdown();
}
