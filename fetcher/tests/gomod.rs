//! Go module ingest against a module proxy served from a temporary directory
//! over loopback HTTP (and file://), storing on stand-in nodes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use monofs_fetcher::gomod::{self, GoModOptions};
use monofs_fetcher::IngestError;
use monofs_net::client::Cluster;
use monofs_net::dir::{self, MODE_EXEC, MODE_FILE, MODE_TREE};
use monofs_net::ns::NsEntry;
use monofs_net::proto::{ContentMode, IngestRequest, NodeAddr, SourceKind};
use monofs_net::{keys, oid_hex, Oid};
use sha2::Digest;

// ---- module fixtures -------------------------------------------------------

/// (path inside the module, content, executable)
type Files = Vec<(&'static str, Vec<u8>, bool)>;

fn make_zip(module: &str, version: &str, files: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (p, data, exec) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(if *exec { 0o755 } else { 0o644 });
        w.start_file(format!("{module}@{version}/{p}"), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// go.sum `h1:` of a zip, computed here independently of the fetcher.
fn h1_of_zip(zip_bytes: &[u8]) -> String {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut lines = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        let name = f.name().unwrap().to_string();
        lines.push((name.clone(), format!("{:x}  {name}\n", sha2::Sha256::digest(&data))));
    }
    // dirhash.Hash1 orders by file name.
    lines.sort();
    let text: String = lines.into_iter().map(|(_, l)| l).collect();
    let sum = sha2::Sha256::digest(text.as_bytes());
    format!("h1:{}", base64::engine::general_purpose::STANDARD.encode(sum))
}

fn h1_of_mod(data: &[u8]) -> String {
    let line = format!("{:x}  go.mod\n", sha2::Sha256::digest(data));
    format!("h1:{}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(line.as_bytes())))
}

fn escape(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_uppercase() { format!("!{}", c.to_ascii_lowercase()) } else { c.to_string() }).collect()
}

const TIME_1: &str = "2021-02-03T04:05:06Z";
const TIME_1_SECS: i64 = 1612325106;

struct Published {
    zip: Vec<u8>,
    info: Vec<u8>,
    gomod: Vec<u8>,
    files: Files,
}

/// Write `module@version` into a proxy directory (adding it to `list`).
fn publish(root: &Path, module: &str, version: &str, files: Files) -> Published {
    let dir = root.join(escape(module)).join("@v");
    std::fs::create_dir_all(&dir).unwrap();
    let zip = make_zip(module, version, &files);
    let gomod = files.iter().find(|f| f.0 == "go.mod").map(|f| f.1.clone()).unwrap_or_else(|| format!("module {module}\n").into_bytes());
    let info = format!("{{\"Version\":\"{version}\",\"Time\":\"{TIME_1}\"}}").into_bytes();
    let ev = escape(version);
    std::fs::write(dir.join(format!("{ev}.zip")), &zip).unwrap();
    std::fs::write(dir.join(format!("{ev}.mod")), &gomod).unwrap();
    std::fs::write(dir.join(format!("{ev}.info")), &info).unwrap();
    let mut list = std::fs::read_to_string(dir.join("list")).unwrap_or_default();
    list.push_str(version);
    list.push('\n');
    std::fs::write(dir.join("list"), list).unwrap();
    Published { zip, info, gomod, files }
}

fn foo_files() -> Files {
    vec![
        ("go.mod", b"module example.com/Foo/bar\n\ngo 1.21\n".to_vec(), false),
        ("bar.go", b"package bar\n\nfunc Bar() string { return \"bar\" }\n".to_vec(), false),
        ("internal/deep/x.go", b"package deep\n".to_vec(), false),
        ("internal/y.go", b"package internal\n".to_vec(), false),
        ("scripts/gen.sh", b"#!/bin/sh\necho gen\n".to_vec(), true),
        // Git orders `foo` (a tree) after `foo.txt` and `foo-bar`.
        ("foo/inner.go", b"package foo\n".to_vec(), false),
        ("foo.txt", b"f\n".to_vec(), false),
        ("foo-bar", b"fb\n".to_vec(), false),
        ("same1.txt", b"same\n".to_vec(), false),
        ("internal/same2.txt", b"same\n".to_vec(), false),
        ("empty", Vec::new(), false),
        ("big.bin", noise((1 << 20) * 2 + 123, 5), false),
    ]
}

fn hello_files(msg: &str) -> Files {
    vec![
        ("go.mod", b"module example.com/hello\n\ngo 1.21\n".to_vec(), false),
        ("hello.go", format!("package hello\n\nconst Msg = {msg:?}\n").into_bytes(), false),
    ]
}

// ---- a tiny GOPROXY over HTTP -------------------------------------------------

#[derive(Clone)]
enum Answer {
    Status(u16),
    Body(Vec<u8>),
    /// Accept the request and never answer.
    Hang,
}

struct ProxyServer {
    port: u16,
    overrides: Arc<Mutex<HashMap<String, Answer>>>,
    stop: Arc<AtomicBool>,
}

impl ProxyServer {
    fn start(root: PathBuf) -> ProxyServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let overrides: Arc<Mutex<HashMap<String, Answer>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (overrides.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                let (o, s, root) = (o.clone(), s.clone(), root.clone());
                std::thread::spawn(move || answer(c, &root, &o, &s));
            }
        });
        ProxyServer { port, overrides, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, path: &str, a: Answer) {
        self.overrides.lock().unwrap().insert(path.to_string(), a);
    }

    fn clear(&self) {
        self.overrides.lock().unwrap().clear();
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(mut c: TcpStream, root: &Path, overrides: &Mutex<HashMap<String, Answer>>, stop: &AtomicBool) {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => req.push(b[0]),
            _ => return,
        }
        if req.len() > 65536 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&req).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let a = overrides.lock().unwrap().get(&path).cloned();
    let (code, body) = match a {
        Some(Answer::Hang) => {
            let t = Instant::now();
            while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        Some(Answer::Status(code)) => (code, format!("status {code} for {path}\n").into_bytes()),
        Some(Answer::Body(b)) => (200, b),
        None => {
            let rel = path.trim_start_matches('/');
            assert!(!rel.contains(".."));
            match std::fs::read(root.join(rel)) {
                Ok(b) => (200, b),
                Err(_) => (404, b"not found\n".to_vec()),
            }
        }
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        410 => "Gone",
        _ => "Error",
    };
    let hdr = format!("HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len());
    let _ = c.write_all(hdr.as_bytes());
    let _ = c.write_all(&body);
}

// ---- helpers ----------------------------------------------------------------

fn request(spec: &str, nodes: Vec<NodeAddr>) -> IngestRequest {
    IngestRequest {
        kind: SourceKind::GoModule,
        content: ContentMode::Eager,
        url: spec.into(),
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes,
    }
}

fn opts(proxy: &str) -> GoModOptions {
    GoModOptions { proxy: Some(proxy.to_string()), gosum_file: None, timeout: Duration::from_secs(2) }
}

fn run(cache: &Path, o: &GoModOptions, spec: &str, node: &FakeNode) -> Result<Vec<NsEntry>, IngestError> {
    gomod::ingest(cache, &test_key(), o, &request(spec, vec![node.node_addr()]), &mut |_, _, _| {})
}

fn cluster(node: &FakeNode) -> Cluster {
    Cluster::new(vec![node.node_addr()], 1, &test_key())
}

fn read_blob(c: &Cluster, oid: &Oid, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..keys::chunk_count(size) {
        out.extend(c.get(&keys::blob_chunk(oid, i as u32), 0, u32::MAX).unwrap().expect("blob chunk stored"));
    }
    assert_eq!(out.len() as u64, size);
    out
}

/// Every file under a stored tree: path → (mode, content); checks subdir counts.
fn read_tree(c: &Cluster, oid: &Oid, prefix: &str, out: &mut BTreeMap<String, (u32, Vec<u8>)>) -> u64 {
    let rec = c.get(&keys::tree(oid), 0, u32::MAX).unwrap().expect("directory record stored");
    let entries = dir::decode(&rec).unwrap();
    assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
    let mut subdirs = 0;
    for e in entries {
        let name = String::from_utf8(e.name.clone()).unwrap();
        let p = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if e.mode == MODE_TREE {
            subdirs += 1;
            let sd = read_tree(c, &e.oid, &p, out);
            assert_eq!(e.size, sd, "subdir count of {p}");
        } else {
            out.insert(p, (e.mode, read_blob(c, &e.oid, e.size)));
        }
    }
    subdirs
}

/// The Git tree id of `files`, as `git write-tree` computes it.
fn git_tree_of(tmp: &Path, files: &Files) -> String {
    let r = tmp.join(format!("gitcheck-{}", files.len()));
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q"]);
    for (p, data, exec) in files {
        let f = r.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(if *exec { 0o755 } else { 0o644 })).unwrap();
    }
    git(&r, &["add", "-A"]);
    git_str(&r, &["write-tree"])
}

fn at_v(c: &Cluster, e: &NsEntry) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut m = BTreeMap::new();
    assert_eq!(read_tree(c, &e.root_tree, "", &mut m), 0);
    m
}

