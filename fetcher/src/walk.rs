//! Reading a fetched commit with gix and streaming its trees and blobs to the
//! nodes: trees become directory records, blobs become 1 MiB chunks.

use std::collections::HashMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, SendTimeoutError, Sender};
use monofs_net::client::{Cluster, NetError};
use monofs_net::dir::{self, Entry, MODE_EXEC, MODE_FILE, MODE_SUBMODULE, MODE_SYMLINK, MODE_TREE};
use monofs_net::{keys, oid_hex, proto, Oid, CHUNK_SIZE, MAX_BATCH_ITEMS};

use crate::git::BlobStream;
use crate::IngestError;

/// Largest encoded PUT_BATCH the fetcher sends (nodes fdatasync once per batch,
/// so small objects are grouped up to this).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches queued between the reader and the node writer.
pub const PIPELINE_DEPTH: usize = 2;
/// Blobs above this size are streamed from `git cat-file` instead of being read
/// whole with gix.
pub const BIG_BLOB: u64 = 32 << 20;
/// Shortest interval between two progress reports.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

type Item = (Vec<u8>, Vec<u8>);

/// Calls the progress callback at most every PROGRESS_INTERVAL.
pub(crate) struct Progress<'a> {
    f: &'a mut dyn FnMut(&str, u64, u64),
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    pub fn new(f: &'a mut dyn FnMut(&str, u64, u64)) -> Self {
        Progress { f, last: None }
    }

    pub fn tick(&mut self, phase: &str, objects: u64, bytes: u64) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= PROGRESS_INTERVAL)
        {
            self.last = Some(now);
            (self.f)(phase, objects, bytes);
        }
    }

    /// Report regardless of the interval (phase changes, the end).
    pub fn force(&mut self, phase: &str, objects: u64, bytes: u64) {
        self.last = Some(Instant::now());
        (self.f)(phase, objects, bytes);
    }
}

/// Batches items and hands them, in order, to one writer thread, which writes
/// each batch to every owner and waits for the acknowledgement before the next.
pub(crate) struct Pipeline {
    tx: Option<Sender<Vec<Item>>>,
    writer: Option<JoinHandle<Result<(), NetError>>>,
    cur: Vec<Item>,
    cur_bytes: usize,
    cluster: Cluster,
}

impl Pipeline {
    pub fn new(cluster: Cluster) -> Pipeline {
        let (tx, rx) = bounded::<Vec<Item>>(PIPELINE_DEPTH);
        let c = cluster.clone();
        let writer = std::thread::Builder::new()
            .name("monofs-fetch-writer".into())
            .spawn(move || {
                for batch in rx {
                    c.put_batch(batch)?;
                }
                Ok(())
            })
            .expect("spawn writer thread");
        Pipeline {
            tx: Some(tx),
            writer: Some(writer),
            cur: Vec::new(),
            cur_bytes: 0,
            cluster,
        }
    }

    fn push(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        p: &mut Progress,
        objects: u64,
        bytes: u64,
    ) -> Result<(), IngestError> {
        let sz = proto::put_item_size(&key, &value);
        if !self.cur.is_empty()
            && (self.cur.len() >= MAX_BATCH_ITEMS || self.cur_bytes + sz > MAX_BATCH_BYTES)
        {
            self.flush(p, objects, bytes)?;
        }
        self.cur.push((key, value));
        self.cur_bytes += sz;
        Ok(())
    }

