//! Reading a fetched commit with gix and storing it on the nodes: trees become
//! directory records, blobs become 1 MiB chunks.
//!
//! An ingest first *plans* top-down from the root tree: a subtree whose
//! directory record is already on its first owner is skipped whole (see the
//! invariant at `store_trees`), so a refresh reads and sends only the trees that
//! changed. It then stores tree records level by level by height, leaves first.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, SendTimeoutError, Sender};
use monofs_net::client::{Cluster, Items, NetError};
use monofs_net::dir::{self, Entry, MODE_EXEC, MODE_FILE, MODE_SUBMODULE, MODE_SYMLINK, MODE_TREE};
use monofs_net::{keys, oid_hex, proto, Oid, CHUNK_SIZE, MAX_BATCH_ITEMS};

use crate::git::BlobStream;
use crate::IngestError;

/// Largest encoded PUT_BATCH the fetcher sends (nodes fdatasync once per batch,
/// so small objects are grouped up to this).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches queued between the reader and the node writer.
pub const PIPELINE_DEPTH: usize = 2;
/// Blobs of this size and more are streamed from `git cat-file` instead of
/// being read whole with gix (and FETCH_BLOB materializes them in the cache).
pub const BIG_BLOB: u64 = 32 << 20;
/// Shortest interval between two progress reports.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// Deepest tree nesting accepted.
pub const MAX_DEPTH: usize = 4096;

type Item = (Vec<u8>, Vec<u8>);

/// Calls the progress callback at most every PROGRESS_INTERVAL (a phase change
/// is always reported).
pub(crate) struct Progress<'a> {
    f: &'a mut dyn FnMut(&str, u64, u64),
    last: Option<Instant>,
    pub phase: &'static str,
    pub objects: u64,
    pub bytes: u64,
}

impl<'a> Progress<'a> {
    pub fn new(f: &'a mut dyn FnMut(&str, u64, u64)) -> Self {
        Progress { f, last: None, phase: "fetching", objects: 0, bytes: 0 }
    }

    /// Enter `phase` with fresh counters and report it.
    pub fn phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.objects = 0;
        self.bytes = 0;
        self.force();
    }

    pub fn tick(&mut self) {
        let now = Instant::now();
        if self.last.is_none_or(|l| now.duration_since(l) >= PROGRESS_INTERVAL) {
            self.force();
        }
    }

    /// Report regardless of the interval.
    pub fn force(&mut self) {
        self.last = Some(Instant::now());
        (self.f)(self.phase, self.objects, self.bytes);
    }

    pub fn report(&mut self, phase: &str, objects: u64, bytes: u64) {
        self.last = Some(Instant::now());
        (self.f)(phase, objects, bytes);
    }
}

enum Msg {
    Batch(Vec<Item>),
    /// Answered once every batch sent before it is acknowledged.
    Barrier(Sender<()>),
}

/// Batches items and hands them, in order, to one writer thread, which writes
/// each batch to every owner and waits for the acknowledgement before the next.
pub(crate) struct Pipeline {
    tx: Option<Sender<Msg>>,
    writer: Option<JoinHandle<Result<(), NetError>>>,
    cur: Vec<Item>,
    cur_bytes: usize,
}

