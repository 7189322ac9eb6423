//! `monofs-bench compare`: the nfs workloads against MonoFS and nfs-ganesha (VFS FSAL
//! exporting a checkout of the very same tree) in one run, plus the raw-TCP ceiling for
//! sequential reads. Writes results.json, table.md and compare.svg.

use crate::env;
use crate::load::{self, Kind, LoadResult, Target, Tree};
use crate::report::{self, Row};
use crate::servers::{self, Ganesha, MonoFs};
use crate::LoadArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;

#[derive(Args)]
pub struct CompareArgs {
    /// Output directory (results.json, table.md, compare.svg, server logs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Short smoke run: a small repository, ~1 s per workload. Checks that everything works,
    /// not that it is fast.
    #[arg(long)]
    smoke: bool,
    /// A local Git repository to serve (default: the generated `content` test repository).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Workloads, comma separated, or all.
    #[arg(long, default_value = "all")]
    workloads: String,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    cluster: env::ClusterArgs,
    /// Do not enter a private network namespace (then nfs-ganesha is skipped).
    #[arg(long)]
    no_netns: bool,
    /// Also copy the plot here (e.g. docs/benchmarks-compare.svg).
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Serialize)]
struct Meta {
    monofs_commit: String,
    kernel: String,
    cpus: usize,
    repo: String,
    repo_commit: String,
    tree: String,
    connections: usize,
    depth: usize,
    duration_s: f64,
    warmup_s: f64,
    ingest_s: f64,
    ganesha: Option<String>,
    netns: bool,
}

#[derive(Serialize)]
struct Output {
    meta: Meta,
    results: Vec<LoadResult>,
    rows: Vec<Row>,
}

pub fn main(mut a: CompareArgs) -> Result<()> {
    if !a.no_netns {
        if let Some(code) = env::enter_netns()? {
            std::process::exit(code);
        }
    }
    if a.smoke {
        a.load.duration = a.load.duration.min(1.0);
        a.load.warmup = a.load.warmup.min(0.3);
    }
    let root = env::monofs_root()?;
    let out = a.out.clone().unwrap_or_else(|| root.join(if a.smoke { "target/bench/compare-smoke" } else { "target/bench/compare" }));
    std::fs::create_dir_all(&out)?;
    let bin = env::monofs_bin(&root, a.cluster.monofs_bin.as_deref())?;
    let repo = match &a.repo {
        Some(r) => r.canonicalize().with_context(|| format!("{}", r.display()))?,
        None if a.smoke => servers::gen_repos(&root, &root.join("target/bench/repos-smoke"), 2000, 16)?,
        None => servers::gen_repos(&root, &root.join("target/bench/repos"), 20000, 110)?,
    };
    let name = repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "repo".into());
    let export = out.join("export").join(&name);
    let repo_commit = servers::checkout(&repo, &export)?;
    eprintln!("bench: repository {} at {repo_commit}, checkout {}", repo.display(), export.display());

    let mono = MonoFs::start(&bin, &out, a.cluster.nodes, a.cluster.shards)?;
    let ingest = mono.ingest(&bin, &repo)?;
    eprintln!("bench: monofs up (NFS port {}), ingest {:.1}s", mono.nfs_port, ingest.as_secs_f64());

    let ganesha = if env::in_netns() {
        Some(Ganesha::start(&out, &export)?)
    } else {
        eprintln!("bench: nfs-ganesha needs the private network namespace (root); skipped");
        None
    };

    let kinds = crate::parse_workloads(&a.workloads)?;
    let o = a.load.opts();
    let mono_t = mono.target(&name);
    let mono_tree = Tree::discover(&mono_t, load::MAX_TREE_ENTRIES)?;
    eprintln!("bench: monofs: {}", mono_tree.summary());
    let mut peers: Vec<(Target, Tree)> = Vec::new();
    if let Some(g) = &ganesha {
        let t = g.target();
        let tree = Tree::discover(&t, load::MAX_TREE_ENTRIES)?;
        eprintln!("bench: ganesha: {}", tree.summary());
        if tree.entries.len() != mono_tree.entries.len() {
            eprintln!(
                "bench: note: the trees differ in size ({} vs {} entries; git archive leaves out submodule directories)",
                mono_tree.entries.len(),
                tree.entries.len()
            );
        }
        peers.push((t, tree));
    }

    let mut results = Vec::new();
    for &k in &kinds {
        let r = load::run(&mono_t, &mono_tree, k, &o)?;
        crate::print_result(&r);
        results.push(r);
        for (t, tree) in &peers {
            let r = load::run(t, tree, k, &o)?;
            crate::print_result(&r);
            results.push(r);
        }
    }
    if kinds.contains(&Kind::Seq1m) {
        let sink = load::Sink::start()?;
        let t = Target { name: "raw-tcp".into(), addr: sink.addr.clone(), mount_addr: sink.addr.clone(), export: "/".into(), root: String::new() };
        let r = load::run(&t, &Tree::synthetic(1 << 30), Kind::Seq1m, &o)?;
        crate::print_result(&r);
        results.push(r);
    }
    drop(ganesha);
    drop(mono);

    let rows = rows(&results);
    let table = report::markdown(&rows);
    let subtitle = format!(
        "{} connections × depth {}, {} s per workload after {} s warm-up, {} CPUs, kernel {}; repo {} ({})",
        o.connections,
        o.depth,
        a.load.duration,
        a.load.warmup,
        cpus(),
        kernel(),
        name,
        mono_tree.summary()
    );
    let svg = report::svg("MonoFS vs nfs-ganesha (NFSv3, same tree, same run)", &subtitle, &rows);
    let meta = Meta {
        monofs_commit: env::output(Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--short", "HEAD"]), "git rev-parse").unwrap_or_default(),
        kernel: kernel(),
        cpus: cpus(),
        repo: repo.display().to_string(),
        repo_commit,
        tree: mono_tree.summary(),
        connections: o.connections,
        depth: o.depth,
        duration_s: a.load.duration,
        warmup_s: a.load.warmup,
        ingest_s: ingest.as_secs_f64(),
        ganesha: peers.first().map(|_| env::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "nfs-ganesha"]), "dpkg-query").unwrap_or_default()),
        netns: env::in_netns(),
    };
    let outj = Output { meta, results, rows };
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&outj)?)?;
    std::fs::write(out.join("table.md"), format!("{subtitle}\n\n{table}"))?;
    std::fs::write(out.join("compare.svg"), &svg)?;
    if let Some(p) = &a.svg {
        std::fs::write(p, &svg)?;
    }
    println!("{subtitle}\n\n{table}");
    eprintln!("bench: wrote {}/results.json, table.md, compare.svg", out.display());
    let errors: u64 = outj.results.iter().map(|r| r.errors).sum();
    if errors > 0 {
        bail!("{errors} operations failed (see results.json first_error)");
    }
    Ok(())
}

