//! `monofs`: the one binary. Each subcommand is one component (router, node,
//! fetcher), the whole cluster on one machine (`up`), or a client tool.

mod admin;
mod client;
mod datadir;
mod duration;
mod ingest_cmd;
mod logging;
mod size;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, for scripts.
pub mod exit {
    /// Something failed (the message says what).
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap).
    pub const USAGE: u8 = 2;
    /// The path does not exist in the namespace.
    pub const NOT_FOUND: u8 = 3;
    /// The router (or another component) could not be reached.
    pub const UNREACHABLE: u8 = 4;
    /// The router answered, but a storage node is unhealthy or did not answer.
    pub const DEGRADED: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "monofs",
    version,
    about = "MonoFS: Git repositories as one read-only NFSv3 namespace, mounted with the stock kernel client",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 path not found, 4 component unreachable.\n\
                  Logs go to stderr; RUST_LOG (e.g. RUST_LOG=debug) sets the level."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole cluster (nodes, fetcher, router) on this machine over loopback.
    Up(up::UpArgs),
    /// Run a router: NFSv3 + MOUNT + PORTMAP server and HTTP API.
    Router(RouterArgs),
    /// Run a storage node.
    Node(NodeArgs),
    /// Run a fetcher.
    Fetcher(FetcherArgs),
    /// Ingest a Git repository or a Go module into a running cluster (through its router).
    Ingest(ingest_cmd::IngestArgs),
    /// Operate a running cluster: repositories, refreshes, fetchers.
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// List a directory over NFSv3 (no mount needed).
    Ls(client::LsArgs),
    /// Print a file over NFSv3 (no mount needed).
    Cat(client::PathArgs),
    /// Show a path's attributes over NFSv3 (no mount needed).
    Stat(client::PathArgs),
}

#[derive(clap::Args)]
struct RouterArgs {
    /// TCP port for NFSv3, MOUNT v3 and PORTMAP v2 (2049 is the NFS standard).
    #[arg(long, default_value_t = 2049)]
    port: u16,
    /// Also answer PORTMAP on this port over TCP and UDP (normally 111) so a plain
    /// `mount -t nfs router:/ dir` works; needs root or CAP_NET_BIND_SERVICE.
    #[arg(long)]
    portmap_port: Option<u16>,
    /// Port of the HTTP API (ingest, repos, /metrics).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Address to listen on, for NFS and the HTTP API (0.0.0.0 or this
    /// machine's address to serve other machines).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// File holding the token that POST requests to the HTTP API (ingest,
    /// refresh) must present as `Authorization: Bearer TOKEN` (one line, mode
    /// 0600). Without it, such requests are accepted from loopback only.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Storage nodes: id=host:port,id=host:port,... Or `@FILE`: the list is
    /// read from FILE (ids and addresses separated by commas or newlines, `#`
    /// starts a comment) and read again on SIGHUP, so nodes are added or
    /// removed without a restart: keys whose owners change are then moved by
    /// the repair (docs/operations.md). Give every router the same list.
    #[arg(long)]
    nodes: String,
    /// Client-side caches: bytes of directory records (e.g. 256M).
    #[arg(long, default_value = "256M", value_parser = size::parse)]
    dir_cache: u64,
    /// Bytes of file content cached, in 64 KiB blocks (e.g. 256M, 4G).
    #[arg(long, default_value = "256M", value_parser = size::parse)]
    block_cache: u64,
    /// Fetchers: host:port,host:port,...
    #[arg(long, default_value = "")]
    fetchers: String,
    /// Copies of every record, on distinct nodes.
    #[arg(long, default_value_t = 1)]
    replication_factor: usize,
    /// Move every Git repository to the newest commit of its ref this often, in
    /// seconds (enable on one router of a deployment).
    #[arg(long)]
    refresh_interval: Option<u64>,
    /// Probe every node this often (HELLO on a fresh connection), e.g. 2s, 500ms.
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    health_interval: std::time::Duration,
    /// A node with no successful probe for this long is unhealthy: requests try
    /// it after every healthy node. At least the health interval.
    #[arg(long, default_value = "6s", value_parser = duration::parse)]
    unhealthy_threshold: std::time::Duration,
    /// This router's name in the cluster state (its heartbeat, and the writer
    /// of what it publishes); unique per router. Default: HOSTNAME:HTTP_PORT.
    #[arg(long)]
    router_id: Option<String>,
    /// How long a node may stay unhealthy before it is failed over and every
    /// key it held is copied from a surviving replica to the next owner. Short
    /// outages (a restart, a reboot) are better caught up by anti-entropy than
    /// answered with a full copy. Suspended while the cluster is drained.
    #[arg(long, default_value = "10m", value_parser = duration::parse)]
    rebalance_delay: std::time::Duration,
    /// Bytes per second a repair may copy between nodes (e.g. 64M, 1G).
    #[arg(long, default_value = "64M", value_parser = size::parse)]
    repair_bandwidth: u64,
    /// Longest time between two anti-entropy passes when nothing changes
    /// (a node's health, the membership or the failover state changing starts
    /// one at once).
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    repair_interval: std::time::Duration,
    #[command(flatten)]
    clients: ClientLimits,
    #[command(flatten)]
    key: KeyArg,
    #[command(flatten)]
    exports: ExportsArg,
}

