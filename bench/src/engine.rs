//! `monofs-bench engine`: the node engine (in process, `monofs_engine::start`) serving
//! 4 KiB-block objects over its wire protocol, GET and PUT at queue depths 1..256, beside
//! `fio --ioengine=io_uring --direct=1` on the same disk with the same data size (the
//! physical limit).

use crate::compare::{cpus, kernel};
use crate::hist::Hist;
use crate::report::{self, Row};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use monofs_net::auth::{ClientHandshake, FrameKey, Session, MAC_LEN, SERVER_HELLO_LEN};
use monofs_net::proto::{frame_len, Request, Response};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Value size: with the 32-byte record header and a 25-byte key, one record is one 4 KiB
/// block on disk, so a GET is one 4 KiB O_DIRECT read, like fio's bs=4k.
pub const VALUE: usize = 4000;
const BATCH: usize = 1024;

#[derive(Args)]
pub struct EngineArgs {
    /// Directory on the disk under test (default target/bench/engine).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Data size (objects × 4 KiB) and fio file size.
    #[arg(long, default_value_t = 512)]
    size_mb: u64,
    /// Queue depths, comma separated.
    #[arg(long, default_value = "1,4,16,64,256")]
    qd: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Engine shards (one executor each).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Small and short: checks it works, not that it is fast.
    #[arg(long)]
    smoke: bool,
    /// Skip PUT measurements.
    #[arg(long)]
    no_put: bool,
    /// Output directory (results.json, table.md, engine.svg).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Serialize, Clone)]
struct Point {
    system: String,
    op: String,
    qd: usize,
    iops: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    errors: u64,
}

fn key(i: u64) -> Vec<u8> {
    let mut oid = [0u8; 20];
    oid[..8].copy_from_slice(&i.to_be_bytes());
    oid[8..16].copy_from_slice(&xxhash_like(i).to_be_bytes());
    monofs_net::keys::blob_chunk(&oid, 0)
}

fn xxhash_like(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

pub fn main(a: EngineArgs) -> Result<()> {
    let root = crate::env::monofs_root().unwrap_or_else(|_| PathBuf::from("."));
    let (size_mb, duration, qds) = if a.smoke {
        (a.size_mb.min(32), a.duration.min(1.0), "1,16,64".to_string())
    } else {
        (a.size_mb, a.duration, a.qd.clone())
    };
    let qds: Vec<usize> = qds.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>().context("--qd")?;
    if qds.iter().any(|&q| q == 0 || q > 1024) {
        bail!("queue depths must be 1..=1024");
    }
    let dur = Duration::from_secs_f64(duration.clamp(0.2, 600.0));
    let dir = a.dir.clone().unwrap_or_else(|| root.join("target/bench/engine"));
    let out = a.out.clone().unwrap_or_else(|| root.join(if a.smoke { "target/bench/engine-smoke" } else { "target/bench/engine-out" }));
    std::fs::create_dir_all(&out)?;
    let db = dir.join("db");
    let _ = std::fs::remove_dir_all(&db);
    std::fs::create_dir_all(&db)?;
    let port = crate::env::free_ports(1, a.shards as u16)?[0];
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let cluster_key = crate::bench_key();
    let node = monofs_engine::start(monofs_engine::NodeConfig { addr, node_id: "bench".into(), db_path: db.clone(), shards: a.shards, cluster_key: cluster_key.clone() })?;
    let objects = size_mb * 1024 * 1024 / 4096;

    // populate
    let client = monofs_net::client::NodeClient::connect("bench", &addr.to_string(), &cluster_key).map_err(|e| anyhow!("{e}"))?;
    let value = vec![0x5au8; VALUE];
    let t = Instant::now();
    let mut i = 0;
    while i < objects {
        let n = (objects - i).min(BATCH as u64);
        let items = (i..i + n).map(|j| (key(j), value.clone())).collect();
        client.put_batch(items).map_err(|e| anyhow!("populate: {e}"))?;
        i += n;
    }
    let pop = t.elapsed();
    eprintln!(
        "bench: engine: {objects} objects ({size_mb} MiB) stored in {:.1}s ({:.0} MB/s, PUT_BATCH of {BATCH})",
        pop.as_secs_f64(),
        (objects * 4096) as f64 / pop.as_secs_f64() / 1e6
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let shards = a.shards as u16;
    let mut points = Vec::new();
    let fio = crate::env::which("fio");
    let fio_file = dir.join("fio.dat");
    for &qd in &qds {
        let p = rt.block_on(engine_load(port, &cluster_key, shards, objects, qd, dur, false))?;
        print_point(&p);
        points.push(p);
        if fio {
            let p = run_fio(&fio_file, size_mb, "randread", qd, dur)?;
            print_point(&p);
            points.push(p);
        }
    }
    if !a.no_put {
        for &qd in &qds {
            let p = rt.block_on(engine_load(port, &cluster_key, shards, objects, qd, dur, true))?;
            print_point(&p);
            points.push(p);
            if fio {
                let p = run_fio(&fio_file, size_mb, "randwrite", qd, dur)?;
                print_point(&p);
                points.push(p);
            }
        }
    }
    drop(client);
    node.shutdown()?;
    let _ = std::fs::remove_dir_all(&db);
    let _ = std::fs::remove_file(&fio_file);

    let mut rows = Vec::new();
    for op in ["get", "put"] {
        for &qd in &qds {
            let e = points.iter().find(|p| p.system == "engine" && p.op == op && p.qd == qd);
            let f = points.iter().find(|p| p.system == "fio" && p.op == op && p.qd == qd);
            if let (Some(e), Some(f)) = (e, f) {
                let target = if op == "get" && qd == 64 { Some(0.7) } else { None };
                rows.push(Row::new(&format!("{op} QD{qd}"), "IOPS", "IOPS", e.iops, "fio", f.iops, false, target));
            }
        }
    }
    let subtitle = format!(
        "{size_mb} MiB, 4 KiB blocks, {} shard(s), {:.0} s per point, {} CPUs, kernel {}; fio --ioengine=io_uring --direct=1 (put: fdatasync per write)",
        a.shards,
        dur.as_secs_f64(),
        cpus(),
        kernel()
    );
    let table = report::markdown(&rows);
    let svg = report::svg("MonoFS node engine vs fio on the same disk", &subtitle, &rows);
    #[derive(Serialize)]
    struct Out<'a> {
        subtitle: &'a str,
        populate_s: f64,
        points: &'a [Point],
        rows: &'a [Row],
    }
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&Out { subtitle: &subtitle, populate_s: pop.as_secs_f64(), points: &points, rows: &rows })?,
    )?;
    std::fs::write(out.join("table.md"), format!("{subtitle}\n\n{table}"))?;
    std::fs::write(out.join("engine.svg"), svg)?;
    println!("{subtitle}\n\n{table}");
    if !fio {
        eprintln!("bench: fio not installed: engine figures have no peer (apt-get install fio)");
    }
    eprintln!("bench: wrote {}/results.json, table.md, engine.svg", out.display());
    let errors: u64 = points.iter().map(|p| p.errors).sum();
    if errors > 0 {
        bail!("{errors} engine requests failed");
    }
    Ok(())
}

