//! `monofs admin …`: operate a running cluster through its router's HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::exit;

#[derive(clap::Subcommand)]
pub enum AdminCmd {
    /// List the published repositories and Go modules.
    Repos(Common),
    /// Move a repository to the newest commit of its ref (unchanged subtrees are
    /// not sent again; clients see the new tree on their next lookup).
    Refresh {
        /// Namespace path of the repository, e.g. /github.com/org/repo.
        #[arg(long)]
        storage_id: String,
        #[command(flatten)]
        c: Common,
        #[command(flatten)]
        token: crate::ingest_cmd::TokenArg,
    },
    /// Each fetcher's health, cache size, hit rate and fetches in flight.
    Fetchers(Common),
    /// Each storage node: health, keys, bytes, damaged records, probe latency.
    /// Exit status: 0 when every node is healthy, 5 when a node is unhealthy or
    /// did not answer, 4 when the router cannot be reached, 1 on other errors.
    Status(Common),
    /// Cluster totals and per-node request counters (failures, timeouts,
    /// connection retries). Exit status as for `status`.
    Stats {
        /// What to show.
        #[arg(long = "type", value_enum, default_value_t = StatsType::All)]
        kind: StatsType,
        #[command(flatten)]
        c: Common,
    },
    /// Damaged log extents and keys each node found (at start-up or on reads):
    /// records there are skipped and read from other replicas.
    Damaged(Common),
    /// Mark the cluster as drained for maintenance: automatic failover and
    /// repair are suspended cluster-wide (a node may go down without its keys
    /// being copied elsewhere) until `undrain`. Kept in the cluster state;
    /// every router sees it within a second.
    Drain {
        /// Why, for whoever looks at the state.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        change: Change,
    },
    /// Remove the drain mark: failover and repair resume.
    Undrain(Change),
    /// Fail a node over by hand (reason "manual"), before removing it: its keys
    /// now belong to the next HRW owners, and the repair copies them there
    /// (`status` shows progress). Stays until `clear-failover`.
    TriggerFailover(NodeChange),
    /// Forget a node's failover mark, once the node is removed from --nodes or
    /// back in service (it is then caught up by anti-entropy).
    ClearFailover(NodeChange),
    /// Drain, failovers, live routers and repository count from the cluster state.
    State(Common),
    /// Run a repair pass now instead of at the next --repair-interval: compare
    /// the nodes' key digests and copy only what an owner lacks, including the
    /// keys whose owners changed with the membership (moved to their new
    /// owners; the old copies stay until the node is removed). Must reach the
    /// repair leader (the router with the smallest id; `status` names it).
    Rebalance {
        /// Only the node with this id: its pairs with the other nodes and the
        /// keys it holds without owning them.
        #[arg(long)]
        storage_id: Option<String>,
        #[command(flatten)]
        change: Change,
    },
    /// The keys a node holds (directory records and blob chunks): kind, object
    /// id, chunk, size, and whether the node owns it under the current
    /// membership; then a summary line. Needs the admin token.
    NodeFiles {
        /// The node's id, as named in the routers' --nodes.
        #[arg(long)]
        node_id: String,
        /// Most keys listed (0: all); the summary counts every key.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        #[command(flatten)]
        change: Change,
    },
    /// Write a new random cluster key to FILE (mode 0600; an existing file is never
    /// overwritten). Give the same file to every router, node and fetcher
    /// (`--cluster-key-file`).
    GenKey {
        /// Where to write the key.
        file: std::path::PathBuf,
    },
}

/// A change of the cluster state: the router and its admin token.
#[derive(clap::Args)]
pub struct Change {
    #[command(flatten)]
    c: Common,
    #[command(flatten)]
    token: crate::ingest_cmd::TokenArg,
}

/// A change of one node's failover mark.
#[derive(clap::Args)]
pub struct NodeChange {
    /// The node's id, as named in the routers' --nodes.
    #[arg(long)]
    node_id: String,
    #[command(flatten)]
    change: Change,
}

#[derive(clap::Args)]
pub struct Common {
    /// Router HTTP API.
    #[arg(long, env = "MONOFS_ROUTER", default_value = "http://127.0.0.1:20480")]
    router: String,
    /// Output: a table for people, or the router's JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Same as --format json.
    #[arg(long, hide = true)]
    json: bool,
}