fn err_text(r: Result<Vec<NsEntry>, IngestError>) -> String {
    match r {
        Ok(e) => panic!("ingest succeeded: {e:?}"),
        Err(e) => e.to_string(),
    }
}

// ---- tests ------------------------------------------------------------------

#[test]
fn module_lands_in_both_layouts_with_git_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proxy");
    let pubd = publish(&root, "example.com/Foo/bar", "v1.0.0", foo_files());
    let srv = ProxyServer::start(root.clone());
    let node = FakeNode::start("n1", false);
    let cache = tmp.path().join("cache");

    let entries = run(&cache, &opts(&srv.url()), "example.com/Foo/bar@v1.0.0", &node).unwrap();
    assert_eq!(entries.len(), 2);
    let (pkg, prox) = (&entries[0], &entries[1]);
    assert_eq!(pkg.path, "go/pkg/mod/example.com/!foo/bar@v1.0.0");
    assert_eq!(prox.path, "go/proxy/example.com/!foo/bar/@v");
    let h1 = h1_of_zip(&pubd.zip);
    for e in &entries {
        assert_eq!(e.url, "go:example.com/Foo/bar@v1.0.0");
        assert_eq!(e.git_ref, format!("v1.0.0 {h1}"));
        assert_eq!(e.commit, pkg.root_tree);
        assert_eq!(e.commit_time, TIME_1_SECS);
    }
    // The extracted tree is the one Git computes for the same files.
    assert_eq!(oid_hex(&pkg.root_tree), git_tree_of(tmp.path(), &pubd.files));
    let c = cluster(&node);
    let mut files = BTreeMap::new();
    let subdirs = read_tree(&c, &pkg.root_tree, "", &mut files);
    assert_eq!(subdirs, pkg.root_subdirs);
    assert_eq!(subdirs, 3); // foo, internal, scripts
    let want: BTreeMap<String, (u32, Vec<u8>)> = pubd
        .files
        .iter()
        .map(|(p, d, x)| (p.to_string(), (if *x { MODE_EXEC } else { MODE_FILE }, d.clone())))
        .collect();
    assert_eq!(files, want);
    // Identical content is stored once.
    let st = node.state.lock().unwrap();
    assert!(st.puts.values().all(|&n| n == 1), "a key was put twice");
    drop(st);

    // The proxy directory serves exactly what the proxy served.
    let v = at_v(&c, prox);
    assert_eq!(v.keys().collect::<Vec<_>>(), ["list", "v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip"]);
    assert_eq!(v["list"].1, b"v1.0.0\n");
    assert_eq!(v["v1.0.0.zip"].1, pubd.zip);
    assert_eq!(v["v1.0.0.info"].1, pubd.info);
    assert_eq!(v["v1.0.0.mod"].1, pubd.gomod);
    assert!(v.values().all(|(m, _)| *m == MODE_FILE));

    // The fetcher's mirror holds the verified version.
    let mirror = cache.join("gomod/example.com/!foo/bar/@v");
    assert_eq!(std::fs::read(mirror.join("v1.0.0.zip")).unwrap(), pubd.zip);
    assert!(mirror.join("v1.0.0.oids").is_file());
    assert!(std::fs::read_dir(&mirror).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-")));

    // A file:// proxy gives the same entries.
    let node2 = FakeNode::start("n2", false);
    let e2 = run(&tmp.path().join("cache2"), &opts(&format!("file://{}", root.display())), "example.com/Foo/bar@v1.0.0", &node2).unwrap();
    assert_eq!(e2, entries);
}

