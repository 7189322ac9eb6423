//! The MonoFS storage node.
//!
//! Thread-per-core: shard `i` is one glommio `LocalExecutor` on its own thread
//! (`monofs-shard-i`). It owns the keys with `hrw::shard_of(key, shards) == i`,
//! listens on `addr.port() + i`, serves its connections itself, and keeps its
//! records in its own append-only log `db_path/shard-<i>.log`, written and read
//! with O_DIRECT through io_uring (see [`log`] for the record format). No request
//! crosses executors.

pub mod damage;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod log;
pub mod metrics;
pub mod server;
mod uring;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use glommio::{LocalExecutorBuilder, Placement};

pub use metrics::{NodeMetrics, ShardStats};
pub use uring::check_io_uring;

use log::ShardLog;
use metrics::ShardMetrics;
use server::Shard;

/// Memory each executor preallocates and registers with io_uring for storage
/// I/O. Kept small: RLIMIT_MEMLOCK may be only 8 MiB for the whole process.
/// Larger buffers (1 MiB chunks, batches) come from the ordinary allocator.
pub const IO_MEMORY: usize = 1 << 20;
/// Submission queue depth of each executor's rings.
pub const RING_DEPTH: usize = 128;
/// How long a task may run before the executor polls for I/O (glommio's default
/// is 100 ms): a long scan of the index (DIGEST, LIST_KEYS) yields at its next
/// check after this, and a GET that arrived meanwhile is then read and served.
pub const PREEMPT_TIMER: Duration = Duration::from_millis(5);
/// Most shards per node (ports `addr.port() .. addr.port() + shards`).
pub const MAX_SHARDS: usize = 256;
/// How often an executor checks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(20);

pub struct NodeConfig {
    /// Shard `i` listens on `addr.port() + i`.
    pub addr: SocketAddr,
    pub node_id: String,
    pub db_path: PathBuf,
    /// At least 1.
    pub shards: usize,
    /// The cluster's shared secret: only holders may talk to this node.
    pub cluster_key: monofs_net::key::ClusterKey,
}

pub struct NodeHandle {
    threads: Vec<(usize, JoinHandle<anyhow::Result<()>>)>,
    stop: Arc<AtomicBool>,
    metrics: Vec<Arc<ShardMetrics>>,
    addr: SocketAddr,
}

impl NodeHandle {
    /// Ask every executor to stop (in-flight writes finish first) and join them.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        join_all(std::mem::take(&mut self.threads))
    }

    /// Block until the executors exit: after a fatal error in any shard (which
    /// stops the others), or after another thread asked them to stop.
    pub fn wait(mut self) -> anyhow::Result<()> {
        join_all(std::mem::take(&mut self.threads))
    }

    /// Counters of every shard.
    pub fn metrics(&self) -> NodeMetrics {
        NodeMetrics { shards: self.metrics.iter().enumerate().map(|(i, m)| m.snapshot(i)).collect() }
    }

    /// The address of shard 0 (what clients are given).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shards(&self) -> usize {
        self.metrics.len()
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.store(true, Ordering::SeqCst);
            if let Err(e) = join_all(std::mem::take(&mut self.threads)) {
                tracing::error!("MonoFS node stopped with an error: {e:#}");
            }
        }
    }
}

