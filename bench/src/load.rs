//! The NFSv3 load generator: tree discovery, the workloads, and a pipelined driver that keeps
//! `depth` operations in flight on each connection (calls multiplexed by xid over one socket).

use crate::hist::Hist;
use crate::rpc::{self, SyncClient};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const WORKLOADS: [&str; 6] = ["getattr", "lookup", "readdirplus", "read4k", "seq1m", "build"];
/// Largest depth per connection (the xid carries the slot in its low bits).
pub const MAX_DEPTH: usize = 1024;
/// Entries the tree discovery reads at most (bounds setup time and memory).
pub const MAX_TREE_ENTRIES: usize = 500_000;
/// Files read whole by the build workload are at most this big.
pub const BUILD_MAX_FILE: u64 = 256 * 1024;
/// How long one reply may take before the run is abandoned.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the load goes: NFS on `addr`, MOUNT on `mount_addr`, `export` mounted, then `root`
/// (slash separated) looked up from there.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: String,
    pub mount_addr: String,
    pub export: String,
    pub root: String,
}

pub struct Dir {
    pub fh: Vec<u8>,
    pub entries: usize,
}

pub struct Entry {
    pub dir: usize,
    pub name: Vec<u8>,
    pub fh: Vec<u8>,
    pub ftype: u32,
    pub size: u64,
}

/// What the workloads pick from: every directory and entry under the root.
pub struct Tree {
    pub dirs: Vec<Dir>,
    pub entries: Vec<Entry>,
    pub big_dir: usize,
    pub big_file: Option<usize>,
    pub small_files: Vec<usize>,
}

impl Tree {
    pub fn discover(t: &Target, max_entries: usize) -> Result<Tree> {
        let mut c = SyncClient::connect(&t.mount_addr)?;
        let mut fh = c.mount(&t.export).with_context(|| format!("{}: MOUNT {}", t.name, t.export))?;
        if t.mount_addr != t.addr {
            c = SyncClient::connect(&t.addr)?;
        }
        for comp in t.root.split('/').filter(|s| !s.is_empty()) {
            fh = c.lookup(&fh, comp.as_bytes()).with_context(|| format!("{}: walking {}", t.name, t.root))?.0;
        }
        let mut dirs = vec![Dir { fh, entries: 0 }];
        let mut entries = Vec::new();
        let mut i = 0;
        while i < dirs.len() && entries.len() < max_entries {
            let list = c.readdirplus_all(&dirs[i].fh.clone(), max_entries - entries.len())?;
            dirs[i].entries = list.len();
            for e in list {
                let (fh, attr) = match (e.fh, e.attr) {
                    (Some(fh), Some(a)) => (fh, a),
                    _ => {
                        let (fh, a) = c.lookup(&dirs[i].fh, &e.name)?;
                        let a = match a {
                            Some(a) => a,
                            None => c.getattr(&fh)?,
                        };
                        (fh, a)
                    }
                };
                if attr.ftype == rpc::NF3DIR {
                    dirs.push(Dir { fh: fh.clone(), entries: 0 });
                }
                entries.push(Entry { dir: i, name: e.name, fh, ftype: attr.ftype, size: attr.size });
            }
            i += 1;
        }
        let big_dir = (0..dirs.len()).max_by_key(|&d| dirs[d].entries).unwrap_or(0);
        let files: Vec<usize> = (0..entries.len()).filter(|&e| entries[e].ftype == rpc::NF3REG).collect();
        let big_file = files.iter().copied().max_by_key(|&e| entries[e].size);
        let small_files = files.iter().copied().filter(|&e| entries[e].size <= BUILD_MAX_FILE).collect();
        Ok(Tree { dirs, entries, big_dir, big_file, small_files })
    }

    /// One file of `size` bytes (for the raw TCP peer, which serves any handle).
    pub fn synthetic(size: u64) -> Tree {
        Tree {
            dirs: vec![Dir { fh: b"root".to_vec(), entries: 1 }],
            entries: vec![Entry { dir: 0, name: b"big".to_vec(), fh: b"big-file".to_vec(), ftype: rpc::NF3REG, size }],
            big_dir: 0,
            big_file: Some(0),
            small_files: vec![0],
        }
    }

