//! The environment a run needs: the MonoFS source tree and binaries, free ports, child
//! processes that are stopped (by pid) when dropped, a private network namespace.

use anyhow::{bail, Context, Result};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The MonoFS source tree: $MONOFS_ROOT, else the ancestor of this executable (or of the
/// working directory) holding `bench/Cargo.toml`.
pub fn monofs_root() -> Result<PathBuf> {
    if let Ok(r) = std::env::var("MONOFS_ROOT") {
        return Ok(PathBuf::from(r));
    }
    let mut starts = vec![];
    if let Ok(e) = std::env::current_exe() {
        starts.push(e);
    }
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    for s in starts {
        for a in s.ancestors() {
            if a.join("bench/Cargo.toml").is_file() && a.join("Cargo.toml").is_file() {
                return Ok(a.to_path_buf());
            }
        }
    }
    bail!("cannot find the MonoFS source tree; set MONOFS_ROOT")
}

/// The MonoFS cluster a benchmark starts (`monofs up`).
#[derive(clap::Args)]
pub struct ClusterArgs {
    /// MonoFS binary (default: target/release/monofs, built first).
    #[arg(long)]
    pub monofs_bin: Option<PathBuf>,
    /// Storage nodes.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
}

/// `target/release/monofs`, built first (`cargo build --release -p monofs`, a no-op when up
/// to date) unless `explicit` names a binary.
pub fn monofs_bin(root: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let bin = root.join("target/release/monofs");
    if std::env::var_os("MONOFS_BENCH_NO_BUILD").is_none() && which("cargo") {
        eprintln!("bench: cargo build --release -p monofs");
        let st = Command::new("cargo").args(["build", "--release", "-p", "monofs"]).current_dir(root).status()?;
        if !st.success() {
            bail!("cargo build --release -p monofs failed");
        }
    }
    if !bin.is_file() {
        bail!("{} missing: cargo build --release -p monofs", bin.display());
    }
    Ok(bin)
}

pub fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || Path::new(cmd).is_file()
}

pub fn find_sbin(cmd: &str) -> Option<PathBuf> {
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(d).join(cmd);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// `n` distinct free TCP ports on 127.0.0.1 in 21000..32000 whose next `span` ports are
/// free too (held while choosing so they differ).
pub fn free_ports(n: usize, span: u16) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut out = Vec::new();
    let mut seed = (std::process::id() as u64) ^ (Instant::now().elapsed().as_nanos() as u64) ^ 0x9e37;
    for _ in 0..5000 {
        if out.len() == n {
            return Ok(out);
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let p = 21000 + ((seed >> 33) % 11000) as u16;
        let mut socks = Vec::new();
        let mut ok = true;
        for q in p..p + span.max(1) {
            match TcpListener::bind(("127.0.0.1", q)) {
                Ok(s) => socks.push(s),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            out.push(p);
            held.extend(socks);
        }
    }
    bail!("no free ports")
}

pub fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port {port} not accepting connections after {timeout:?}")
}

/// A child process, sent SIGTERM (then SIGKILL) by pid when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name: name.into(), child, log: log.to_path_buf() })
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("bench: {} (pid {pid}) did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub const NETNS_ENV: &str = "MONOFS_BENCH_NETNS";

/// Re-executes this process in a private network and mount namespace (loopback only, a
/// private /run) when running as root, so rpcbind, nfs-ganesha, MonoFS and the load
/// generator see nothing of the host and the host sees nothing of them. Returns Ok(None)
/// when already inside (or when it cannot), Ok(Some(status)) after the child ran.
pub fn enter_netns() -> Result<Option<i32>> {
    if std::env::var_os(NETNS_ENV).is_some() {
        setup_inside()?;
        return Ok(None);
    }
    if unsafe { libc::geteuid() } != 0 || !which("unshare") {
        eprintln!("bench: not root (or no unshare): running on the host's loopback without nfs-ganesha");
        return Ok(None);
    }
    let exe = std::env::current_exe()?;
    let st = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, "1")
        .status()
        .context("unshare")?;
    Ok(Some(st.code().unwrap_or(1)))
}

pub fn in_netns() -> bool {
    std::env::var_os(NETNS_ENV).is_some()
}

fn setup_inside() -> Result<()> {
    let st = Command::new(find_sbin("ip").unwrap_or_else(|| "ip".into())).args(["link", "set", "lo", "up"]).status()?;
    if !st.success() {
        bail!("ip link set lo up failed");
    }
    // A private /run: rpcbind's socket and ganesha's pid file never meet the host's.
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "mode=755,size=64m", "monofs-bench-run", "/run"]).status()?;
    if !st.success() {
        bail!("mounting a private /run failed");
    }
    for d in ["/run/ganesha", "/run/rpcbind", "/run/lock"] {
        std::fs::create_dir_all(d)?;
    }
    Ok(())
}

pub fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