#[derive(clap::Args)]
struct NodeArgs {
    /// Address of shard 0; shard i listens on port+i.
    #[arg(long)]
    addr: SocketAddr,
    /// This node's id, as named in the routers' --nodes.
    #[arg(long)]
    node_id: String,
    /// Directory holding this node's logs.
    #[arg(long)]
    db_path: PathBuf,
    /// Shards, one glommio executor (thread) each; default: one per CPU.
    #[arg(long)]
    shards: Option<usize>,
    #[command(flatten)]
    key: KeyArg,
}

#[derive(clap::Args)]
struct FetcherArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 9200)]
    port: u16,
    /// Address to listen on (0.0.0.0 or this machine's address to serve
    /// routers on other machines).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Directory for fetched repositories.
    #[arg(long)]
    cache_dir: PathBuf,
    /// Also ingest repositories from this machine's file system (local paths
    /// and file:// URLs). Off by default: whoever may ingest could otherwise
    /// publish any repository the fetcher can read. `monofs up` turns it on.
    #[arg(long)]
    allow_local_sources: bool,
    #[command(flatten)]
    tuning: FetcherTuning,
    #[command(flatten)]
    key: KeyArg,
}

/// The cluster key of `monofs router`, `node` and `fetcher`.
#[derive(clap::Args)]
struct KeyArg {
    /// File holding the cluster key that every router, node and fetcher of the
    /// cluster shares (64 hex digits, mode 0600; `monofs admin gen-key FILE` writes
    /// one, `monofs up` keeps one in its data directory). Traffic between the
    /// components is authenticated with it: a process without it is refused.
    #[arg(long, env = "MONOFS_CLUSTER_KEY_FILE")]
    cluster_key_file: PathBuf,
}

impl KeyArg {
    fn load(&self) -> anyhow::Result<monofs_net::key::ClusterKey> {
        Ok(monofs_net::key::ClusterKey::load(&self.cluster_key_file)?)
    }
}

/// The NFS export rules of `monofs router` and `monofs up`.
#[derive(clap::Args)]
pub struct ExportsArg {
    /// Export rules in /etc/exports form (docs/exports.md): which client
    /// addresses may mount and call, ro/rw, root_squash/all_squash, secure ports.
    /// Default: `/ *(ro,root_squash,insecure)`.
    #[arg(long, value_name = "FILE")]
    exports: Option<PathBuf>,
}

impl ExportsArg {
    pub fn load(&self) -> anyhow::Result<monofs_nfs::Exports> {
        match &self.exports {
            None => Ok(monofs_nfs::Exports::default()),
            Some(path) => Ok(monofs_nfs::Exports::load(path)?),
        }
    }
}

/// NFS client connection limits shared by `monofs router` and `monofs up`.
#[derive(clap::Args)]
pub struct ClientLimits {
    /// Close an NFS connection with no call in flight after this many seconds
    /// without a call.
    #[arg(long, default_value_t = monofs_nfs::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_secs: u64,
    /// NFS connections one client address may hold at once.
    #[arg(long, default_value_t = monofs_nfs::DEFAULT_MAX_CONNS_PER_CLIENT)]
    max_conns_per_client: usize,
    /// Close an NFS connection whose RPC record, once started, has not arrived
    /// whole after this many seconds.
    #[arg(long, default_value_t = monofs_nfs::DEFAULT_RECORD_DEADLINE.as_secs())]
    record_deadline_secs: u64,
}

impl ClientLimits {
    pub fn limits(&self) -> monofs_nfs::Limits {
        monofs_nfs::Limits {
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            max_conns_per_client: self.max_conns_per_client,
            record_deadline: std::time::Duration::from_secs(self.record_deadline_secs),
            ..monofs_nfs::Limits::default()
        }
    }
}

/// Fetcher settings shared by `monofs fetcher` and `monofs up`.
#[derive(clap::Args)]
pub struct FetcherTuning {
    /// Bound of the fetcher cache in GiB (fractions allowed); least recently
    /// used repositories and blobs are evicted beyond it. Evicted content is
    /// fetched again from its remote when needed.
    #[arg(long, default_value_t = 50.0)]
    max_cache_gb: f64,
    /// Cache entries unused for this many hours are evicted.
    #[arg(long, default_value_t = 2.0)]
    cache_age_hours: f64,
    /// Threads bringing the content of lazily ingested repositories to the
    /// nodes; 0 brings content only when it is first read.
    #[arg(long, default_value_t = 4)]
    prefetch_workers: usize,
    /// Longest one `git fetch` may run, in seconds.
    #[arg(long, default_value_t = 600)]
    fetch_timeout_secs: u64,
    /// GOPROXY to ingest Go modules from (http://, https:// or file:///dir).
    #[arg(long)]
    gomod_proxy: Option<String>,
    /// go.sum-format file that Go module ingests must match.
    #[arg(long)]
    gosum: Option<PathBuf>,
}