    pub fn summary(&self) -> String {
        let bf = self.big_file.map(|e| self.entries[e].size).unwrap_or(0);
        format!(
            "{} dirs, {} entries, largest dir {} entries, largest file {} bytes, {} small files",
            self.dirs.len(),
            self.entries.len(),
            self.dirs[self.big_dir].entries,
            bf,
            self.small_files.len()
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Getattr,
    Lookup,
    Readdirplus,
    Read4k,
    Seq1m,
    Build,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "getattr" => Kind::Getattr,
            "lookup" => Kind::Lookup,
            "readdirplus" => Kind::Readdirplus,
            "read4k" => Kind::Read4k,
            "seq1m" => Kind::Seq1m,
            "build" => Kind::Build,
            _ => bail!("unknown workload {s:?} (one of {})", WORKLOADS.join(", ")),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Getattr => "getattr",
            Kind::Lookup => "lookup",
            Kind::Readdirplus => "readdirplus",
            Kind::Read4k => "read4k",
            Kind::Seq1m => "seq1m",
            Kind::Build => "build",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOpts {
    pub connections: usize,
    pub depth: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Stop after this many operations per connection (bounds every loop in count too).
    pub max_ops: u64,
    pub rdp_maxcount: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    pub target: String,
    pub workload: String,
    pub connections: usize,
    pub depth: usize,
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub entries_per_s: f64,
    pub rpcs_per_s: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Latency,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Default, Clone)]
struct Slot {
    xid: u32,
    started: Option<Instant>,
    phase: u8,
    entry: usize,
    fh: Vec<u8>,
    off: u64,
    cookie: u64,
    verf: [u8; 8],
}

#[derive(Default)]
struct Counts {
    ops: u64,
    rpcs: u64,
    bytes: u64,
    entries: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Hist,
}

/// The next call of an operation: (procedure, arguments).
type Call = (u32, Vec<u8>);

struct Work<'a> {
    kind: Kind,
    tree: &'a Tree,
    rng: Rng,
    rdp_maxcount: u32,
}

impl Work<'_> {
    fn begin(&mut self, s: &mut Slot, slot_index: usize, nslots: usize) -> Call {
        let t = self.tree;
        s.phase = 0;
        match self.kind {
            Kind::Getattr => {
                let n = t.entries.len() + t.dirs.len();
                let i = self.rng.below(n);
                let fh = if i < t.entries.len() { &t.entries[i].fh } else { &t.dirs[i - t.entries.len()].fh };
                (rpc::PROC_GETATTR, rpc::args_fh(fh))
            }
            Kind::Lookup => {
                let e = &t.entries[self.rng.below(t.entries.len())];
                (rpc::PROC_LOOKUP, rpc::args_lookup(&t.dirs[e.dir].fh, &e.name))
            }
            Kind::Readdirplus => {
                let d = &t.dirs[t.big_dir];
                (rpc::PROC_READDIRPLUS, rpc::args_readdirplus(&d.fh, s.cookie, s.verf, self.rdp_maxcount, self.rdp_maxcount))
            }
            Kind::Read4k => {
                let e = &t.entries[t.big_file.unwrap()];
                let blocks = (e.size / 4096).max(1);
                let off = (self.rng.next() % blocks) * 4096;
                (rpc::PROC_READ, rpc::args_read(&e.fh, off, 4096))
            }
            Kind::Seq1m => {
                let e = &t.entries[t.big_file.unwrap()];
                if s.off == 0 && s.phase == 0 && s.entry == 0 && s.fh.is_empty() {
                    // spread the slots over the file, 1 MiB aligned
                    let mibs = (e.size >> 20).max(1);
                    s.off = (mibs * slot_index as u64 / nslots as u64) << 20;
                    s.fh = e.fh.clone();
                }
                if s.off >= e.size {
                    s.off = 0;
                }
                (rpc::PROC_READ, rpc::args_read(&e.fh, s.off, 1 << 20))
            }
            Kind::Build => {
                s.entry = t.small_files[self.rng.below(t.small_files.len())];
                let e = &t.entries[s.entry];
                s.off = 0;
                (rpc::PROC_LOOKUP, rpc::args_lookup(&t.dirs[e.dir].fh, &e.name))
            }
        }
    }

