//! The MonoFS fetcher: fetches a Git repository into a local cache with the
//! `git` CLI, reads the fetched commit with gix, and stores its trees (as
//! directory records) and blobs (as 1 MiB chunks) on the owning nodes.
//!
//! It serves one request over the net protocol, INGEST, answering with
//! PROGRESS frames and finally INGEST_DONE (an encoded `NsEntry`) or ERROR.
//! Nothing is published here: the router adds the returned entry to the
//! namespace only after INGEST_DONE, that is after every record is acknowledged.

mod git;
mod url;
mod walk;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use monofs_net::client::{Cluster, NetError};
use monofs_net::ns::NsEntry;
use monofs_net::oid_from_hex;
use monofs_net::proto::{frame, frame_len, IngestRequest, Request, Response, MAX_STRING};
use xxhash_rust::xxh3::xxh3_64;

pub use url::{redact, validate_ns_path};
pub use walk::{BIG_BLOB, MAX_BATCH_BYTES};

/// Ingests running at once; a further INGEST is answered `ERROR busy`.
pub const MAX_CONCURRENT_INGESTS: usize = 4;
/// Open connections at once; further connections get `ERROR busy` and are closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection idle this long between requests is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Writing one response frame may take this long before the connection is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// While `git` fetches, a PROGRESS frame is sent this often so clients see life.
pub const FETCH_HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid repository URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid ref '{git_ref}': {reason}")]
    BadRef { git_ref: String, reason: String },
    #[error("invalid ingest request: {0}")]
    BadRequest(String),
    #[error("repository '{url}' could not be fetched: {message}")]
    Fetch { url: String, message: String },
    #[error("ref '{git_ref}' not found in {url}")]
    RefNotFound { git_ref: String, url: String },
    #[error("repository content cannot be served: {0}")]
    BadContent(String),
    #[error("storing the repository on the nodes failed: {0}")]
    NodeWrite(#[from] NetError),
    #[error("fetch cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Namespace path for a URL: `https://github.com/org/repo(.git)` →
/// `github.com/org/repo`; `git://host:port/a/b.git` → `host/a/b`;
/// `file:///x/y/repo` or a local path `/x/y/repo` → `local/repo`; ssh-style
/// `git@host:org/repo` → `host/org/repo`. A non-empty `source_id` overrides the
/// URL and is validated the same way: components non-empty, not `.`/`..`, of
/// letters, digits and `. _ ~ + -` only.
pub fn namespace_path(url: &str, source_id: &str) -> Result<String, IngestError> {
    url::namespace_path(url, source_id)
}

/// Fetch `req.url` at `req.git_ref` into `cache_dir`, store its trees and blobs
/// on `req.nodes`, and return the namespace entry to publish. `progress` gets
/// `(phase, objects, bytes)` at most about ten times a second; phases are
/// `fetching`, `storing`, `stored`.
pub fn ingest(
    cache_dir: &Path,
    req: &IngestRequest,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<NsEntry, IngestError> {
    let ns_path = namespace_path(&req.url, &req.source_id)?;
    if !req.git_ref.is_empty() {
        git::check_ref(&req.git_ref)?;
    }
    if req.nodes.is_empty() {
        return Err(IngestError::BadRequest("no storage nodes given".into()));
    }
    let fetch_url = url::fetch_url(&req.url)?;
    let repos = cache_dir.join("repos");
    std::fs::create_dir_all(&repos).map_err(|e| IngestError::Cache {
        path: repos.clone(),
        source: e,
    })?;
    let repo_dir = repos.join(format!("{:016x}.git", xxh3_64(fetch_url.as_bytes())));
    let pin = format!("{:016x}", xxh3_64(req.git_ref.as_bytes()));

    // 1. Fetch, in a helper thread so this one can keep the client informed.
    let mut p = walk::Progress::new(progress);
    p.force("fetching", 0, 0);
    let started = Instant::now();
    let (fetched, head_name) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            // One fetch per cache repository at a time: a second ingest of the same
            // URL waits and then finds the objects already there.
            let lock = repo_lock(&repo_dir);
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let f = git::fetch(&repo_dir, &fetch_url, &req.git_ref, &pin)?;
            drop(guard);
            let head = if req.git_ref.is_empty() {
                git::remote_head_branch(&fetch_url)
            } else {
                None
            };
            Ok::<_, IngestError>((f, head))
        });
        let mut last = Instant::now();
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if last.elapsed() >= FETCH_HEARTBEAT {
                last = Instant::now();
                p.force("fetching", 0, 0);
            }
        }
        h.join()
            .unwrap_or_else(|_| Err(IngestError::BadContent("the fetch thread panicked".into())))
    })?;
    tracing::info!(url = %redact(&req.url), commit = %fetched.commit, secs = started.elapsed().as_secs_f64(), "fetched");

    // 2. Read the commit with gix.
    let repo = gix::open_opts(&fetched.repo, gix::open::Options::isolated()).map_err(|e| {
        IngestError::BadContent(format!(
            "cannot open the fetch cache {}: {e}",
            fetched.repo.display()
        ))
    })?;
    let commit = oid_from_hex(&fetched.commit).expect("git returned a full sha");
    let (root_tree, commit_time) = {
        let obj = repo
            .find_object(gix::ObjectId::from_bytes_or_panic(&commit))
            .map_err(|e| {
                IngestError::BadContent(format!("commit {} cannot be read: {e}", fetched.commit))
            })?;
        if obj.kind != gix::object::Kind::Commit {
            return Err(IngestError::BadContent(format!(
                "{} is not a commit",
                fetched.commit
            )));
        }
        walk::parse_commit(&obj.data).ok_or_else(|| {
            IngestError::BadContent(format!("commit {} is malformed", fetched.commit))
        })?
    };

    // 3. Store trees and blobs, root last.
    let cluster = Cluster::new(req.nodes.clone(), req.replication as usize);
    p.force("storing", 0, 0);
    let stored = walk::Walker::new(repo, &fetched.repo, cluster, &mut p).store(root_tree)?;
    tracing::info!(
        url = %redact(&req.url),
        objects = stored.objects,
        bytes = stored.bytes,
        secs = started.elapsed().as_secs_f64(),
        "stored"
    );

    let git_ref = if req.git_ref.is_empty() {
        head_name.unwrap_or_else(|| "HEAD".to_string())
    } else {
        req.git_ref.clone()
    };
    Ok(NsEntry {
        path: ns_path,
        url: req.url.clone(),
        git_ref,
        commit,
        root_tree,
        commit_time,
        root_subdirs: stored.root_subdirs,
    })
}

