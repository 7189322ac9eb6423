//! The NFS semantics of the MonoFS namespace: how handles, namespace
//! directories and Git trees become NFSv3 attributes, lookups, reads and
//! listings. Bytes on the wire are the `nfs` crate's business; where data lives
//! is the cluster's.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use monofs_net::dir::{self, Entry, MODE_EXEC, MODE_FILE, MODE_SUBMODULE, MODE_SYMLINK, MODE_TREE};
use monofs_net::{keys, CHUNK_SIZE};
use monofs_nfs::{
    Backend, DirEntry, DirPage, Fattr, Fh, FsStat, Ftype, MountStatus, ReadOutcome, Status, Ticket, Time,
};

use crate::handle::{child_path, Handle, ObjHandle, ObjKind, ROOT_PATH};
use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::Router;

/// One filesystem id for the whole namespace: a change of fsid makes the Linux
/// client create a submount at each repository, which breaks `ls -R` across them.
pub const FSID: u64 = 0x4d6f_6e6f_4653;
/// Longest symlink target served.
pub const MAX_SYMLINK: u64 = 64 << 10;
/// Unit of the router's content cache and of its reads from nodes.
pub const BLOCK: u64 = 64 << 10;
const _: () = assert!((CHUNK_SIZE as u64).is_multiple_of(BLOCK), "blocks tile chunks");
/// Longest READ served (FSINFO says 1 MiB; a client asking more gets 1 MiB).
pub const MAX_READ: u32 = 1 << 20;

/// Why content could not be read now.
enum Pending {
    Failed(Status),
    /// A chunk is being fetched; read again when the ticket completes.
    Fetching(Ticket),
}

impl From<Status> for Pending {
    fn from(s: Status) -> Pending {
        Pending::Failed(s)
    }
}

/// For callers that block on fetches (`wait`), which never see `Fetching`.
fn waited<T>(r: Result<T, Pending>) -> Result<T, Status> {
    r.map_err(|p| match p {
        Pending::Failed(s) => s,
        Pending::Fetching(_) => Status::Jukebox,
    })
}

fn time(secs: i64) -> Time {
    Time {
        seconds: secs.clamp(0, u32::MAX as i64) as u32,
        nseconds: 0,
    }
}

