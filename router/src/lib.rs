//! The router: serves the MonoFS namespace over NFSv3 (through `monofs-nfs`),
//! places every request on the node that owns it, and runs ingests through the
//! fetchers. It keeps caches only: everything it knows can be rebuilt from the
//! nodes, so a router can die and another take over with the same handles.

pub mod admin_token;
pub mod backend;
pub mod cache;
pub mod damaged;
pub mod handle;
pub mod health;
pub mod http;
pub mod ingest;
pub mod lazy;
pub mod metrics;
pub mod namespace;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use monofs_net::client::Cluster;
use monofs_net::proto::NodeAddr;
use monofs_net::sync::lock;
use monofs_net::{keys, Oid};
use monofs_nfs::Status;

use crate::cache::ByteLru;
use crate::metrics::Metrics;
use crate::namespace::Namespace;

/// How long a router trusts its copy of the namespace record: the bound on how
/// stale a newly published repository can look to a client.
pub const NS_TTL: Duration = Duration::from_secs(1);
/// Bytes of directory records cached.
pub const DIR_CACHE_BYTES: usize = 256 << 20;
/// Bytes of file content cached (in `backend::BLOCK` blocks). Content is
/// immutable, so a cached block never goes stale.
pub const BLOCK_CACHE_BYTES: usize = 256 << 20;

pub struct RouterConfig {
    /// NFS, MOUNT and PORTMAP on one TCP port.
    pub nfs_listen: SocketAddr,
    /// Also serve PORTMAP (TCP and UDP) on this port, normally 111, so a plain
    /// `mount -t nfs host:/ dir` finds NFS and MOUNT.
    pub portmap_port: Option<u16>,
    pub http_listen: SocketAddr,
    pub nodes: Vec<NodeAddr>,
    pub replication: usize,
    pub fetchers: Vec<String>,
    /// Refresh every Git repository this often (run it on one router only).
    pub refresh_interval: Option<Duration>,
    /// Limits of the NFS server (connections, timeouts).
    pub nfs_limits: monofs_nfs::Limits,
    /// The cluster's shared secret (node and fetcher traffic, file handle MACs).
    pub cluster_key: monofs_net::key::ClusterKey,
    /// Bearer token of the HTTP endpoints that change state; None accepts
    /// them from loopback only.
    pub admin_token: Option<admin_token::AdminToken>,
    /// Which NFS clients may mount and call, and as whom (docs/exports.md);
    /// `Exports::default()` is `/ *(ro,root_squash,insecure)`.
    pub exports: monofs_nfs::Exports,
}

pub struct Router {
    pub(crate) cluster: Cluster,
    pub(crate) fetchers: Vec<String>,
    /// Authenticates this router to its fetchers (nodes: inside `cluster`).
    pub(crate) frame_key: monofs_net::auth::FrameKey,
    ns: Mutex<Option<(Instant, Arc<Namespace>)>>,
    /// Serializes this router's read-modify-write of the namespace record.
    ns_write: Mutex<()>,
    pub(crate) dirs: ByteLru<Oid, Vec<monofs_net::dir::Entry>>,
    pub(crate) blocks: ByteLru<(Oid, u64), Vec<u8>>,
    pub(crate) metrics: Metrics,
    pub(crate) flights: Arc<lazy::Flights>,
    /// MAC key of the file handles this router mints and accepts.
    pub(crate) handle_key: handle::HandleKey,
    /// Whether the NFS accept loop is running (`GET /health`).
    pub(crate) nfs_serving: AtomicBool,
    /// `GET /health`'s read of the namespace.
    pub(crate) health_probe: health::Probe,
}

impl Router {
    pub fn new(
        nodes: Vec<NodeAddr>,
        replication: usize,
        fetchers: Vec<String>,
        key: &monofs_net::key::ClusterKey,
    ) -> Router {
        Router {
            handle_key: handle::HandleKey::new(key),
            cluster: Cluster::new(nodes, replication, key),
            fetchers,
            frame_key: monofs_net::auth::FrameKey::new(key),
            ns: Mutex::new(None),
            ns_write: Mutex::new(()),
            dirs: ByteLru::new(DIR_CACHE_BYTES),
            blocks: ByteLru::new(BLOCK_CACHE_BYTES),
            metrics: Metrics::default(),
            flights: Arc::default(),
            nfs_serving: AtomicBool::new(false),
            health_probe: health::Probe::default(),
        }
    }

