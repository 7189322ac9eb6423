//! `monofs-bench hostile`: does one client hurt another? Against one server it measures a
//! victim client's GETATTR rate and p99 alone, then opens hostile connections — stuck
//! readers (64 pipelined 1 MiB READs each, replies never read), idle connections, and
//! half-sent records (1 MiB announced, 4 bytes sent) — and measures the victim again,
//! whether a fresh connection's NULL answers, and the server's RSS growth. With
//! `--peer ganesha` it starts MonoFS and nfs-ganesha on the same tree (as `compare` does)
//! and reports both from the same run. Reports; asserts nothing.

use crate::env;
use crate::hist::Hist;
use crate::load::{self, Target, Tree};
use crate::rpc::{self, SyncClient};
use crate::servers::{self, Ganesha, MonoFs};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// READs each stuck reader pipelines, and their size.
const STUCK_PIPELINE: u32 = 64;
const STUCK_READ: u32 = 1 << 20;
/// What a half-sent record announces, and how much of it is sent.
const HALF_ANNOUNCED: u32 = 1 << 20;
const HALF_SENT: &[u8] = b"\0\0\0\x01";
/// Longest a victim call or a connect may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the server's RSS is sampled while the hostile connections are open.
const RSS_SAMPLE: Duration = Duration::from_millis(200);
/// Unmeasured victim run before the unloaded measurement.
const VICTIM_WARMUP: Duration = Duration::from_secs(1);
/// Descriptors the tool wants: every hostile connection is one.
const WANTED_NOFILE: u64 = 16384;

#[derive(Args)]
pub struct HostileArgs {
    /// The server (not with --peer); --root must reach a file of at least 1 MiB.
    #[command(flatten)]
    srv: crate::ServerArgs,
    /// The server's process id, for its RSS (/proc/PID/status).
    #[arg(long)]
    pid: Option<u32>,
    /// Stuck readers.
    #[arg(long, default_value_t = 20)]
    stuck: usize,
    /// Idle connections.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Half-sent records.
    #[arg(long, default_value_t = 1000)]
    half: usize,
    /// Seconds of each victim measurement.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Local address of the victim's connections (e.g. 127.0.0.2: another client host).
    #[arg(long)]
    victim_bind: Option<IpAddr>,
    /// Local address of the hostile connections (the first one with --hostile-spread).
    #[arg(long)]
    hostile_bind: Option<IpAddr>,
    /// Spread the hostile connections round-robin over this many consecutive IPv4
    /// addresses from --hostile-bind (default 127.0.1.1): many hostile hosts, not one.
    #[arg(long, default_value_t = 1)]
    hostile_spread: u32,
    /// Start MonoFS and this peer on the same generated tree and measure both (ganesha).
    #[arg(long, value_parser = ["ganesha"])]
    peer: Option<String>,
    #[command(flatten)]
    cluster: env::ClusterArgs,
    /// Output directory with --peer (results.json, server logs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Default, Clone)]
pub struct Victim {
    pub getattr_per_s: f64,
    pub p99_us: f64,
    pub errors: u64,
}

#[derive(Serialize, Default)]
pub struct Outcome {
    pub target: String,
    pub unloaded: Victim,
    pub loaded: Victim,
    /// Loaded GETATTR rate over unloaded.
    pub rate_ratio: f64,
    pub fresh_null_ok: bool,
    pub fresh_null_ms: f64,
    pub after: Victim,
    pub after_null_ok: bool,
    /// Hostile connections asked for, and those the server still held at the measurement.
    pub stuck: (usize, usize),
    pub idle: (usize, usize),
    pub half: (usize, usize),
    pub rss_before_kb: Option<u64>,
    pub rss_peak_kb: Option<u64>,
    pub rss_growth_mb: Option<f64>,
}

pub fn main(a: HostileArgs) -> Result<()> {
    if a.peer.is_some() {
        if let Some(code) = env::enter_netns()? {
            std::process::exit(code);
        }
    }
    match monofs_nfs::raise_nofile_limit(WANTED_NOFILE) {
        Ok((b, n)) if n > b => eprintln!("bench: raised the open-file soft limit from {b} to {n}"),
        Ok((b, _)) if (b as usize) < a.stuck + a.idle + a.half + 64 => {
            eprintln!("bench: warning: open-file limit {b} is below the connections asked for")
        }
        Ok(_) => {}
        Err(e) => eprintln!("bench: warning: cannot raise the open-file limit: {e}"),
    }
    let outcomes = match &a.peer {
        None => vec![measure(&a, &a.srv.target("server"), a.pid)?],
        Some(_) => with_peer(&a)?,
    };
    let js = serde_json::to_string_pretty(&outcomes)?;
    match &a.json {
        Some(p) => std::fs::write(p, js).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{js}"),
    }
    Ok(())
}

/// MonoFS (`monofs up`) and nfs-ganesha on one generated tree, in this network namespace.
fn with_peer(a: &HostileArgs) -> Result<Vec<Outcome>> {
    if !env::in_netns() {
        bail!("--peer ganesha needs the private network namespace (run as root)");
    }
    let root = env::monofs_root()?;
    let out = a.out.clone().unwrap_or_else(|| root.join("target/bench/hostile"));
    std::fs::create_dir_all(&out)?;
    let bin = env::monofs_bin(&root, a.cluster.monofs_bin.as_deref())?;
    let repo = servers::gen_repos(&root, &root.join("target/bench/repos-smoke"), 2000, 16)?;
    let name = repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "repo".into());
    let export = out.join("export").join(&name);
    servers::checkout(&repo, &export)?;
    let mono = MonoFs::start(&bin, &out, a.cluster.nodes, a.cluster.shards)?;
    mono.ingest(&bin, &repo)?;
    let ganesha = Ganesha::start(&out, &export)?;
    let mut outcomes = vec![measure(a, &mono.target(&name), Some(mono.pid()))?];
    outcomes.push(measure(a, &ganesha.target(), Some(ganesha.pid()))?);
    Ok(outcomes)
}