/// The lock serialising fetches into one cache repository.
fn repo_lock(repo: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Forget locks nobody holds, so the map stays as small as the set of active fetches.
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks.entry(repo.to_path_buf()).or_default().clone()
}

pub struct FetcherConfig {
    pub listen: SocketAddr,
    pub cache_dir: PathBuf,
}

impl FetcherConfig {
    /// A configuration with every tunable at its default.
    pub fn new(listen: SocketAddr, cache_dir: PathBuf) -> FetcherConfig {
        FetcherConfig { listen, cache_dir }
    }
}

/// A running fetcher server.
pub struct FetcherHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl FetcherHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting connections and wait for the accept loop to end. Ingests
    /// already running finish on their own threads.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }

    /// Serve until the accept loop fails.
    pub fn wait(self) -> anyhow::Result<()> {
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => anyhow::bail!("fetcher accept loop panicked"),
        }
    }
}

struct Shared {
    cache_dir: PathBuf,
    ingests: AtomicUsize,
    conns: AtomicUsize,
}

/// Decrements a counter when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn try_inc(c: &AtomicUsize, max: usize) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
        (n < max).then_some(n + 1)
    })
    .is_ok()
}

fn take_slot(c: &AtomicUsize, max: usize) -> Option<Slot<'_>> {
    try_inc(c, max).then_some(Slot(c))
}