impl FetcherTuning {
    pub fn config(
        &self,
        listen: SocketAddr,
        cache_dir: PathBuf,
        cluster_key: monofs_net::key::ClusterKey,
    ) -> anyhow::Result<monofs_fetcher::FetcherConfig> {
        anyhow::ensure!(self.max_cache_gb > 0.0, "--max-cache-gb must be positive");
        anyhow::ensure!(
            self.cache_age_hours > 0.0,
            "--cache-age-hours must be positive"
        );
        anyhow::ensure!(
            self.prefetch_workers <= 256,
            "--prefetch-workers must be 0..=256"
        );
        let mut c = monofs_fetcher::FetcherConfig::new(listen, cache_dir, cluster_key);
        c.max_cache_bytes = (self.max_cache_gb * (1u64 << 30) as f64) as u64;
        c.cache_age = std::time::Duration::from_secs_f64(self.cache_age_hours * 3600.0);
        c.prefetch_workers = self.prefetch_workers;
        c.fetch_timeout = std::time::Duration::from_secs(self.fetch_timeout_secs.max(1));
        c.gomod_proxy = self.gomod_proxy.clone();
        c.gosum_file = self.gosum.clone();
        Ok(c)
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `HOSTNAME:HTTP_PORT`: unique per router as long as host names are.
pub fn default_router_id(http_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}:{http_port}", if host.is_empty() { "localhost" } else { host })
}

pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `--nodes`: the list itself, or `@FILE` holding it.
fn node_list(spec: &str) -> anyhow::Result<Vec<monofs_net::proto::NodeAddr>> {
    let text = match spec.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read the node list {file}: {e}"))?
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(","),
        None => spec.to_string(),
    };
    monofs_net::client::parse_nodes(&text).map_err(anyhow::Error::msg)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Up(a) => up::run(a),
        Cmd::Router(a) => {
            let nodes = node_list(&a.nodes)?;
            let h = monofs_router::start(monofs_router::RouterConfig {
                caches: monofs_router::CacheSizes { dir_bytes: a.dir_cache as usize, block_bytes: a.block_cache as usize },
                nfs_listen: SocketAddr::new(a.bind, a.port),
                portmap_port: a.portmap_port,
                http_listen: SocketAddr::new(a.bind, a.http_port),
                nodes,
                replication: a.replication_factor,
                fetchers: split_list(&a.fetchers),
                refresh_interval: a.refresh_interval.map(std::time::Duration::from_secs),
                nfs_limits: a.clients.limits(),
                cluster_key: a.key.load()?,
                admin_token: a
                    .admin_token_file
                    .as_deref()
                    .map(monofs_router::admin_token::AdminToken::load)
                    .transpose()?,
                exports: a.exports.load()?,
                health: monofs_router::health::HealthConfig {
                    interval: a.health_interval,
                    unhealthy_threshold: a.unhealthy_threshold,
                },
                router_id: a.router_id.unwrap_or_else(|| default_router_id(a.http_port)),
                repair: monofs_router::repair::RepairConfig {
                    rebalance_delay: a.rebalance_delay,
                    bandwidth: a.repair_bandwidth,
                    interval: a.repair_interval,
                },
            })?;
            up::wait_for_signal_reloading(&mut || {
                let Some(file) = a.nodes.strip_prefix('@') else {
                    tracing::warn!("SIGHUP: the node list was given on the command line; use --nodes @FILE to change it without a restart");
                    return;
                };
                match node_list(&a.nodes) {
                    Ok(nodes) => match h.router.set_nodes(nodes) {
                        Ok(()) => tracing::info!(file, "node list reloaded"),
                        Err(e) => tracing::error!(file, error = %e, "node list refused; keeping the old one"),
                    },
                    Err(e) => tracing::error!(file, error = %e, "cannot reload the node list; keeping the old one"),
                }
            });
            h.shutdown();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Node(a) => {
            let h = monofs_engine::start(monofs_engine::NodeConfig {
                addr: a.addr,
                node_id: a.node_id,
                db_path: a.db_path,
                shards: a.shards.unwrap_or_else(default_shards),
                cluster_key: a.key.load()?,
            })?;
            up::wait_for_signal();
            h.shutdown()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fetcher(a) => {
            let mut c = a
                .tuning
                .config(SocketAddr::new(a.bind, a.port), a.cache_dir, a.key.load()?)?;
            c.allow_local_sources = a.allow_local_sources;
            let h = monofs_fetcher::start(c)?;
            up::wait_for_signal();
            h.shutdown();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ingest(a) => ingest_cmd::run(&a),
        Cmd::Admin(c) => admin::run(c),
        Cmd::Ls(a) => client::ls(&a),
        Cmd::Cat(a) => client::cat(&a),
        Cmd::Stat(a) => client::stat(&a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("monofs: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
