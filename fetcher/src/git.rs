//! Driving the `git` CLI: fetching into the bare cache repository and
//! streaming large blobs out of it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::url::redact;
use crate::IngestError;

/// Default wall-clock limit of one `git fetch` (`FetcherConfig::fetch_timeout`);
/// the child is killed past it.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Wall-clock limit of the short local git commands (init, rev-parse, update-ref).
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Wall-clock limit of `git ls-remote --symref` used to name the remote HEAD.
pub const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest sleep between two checks of whether a git command ended.
const POLL_MAX: Duration = Duration::from_millis(20);
/// Most stdout kept from a command run by `run` (these print a line or two).
const MAX_STDOUT: usize = 1 << 20;
/// Most stderr kept for error messages.
const MAX_STDERR: usize = 64 << 10;

pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A `git` command with the settings every MonoFS invocation uses: no prompts,
/// no stdin, file transport allowed, remote-helper transports refused, stalled
/// HTTP transfers aborted.
pub(crate) fn git(dir: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    c.args([
        "-c",
        "protocol.file.allow=always",
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "http.lowSpeedLimit=1000",
        "-c",
        "http.lowSpeedTime=60",
        "-c",
        "core.askPass=",
        "-c",
        "credential.interactive=never",
    ]);
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

fn drain<R: Read + Send + 'static>(mut r: R, max: usize) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    })
}

/// Run `cmd` to completion, killing it after `timeout`.
pub(crate) fn run(mut cmd: Command, timeout: Duration, what: &str) -> Result<Output, IngestError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| IngestError::Fetch {
        url: what.to_string(),
        message: format!("cannot run git: {e}"),
    })?;
    let out = drain(child.stdout.take().expect("piped"), MAX_STDOUT);
    let err = drain(child.stderr.take().expect("piped"), MAX_STDERR);
    let deadline = Instant::now() + timeout;
    // Polled from 1 ms up to POLL_MAX: most of these commands end within a few
    // milliseconds, and a fixed 20 ms poll added ~10 ms to each.
    let mut poll = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(IngestError::Fetch {
                    url: what.to_string(),
                    message: format!(
                        "git did not finish within {} s and was stopped",
                        timeout.as_secs()
                    ),
                });
            }
            Ok(None) => {
                std::thread::sleep(poll);
                poll = (poll * 2).min(POLL_MAX);
            }
            Err(e) => {
                let _ = child.kill();
                return Err(IngestError::Fetch {
                    url: what.to_string(),
                    message: format!("waiting for git: {e}"),
                });
            }
        }
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The line of git's stderr that says what went wrong, without its `fatal: ` prefix.
pub(crate) fn first_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or(lines.first())
        .copied()
        .unwrap_or("git failed without a message");
    let msg = pick
        .strip_prefix("fatal:")
        .or_else(|| pick.strip_prefix("error:"))
        .unwrap_or(pick)
        .trim();
    msg.chars().take(1000).collect()
}

/// Is `s` a full hexadecimal SHA-1?
pub(crate) fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Refuse refs that could be taken for options or refspec syntax.
pub(crate) fn check_ref(r: &str) -> Result<(), IngestError> {
    let bad = |why: &str| IngestError::BadRef {
        git_ref: r.to_string(),
        reason: why.to_string(),
    };
    if r.len() > 1024 {
        return Err(bad("it is longer than 1024 bytes"));
    }
    if r.starts_with('-')
        || r.starts_with('+')
        || r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with('.')
        || r.ends_with(".lock")
    {
        return Err(bad("it is not a valid ref name"));
    }
    if r.contains("..") || r.contains("//") || r.contains("@{") {
        return Err(bad("it is not a valid ref name"));
    }
    if let Some(c) = r
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
    {
        return Err(bad(&format!("it contains '{}'", c.escape_debug())));
    }
    Ok(())
}

static TMP_REF_SEQ: AtomicU64 = AtomicU64::new(0);

/// What a fetch produced.
pub(crate) struct Fetched {
    pub repo: PathBuf,
    pub commit: String,
    /// Fetched without blobs (the filter was honoured).
    pub filtered: bool,
}

/// Make sure the bare cache repository exists.
pub(crate) fn init_cache(repo: &Path, what: &str) -> Result<(), IngestError> {
    if repo.join("HEAD").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(repo).map_err(|e| IngestError::Cache {
        path: repo.to_path_buf(),
        source: e,
    })?;
    let mut c = git(None);
    c.args(["init", "--bare", "-q"]).arg(repo);
    let o = run(c, LOCAL_TIMEOUT, what)?;
    if !o.status.success() {
        return Err(IngestError::Fetch {
            url: what.to_string(),
            message: format!(
                "cannot create the cache repository: {}",
                first_error_line(&o.stderr)
            ),
        });
    }
    Ok(())
}