    /// Consumes one reply; Some(call) continues the operation, None completes it.
    fn reply(&mut self, s: &mut Slot, body: &[u8], c: &mut Counts) -> Result<Option<Call>> {
        c.rpcs += 1;
        match self.kind {
            Kind::Getattr => {
                rpc::res_getattr(body)?;
                Ok(None)
            }
            Kind::Lookup => {
                rpc::res_lookup(body)?;
                Ok(None)
            }
            Kind::Readdirplus => {
                let r = rpc::res_readdirplus(body, false);
                let (page, n, last) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        s.cookie = 0;
                        s.verf = [0; 8];
                        return Err(e);
                    }
                };
                c.entries += n as u64;
                if page.eof || n == 0 {
                    s.cookie = 0;
                    s.verf = [0; 8];
                } else {
                    s.cookie = last;
                    s.verf = page.verf;
                }
                Ok(None)
            }
            Kind::Read4k => {
                let (n, _) = rpc::res_read(body)?;
                c.bytes += n as u64;
                Ok(None)
            }
            Kind::Seq1m => {
                let (n, eof) = rpc::res_read(body)?;
                c.bytes += n as u64;
                s.off += 1 << 20;
                if eof {
                    s.off = 0;
                }
                Ok(None)
            }
            Kind::Build => {
                let e = &self.tree.entries[s.entry];
                match s.phase {
                    0 => {
                        let (fh, _) = rpc::res_lookup(body)?;
                        s.fh = fh;
                        s.phase = 1;
                        Ok(Some((rpc::PROC_ACCESS, rpc::args_access(&s.fh))))
                    }
                    1 => {
                        rpc::res_access(body)?;
                        s.phase = 2;
                        Ok(Some((rpc::PROC_GETATTR, rpc::args_fh(&s.fh))))
                    }
                    2 => {
                        rpc::res_getattr(body)?;
                        s.phase = 3;
                        Ok(Some((rpc::PROC_READ, rpc::args_read(&s.fh, 0, (e.size.max(1) as u32).min(1 << 20)))))
                    }
                    _ => {
                        let (n, eof) = rpc::res_read(body)?;
                        c.bytes += n as u64;
                        s.off += n as u64;
                        if eof || n == 0 || s.off >= e.size {
                            Ok(None)
                        } else {
                            Ok(Some((rpc::PROC_READ, rpc::args_read(&s.fh, s.off, 1 << 20))))
                        }
                    }
                }
            }
        }
    }
}

/// Runs one workload against one target and returns the merged result.
pub fn run(target: &Target, tree: &Tree, kind: Kind, o: &LoadOpts) -> Result<LoadResult> {
    match kind {
        Kind::Read4k | Kind::Seq1m if tree.big_file.is_none() => bail!("{}: no regular file to read", target.name),
        Kind::Build if tree.small_files.is_empty() => bail!("{}: no small files", target.name),
        Kind::Lookup if tree.entries.is_empty() => bail!("{}: empty tree", target.name),
        _ => {}
    }
    if o.depth == 0 || o.depth > MAX_DEPTH || o.connections == 0 {
        bail!("depth must be 1..={MAX_DEPTH} and connections at least 1");
    }
    let start = Instant::now();
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration;
    let abort = AtomicBool::new(false);
    let results: Vec<Result<Counts>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..o.connections)
            .map(|ci| {
                let abort = &abort;
                sc.spawn(move || {
                    let r = drive(target, tree, kind, o, ci, measure_from, end);
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("load thread panicked")))).collect()
    });
    let mut total = Counts::default();
    for r in results {
        let c = r?;
        total.ops += c.ops;
        total.rpcs += c.rpcs;
        total.bytes += c.bytes;
        total.entries += c.entries;
        total.errors += c.errors;
        if total.first_error.is_none() {
            total.first_error = c.first_error;
        }
        total.hist.merge(&c.hist);
    }
    let secs = o.duration.as_secs_f64().min(end.saturating_duration_since(measure_from).as_secs_f64()).max(1e-9);
    Ok(LoadResult {
        target: target.name.clone(),
        workload: kind.name().to_string(),
        connections: o.connections,
        depth: o.depth,
        seconds: secs,
        ops: total.ops,
        ops_per_s: total.ops as f64 / secs,
        mb_per_s: total.bytes as f64 / secs / 1e6,
        entries_per_s: total.entries as f64 / secs,
        rpcs_per_s: total.rpcs as f64 / secs,
        errors: total.errors,
        first_error: total.first_error,
        latency: Latency {
            p50_us: total.hist.quantile(0.5) / 1e3,
            p99_us: total.hist.quantile(0.99) / 1e3,
            p999_us: total.hist.quantile(0.999) / 1e3,
            mean_us: total.hist.mean() / 1e3,
            max_us: total.hist.max() as f64 / 1e3,
        },
    })
}