fn fattr(ftype: Ftype, mode: u32, nlink: u32, size: u64, fileid: u64, mtime: i64) -> Fattr {
    let t = time(mtime);
    Fattr {
        ftype,
        mode,
        nlink,
        uid: 0,
        gid: 0,
        size,
        used: size.div_ceil(4096) * 4096,
        rdev: (0, 0),
        fsid: FSID,
        fileid,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

fn dir_attr(path: u64, subdirs: u64, mtime: i64) -> Fattr {
    fattr(
        Ftype::Dir,
        0o755,
        2u64.saturating_add(subdirs).min(u32::MAX as u64) as u32,
        4096,
        path,
        mtime,
    )
}

fn obj_attr(o: &ObjHandle) -> Fattr {
    match o.kind {
        ObjKind::Tree => dir_attr(o.path, o.size, o.mtime),
        ObjKind::Submodule => dir_attr(o.path, 0, o.mtime),
        ObjKind::File => fattr(Ftype::Reg, 0o644, 1, o.size, o.path, o.mtime),
        ObjKind::Exec => fattr(Ftype::Reg, 0o755, 1, o.size, o.path, o.mtime),
        ObjKind::Symlink => fattr(Ftype::Lnk, 0o777, 1, o.size, o.path, o.mtime),
    }
}

/// The handle of tree entry `e` in the directory with path hash `parent`.
fn entry_handle(repo: u64, parent: u64, e: &Entry, mtime: i64) -> ObjHandle {
    let kind = match e.mode {
        MODE_TREE => ObjKind::Tree,
        MODE_SYMLINK => ObjKind::Symlink,
        MODE_SUBMODULE => ObjKind::Submodule,
        MODE_EXEC => ObjKind::Exec,
        // 100644 and the legacy modes Git still reads (100664) are plain files.
        _ => ObjKind::File,
    };
    debug_assert!(
        matches!(
            e.mode,
            MODE_TREE | MODE_SYMLINK | MODE_SUBMODULE | MODE_FILE | MODE_EXEC
        ) || e.mode & 0o170000 == 0o100000
    );
    ObjHandle {
        kind,
        repo,
        path: child_path(parent, &e.name),
        oid: e.oid,
        size: e.size,
        mtime,
    }
}

/// What a directory handle lists.
enum Listing {
    Ns(Arc<Namespace>, u64),
    Tree {
        repo: u64,
        path: u64,
        mtime: i64,
        entries: Arc<Vec<Entry>>,
    },
    Empty,
}

impl Router {
    fn decode(&self, fh: &[u8]) -> Result<Handle, Status> {
        Handle::decode(fh, &self.handle_key)
    }

    fn encode(&self, h: &Handle) -> Fh {
        h.encode(&self.handle_key)
    }

    fn ns_attr(&self, ns: &Namespace, path: u64) -> Result<Fattr, Status> {
        let d = ns.dirs.get(&path).ok_or(Status::Stale)?;
        Ok(match d.repo {
            Some(i) => dir_attr(path, ns.repos[i].root_subdirs, ns.repos[i].commit_time),
            None => dir_attr(path, d.children.len() as u64, d.mtime),
        })
    }

    fn attr(&self, h: &Handle) -> Result<Fattr, Status> {
        match h {
            Handle::Ns { path } => self.ns_attr(&*self.namespace()?, *path),
            Handle::Obj(o) => Ok(obj_attr(o)),
        }
    }

    fn listing(&self, h: &Handle) -> Result<Listing, Status> {
        match h {
            Handle::Ns { path } => {
                let ns = self.namespace()?;
                let d = ns.dirs.get(path).ok_or(Status::Stale)?;
                match d.repo {
                    Some(i) => {
                        let r = &ns.repos[i];
                        let entries = self.tree(&r.root_tree)?;
                        Ok(Listing::Tree {
                            repo: *path,
                            path: *path,
                            mtime: r.commit_time,
                            entries,
                        })
                    }
                    None => Ok(Listing::Ns(ns.clone(), *path)),
                }
            }
            Handle::Obj(o) => match o.kind {
                ObjKind::Tree => Ok(Listing::Tree {
                    repo: o.repo,
                    path: o.path,
                    mtime: o.mtime,
                    entries: self.tree(&o.oid)?,
                }),
                ObjKind::Submodule => Ok(Listing::Empty),
                ObjKind::File | ObjKind::Exec | ObjKind::Symlink => Err(Status::NotDir),
            },
        }
    }

    /// A Git tree's directory record, from the cache or its owning node.
    fn tree(&self, oid: &monofs_net::Oid) -> Result<Arc<Vec<Entry>>, Status> {
        if let Some(e) = self.dirs.get(oid) {
            Metrics::inc(&self.metrics.dir_cache_hits);
            return Ok(e);
        }
        Metrics::inc(&self.metrics.dir_cache_misses);
        let key = keys::tree(oid);
        let raw = match self.cluster.get(&key, 0, monofs_net::MAX_FRAME as u32) {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                tracing::error!(tree = %monofs_net::oid_hex(oid), "directory record missing on every owner");
                return Err(Status::Io);
            }
            Err(e) => {
                tracing::error!(tree = %monofs_net::oid_hex(oid), error = %e, "directory record unavailable");
                return Err(Status::Io);
            }
        };
        let entries = dir::decode(&raw).map_err(|e| {
            tracing::error!(tree = %monofs_net::oid_hex(oid), error = %e, "directory record corrupt");
            Status::Io
        })?;
        let entries = Arc::new(entries);
        self.dirs
            .insert(*oid, entries.clone(), raw.len() + entries.len() * 32);
        Ok(entries)
    }

    /// Bytes `offset .. offset + count` of a blob reached through repository
    /// `repo`, through the router's block cache: what is not cached is read from
    /// the owners a run of whole blocks at a time (so a small READ also brings
    /// the rest of its block, as read-ahead), and chunks no node has yet are
    /// brought by a fetcher first: waiting for it if `wait`, else answering
    /// `Pending::Fetching` at once.
    fn read_blob(
        &self,
        repo: u64,
        oid: &monofs_net::Oid,
        size: u64,
        offset: u64,
        count: u32,
        wait: bool,
    ) -> Result<Vec<u8>, Pending> {
        let end = offset.saturating_add(count as u64).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        let mut blocks: Vec<Option<Arc<Vec<u8>>>> = (first..=last)
            .map(|b| self.blocks.get(&(*oid, b)))
            .collect();
        let mut b = first;
        while b <= last {
            if blocks[(b - first) as usize].is_some() {
                Metrics::inc(&self.metrics.block_cache_hits);
                b += 1;
                continue;
            }
            // A run of missing blocks, within one chunk.
            let chunk_last = (b * BLOCK / CHUNK_SIZE as u64 + 1) * (CHUNK_SIZE as u64 / BLOCK) - 1;
            let mut run_end = b;
            while run_end < last.min(chunk_last) && blocks[(run_end + 1 - first) as usize].is_none()
            {
                run_end += 1;
            }
            let from = b * BLOCK;
            let to = ((run_end + 1) * BLOCK).min(size);
            let data = self.read_range(repo, oid, size, from, (to - from) as u32, wait)?;
            for (k, piece) in data.chunks(BLOCK as usize).enumerate() {
                let block = Arc::new(piece.to_vec());
                let idx = b + k as u64;
                self.blocks
                    .insert((*oid, idx), block.clone(), piece.len() + 64);
                blocks[(idx - first) as usize] = Some(block);
                Metrics::inc(&self.metrics.block_cache_misses);
            }
            b = run_end + 1;
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (k, block) in blocks.iter().enumerate() {
            let block = block.as_ref().expect("every block filled above");
            let start = (first + k as u64) * BLOCK;
            let lo = offset.saturating_sub(start) as usize;
            let hi = ((end - start) as usize).min(block.len());
            out.extend_from_slice(&block[lo..hi]);
        }
        debug_assert_eq!(out.len() as u64, end - offset);
        Ok(out)
    }

    /// Bytes `from .. from + len` of a blob, which must lie within one chunk,
    /// from its owners.
    fn read_range(
        &self,
        repo: u64,
        oid: &monofs_net::Oid,
        size: u64,
        from: u64,
        len: u32,
        wait: bool,
    ) -> Result<Vec<u8>, Pending> {
        // Chunk numbers are u32 on the wire (4 PiB); a handle claiming a larger
        // size would otherwise read another chunk's key.
        let chunk = u32::try_from(from / CHUNK_SIZE as u64).map_err(|_| Status::Fbig)?;
        let in_chunk = from % CHUNK_SIZE as u64;
        assert!(
            in_chunk + len as u64 <= CHUNK_SIZE as u64,
            "a range within one chunk"
        );
        let key = keys::blob_chunk(oid, chunk);
        let mut fetched = false;
        let data = loop {
            match self.cluster.get(&key, in_chunk, len) {
                Ok(Some(d)) => break d,
                Ok(None) if !fetched => {
                    Metrics::inc(&self.metrics.lazy_fetches);
                    if !wait {
                        let ticket = self.chunk_ticket(repo, oid, size, chunk)?;
                        return Err(Pending::Fetching(ticket));
                    }
                    self.bring_chunk(repo, oid, size, chunk)?;
                    fetched = true;
                }
                Ok(None) => {
                    tracing::error!(blob = %monofs_net::oid_hex(oid), chunk, "blob chunk missing after its fetch");
                    return Err(Status::Io.into());
                }
                Err(e) => {
                    tracing::error!(blob = %monofs_net::oid_hex(oid), chunk, error = %e, "blob chunk unavailable");
                    return Err(Status::Io.into());
                }
            }
        };
        if data.len() != len as usize {
            tracing::error!(blob = %monofs_net::oid_hex(oid), chunk, got = data.len(), want = len, "short blob chunk");
            return Err(Status::Io.into());
        }
        Ok(data)
    }

    /// READ of a file handle; `wait` blocks on fetches, else they come back as tickets.
    fn read_file(&self, fh: &[u8], offset: u64, count: u32, wait: bool) -> Result<ReadOutcome, Status> {
        Metrics::inc(&self.metrics.read);
        let r = self.decode(fh).and_then(|h| match h {
            Handle::Obj(o) if o.kind.is_file() => {
                let data = match self.read_blob(o.repo, &o.oid, o.size, offset, count.min(MAX_READ), wait) {
                    Ok(data) => data,
                    Err(Pending::Fetching(t)) => return Ok(ReadOutcome::Wait(t)),
                    Err(Pending::Failed(s)) => return Err(s),
                };
                self.metrics
                    .read_bytes
                    .fetch_add(data.len() as u64, Relaxed);
                let eof = offset.saturating_add(data.len() as u64) >= o.size;
                Ok(ReadOutcome::Ready(data, eof))
            }
            Handle::Obj(o) if o.kind == ObjKind::Symlink => Err(Status::Inval),
            _ => Err(Status::IsDir),
        });
        self.count_error(r)
    }

    fn lookup_in(&self, dir: &Handle, name: &[u8]) -> Result<Handle, Status> {
        if name == b"." {
            return Ok(dir.clone());
        }
        if name == b".." {
            return match dir {
                Handle::Ns { path } => {
                    let ns = self.namespace()?;
                    let d = ns.dirs.get(path).ok_or(Status::Stale)?;
                    Ok(Handle::Ns { path: d.parent })
                }
                // A tree handle names its content, not its parent; the Linux
                // client resolves ".." from its dentry cache instead.
                Handle::Obj(_) => Err(Status::NoEnt),
            };
        }
        match self.listing(dir)? {
            Listing::Ns(ns, path) => ns
                .lookup(path, name)
                .map(|p| Handle::Ns { path: p })
                .ok_or(Status::NoEnt),
            Listing::Tree {
                repo,
                path,
                mtime,
                entries,
            } => {
                let (_, e) = dir::find(&entries, name).ok_or(Status::NoEnt)?;
                Ok(Handle::Obj(entry_handle(repo, path, e, mtime)))
            }
            Listing::Empty => Err(Status::NoEnt),
        }
    }

    fn count_error<T>(&self, r: Result<T, Status>) -> Result<T, Status> {
        if let Err(s) = &r {
            if *s != Status::NoEnt {
                Metrics::inc(&self.metrics.errors);
            }
        }
        r
    }
}

impl Backend for Router {
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus> {
        let mut h = Handle::Ns { path: ROOT_PATH };
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            h = match self.lookup_in(&h, comp) {
                Ok(h) => h,
                Err(Status::NoEnt) => return Err(MountStatus::NoEnt),
                Err(Status::NotDir) => return Err(MountStatus::NotDir),
                Err(_) => return Err(MountStatus::Io),
            };
        }
        match self.attr(&h) {
            Ok(a) if a.ftype == Ftype::Dir => Ok(self.encode(&h)),
            Ok(_) => Err(MountStatus::NotDir),
            Err(_) => Err(MountStatus::Io),
        }
    }

    fn exports(&self) -> Vec<Vec<u8>> {
        vec![b"/".to_vec()]
    }

    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status> {
        Metrics::inc(&self.metrics.getattr);
        let r = self.decode(fh).and_then(|h| self.attr(&h));
        self.count_error(r)
    }

    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status> {
        Metrics::inc(&self.metrics.lookup);
        if name.len() > dir::MAX_NAME {
            return Err(Status::NameTooLong);
        }
        let r = self.decode(dir).and_then(|d| {
            let h = self.lookup_in(&d, name)?;
            let a = self.attr(&h)?;
            Ok((self.encode(&h), a))
        });
        self.count_error(r)
    }

    fn read(&self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), Status> {
        match self.read_file(fh, offset, count, true) {
            Ok(ReadOutcome::Ready(data, eof)) => Ok((data, eof)),
            Ok(ReadOutcome::Wait(_)) => Err(Status::Jukebox),
            Err(s) => Err(s),
        }
    }

    /// NFS READs park on the fetch instead of holding a worker.
    fn read_or_wait(&self, fh: &[u8], offset: u64, count: u32) -> Result<ReadOutcome, Status> {
        self.read_file(fh, offset, count, false)
    }

    fn readlink(&self, fh: &[u8]) -> Result<Vec<u8>, Status> {
        Metrics::inc(&self.metrics.readlink);
        let r = self.decode(fh).and_then(|h| match h {
            Handle::Obj(o) if o.kind == ObjKind::Symlink => {
                if o.size > MAX_SYMLINK {
                    return Err(Status::NameTooLong);
                }
                waited(self.read_blob(o.repo, &o.oid, o.size, 0, o.size as u32, true))
            }
            _ => Err(Status::Inval),
        });
        self.count_error(r)
    }

    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status> {
        Metrics::inc(&self.metrics.readdir);
        let r = self.decode(dir).and_then(|h| {
            let start = usize::try_from(cookie).map_err(|_| Status::BadCookie)?;
            let mut entries = Vec::new();
            let total = match self.listing(&h)? {
                Listing::Ns(ns, path) => {
                    let d = &ns.dirs[&path];
                    for (i, (name, child)) in d.children.iter().enumerate().skip(start).take(max) {
                        entries.push(DirEntry {
                            fileid: *child,
                            name: name.clone(),
                            cookie: i as u64 + 1,
                            handle: self.encode(&Handle::Ns { path: *child }),
                            attr: self.ns_attr(&ns, *child)?,
                        });
                    }
                    d.children.len()
                }
                Listing::Tree {
                    repo,
                    path,
                    mtime,
                    entries: es,
                } => {
                    for (i, e) in es.iter().enumerate().skip(start).take(max) {
                        let o = entry_handle(repo, path, e, mtime);
                        entries.push(DirEntry {
                            fileid: o.path,
                            name: e.name.clone(),
                            cookie: i as u64 + 1,
                            attr: obj_attr(&o),
                            handle: self.encode(&Handle::Obj(o)),
                        });
                    }
                    es.len()
                }
                Listing::Empty => 0,
            };
            if start > total {
                return Err(Status::BadCookie);
            }
            let eof = start.saturating_add(max) >= total;
            Ok(DirPage { entries, eof })
        });
        self.count_error(r)
    }

    fn cookie_verifier(&self, dir: &[u8]) -> Result<[u8; 8], Status> {
        let h = self.decode(dir)?;
        let head = |oid: &monofs_net::Oid| -> [u8; 8] { oid[..8].try_into().unwrap() };
        match h {
            Handle::Ns { path } => {
                let ns = self.namespace()?;
                let d = ns.dirs.get(&path).ok_or(Status::Stale)?;
                Ok(match d.repo {
                    Some(i) => head(&ns.repos[i].root_tree),
                    None => ns.generation.to_be_bytes(),
                })
            }
            Handle::Obj(o) => Ok(head(&o.oid)),
        }
    }

    fn fsstat(&self, fh: &[u8]) -> Result<FsStat, Status> {
        self.decode(fh)?;
        // The Git namespace is read-only: nothing is free to write.
        Ok(FsStat {
            tbytes: 0,
            fbytes: 0,
            abytes: 0,
            tfiles: 0,
            ffiles: 0,
            afiles: 0,
            invarsec: 0,
        })
    }
}
