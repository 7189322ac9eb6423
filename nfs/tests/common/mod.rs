//! An in-memory read-only tree served by `serve_tcp` on 127.0.0.1:0.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use monofs_nfs::*;

pub const HELLO: &[u8] = b"hello, monofs\n";
pub const SECRET: &[u8] = b"root only\n";
pub const MINE: &[u8] = b"uid 1000 only\n";
/// Owner of /sub/mine.txt (0600).
pub const USER: u32 = 1000;
pub const MANY: usize = 3000;
pub const BIG_LEN: usize = 300 * 1024 + 17;

pub fn big_content() -> Vec<u8> {
    (0..BIG_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

pub fn many_name(i: usize) -> String {
    format!("entry-{i:05}")
}

enum Node {
    Dir(Vec<(Vec<u8>, Vec<u8>)>),
    File(Vec<u8>),
    Link(Vec<u8>),
}

/// Handles are the node's path ("/" for the root); fileids are positions in the map.
/// Everything is root's and world-readable (0755 / 0644) except the entries in `owners`.
pub struct MemFs {
    nodes: BTreeMap<Vec<u8>, (u64, Node)>,
    /// Path → (mode, uid, gid) for the private entries under /sub.
    owners: BTreeMap<Vec<u8>, (u32, u32, u32)>,
}

impl MemFs {
    pub fn new() -> MemFs {
        let mut fs = MemFs { nodes: BTreeMap::new(), owners: BTreeMap::new() };
        fs.add(b"/", Node::Dir(Vec::new()));
        fs.add_child(b"/", b"hello.txt", Node::File(HELLO.to_vec()));
        fs.add_child(b"/", b"big.bin", Node::File(big_content()));
        fs.add_child(b"/", b"link", Node::Link(b"hello.txt".to_vec()));
        fs.add_child(b"/", b"sub", Node::Dir(Vec::new()));
        fs.add_child(b"/sub", b"nested.txt", Node::File(b"nested\n".to_vec()));
        fs.add_child(b"/sub", b"secret.txt", Node::File(SECRET.to_vec()));
        fs.owners.insert(b"/sub/secret.txt".to_vec(), (0o600, 0, 0));
        fs.add_child(b"/sub", b"vault", Node::Dir(Vec::new()));
        fs.owners.insert(b"/sub/vault".to_vec(), (0o700, 0, 0));
        fs.add_child(b"/sub/vault", b"inner.txt", Node::File(SECRET.to_vec()));
        fs.add_child(b"/sub", b"mine.txt", Node::File(MINE.to_vec()));
        fs.owners.insert(b"/sub/mine.txt".to_vec(), (0o600, USER, USER));
        fs.add_child(b"/", b"many", Node::Dir(Vec::new()));
        for i in 0..MANY {
            fs.add_child(b"/many", many_name(i).as_bytes(), Node::File(Vec::new()));
        }
        fs
    }

    fn add(&mut self, path: &[u8], node: Node) {
        let id = self.nodes.len() as u64 + 1;
        self.nodes.insert(path.to_vec(), (id, node));
    }

    fn add_child(&mut self, dir: &[u8], name: &[u8], node: Node) {
        let mut path = if dir == b"/" { Vec::new() } else { dir.to_vec() };
        path.push(b'/');
        path.extend_from_slice(name);
        self.add(&path, node);
        if let Some((_, Node::Dir(children))) = self.nodes.get_mut(dir) {
            children.push((name.to_vec(), path));
        }
    }

    fn node(&self, fh: &[u8]) -> Result<&(u64, Node), Status> {
        self.nodes.get(fh).ok_or(Status::Stale)
    }
}

impl Backend for MemFs {
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus> {
        if path == b"/" { Ok(b"/".to_vec()) } else { Err(MountStatus::NoEnt) }
    }
    fn exports(&self) -> Vec<Vec<u8>> {
        vec![b"/".to_vec()]
    }
    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status> {
        let (id, node) = self.node(fh)?;
        let (ftype, mode, size) = match node {
            Node::Dir(c) => (Ftype::Dir, 0o755, c.len() as u64),
            Node::File(d) => (Ftype::Reg, 0o644, d.len() as u64),
            Node::Link(t) => (Ftype::Lnk, 0o777, t.len() as u64),
        };
        let (mode, uid, gid) = self.owners.get(fh).copied().unwrap_or((mode, 0, 0));
        let t = Time { seconds: 1_700_000_000, nseconds: 0 };
        Ok(Fattr { ftype, mode, nlink: 1, uid, gid, size, used: size, rdev: (0, 0), fsid: 7, fileid: *id, atime: t, mtime: t, ctime: t })
    }
    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status> {
        let Node::Dir(children) = &self.node(dir)?.1 else { return Err(Status::NotDir) };
        let path = match name {
            b"." => dir.to_vec(),
            b".." => match dir.iter().rposition(|&c| c == b'/') {
                Some(0) | None => b"/".to_vec(),
                Some(i) => dir[..i].to_vec(),
            },
            _ => children.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()).ok_or(Status::NoEnt)?,
        };
        let attr = self.getattr(&path)?;
        Ok((path, attr))
    }
    fn read(&self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), Status> {
        match &self.node(fh)?.1 {
            Node::File(d) => {
                let start = (offset.min(d.len() as u64)) as usize;
                let end = start.saturating_add(count as usize).min(d.len());
                Ok((d[start..end].to_vec(), end == d.len()))
            }
            Node::Dir(_) => Err(Status::IsDir),
            Node::Link(_) => Err(Status::Inval),
        }
    }
    fn readlink(&self, fh: &[u8]) -> Result<Vec<u8>, Status> {
        match &self.node(fh)?.1 {
            Node::Link(t) => Ok(t.clone()),
            _ => Err(Status::Inval),
        }
    }
    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status> {
        let Node::Dir(children) = &self.node(dir)?.1 else { return Err(Status::NotDir) };
        // Cookie of child i is i + 1.
        let start = cookie.min(children.len() as u64) as usize;
        let mut entries = Vec::new();
        for (i, (name, path)) in children.iter().enumerate().skip(start).take(max) {
            let attr = self.getattr(path)?;
            entries.push(DirEntry { fileid: attr.fileid, name: name.clone(), cookie: i as u64 + 1, handle: path.clone(), attr });
        }
        let eof = start + entries.len() >= children.len();
        Ok(DirPage { entries, eof })
    }
    fn cookie_verifier(&self, _dir: &[u8]) -> Result<[u8; 8], Status> {
        Ok(*b"memfs-v1")
    }
    fn fsstat(&self, _fh: &[u8]) -> Result<FsStat, Status> {
        Ok(FsStat { tbytes: 1 << 30, tfiles: 1 << 20, ..FsStat::default() })
    }
}

/// A running server; dropping it sets the shutdown flag.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

pub fn start(limits: Limits) -> Server {
    start_with(limits, None)
}

/// A server under the export rules `exports` (exports file text).
pub fn start_exported(exports: &str) -> Server {
    start_with(Limits::default(), Some(Exports::parse(exports, "test exports").unwrap()))
}

fn start_with(limits: Limits, exports: Option<Exports>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let ports = Ports { nfs: addr.port(), mount: addr.port(), portmap: addr.port(), portmap_udp: false };
    let flag = shutdown.clone();
    let fs = Arc::new(MemFs::new());
    std::thread::spawn(move || match exports {
        None => serve_tcp(listener, fs, limits, ports, flag).unwrap(),
        Some(x) => serve_tcp_exported(listener, fs, Arc::new(x), limits, ports, flag).unwrap(),
    });
    Server { addr, shutdown }
}
