//! The MonoFS fetcher: fetches a Git repository into a local cache with the
//! `git` CLI, reads the fetched commit with gix, and stores its trees (as
//! directory records) and blobs (as 1 MiB chunks) on the owning nodes.
//!
//! It serves three requests over the net protocol:
//! - INGEST, answered with PROGRESS frames and finally INGEST_DONE (the encoded
//!   namespace entries) or ERROR. Nothing is published here: the router adds
//!   the entries to the namespace only after INGEST_DONE, that is after every
//!   directory record (and, for `ContentMode::Eager`, every blob) is
//!   acknowledged. A lazy ingest then queues its blobs for background prefetch.
//! - FETCH_BLOB, answered OK once the asked chunks of a blob are stored on its
//!   owners (fetching the blob by id when the cache lacks it).
//! - STATUS, answered with DATA holding a JSON object (see `service.rs`).

mod cache;
mod git;
pub mod gomod;
mod prefetch;
mod service;
mod url;
mod walk;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use monofs_net::auth::{AuthError, AuthStream, FailureLog, FrameError, FrameKey};
use monofs_net::client::NetError;
use monofs_net::key::ClusterKey;
use monofs_net::ns::NsEntry;
use monofs_net::proto::{IngestRequest, Request, Response, SourceKind, MAX_STRING};

pub use url::{redact, validate_ns_path};
pub use walk::{BIG_BLOB, MAX_BATCH_BYTES};

/// Ingests running at once; a further INGEST is answered `ERROR busy`.
pub const MAX_CONCURRENT_INGESTS: usize = 4;
/// Open connections at once; further connections get `ERROR busy` and are closed.
pub const MAX_CONNECTIONS: usize = 128;
/// Connections beyond MAX_CONNECTIONS being told `ERROR busy` at once (each needs a
/// handshake first); further ones are closed without an answer.
pub const MAX_BUSY_REPLIES: usize = 16;
pub use service::{FETCH_BLOB_SLOT_WAIT, MAX_CONCURRENT_FETCH_BLOBS};
pub use prefetch::MAX_PREFETCH_JOBS;
/// Default `FetcherConfig::max_cache_bytes`: 50 GiB.
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 50 << 30;
/// Default `FetcherConfig::cache_age`: a cache entry unused this long is evicted.
pub const DEFAULT_CACHE_AGE: Duration = Duration::from_secs(2 * 3600);
/// Default `FetcherConfig::prefetch_workers`.
pub const DEFAULT_PREFETCH_WORKERS: usize = 4;
/// Default `FetcherConfig::fetch_timeout`: wall clock of one `git fetch`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = git::FETCH_TIMEOUT;
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
/// `file:///x/y/repo` or a local path `/x/y/repo` → `local/repo-<8 hex digits of
/// the hash of its canonical path>`, so two local `repo`s do not collide; ssh-style
/// `git@host:org/repo` → `host/org/repo`. A non-empty `source_id` overrides the
/// URL and is validated the same way: components non-empty, not `.`/`..`, of
/// letters, digits and `. _ ~ + -` only.
pub fn namespace_path(url: &str, source_id: &str) -> Result<String, IngestError> {
    url::namespace_path(url, source_id)
}