impl Common {
    fn json(&self) -> bool {
        self.json || self.format == Format::Json
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsType {
    /// Totals over the cluster.
    Cluster,
    /// One line per node.
    Nodes,
    /// Both.
    All,
}

fn get(c: &Common, path: &str) -> Result<Value, ExitCode> {
    let url = format!("{}{path}", c.router.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build();
    match agent.get(&url).call() {
        Ok(r) => r.into_json().map_err(|e| {
            eprintln!("monofs: bad answer from {url}: {e}");
            ExitCode::from(exit::FAILURE)
        }),
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            eprintln!(
                "monofs: {url}: {code} {}",
                body["error"].as_str().unwrap_or("")
            );
            Err(ExitCode::from(exit::FAILURE))
        }
        Err(e) => {
            eprintln!("monofs: cannot reach the router at {}: {e}", c.router);
            Err(ExitCode::from(exit::UNREACHABLE))
        }
    }
}

/// POST a cluster state change; a request the router calls invalid (unknown
/// node id, missing field) exits with the usage code.
fn post(ch: &Change, path: &str, body: Value) -> anyhow::Result<ExitCode> {
    let (c, token) = (&ch.c, &ch.token);
    let url = format!("{}{path}", c.router.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build();
    let mut req = agent.post(&url);
    if let Some(b) = token.bearer(&c.router)? {
        req = req.set("Authorization", &b);
    }
    Ok(match req.send_json(body) {
        Ok(r) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            if c.json() {
                println!("{v}");
            } else {
                eprintln!("monofs: done");
            }
            ExitCode::SUCCESS
        }
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            eprintln!("monofs: {url}: {code} {}", body["error"].as_str().unwrap_or(""));
            ExitCode::from(if code == 400 { exit::USAGE } else { exit::FAILURE })
        }
        Err(e) => {
            eprintln!("monofs: cannot reach the router at {}: {e}", c.router);
            ExitCode::from(exit::UNREACHABLE)
        }
    })
}

/// Stream `GET /api/node-files`: NDJSON as it comes (`--format json`) or a table.
fn node_files(ch: &Change, node_id: &str, limit: u64) -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    let (c, token) = (&ch.c, &ch.token);
    let url = format!("{}/api/node-files", c.router.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).build();
    let mut req = agent.get(&url).query("node_id", node_id).query("limit", &limit.to_string());
    if let Some(b) = token.bearer(&c.router)? {
        req = req.set("Authorization", &b);
    }
    let r = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            eprintln!("monofs: {url}: {code} {}", body["error"].as_str().unwrap_or(""));
            return Ok(ExitCode::from(if code == 400 { exit::USAGE } else { exit::FAILURE }));
        }
        Err(e) => {
            eprintln!("monofs: cannot reach the router at {}: {e}", c.router);
            return Ok(ExitCode::from(exit::UNREACHABLE));
        }
    };
    if !c.json() {
        println!("{:<5} {:<40} {:>6} {:>9}  OWNED", "KIND", "OBJECT", "CHUNK", "SIZE");
    }
    let mut complete = false;
    for line in std::io::BufReader::new(r.into_reader()).lines() {
        let line = line?;
        if c.json() {
            println!("{line}");
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(sum) = v.get("summary") {
            complete = sum["complete"].as_bool() == Some(true);
            if !c.json() {
                println!(
                    "{} keys ({} owned), {}{}",
                    num(sum, "keys"),
                    num(sum, "owned"),
                    indicatif::HumanBytes(sum["bytes"].as_u64().unwrap_or(0)),
                    sum["error"].as_str().map(|e| format!("; incomplete: {e}")).unwrap_or_default()
                );
            }
        } else if !c.json() {
            println!(
                "{:<5} {:<40} {:>6} {:>9}  {}",
                v["kind"].as_str().unwrap_or("?"),
                v["oid"].as_str().unwrap_or("?"),
                v["chunk"].as_u64().map_or("-".into(), |n| n.to_string()),
                num(&v, "size"),
                if v["owned"].as_bool() == Some(true) { "yes" } else { "no" }
            );
        }
    }
    Ok(if complete { ExitCode::SUCCESS } else { ExitCode::from(exit::FAILURE) })
}

