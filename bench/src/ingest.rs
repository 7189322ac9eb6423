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
    /// Commits of history behind the published commit: when set, the remote is
    /// `--files` files with that history, and the run compares lazy ingest until
    /// listable with `git clone --bare --depth 1 --filter=blob:none`, and eager
    /// ingest with `git clone --depth 1`.
    #[arg(long)]
    history: Option<u64>,
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    cluster: env::ClusterArgs,
}

/// Makes the bare repository `dir` from the `git fast-import` stream `write`
/// produces, unless `dir` was last made for the same `recipe`.
fn fast_import(dir: &Path, recipe: &str, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let stamp = dir.join(".bench-stamp");
    if std::fs::read_to_string(&stamp).unwrap_or_default() == recipe {
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
        let mut w = std::io::BufWriter::with_capacity(1 << 20, fi.stdin.take().context("fast-import stdin")?);
        write(&mut w)?;
        w.flush()?;
    }
    if !fi.wait()?.success() {
        bail!("git fast-import failed");
    }
    std::fs::write(&stamp, recipe)?;
    Ok(())
}

/// Writes a repository of `files` files with `git fast-import` (deterministic content).
pub fn generate(dir: &Path, files: u64, per_dir: u64, size: usize) -> Result<()> {
    fast_import(dir, &format!("files={files} per_dir={per_dir} size={size} v1"), |w| {
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
        Ok(())
    })
}

/// Writes a repository of `files` files under `per_dir`-file directories whose
/// `main` has `commits` commits: the first adds every file, each later one
/// changes one file (deterministic content, `git fast-import`).
pub fn generate_history(dir: &Path, files: u64, per_dir: u64, commits: u64) -> Result<()> {
    fast_import(dir, &format!("files={files} per_dir={per_dir} commits={commits} v1"), |w| {
        let path = |i: u64| format!("src/d{:03}/f{:05}.rs", i / per_dir.max(1), i);
        for c in 0..commits.max(1) {
            let msg = format!("change {c}");
            write!(w, "commit refs/heads/main\ncommitter MonoFS Bench <bench@monofs.invalid> {} +0000\ndata {}\n{msg}\n", 1704164645 + c, msg.len())?;
            let changed: Box<dyn Iterator<Item = u64>> = if c == 0 { Box::new(0..files) } else { Box::new(std::iter::once(c % files.max(1))) };
            for i in changed {
                let body = format!("// file {i}, version {c}\npub const V: u64 = {};\n", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c);
                write!(w, "M 100644 inline {}\ndata {}\n{body}\n", path(i), body.len())?;
            }
        }
        Ok(())
    })
}

/// Time a `git clone` of `url` with `args` into a fresh directory under `out`.
fn time_clone(out: &Path, url: &str, args: &[&str]) -> Result<Duration> {
    let dir = out.join("clone");
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    env::run_ok(Command::new("git").arg("clone").arg("-q").args(args).arg(url).arg(&dir), &format!("git clone {}", args.join(" ")))?;
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("bench: git clone {}: {:.2}s", args.join(" "), took.as_secs_f64());
    Ok(took)
}

