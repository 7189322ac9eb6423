//! `monofs-bench ingest`: a generated repository of N files (default 90,000) in a local
//! remote; time until MonoFS lists it over NFS (first listing) and until the ingest is
//! complete (fully fetched), beside `git clone --depth 1 file://...` of the same remote.

use crate::compare::{cpus, kernel};
use crate::env;
use crate::report::{self, Row};
use crate::rpc::SyncClient;
use crate::servers::MonoFs;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct IngestArgs {
    /// Files in the generated repository.
    #[arg(long, default_value_t = 90_000)]
    files: u64,
    /// Files per directory.
    #[arg(long, default_value_t = 100)]
    per_dir: u64,
    /// Bytes per file (about).
    #[arg(long, default_value_t = 1024)]
    file_size: usize,
    /// A tiny repository: checks it works, not that it is fast.
    #[arg(long)]
    smoke: bool,
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    cluster: env::ClusterArgs,
}

/// Writes a repository of `files` files with `git fast-import` (deterministic content).
pub fn generate(dir: &Path, files: u64, per_dir: u64, size: usize) -> Result<()> {
    let stamp = dir.join(".bench-stamp");
    let want = format!("files={files} per_dir={per_dir} size={size} v1");
    if std::fs::read_to_string(&stamp).unwrap_or_default() == want {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    env::run_ok(Command::new("git").args(["init", "-q", "--bare", "-b", "main"]).arg(dir), "git init")?;
    let mut fi = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .context("git fast-import")?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, fi.stdin.take().unwrap());
        let mut body = String::new();
        for i in 0..files {
            body.clear();
            body.push_str(&format!("// file {i}\n"));
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while body.len() < size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push_str(&format!("let v{} = {x:#x};\n", body.len()));
            }
            write!(w, "blob\nmark :{}\ndata {}\n{}\n", i + 1, body.len(), body)?;
        }
        let msg = "MonoFS benchmark repository";
        write!(w, "commit refs/heads/main\ncommitter MonoFS Bench <bench@monofs.invalid> 1704164645 +0000\ndata {}\n{}\n", msg.len(), msg)?;
        for i in 0..files {
            let d = i / per_dir.max(1);
            writeln!(w, "M 100644 :{} src/d{:03}/s{:02}/f{:06}.rs", i + 1, d / 10, d % 10, i)?;
        }
        w.flush()?;
    }
    let st = fi.wait()?;
    if !st.success() {
        bail!("git fast-import failed");
    }
    std::fs::write(&stamp, want)?;
    Ok(())
}

#[derive(Serialize)]
struct Out {
    files: u64,
    monofs_listable_s: f64,
    monofs_fully_fetched_s: f64,
    git_clone_depth1_s: f64,
    cpus: usize,
    kernel: String,
    rows: Vec<Row>,
}

pub fn main(a: IngestArgs) -> Result<()> {
    let root = env::monofs_root()?;
    let files = if a.smoke { a.files.min(2000) } else { a.files };
    let out = a.out.clone().unwrap_or_else(|| root.join(if a.smoke { "target/bench/ingest-smoke" } else { "target/bench/ingest" }));
    std::fs::create_dir_all(&out)?;
    let bin = env::monofs_bin(&root, a.cluster.monofs_bin.as_deref())?;
    let name = format!("bench-{files}");
    let remote = root.join("target/bench/remotes").join(format!("{name}.git"));
    let t = Instant::now();
    generate(&remote, files, a.per_dir, a.file_size)?;
    eprintln!("bench: remote {} ({files} files) ready in {:.1}s", remote.display(), t.elapsed().as_secs_f64());
    let url = format!("file://{}", remote.display());

    // git clone --depth 1 of the same remote (to local disk, a fresh directory)
    let clone_dir = out.join("clone");
    let _ = std::fs::remove_dir_all(&clone_dir);
    let t = Instant::now();
    env::run_ok(Command::new("git").args(["clone", "-q", "--depth", "1", &url]).arg(&clone_dir), "git clone --depth 1")?;
    let clone = t.elapsed();
    let _ = std::fs::remove_dir_all(&clone_dir);
    eprintln!("bench: git clone --depth 1: {:.2}s", clone.as_secs_f64());

    let mono = MonoFs::start(&bin, &out, a.cluster.nodes, a.cluster.shards)?;
    let nfs = format!("127.0.0.1:{}", mono.nfs_port);
    let listed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let poller = {
        let (listed, stop, nfs, name) = (listed.clone(), stop.clone(), nfs.clone(), name.clone());
        std::thread::spawn(move || -> Option<Duration> {
            let deadline = Instant::now() + Duration::from_secs(1800);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = SyncClient::connect(&nfs).and_then(|mut c| {
                    let fh = c.mount("/")?;
                    let (fh, _) = c.lookup(&fh, b"local")?;
                    let (fh, _) = c.lookup(&fh, name.as_bytes())?;
                    let (fh, _) = c.lookup(&fh, b"src")?;
                    c.readdirplus_all(&fh, 1_000_000)
                });
                if let Ok(v) = r {
                    if !v.is_empty() {
                        listed.store(true, Ordering::Relaxed);
                        return Some(t0.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
    };
    let r = env::run_ok(
        mono.ingest_command(&bin, &url).args(["--source-id", &format!("local/{name}")]),
        "monofs ingest",
    );
    let fetched = t0.elapsed();
    if r.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    r?;
    // the listing must come within a bounded time after the ingest finished
    let wait_end = Instant::now() + Duration::from_secs(30);
    while !listed.load(Ordering::Relaxed) && Instant::now() < wait_end {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let listable = poller.join().ok().flatten().context("the repository never became listable over NFS")?;
    drop(mono);

    let rows = vec![
        Row::new("ingest", "time to first listing", "s", listable.as_secs_f64(), "git clone --depth 1", clone.as_secs_f64(), true, None),
        Row::new("ingest", "time to fully fetched", "s", fetched.as_secs_f64(), "git clone --depth 1", clone.as_secs_f64(), true, Some(2.0)),
        Row::new("ingest", "time to first listing", "s", listable.as_secs_f64(), "5 s budget", 5.0, true, Some(1.0)),
    ];
    let table = report::markdown(&rows);
    let subtitle = format!("{files} files from file:// (local remote), {} nodes × {} shards, {} CPUs, kernel {}", a.cluster.nodes, a.cluster.shards, cpus(), kernel());
    std::fs::write(out.join("table.md"), format!("{subtitle}\n\n{table}"))?;
    std::fs::write(out.join("ingest.svg"), report::svg("MonoFS ingest vs git clone --depth 1", &subtitle, &rows))?;
    let o = Out {
        files,
        monofs_listable_s: listable.as_secs_f64(),
        monofs_fully_fetched_s: fetched.as_secs_f64(),
        git_clone_depth1_s: clone.as_secs_f64(),
        cpus: cpus(),
        kernel: kernel(),
        rows,
    };
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&o)?)?;
    println!("{subtitle}\n\n{table}");
    eprintln!("bench: wrote {}/results.json, table.md, ingest.svg", out.display());
    Ok(())
}