/// How an ingest fetches its commit.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shape {
    /// `--depth 1`: the commit without its history.
    pub shallow: bool,
    /// `--filter=blob:none`: trees only; blobs come later by id.
    pub filter: bool,
    /// `--upload-pack` command for a local remote (see `LOCAL_UPLOAD_PACK`).
    pub upload_pack: Option<&'static str>,
}

/// Upload-pack run for local remotes so they honour a blob filter: git runs it
/// with the remote repository's own configuration, where `uploadpack.allowFilter`
/// is off unless set, and does not pass the fetching command's `-c` settings on.
pub(crate) const LOCAL_UPLOAD_PACK: &str = "git -c uploadpack.allowFilter=true upload-pack";

/// The remote of a cache repository fetched with a filter (see `set_promisor`).
const PROMISOR_REMOTE: &str = "monofs";

/// Configure the remote that filtered fetches into `repo` go through, as a
/// promisor: git then accepts packs without blobs, and `git cat-file` fetches
/// a missing blob from it on its own. Only local remotes are fetched filtered,
/// so no credential is written to the configuration.
fn set_promisor(repo: &Path, url: &str, shown: &str) -> Result<(), IngestError> {
    for (k, v) in [
        ("url", url),
        ("promisor", "true"),
        ("partialclonefilter", "blob:none"),
    ] {
        let mut c = git(Some(repo));
        c.args(["config", &format!("remote.{PROMISOR_REMOTE}.{k}"), v]);
        let o = run(c, LOCAL_TIMEOUT, shown)?;
        if !o.status.success() {
            return Err(IngestError::Fetch {
                url: shown.to_string(),
                message: format!("cannot configure the cache repository: {}", first_error_line(&o.stderr)),
            });
        }
    }
    Ok(())
}

/// What git prints when the remote ignores `--filter` (and sends every blob).
const FILTER_REFUSED: &str = "filtering not recognized by server";

/// Did git fail because the remote cannot serve a shallow fetch (dumb HTTP,
/// servers without the `shallow` capability)?
fn shallow_refused(stderr_lc: &str) -> bool {
    stderr_lc.contains("shallow") && (stderr_lc.contains("not support") || stderr_lc.contains("does not allow"))
}

