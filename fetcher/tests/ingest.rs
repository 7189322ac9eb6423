//! Ingest end to end against stand-in nodes: every record checked against git.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use monofs_fetcher::{ingest, namespace_path, IngestError};
use monofs_net::client::Cluster;
use monofs_net::dir::{self, MODE_SUBMODULE, MODE_TREE};
use monofs_net::proto::{IngestRequest, NodeAddr};
use monofs_net::{keys, oid_from_hex, oid_hex, Oid};

fn request(url: &str, git_ref: &str, nodes: Vec<NodeAddr>, rf: u16) -> IngestRequest {
    IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
        url: url.into(),
        git_ref: git_ref.into(),
        source_id: String::new(),
        replication: rf,
        nodes,
    }
}

fn run(
    cache: &Path,
    req: &IngestRequest,
) -> (Result<monofs_net::ns::NsEntry, IngestError>, Vec<String>) {
    let mut phases = Vec::new();
    let r = ingest(cache, &test_key(), req, &mut |p, _, _| phases.push(p.to_string())).map(|mut v| {
        assert_eq!(v.len(), 1, "a Git ingest publishes one entry");
        v.remove(0)
    });
    (r, phases)
}

struct LsEntry {
    mode: u32,
    kind: String,
    oid: Oid,
    size: Option<u64>,
    name: Vec<u8>,
}

fn ls_tree(repo: &Path, tree: &str) -> Vec<LsEntry> {
    let out = git(repo, &["ls-tree", "-l", "-z", tree]);
    let mut v: Vec<LsEntry> = out
        .split(|&b| b == 0)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let tab = l.iter().position(|&b| b == b'\t').unwrap();
            let meta = std::str::from_utf8(&l[..tab]).unwrap();
            let f: Vec<&str> = meta.split_whitespace().collect();
            LsEntry {
                mode: u32::from_str_radix(f[0], 8).unwrap(),
                kind: f[1].to_string(),
                oid: oid_from_hex(f[2]).unwrap(),
                size: f[3].parse().ok(),
                name: l[tab + 1..].to_vec(),
            }
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Check the stored tree `tree` (and everything under it) against git; returns
/// its number of subdirectories.
fn check_tree(repo: &Path, cluster: &Cluster, tree: &Oid, seen: &mut Vec<Oid>) -> u64 {
    let rec = cluster
        .get(&keys::tree(tree), 0, u32::MAX)
        .unwrap()
        .expect("tree record stored");
    let entries = dir::decode(&rec).unwrap();
    let ls = ls_tree(repo, &oid_hex(tree));
    assert_eq!(entries.len(), ls.len(), "entries of tree {}", oid_hex(tree));
    let mut subdirs = 0;
    for (e, g) in entries.iter().zip(&ls) {
        assert_eq!(e.name, g.name);
        assert_eq!(e.mode, g.mode, "{}", String::from_utf8_lossy(&e.name));
        assert_eq!(e.oid, g.oid);
        match g.kind.as_str() {
            "tree" => {
                assert_eq!(e.mode, MODE_TREE);
                subdirs += 1;
                assert_eq!(e.size, check_tree(repo, cluster, &e.oid, seen));
            }
            "commit" => {
                assert_eq!(e.mode, MODE_SUBMODULE);
                assert_eq!(e.size, 0);
            }
            "blob" => {
                assert_eq!(Some(e.size), g.size);
                if !seen.contains(&e.oid) {
                    seen.push(e.oid);
                    check_blob(repo, cluster, &e.oid, e.size);
                }
            }
            k => panic!("unexpected kind {k}"),
        }
    }
    subdirs
}

fn check_blob(repo: &Path, cluster: &Cluster, oid: &Oid, size: u64) {
    let want = git(repo, &["cat-file", "blob", &oid_hex(oid)]);
    assert_eq!(want.len() as u64, size);
    let n = keys::chunk_count(size);
    let mut got = Vec::new();
    for i in 0..n {
        let c = cluster
            .get(&keys::blob_chunk(oid, i as u32), 0, u32::MAX)
            .unwrap()
            .expect("chunk stored");
        assert!(c.len() <= monofs_net::CHUNK_SIZE);
        got.extend(c);
    }
    assert!(got == want, "blob {} differs", oid_hex(oid));
    assert!(
        cluster
            .get(&keys::blob_chunk(oid, n as u32), 0, 1)
            .unwrap()
            .is_none(),
        "no chunk past the end"
    );
}

#[test]
fn file_url_stores_every_record_once_on_its_owners() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let nodes: Vec<FakeNode> = (0..3)
        .map(|i| FakeNode::start(&format!("n{i}"), false))
        .collect();
    let addrs: Vec<NodeAddr> = nodes.iter().map(FakeNode::node_addr).collect();
    let url = format!("file://{}", repo.display());
    let (r, phases) = run(
        &tmp.path().join("cache"),
        &request(&url, "", addrs.clone(), 2),
    );
    let e = r.unwrap();
    assert!(e.path.starts_with("local/fixture-"), "{}", e.path);
    assert_eq!(e.path, namespace_path(&repo.display().to_string(), "").unwrap(), "file:// and the path agree");
    assert_eq!(e.url, url);
    assert_eq!(e.git_ref, "main");
    assert_eq!(oid_hex(&e.commit), git_str(&repo, &["rev-parse", "HEAD"]));
    assert_eq!(
        oid_hex(&e.root_tree),
        git_str(&repo, &["rev-parse", "HEAD^{tree}"])
    );
    assert_eq!(e.commit_time, COMMIT_TIME);
    assert_eq!(
        e.root_subdirs, 4,
        "a, b, dir with space, foo; not the submodule"
    );
    assert_eq!(phases.first().map(String::as_str), Some("fetching"));
    assert_eq!(phases.last().map(String::as_str), Some("done"));

    let cluster = Cluster::new(addrs, 2, &test_key());
    let mut seen = Vec::new();
    assert_eq!(check_tree(&repo, &cluster, &e.root_tree, &mut seen), 4);

    // Every key put exactly once on each of its owners, and nowhere else.
    let mut keys_seen = std::collections::HashSet::new();
    for (i, n) in nodes.iter().enumerate() {
        for (k, &count) in &n.state.lock().unwrap().puts {
            assert_eq!(count, 1, "key {k:?} put {count} times on {}", n.id);
            assert!(
                cluster.owners(k).contains(&i),
                "key on a node that does not own it"
            );
            keys_seen.insert(k.clone());
        }
    }
    for k in &keys_seen {
        let holders = nodes
            .iter()
            .filter(|n| n.state.lock().unwrap().puts.contains_key(k))
            .count();
        assert_eq!(holders, 2, "replication 2");
    }
    // Distinct objects: trees root, a(=b), x, y, dir with space, foo; blobs README, unicode,
    // empty, run.sh, link, same, deep, inner, foo.txt, foo-bar, big.bin (3 chunks).
    let trees = keys_seen.iter().filter(|k| k[0] == keys::TREE).count();
    assert_eq!(trees, 6);
    let chunks = keys_seen.iter().filter(|k| k[0] == keys::BLOB).count();
    // 9 non-empty blobs of one chunk + 3 chunks of big.bin; the empty blob has none.
    assert_eq!(chunks, 12);
}