fn join_all(threads: Vec<(usize, JoinHandle<anyhow::Result<()>>)>) -> anyhow::Result<()> {
    let mut first_err = None;
    for (i, t) in threads {
        let r = match t.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow!("shard {i} thread panicked")),
        };
        if let Err(e) = r {
            tracing::error!(shard = i, "shard stopped: {e:#}");
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Opens/creates every shard's log (rebuilding its index), binds every shard's
/// port, and returns once all shards accept connections. Errors if a port is
/// taken, the db path is unusable, or io_uring is unavailable.
pub fn start(cfg: NodeConfig) -> anyhow::Result<NodeHandle> {
    check_io_uring().map_err(|e| anyhow!(e))?;
    if cfg.shards == 0 || cfg.shards > MAX_SHARDS {
        bail!("shards must be between 1 and {MAX_SHARDS}, got {}", cfg.shards);
    }
    if cfg.addr.port() as usize + cfg.shards - 1 > u16::MAX as usize {
        bail!("ports {}..{} do not fit below 65536", cfg.addr.port(), cfg.addr.port() as usize + cfg.shards);
    }
    if cfg.node_id.is_empty() {
        bail!("node id must not be empty");
    }
    std::fs::create_dir_all(&cfg.db_path)
        .with_context(|| format!("creating db directory {}", cfg.db_path.display()))?;
    log::check_db(&cfg.db_path, cfg.shards)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut threads = Vec::with_capacity(cfg.shards);
    let mut metrics = Vec::with_capacity(cfg.shards);
    for i in 0..cfg.shards {
        let m = Arc::new(ShardMetrics::default());
        metrics.push(m.clone());
        let ctx = ShardCtx {
            index: i as u16,
            shards: cfg.shards as u16,
            node_id: cfg.node_id.clone(),
            db_path: cfg.db_path.clone(),
            addr: SocketAddr::new(cfg.addr.ip(), cfg.addr.port() + i as u16),
            stop: stop.clone(),
            metrics: m,
            frame_key: monofs_net::auth::FrameKey::new(&cfg.cluster_key),
        };
        let tx = ready_tx.clone();
        let spawned = std::thread::Builder::new().name(format!("monofs-shard-{i}")).spawn(move || run_shard(ctx, tx));
        match spawned {
            Ok(t) => threads.push((i, t)),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                let _ = join_all(threads);
                bail!("spawning thread for shard {i}: {e}");
            }
        }
    }
    drop(ready_tx);

    let mut ready = 0;
    let mut failure: Option<String> = None;
    while ready < cfg.shards {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => ready += 1,
            Ok((i, Err(e))) => {
                failure = Some(format!("shard {i}: {e}"));
                break;
            }
            Err(_) => {
                failure = Some("a shard thread exited before it was ready".into());
                break;
            }
        }
    }
    let handle = NodeHandle { threads, stop, metrics, addr: cfg.addr };
    if let Some(f) = failure {
        let _ = handle.shutdown();
        bail!("starting MonoFS node '{}': {f}", cfg.node_id);
    }
    tracing::info!(node = %cfg.node_id, addr = %cfg.addr, shards = cfg.shards, "MonoFS node ready");
    Ok(handle)
}

struct ShardCtx {
    index: u16,
    shards: u16,
    node_id: String,
    db_path: PathBuf,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    metrics: Arc<ShardMetrics>,
    frame_key: monofs_net::auth::FrameKey,
}

/// Body of a shard thread: build the executor, then serve until asked to stop.
fn run_shard(ctx: ShardCtx, ready: mpsc::Sender<(usize, Result<(), String>)>) -> anyhow::Result<()> {
    let i = ctx.index as usize;
    let ex = match LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("monofs-shard-{i}"))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH)
        .preempt_timer(PREEMPT_TIMER)
        .make()
    {
        Ok(ex) => ex,
        Err(e) => {
            let msg = format!("creating glommio executor: {e}");
            let _ = ready.send((i, Err(msg.clone())));
            bail!(msg);
        }
    };
    let stop = ctx.stop.clone();
    let r = ex.run(shard_main(ctx, ready));
    if r.is_err() {
        // A fatal error in one shard stops the whole node.
        stop.store(true, Ordering::SeqCst);
    }
    r
}

async fn shard_main(ctx: ShardCtx, ready: mpsc::Sender<(usize, Result<(), String>)>) -> anyhow::Result<()> {
    let i = ctx.index as usize;
    let setup = async {
        let (log, stats) = ShardLog::open(&ctx.db_path, i, ctx.shards as usize, log::TABLE_CACHE_BYTES, ctx.metrics.clone()).await?;
        // std binds without SO_REUSEPORT (glommio's bind sets it), so a port
        // already in use is an error rather than silently shared.
        let std_listener = std::net::TcpListener::bind(ctx.addr).with_context(|| format!("binding {}", ctx.addr))?;
        // SAFETY: the descriptor is a bound, listening socket we own.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
        anyhow::Ok((log, stats, listener))
    };
    let (log, stats, listener) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send((i, Err(format!("{e:#}"))));
            return Err(e);
        }
    };
    tracing::info!(
        shard = i,
        port = ctx.addr.port(),
        records = stats.records,
        keys = stats.keys,
        log_bytes = stats.log_bytes,
        cut_bytes = stats.cut_bytes,
        damaged = stats.damaged,
        table_bytes = stats.table_bytes,
        "shard serving"
    );
    let shard = Rc::new(Shard::new(ctx.index, ctx.shards, ctx.node_id.clone(), log, ctx.metrics.clone(), ctx.frame_key.clone()));
    let _ = ready.send((i, Ok(())));
    drop(ready);

    let stop = ctx.stop.clone();
    let watch = async move {
        while !stop.load(Ordering::SeqCst) {
            glommio::timer::sleep(STOP_POLL).await;
        }
        Ok(())
    };
    let served = futures_lite::future::or(server::accept_loop(shard.clone(), listener), watch).await;
    // Let a batch being written finish (it is acknowledged only once durable)
    // and refuse any later one.
    shard.log.quiesce().await;
    tracing::info!(shard = i, "shard stopped");
    served
}
