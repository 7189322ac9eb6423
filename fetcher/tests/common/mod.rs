//! Test helpers: Git repositories built with the `git` CLI, and a stand-in
//! storage node speaking the net protocol from memory, authenticated with the
//! test cluster key like a real node (the real node has its own tests; the
//! end-to-end suite covers the pair).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use monofs_net::auth::{AuthStream, FrameKey};
use monofs_net::proto::{NodeAddr, Request, Response};

/// What a fake node holds for one key.
#[derive(Clone, Debug)]
pub enum Stored {
    Full(Vec<u8>),
    /// Only length and xxh3 kept (tests that must not hold big values).
    Digest(u64, u64),
}

#[derive(Default)]
pub struct NodeState {
    pub data: HashMap<Vec<u8>, Stored>,
    /// How often each key was put.
    pub puts: HashMap<Vec<u8>, u32>,
    pub batches: u64,
}

pub struct FakeNode {
    pub id: String,
    pub addr: String,
    pub state: Arc<Mutex<NodeState>>,
    stop: Arc<AtomicBool>,
}

impl FakeNode {
    pub fn start(id: &str, digest_only: bool) -> FakeNode {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(NodeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, id2, stop2) = (state.clone(), id.to_string(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let (st, id) = (st.clone(), id2.clone());
                std::thread::spawn(move || serve(s, st, &id, digest_only));
            }
        });
        FakeNode {
            id: id.to_string(),
            addr,
            state,
            stop,
        }
    }

    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr {
            id: self.id.clone(),
            addr: self.addr.clone(),
        }
    }

    pub fn total_puts(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .puts
            .values()
            .map(|&v| v as usize)
            .sum()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(s: TcpStream, st: Arc<Mutex<NodeState>>, id: &str, digest_only: bool) {
    let Ok(mut s) = AuthStream::accept(s, &FrameKey::new(&test_key())) else { return };
    // A frame that does not verify ends the connection, as on a real node.
    while let Ok(Some(body)) = s.read_frame() {
        let resp = match Request::decode(&body).unwrap() {
            Request::Hello => Response::HelloOk {
                node_id: id.to_string(),
                shards: 1,
                this_shard: 0,
            },
            Request::PutBatch(items) => {
                let mut g = st.lock().unwrap();
                g.batches += 1;
                for (k, v) in items {
                    *g.puts.entry(k.clone()).or_default() += 1;
                    let stored = if digest_only {
                        Stored::Digest(v.len() as u64, xxhash_rust::xxh3::xxh3_64(&v))
                    } else {
                        Stored::Full(v)
                    };
                    g.data.insert(k, stored);
                }
                Response::Ok
            }
            Request::Get { key, offset, len } => match st.lock().unwrap().data.get(&key) {
                Some(Stored::Full(v)) => {
                    let a = (offset as usize).min(v.len());
                    let b = (a + len as usize).min(v.len());
                    Response::Data(v[a..b].to_vec())
                }
                Some(Stored::Digest(..)) => Response::Error("digest only".into()),
                None => Response::NotFound,
            },
            Request::Stat { key } => match st.lock().unwrap().data.get(&key) {
                Some(Stored::Full(v)) => Response::Size(v.len() as u64),
                Some(Stored::Digest(l, _)) => Response::Size(*l),
                None => Response::NotFound,
            },
            Request::Ingest(_)
            | Request::FetchBlob(_)
            | Request::Status
            | Request::Damaged
            | Request::Digest(_)
            | Request::ListKeys(_)
            | Request::Stats
            | Request::MergeState(_) => {
                Response::Error("not a fetcher".into())
            }
        };
        let mut out = Vec::new();
        resp.encode(&mut out);
        if s.write_frame(&out).is_err() {
            return;
        }
    }
}

/// Run git with fixed identity and dates; panic on failure; return stdout.
pub fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "MonoFS Test")
        .env("GIT_AUTHOR_EMAIL", "test@monofs.invalid")
        .env("GIT_COMMITTER_NAME", "MonoFS Test")
        .env("GIT_COMMITTER_EMAIL", "test@monofs.invalid")
        .env("GIT_AUTHOR_DATE", "2021-02-03T04:05:06Z")
        .env("GIT_COMMITTER_DATE", "2021-02-03T04:05:06Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn git_str(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(git(dir, args))
        .unwrap()
        .trim()
        .to_string()
}

