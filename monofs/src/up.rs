//! `monofs up`: the whole cluster on one machine. The same components as in
//! production — nodes, a fetcher, a router — each on its own loopback port and
//! speaking the same protocols; only the process boundary is missing.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use monofs_net::proto::NodeAddr;

use crate::ingest_cmd::{self, IngestArgs};

/// The cluster key's file in the data directory, created on first start.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// The router's admin token's file in the data directory, created on first
/// start; `monofs ingest` and `monofs admin` read it from the default data
/// directory when they talk to a router on loopback.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Longest silence the ingest client accepts from the router.
pub const INGEST_SILENCE: Duration = Duration::from_secs(15 * 60);

#[derive(clap::Args)]
pub struct UpArgs {
    /// Data directory (nodes' logs, fetcher cache). Default: $MONOFS_DATA_DIR,
    /// else $XDG_DATA_HOME/monofs, else ~/.local/share/monofs.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Repositories to ingest once the cluster is up (repeatable). What was
    /// ingested before is served again without this.
    #[arg(long)]
    ingest: Vec<String>,
    /// Ref for --ingest (branch, tag or commit).
    #[arg(long = "ref", default_value = "")]
    git_ref: String,
    /// Storage nodes to run.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Shards (glommio executors) per node.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Copies of every record.
    #[arg(long, default_value_t = 1)]
    replication_factor: usize,
    /// NFS + MOUNT + PORTMAP port.
    #[arg(long, default_value_t = 20490)]
    port: u16,
    /// Also answer PORTMAP here (111 for a plain `mount -t nfs`; needs root).
    #[arg(long)]
    portmap_port: Option<u16>,
    /// HTTP API port.
    #[arg(long, default_value_t = 20480)]
    http_port: u16,
    /// First node port; node k uses node_port + 10·k (+ shard).
    #[arg(long, default_value_t = 20500)]
    node_port: u16,
    /// Fetcher port.
    #[arg(long, default_value_t = 20600)]
    fetcher_port: u16,
    /// Address the router listens on (0.0.0.0 to serve other machines).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Refresh every Git repository this often, in seconds.
    #[arg(long)]
    refresh_interval: Option<u64>,
    /// How --ingest stores file content: lazy (listable at once, content on
    /// first read and by prefetch) or eager (all content before it returns).
    #[arg(long, default_value = "lazy", value_parser = ["lazy", "eager"])]
    content: String,
    #[command(flatten)]
    fetcher: crate::FetcherTuning,
    #[command(flatten)]
    exports: crate::ExportsArg,
    #[command(flatten)]
    clients: crate::ClientLimits,
    /// Exit after the ingests instead of serving (for scripts).
    #[arg(long)]
    exit_after_ingest: bool,
}

/// Wait for SIGINT or SIGTERM; run `reload` on each SIGHUP meanwhile.
pub fn wait_for_signal_reloading(reload: &mut dyn FnMut()) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).expect("signal handlers");
    for sig in signals.forever() {
        if sig == SIGHUP {
            reload();
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        return;
    }
}

pub fn wait_for_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).expect("signal handlers");
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
}

pub fn run(a: UpArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.nodes >= 1 && a.nodes <= 16, "--nodes must be 1..=16");
    anyhow::ensure!(
        a.shards >= 1 && a.shards <= 8,
        "--shards must be 1..=8 (ports node_port+10k+shard)"
    );
    // Before anything starts: a broken exports file must not leave nodes running.
    let exports = a.exports.load()?;
    let data = a
        .data_dir
        .clone()
        .unwrap_or_else(crate::datadir::default_data_dir);
    std::fs::create_dir_all(&data)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data.display()))?;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let key_file = data.join(CLUSTER_KEY_FILE);
    let cluster_key = monofs_net::key::ClusterKey::load_or_create(&key_file)?;
    let token_file = data.join(ADMIN_TOKEN_FILE);
    let admin_token = monofs_router::admin_token::AdminToken::load_or_create(&token_file)?;

    let mut nodes = Vec::new();
    let mut node_addrs = Vec::new();
    for k in 0..a.nodes {
        let id = format!("n{}", k + 1);
        let addr = SocketAddr::new(loopback, a.node_port + 10 * k as u16);
        let h = monofs_engine::start(monofs_engine::NodeConfig {
            addr,
            node_id: id.clone(),
            db_path: data.join("nodes").join(&id),
            shards: a.shards,
            cluster_key: cluster_key.clone(),
        })
        .map_err(|e| anyhow::anyhow!("node {id}: {e:#}"))?;
        nodes.push(h);
        node_addrs.push(NodeAddr {
            id,
            addr: addr.to_string(),
        });
    }
    let mut fetcher_cfg = a.fetcher.config(
        SocketAddr::new(loopback, a.fetcher_port),
        data.join("fetcher"),
        cluster_key.clone(),
    )?;
    // Its fetcher runs as the user who started it and takes ingests only through the
    // router's token on loopback: local sources give no one more than that user has.
    fetcher_cfg.allow_local_sources = true;
    let fetcher = monofs_fetcher::start(fetcher_cfg).map_err(|e| anyhow::anyhow!("fetcher: {e:#}"))?;
    let router = monofs_router::start(monofs_router::RouterConfig {
        nfs_listen: SocketAddr::new(a.bind, a.port),
        portmap_port: a.portmap_port,
        http_listen: SocketAddr::new(loopback, a.http_port),
        nodes: node_addrs,
        replication: a.replication_factor,
        fetchers: vec![fetcher.local_addr().to_string()],
        refresh_interval: a.refresh_interval.map(Duration::from_secs),
        nfs_limits: a.clients.limits(),
        cluster_key,
        admin_token: Some(admin_token),
        exports,
        health: Default::default(),
        router_id: crate::default_router_id(a.http_port),
        repair: Default::default(),
        caches: Default::default(),
    })
    .map_err(|e| anyhow::anyhow!("router: {e:#}"))?;

    let router_url = format!("http://{}", router.http_addr);
    eprintln!("monofs up: data in {}", data.display());
    eprintln!("monofs up: HTTP API {router_url} (admin token in {})", token_file.display());
    let mut code = ExitCode::SUCCESS;
    for url in &a.ingest {
        let r = ingest_cmd::run(&IngestArgs {
            url: Some(url.clone()),
            go: None,
            git_ref: a.git_ref.clone(),
            source_id: String::new(),
            content: a.content.clone(),
            router: router_url.clone(),
            json: false,
            token: crate::ingest_cmd::TokenArg {
                admin_token_file: Some(token_file.clone()),
            },
        })?;
        if r != ExitCode::SUCCESS {
            code = r;
        }
    }
    let host = if a.bind.is_unspecified() {
        loopback
    } else {
        a.bind
    };
    let port = router.nfs_addr.port();
    let opts = if a.portmap_port == Some(111) && port == 2049 {
        "vers=3,nolock".to_string()
    } else {
        format!("vers=3,proto=tcp,port={port},mountport={port},nolock")
    };
    println!("mount -t nfs -o {opts} {host}:/ /mnt/monofs");
    if !a.exit_after_ingest {
        eprintln!("monofs up: serving; Ctrl-C to stop");
        wait_for_signal();
    }
    router.shutdown();
    fetcher.shutdown();
    for n in nodes {
        n.shutdown()?;
    }
    Ok(code)
}
