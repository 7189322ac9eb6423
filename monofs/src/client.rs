//! `monofs ls|cat|stat`: browse the namespace without mounting, speaking NFSv3
//! to the router through an independent client implementation (`nfs3_client`),
//! never through MonoFS's own server code.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use nfs3_client::nfs3_types::nfs3::{
    self, cookieverf3, diropargs3, fattr3, filename3, ftype3, nfs_fh3, nfsstat3, Nfs3Option,
    Nfs3Result,
};
use nfs3_client::tokio::TokioIo;
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};
use tokio::net::{TcpSocket, TcpStream};
use serde_json::json;

use crate::exit;

#[derive(clap::Args)]
pub struct PathArgs {
    /// Path in the namespace, e.g. /github.com/org/repo/README.md
    pub path: String,
    /// Router NFS address.
    #[arg(long, env = "MONOFS_SERVER", default_value = "127.0.0.1:20490")]
    pub server: String,
    /// Local address to connect from (the router's export rules admit clients by
    /// address); default: chosen by the system.
    #[arg(long, env = "MONOFS_BIND")]
    pub bind: Option<IpAddr>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub p: PathArgs,
    /// Long format: type, mode, size, mtime.
    #[arg(short, long)]
    pub long: bool,
}

/// Bytes asked for per READ.
const READ_SIZE: u32 = 1 << 20;
/// Bytes asked for per READDIRPLUS.
const DIR_SIZE: u32 = 256 << 10;

type Conn = Nfs3Connection<TokioIo<TcpStream>>;

/// Connects from `--bind` if given, from any address otherwise.
struct Connector(Option<IpAddr>);

impl nfs3_client::net::Connector for Connector {
    type Connection = TokioIo<TcpStream>;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Connection> {
        self.connect_with_port(addr, 0).await
    }

    async fn connect_with_port(
        &self,
        addr: SocketAddr,
        local_port: u16,
    ) -> std::io::Result<Self::Connection> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let any = if addr.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        if self.0.is_some() || local_port != 0 {
            socket.bind(SocketAddr::new(self.0.unwrap_or(any), local_port))?;
        }
        Ok(TokioIo::new(socket.connect(addr).await?))
    }
}

enum Fail {
    NotFound(String),
    Unreachable(String),
    Other(String),
}

fn finish(r: Result<(), Fail>) -> anyhow::Result<ExitCode> {
    Ok(match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::NotFound(m)) => {
            eprintln!("monofs: {m}");
            ExitCode::from(exit::NOT_FOUND)
        }
        Err(Fail::Unreachable(m)) => {
            eprintln!("monofs: {m}");
            ExitCode::from(exit::UNREACHABLE)
        }
        Err(Fail::Other(m)) => {
            eprintln!("monofs: {m}");
            ExitCode::from(exit::FAILURE)
        }
    })
}

fn block_on<F: std::future::Future<Output = Result<(), Fail>>>(f: F) -> Result<(), Fail> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::Other(format!("runtime: {e}")))?;
    // Every call is bounded: a server that stops answering ends the command.
    rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(300), f).await })
        .unwrap_or_else(|_| Err(Fail::Unreachable("the server stopped answering".into())))
}

async fn connect(server: &str, bind: Option<IpAddr>) -> Result<Conn, Fail> {
    let (host, port) = server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| Fail::Other(format!("--server '{server}' is not host:port")))?;
    Nfs3ConnectionBuilder::new(Connector(bind), host, "/")
        .connect_from_privileged_port(false)
        .mount_port(port)
        .nfs3_port(port)
        .mount()
        .await
        .map_err(|e| match e {
            // Reached and refused: the router's export rules do not admit this address or port.
            nfs3_client::ConnectError::Mount(nfs3_client::MountError::Denied(s)) => {
                Fail::Other(format!("{server} refused the mount of /: {s:?}"))
            }
            e => Fail::Unreachable(format!("cannot mount {server}:/: {e}")),
        })
}

fn status_fail(what: &str, path: &str, s: nfsstat3) -> Fail {
    match s {
        nfsstat3::NFS3ERR_NOENT => Fail::NotFound(format!("{path}: no such file or directory")),
        other => Fail::Other(format!("{what} {path}: {other:?}")),
    }
}

fn rpc_fail(what: &str, path: &str, e: impl std::fmt::Display) -> Fail {
    Fail::Unreachable(format!("{what} {path}: {e}"))
}

/// Walk `path` from the root with LOOKUP; returns the handle and attributes.
async fn resolve(c: &mut Conn, path: &str) -> Result<(nfs_fh3, fattr3), Fail> {
    let mut fh = c.root_nfs_fh3();
    let mut attr = match c
        .getattr(&nfs3::GETATTR3args { object: fh.clone() })
        .await
        .map_err(|e| rpc_fail("getattr", "/", e))?
    {
        Nfs3Result::Ok(ok) => ok.obj_attributes,
        Nfs3Result::Err((s, _)) => return Err(status_fail("getattr", "/", s)),
    };
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let args = nfs3::LOOKUP3args {
            what: diropargs3 {
                dir: fh.clone(),
                name: filename3::from(comp.as_bytes()),
            },
        };
        match c
            .lookup(&args)
            .await
            .map_err(|e| rpc_fail("lookup", path, e))?
        {
            Nfs3Result::Ok(ok) => {
                fh = ok.object;
                attr = match ok.obj_attributes {
                    Nfs3Option::Some(a) => a,
                    Nfs3Option::None => {
                        return Err(Fail::Other(format!(
                            "lookup {path}: server sent no attributes"
                        )))
                    }
                };
            }
            Nfs3Result::Err((s, _)) => return Err(status_fail("lookup", path, s)),
        }
    }
    Ok((fh, attr))
}