#[test]
fn plain_path_refs_tags_and_shas() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let cache = tmp.path().join("cache");
    let url = repo.display().to_string();
    let cluster = Cluster::new(vec![node.node_addr()], 1, &test_key());
    for (r, rev) in [("other", "other"), ("v1", "v1^{commit}"), ("main", "main")] {
        let e = run(&cache, &request(&url, r, vec![node.node_addr()], 1))
            .0
            .unwrap();
        assert_eq!(e.git_ref, r);
        assert_eq!(e.path, namespace_path(&url, "").unwrap());
        assert_eq!(
            oid_hex(&e.commit),
            git_str(&repo, &["rev-parse", rev]),
            "{r}"
        );
        check_tree(&repo, &cluster, &e.root_tree, &mut Vec::new());
    }
    let first = git_str(&repo, &["rev-parse", "main~1"]);
    let e = run(&cache, &request(&url, &first, vec![node.node_addr()], 1))
        .0
        .unwrap();
    assert_eq!(oid_hex(&e.commit), first);
    assert_eq!(e.git_ref, first);
    assert_eq!(e.root_subdirs, 0);
    // One cache repository for the URL, the commits pinned under refs/monofs/.
    let repos: Vec<_> = std::fs::read_dir(cache.join("repos")).unwrap().collect();
    assert_eq!(repos.len(), 1);
    let cached = repos[0].as_ref().unwrap().path();
    let pinned = git_str(
        &cached,
        &["for-each-ref", "--format=%(refname)", "refs/monofs/"],
    );
    assert_eq!(pinned.lines().count(), 4, "{pinned}");
    assert!(
        !pinned.contains("/tmp/"),
        "temporary refs removed: {pinned}"
    );
}

