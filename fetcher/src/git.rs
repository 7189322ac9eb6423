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

/// Fetch `git_ref` (empty: HEAD) of `url` into the cache repo `repo` and pin it
/// under `refs/monofs/<pin>`. Returns the commit it resolves to.
pub(crate) fn fetch(
    repo: &Path,
    url: &str,
    git_ref: &str,
    pin: &str,
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
    let mut c = fetch_command(repo, url);
    c.arg(format!("+{src}:{tmp}"));
    let o = run(c, timeout, &shown)?;
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
        })
    })();
    let mut c = git(Some(repo));
    c.args(["update-ref", "-d", &tmp]);
    let _ = run(c, LOCAL_TIMEOUT, &shown);
    result
}

/// `git fetch` of `url` into `repo`, refspecs to follow: no tags unless asked,
/// no FETCH_HEAD (concurrent fetches would race on it), no submodules, and the
/// URL never taken for an option.
fn fetch_command(repo: &Path, url: &str) -> Command {
    let mut c = git(Some(repo));
    c.args([
        "fetch",
        "--no-tags",
        "--quiet",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--end-of-options",
    ])
    .arg(url);
    c
}

/// Fetch every branch and tag of `url` into `repo` (under `refs/monofs/heads/`
/// and `refs/monofs/tags/`): how an object is found again after its cache was
/// evicted, since a FETCH_BLOB does not name the ref it came from.
pub(crate) fn fetch_default_refs(repo: &Path, url: &str, timeout: Duration) -> Result<(), IngestError> {
    let shown = redact(url);
    init_cache(repo, &shown)?;
    let mut c = fetch_command(repo, url);
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
