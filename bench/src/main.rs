//! `monofs-bench`: the MonoFS benchmark suite. Every figure is reported beside a peer
//! measured in the same run on the same machine (nfs-ganesha, raw loopback TCP, `git clone`,
//! fio). Benchmarks report; they never assert speed.

mod compare;
mod engine;
mod env;
mod hist;
mod hostile;
mod ingest;
mod load;
mod report;
mod rpc;
mod servers;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "monofs-bench", about = "MonoFS benchmark suite", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// NFSv3 load generator against one server (an independent client: its own ONC RPC code).
    Nfs(NfsArgs),
    /// The nfs workloads against MonoFS and nfs-ganesha (same tree, same run) and raw TCP.
    Compare(compare::CompareArgs),
    /// Time to first listing and to fully fetched of a generated repository, beside git clone.
    Ingest(ingest::IngestArgs),
    /// Does one client hurt another? A victim's GETATTR rate and p99 beside stuck readers,
    /// idle connections and half-sent records, and the server's RSS growth.
    Hostile(hostile::HostileArgs),
    /// Node engine GET/PUT at queue depths 1..256 beside fio (io_uring, O_DIRECT) on the same disk.
    Engine(engine::EngineArgs),
}

#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Connections (one load thread each).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Operations in flight per connection (calls multiplexed by xid).
    #[arg(long, default_value_t = 16)]
    pub depth: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds before (warms caches on both sides).
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Upper bound on operations per connection and workload.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_ops: u64,
    /// READDIRPLUS dircount and maxcount bytes.
    #[arg(long, default_value_t = 65536)]
    pub rdp_maxcount: u32,
}

impl LoadArgs {
    pub fn opts(&self) -> load::LoadOpts {
        load::LoadOpts {
            connections: self.connections,
            depth: self.depth,
            duration: Duration::from_secs_f64(self.duration.clamp(0.1, 3600.0)),
            warmup: Duration::from_secs_f64(self.warmup.clamp(0.0, 600.0)),
            max_ops: self.max_ops,
            rdp_maxcount: self.rdp_maxcount,
        }
    }
}

/// Which server an independent-client tool talks to.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// NFS server host:port (`nfs` also takes `raw`: the built-in raw-TCP peer, seq1m/read4k only).
    #[arg(long, default_value = "127.0.0.1:20490")]
    pub server: String,
    /// MOUNT server host:port (default: the NFS port, as MonoFS serves both on one).
    #[arg(long)]
    pub mount_server: Option<String>,
    /// Export path to MOUNT.
    #[arg(long, default_value = "/")]
    pub export: String,
    /// Path below the export to run in (e.g. local/content).
    #[arg(long, default_value = "")]
    pub root: String,
}

impl ServerArgs {
    pub fn target(&self, name: &str) -> load::Target {
        load::Target {
            name: name.into(),
            addr: self.server.clone(),
            mount_addr: self.mount_server.clone().unwrap_or_else(|| self.server.clone()),
            export: self.export.clone(),
            root: self.root.clone(),
        }
    }
}

#[derive(Args)]
struct NfsArgs {
    #[command(flatten)]
    srv: ServerArgs,
    /// Workloads, comma separated: getattr,lookup,readdirplus,read4k,seq1m,build or all.
    #[arg(long, default_value = "all")]
    workloads: String,
    #[command(flatten)]
    load: LoadArgs,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A fresh cluster key for the components a benchmark starts in this process.
pub fn bench_key() -> monofs_net::key::ClusterKey {
    monofs_net::key::ClusterKey::generate().expect("reading /dev/urandom")
}

pub fn parse_workloads(s: &str) -> Result<Vec<load::Kind>> {
    if s == "all" {
        return load::WORKLOADS.iter().map(|w| load::Kind::parse(w)).collect();
    }
    s.split(',').filter(|w| !w.is_empty()).map(load::Kind::parse).collect()
}

pub fn print_result(r: &load::LoadResult) {
    eprintln!(
        "{:8} {:12} {:>10.0} ops/s {:>9.1} MB/s {:>11.0} entries/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  errors {}{}",
        r.target,
        r.workload,
        r.ops_per_s,
        r.mb_per_s,
        r.entries_per_s,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.errors,
        r.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
}

fn nfs(a: NfsArgs) -> Result<()> {
    let kinds = parse_workloads(&a.workloads)?;
    let o = a.load.opts();
    let _sink;
    let (target, tree) = if a.srv.server == "raw" {
        let s = load::Sink::start()?;
        let t = load::Target { name: "raw-tcp".into(), addr: s.addr.clone(), mount_addr: s.addr.clone(), export: "/".into(), root: String::new() };
        _sink = s;
        (t, load::Tree::synthetic(1 << 30))
    } else {
        let t = a.srv.target(&a.srv.server);
        let tree = load::Tree::discover(&t, load::MAX_TREE_ENTRIES)?;
        eprintln!("bench: {}: {}", t.name, tree.summary());
        (t, tree)
    };
    let mut results = Vec::new();
    for k in kinds {
        let r = load::run(&target, &tree, k, &o)?;
        print_result(&r);
        results.push(r);
    }
    let js = serde_json::to_string_pretty(&results)?;
    match a.json {
        Some(p) => std::fs::write(&p, js).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{js}"),
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Nfs(a) => nfs(a),
        Cmd::Compare(a) => compare::main(a),
        Cmd::Ingest(a) => ingest::main(a),
        Cmd::Engine(a) => engine::main(a),
        Cmd::Hostile(a) => hostile::main(a),
    };
    if let Err(e) = r {
        eprintln!("monofs-bench: {e:#}");
        std::process::exit(1);
    }
}