    fn flush(&mut self, p: &mut Progress, objects: u64, bytes: u64) -> Result<(), IngestError> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.cur);
        self.cur_bytes = 0;
        let tx = self.tx.as_ref().expect("pipeline open");
        loop {
            match tx.send_timeout(batch, Duration::from_secs(1)) {
                Ok(()) => return Ok(()),
                // Nodes are slow: keep the client informed while waiting.
                Err(SendTimeoutError::Timeout(b)) => {
                    batch = b;
                    p.force("storing", objects, bytes);
                }
                // The writer stopped: it failed; report its error.
                Err(SendTimeoutError::Disconnected(_)) => return Err(self.join_writer()),
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

    /// Flush, wait for every batch to be acknowledged, then write `last` alone.
    pub fn finish(
        mut self,
        last: Item,
        p: &mut Progress,
        objects: u64,
        bytes: u64,
    ) -> Result<(), IngestError> {
        self.flush(p, objects, bytes)?;
        self.tx = None;
        let writer = self.writer.take().expect("writer");
        loop {
            if writer.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            p.tick("storing", objects, bytes);
        }
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(IngestError::NodeWrite(e)),
            Err(_) => {
                return Err(IngestError::BadContent(
                    "the node writer thread panicked".into(),
                ))
            }
        }
        self.cluster
            .put_batch(vec![last])
            .map_err(IngestError::NodeWrite)
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

struct Frame {
    oid: Oid,
    /// Name of this tree in its parent (empty for the root).
    name: Vec<u8>,
    raw: Vec<RawEntry>,
    next: usize,
    out: Vec<Entry>,
    subdirs: u64,
}

/// Result of reading a commit.
pub(crate) struct Stored {
    pub root_subdirs: u64,
    pub objects: u64,
    pub bytes: u64,
}

pub(crate) struct Walker<'p, 'f> {
    repo: gix::Repository,
    repo_path: &'p Path,
    pipe: Pipeline,
    progress: &'p mut Progress<'f>,
    /// Trees stored in this ingest, with their number of subdirectories.
    trees: HashMap<Oid, u64>,
    /// Blobs stored in this ingest, with their size.
    blobs: HashMap<Oid, u64>,
    objects: u64,
    bytes: u64,
}

fn gix_oid(oid: &Oid) -> gix::ObjectId {
    gix::ObjectId::from_bytes_or_panic(oid)
}

impl<'p, 'f> Walker<'p, 'f> {
    pub fn new(
        repo: gix::Repository,
        repo_path: &'p Path,
        cluster: Cluster,
        progress: &'p mut Progress<'f>,
    ) -> Self {
        Walker {
            repo,
            repo_path,
            pipe: Pipeline::new(cluster),
            progress,
            trees: HashMap::new(),
            blobs: HashMap::new(),
            objects: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), IngestError> {
        self.pipe
            .push(key, value, &mut *self.progress, self.objects, self.bytes)
    }

    fn read_tree(&self, oid: &Oid, path: &str) -> Result<Vec<RawEntry>, IngestError> {
        let obj = self.repo.find_object(gix_oid(oid)).map_err(|e| {
            IngestError::BadContent(format!(
                "tree {} at '{path}' cannot be read: {e}",
                oid_hex(oid)
            ))
        })?;
        if obj.kind != gix::object::Kind::Tree {
            return Err(IngestError::BadContent(format!(
                "object {} at '{path}' is not a tree",
                oid_hex(oid)
            )));
        }
        parse_tree(&obj.data, path)
    }

    /// Store a blob (once per ingest) and return its size.
    fn blob(&mut self, oid: &Oid, path: &str) -> Result<u64, IngestError> {
        if let Some(&s) = self.blobs.get(oid) {
            return Ok(s);
        }
        let hex = oid_hex(oid);
        let unreadable = |e: &dyn std::fmt::Display| {
            IngestError::BadContent(format!("blob {hex} at '{path}' cannot be read: {e}"))
        };
        let hdr = self
            .repo
            .find_header(gix_oid(oid))
            .map_err(|e| unreadable(&e))?;
        if hdr.kind() != gix::object::Kind::Blob {
            return Err(IngestError::BadContent(format!(
                "object {hex} at '{path}' is not a blob"
            )));
        }
        let size = hdr.size();
        if size <= BIG_BLOB {
            let obj = self
                .repo
                .find_object(gix_oid(oid))
                .map_err(|e| unreadable(&e))?;
            if obj.data.len() as u64 != size {
                return Err(unreadable(&"size differs from its header"));
            }
            let chunks: Vec<Vec<u8>> = obj.data.chunks(CHUNK_SIZE).map(<[u8]>::to_vec).collect();
            drop(obj);
            for (i, c) in chunks.into_iter().enumerate() {
                self.push(keys::blob_chunk(oid, i as u32), c)?;
            }
            self.bytes += size;
        } else {
            // At 1 MiB/s a blob may take this long, plus a fixed allowance.
            let timeout = Duration::from_secs(600 + size / (1 << 20));
            let mut stream = BlobStream::open(self.repo_path, &hex, timeout)?;
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
                self.push(keys::blob_chunk(oid, i), buf)?;
                i += 1;
                self.bytes += n as u64;
                self.progress.tick("storing", self.objects, self.bytes);
                if (n as usize) < CHUNK_SIZE {
                    break;
                }
            }
            stream.finish()?;
            if total != size {
                return Err(unreadable(&format!(
                    "git returned {total} bytes, its header says {size}"
                )));
            }
        }
        self.blobs.insert(*oid, size);
        self.objects += 1;
        self.progress.tick("storing", self.objects, self.bytes);
        Ok(size)
    }

    fn frame(&self, oid: Oid, name: Vec<u8>, path: &str) -> Result<Frame, IngestError> {
        let raw = self.read_tree(&oid, path)?;
        Ok(Frame {
            oid,
            name,
            out: Vec::with_capacity(raw.len()),
            raw,
            next: 0,
            subdirs: 0,
        })
    }

    fn path_of(stack: &[Frame]) -> String {
        let names: Vec<String> = stack
            .iter()
            .skip(1)
            .map(|f| String::from_utf8_lossy(&f.name).into_owned())
            .collect();
        names.join("/")
    }

    /// Store every tree and blob under `root` (children before parents) and
    /// finally the root's directory record, once everything else is acknowledged.
    pub fn store(mut self, root: Oid) -> Result<Stored, IngestError> {
        let mut stack = vec![self.frame(root, Vec::new(), "")?];
        loop {
            let top = stack.last_mut().expect("non-empty stack");
            if top.next < top.raw.len() {
                let i = top.next;
                top.next += 1;
                let (name, mode, oid) = {
                    let e = &top.raw[i];
                    (e.name.clone(), e.mode, e.oid)
                };
                let path = Self::path_of(&stack);
                check_name(&name, &path)?;
                let size = match mode {
                    MODE_TREE => {
                        if let Some(&sd) = self.trees.get(&oid) {
                            sd
                        } else {
                            if stack.len() > 4096 {
                                return Err(IngestError::BadContent(format!(
                                    "trees nested deeper than 4096 at '{path}'"
                                )));
                            }
                            let child_path = if path.is_empty() {
                                String::from_utf8_lossy(&name).into_owned()
                            } else {
                                format!("{path}/{}", String::from_utf8_lossy(&name))
                            };
                            let f = self.frame(oid, name, &child_path)?;
                            stack.push(f);
                            continue;
                        }
                    }
                    MODE_SUBMODULE => 0,
                    _ => {
                        let p = if path.is_empty() {
                            String::from_utf8_lossy(&name).into_owned()
                        } else {
                            format!("{path}/{}", String::from_utf8_lossy(&name))
                        };
                        self.blob(&oid, &p)?
                    }
                };
                let top = stack.last_mut().expect("non-empty stack");
                if mode == MODE_TREE {
                    top.subdirs += 1;
                }
                top.out.push(Entry {
                    name,
                    mode,
                    oid,
                    size,
                });
                continue;
            }
            // All children stored: this tree's record can go.
            let done = stack.pop().expect("non-empty stack");
            let path = Self::path_of(&stack);
            let mut out = done.out;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
                return Err(IngestError::BadContent(format!(
                    "tree {} at '{path}' names '{}' twice",
                    oid_hex(&done.oid),
                    String::from_utf8_lossy(&w[0].name)
                )));
            }
            let record = dir::encode(&out);
            self.objects += 1;
            match stack.last_mut() {
                None => {
                    let (objects, bytes) = (self.objects, self.bytes);
                    self.pipe.finish(
                        (keys::tree(&done.oid), record),
                        &mut *self.progress,
                        objects,
                        bytes,
                    )?;
                    self.progress.force("stored", objects, bytes);
                    return Ok(Stored {
                        root_subdirs: done.subdirs,
                        objects,
                        bytes,
                    });
                }
                Some(parent) => {
                    parent.subdirs += 1;
                    parent.out.push(Entry {
                        name: done.name,
                        mode: MODE_TREE,
                        oid: done.oid,
                        size: done.subdirs,
                    });
                    self.trees.insert(done.oid, done.subdirs);
                    self.push(keys::tree(&done.oid), record)?;
                    self.progress.tick("storing", self.objects, self.bytes);
                }
            }
        }
    }
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