    /// The namespace record as stored on its owning nodes.
    fn load_namespace_record(&self) -> Result<(Vec<monofs_net::ns::NsEntry>, Vec<u8>), String> {
        let raw = self
            .cluster
            .get(&keys::namespace(), 0, monofs_net::MAX_FRAME as u32)
            .map_err(|e| format!("namespace record unavailable: {e}"))?
            .unwrap_or_default();
        if raw.is_empty() {
            return Ok((Vec::new(), raw));
        }
        let entries =
            monofs_net::ns::decode(&raw).map_err(|e| format!("namespace record corrupt: {e}"))?;
        Ok((entries, raw))
    }

    /// The current namespace, at most NS_TTL old.
    pub fn namespace(&self) -> Result<Arc<Namespace>, Status> {
        self.namespace_or_reason().map_err(|e| {
            tracing::error!(error = %e, "cannot load namespace");
            Status::Io
        })
    }

    /// `namespace`, with the reason it cannot be read.
    pub fn namespace_or_reason(&self) -> Result<Arc<Namespace>, String> {
        if let Some((at, ns)) = lock(&self.ns).as_ref() {
            if at.elapsed() < NS_TTL {
                return Ok(ns.clone());
            }
        }
        let (entries, raw) = self.load_namespace_record()?;
        let mut slot = lock(&self.ns);
        let ns = match slot.as_ref() {
            Some((_, old)) if old.generation == xxhash_rust::xxh3::xxh3_64(&raw) => old.clone(),
            _ => Arc::new(Namespace::build(entries, &raw)),
        };
        *slot = Some((Instant::now(), ns.clone()));
        Ok(ns)
    }

    /// Add or replace a repository in the namespace record, durably on every
    /// owner, then drop the cached copy so this router sees it at once.
    pub fn publish(&self, entry: monofs_net::ns::NsEntry) -> Result<(), String> {
        let _w = lock(&self.ns_write);
        let (mut entries, _) = self.load_namespace_record()?;
        Namespace::check_new(&entries, &entry.path).map_err(
            |namespace::Conflict::Nested(other)| {
                format!(
                    "'{}' would nest with the published repository '{other}'",
                    entry.path
                )
            },
        )?;
        let entry_path = entry.path.clone();
        monofs_net::ns::upsert(&mut entries, entry);
        let raw = monofs_net::ns::encode(&entries)
            .map_err(|e| format!("cannot publish '{}': {e}", entry_path))?;
        self.cluster
            .put_batch(vec![(keys::namespace(), raw)])
            .map_err(|e| format!("cannot store namespace record: {e}"))?;
        *lock(&self.ns) = None;
        Ok(())
    }

    pub fn repos(&self) -> Result<Vec<monofs_net::ns::NsEntry>, String> {
        Ok(self.load_namespace_record()?.0)
    }
}

pub struct RouterHandle {
    pub router: Arc<Router>,
    pub nfs_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    http: Arc<tiny_http::Server>,
}