#[test]
fn list_merges_versions_and_latest_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proxy");
    let v100 = publish(&root, "example.com/hello", "v1.0.0", hello_files("one"));
    let v110 = publish(&root, "example.com/hello", "v1.1.0", hello_files("two"));
    let _pre = publish(&root, "example.com/hello", "v1.2.0-rc.1", hello_files("three"));
    let srv = ProxyServer::start(root.clone());
    let node = FakeNode::start("n1", false);
    let cache = tmp.path().join("cache");
    let o = opts(&srv.url());

    let e1 = run(&cache, &o, "example.com/hello@v1.0.0", &node).unwrap();
    assert_eq!(at_v(&cluster(&node), &e1[1])["list"].1, b"v1.0.0\n");

    // No @latest endpoint: the highest release in the list, not the pre-release.
    let e2 = run(&cache, &o, "example.com/hello@latest", &node).unwrap();
    assert_eq!(e2[0].path, "go/pkg/mod/example.com/hello@v1.1.0");
    assert_eq!(e2[1].path, e1[1].path);
    let v = at_v(&cluster(&node), &e2[1]);
    assert_eq!(v["list"].1, b"v1.0.0\nv1.1.0\n");
    assert_eq!(v["v1.0.0.zip"].1, v100.zip);
    assert_eq!(v["v1.1.0.zip"].1, v110.zip);
    assert_eq!(v.len(), 7);

    // The proxy's @latest wins when it has one.
    std::fs::write(root.join("example.com/hello/@latest"), format!("{{\"Version\":\"v1.0.0\",\"Time\":\"{TIME_1}\"}}")).unwrap();
    let e3 = run(&cache, &o, "example.com/hello@latest", &node).unwrap();
    assert_eq!(e3[0].path, "go/pkg/mod/example.com/hello@v1.0.0");
    assert_eq!(at_v(&cluster(&node), &e3[1])["list"].1, b"v1.0.0\nv1.1.0\n");

    // Nodes that lost the earlier versions get them again from the mirror, and a
    // cached version needs no proxy at all.
    drop(srv);
    let fresh = FakeNode::start("n3", false);
    let e4 = run(&cache, &o, "example.com/hello@v1.1.0", &fresh).unwrap();
    let v = at_v(&cluster(&fresh), &e4[1]);
    assert_eq!(v["list"].1, b"v1.0.0\nv1.1.0\n");
    assert_eq!(v["v1.0.0.zip"].1, v100.zip);
    assert_eq!(v["v1.0.0.mod"].1, v100.gomod);
}