/// Committer time of the fixtures.
pub const COMMIT_TIME: i64 = 1612325106;

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A repository exercising every entry kind. Branch `main` (HEAD), branch
/// `other`, annotated tag `v1` (on the first commit).
pub fn fixture_repo(root: &Path) -> PathBuf {
    let r = root.join("fixture");
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    std::fs::write(r.join("README.md"), "hello MonoFS\n").unwrap();
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "first"]);
    git(&r, &["tag", "-a", "v1", "-m", "tag one"]);
    git(&r, &["branch", "other"]);
    std::fs::create_dir_all(r.join("dir with space")).unwrap();
    std::fs::write(r.join("dir with space/ünïcødé file.txt"), "unicode\n").unwrap();
    std::fs::write(r.join("empty"), "").unwrap();
    std::fs::write(r.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("README.md", r.join("link")).unwrap();
    for top in ["a", "b"] {
        std::fs::create_dir_all(r.join(top).join("x/y")).unwrap();
        std::fs::write(r.join(top).join("x/f"), "same\n").unwrap();
        std::fs::write(r.join(top).join("x/y/g"), "deep\n").unwrap();
        std::fs::write(r.join(top).join("x/y/h"), "same\n").unwrap();
    }
    // Names that sort differently in Git (dirs as if suffixed with '/') and by bytes.
    std::fs::create_dir_all(r.join("foo")).unwrap();
    std::fs::write(r.join("foo/inner"), "i\n").unwrap();
    std::fs::write(r.join("foo.txt"), "f\n").unwrap();
    std::fs::write(r.join("foo-bar"), "fb\n").unwrap();
    std::fs::write(r.join("big.bin"), noise(3 << 20, 7)).unwrap();
    git(&r, &["add", "-A"]);
    git(
        &r,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            "160000,1234567890123456789012345678901234567890,sub",
        ],
    );
    git(&r, &["commit", "-q", "-m", "second"]);
    r
}

/// The cluster key every test component shares.
pub fn test_key() -> monofs_net::key::ClusterKey {
    monofs_net::key::ClusterKey::from_bytes([0x5a; monofs_net::key::KEY_LEN])
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` serving `base`, killed on drop.
pub struct Daemon {
    child: std::process::Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
        let port = free_port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Feed `stream` to `git fast-import` in `repo`.
pub fn fast_import(repo: &Path, stream: &[u8]) {
    use std::io::Write;
    let mut fi = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    fi.stdin.take().unwrap().write_all(stream).unwrap();
    assert!(fi.wait().unwrap().success(), "git fast-import");
}

/// One fast-import commit on `main` (after its current tip when `parent`),
/// setting `files` (path, content).
pub fn fast_import_commit(out: &mut Vec<u8>, time: i64, parent: bool, files: &[(String, String)]) {
    use std::io::Write;
    let msg = format!("commit at {time}");
    write!(out, "commit refs/heads/main\ncommitter MonoFS Test <test@monofs.invalid> {time} +0000\ndata {}\n{msg}\n", msg.len()).unwrap();
    if parent {
        out.extend_from_slice(b"from refs/heads/main^0\n");
    }
    for (path, body) in files {
        write!(out, "M 100644 inline {path}\ndata {}\n{body}\n", body.len()).unwrap();
    }
}

/// A bare repository `root/<name>` whose `main` has `commits` commits, each
/// changing one of `dirs` × `per_dir` files (`d<i>/f<j>.txt`); every file is
/// set by the first commit.
pub fn long_history_repo(root: &Path, name: &str, commits: usize, dirs: usize, per_dir: usize) -> PathBuf {
    let r = root.join(name);
    git(root, &["init", "-q", "--bare", "-b", "main", r.to_str().unwrap()]);
    let mut s = Vec::new();
    let all: Vec<(String, String)> = (0..dirs * per_dir)
        .map(|k| (format!("d{}/f{}.txt", k / per_dir, k % per_dir), format!("file {k} version 0\n")))
        .collect();
    fast_import_commit(&mut s, COMMIT_TIME, false, &all);
    for i in 1..commits {
        let k = i % (dirs * per_dir);
        let file = (format!("d{}/f{}.txt", k / per_dir, k % per_dir), format!("file {k} version {i}\n"));
        fast_import_commit(&mut s, COMMIT_TIME + i as i64, false, &[file]);
    }
    fast_import(&r, &s);
    r
}

/// Objects of each type in the repository at `repo` (`commit`, `tree`,
/// `blob`, `tag`), counted without fetching anything a promisor lacks.
pub fn object_counts(repo: &Path) -> HashMap<String, usize> {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "--batch-all-objects", "--batch-check=%(objecttype)"])
        .env("GIT_NO_LAZY_FETCH", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut n = HashMap::new();
    for t in String::from_utf8(o.stdout).unwrap().lines() {
        *n.entry(t.to_string()).or_default() += 1;
    }
    n
}

/// The one cache repository under a fetcher's `cache_dir`.
pub fn cache_repo(cache_dir: &Path) -> PathBuf {
    let repos: Vec<PathBuf> = std::fs::read_dir(cache_dir.join("repos")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(repos.len(), 1, "{repos:?}");
    repos.into_iter().next().unwrap()
}