/// Ingest `url` at `local/<name>` with `content` (lazy, eager); returns (time
/// until `local/<name>/src` lists over NFS, time until the ingest returned).
fn timed_ingest(mono: &MonoFs, bin: &Path, url: &str, name: &str, content: &str) -> Result<(Duration, Duration)> {
    let nfs = format!("127.0.0.1:{}", mono.nfs_port);
    let listed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let poller = {
        let (listed, stop, nfs, name) = (listed.clone(), stop.clone(), nfs.clone(), name.to_string());
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
        mono.ingest_command(bin, url).args(["--source-id", &format!("local/{name}"), "--content", content]),
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
    Ok((listable, fetched))
}

#[derive(Serialize)]
struct HistoryOut {
    files: u64,
    commits: u64,
    lazy_listable_s: f64,
    git_clone_bare_depth1_blobless_s: f64,
    eager_done_s: f64,
    git_clone_depth1_s: f64,
    cpus: usize,
    kernel: String,
    rows: Vec<Row>,
}

/// `--history`: a long history behind the published commit, lazy and eager
/// beside the git clones that fetch as little.
fn history_main(a: &IngestArgs, commits: u64) -> Result<()> {
    let root = env::monofs_root()?;
    let files = if a.smoke { a.files.min(500) } else { a.files };
    let commits = if a.smoke { commits.min(1000) } else { commits };
    let out = a.out.clone().unwrap_or_else(|| root.join(if a.smoke { "target/bench/ingest-history-smoke" } else { "target/bench/ingest-history" }));
    std::fs::create_dir_all(&out)?;
    let bin = env::monofs_bin(&root, a.cluster.monofs_bin.as_deref())?;
    let name = format!("history-{files}-{commits}");
    let remote = root.join("target/bench/remotes").join(format!("{name}.git"));
    let t = Instant::now();
    generate_history(&remote, files, a.per_dir, commits)?;
    eprintln!("bench: remote {} ({files} files, {commits} commits) ready in {:.1}s", remote.display(), t.elapsed().as_secs_f64());
    let url = format!("file://{}", remote.display());
    // The upload-pack MonoFS runs for local remotes, so the filter is honoured
    // (the remote's own config leaves uploadpack.allowFilter off).
    let upload_pack = "--upload-pack=git -c uploadpack.allowFilter=true upload-pack";
    let blobless = time_clone(&out, &url, &["--bare", "--depth", "1", "--filter=blob:none", upload_pack])?;
    let depth1 = time_clone(&out, &url, &["--depth", "1"])?;

    let mono = MonoFs::start(&bin, &out, a.cluster.nodes, a.cluster.shards)?;
    let (lazy_listable, _) = timed_ingest(&mono, &bin, &url, &format!("{name}-lazy"), "lazy")?;
    eprintln!("bench: lazy ingest listable after {:.2}s", lazy_listable.as_secs_f64());
    drop(mono);
    // A fresh cluster and fetcher cache, so the eager ingest fetches everything.
    let out_eager = out.join("eager");
    let _ = std::fs::remove_dir_all(&out_eager);
    std::fs::create_dir_all(&out_eager)?;
    let mono = MonoFs::start(&bin, &out_eager, a.cluster.nodes, a.cluster.shards)?;
    let (_, eager_done) = timed_ingest(&mono, &bin, &url, &format!("{name}-eager"), "eager")?;
    eprintln!("bench: eager ingest done after {:.2}s", eager_done.as_secs_f64());
    drop(mono);

    let rows = vec![
        Row::new("ingest (history)", "lazy: time to first listing", "s", lazy_listable.as_secs_f64(), "git clone --bare --depth 1 --filter=blob:none", blobless.as_secs_f64(), true, None),
        Row::new("ingest (history)", "eager: time to fully fetched", "s", eager_done.as_secs_f64(), "git clone --depth 1", depth1.as_secs_f64(), true, None),
    ];
    let table = report::markdown(&rows);
    let subtitle = format!(
        "{files} files, {commits} commits of history, file:// (local remote), {} nodes × {} shards, {} CPUs, kernel {}",
        a.cluster.nodes, a.cluster.shards, cpus(), kernel()
    );
    std::fs::write(out.join("table.md"), format!("{subtitle}\n\n{table}"))?;
    let o = HistoryOut {
        files,
        commits,
        lazy_listable_s: lazy_listable.as_secs_f64(),
        git_clone_bare_depth1_blobless_s: blobless.as_secs_f64(),
        eager_done_s: eager_done.as_secs_f64(),
        git_clone_depth1_s: depth1.as_secs_f64(),
        cpus: cpus(),
        kernel: kernel(),
        rows,
    };
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&o)?)?;
    println!("{subtitle}\n\n{table}");
    eprintln!("bench: wrote {}/results.json, table.md", out.display());
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
    if let Some(commits) = a.history {
        return history_main(&a, commits);
    }
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
    let clone = time_clone(&out, &url, &["--depth", "1"])?;

    let mono = MonoFs::start(&bin, &out, a.cluster.nodes, a.cluster.shards)?;
    let (listable, fetched) = timed_ingest(&mono, &bin, &url, &name, "lazy")?;
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
