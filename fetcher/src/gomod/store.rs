//! Storing a module on the nodes: blobs as chunks under their Git blob ids,
//! directories as directory records under their Git tree ids, so identical
//! content is shared with Git ingests.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use monofs_net::client::Cluster;
use monofs_net::dir::{self, Entry, MODE_EXEC, MODE_FILE, MODE_TREE};
use monofs_net::{keys, proto, Oid, CHUNK_SIZE, MAX_BATCH_ITEMS};
use sha1::Digest as _;

use crate::IngestError;

/// Largest encoded PUT_BATCH sent.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Deepest directory nesting accepted in a module.
pub const MAX_DEPTH: usize = 512;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

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
        if self.last.is_none_or(|l| l.elapsed() >= PROGRESS_INTERVAL) {
            self.force(phase, objects, bytes);
        }
    }

    pub fn force(&mut self, phase: &str, objects: u64, bytes: u64) {
        self.last = Some(Instant::now());
        (self.f)(phase, objects, bytes);
    }
}

/// Groups items into PUT_BATCHes (≤ MAX_BATCH_ITEMS items, ≈ MAX_BATCH_BYTES)
/// and writes each to every owner, waiting for the acknowledgement.
pub(crate) struct Batcher<'c, 'p, 'f> {
    cluster: &'c Cluster,
    cur: Vec<(Vec<u8>, Vec<u8>)>,
    cur_bytes: usize,
    /// Blobs already pushed in this ingest.
    blobs: HashSet<Oid>,
    trees: HashSet<Oid>,
    pub objects: u64,
    pub bytes: u64,
    pub progress: &'p mut Progress<'f>,
}

impl<'c, 'p, 'f> Batcher<'c, 'p, 'f> {
    pub fn new(cluster: &'c Cluster, progress: &'p mut Progress<'f>) -> Self {
        Batcher {
            cluster,
            cur: Vec::new(),
            cur_bytes: 0,
            blobs: HashSet::new(),
            trees: HashSet::new(),
            objects: 0,
            bytes: 0,
            progress,
        }
    }

    fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), IngestError> {
        let sz = proto::put_item_size(&key, &value);
        if !self.cur.is_empty() && (self.cur.len() >= MAX_BATCH_ITEMS || self.cur_bytes + sz > MAX_BATCH_BYTES) {
            self.flush()?;
        }
        self.cur.push((key, value));
        self.cur_bytes += sz;
        Ok(())
    }

    /// Write what is batched and wait until every owner acknowledged it.
    pub fn flush(&mut self) -> Result<(), IngestError> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.cur);
        self.cur_bytes = 0;
        self.cluster.put_batch(batch)?;
        self.progress.tick("storing", self.objects, self.bytes);
        Ok(())
    }

    /// True if the blob was not pushed yet in this ingest (and now counts as pushed).
    pub fn claim_blob(&mut self, oid: &Oid) -> bool {
        self.blobs.insert(*oid)
    }

    /// Push one chunk of a claimed blob.
    pub fn blob_chunk(&mut self, oid: &Oid, chunk: u32, data: Vec<u8>) -> Result<(), IngestError> {
        self.bytes += data.len() as u64;
        self.push(keys::blob_chunk(oid, chunk), data)
    }

    pub fn blob_done(&mut self) {
        self.objects += 1;
        self.progress.tick("storing", self.objects, self.bytes);
    }

    /// Store a blob held in memory; returns its Git blob id.
    pub fn blob_bytes(&mut self, data: &[u8]) -> Result<Oid, IngestError> {
        let oid = super::modzip::git_blob_oid(data);
        if self.claim_blob(&oid) {
            for (i, c) in data.chunks(CHUNK_SIZE).enumerate() {
                self.blob_chunk(&oid, i as u32, c.to_vec())?;
            }
            self.blob_done();
        }
        Ok(oid)
    }

    /// Queue a directory record (not a root: roots go through `put_root`).
    pub fn tree(&mut self, t: &Tree) -> Result<(), IngestError> {
        if self.trees.insert(t.oid) {
            self.objects += 1;
            self.push(keys::tree(&t.oid), t.record.clone())?;
        }
        Ok(())
    }

    /// Flush everything, then write the roots' records, so a root is never on a
    /// node before everything under it is.
    pub fn finish(mut self, roots: &[&Tree]) -> Result<(u64, u64), IngestError> {
        self.flush()?;
        for r in roots {
            self.tree(r)?;
        }
        self.flush()?;
        self.progress.force("stored", self.objects, self.bytes);
        Ok((self.objects, self.bytes))
    }
}

/// A file to place in a tree.
pub(crate) struct FileRef {
    pub mode: u32,
    pub oid: Oid,
    pub size: u64,
}

enum Node {
    File(FileRef),
    Dir(BTreeMap<String, Node>),
}

/// A directory, hashed and encoded.
pub(crate) struct Tree {
    pub oid: Oid,
    pub record: Vec<u8>,
    pub subdirs: u64,
}

/// Builds Git trees from slash-separated paths.
#[derive(Default)]
pub(crate) struct TreeBuilder {
    root: BTreeMap<String, Node>,
}