/// Fetch `git_ref` (empty: HEAD) of `url` into the cache repo `repo`, as
/// `shape` says, and pin it under `refs/monofs/<pin>`. Returns the commit it
/// resolves to. A remote that refuses a shallow fetch gets the full history of
/// the ref, one that ignores the filter sends the blobs; each is logged once
/// per fetch.
pub(crate) fn fetch(
    repo: &Path,
    url: &str,
    git_ref: &str,
    pin: &str,
    shape: &Shape,
    timeout: Duration,
) -> Result<Fetched, IngestError> {
    let shown = redact(url);
    init_cache(repo, &shown)?;
    // Each fetch lands in its own temporary ref, so concurrent ingests of the same
    // URL do not race on FETCH_HEAD.
    let tmp = format!(
        "refs/monofs/tmp/{}-{}",
        std::process::id(),
        TMP_REF_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let src = if git_ref.is_empty() { "HEAD" } else { git_ref };
    // A filtered fetch makes the remote a promisor of the cache repository; git
    // names a promisor after its remote, and a path cannot be such a name.
    let from = if shape.filter {
        set_promisor(repo, url, &shown)?;
        PROMISOR_REMOTE
    } else {
        url
    };
    let attempt = |shallow: bool| {
        let mut c = fetch_command(repo, from, shape.upload_pack, |c| {
            if shallow {
                c.arg("--depth=1");
            }
            if shape.filter {
                c.arg("--filter=blob:none");
            }
        });
        c.arg(format!("+{src}:{tmp}"));
        run(c, timeout, &shown)
    };
    let mut o = attempt(shape.shallow)?;
    if !o.status.success() && shape.shallow && shallow_refused(&o.stderr.to_ascii_lowercase()) {
        tracing::warn!(url = %shown, reason = %first_error_line(&o.stderr), "the remote refuses shallow fetches; fetching the full history of the ref");
        o = attempt(false)?;
    }
    let mut filtered = shape.filter;
    if o.status.success() && shape.filter && o.stderr.contains(FILTER_REFUSED) {
        tracing::warn!(url = %shown, "the remote refuses filtered fetches (uploadpack.allowFilter); the commit was fetched with its blobs");
        filtered = false;
    }
    if !o.status.success() {
        let msg = first_error_line(&o.stderr);
        let lc = o.stderr.to_ascii_lowercase();
        let ref_missing = lc.contains("couldn't find remote ref")
            || lc.contains("not our ref")
            || lc.contains("unadvertised object")
            || (is_full_sha(git_ref) && lc.contains("upload-pack: not our"));
        if ref_missing && !git_ref.is_empty() {
            return Err(IngestError::RefNotFound {
                git_ref: git_ref.to_string(),
                url: shown,
            });
        }
        return Err(IngestError::Fetch {
            url: shown,
            message: msg,
        });
    }
    let result = (|| {
        let mut c = git(Some(repo));
        c.args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{tmp}^{{commit}}"));
        let o = run(c, LOCAL_TIMEOUT, &shown)?;
        let commit = o.stdout.trim().to_string();
        if !o.status.success() || !is_full_sha(&commit) {
            return Err(IngestError::BadContent(format!(
                "ref '{src}' of {shown} does not point to a commit"
            )));
        }
        let mut c = git(Some(repo));
        c.args([
            "update-ref",
            "--no-deref",
            &format!("refs/monofs/{pin}"),
            &commit,
        ]);
        let o = run(c, LOCAL_TIMEOUT, &shown)?;
        if !o.status.success() {
            return Err(IngestError::Fetch {
                url: shown.clone(),
                message: format!(
                    "cannot pin the fetched commit: {}",
                    first_error_line(&o.stderr)
                ),
            });
        }
        Ok(Fetched {
            repo: repo.to_path_buf(),
            commit,
            filtered,
        })
    })();
    let mut c = git(Some(repo));
    c.args(["update-ref", "-d", &tmp]);
    let _ = run(c, LOCAL_TIMEOUT, &shown);
    result
}

/// `git fetch` of `url` into `repo`, refspecs to follow: no tags unless asked,
/// no FETCH_HEAD (concurrent fetches would race on it), no submodules, and the
/// URL never taken for an option. `options` adds options before the URL.
fn fetch_command(repo: &Path, url: &str, upload_pack: Option<&str>, options: impl FnOnce(&mut Command)) -> Command {
    let mut c = git(Some(repo));
    c.args(["fetch", "--no-tags", "--quiet", "--no-write-fetch-head", "--no-recurse-submodules"]);
    if let Some(u) = upload_pack {
        c.arg(format!("--upload-pack={u}"));
    }
    options(&mut c);
    c.arg("--end-of-options").arg(url);
    c
}

/// Most object ids named in one `git fetch` (each is a command-line argument).
pub const MAX_OIDS_PER_FETCH: usize = 1024;

/// Fetch objects by id (hexadecimal) from `url` into `repo`, up to
/// MAX_OIDS_PER_FETCH per `git fetch`. The noop negotiation sends no `have`
/// lines: the objects are named, nothing needs to be found in common. Protocol
/// v2 upload-pack serves any object by id; an older one only with
/// `uploadpack.allowAnySHA1InWant`, and refuses otherwise (see `by_id_refused`).
fn fetch_objects(repo: &Path, url: &str, oids: &[String], timeout: Duration) -> Result<(), IngestError> {
    let shown = redact(url);
    init_cache(repo, &shown)?;
    for group in oids.chunks(MAX_OIDS_PER_FETCH) {
        let mut c = git(Some(repo));
        c.args(["-c", "fetch.negotiationAlgorithm=noop"]);
        c.args(["fetch", "--no-tags", "--quiet", "--no-write-fetch-head", "--no-recurse-submodules", "--end-of-options"]);
        c.arg(url).args(group);
        let o = run(c, timeout, &shown)?;
        if !o.status.success() {
            return Err(IngestError::Fetch {
                url: shown,
                message: format!("fetching {} objects by id: {}", group.len(), first_error_line(&o.stderr)),
            });
        }
    }
    Ok(())
}

/// Did a fetch by id fail because the remote does not serve unadvertised objects?
fn by_id_refused(e: &IngestError) -> bool {
    match e {
        IngestError::Fetch { message, .. } => {
            let lc = message.to_ascii_lowercase();
            lc.contains("not our ref") || lc.contains("unadvertised object") || lc.contains("no such remote ref")
        }
        _ => false,
    }
}

/// Fetch the blobs of `oids` that `repo` (opened at `repo_path`) lacks: by id,
/// or, from a remote that refuses that, every branch and tag (logged). Returns
/// how many were missing.
pub(crate) fn fetch_missing(
    repo: &gix::Repository,
    repo_path: &Path,
    url: &str,
    oids: &[monofs_net::Oid],
    timeout: Duration,
) -> Result<usize, IngestError> {
    let missing: Vec<String> = oids
        .iter()
        .filter(|o| !repo.has_object(gix::ObjectId::from_bytes_or_panic(&o[..])))
        .map(monofs_net::oid_hex)
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    fetch_by_id(repo_path, url, &missing, timeout)?;
    Ok(missing.len())
}

/// `fetch_objects`, or, from a remote that refuses fetches by id, every branch
/// and tag (logged).
pub(crate) fn fetch_by_id(repo: &Path, url: &str, oids: &[String], timeout: Duration) -> Result<(), IngestError> {
    match fetch_objects(repo, url, oids, timeout) {
        Err(e) if by_id_refused(&e) => {
            tracing::warn!(url = %redact(url), error = %e, "the remote refuses fetches by object id; fetching every branch and tag");
            fetch_default_refs(repo, url, timeout)
        }
        r => r,
    }
}

/// Fetch every branch and tag of `url` into `repo` (under `refs/monofs/heads/`
/// and `refs/monofs/tags/`), with their history: how a blob is found on a remote
/// that refuses fetches by id (a FETCH_BLOB does not name the ref it came from).
pub(crate) fn fetch_default_refs(repo: &Path, url: &str, timeout: Duration) -> Result<(), IngestError> {
    let shown = redact(url);
    init_cache(repo, &shown)?;
    let mut c = fetch_command(repo, url, None, |_| {});
    c.arg("+refs/heads/*:refs/monofs/heads/*").arg("+refs/tags/*:refs/monofs/tags/*");
    let o = run(c, timeout, &shown)?;
    if !o.status.success() {
        return Err(IngestError::Fetch { url: shown, message: first_error_line(&o.stderr) });
    }
    Ok(())
}

/// The branch the remote's HEAD points at (`main`), if the remote says.
/// Bounded by `LS_REMOTE_TIMEOUT` and by `timeout` (the fetch timeout), whichever is shorter.
pub(crate) fn remote_head_branch(url: &str, timeout: Duration) -> Option<String> {
    let mut c = git(None);
    c.args(["ls-remote", "--symref", "--end-of-options"])
        .arg(url)
        .arg("HEAD");
    let o = run(c, LS_REMOTE_TIMEOUT.min(timeout), url).ok()?;
    if !o.status.success() {
        return None;
    }
    o.stdout.lines().find_map(|l| {
        let rest = l.strip_prefix("ref: ")?;
        let (target, name) = rest.split_once('\t')?;
        if name.trim() != "HEAD" {
            return None;
        }
        Some(
            target
                .strip_prefix("refs/heads/")
                .unwrap_or(target)
                .to_string(),
        )
    })
}

/// A blob streamed from `git cat-file blob`, for blobs too big to hold in memory.
pub(crate) struct BlobStream {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<Vec<u8>>>,
    deadline: Instant,
}

impl BlobStream {
    pub fn open(repo: &Path, oid_hex: &str, timeout: Duration) -> Result<BlobStream, IngestError> {
        let mut c = git(Some(repo));
        c.args(["cat-file", "blob", oid_hex])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| {
            IngestError::BadContent(format!("cannot run git cat-file for blob {oid_hex}: {e}"))
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = Some(drain(child.stderr.take().expect("piped"), MAX_STDERR));
        Ok(BlobStream {
            child,
            stdout,
            stderr,
            deadline: Instant::now() + timeout,
        })
    }

    /// Fill `buf` completely unless the blob ends; returns the bytes read.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, IngestError> {
        let mut n = 0;
        while n < buf.len() {
            if Instant::now() > self.deadline {
                return Err(IngestError::BadContent(
                    "reading a large blob took too long".into(),
                ));
            }
            match self.stdout.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(IngestError::BadContent(format!(
                        "reading a large blob from git: {e}"
                    )))
                }
            }
        }
        Ok(n)
    }

    /// Wait for git and report its failure, if any.
    pub fn finish(mut self) -> Result<(), IngestError> {
        let status = self
            .child
            .wait()
            .map_err(|e| IngestError::BadContent(format!("git cat-file: {e}")))?;
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(IngestError::BadContent(format!(
                "git cat-file failed: {}",
                first_error_line(&String::from_utf8_lossy(&err))
            )));
        }
        Ok(())
    }
}

impl Drop for BlobStream {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