fn kind(t: &ftype3) -> &'static str {
    match t {
        ftype3::NF3REG => "file",
        ftype3::NF3DIR => "dir",
        ftype3::NF3LNK => "symlink",
        _ => "other",
    }
}

fn attr_json(a: &fattr3) -> serde_json::Value {
    json!({
        "type": kind(&a.type_),
        "mode": format!("{:o}", a.mode),
        "size": a.size,
        "nlink": a.nlink,
        "fileid": a.fileid,
        "mtime": a.mtime.seconds,
    })
}

pub fn ls(a: &LsArgs) -> anyhow::Result<ExitCode> {
    let p = &a.p;
    finish(block_on(async {
        let mut c = connect(&p.server, p.bind).await?;
        let (dir, attr) = resolve(&mut c, &p.path).await?;
        if !matches!(attr.type_, ftype3::NF3DIR) {
            return Err(Fail::Other(format!("{}: not a directory", p.path)));
        }
        let (mut cookie, mut verf) = (0u64, cookieverf3::default());
        let mut out = std::io::stdout().lock();
        let mut all = Vec::new();
        loop {
            let args = nfs3::READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf: verf,
                dircount: DIR_SIZE,
                maxcount: DIR_SIZE,
            };
            let ok = match c
                .readdirplus(&args)
                .await
                .map_err(|e| rpc_fail("readdir", &p.path, e))?
            {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((s, _)) => return Err(status_fail("readdir", &p.path, s)),
            };
            verf = ok.cookieverf;
            for e in &ok.reply.entries.0 {
                cookie = e.cookie;
                let name = String::from_utf8_lossy(&e.name.0).to_string();
                if name == "." || name == ".." {
                    continue;
                }
                let attr = match &e.name_attributes {
                    Nfs3Option::Some(a) => Some(a.clone()),
                    Nfs3Option::None => None,
                };
                if p.json {
                    let mut v = json!({"name": name});
                    if let Some(a) = &attr {
                        v["attr"] = attr_json(a);
                    }
                    all.push(v);
                } else if a.long {
                    let (t, m, s, mt) = attr
                        .map(|a| (kind(&a.type_), a.mode, a.size, a.mtime.seconds))
                        .unwrap_or(("?", 0, 0, 0));
                    let _ = writeln!(out, "{t:<7} {m:04o} {s:>12} {mt:>10} {name}");
                } else {
                    let _ = writeln!(out, "{name}");
                }
            }
            if ok.reply.eof {
                break;
            }
            if ok.reply.entries.0.is_empty() {
                return Err(Fail::Other(
                    "server returned an empty page without eof".into(),
                ));
            }
        }
        if p.json {
            let _ = writeln!(out, "{}", serde_json::Value::Array(all));
        }
        Ok(())
    }))
}

pub fn cat(p: &PathArgs) -> anyhow::Result<ExitCode> {
    finish(block_on(async {
        let mut c = connect(&p.server, p.bind).await?;
        let (fh, attr) = resolve(&mut c, &p.path).await?;
        if !matches!(attr.type_, ftype3::NF3REG) {
            return Err(Fail::Other(format!("{}: not a regular file", p.path)));
        }
        let mut out = std::io::stdout().lock();
        let mut offset = 0u64;
        loop {
            let args = nfs3::READ3args {
                file: fh.clone(),
                offset,
                count: READ_SIZE,
            };
            let ok = match c
                .read(&args)
                .await
                .map_err(|e| rpc_fail("read", &p.path, e))?
            {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((s, _)) => return Err(status_fail("read", &p.path, s)),
            };
            out.write_all(&ok.data)
                .map_err(|e| Fail::Other(format!("stdout: {e}")))?;
            offset += ok.data.len() as u64;
            if ok.eof {
                break;
            }
            if ok.data.is_empty() {
                return Err(Fail::Other(format!(
                    "read {}: server returned no data before end of file",
                    p.path
                )));
            }
        }
        out.flush()
            .map_err(|e| Fail::Other(format!("stdout: {e}")))?;
        Ok(())
    }))
}

pub fn stat(p: &PathArgs) -> anyhow::Result<ExitCode> {
    finish(block_on(async {
        let mut c = connect(&p.server, p.bind).await?;
        let (fh, a) = resolve(&mut c, &p.path).await?;
        let mut v = attr_json(&a);
        v["path"] = json!(p.path);
        if matches!(a.type_, ftype3::NF3LNK) {
            if let Nfs3Result::Ok(ok) = c
                .readlink(&nfs3::READLINK3args { symlink: fh })
                .await
                .map_err(|e| rpc_fail("readlink", &p.path, e))?
            {
                v["target"] = json!(String::from_utf8_lossy(&ok.data.0));
            }
        }
        if p.json {
            println!("{v}");
        } else {
            println!("  Path: {}", p.path);
            println!("  Type: {}", v["type"].as_str().unwrap_or("?"));
            if let Some(t) = v.get("target").and_then(|t| t.as_str()) {
                println!("Target: {t}");
            }
            println!("  Mode: {:04o}", a.mode);
            println!("  Size: {}", a.size);
            println!(" Links: {}", a.nlink);
            println!("FileId: {}", a.fileid);
            println!(" Mtime: {}", a.mtime.seconds);
        }
        Ok(())
    }))
}