#[test]
fn failures_are_clear_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let cache = tmp.path().join("cache");
    let nodes = vec![node.node_addr()];

    let missing = tmp.path().join("no-such-repo");
    let err = run(
        &cache,
        &request(&missing.display().to_string(), "", nodes.clone(), 1),
    )
    .0
    .unwrap_err();
    assert!(matches!(err, IngestError::Fetch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "repository '{}' could not be fetched: ",
            missing.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("does not appear to be a git repository"),
        "{msg}"
    );

    let url = format!("file://{}", repo.display());
    let err = run(&cache, &request(&url, "nope", nodes.clone(), 1))
        .0
        .unwrap_err();
    assert!(matches!(err, IngestError::RefNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("ref 'nope' not found in {url}"));

    let err = run(&cache, &request(&url, &"ab".repeat(20), nodes.clone(), 1))
        .0
        .unwrap_err();
    assert!(matches!(err, IngestError::RefNotFound { .. }), "{err:?}");

    let port = free_port();
    let err = run(
        &cache,
        &request(
            &format!("git://127.0.0.1:{port}/x.git"),
            "",
            nodes.clone(),
            1,
        ),
    )
    .0
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "repository 'git://127.0.0.1:{port}/x.git' could not be fetched: "
        )),
        "{err}"
    );

    for bad in [
        "https://host/a b",
        "ext::sh -c touch% /tmp/x",
        "-uhack",
        "ftp://h/x",
        "https://host",
    ] {
        let err = run(&cache, &request(bad, "", nodes.clone(), 1))
            .0
            .unwrap_err();
        assert!(matches!(err, IngestError::BadUrl { .. }), "{bad}: {err:?}");
    }
    for bad in ["--upload-pack=x", "a:b", "a b", "x..y"] {
        let err = run(&cache, &request(&url, bad, nodes.clone(), 1))
            .0
            .unwrap_err();
        assert!(matches!(err, IngestError::BadRef { .. }), "{bad}: {err:?}");
    }
    let err = run(&cache, &request(&url, "", vec![], 1)).0.unwrap_err();
    assert!(matches!(err, IngestError::BadRequest(_)), "{err:?}");

    assert_eq!(node.total_puts(), 0, "a failed ingest writes nothing");
}

#[test]
fn node_down_is_a_write_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let dead = NodeAddr {
        id: "dead".into(),
        addr: format!("127.0.0.1:{}", free_port()),
    };
    let err = run(
        &tmp.path().join("cache"),
        &request(&repo.display().to_string(), "", vec![dead], 1),
    )
    .0
    .unwrap_err();
    assert!(matches!(err, IngestError::NodeWrite(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("storing the repository on the nodes failed: "),
        "{err}"
    );
}

#[test]
fn git_daemon_transport() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let daemon = Daemon::start(tmp.path());
    let node = FakeNode::start("solo", false);
    let cluster = Cluster::new(vec![node.node_addr()], 1, &test_key());
    let url = format!("git://127.0.0.1:{}/fixture", daemon.port);
    let cache = tmp.path().join("cache");
    let e = run(&cache, &request(&url, "", vec![node.node_addr()], 1))
        .0
        .unwrap();
    assert_eq!(e.path, "127.0.0.1/fixture");
    assert_eq!(e.git_ref, "main");
    assert_eq!(oid_hex(&e.commit), git_str(&repo, &["rev-parse", "HEAD"]));
    check_tree(&repo, &cluster, &e.root_tree, &mut Vec::new());
    let e = run(&cache, &request(&url, "v1", vec![node.node_addr()], 1))
        .0
        .unwrap();
    assert_eq!(
        oid_hex(&e.commit),
        git_str(&repo, &["rev-parse", "v1^{commit}"])
    );
    let err = run(&cache, &request(&url, "nope", vec![node.node_addr()], 1))
        .0
        .unwrap_err();
    assert_eq!(err.to_string(), format!("ref 'nope' not found in {url}"));
    let err = run(
        &cache,
        &request(
            &format!("git://127.0.0.1:{}/absent", daemon.port),
            "",
            vec![node.node_addr()],
            1,
        ),
    )
    .0
    .unwrap_err();
    assert!(matches!(err, IngestError::Fetch { .. }), "{err:?}");
}