/// GET `path` and print it as JSON (`--json`) or with `print`.
fn show(c: &Common, path: &str, print: fn(&Value)) -> ExitCode {
    match get(c, path) {
        Err(code) => code,
        Ok(v) => {
            if c.json() {
                println!("{v}");
            } else {
                print(&v);
            }
            ExitCode::SUCCESS
        }
    }
}

fn print_state(v: &Value) {
    match v["drain"].as_object() {
        Some(d) => println!(
            "drain: {} (by {}, at {} ms)",
            d["reason"].as_str().unwrap_or(""),
            d["by"].as_str().unwrap_or("?"),
            d["at"].as_u64().unwrap_or(0)
        ),
        None => println!("drain: no"),
    }
    for (id, f) in v["failovers"].as_object().into_iter().flatten() {
        println!(
            "failover: {id} ({}, since {} ms, by {})",
            f["reason"].as_str().unwrap_or("?"),
            num(f, "since"),
            f["by"].as_str().unwrap_or("?")
        );
    }
    for r in v["routers"].as_array().into_iter().flatten() {
        println!(
            "router: {} http {} nfs {} version {}",
            r["id"].as_str().unwrap_or("?"),
            r["http"].as_str().unwrap_or("?"),
            r["nfs"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or("?")
        );
    }
    println!("repositories: {}", num(v, "repos"));
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

pub fn run(cmd: AdminCmd) -> anyhow::Result<ExitCode> {
    Ok(match cmd {
        AdminCmd::GenKey { file } => {
            let key = monofs_net::key::ClusterKey::generate()?;
            key.write_new(&file)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            eprintln!("monofs: wrote a new cluster key to {}", file.display());
            ExitCode::SUCCESS
        }
        AdminCmd::Repos(c) => show(&c, "/api/repos", |v| {
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {}  {}  {}",
                    r["path"].as_str().unwrap_or("?"),
                    r["commit"].as_str().unwrap_or("?").get(..12).unwrap_or("?"),
                    r["ref"].as_str().unwrap_or(""),
                    r["url"].as_str().unwrap_or("")
                );
            }
        }),
        AdminCmd::Refresh { storage_id, c, token } => {
            let body = json!({"path": storage_id});
            let bearer = token.bearer(&c.router)?;
            crate::ingest_cmd::follow(&c.router, "/api/refresh", body, &storage_id, c.json(), bearer.as_deref())?
        }
        AdminCmd::Drain { reason, change } => post(&change, "/api/drain", json!({"reason": reason}))?,
        AdminCmd::Undrain(change) => post(&change, "/api/undrain", json!({}))?,
        AdminCmd::TriggerFailover(n) => post(&n.change, "/api/failover", json!({"node_id": n.node_id}))?,
        AdminCmd::ClearFailover(n) => post(&n.change, "/api/failover/clear", json!({"node_id": n.node_id}))?,
        AdminCmd::State(c) => show(&c, "/api/state", print_state),
        AdminCmd::Rebalance { storage_id, change } => {
            post(&change, "/api/rebalance", json!({"storage_id": storage_id}))?
        }
        AdminCmd::NodeFiles { node_id, limit, change } => node_files(&change, &node_id, limit)?,
        AdminCmd::Damaged(c) => match get(&c, "/api/damaged") {
            Err(code) => code,
            Ok(v) if c.json() => {
                println!("{v}");
                all_answered(&v)
            }
            Ok(v) => {
                print_damaged(&v);
                all_answered(&v)
            }
        },
        AdminCmd::Status(c) => match get(&c, "/api/status") {
            Err(code) => code,
            Ok(v) => {
                if c.json() {
                    println!("{v}");
                } else {
                    print_status(&v);
                }
                all_healthy(&v)
            }
        },
        AdminCmd::Stats { kind, c } => match get(&c, "/api/status") {
            Err(code) => code,
            Ok(v) => {
                if c.json() {
                    let out = match kind {
                        StatsType::Cluster => json!({"router": v["router"], "cluster": v["cluster"], "replication": v["replication"]}),
                        StatsType::Nodes => v["nodes"].clone(),
                        StatsType::All => v.clone(),
                    };
                    println!("{out}");
                } else {
                    print_stats(&v, kind);
                }
                all_healthy(&v)
            }
        },
        AdminCmd::Fetchers(c) => match get(&c, "/api/fetchers") {
            Err(code) => code,
            Ok(v) if c.json() => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Ok(v) => {
                let mut all_healthy = true;
                println!(
                    "{:<24} {:<8} {:>12} {:>9} {:>9} {:>10}",
                    "FETCHER", "HEALTH", "CACHE", "HIT RATE", "IN FLIGHT", "PREFETCH"
                );
                for f in v.as_array().into_iter().flatten() {
                    let healthy = f["healthy"].as_bool().unwrap_or(false);
                    all_healthy &= healthy;
                    if !healthy {
                        println!(
                            "{:<24} {:<8} {}",
                            f["addr"].as_str().unwrap_or("?"),
                            "DOWN",
                            f["error"].as_str().unwrap_or("")
                        );
                        continue;
                    }
                    println!(
                        "{:<24} {:<8} {:>12} {:>8.1}% {:>9} {:>10}",
                        f["addr"].as_str().unwrap_or("?"),
                        "ok",
                        indicatif::HumanBytes(num(f, "cache_bytes")).to_string(),
                        f["hit_rate"].as_f64().unwrap_or(0.0) * 100.0,
                        num(f, "inflight_fetches"),
                        num(f, "prefetch_queued"),
                    );
                }
                if all_healthy {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(exit::UNREACHABLE)
                }
            }
        },
    })
}