#[test]
fn gosum_file_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proxy");
    let p = publish(&root, "example.com/hello", "v1.0.0", hello_files("one"));
    let srv = ProxyServer::start(root.clone());
    let node = FakeNode::start("n1", false);
    let h1 = h1_of_zip(&p.zip);
    let mod_h1 = h1_of_mod(&p.gomod);
    let gosum = tmp.path().join("go.sum");
    std::fs::write(&gosum, format!("example.com/other v1.0.0 h1:AAAA=\nexample.com/hello v1.0.0 {h1}\nexample.com/hello v1.0.0/go.mod {mod_h1}\n")).unwrap();
    let mut o = opts(&srv.url());
    o.gosum_file = Some(gosum.clone());

    let e = run(&tmp.path().join("c1"), &o, "example.com/hello@v1.0.0", &node).unwrap();
    assert_eq!(e[0].git_ref, format!("v1.0.0 {h1}"));

    // A tampered zip is refused, naming both hashes.
    let tampered = make_zip("example.com/hello", "v1.0.0", &hello_files("evil"));
    let bad_h1 = h1_of_zip(&tampered);
    srv.set("/example.com/hello/@v/v1.0.0.zip", Answer::Body(tampered));
    let cache2 = tmp.path().join("c2");
    let msg = err_text(run(&cache2, &o, "example.com/hello@v1.0.0", &node));
    assert!(msg.contains("checksum mismatch") && msg.contains(&h1) && msg.contains(&bad_h1), "{msg}");
    // Nothing of it is kept in the mirror.
    let mirror = cache2.join("gomod/example.com/hello/@v");
    assert_eq!(std::fs::read_dir(&mirror).unwrap().count(), 0, "mirror not empty");
    srv.clear();

    // A go.mod that differs from go.sum is refused too.
    std::fs::write(&gosum, format!("example.com/hello v1.0.0/go.mod {}\n", h1_of_mod(b"module evil\n"))).unwrap();
    let msg = err_text(run(&tmp.path().join("c3"), &o, "example.com/hello@v1.0.0", &node));
    assert!(msg.contains("checksum mismatch for example.com/hello@v1.0.0/go.mod") && msg.contains(&mod_h1), "{msg}");

    // Not listed: accepted, hash recorded.
    std::fs::write(&gosum, "example.com/other v1.0.0 h1:AAAA=\n").unwrap();
    let e = run(&tmp.path().join("c4"), &o, "example.com/hello@v1.0.0", &node).unwrap();
    assert!(e[1].git_ref.ends_with(&h1));

    // A malformed gosum file is an error, not ignored.
    std::fs::write(&gosum, "example.com/hello v1.0.0\n").unwrap();
    let msg = err_text(run(&tmp.path().join("c5"), &o, "example.com/hello@v1.0.0", &node));
    assert!(msg.contains("malformed at line 1"), "{msg}");
}

