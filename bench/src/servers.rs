//! The servers a comparison starts: a one-machine MonoFS cluster and nfs-ganesha (VFS FSAL)
//! with rpcbind, and the test repositories they serve.

use crate::env::{self, Proc};
use crate::load::Target;
use crate::rpc::SyncClient;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generates (or reuses) the test repositories with tests/gen-repos.sh into `dir`.
pub fn gen_repos(root: &Path, dir: &Path, many: u32, big_mb: u32) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    env::run_ok(
        Command::new(root.join("tests/gen-repos.sh")).arg(dir).args(["--many", &many.to_string(), "--big-mb", &big_mb.to_string()]),
        "tests/gen-repos.sh",
    )?;
    Ok(dir.join("content"))
}

/// A plain checkout (no .git) of `repo` at its HEAD under `dest`, for nfs-ganesha to
/// export: the very tree MonoFS serves. Reused while the commit is the same.
pub fn checkout(repo: &Path, dest: &Path) -> Result<String> {
    let commit = env::output(Command::new("git").arg("-C").arg(repo).args(["rev-parse", "HEAD"]), "git rev-parse")?;
    let stamp = dest.with_extension("commit");
    if dest.is_dir() && std::fs::read_to_string(&stamp).unwrap_or_default() == commit {
        return Ok(commit);
    }
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest)?;
    let sh = format!(
        "git -C '{}' archive --format=tar HEAD | tar -x -C '{}'",
        repo.display(),
        dest.display()
    );
    env::run_ok(Command::new("sh").arg("-c").arg(sh), "git archive | tar -x")?;
    std::fs::write(&stamp, &commit)?;
    Ok(commit)
}

pub struct MonoFs {
    _proc: Proc,
    pub nfs_port: u16,
    pub http_port: u16,
    data: PathBuf,
}