impl Pipeline {
    pub fn new(cluster: Cluster) -> Pipeline {
        let (tx, rx) = bounded::<Msg>(PIPELINE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("monofs-fetch-writer".into())
            .spawn(move || {
                for m in rx {
                    match m {
                        Msg::Batch(b) => cluster.put_batch(b)?,
                        Msg::Barrier(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
                Ok(())
            })
            .expect("spawn writer thread");
        Pipeline { tx: Some(tx), writer: Some(writer), cur: Vec::new(), cur_bytes: 0 }
    }

    pub fn push(&mut self, key: Vec<u8>, value: Vec<u8>, p: &mut Progress) -> Result<(), IngestError> {
        let sz = proto::put_item_size(&key, &value);
        if !self.cur.is_empty() && (self.cur.len() >= MAX_BATCH_ITEMS || self.cur_bytes + sz > MAX_BATCH_BYTES) {
            self.flush(p)?;
        }
        self.cur.push((key, value));
        self.cur_bytes += sz;
        Ok(())
    }

    fn send(&mut self, mut m: Msg, p: &mut Progress) -> Result<(), IngestError> {
        let tx = self.tx.as_ref().expect("pipeline open");
        loop {
            match tx.send_timeout(m, Duration::from_secs(1)) {
                Ok(()) => return Ok(()),
                // Nodes are slow: keep the client informed while waiting.
                Err(SendTimeoutError::Timeout(b)) => {
                    m = b;
                    p.force();
                }
                // The writer stopped: it failed; report its error.
                Err(SendTimeoutError::Disconnected(_)) => return Err(self.join_writer()),
            }
        }
    }

    fn flush(&mut self, p: &mut Progress) -> Result<(), IngestError> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.cur);
        self.cur_bytes = 0;
        self.send(Msg::Batch(batch), p)
    }

    /// Flush and wait until every item pushed so far is acknowledged by all its owners.
    pub fn barrier(&mut self, p: &mut Progress) -> Result<(), IngestError> {
        self.flush(p)?;
        let (ack_tx, ack_rx) = bounded(1);
        self.send(Msg::Barrier(ack_tx), p)?;
        loop {
            match ack_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => p.tick(),
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return Err(self.join_writer()),
            }
        }
    }

    fn join_writer(&mut self) -> IngestError {
        self.tx = None;
        match self.writer.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => IngestError::NodeWrite(e),
            Some(Err(_)) => IngestError::BadContent("the node writer thread panicked".into()),
            _ => IngestError::BadContent("the node writer stopped unexpectedly".into()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// One tree entry as Git stores it, mode normalised.
struct RawEntry {
    name: Vec<u8>,
    mode: u32,
    oid: Oid,
}

fn parse_mode(m: &[u8]) -> Option<u32> {
    if m.is_empty() || m.len() > 7 {
        return None;
    }
    let mut v: u32 = 0;
    for &b in m {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v * 8 + (b - b'0') as u32;
    }
    match v {
        0o040000 => Some(MODE_TREE),
        0o120000 => Some(MODE_SYMLINK),
        0o160000 => Some(MODE_SUBMODULE),
        // Old Git wrote 100664 and similar; Git itself reads them as 100644/100755.
        m if m & 0o170000 == 0o100000 => Some(if m & 0o111 != 0 { MODE_EXEC } else { MODE_FILE }),
        _ => None,
    }
}

/// Parse a raw Git tree: `<octal mode> <name>\0<20-byte oid>` repeated.
fn parse_tree(data: &[u8], path: &str) -> Result<Vec<RawEntry>, IngestError> {
    let bad = |why: &str| IngestError::BadContent(format!("tree at '{path}': {why}"));
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("malformed entry"))?;
        let mode = parse_mode(&rest[..sp]).ok_or_else(|| {
            bad(&format!(
                "unsupported mode '{}'",
                String::from_utf8_lossy(&rest[..sp])
            ))
        })?;
        rest = &rest[sp + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad("malformed entry"))?;
        let name = rest[..nul].to_vec();
        rest = &rest[nul + 1..];
        if rest.len() < 20 {
            return Err(bad("truncated entry"));
        }
        let oid: Oid = rest[..20].try_into().expect("20 bytes");
        rest = &rest[20..];
        out.push(RawEntry { name, mode, oid });
        if out.len() > dir::MAX_ENTRIES {
            return Err(bad(&format!(
                "more than {} entries, MonoFS's limit for one directory",
                dir::MAX_ENTRIES
            )));
        }
    }
    Ok(out)
}

fn check_name(name: &[u8], path: &str) -> Result<(), IngestError> {
    let shown = || {
        let n = String::from_utf8_lossy(name);
        if path.is_empty() {
            n.into_owned()
        } else {
            format!("{path}/{n}")
        }
    };
    if name.len() > dir::MAX_NAME {
        return Err(IngestError::BadContent(format!(
            "'{}' has a name of {} bytes; MonoFS allows at most {}",
            shown(),
            name.len(),
            dir::MAX_NAME
        )));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(IngestError::BadContent(format!(
            "tree at '{path}' holds an invalid name '{}'",
            shown()
        )));
    }
    Ok(())
}

pub(crate) fn gix_oid(oid: &Oid) -> gix::ObjectId {
    gix::ObjectId::from_bytes_or_panic(oid)
}

/// Is `key` on the first of its owners that answers? (One owner is asked while
/// it answers: a record is written to all owners in one PUT_BATCH round, and
/// re-replication after a node change is not the fetcher's business.)
pub(crate) fn present(cluster: &Cluster, key: &[u8]) -> Result<bool, NetError> {
    Ok(cluster.stat(key)?.is_some())
}

/// Most presence checks (STAT) in flight at once from one ingest.
pub const PRESENCE_CONCURRENCY: usize = 8;

/// Are the records of trees `oids` on their first owners? Asked from up to
/// PRESENCE_CONCURRENCY threads, each on its own pooled connection; answers in
/// the order of `oids`.
pub(crate) fn present_many(cluster: &Cluster, oids: &[Oid]) -> Result<Vec<bool>, NetError> {
    let workers = PRESENCE_CONCURRENCY.min(oids.len());
    if workers <= 1 {
        return oids.iter().map(|o| present(cluster, &keys::tree(o))).collect();
    }
    let mut out = vec![false; oids.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || -> Result<Vec<(usize, bool)>, NetError> {
                    (w..oids.len())
                        .step_by(workers)
                        .map(|i| Ok((i, present(cluster, &keys::tree(&oids[i]))?)))
                        .collect()
                })
            })
            .collect();
        for h in handles {
            for (i, b) in h.join().expect("presence check thread panicked")? {
                out[i] = b;
            }
        }
        Ok(out)
    })
}

