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
pub mod ready;
pub mod repair;
pub mod http;
pub mod ingest;
pub mod lazy;
pub mod metrics;
pub mod namespace;
pub mod node_files;
pub mod status;
pub mod state;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use monofs_net::client::Cluster;
use monofs_net::proto::NodeAddr;
use monofs_net::sync::lock;
use monofs_net::Oid;
use monofs_nfs::Status;

use crate::cache::ByteLru;
use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::state::{Drain, Failover, FailoverReason, RouterInfo};

/// How long a router trusts its copy of the cluster state (and so of the
/// namespace): the bound on how stale a newly published repository, a drain
/// or a failover can look to it.
pub const NS_TTL: Duration = Duration::from_secs(1);
/// Bytes of directory records cached.
pub const DIR_CACHE_BYTES: usize = 256 << 20;
/// Bytes of file content cached (in `backend::BLOCK` blocks). Content is
/// immutable, so a cached block never goes stale.
pub const BLOCK_CACHE_BYTES: usize = 256 << 20;

/// Sizes of the router's caches.
#[derive(Clone, Copy, Debug)]
pub struct CacheSizes {
    /// Bytes of directory records.
    pub dir_bytes: usize,
    /// Bytes of file content.
    pub block_bytes: usize,
}

impl Default for CacheSizes {
    fn default() -> CacheSizes {
        CacheSizes { dir_bytes: DIR_CACHE_BYTES, block_bytes: BLOCK_CACHE_BYTES }
    }
}

pub struct RouterConfig {
    /// Directory record and content cache sizes.
    pub caches: CacheSizes,
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
    /// How often nodes are probed and when one counts as unhealthy.
    pub health: health::HealthConfig,
    /// This router's name in the cluster state (`router/<id>`, and the writer
    /// of its entries); unique per router.
    pub router_id: String,
    /// Failover delay, pace and period of the repair (`repair`).
    pub repair: repair::RepairConfig,
}

pub struct Router {
    pub(crate) cluster: Cluster,
    pub(crate) fetchers: Vec<String>,
    /// Authenticates this router to its fetchers (nodes: inside `cluster`).
    pub(crate) frame_key: monofs_net::auth::FrameKey,
    ns: Mutex<Option<(Instant, Arc<Namespace>)>>,
    /// One publish of this router at a time, so its own publishes are checked
    /// against each other (publishes of other routers meet the merge rule).
    ns_write: Mutex<()>,
    /// The cluster state on the nodes.
    pub(crate) state: state::Store,
    /// Writer of this router's state entries.
    id: String,
    pub(crate) dirs: ByteLru<Oid, Vec<monofs_net::dir::Entry>>,
    pub(crate) blocks: ByteLru<(Oid, u64), Vec<u8>>,
    pub(crate) metrics: Metrics,
    pub(crate) flights: Arc<lazy::Flights>,
    /// MAC key of the file handles this router mints and accepts.
    pub(crate) handle_key: handle::HandleKey,
    /// What the repair loop is doing (`GET /api/status`), and its triggers.
    pub(crate) repair: repair::Repair,
    pub(crate) started: Instant,
    /// Where this router listens, as `GET /api/status` shows it.
    pub(crate) listen: std::sync::OnceLock<String>,
    /// Whether the NFS accept loop is running (`GET /health`).
    pub(crate) nfs_serving: AtomicBool,
    /// `GET /health`'s read of the namespace.
    pub(crate) health_probe: ready::Probe,
}

impl Router {
    pub fn new(
        nodes: Vec<NodeAddr>,
        replication: usize,
        fetchers: Vec<String>,
        key: &monofs_net::key::ClusterKey,
    ) -> Router {
        let cluster = Cluster::new(nodes, replication, key);
        Router {
            handle_key: handle::HandleKey::new(key),
            repair: repair::Repair::default(),
            state: state::Store::new(cluster.clone()),
            id: format!("router-{}", std::process::id()),
            cluster,
            fetchers,
            frame_key: monofs_net::auth::FrameKey::new(key),
            ns: Mutex::new(None),
            ns_write: Mutex::new(()),
            dirs: ByteLru::new(DIR_CACHE_BYTES),
            blocks: ByteLru::new(BLOCK_CACHE_BYTES),
            metrics: Metrics::default(),
            flights: Arc::default(),
            started: Instant::now(),
            listen: std::sync::OnceLock::new(),
            nfs_serving: AtomicBool::new(false),
            health_probe: ready::Probe::default(),
        }
    }

