//! `monofs ingest`: ask a router to ingest a repository and follow its progress.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::exit;

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Repository: https://…, git://…, file://…, or a local path.
    #[arg(required_unless_present = "go", conflicts_with = "go")]
    pub url: Option<String>,
    /// A Go module version instead of a repository: MODULE@VERSION or
    /// MODULE@latest, from the fetcher's --gomod-proxy. Published under
    /// /go/pkg/mod/ and, in GOPROXY layout, under /go/proxy/.
    #[arg(long, value_name = "MODULE@VERSION")]
    pub go: Option<String>,
    /// Branch, tag or commit to publish (default: the remote's HEAD).
    #[arg(long = "ref", default_value = "")]
    pub git_ref: String,
    /// Namespace path to publish under (default: derived from the URL, e.g.
    /// github.com/org/repo; local repositories go under local/).
    #[arg(long, default_value = "")]
    pub source_id: String,
    /// How file content is stored: lazy (listable at once; content arrives by
    /// prefetch and on first read) or eager (all content before this returns).
    #[arg(long, default_value = "lazy", value_parser = ["lazy", "eager"])]
    pub content: String,
    /// Router HTTP API.
    #[arg(long, env = "MONOFS_ROUTER", default_value = "http://127.0.0.1:20480")]
    pub router: String,
    /// Print the result as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub token: TokenArg,
}

/// The admin token of the commands that change a cluster (ingest, refresh).
#[derive(clap::Args, Clone, Default)]
pub struct TokenArg {
    /// File holding the router's admin token (its --admin-token-file). Default
    /// for a router on loopback: admin.token in the data directory `monofs up`
    /// uses by default, if there is one.
    #[arg(long, env = "MONOFS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl TokenArg {
    /// The Authorization header value to send to `router`, if any.
    pub fn bearer(&self, router: &str) -> anyhow::Result<Option<String>> {
        use monofs_router::admin_token::AdminToken;
        let path = match &self.admin_token_file {
            Some(p) => p.clone(),
            None if is_loopback(router) => {
                let p = crate::datadir::default_data_dir().join(crate::up::ADMIN_TOKEN_FILE);
                if !p.exists() {
                    return Ok(None);
                }
                p
            }
            None => return Ok(None),
        };
        Ok(Some(AdminToken::load(&path)?.bearer()))
    }
}

/// Whether the router URL `http://HOST[:PORT]/…` names this machine by a loopback address.
fn is_loopback(router: &str) -> bool {
    let rest = router.split_once("://").map_or(router, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Longest an ingest may run before this command gives up waiting.
const INGEST_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

pub fn run(a: &IngestArgs) -> anyhow::Result<ExitCode> {
    let (kind, url) = match (&a.url, &a.go) {
        (_, Some(m)) => ("go", m.clone()),
        (Some(u), None) if u.contains("://") || u.contains('@') => ("git", u.clone()),
        // A local path is resolved here, where the user typed it.
        (Some(u), None) => (
            "git",
            std::fs::canonicalize(u)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| u.clone()),
        ),
        (None, None) => anyhow::bail!("name a repository URL or --go MODULE@VERSION"),
    };
    let body = json!({"kind": kind, "content": a.content, "url": url, "ref": a.git_ref, "source_id": a.source_id});
    let bearer = a.token.bearer(&a.router)?;
    follow(&a.router, "/api/ingest", body, &url, a.json, bearer.as_deref())
}

/// POST `body` to a router endpoint that answers with NDJSON progress lines and
/// a final `{"done": …}` line; show the progress and turn the end into an exit code.
pub fn follow(
    router: &str,
    endpoint: &str,
    body: serde_json::Value,
    what: &str,
    json_out: bool,
    bearer: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let url = what;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout_read(crate::up::INGEST_SILENCE)
        .build();
    let endpoint = format!("{}{endpoint}", router.trim_end_matches('/'));
    let mut req = agent.post(&endpoint);
    if let Some(b) = bearer {
        req = req.set("Authorization", b);
    }
    let resp = req.send_json(body);
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            let msg = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            eprintln!("monofs: ingest refused ({code}): {msg}");
            return Ok(ExitCode::from(exit::FAILURE));
        }
        Err(e) => {
            eprintln!("monofs: cannot reach the router at {router}: {e}");
            return Ok(ExitCode::from(exit::UNREACHABLE));
        }
    };
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("static template"),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let started = Instant::now();
    let mut last_plain = Instant::now() - Duration::from_secs(10);
    let mut last_phase = String::new();
    for line in BufReader::new(resp.into_reader()).lines() {
        if started.elapsed() > INGEST_TIMEOUT {
            anyhow::bail!("ingest still running after {INGEST_TIMEOUT:?}; giving up waiting");
        }
        let line = line.map_err(|e| anyhow::anyhow!("lost the router while ingesting: {e}"))?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("router sent a bad line: {e}"))?;
        if let Some(done) = v.get("done").and_then(Value::as_bool) {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if !done {
                let err = v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                if json_out {
                    println!("{v}");
                }
                eprintln!("monofs: ingest of {url} failed: {err}");
                return Ok(ExitCode::from(exit::FAILURE));
            }
            let repo = &v["repo"];
            if json_out {
                println!("{repo}");
            } else {
                eprintln!(
                    "ingested {} at {} into {} in {:.1}s",
                    url,
                    repo["commit"].as_str().unwrap_or("?"),
                    repo["path"].as_str().unwrap_or("?"),
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let phase = v["phase"].as_str().unwrap_or("");
        let objects = v["objects"].as_u64().unwrap_or(0);
        let bytes = v["bytes"].as_u64().unwrap_or(0);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let msg = format!(
            "{phase}: {objects} objects, {} ({}/s)",
            indicatif::HumanBytes(bytes),
            indicatif::HumanBytes((bytes as f64 / secs) as u64)
        );
        match &bar {
            Some(b) => b.set_message(msg),
            // Piped: a line per phase change, and at most one a second within a phase.
            None if phase != last_phase || last_plain.elapsed() >= Duration::from_secs(1) => {
                last_plain = Instant::now();
                last_phase = phase.to_string();
                eprintln!("[{secs:.1}s] {msg}");
            }
            None => {}
        }
    }
    anyhow::bail!("the router closed the connection before the ingest finished")
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_routers() {
        for r in ["http://127.0.0.1:20480", "http://localhost:1/", "http://[::1]:8080", "127.0.0.2:80"] {
            assert!(super::is_loopback(r), "{r}");
        }
        for r in ["http://10.0.0.1:20480", "http://router.example:80", "http://[2001:db8::1]:80", ""] {
            assert!(!super::is_loopback(r), "{r}");
        }
    }
}