fn drive(t: &Target, tree: &Tree, kind: Kind, o: &LoadOpts, ci: usize, measure_from: Instant, end: Instant) -> Result<Counts> {
    let stream = TcpStream::connect(&t.addr).with_context(|| format!("{}: connecting to {}", t.name, t.addr))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let mut work = Work { kind, tree, rng: Rng(0x9E37_79B9_7F4A_7C15 ^ ((ci as u64 + 1) << 32) ^ 0x5bd1), rdp_maxcount: o.rdp_maxcount };
    let mut slots = vec![Slot::default(); o.depth];
    let mut c = Counts::default();
    let mut scratch = Counts::default();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut gen: u32 = 1;
    let mut xid_for = |slot: usize| {
        gen = gen.wrapping_add(1) & 0x1f_ffff;
        (gen << 10) | slot as u32
    };
    let mut inflight = 0usize;
    let mut started_ops = 0u64;
    for (i, s) in slots.iter_mut().enumerate() {
        let (p, a) = work.begin(s, i, o.depth);
        s.xid = xid_for(i);
        s.started = Some(Instant::now());
        rpc::call_record(&mut out, s.xid, rpc::NFS_PROG, rpc::NFS_V3, p, &a);
        inflight += 1;
        started_ops += 1;
    }
    w.write_all(&out)?;
    out.clear();
    let mut buf = Vec::with_capacity(1 << 20);
    while inflight > 0 {
        rpc::read_record(&mut r, &mut buf).with_context(|| format!("{}: reading a reply", t.name))?;
        let (xid, at) = rpc::reply_header(&buf)?;
        let si = (xid & 0x3ff) as usize;
        if si >= slots.len() || slots[si].xid != xid {
            bail!("{}: reply with unexpected xid {xid:#x}", t.name);
        }
        let now = Instant::now();
        let s = &mut slots[si];
        // bytes, entries and RPCs count only inside the measured window, like operations
        let measuring = now >= measure_from && now <= end;
        let sink = &mut scratch;
        let counts = if measuring { &mut c } else { sink };
        let next = match work.reply(s, &buf[at..], counts) {
            Ok(n) => n,
            Err(e) => {
                if now >= measure_from {
                    c.errors += 1;
                    c.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
                None
            }
        };
        let call = match next {
            Some(call) => Some(call),
            None => {
                let st = s.started.take().unwrap();
                if st >= measure_from && now <= end {
                    c.ops += 1;
                    c.hist.record(now.duration_since(st).as_nanos() as u64);
                }
                if now < end && started_ops < o.max_ops {
                    started_ops += 1;
                    s.started = Some(now);
                    Some(work.begin(s, si, o.depth))
                } else {
                    None
                }
            }
        };
        match call {
            Some((p, a)) => {
                s.xid = xid_for(si);
                rpc::call_record(&mut out, s.xid, rpc::NFS_PROG, rpc::NFS_V3, p, &a);
            }
            None => inflight -= 1,
        }
        if r.buffer().is_empty() && !out.is_empty() {
            w.write_all(&out)?;
            out.clear();
        }
        if Instant::now() > end + REPLY_TIMEOUT {
            bail!("{}: replies still outstanding {REPLY_TIMEOUT:?} after the end", t.name);
        }
    }
    Ok(c)
}

/// The raw-TCP peer: answers every call with a successful READ reply of the requested
/// count (zeros), over the same record marking. Measures what loopback TCP and this client
/// can move, i.e. the ceiling for the seq1m workload.
pub struct Sink {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> Result<Sink> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        l.set_nonblocking(true)?;
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let _ = sink_conn(s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Sink { addr, stop })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sink_conn(s: TcpStream) -> Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut call = Vec::new();
    const HDR: usize = 48;
    let mut reply = vec![0u8; HDR + (1 << 20)];
    loop {
        if rpc::read_record(&mut r, &mut call).is_err() {
            return Ok(());
        }
        let mut d = rpc::Dec::new(&call);
        let xid = d.u32()?;
        d.take(20)?; // type rpcvers prog vers proc
        d.u32()?;
        d.opaque(400)?;
        d.u32()?;
        d.opaque(400)?;
        d.opaque(64)?;
        d.u64()?;
        let count = (d.u32()? as usize).min(1 << 20);
        let words: [u32; 12] = [0x8000_0000 | (HDR - 4 + count) as u32, xid, 1, 0, 0, 0, 0, 0, 0, count as u32, 0, count as u32];
        for (i, v) in words.iter().enumerate() {
            reply[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        w.write_all(&reply[..HDR + count])?;
    }
}