#[test]
fn source_id_overrides_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let mut req = request(
        &repo.display().to_string(),
        "other",
        vec![node.node_addr()],
        1,
    );
    req.source_id = "example.org/team/fixture".into();
    assert_eq!(
        run(&tmp.path().join("c"), &req).0.unwrap().path,
        "example.org/team/fixture"
    );
    req.source_id = "example.org/../x".into();
    assert!(matches!(
        run(&tmp.path().join("c"), &req).0,
        Err(IngestError::BadUrl { .. })
    ));
    assert_eq!(
        namespace_path("https://github.com/org/repo.git", "").unwrap(),
        "github.com/org/repo"
    );
    assert_eq!(
        namespace_path("git@host:org/repo", "").unwrap(),
        "host/org/repo"
    );
    assert!(namespace_path("file:///x/y/repo", "").unwrap().starts_with("local/repo-"));
    assert!(namespace_path("https://h/a/../b", "").is_err());
}

#[test]
fn throughput_many_small_files() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("many");
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    let mut bytes = 0;
    for d in 0..50 {
        let dir = r.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..60 {
            let content = noise(200 + (f * 37 + d * 11) % 3000, (d * 100 + f) as u64);
            bytes += content.len();
            std::fs::write(dir.join(format!("f{f:03}.txt")), content).unwrap();
        }
    }
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "many"]);
    let node = FakeNode::start("solo", false);
    let calls = AtomicUsize::new(0);
    let t = std::time::Instant::now();
    let e = ingest(
        &tmp.path().join("cache"),
        &test_key(),
        &request(&r.display().to_string(), "", vec![node.node_addr()], 1),
        &mut |_, _, _| {
            calls.fetch_add(1, Ordering::Relaxed);
        },
    )
    .unwrap()
    .remove(0);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "ingested 3000 files / {} KiB in {secs:.2}s ({:.0} objects/s) in {} PUT_BATCH",
        bytes / 1024,
        3051.0 / secs,
        node.state.lock().unwrap().batches
    );
    assert_eq!(e.root_subdirs, 50);
    assert_eq!(node.state.lock().unwrap().data.len(), 3051);
    assert!(
        node.state.lock().unwrap().batches < 20,
        "small objects are batched"
    );
}

/// `git mktree` from `ls-tree`-style lines; the new tree's id.
fn mktree(repo: &Path, lines: &[String]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .arg("mktree")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = lines.join("\n");
    input.push('\n');
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// A branch `name` whose root tree holds `tree` at `sub/`.
fn branch_with(repo: &Path, name: &str, tree: &str) {
    let root = mktree(repo, &[format!("040000 tree {tree}\tsub")]);
    let commit = git_str(repo, &["commit-tree", &root, "-m", name]);
    git(repo, &["update-ref", &format!("refs/heads/{name}"), &commit]);
}

#[test]
fn trees_beyond_record_limits_fail_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let cache = tmp.path().join("cache");
    let url = format!("file://{}", repo.display());
    let blob = git_str(&repo, &["rev-parse", "HEAD:README.md"]);

    // Git allows names of up to 4096 bytes; MonoFS (and NFS) 255.
    let long = "n".repeat(300);
    let t = mktree(&repo, &[format!("100644 blob {blob}\t{long}"), format!("100644 blob {blob}\tok")]);
    branch_with(&repo, "long-name", &t);
    let err = run(&cache, &request(&url, "long-name", vec![node.node_addr()], 1)).0.unwrap_err();
    assert!(matches!(err, IngestError::BadContent(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("'sub/{long}' has a name of 300 bytes; MonoFS allows at most 255")), "{msg}");

    // Every name within limits, but the directory record over its size limit.
    let per = 2 + dir::MAX_NAME + 4 + 20 + 8;
    let lines: Vec<String> = (0..monofs_net::MAX_RECORD / per + 1)
        .map(|i| format!("100644 blob {blob}\t{i:08}{}", "x".repeat(dir::MAX_NAME - 8)))
        .collect();
    let t = mktree(&repo, &lines);
    branch_with(&repo, "huge-dir", &t);
    let err = run(&cache, &request(&url, "huge-dir", vec![node.node_addr()], 1)).0.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IngestError::BadContent(_)), "{err:?}");
    assert!(msg.contains(&format!("tree {t} at 'sub': directory record too long")), "{msg}");
    assert_eq!(node.total_puts(), 0, "a failed ingest writes nothing");
}