/// Hasher of object ids in the planner's sets: an id is already uniformly
/// distributed, so its first 8 bytes are the hash (SipHash of 90,000 ids was
/// a visible part of planning).
#[derive(Default, Clone, Copy)]
pub(crate) struct OidHasher(u64);

impl std::hash::Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut w = [0u8; 8];
        let n = bytes.len().min(8);
        w[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(w);
    }
}

pub(crate) type OidBuild = std::hash::BuildHasherDefault<OidHasher>;

/// Is the blob stored? Chunk 0 is asked and, for a blob of several chunks, the
/// last one too, so a blob of which a FETCH_BLOB stored only the first chunks
/// is not taken as complete. (Any chunk still missing is fetched on first read.)
pub(crate) fn blob_present(cluster: &Cluster, oid: &Oid, size: u64) -> Result<bool, NetError> {
    let n = keys::chunk_count(size);
    if n == 0 {
        return Ok(true);
    }
    if !present(cluster, &keys::blob_chunk(oid, 0))? {
        return Ok(false);
    }
    Ok(n == 1 || present(cluster, &keys::blob_chunk(oid, (n - 1) as u32))?)
}

/// Read blob `oid` of `size` bytes and hand its chunks, in order, to `emit`.
/// Blobs below BIG_BLOB are read whole with gix; bigger ones are streamed from
/// `git cat-file` so they never sit in memory whole.
pub(crate) fn read_blob(
    repo: &gix::Repository,
    repo_path: &Path,
    oid: &Oid,
    size: u64,
    emit: &mut dyn FnMut(u32, Vec<u8>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let hex = oid_hex(oid);
    let unreadable = |e: &dyn std::fmt::Display| IngestError::BadContent(format!("blob {hex} cannot be read: {e}"));
    if size < BIG_BLOB {
        let obj = repo.find_object(gix_oid(oid)).map_err(|e| unreadable(&e))?;
        if obj.kind != gix::object::Kind::Blob {
            return Err(IngestError::BadContent(format!("object {hex} is not a blob")));
        }
        if obj.data.len() as u64 != size {
            return Err(unreadable(&"its size differs from its header"));
        }
        for (i, c) in obj.data.chunks(CHUNK_SIZE).enumerate() {
            emit(i as u32, c.to_vec())?;
        }
        return Ok(());
    }
    // At 1 MiB/s a blob may take this long, plus a fixed allowance.
    let timeout = Duration::from_secs(600 + size / (1 << 20));
    let mut stream = BlobStream::open(repo_path, &hex, timeout)?;
    let mut total = 0u64;
    let mut i = 0u32;
    loop {
        let mut buf = vec![0u8; CHUNK_SIZE];
        let n = stream.read_chunk(&mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        total += n as u64;
        if total > size {
            return Err(unreadable(&"longer than its header says"));
        }
        emit(i, buf)?;
        i += 1;
        if n < CHUNK_SIZE {
            break;
        }
    }
    stream.finish()?;
    if total != size {
        return Err(unreadable(&format!("git returned {total} bytes, its header says {size}")));
    }
    Ok(())
}

/// A blob named by a tree that was planned (not skipped).
#[derive(Clone, Debug)]
pub(crate) struct BlobRef {
    pub oid: Oid,
    pub size: u64,
    /// Number of path components of its first path (`README` is 1).
    pub depth: u16,
    /// Index of the directory it was first found in, within this plan.
    pub dir: u32,
}

/// What an ingest must store.
pub(crate) struct Plan {
    /// Directory records to write, by height: `levels[0]` are trees without
    /// planned subtrees, the root is alone in the last level.
    pub levels: Vec<Vec<Item>>,
    /// Blobs of the planned trees, each once, in walk order.
    pub blobs: Vec<BlobRef>,
    pub root_subdirs: u64,
    /// Trees found already stored (their whole subtree was skipped).
    pub trees_skipped: u64,
    /// Directories numbered in `BlobRef::dir`.
    pub dirs: u32,
}

struct Frame {
    oid: Oid,
    /// Name of this tree in its parent (empty for the root).
    name: Vec<u8>,
    path: String,
    dir: u32,
    raw: Vec<RawEntry>,
    next: usize,
    out: Vec<Entry>,
    subdirs: u64,
    /// Height of the tallest planned subtree (None: none planned).
    child_height: Option<usize>,
}

/// A planned tree: its subdirectory count and, when written by this ingest,
/// its height.
#[derive(Clone, Copy)]
struct TreeInfo {
    subdirs: u64,
    height: Option<usize>,
}

pub(crate) struct Planner<'p, 'f> {
    repo: &'p gix::Repository,
    /// Where sizes of blobs the cache lacks are read (a local remote fetched
    /// without blobs).
    source: Option<&'p gix::Repository>,
    cluster: &'p Cluster,
    progress: &'p mut Progress<'f>,
    trees: HashMap<Oid, TreeInfo, OidBuild>,
    blobs: HashSet<Oid, OidBuild>,
    /// Presence of subtrees asked ahead (see `frame`), not yet reached by the walk.
    stored: HashMap<Oid, bool, OidBuild>,
    plan: Plan,
}

fn join(path: &str, name: &[u8]) -> String {
    if path.is_empty() {
        String::from_utf8_lossy(name).into_owned()
    } else {
        format!("{path}/{}", String::from_utf8_lossy(name))
    }
}

impl<'p, 'f> Planner<'p, 'f> {
    pub fn new(
        repo: &'p gix::Repository,
        source: Option<&'p gix::Repository>,
        cluster: &'p Cluster,
        progress: &'p mut Progress<'f>,
    ) -> Self {
        Planner {
            repo,
            source,
            cluster,
            progress,
            trees: HashMap::default(),
            blobs: HashSet::default(),
            stored: HashMap::default(),
            plan: Plan { levels: Vec::new(), blobs: Vec::new(), root_subdirs: 0, trees_skipped: 0, dirs: 0 },
        }
    }

    fn read_tree(&self, oid: &Oid, path: &str) -> Result<Vec<RawEntry>, IngestError> {
        let obj = self.repo.find_object(gix_oid(oid)).map_err(|e| {
            IngestError::BadContent(format!("tree {} at '{path}' cannot be read: {e}", oid_hex(oid)))
        })?;
        if obj.kind != gix::object::Kind::Tree {
            return Err(IngestError::BadContent(format!("object {} at '{path}' is not a tree", oid_hex(oid))));
        }
        parse_tree(&obj.data, path)
    }

    /// Size of blob `oid`, named `name` in the tree at `dir_path`. (The path and
    /// the hexadecimal id are only formatted for an error: this runs once per
    /// file, and formatting them was most of the planner's time.)
    fn blob_size(&self, oid: &Oid, dir_path: &str, name: &[u8]) -> Result<u64, IngestError> {
        let id = gix_oid(oid);
        let found = match self.source {
            Some(src) => self.repo.find_header(id).or_else(|_| src.find_header(id)),
            None => self.repo.find_header(id),
        };
        let hdr = found.map_err(|e| {
            IngestError::BadContent(format!(
                "blob {} at '{}' cannot be read: {e}",
                oid_hex(oid),
                join(dir_path, name)
            ))
        })?;
        if hdr.kind() != gix::object::Kind::Blob {
            return Err(IngestError::BadContent(format!(
                "object {} at '{}' is not a blob",
                oid_hex(oid),
                join(dir_path, name)
            )));
        }
        Ok(hdr.size())
    }

    fn frame(&mut self, oid: Oid, name: Vec<u8>, path: String) -> Result<Frame, IngestError> {
        let raw = self.read_tree(&oid, &path)?;
        // Ask at once whether the subtrees not yet known are stored, instead of
        // one sequential round trip each as the walk reaches them. (A record
        // found stored stays stored: records are never deleted.)
        let mut ask: Vec<Oid> = Vec::new();
        for e in &raw {
            if e.mode == MODE_TREE
                && !self.trees.contains_key(&e.oid)
                && !self.stored.contains_key(&e.oid)
                && !ask.contains(&e.oid)
            {
                ask.push(e.oid);
            }
        }
        if ask.len() > 1 {
            let answers = present_many(self.cluster, &ask)?;
            self.stored.extend(ask.into_iter().zip(answers));
        }
        let dir = self.plan.dirs;
        self.plan.dirs += 1;
        Ok(Frame { oid, name, path, dir, out: Vec::with_capacity(raw.len()), raw, next: 0, subdirs: 0, child_height: None })
    }

    /// Is the record of tree `oid` stored? (Answered from the batch asked when
    /// its parent was read, else asked now.)
    fn is_stored(&mut self, oid: &Oid) -> Result<bool, IngestError> {
        match self.stored.remove(oid) {
            Some(b) => Ok(b),
            None => Ok(present(self.cluster, &keys::tree(oid))?),
        }
    }

    /// A subtree already stored: only its subdirectory count is needed.
    fn stored_subdirs(&self, oid: &Oid, path: &str) -> Result<u64, IngestError> {
        Ok(self.read_tree(oid, path)?.iter().filter(|e| e.mode == MODE_TREE).count() as u64)
    }

    /// Plan the tree `root`: every tree under it not yet stored, with its blobs.
    pub fn plan(mut self, root: Oid) -> Result<Plan, IngestError> {
        if present(self.cluster, &keys::tree(&root))? {
            // Stored with every tree under it (the invariant at `store_trees`).
            self.plan.root_subdirs = self.stored_subdirs(&root, "")?;
            self.plan.trees_skipped = 1;
            return Ok(self.plan);
        }
        let f = self.frame(root, Vec::new(), String::new())?;
        let mut stack = vec![f];
        loop {
            let top = stack.last_mut().expect("non-empty stack");
            if top.next < top.raw.len() {
                let i = top.next;
                top.next += 1;
                let (name, mode, oid) = {
                    let e = &mut top.raw[i];
                    (std::mem::take(&mut e.name), e.mode, e.oid)
                };
                let dir = top.dir;
                check_name(&name, &top.path)?;
                let size = match mode {
                    MODE_TREE => {
                        let info = match self.trees.get(&oid).copied() {
                            Some(info) => info,
                            None if self.is_stored(&oid)? => {
                                let child_path = join(&stack.last().expect("non-empty stack").path, &name);
                                let info = TreeInfo { subdirs: self.stored_subdirs(&oid, &child_path)?, height: None };
                                self.plan.trees_skipped += 1;
                                self.trees.insert(oid, info);
                                info
                            }
                            None => {
                                let path = &stack.last().expect("non-empty stack").path;
                                if stack.len() >= MAX_DEPTH {
                                    return Err(IngestError::BadContent(format!(
                                        "trees nested deeper than {MAX_DEPTH} at '{path}'"
                                    )));
                                }
                                let child_path = join(path, &name);
                                let f = self.frame(oid, name, child_path)?;
                                stack.push(f);
                                continue;
                            }
                        };
                        let top = stack.last_mut().expect("non-empty stack");
                        if let Some(h) = info.height {
                            top.child_height = Some(top.child_height.map_or(h, |c| c.max(h)));
                        }
                        info.subdirs
                    }
                    MODE_SUBMODULE => 0,
                    _ => {
                        let size = self.blob_size(&oid, &stack.last().expect("non-empty stack").path, &name)?;
                        if self.blobs.insert(oid) {
                            let depth = stack.len().min(u16::MAX as usize) as u16;
                            self.plan.blobs.push(BlobRef { oid, size, depth, dir });
                        }
                        size
                    }
                };
                let top = stack.last_mut().expect("non-empty stack");
                if mode == MODE_TREE {
                    top.subdirs += 1;
                }
                top.out.push(Entry { name, mode, oid, size });
                continue;
            }
            // Every entry seen: the record is complete.
            let done = stack.pop().expect("non-empty stack");
            let mut out = done.out;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
                return Err(IngestError::BadContent(format!(
                    "tree {} at '{}' names '{}' twice",
                    oid_hex(&done.oid),
                    done.path,
                    String::from_utf8_lossy(&w[0].name)
                )));
            }
            let height = done.child_height.map_or(0, |h| h + 1);
            if self.plan.levels.len() <= height {
                self.plan.levels.resize_with(height + 1, Vec::new);
            }
            let record = dir::encode(&out).map_err(|e| {
                IngestError::BadContent(format!("tree {} at '{}': {e}", oid_hex(&done.oid), done.path))
            })?;
            self.plan.levels[height].push((keys::tree(&done.oid), record));
            self.progress.tick();
            match stack.last_mut() {
                None => {
                    self.plan.root_subdirs = done.subdirs;
                    return Ok(self.plan);
                }
                Some(parent) => {
                    parent.subdirs += 1;
                    parent.child_height = Some(parent.child_height.map_or(height, |c| c.max(height)));
                    parent.out.push(Entry { name: done.name, mode: MODE_TREE, oid: done.oid, size: done.subdirs });
                    self.trees.insert(done.oid, TreeInfo { subdirs: done.subdirs, height: Some(height) });
                }
            }
        }
    }
}

/// Store the planned directory records level by level, leaves first; each
/// level is acknowledged by every owner before the next level is sent.
///
/// INVARIANT (what lets `Planner::plan` skip a stored subtree whole): a tree
/// record present on an owner implies every descendant tree record is stored
/// on some node of the cluster (and on its owners once repair has run).
/// It holds because a tree's height exceeds that of each planned subtree, so a
/// record is sent only after all its planned descendants are acknowledged, and
/// its unplanned descendants were found stored, which by this same invariant
/// covers theirs. Records are never deleted. A membership change moves owners
/// but not records: reads look past the owners (`Cluster::read_order`) until the
/// repair has copied each record to its new owners, so a skipped subtree stays
/// readable (router/src/repair.rs).
pub(crate) fn store_trees(cluster: &Cluster, levels: Vec<Vec<Item>>, p: &mut Progress) -> Result<(), IngestError> {
    let mut pipe = Pipeline::new(cluster.clone());
    for level in levels {
        for (k, v) in level {
            p.objects += 1;
            p.bytes += v.len() as u64;
            pipe.push(k, v, p)?;
            p.tick();
        }
        pipe.barrier(p)?;
    }
    Ok(())
}

/// Store the blobs not yet stored (chunk 0 and the last chunk asked first).
pub(crate) fn store_blobs(
    repo: &gix::Repository,
    repo_path: &Path,
    cluster: &Cluster,
    blobs: &[BlobRef],
    p: &mut Progress,
) -> Result<(), IngestError> {
    let mut pipe = Pipeline::new(cluster.clone());
    for b in blobs {
        if blob_present(cluster, &b.oid, b.size)? {
            continue;
        }
        read_blob(repo, repo_path, &b.oid, b.size, &mut |i, chunk| {
            p.bytes += chunk.len() as u64;
            pipe.push(keys::blob_chunk(&b.oid, i), chunk, p)?;
            p.tick();
            Ok(())
        })?;
        p.objects += 1;
        p.tick();
    }
    pipe.barrier(p)
}

/// Cut `items` into PUT_BATCH-sized groups and store each on its owners.
pub(crate) fn put_all(cluster: &Cluster, items: Items) -> Result<(), NetError> {
    let mut cur = Vec::new();
    let mut bytes = 0;
    for (k, v) in items {
        let sz = proto::put_item_size(&k, &v);
        if !cur.is_empty() && (cur.len() >= MAX_BATCH_ITEMS || bytes + sz > MAX_BATCH_BYTES) {
            cluster.put_batch(std::mem::take(&mut cur))?;
            bytes = 0;
        }
        bytes += sz;
        cur.push((k, v));
    }
    if !cur.is_empty() {
        cluster.put_batch(cur)?;
    }
    Ok(())
}

/// Tree id and committer time (seconds) of a raw commit object.
pub(crate) fn parse_commit(data: &[u8]) -> Option<(Oid, i64)> {
    let mut tree = None;
    let mut time = None;
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(h) = line.strip_prefix(b"tree ") {
            tree = monofs_net::oid_from_hex(std::str::from_utf8(h).ok()?);
        } else if let Some(c) = line.strip_prefix(b"committer ") {
            // "Name <email> 1700000000 +0000"
            let gt = c.iter().rposition(|&b| b == b'>')?;
            let rest = std::str::from_utf8(&c[gt + 1..]).ok()?;
            time = rest.split_whitespace().next()?.parse::<i64>().ok();
        }
    }
    Some((tree?, time.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode(b"40000"), Some(MODE_TREE));
        assert_eq!(parse_mode(b"100644"), Some(MODE_FILE));
        assert_eq!(parse_mode(b"100664"), Some(MODE_FILE));
        assert_eq!(parse_mode(b"100755"), Some(MODE_EXEC));
        assert_eq!(parse_mode(b"120000"), Some(MODE_SYMLINK));
        assert_eq!(parse_mode(b"160000"), Some(MODE_SUBMODULE));
        assert_eq!(parse_mode(b"20000"), None);
        assert_eq!(parse_mode(b"1x0"), None);
    }

    #[test]
    fn commits() {
        let c = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1 +0000\ncommitter C D <c@x> 1700000000 +0200\n\nmsg\ncommitter X <y> 5 +0000\n";
        let (t, time) = parse_commit(c).unwrap();
        assert_eq!(oid_hex(&t), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(time, 1700000000);
    }

    #[test]
    fn trees_parse_and_reject_garbage() {
        let mut t = b"100644 a b\0".to_vec();
        t.extend([1u8; 20]);
        t.extend(b"40000 d\0");
        t.extend([2u8; 20]);
        let es = parse_tree(&t, "").unwrap();
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].name, b"a b");
        assert_eq!(es[1].mode, MODE_TREE);
        assert!(parse_tree(&t[..t.len() - 1], "").is_err());
        assert!(parse_tree(b"100644 x", "").is_err());
    }
}