fn print_point(p: &Point) {
    eprintln!(
        "{:7} {:4} QD{:<4} {:>9.0} IOPS {:>8.1} MB/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us",
        p.system, p.op, p.qd, p.iops, p.mb_per_s, p.p50_us, p.p99_us, p.p999_us
    );
}

/// One authenticated connection to a shard, as `net::client` makes them (see `monofs_net::auth`).
async fn connect_shard(port: u16, key: &FrameKey) -> Result<(tokio::net::TcpStream, Session)> {
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    c.set_nodelay(true)?;
    let (hs, hello) = ClientHandshake::start(key);
    c.write_all(&hello).await?;
    let mut answer = [0u8; SERVER_HELLO_LEN];
    c.read_exact(&mut answer).await?;
    let fin = hs.finish(&answer);
    if let Some(proof) = fin.proof {
        c.write_all(&proof).await?;
    }
    Ok((c, fin.session?))
}

async fn engine_load(
    port: u16,
    cluster_key: &monofs_net::key::ClusterKey,
    shards: u16,
    objects: u64,
    qd: usize,
    dur: Duration,
    put: bool,
) -> Result<Point> {
    let frame_key = FrameKey::new(cluster_key);
    let end = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let next_put = Arc::new(std::sync::atomic::AtomicU64::new(objects + 1_000_000 * (qd as u64)));
    for t in 0..qd {
        let (next_put, frame_key) = (next_put.clone(), frame_key.clone());
        tasks.push(tokio::spawn(async move {
            let mut conns = Vec::new();
            for s in 0..shards {
                conns.push(connect_shard(port + s, &frame_key).await?);
            }
            let mut h = Hist::default();
            let mut rng = 0x9E37_79B9u64 ^ ((t as u64 + 1) << 20);
            let mut errors = 0u64;
            let mut body = Vec::with_capacity(8192);
            let mut resp = Vec::with_capacity(8192);
            let value = vec![0xa5u8; VALUE];
            let mut n = 0u64;
            while Instant::now() < end && n < 10_000_000 {
                n += 1;
                rng = xxhash_like(rng.wrapping_add(0x9E37_79B9_7F4A_7C15));
                let req = if put {
                    let k = next_put.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Request::PutBatch(vec![(key(k), value.clone())])
                } else {
                    Request::Get { key: key(rng % objects), offset: 0, len: VALUE as u32 }
                };
                let k = match &req {
                    Request::PutBatch(items) => items[0].0.clone(),
                    Request::Get { key, .. } => key.clone(),
                    _ => unreachable!(),
                };
                let (c, session) = &mut conns[monofs_net::hrw::shard_of(&k, shards) as usize];
                body.clear();
                body.extend_from_slice(&[0u8; 4]);
                req.encode(&mut body);
                let len = (body.len() - 4) as u32;
                body[..4].copy_from_slice(&len.to_be_bytes());
                // Measured from here: the MAC both ways is part of the request's cost.
                let t0 = Instant::now();
                let mac = session.seal(&[&body]);
                body.extend_from_slice(&mac);
                c.write_all(&body).await?;
                let mut hdr = [0u8; 4];
                c.read_exact(&mut hdr).await?;
                let n = frame_len(hdr).map_err(|e| anyhow!("{e}"))?;
                resp.resize(n + MAC_LEN, 0);
                c.read_exact(&mut resp).await?;
                session.open(&[&hdr, &resp[..n]], &resp[n..])?;
                h.record(t0.elapsed().as_nanos() as u64);
                match Response::decode(&resp[..n]) {
                    Ok(Response::Data(d)) if !put && d.len() == VALUE => {}
                    Ok(Response::Ok) if put => {}
                    _ => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((h, errors))
        }));
    }
    let mut h = Hist::default();
    let mut errors = 0;
    for t in tasks {
        let (th, e) = t.await??;
        h.merge(&th);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    let iops = h.count() as f64 / secs;
    Ok(Point {
        system: "engine".into(),
        op: if put { "put" } else { "get" }.into(),
        qd,
        iops,
        mb_per_s: iops * 4096.0 / 1e6,
        p50_us: h.quantile(0.5) / 1e3,
        p99_us: h.quantile(0.99) / 1e3,
        p999_us: h.quantile(0.999) / 1e3,
        errors,
    })
}

fn run_fio(file: &Path, size_mb: u64, rw: &str, qd: usize, dur: Duration) -> Result<Point> {
    let mut cmd = Command::new("fio");
    cmd.args(["--name=bench", "--ioengine=io_uring", "--direct=1", "--bs=4k", "--output-format=json", "--time_based", "--norandommap", "--randrepeat=0"])
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--size={size_mb}M"))
        .arg(format!("--rw={rw}"))
        .arg(format!("--iodepth={qd}"))
        .arg(format!("--runtime={}ms", dur.as_millis()));
    if rw == "randwrite" {
        cmd.arg("--fdatasync=1");
    }
    let out = crate::env::output(&mut cmd, "fio")?;
    let v: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..]).context("fio JSON")?;
    let side = if rw == "randread" { "read" } else { "write" };
    let j = &v["jobs"][0][side];
    let pct = |k: &str| j["clat_ns"]["percentile"][k].as_f64().unwrap_or(0.0) / 1e3;
    let iops = j["iops"].as_f64().unwrap_or(0.0);
    Ok(Point {
        system: "fio".into(),
        op: if rw == "randread" { "get" } else { "put" }.into(),
        qd,
        iops,
        mb_per_s: iops * 4096.0 / 1e6,
        p50_us: pct("50.000000"),
        p99_us: pct("99.000000"),
        p999_us: pct("99.900000"),
        errors: j["total_ios"].as_u64().map(|_| 0).unwrap_or(0) + v["jobs"][0]["error"].as_u64().unwrap_or(0),
    })
}