/// 0 when every node of a status document is healthy, `exit::DEGRADED` otherwise.
fn all_healthy(status: &Value) -> ExitCode {
    let nodes = status["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !nodes.is_empty() && nodes.iter().all(|n| n["healthy"].as_bool() == Some(true) && n.get("stats_error").is_none()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::DEGRADED)
    }
}

fn opt_num(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |n| n.to_string())
}

fn print_status(status: &Value) {
    println!(
        "{:<16} {:<22} {:<9} {:>10} {:>10} {:>8} {:>10}",
        "NODE", "ADDR", "HEALTH", "KEYS", "BYTES", "DAMAGED", "LATENCY"
    );
    for n in status["nodes"].as_array().into_iter().flatten() {
        let health = match (n["healthy"].as_bool(), n["excluded"].as_bool()) {
            (Some(true), Some(true)) => "excluded",
            (Some(true), _) => "ok",
            _ => "UNHEALTHY",
        };
        let stats = &n["stats"];
        println!(
            "{:<16} {:<22} {:<9} {:>10} {:>10} {:>8} {:>10}",
            n["id"].as_str().unwrap_or("?"),
            n["addr"].as_str().unwrap_or("?"),
            health,
            opt_num(&stats["keys"]),
            stats["bytes"].as_u64().map_or("-".into(), |b| indicatif::HumanBytes(b).to_string()),
            opt_num(&stats["damaged"]),
            n["latency_us"].as_u64().map_or("-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0)),
        );
        if let (false, Some(e)) = (n["healthy"].as_bool() == Some(true), n["last_error"].as_str()) {
            println!("  {e}");
        }
        if let Some(e) = n["stats_error"].as_str() {
            println!("  stats: {e}");
        }
    }
    let cl = &status["cluster"];
    if let Some(d) = cl["drained"].as_object() {
        println!("DRAINED: {} (by {})", d.get("reason").and_then(Value::as_str).unwrap_or(""), d.get("by").and_then(Value::as_str).unwrap_or("?"));
    }
    for (id, f) in cl["failovers"].as_object().into_iter().flatten() {
        println!("failed over: {id} ({})", f["reason"].as_str().unwrap_or("?"));
    }
    let routers: Vec<&str> = status["routers"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    println!("routers: {}", if routers.is_empty() { "-".into() } else { routers.join(", ") });
    let r = &status["repair"];
    let last = &r["last"];
    println!(
        "repair: {} ({}), {} passes, {} keys under-replicated{}",
        r["state"].as_str().unwrap_or("?"),
        r["role"].as_str().unwrap_or("?"),
        num(r, "passes"),
        num(r, "under_replicated"),
        if last.is_object() {
            format!(
                "; last pass: {} keys missing, {} copied ({})",
                num(last, "keys_missing"),
                num(last, "keys_copied"),
                indicatif::HumanBytes(last["bytes_copied"].as_u64().unwrap_or(0))
            )
        } else {
            String::new()
        }
    );
    if let Some(cur) = r["current"].as_object() {
        println!(
            "  running: {}/{} node pairs, {} keys copied",
            cur.get("pairs_done").and_then(Value::as_u64).unwrap_or(0),
            cur.get("pairs_total").and_then(Value::as_u64).unwrap_or(0),
            cur.get("keys_copied").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    let received: Vec<String> = r["received_total"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, v)| format!("{id} {} keys ({})", num(v, "keys"), indicatif::HumanBytes(v["bytes"].as_u64().unwrap_or(0))))
        .collect();
    if !received.is_empty() {
        println!("  copied to, since this router started: {}", received.join(", "));
    }
    for (id, secs) in r["pending_failover"].as_object().into_iter().flatten() {
        if r["state"].as_str() == Some("drained") {
            println!("  {id} is down: no failover while the cluster is drained");
        } else {
            println!("  {id} is down: failed over in {}s unless it returns", secs.as_u64().unwrap_or(0));
        }
    }
}

fn print_stats(status: &Value, kind: StatsType) {
    let nodes = status["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if kind != StatsType::Nodes {
        let sum = |k: &str| nodes.iter().filter_map(|n| n["stats"][k].as_u64()).sum::<u64>();
        println!("router      {} (version {}, up {}s)", status["router"]["id"].as_str().unwrap_or("?"), status["router"]["version"].as_str().unwrap_or("?"), num(&status["router"], "uptime_secs"));
        println!("nodes       {} ({} healthy)", nodes.len(), num(&status["cluster"], "healthy"));
        println!("replication {}", num(&status["replication"], "factor"));
        println!("damaged     {}", sum("damaged"));
        if nodes.iter().any(|n| n["stats"]["keys"].is_u64()) {
            println!("keys        {}", sum("keys"));
            println!("bytes       {}", indicatif::HumanBytes(sum("bytes")));
        }
    }
    if kind == StatsType::All {
        println!();
    }
    if kind != StatsType::Cluster {
        println!(
            "{:<16} {:<9} {:>9} {:>9} {:>8} {:>8} {:>10}  LAST ERROR",
            "NODE", "HEALTH", "FAILURES", "TIMEOUTS", "RETRIES", "IN A ROW", "LAST OK"
        );
        for n in nodes {
            println!(
                "{:<16} {:<9} {:>9} {:>9} {:>8} {:>8} {:>10}  {}",
                n["id"].as_str().unwrap_or("?"),
                if n["healthy"].as_bool() == Some(true) { "ok" } else { "UNHEALTHY" },
                num(n, "failures_total"),
                num(n, "timeouts_total"),
                num(n, "retries_total"),
                num(n, "consecutive_failures"),
                n["last_ok_ms_ago"].as_u64().map_or("never".into(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
                n["last_error"].as_str().unwrap_or("-"),
            );
        }
    }
}

fn all_answered(nodes: &Value) -> ExitCode {
    if nodes.as_array().into_iter().flatten().any(|n| n.get("error").is_some()) {
        ExitCode::from(exit::UNREACHABLE)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_damaged(nodes: &Value) {
    for n in nodes.as_array().into_iter().flatten() {
        let id = n["node"].as_str().unwrap_or("?");
        if let Some(e) = n["error"].as_str() {
            println!("{id}: DOWN {e}");
            continue;
        }
        println!("{id}: {} damaged", num(n, "total"));
        for s in n["shards"].as_array().into_iter().flatten() {
            let entries = s["damaged"].as_array().map(Vec::as_slice).unwrap_or_default();
            for d in entries {
                let key = match (d["key"].as_str(), d["key_verified"].as_bool()) {
                    (Some(k), Some(true)) => k.to_string(),
                    (Some(k), _) => format!("{k} (unverified)"),
                    (None, _) => "-".into(),
                };
                println!(
                    "  shard {} offset {} length {} {} key {key}: {}",
                    num(s, "shard"),
                    num(d, "offset"),
                    num(d, "length"),
                    d["found"].as_str().unwrap_or("?"),
                    d["reason"].as_str().unwrap_or("")
                );
            }
            if num(s, "total") > entries.len() as u64 {
                println!("  shard {}: {} more not listed", num(s, "shard"), num(s, "total") - entries.len() as u64);
            }
        }
    }
}