impl TreeBuilder {
    pub fn add(&mut self, path: &str, f: FileRef) -> Result<(), String> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > MAX_DEPTH {
            return Err(format!("'{path}' is nested deeper than {MAX_DEPTH} directories"));
        }
        let mut cur = &mut self.root;
        for (i, p) in parts.iter().enumerate() {
            if p.len() > dir::MAX_NAME {
                return Err(format!("'{path}' has a name longer than {} bytes", dir::MAX_NAME));
            }
            if i + 1 == parts.len() {
                if cur.insert(p.to_string(), Node::File(f)).is_some() {
                    return Err(format!("'{path}' appears twice"));
                }
                return Ok(());
            }
            let next = cur.entry(p.to_string()).or_insert_with(|| Node::Dir(BTreeMap::new()));
            cur = match next {
                Node::Dir(d) => d,
                Node::File(_) => return Err(format!("'{path}' is under a file")),
            };
        }
        Ok(())
    }

    /// Hash every directory; `each` gets every tree below the root, children
    /// before parents. Returns the root.
    pub fn build(self, each: &mut dyn FnMut(&Tree) -> Result<(), IngestError>) -> Result<Tree, IngestError> {
        build_dir(self.root, each)
    }
}

fn build_dir(
    entries: BTreeMap<String, Node>,
    each: &mut dyn FnMut(&Tree) -> Result<(), IngestError>,
) -> Result<Tree, IngestError> {
    if entries.len() > dir::MAX_ENTRIES {
        return Err(IngestError::BadContent(format!(
            "a directory has {} entries, more than MonoFS's limit of {}",
            entries.len(),
            dir::MAX_ENTRIES
        )));
    }
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut subdirs = 0;
    for (name, node) in entries {
        match node {
            Node::File(f) => out.push(Entry { name: name.into_bytes(), mode: f.mode, oid: f.oid, size: f.size }),
            Node::Dir(d) => {
                let t = build_dir(d, each)?;
                each(&t)?;
                subdirs += 1;
                out.push(Entry { name: name.into_bytes(), mode: MODE_TREE, oid: t.oid, size: t.subdirs });
            }
        }
    }
    make_tree(out, subdirs)
}

/// Hash and encode a directory from its entries (sorted by name bytes).
pub(crate) fn make_tree(mut entries: Vec<Entry>, subdirs: u64) -> Result<Tree, IngestError> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let record = dir::encode(&entries)
        .map_err(|e| IngestError::BadContent(format!("a directory of the module cannot be stored: {e}")))?;
    Ok(Tree { oid: git_tree_oid(&entries), record, subdirs })
}

/// Git's tree id: entries ordered as if directory names ended in '/'.
pub(crate) fn git_tree_oid(entries: &[Entry]) -> Oid {
    let key = |e: &Entry| {
        let mut k = e.name.clone();
        if e.mode == MODE_TREE {
            k.push(b'/');
        }
        k
    };
    let mut sorted: Vec<(Vec<u8>, &Entry)> = entries.iter().map(|e| (key(e), e)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut body = Vec::with_capacity(entries.len() * 40);
    for (_, e) in sorted {
        body.extend_from_slice(format!("{:o} ", e.mode).as_bytes());
        body.extend_from_slice(&e.name);
        body.push(0);
        body.extend_from_slice(&e.oid);
    }
    let mut h = sha1::Sha1::new();
    h.update(format!("tree {}\0", body.len()).as_bytes());
    h.update(&body);
    h.finalize().into()
}

pub(crate) fn file_mode(exec: bool) -> u32 {
    if exec {
        MODE_EXEC
    } else {
        MODE_FILE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monofs_net::oid_hex;

    #[test]
    fn empty_tree_is_gits() {
        assert_eq!(oid_hex(&git_tree_oid(&[])), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    }

    #[test]
    fn tree_order_is_gits() {
        // `foo` (a tree) sorts after `foo.txt` and `foo-bar` in Git, before them by bytes.
        let mut b = TreeBuilder::default();
        let f = |data: &[u8]| FileRef { mode: MODE_FILE, oid: super::super::modzip::git_blob_oid(data), size: data.len() as u64 };
        b.add("foo/inner", f(b"i\n")).unwrap();
        b.add("foo.txt", f(b"f\n")).unwrap();
        b.add("foo-bar", f(b"fb\n")).unwrap();
        assert!(b.add("foo.txt/x", f(b"")).is_err());
        assert!(b.add("foo-bar", f(b"")).is_err());
        let mut seen = 0;
        let root = b.build(&mut |_| { seen += 1; Ok(()) }).unwrap();
        assert_eq!(seen, 1);
        assert_eq!(root.subdirs, 1);
        let names: Vec<Vec<u8>> = dir::decode(&root.record).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, [b"foo".to_vec(), b"foo-bar".to_vec(), b"foo.txt".to_vec()]);
        // Same as `git mktree` of these entries (checked in tests/gomod.rs against git).
        assert_eq!(oid_hex(&root.oid).len(), 40);
    }
}