fn measure(a: &HostileArgs, t: &Target, pid: Option<u32>) -> Result<Outcome> {
    let addr = resolve(&t.addr)?;
    let tree = Tree::discover(t, load::MAX_TREE_ENTRIES)?;
    let big = tree.big_file.map(|i| &tree.entries[i]).context("no regular file under the root")?;
    eprintln!("bench: {}: stuck readers READ {} ({} bytes)", t.name, String::from_utf8_lossy(&big.name), big.size);
    let fh = big.fh.clone();
    let dur = Duration::from_secs_f64(a.duration.clamp(0.2, 600.0));
    let mut o = Outcome { target: t.name.clone(), ..Outcome::default() };

    // Unmeasured first: warms caches and connection setup on the server.
    victim(addr, a.victim_bind, &fh, VICTIM_WARMUP)?;
    o.unloaded = victim(addr, a.victim_bind, &fh, dur)?;
    o.rss_before_kb = pid.and_then(rss_kb);
    let hostile = Hostile::open(addr, &hostile_sources(a)?, &fh, a.stuck, a.idle, a.half);
    // Let the server read what was sent and act on it.
    std::thread::sleep(Duration::from_secs(1));
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = pid.map(|pid| {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(RSS_SAMPLE);
            }
        })
    });
    o.loaded = victim(addr, a.victim_bind, &fh, dur)?;
    let t0 = Instant::now();
    o.fresh_null_ok = null(addr, a.victim_bind).is_ok();
    o.fresh_null_ms = t0.elapsed().as_secs_f64() * 1e3;
    (o.stuck, o.idle, o.half) = hostile.still_open();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    drop(hostile);
    if let (Some(before), p) = (o.rss_before_kb, peak.load(Ordering::Relaxed)) {
        o.rss_peak_kb = Some(p.max(before));
        o.rss_growth_mb = Some(p.saturating_sub(before) as f64 / 1024.0);
    }
    std::thread::sleep(Duration::from_secs(1));
    o.after = victim(addr, a.victim_bind, &fh, dur)?;
    o.after_null_ok = null(addr, a.victim_bind).is_ok();
    o.rate_ratio = if o.unloaded.getattr_per_s > 0.0 { o.loaded.getattr_per_s / o.unloaded.getattr_per_s } else { 0.0 };
    report(&o);
    Ok(o)
}

fn report(o: &Outcome) {
    let v = |v: &Victim| format!("{:>8.0} GETATTR/s p99 {:>7.0} us errors {}", v.getattr_per_s, v.p99_us, v.errors);
    eprintln!("{:8} unloaded {}", o.target, v(&o.unloaded));
    eprintln!(
        "{:8} loaded   {}  ({:.0} % of unloaded) with {}/{} stuck, {}/{} idle, {}/{} half-sent held by the server",
        o.target,
        v(&o.loaded),
        o.rate_ratio * 100.0,
        o.stuck.1,
        o.stuck.0,
        o.idle.1,
        o.idle.0,
        o.half.1,
        o.half.0
    );
    eprintln!(
        "{:8} fresh NULL {} in {:.1} ms; server RSS +{} MiB; afterwards {} (NULL {})",
        o.target,
        if o.fresh_null_ok { "answered" } else { "FAILED" },
        o.fresh_null_ms,
        o.rss_growth_mb.map(|m| format!("{m:.1}")).unwrap_or_else(|| "?".into()),
        v(&o.after),
        if o.after_null_ok { "answered" } else { "FAILED" }
    );
}

