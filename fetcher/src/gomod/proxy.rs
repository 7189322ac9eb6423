//! The client side of the Go module proxy protocol (GOPROXY): `http(s)://`
//! proxies through `ureq`, and `file://` directories laid out the same way.
//! Every request is bounded in size and in time.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::redact;

/// Largest `.info`, `.mod`, `list` or `@latest` answer read.
pub const MAX_META: u64 = 16 << 20;
/// Largest module zip (Go's own `modzip.MaxZipFile`).
pub const MAX_ZIP: u64 = 500 << 20;
/// Wall clock allowed for downloading one module zip; each read is also bounded
/// by the per-request timeout, so a stalled proxy fails long before this.
pub const ZIP_WALL_CLOCK: Duration = Duration::from_secs(30 * 60);

/// A configured module proxy.
pub(crate) enum Proxy {
    Http { base: String, agent: ureq::Agent, timeout: Duration },
    Dir { root: PathBuf, base: String },
}

impl Proxy {
    /// `url` is one proxy base URL: `https://proxy.golang.org`,
    /// `http://127.0.0.1:8080/goproxy` or `file:///srv/goproxy`.
    pub fn new(url: &str, timeout: Duration) -> Result<Proxy, String> {
        let url = url.trim();
        if url.contains(',') || url.contains('|') {
            return Err(format!(
                "'{}' is a list; give exactly one module proxy URL",
                redact(url)
            ));
        }
        if matches!(url, "direct" | "off" | "") {
            return Err(format!(
                "'{url}' is not a module proxy URL; give one like https://proxy.golang.org"
            ));
        }
        if let Some(path) = url.strip_prefix("file://") {
            let path = path.strip_prefix("localhost").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(format!(
                    "file proxy URL '{url}' must name an absolute directory (file:///dir)"
                ));
            }
            return Ok(Proxy::Dir { root: PathBuf::from(path), base: url.trim_end_matches('/').to_string() });
        }
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!(
                "unsupported module proxy URL '{}': use http://, https:// or file://",
                redact(url)
            ));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .timeout_write(timeout)
            .redirects(10)
            .user_agent(concat!("monofs-fetcher/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Proxy::Http { base: url.trim_end_matches('/').to_string(), agent, timeout })
    }

    /// The proxy URL, password removed, for messages.
    pub fn shown(&self) -> String {
        match self {
            Proxy::Http { base, .. } | Proxy::Dir { base, .. } => redact(base),
        }
    }

    fn url(&self, rel: &str) -> String {
        match self {
            Proxy::Http { base, .. } | Proxy::Dir { base, .. } => redact(&format!("{base}/{rel}")),
        }
    }

    /// GET `<proxy>/<rel>` whole, at most `limit` bytes. `Ok(None)` when the proxy
    /// says it has no such thing (HTTP 404 or 410, or no such file).
    pub fn get(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
        match self {
            Proxy::Dir { root, .. } => {
                let p = root.join(rel);
                let f = match std::fs::File::open(&p) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(format!("{}: {e}", p.display())),
                };
                let mut out = Vec::new();
                f.take(limit + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                if out.len() as u64 > limit {
                    return Err(format!("{} is larger than {limit} bytes", p.display()));
                }
                Ok(Some(out))
            }
            Proxy::Http { timeout, .. } => {
                let Some(resp) = self.call(rel, Some(*timeout))? else { return Ok(None) };
                let url = self.url(rel);
                check_length(&resp, limit, &url)?;
                let mut out = Vec::new();
                resp.into_reader()
                    .take(limit + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("reading {url}: {e}"))?;
                if out.len() as u64 > limit {
                    return Err(format!("{url} is larger than {limit} bytes"));
                }
                Ok(Some(out))
            }
        }
    }

    /// Copy `<proxy>/<rel>` into `dest` (created or truncated), at most `limit`
    /// bytes; returns its size, or `Ok(None)` when the proxy has no such thing.
    pub fn download(&self, rel: &str, dest: &Path, limit: u64) -> Result<Option<u64>, String> {
        let url = self.url(rel);
        let mut reader: Box<dyn Read> = match self {
            Proxy::Dir { root, .. } => {
                let p = root.join(rel);
                match std::fs::File::open(&p) {
                    Ok(f) => Box::new(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(format!("{}: {e}", p.display())),
                }
            }
            Proxy::Http { .. } => {
                // No overall deadline on the request: reads are bounded by the
                // agent's read timeout, the whole copy by ZIP_WALL_CLOCK.
                let Some(resp) = self.call(rel, None)? else { return Ok(None) };
                check_length(&resp, limit, &url)?;
                Box::new(resp.into_reader())
            }
        };
        let mut out = std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let started = Instant::now();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| format!("reading {url}: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > limit {
                return Err(format!("{url} is larger than {limit} bytes"));
            }
            if started.elapsed() > ZIP_WALL_CLOCK {
                return Err(format!(
                    "reading {url} took longer than {} s",
                    ZIP_WALL_CLOCK.as_secs()
                ));
            }
            out.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        out.sync_all().map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(Some(total))
    }

    fn call(&self, rel: &str, deadline: Option<Duration>) -> Result<Option<ureq::Response>, String> {
        let Proxy::Http { base, agent, .. } = self else { unreachable!("http only") };
        let url = format!("{base}/{rel}");
        let shown = redact(&url);
        let mut req = agent.get(&url);
        if let Some(d) = deadline {
            req = req.timeout(d);
        }
        match req.call() {
            Ok(r) => Ok(Some(r)),
            Err(ureq::Error::Status(404 | 410, _)) => Ok(None),
            Err(ureq::Error::Status(code, resp)) => {
                let mut body = Vec::new();
                let _ = resp.into_reader().take(300).read_to_end(&mut body);
                let body = String::from_utf8_lossy(&body);
                let body = body.trim();
                let detail = if body.is_empty() { String::new() } else { format!(": {body}") };
                Err(format!("the proxy answered HTTP {code} for {shown}{detail}"))
            }
            Err(ureq::Error::Transport(t)) => Err(format!("request to {shown} failed: {t}")),
        }
    }
}

fn check_length(resp: &ureq::Response, limit: u64, url: &str) -> Result<(), String> {
    if let Some(len) = resp.header("content-length").and_then(|l| l.trim().parse::<u64>().ok()) {
        if len > limit {
            return Err(format!("{url} is {len} bytes, more than the limit of {limit}"));
        }
    }
    Ok(())
}