/// Fetch `req.url` at `req.git_ref` into `cache_dir`, store its trees and blobs
/// on `req.nodes`, and return the namespace entry to publish. `progress` gets
/// `(phase, objects, bytes)` at most about ten times a second; phases are
/// `fetching`, `blobs` (eager only), `trees`, `done`. Trees already stored are
/// skipped with everything under them.
pub fn ingest(
    cache_dir: &Path,
    key: &ClusterKey,
    req: &IngestRequest,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Vec<NsEntry>, IngestError> {
    if req.kind == SourceKind::GoModule {
        // No server, so no configured proxy: `gomod::ingest` takes one.
        return gomod::ingest(cache_dir, key, &gomod::GoModOptions::default(), req, progress);
    }
    // Without a server there is no prefetcher: a lazy ingest through this
    // function stores the trees only, and blobs come by FETCH_BLOB. The caller
    // is this process, not a client, so local sources are its own to read.
    let cache = cache::Cache::open(cache_dir, DEFAULT_MAX_CACHE_BYTES, DEFAULT_CACHE_AGE)
        .map_err(|e| IngestError::Cache { path: cache_dir.to_path_buf(), source: e })?;
    service::Service::new(cache, git::FETCH_TIMEOUT, 0, true, key.clone())
        .ingest_git(req, progress)
        .map(|i| vec![i.entry])
}

pub struct FetcherConfig {
    pub listen: SocketAddr,
    pub cache_dir: PathBuf,
    /// Bound of the cache (repositories and materialized blobs); the janitor
    /// evicts unused entries, least recently used first, beyond it.
    pub max_cache_bytes: u64,
    /// Cache entries unused this long are evicted.
    pub cache_age: Duration,
    /// Wall clock of one `git fetch`; git is killed past it and the request fails.
    pub fetch_timeout: Duration,
    /// Threads storing the blobs of lazy ingests in the background.
    pub prefetch_workers: usize,
    /// Module proxy for Go module ingests (`http(s)://…` or `file:///dir`);
    /// None refuses them.
    pub gomod_proxy: Option<String>,
    /// go.sum-format file Go module ingests are checked against.
    pub gosum_file: Option<PathBuf>,
    /// The cluster's shared secret: only holders may talk to this fetcher, and it
    /// presents it to the nodes.
    pub cluster_key: monofs_net::key::ClusterKey,
    /// Fetch local paths and file:// URLs too. Off by default: any client that
    /// may ingest could then publish whatever repository this process can read.
    pub allow_local_sources: bool,
}

impl FetcherConfig {
    /// A configuration with every tunable at its default.
    pub fn new(listen: SocketAddr, cache_dir: PathBuf, cluster_key: monofs_net::key::ClusterKey) -> FetcherConfig {
        FetcherConfig {
            listen,
            cache_dir,
            cluster_key,
            max_cache_bytes: DEFAULT_MAX_CACHE_BYTES,
            cache_age: DEFAULT_CACHE_AGE,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            prefetch_workers: DEFAULT_PREFETCH_WORKERS,
            gomod_proxy: None,
            gosum_file: None,
            allow_local_sources: false,
        }
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

    /// Stop accepting connections, the janitor and the prefetch workers (after
    /// their current batch), and wait for the accept loop to end. Ingests and
    /// blob fetches already running finish on their own threads.
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
    gomod: gomod::GoModOptions,
    addr: SocketAddr,
    svc: service::Service,
    ingests: AtomicUsize,
    conns: AtomicUsize,
    busy_replies: AtomicUsize,
    frame_key: FrameKey,
    /// Peers refused by the handshake or a frame MAC.
    auth_failures: FailureLog,
}

impl Shared {
    /// The counter a connection's slot was taken from.
    fn slots(&self, busy: bool) -> &AtomicUsize {
        if busy {
            &self.busy_replies
        } else {
            &self.conns
        }
    }
}

/// Decrements a counter when dropped.
pub(crate) struct Slot<'a>(pub(crate) &'a AtomicUsize);

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

/// Bind `cfg.listen` and serve INGEST, FETCH_BLOB and STATUS, one thread per
/// connection; start the cache janitor and the prefetch workers.
pub fn start(cfg: FetcherConfig) -> anyhow::Result<FetcherHandle> {
    std::fs::create_dir_all(&cfg.cache_dir)
        .with_context(|| format!("creating fetch cache {}", cfg.cache_dir.display()))?;
    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("binding fetcher to {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let cache = cache::Cache::open(&cfg.cache_dir, cfg.max_cache_bytes, cfg.cache_age)
        .with_context(|| format!("opening fetch cache {}", cfg.cache_dir.display()))?;
    cache.spawn_janitor(stop.clone())?;
    let frame_key = FrameKey::new(&cfg.cluster_key);
    let svc = service::Service::new(
        cache,
        cfg.fetch_timeout,
        cfg.prefetch_workers,
        cfg.allow_local_sources,
        cfg.cluster_key,
    );
    svc.prefetch.spawn_workers(cfg.prefetch_workers, stop.clone())?;
    let shared = Arc::new(Shared {
        gomod: gomod::GoModOptions {
            proxy: cfg.gomod_proxy,
            gosum_file: cfg.gosum_file,
            ..Default::default()
        },
        cache_dir: cfg.cache_dir,
        addr,
        svc,
        ingests: AtomicUsize::new(0),
        conns: AtomicUsize::new(0),
        busy_replies: AtomicUsize::new(0),
        frame_key,
        auth_failures: FailureLog::new(),
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

fn accept(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let busy = if try_inc(&shared.conns, MAX_CONNECTIONS) {
        false
    } else if try_inc(&shared.busy_replies, MAX_BUSY_REPLIES) {
        true
    } else {
        tracing::warn!("{MAX_CONNECTIONS} connections and {MAX_BUSY_REPLIES} refusals in progress; closing a new one");
        return Ok(());
    };
    let spawned = std::thread::Builder::new()
        .name("monofs-fetcher-conn".into())
        .spawn({
            let shared = shared.clone();
            move || {
                let _slot = Slot(shared.slots(busy));
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                let mut conn = match AuthStream::accept(stream, &shared.frame_key) {
                    Ok(c) => c,
                    Err(AuthError::Closed) => return,
                    Err(e) => return shared.auth_failures.record("fetcher", &peer, &e),
                };
                let r = if busy {
                    send(&mut conn, &Response::Error("busy: the fetcher has too many connections; retry later".into()))
                } else {
                    serve(&mut conn, &shared, &peer)
                };
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            }
        });
    if spawned.is_err() {
        shared.slots(busy).fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| ())
}

fn send(conn: &mut AuthStream, resp: &Response) -> std::io::Result<()> {
    let mut body = Vec::new();
    resp.encode(&mut body);
    conn.write_frame(&body)
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

fn serve(stream: &mut AuthStream, shared: &Shared, peer: &str) -> std::io::Result<()> {
    loop {
        let body = match stream.read_frame() {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::Header(e)) => return send(stream, &Response::Error(format!("malformed frame: {e}"))),
            Err(FrameError::Auth(e)) => {
                shared.auth_failures.record("fetcher", peer, &e);
                return Ok(());
            }
        };
        let req = match Request::decode(&body) {
            Ok(Request::Ingest(req)) => req,
            Ok(Request::FetchBlob(req)) => {
                let resp = match shared.svc.fetch_blob(&req) {
                    Ok(()) => Response::Ok,
                    Err(e) => {
                        tracing::warn!(url = %redact(&req.url), blob = %monofs_net::oid_hex(&req.oid), error = %e, "blob fetch failed");
                        Response::Error(error_text(e))
                    }
                };
                send(stream, &resp)?;
                continue;
            }
            Ok(Request::Status) => {
                let json = shared
                    .svc
                    .status_json(&shared.addr.to_string(), shared.ingests.load(Ordering::SeqCst), shared.auth_failures.count());
                send(stream, &Response::Data(json.into_bytes()))?;
                continue;
            }
            Ok(_) => {
                send(
                    stream,
                    &Response::Error(
                        "this is a MonoFS fetcher: it serves only INGEST, FETCH_BLOB and STATUS".into(),
                    ),
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
        // Git sources go through the service (cache bounds, prefetch); other
        // kinds through `ingest`.
        let (result, pending) = match req.kind {
            SourceKind::Git => match shared.svc.ingest_git(&req, &mut on_progress) {
                Ok(i) => (Ok(vec![i.entry]), i.pending),
                Err(e) => (Err(e), None),
            },
            SourceKind::GoModule => {
                (gomod::ingest(&shared.cache_dir, &shared.svc.key, &shared.gomod, &req, &mut on_progress), None)
            }
        };
        let resp = match result {
            Ok(entries) => match monofs_net::ns::encode(&entries) {
                Ok(raw) => Response::IngestDone(raw),
                Err(e) => Response::Error(error_text(format!("namespace entries cannot be sent: {e}"))),
            },
            Err(e) => {
                tracing::warn!(url = %redact(&req.url), error = %e, "ingest failed");
                Response::Error(error_text(e.to_string()))
            }
        };
        send(stream, &resp)?;
        // Lazy: the entry is answered (and published by the router); now the blobs.
        shared.svc.enqueue(pending);
    }
}