#[test]
fn proxy_failures_are_clear_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proxy");
    publish(&root, "example.com/hello", "v1.0.0", hello_files("one"));
    let srv = ProxyServer::start(root.clone());
    let node = FakeNode::start("n1", false);
    let o = opts(&srv.url());
    let mut n = 0;
    let mut fail = |spec: &str| {
        n += 1;
        err_text(run(&tmp.path().join(format!("c{n}")), &o, spec, &node))
    };

    let msg = fail("example.com/hello@v1.9.9");
    assert!(msg.contains(&format!("module example.com/hello version v1.9.9 not found in proxy {}", srv.url())), "{msg}");
    let msg = fail("example.com/nothere@latest");
    assert!(msg.contains("module example.com/nothere not found in proxy"), "{msg}");

    let info = "/example.com/hello/@v/v1.0.0.info";
    srv.set(info, Answer::Status(410));
    assert!(fail("example.com/hello@v1.0.0").contains("not found in proxy"));
    srv.set(info, Answer::Status(500));
    let msg = fail("example.com/hello@v1.0.0");
    assert!(msg.contains("HTTP 500") && msg.contains("status 500 for"), "{msg}");
    srv.set(info, Answer::Body(b"<html>hello</html>".to_vec()));
    let msg = fail("example.com/hello@v1.0.0");
    assert!(msg.contains(".info") && msg.contains("not JSON"), "{msg}");
    srv.set(info, Answer::Body(b"{\"Version\":\"v1.0.1\"}".to_vec()));
    assert!(fail("example.com/hello@v1.0.0").contains("describes version v1.0.1"));
    srv.clear();

    let zip = "/example.com/hello/@v/v1.0.0.zip";
    srv.set(zip, Answer::Body(b"PK garbage, not a zip".to_vec()));
    let msg = fail("example.com/hello@v1.0.0");
    assert!(msg.contains("not a valid zip file"), "{msg}");
    srv.set(zip, Answer::Status(503));
    assert!(fail("example.com/hello@v1.0.0").contains("HTTP 503"));

    // Zips Go would refuse.
    let outside = {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("example.com/hello@v1.0.0/go.mod", zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(b"module example.com/hello\n").unwrap();
        w.start_file("example.com/other@v1.0.0/x.go", zip::write::SimpleFileOptions::default()).unwrap();
        w.finish().unwrap().into_inner()
    };
    srv.set(zip, Answer::Body(outside));
    let msg = fail("example.com/hello@v1.0.0");
    assert!(msg.contains("is not under 'example.com/hello@v1.0.0/'"), "{msg}");
    srv.set(zip, Answer::Body(make_zip("example.com/hello", "v1.0.0", &[("a/x.go", vec![], false), ("A/y.go", vec![], false)])));
    let msg = fail("example.com/hello@v1.0.0");
    assert!(msg.contains("differ only in case"), "{msg}");
    srv.set(zip, Answer::Body(make_zip("example.com/hello", "v1.0.0", &[("../x.go", vec![], false)])));
    assert!(fail("example.com/hello@v1.0.0").contains("'..'"));

    // A proxy that never answers fails within the configured bound.
    srv.set(info, Answer::Hang);
    let t = Instant::now();
    let msg = fail("example.com/hello@v1.0.0");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(msg.contains("failed"), "{msg}");
    srv.clear();
    srv.set(zip, Answer::Hang);
    let t = Instant::now();
    let msg = fail("example.com/hello@v1.0.0");
    assert!(t.elapsed() < Duration::from_secs(10), "zip hang took {:?}: {msg}", t.elapsed());
    srv.clear();

    // Requests that are wrong before any network.
    assert!(fail("example.com/../x@v1.0.0").contains("malformed module path"));
    assert!(fail("example.com/hello@1.0").contains("invalid version"));
    assert!(fail("example.com/hello@v2.0.0").contains("should be v0 or v1"));
    let msg = err_text(run(&tmp.path().join("cx"), &opts("ftp://x"), "example.com/hello@v1.0.0", &node));
    assert!(msg.contains("use http://, https:// or file://"), "{msg}");

    // And the request still succeeds once the proxy behaves.
    run(&tmp.path().join("ok"), &o, "example.com/hello@v1.0.0", &node).unwrap();
}