    /// Name this router in the cluster state.
    pub fn with_id(mut self, id: String) -> Router {
        self.id = id;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this router runs failover and repair: it has the smallest id
    /// among the routers whose heartbeat is live in the cluster state.
    /// Replace the node list (SIGHUP of `--nodes @FILE`): placement changes at
    /// once, reads still find keys on their old owners, and the repair moves
    /// the keys whose owners changed.
    /// The list is also written to the cluster state (`members`), where every
    /// other router, and a router started later with an older list, adopts it.
    pub fn set_nodes(&self, nodes: Vec<NodeAddr>) -> Result<(), String> {
        self.apply_nodes(nodes.clone())?;
        let list: Vec<String> = nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect();
        self.write_entry(state::MEMBERS.to_string(), Some(serde_json::json!(list)))
            .map_err(|e| format!("node list applied here but not stored in the cluster state: {e}"))
    }

    /// Use `nodes` for placement from now on.
    fn apply_nodes(&self, nodes: Vec<NodeAddr>) -> Result<(), String> {
        let before: Vec<String> = self.cluster.nodes().into_iter().map(|n| n.id).collect();
        self.cluster.set_nodes(nodes)?;
        let after: Vec<String> = self.cluster.nodes().into_iter().map(|n| n.id).collect();
        tracing::info!(before = ?before, after = ?after, "membership changed");
        Ok(())
    }

    /// The node list the cluster state holds (`id=host:port`), if an operator set one.
    pub fn members(&self) -> Option<Vec<String>> {
        let m = self.snapshot().and_then(|s| state::members(&s.state))?;
        Some(m.into_iter().map(|n| format!("{}={}", n.id, n.addr)).collect())
    }

    /// Adopt the node list of the cluster state when it differs from this
    /// router's (another router's SIGHUP, or this router started with an older
    /// `--nodes`).
    pub(crate) fn follow_members(&self) {
        let Some(members) = self.snapshot().and_then(|s| state::members(&s.state)) else {
            return;
        };
        let mine = self.cluster.nodes();
        let same = members.len() == mine.len() && members.iter().all(|m| mine.contains(m));
        if !same {
            tracing::warn!("the cluster state names another node list than this router's: adopting it");
            if let Err(e) = self.apply_nodes(members) {
                tracing::error!(error = %e, "node list of the cluster state refused");
            }
        }
    }

    pub fn with_caches(mut self, c: CacheSizes) -> Router {
        self.dirs = ByteLru::new(c.dir_bytes);
        self.blocks = ByteLru::new(c.block_bytes);
        self
    }

    pub fn is_repair_leader(&self) -> bool {
        self.routers().iter().map(|r| r.id.as_str()).min() == Some(self.id.as_str())
    }

    /// Start a repair pass now (`monofs admin rebalance`), over the whole
    /// cluster or the pairs and handoff of one node.
    pub fn request_rebalance(&self, node: Option<String>) -> Result<(), String> {
        if let Some(n) = &node {
            self.known_node(n)?;
        }
        if !self.is_repair_leader() {
            let leader = self.routers().into_iter().map(|r| r.id).min();
            return Err(format!(
                "this router ('{}') does not run repair; the repair leader is {}: send the request there",
                self.id,
                leader.map_or("unknown (no live router in the cluster state)".into(), |l| format!("'{l}'"))
            ));
        }
        let why = match &node {
            Some(n) => format!("rebalance of {n} requested"),
            None => "rebalance requested".into(),
        };
        self.repair.request(why, node);
        Ok(())
    }

    pub fn repair_status(&self) -> repair::RepairStatus {
        self.repair.status()
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
        let snap = self.state.read(NS_TTL)?;
        let (repos, generation) = namespace::published(&snap.state, &snap.legacy);
        let mut slot = lock(&self.ns);
        let ns = match slot.as_ref() {
            Some((_, old)) if old.generation == generation => old.clone(),
            _ => Arc::new(Namespace::build(repos, generation)),
        };
        *slot = Some((Instant::now(), ns.clone()));
        Ok(ns)
    }

    /// Add or replace a repository in the namespace: one `repo/<path>` entry
    /// of the cluster state, stored on a majority of nodes. A path keeps the
    /// URL it was first published from; of two routers publishing one path
    /// from two URLs at once, the write that wins the merge order stays, and
    /// the other router reports the refusal if a majority's answers already
    /// show the winner (otherwise its entry is overwritten when the winner's
    /// write lands).
    pub fn publish(&self, entry: monofs_net::ns::NsEntry) -> Result<(), String> {
        let _w = lock(&self.ns_write);
        let snap = self.state.read(Duration::ZERO)?;
        let (repos, _) = namespace::published(&snap.state, &snap.legacy);
        Namespace::check_new(&repos, &entry).map_err(|c| c.message(&entry))?;
        let name = format!("{}{}", state::REPO_PREFIX, entry.path);
        let update = state::stamped(&self.id, name.clone(), Some(entry.encode()));
        let after = self
            .state
            .write(update)
            .map_err(|e| format!("cannot publish '{}': {e}", entry.path))?;
        *lock(&self.ns) = None;
        let (repos, _) = namespace::published(&after.state, &after.legacy);
        let winner = after.state.entries.get(&name).map(|e| e.writer.as_str()).unwrap_or("?");
        match repos.iter().find(|r| r.path == entry.path) {
            Some(r) if r.url == entry.url => Ok(()),
            Some(r) => Err(format!(
                "{} (router {winner} published it at the same time, and its write wins)",
                namespace::Conflict::OtherUrl(r.url.clone()).message(&entry)
            )),
            None => Err(format!(
                "'{}' was not published: a repository nesting with it was published at the same time, and its write wins",
                entry.path
            )),
        }
    }

    pub fn repos(&self) -> Result<Vec<monofs_net::ns::NsEntry>, String> {
        let snap = self.state.read(NS_TTL)?;
        Ok(namespace::published(&snap.state, &snap.legacy).0)
    }

    /// The cluster state at most NS_TTL old or, while a majority of nodes
    /// cannot be read, the last one read (None before any read succeeded).
    fn snapshot(&self) -> Option<Arc<state::Snapshot>> {
        match self.state.read(NS_TTL) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "using the last cluster state read");
                self.state.last()
            }
        }
    }

    /// The drain set by an operator, if any.
    pub fn drained(&self) -> Option<Drain> {
        state::drain(&self.snapshot()?.state)
    }

    /// Nodes marked for failover, by node id.
    pub fn failovers(&self) -> std::collections::BTreeMap<String, Failover> {
        self.snapshot().map(|s| state::failovers(&s.state)).unwrap_or_default()
    }

    /// Routers that wrote a heartbeat within the last LIVE_HEARTBEATS periods.
    pub fn routers(&self) -> Vec<RouterInfo> {
        self.snapshot()
            .map(|s| state::live_routers(&s.state, monofs_net::state::wall_ms()))
            .unwrap_or_default()
    }

    fn write_entry(&self, name: String, value: Option<serde_json::Value>) -> Result<(), String> {
        let value = value.map(|v| v.to_string().into_bytes());
        self.state.write(state::stamped(&self.id, name, value)).map(|_| ())
    }

    pub fn set_drain(&self, reason: &str) -> Result<Drain, String> {
        let d = Drain { reason: reason.to_string(), by: self.id.clone(), at: monofs_net::state::wall_ms() };
        self.write_entry(state::DRAIN.into(), Some(serde_json::json!(d)))?;
        Ok(d)
    }

    pub fn clear_drain(&self) -> Result<(), String> {
        self.write_entry(state::DRAIN.into(), None)
    }

    /// An error naming the configured nodes when `node_id` is none of them.
    pub(crate) fn known_node(&self, node_id: &str) -> Result<(), String> {
        if self.cluster.nodes().iter().any(|n| n.id == node_id) {
            return Ok(());
        }
        let nodes = self.cluster.nodes();
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        Err(format!("unknown node id '{node_id}' (this cluster's nodes: {})", ids.join(", ")))
    }

    /// Mark `node_id` for failover.
    pub fn set_failover(&self, node_id: &str, reason: FailoverReason) -> Result<Failover, String> {
        self.known_node(node_id)?;
        let f = Failover { reason, since: monofs_net::state::wall_ms(), by: self.id.clone() };
        self.write_entry(format!("{}{node_id}", state::FAILOVER_PREFIX), Some(serde_json::json!(f)))?;
        Ok(f)
    }

    /// Forget `node_id`'s failover mark: it is back, or it was removed from
    /// the node list (then only its mark still names it).
    pub fn clear_failover(&self, node_id: &str) -> Result<(), String> {
        if !self.failovers().contains_key(node_id) {
            self.known_node(node_id)?;
        }
        self.write_entry(format!("{}{node_id}", state::FAILOVER_PREFIX), None)
    }

    /// Write this router's `router/<id>` entry.
    pub fn heartbeat(&self, http: SocketAddr, nfs: SocketAddr) -> Result<(), String> {
        let info = RouterInfo {
            id: self.id.clone(),
            http: http.to_string(),
            nfs: nfs.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            seen_ms: monofs_net::state::wall_ms(),
        };
        self.write_entry(format!("{}{}", state::ROUTER_PREFIX, self.id), Some(serde_json::json!(info)))
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
    cfg.health.check().map_err(anyhow::Error::msg)?;
    cfg.repair.check().map_err(anyhow::Error::msg)?;
    let router = Arc::new(
        Router::new(cfg.nodes, cfg.replication, cfg.fetchers, &cfg.cluster_key)
            .with_id(cfg.router_id)
            .with_caches(cfg.caches),
    );
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
    let _ = router.listen.set(format!("nfs={nfs_addr},http={http_addr}"));
    threads.push(health::spawn(router.cluster.clone(), cfg.health, shutdown.clone())?);
    {
        let (r, c, s) = (router.clone(), cfg.repair.clone(), shutdown.clone());
        threads.push(std::thread::Builder::new().name("repair".into()).spawn(move || repair::run(r, c, s))?);
    }
    {
        let (r, s) = (router.clone(), shutdown.clone());
        threads.push(
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !s.load(std::sync::atomic::Ordering::SeqCst) {
                        if Instant::now() >= next {
                            if let Err(e) = r.heartbeat(http_addr, nfs_addr) {
                                tracing::warn!(error = %e, "router heartbeat not stored");
                            }
                            next = Instant::now() + state::HEARTBEAT;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })?,
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