fn find<'a>(rs: &'a [LoadResult], target: &str, w: &str) -> Option<&'a LoadResult> {
    rs.iter().find(|r| r.target == target && r.workload == w)
}

fn rows(rs: &[LoadResult]) -> Vec<Row> {
    let mut rows = Vec::new();
    let g = "ganesha";
    for w in ["getattr", "lookup", "readdirplus"] {
        if let (Some(m), Some(p)) = (find(rs, "monofs", w), find(rs, g, w)) {
            rows.push(Row::new(w, "ops/s", "ops/s", m.ops_per_s, g, p.ops_per_s, false, Some(2.0)));
        }
    }
    if let (Some(m), Some(p)) = (find(rs, "monofs", "read4k"), find(rs, g, "read4k")) {
        rows.push(Row::new("read4k", "p99 latency", "us", m.latency.p99_us, g, p.latency.p99_us, true, Some(1.0)));
        rows.push(Row::new("read4k", "ops/s", "ops/s", m.ops_per_s, g, p.ops_per_s, false, None));
    }
    if let Some(m) = find(rs, "monofs", "seq1m") {
        if let Some(p) = find(rs, g, "seq1m") {
            rows.push(Row::new("seq1m", "MB/s", "MB/s", m.mb_per_s, g, p.mb_per_s, false, Some(1.0)));
        }
        if let Some(p) = find(rs, "raw-tcp", "seq1m") {
            rows.push(Row::new("seq1m", "MB/s", "MB/s", m.mb_per_s, "raw-tcp", p.mb_per_s, false, Some(0.8)));
        }
    }
    if let (Some(m), Some(p)) = (find(rs, "monofs", "build"), find(rs, g, "build")) {
        rows.push(Row::new("build", "files/s", "ops/s", m.ops_per_s, g, p.ops_per_s, false, None));
        rows.push(Row::new("build", "p99 latency", "us", m.latency.p99_us, g, p.latency.p99_us, true, None));
    }
    rows
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}