impl RouterHandle {
    pub fn shutdown(self) {
        self.shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.http.unblock();
        // Wake the accept loops so they see the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.nfs_addr, Duration::from_secs(1));
        for t in self.threads {
            let _ = t.join();
        }
    }

    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Every NFS connection is a descriptor: a low soft limit would refuse clients
/// long before the server's connection caps do.
fn raise_nofile() {
    match monofs_nfs::raise_nofile_limit(monofs_nfs::WANTED_NOFILE) {
        Ok((before, after)) if after > before => {
            tracing::info!(before, after, "raised the open-file soft limit for NFS connections")
        }
        Ok((before, _)) if before < monofs_nfs::WANTED_NOFILE => tracing::warn!(
            limit = before,
            wanted = monofs_nfs::WANTED_NOFILE,
            "open-file limit is low and the hard limit forbids raising it"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

pub fn start(cfg: RouterConfig) -> anyhow::Result<RouterHandle> {
    let router = Arc::new(Router::new(cfg.nodes, cfg.replication, cfg.fetchers, &cfg.cluster_key));
    let shutdown = Arc::new(AtomicBool::new(false));
    let nfs = TcpListener::bind(cfg.nfs_listen)
        .with_context(|| format!("cannot listen for NFS on {}", cfg.nfs_listen))?;
    let nfs_addr = nfs.local_addr()?;
    let ports = monofs_nfs::Ports {
        nfs: nfs_addr.port(),
        mount: nfs_addr.port(),
        portmap: cfg.portmap_port.unwrap_or(nfs_addr.port()),
        portmap_udp: cfg.portmap_port.is_some(),
    };
    raise_nofile();
    let mut threads = Vec::new();
    let backend: Arc<dyn monofs_nfs::Backend> = router.clone();
    let exports = Arc::new(cfg.exports);
    let limits = cfg.nfs_limits;
    {
        let (b, x, s) = (backend.clone(), exports.clone(), shutdown.clone());
        let stats = router.metrics.nfs.clone();
        let r = router.clone();
        r.nfs_serving.store(true, std::sync::atomic::Ordering::SeqCst);
        threads.push(
            std::thread::Builder::new()
                .name("nfs-accept".into())
                .spawn(move || {
                    if let Err(e) =
                        monofs_nfs::serve_tcp_exported(nfs, b, x, limits, ports, stats, s)
                    {
                        tracing::error!(error = %e, "NFS server stopped");
                    }
                    r.nfs_serving.store(false, std::sync::atomic::Ordering::SeqCst);
                })?,
        );
    }
    if let Some(pm) = cfg.portmap_port {
        let addr = SocketAddr::new(cfg.nfs_listen.ip(), pm);
        let tcp = TcpListener::bind(addr).with_context(|| {
            format!(
                "cannot listen for PORTMAP on {addr} (port 111 needs root or CAP_NET_BIND_SERVICE)"
            )
        })?;
        let udp =
            UdpSocket::bind(addr).with_context(|| format!("cannot bind PORTMAP UDP on {addr}"))?;
        let (b, x, s) = (backend.clone(), exports.clone(), shutdown.clone());
        // Connections to the portmapper port count with those to the NFS port.
        let stats = router.metrics.nfs.clone();
        threads.push(
            std::thread::Builder::new()
                .name("portmap-tcp".into())
                .spawn(move || {
                    if let Err(e) =
                        monofs_nfs::serve_tcp_exported(tcp, b, x, limits, ports, stats, s)
                    {
                        tracing::error!(error = %e, "PORTMAP TCP server stopped");
                    }
                })?,
        );
        let s = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name("portmap-udp".into())
                .spawn(move || {
                    if let Err(e) = monofs_nfs::serve_portmap_udp(udp, ports, s) {
                        tracing::error!(error = %e, "PORTMAP UDP server stopped");
                    }
                })?,
        );
    }
    let http = Arc::new(
        tiny_http::Server::http(cfg.http_listen)
            .map_err(|e| anyhow::anyhow!("cannot listen for HTTP on {}: {e}", cfg.http_listen))?,
    );
    let http_addr = http
        .server_addr()
        .to_ip()
        .context("HTTP server has no IP address")?;
    {
        let (r, h, t) = (router.clone(), http.clone(), cfg.admin_token);
        threads.push(
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || http::serve(r, h, t))?,
        );
    }
    if let Some(every) = cfg.refresh_interval {
        let (r, s) = (router.clone(), shutdown.clone());
        threads.push(
            std::thread::Builder::new()
                .name("refresh".into())
                .spawn(move || {
                    let mut next = Instant::now() + every;
                    while !s.load(std::sync::atomic::Ordering::SeqCst) {
                        if Instant::now() >= next {
                            r.refresh_all();
                            next = Instant::now() + every;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })?,
        );
    }
    tracing::info!(nfs = %nfs_addr, http = %http_addr, "router listening");
    Ok(RouterHandle {
        router,
        nfs_addr,
        http_addr,
        shutdown,
        threads,
        http,
    })
}

#[cfg(test)]
mod poison_tests;
#[cfg(test)]
mod stand_in_node;