#[test]
fn missing_proxy_configuration_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let node = FakeNode::start("n1", false);
    let req = request("example.com/hello@v1.0.0", vec![node.node_addr()]);
    let r = monofs_fetcher::ingest(tmp.path(), &test_key(), &req, &mut |_, _, _| {});
    let msg = err_text(r);
    assert!(msg.contains("no module proxy configured") && msg.contains("--gomod-proxy"), "{msg}");
    let r = gomod::ingest(tmp.path(), &test_key(), &GoModOptions::default(), &req, &mut |_, _, _| {});
    assert!(err_text(r).contains("--gomod-proxy"));
}

#[test]
fn versions_too_long_for_file_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proxy");
    publish(&root, "example.com/hello", "v1.0.0", hello_files("one"));
    // A release of 256 bytes (the semantic-version limit) in the list: its
    // `<v>.info` would be a 261-byte name, so `latest` must pass it over.
    let long_release = format!("v1.0.{}", "9".repeat(251));
    let list = root.join("example.com/hello/@v/list");
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str(&format!("{long_release}\n"));
    std::fs::write(&list, text).unwrap();
    let srv = ProxyServer::start(root.clone());
    let node = FakeNode::start("n1", false);
    let cache = tmp.path().join("cache");
    let o = opts(&srv.url());

    for v in [format!("v1.0.0-{}", "a".repeat(293)), format!("v1.0.0-{}", "a".repeat(244)), long_release] {
        let msg = err_text(run(&cache, &o, &format!("example.com/hello@{v}"), &node));
        assert!(msg.starts_with(&format!("invalid ref '{v}': invalid version for module example.com/hello")), "{msg}");
    }
    let e = run(&cache, &o, "example.com/hello@latest", &node).unwrap();
    assert_eq!(e[0].path, "go/pkg/mod/example.com/hello@v1.0.0");
    assert_eq!(at_v(&cluster(&node), &e[1])["list"].1, b"v1.0.0\n");
}

#[test]
fn zip_fuzz_seed_is_a_valid_module() {
    // fuzz/corpus/gomod_zip (fuzz/seeds.py): the gomod_zip target starts from a
    // zip the reader accepts, and one it refuses.
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gomod_zip");
    let good = std::fs::read(d.join("module")).unwrap();
    let h1 = gomod::check_zip(&good, "example.com/m", "v1.0.0").unwrap();
    assert_eq!(h1, h1_of_zip(&good));
    let bad = std::fs::read(d.join("wrong-prefix")).unwrap();
    let e = gomod::check_zip(&bad, "example.com/m", "v1.0.0").unwrap_err();
    assert!(e.contains("is not under 'example.com/m@v1.0.0/'"), "{e}");
    assert!(gomod::check_zip(&good[..good.len() / 2], "example.com/m", "v1.0.0").is_err());
}