/// Bind `cfg.listen` and serve INGEST requests, one thread per connection.
pub fn start(cfg: FetcherConfig) -> anyhow::Result<FetcherHandle> {
    std::fs::create_dir_all(&cfg.cache_dir)
        .with_context(|| format!("creating fetch cache {}", cfg.cache_dir.display()))?;
    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("binding fetcher to {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        cache_dir: cfg.cache_dir,
        ingests: AtomicUsize::new(0),
        conns: AtomicUsize::new(0),
    });
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("monofs-fetcher-accept".into())
        .spawn(move || {
            tracing::info!(%addr, "fetcher listening");
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let shared = shared.clone();
                        if let Err(e) = accept(stream, shared) {
                            tracing::warn!(%peer, error = %e, "connection not served");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(25));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            Ok(())
        })?;
    Ok(FetcherHandle { addr, stop, thread })
}

fn accept(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    if !try_inc(&shared.conns, MAX_CONNECTIONS) {
        return send(
            &mut stream,
            &Response::Error("busy: the fetcher has too many connections; retry later".into()),
        );
    }
    let spawned = std::thread::Builder::new()
        .name("monofs-fetcher-conn".into())
        .spawn({
            let shared = shared.clone();
            move || {
                let _slot = Slot(&shared.conns);
                if let Err(e) = serve(&mut stream, &shared) {
                    tracing::debug!(error = %e, "connection ended");
                }
            }
        });
    if spawned.is_err() {
        shared.conns.fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| ())
}

fn send(stream: &mut TcpStream, resp: &Response) -> std::io::Result<()> {
    let mut body = Vec::new();
    resp.encode(&mut body);
    stream.write_all(&frame(&body))
}

fn error_text(msg: String) -> String {
    if msg.len() <= MAX_STRING {
        return msg;
    }
    let mut end = MAX_STRING;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    msg[..end].to_string()
}

fn serve(stream: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let mut hdr = [0u8; 4];
        match stream.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = match frame_len(hdr) {
            Ok(n) => n,
            Err(e) => return send(stream, &Response::Error(format!("malformed frame: {e}"))),
        };
        let mut body = vec![0u8; n];
        stream.read_exact(&mut body)?;
        let req = match Request::decode(&body) {
            Ok(Request::Ingest(req)) => req,
            Ok(_) => {
                send(
                    stream,
                    &Response::Error("this is a MonoFS fetcher: it serves only INGEST".into()),
                )?;
                continue;
            }
            Err(e) => return send(stream, &Response::Error(format!("malformed request: {e}"))),
        };
        let Some(_slot) = take_slot(&shared.ingests, MAX_CONCURRENT_INGESTS) else {
            send(
                stream,
                &Response::Error(format!(
                    "busy: the fetcher is running {MAX_CONCURRENT_INGESTS} ingests already; retry later"
                )),
            )?;
            continue;
        };
        tracing::info!(url = %redact(&req.url), git_ref = %req.git_ref, "ingest");
        let mut client_gone = false;
        let mut on_progress = |phase: &str, objects: u64, bytes: u64| {
            if !client_gone {
                let r = Response::Progress {
                    phase: phase.to_string(),
                    objects,
                    bytes,
                };
                client_gone = send(stream, &r).is_err();
            }
        };
        let result = ingest(&shared.cache_dir, &req, &mut on_progress);
        let resp = match result {
            Ok(entry) => Response::IngestDone(monofs_net::ns::encode(&[entry])),
            Err(e) => {
                tracing::warn!(url = %redact(&req.url), error = %e, "ingest failed");
                Response::Error(error_text(e.to_string()))
            }
        };
        send(stream, &resp)?;
    }
}