impl MonoFs {
    pub fn start(bin: &Path, work: &Path, nodes: u32, shards: u32) -> Result<MonoFs> {
        let data = work.join("monofs-data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let p = env::free_ports(3, 1)?;
        let node_base = env::free_ports(1, (10 * nodes + shards) as u16)?[0];
        let mut cmd = Command::new(bin);
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args(["--port", &p[0].to_string(), "--http-port", &p[1].to_string(), "--fetcher-port", &p[2].to_string()])
            .args(["--node-port", &node_base.to_string(), "--nodes", &nodes.to_string(), "--shards", &shards.to_string()])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        let mut proc_ = Proc::spawn("monofs up", &mut cmd, &work.join("monofs-up.log"))?;
        for port in [p[0], p[1]] {
            if env::wait_port(port, Duration::from_secs(60)).is_err() || !proc_.alive() {
                bail!("monofs up did not start:\n{}", proc_.log_tail());
            }
        }
        Ok(MonoFs { _proc: proc_, nfs_port: p[0], http_port: p[1], data })
    }

    pub fn pid(&self) -> u32 {
        self._proc.child.id()
    }

    pub fn router(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `monofs ingest URL` against this cluster, with its admin token.
    pub fn ingest_command(&self, bin: &Path, url: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(bin);
        c.arg("ingest").arg(url).args(["--router", &self.router()]).arg("--admin-token-file").arg(self.data.join("admin.token"));
        c
    }

    /// `monofs ingest PATH` at `local/<its directory name>` (see `target`);
    /// returns the wall-clock time it took.
    pub fn ingest(&self, bin: &Path, repo: &Path) -> Result<Duration> {
        let name = repo.file_name().and_then(|n| n.to_str()).context("repository path has no UTF-8 name")?;
        let t = Instant::now();
        env::run_ok(self.ingest_command(bin, repo).args(["--source-id", &format!("local/{name}")]), "monofs ingest")?;
        Ok(t.elapsed())
    }

    pub fn target(&self, name: &str) -> Target {
        let a = format!("127.0.0.1:{}", self.nfs_port);
        Target { name: "monofs".into(), addr: a.clone(), mount_addr: a, export: "/".into(), root: format!("local/{name}") }
    }
}

pub struct Ganesha {
    // dropped in field order: ganesha first, then rpcbind
    _ganesha: Proc,
    _rpcbind: Proc,
    pub nfs_port: u16,
    pub mnt_port: u16,
    pub export: PathBuf,
}

impl Ganesha {
    /// rpcbind and nfs-ganesha (NFSv3 only, VFS FSAL, read-only export of `export`). Only
    /// inside the private network namespace (rpcbind must own port 111 there).
    pub fn start(work: &Path, export: &Path) -> Result<Ganesha> {
        let ganesha = env::find_sbin("ganesha.nfsd").context("ganesha.nfsd not installed (apt-get install nfs-ganesha nfs-ganesha-vfs)")?;
        let rpcbind = env::find_sbin("rpcbind").context("rpcbind not installed (apt-get install rpcbind)")?;
        let gdir = work.join("ganesha");
        let _ = std::fs::remove_dir_all(&gdir);
        std::fs::create_dir_all(gdir.join("recovery"))?;
        let rpcb = Proc::spawn("rpcbind", Command::new(rpcbind).args(["-f", "-w"]), &gdir.join("rpcbind.log"))?;
        env::wait_port(111, Duration::from_secs(10)).context("rpcbind")?;
        let p = env::free_ports(2, 1)?;
        let (nfs_port, mnt_port) = (p[0], p[1]);
        let export = export.canonicalize()?;
        let conf = format!(
            r#"NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {nfs_port};
    MNT_Port = {mnt_port};
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryRoot = "{rec}";
}}
EXPORT_DEFAULTS {{
    Access_Type = RO;
    Squash = No_Root_Squash;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{path}";
    Pseudo = "{path}";
    Access_Type = RO;
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{
    Default_Log_Level = WARN;
}}
"#,
            rec = gdir.join("recovery").display(),
            path = export.display()
        );
        let conf_path = gdir.join("ganesha.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(ganesha);
        cmd.arg("-F").arg("-L").arg(gdir.join("ganesha.log")).arg("-f").arg(&conf_path).arg("-p").arg(gdir.join("ganesha.pid"));
        let mut proc_ = Proc::spawn("ganesha.nfsd", &mut cmd, &gdir.join("ganesha.out"))?;
        let end = Instant::now() + Duration::from_secs(90);
        let mut last;
        loop {
            if !proc_.alive() {
                bail!(
                    "ganesha.nfsd exited:\n{}\n{}",
                    proc_.log_tail(),
                    tail(&gdir.join("ganesha.log"))
                );
            }
            match SyncClient::connect(&format!("127.0.0.1:{mnt_port}")).and_then(|mut c| c.mount(&export.to_string_lossy())) {
                Ok(fh) => {
                    // NFS answers too (not in grace for reads)?
                    let ok = SyncClient::connect(&format!("127.0.0.1:{nfs_port}")).and_then(|mut c| c.getattr(&fh));
                    if let Err(e) = ok {
                        last = format!("{e:#}");
                    } else {
                        break;
                    }
                }
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > end {
                bail!(
                    "nfs-ganesha not serving after 90 s ({last}):\n{}",
                    tail(&gdir.join("ganesha.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Ganesha { _ganesha: proc_, _rpcbind: rpcb, nfs_port, mnt_port, export })
    }

    pub fn pid(&self) -> u32 {
        self._ganesha.child.id()
    }

    pub fn target(&self) -> Target {
        Target {
            name: "ganesha".into(),
            addr: format!("127.0.0.1:{}", self.nfs_port),
            mount_addr: format!("127.0.0.1:{}", self.mnt_port),
            export: self.export.to_string_lossy().into_owned(),
            root: String::new(),
        }
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| !l.contains("SetComponentLogLevel")).collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