/// Local addresses of the hostile connections, used round-robin.
fn hostile_sources(a: &HostileArgs) -> Result<Vec<Option<IpAddr>>> {
    if a.hostile_spread <= 1 {
        return Ok(vec![a.hostile_bind]);
    }
    let first = match a.hostile_bind.unwrap_or(IpAddr::from([127, 0, 1, 1])) {
        IpAddr::V4(v) => u32::from(v),
        IpAddr::V6(_) => bail!("--hostile-spread takes an IPv4 --hostile-bind"),
    };
    Ok((0..a.hostile_spread).map(|k| Some(IpAddr::from(std::net::Ipv4Addr::from(first.wrapping_add(k))))).collect())
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()?.next().with_context(|| format!("{addr}: no address"))
}

/// A TCP connection from `local` (any address when `None`).
fn connect(server: SocketAddr, local: Option<IpAddr>) -> Result<TcpStream> {
    let Some(ip) = local else {
        return Ok(TcpStream::connect_timeout(&server, CALL_TIMEOUT)?);
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    let s = rt.block_on(async {
        let sock = if server.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.bind(SocketAddr::new(ip, 0))?;
        tokio::time::timeout(CALL_TIMEOUT, sock.connect(server))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// GETATTRs one at a time on one connection for `dur`.
fn victim(server: SocketAddr, local: Option<IpAddr>, fh: &[u8], dur: Duration) -> Result<Victim> {
    let s = connect(server, local).context("victim connection")?;
    let mut c = SyncClient::from_stream(s, CALL_TIMEOUT)?;
    let mut h = Hist::default();
    let mut errors = 0;
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        match c.getattr(fh) {
            Ok(_) => h.record(t.elapsed().as_nanos() as u64),
            Err(_) => {
                errors += 1;
                // A timed-out connection is out of step: start a fresh one.
                match connect(server, local).and_then(|s| SyncClient::from_stream(s, CALL_TIMEOUT)) {
                    Ok(n) => c = n,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
    Ok(Victim {
        getattr_per_s: h.count() as f64 / start.elapsed().as_secs_f64(),
        p99_us: h.quantile(0.99) / 1e3,
        errors,
    })
}

/// NULL on a new connection.
fn null(server: SocketAddr, local: Option<IpAddr>) -> Result<()> {
    let mut c = SyncClient::from_stream(connect(server, local)?, CALL_TIMEOUT)?;
    c.call(rpc::NFS_PROG, rpc::NFS_V3, 0, &[])?;
    Ok(())
}

/// Resident set of a process, in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Hostile {
    stuck: Vec<TcpStream>,
    idle: Vec<TcpStream>,
    half: Vec<TcpStream>,
    asked: (usize, usize, usize),
}

impl Hostile {
    /// Opens every hostile connection; those that fail to connect or to send count as
    /// refused.
    fn open(server: SocketAddr, sources: &[Option<IpAddr>], fh: &[u8], stuck: usize, idle: usize, half: usize) -> Hostile {
        let mut reads = Vec::new();
        for i in 0..STUCK_PIPELINE {
            rpc::call_record(&mut reads, 0x5000 + i, rpc::NFS_PROG, rpc::NFS_V3, rpc::PROC_READ, &rpc::args_read(fh, 0, STUCK_READ));
        }
        let mut half_rec = (HALF_ANNOUNCED | 0x8000_0000).to_be_bytes().to_vec();
        half_rec.extend_from_slice(HALF_SENT);
        let next = std::cell::Cell::new(0usize);
        let open = |n: usize, send: &[u8]| -> Vec<TcpStream> {
            (0..n)
                .filter_map(|_| {
                    let local = sources[next.get() % sources.len()];
                    next.set(next.get() + 1);
                    let mut s = connect(server, local).ok()?;
                    s.set_write_timeout(Some(CALL_TIMEOUT)).ok()?;
                    if !send.is_empty() {
                        s.write_all(send).ok()?;
                    }
                    Some(s)
                })
                .collect()
        };
        let h = Hostile { stuck: open(stuck, &reads), idle: open(idle, &[]), half: open(half, &half_rec), asked: (stuck, idle, half) };
        eprintln!(
            "bench: opened {} stuck readers, {} idle connections, {} half-sent records",
            h.stuck.len(),
            h.idle.len(),
            h.half.len()
        );
        h
    }

    /// (asked, still held by the server) per kind: a closed connection reads EOF or an
    /// error at once; an open one has nothing to read (idle, half) or replies (stuck).
    fn still_open(&self) -> ((usize, usize), (usize, usize), (usize, usize)) {
        let held = |v: &[TcpStream]| {
            v.iter()
                .filter(|s| {
                    let _ = s.set_nonblocking(true);
                    let mut b = [0u8; 1];
                    let r = match s.peek(&mut b) {
                        Ok(n) => n > 0,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    };
                    let _ = s.set_nonblocking(false);
                    r
                })
                .count()
        };
        ((self.asked.0, held(&self.stuck)), (self.asked.1, held(&self.idle)), (self.asked.2, held(&self.half)))
    }
}
