//! The fetcher's state shared by its connections: the cache, the prefetcher,
//! and the two operations on Git sources, INGEST and FETCH_BLOB, plus STATUS.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use monofs_net::sync::{lock, wait, wait_timeout};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use monofs_net::client::Cluster;
use monofs_net::ns::NsEntry;
use monofs_net::proto::{ContentMode, FetchBlobRequest, IngestRequest, SourceKind};
use monofs_net::{keys, oid_from_hex, oid_hex, Oid, CHUNK_SIZE};
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::{Cache, Lease};
use crate::prefetch::{Prefetcher, Source};
use crate::walk::{self, BlobRef, Progress, BIG_BLOB};
use crate::{git, url, IngestError, FETCH_HEARTBEAT};

/// FETCH_BLOB requests doing work at once (reading git, writing nodes); more wait.
pub const MAX_CONCURRENT_FETCH_BLOBS: usize = 16;
/// How long a FETCH_BLOB waits for one of those slots before answering busy.
pub const FETCH_BLOB_SLOT_WAIT: Duration = Duration::from_secs(60);

/// What a Git ingest produced: the entry to publish and, in lazy mode, the
/// blobs left to prefetch.
pub(crate) struct Ingested {
    pub entry: NsEntry,
    pub pending: Option<(Arc<Source>, Vec<BlobRef>)>,
}

/// One FETCH_BLOB in progress; later identical requests wait for its result.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Result<(), String>>>,
    cv: Condvar,
}

/// Blob, chunk range, and a hash of the target nodes and replication.
type FlightKey = (Oid, u32, u32, u64);

pub(crate) struct Service {
    pub cache: Arc<Cache>,
    pub prefetch: Arc<Prefetcher>,
    pub fetch_timeout: Duration,
    pub prefetch_workers: usize,
    /// Whether local paths and file:// URLs may be fetched (`FetcherConfig::allow_local_sources`).
    pub allow_local_sources: bool,
    flights: Mutex<HashMap<FlightKey, Arc<Flight>>>,
    slots: Mutex<usize>,
    slot_free: Condvar,
    /// FETCH_BLOB requests being answered (including ones waiting on another).
    pub inflight: AtomicUsize,
    pub fetch_blobs: AtomicU64,
    ingest_seq: AtomicU64,
    /// Presented to the nodes this fetcher stores on.
    pub key: monofs_net::key::ClusterKey,
}

/// A lock per key (repository or blob file), forgotten once nobody holds it.
fn keyed_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = lock(LOCKS.get_or_init(Default::default));
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks.entry(path.to_path_buf()).or_default().clone()
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Service {
    pub fn new(
        cache: Arc<Cache>,
        fetch_timeout: Duration,
        prefetch_workers: usize,
        allow_local_sources: bool,
        key: monofs_net::key::ClusterKey,
    ) -> Service {
        Service {
            allow_local_sources,
            prefetch: Prefetcher::new(cache.clone()),
            cache,
            fetch_timeout,
            prefetch_workers,
            flights: Mutex::new(HashMap::new()),
            slots: Mutex::new(0),
            slot_free: Condvar::new(),
            inflight: AtomicUsize::new(0),
            fetch_blobs: AtomicU64::new(0),
            ingest_seq: AtomicU64::new(0),
            key,
        }
    }

    fn repo_dir(&self, fetch_url: &str) -> PathBuf {
        self.cache.repos.join(format!("{:016x}.git", xxh3_64(fetch_url.as_bytes())))
    }

    /// Fetch `req.url` at `req.git_ref`, store the trees not yet stored (and in
    /// eager mode the blobs not yet stored, before the trees), and return the
    /// entry to publish. Phases: `fetching`, `blobs` (eager), `trees`, `done`.
    pub fn ingest_git(
        &self,
        req: &IngestRequest,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<Ingested, IngestError> {
        if req.kind != SourceKind::Git {
            return Err(IngestError::BadRequest(format!("source kind {:?} is not a Git repository", req.kind)));
        }
        let ns_path = crate::namespace_path(&req.url, &req.source_id)?;
        if !req.git_ref.is_empty() {
            git::check_ref(&req.git_ref)?;
        }
        if req.nodes.is_empty() {
            return Err(IngestError::BadRequest("no storage nodes given".into()));
        }
        let fetch_url = url::fetch_url(&req.url, self.allow_local_sources)?;
        let repo_dir = self.repo_dir(&fetch_url);
        let pin = format!("{:016x}", xxh3_64(req.git_ref.as_bytes()));
        let _lease = self.cache.lease(&repo_dir);
        let lazy = req.content == ContentMode::Lazy;
        // A lazy ingest of a local repository fetches no blobs: their sizes, which
        // the directory records need, are read from the repository itself. Other
        // remotes cannot tell a blob's size without sending it (docs/ARCHITECTURE.md,
        // "Shallow, filtered fetches"), so their commit comes with its blobs.
        let source = if lazy { url::local_path(&req.url).and_then(|p| open_source(&p)) } else { None };
        let shape = git::Shape {
            shallow: true,
            filter: source.is_some(),
            upload_pack: source.as_ref().filter(|s| s.1.is_none()).map(|_| git::LOCAL_UPLOAD_PACK),
        };
        let source = source.map(|s| s.0);

        // 1. Fetch, in a helper thread so this one can keep the client informed.
        let mut p = Progress::new(progress);
        p.phase("fetching");
        let started = Instant::now();
        let (fetched, head_name) = std::thread::scope(|s| {
            // The remote's HEAD branch is asked while the fetch runs, not after it.
            let head = req
                .git_ref
                .is_empty()
                .then(|| s.spawn(|| git::remote_head_branch(&fetch_url, self.fetch_timeout)));
            let (done_tx, done_rx) = crossbeam::channel::bounded::<()>(1);
            let h = s.spawn(|| {
                // One fetch per cache repository at a time: a second ingest of the same
                // URL waits and then finds the objects already there.
                let key_lock = keyed_lock(&repo_dir);
                let guard = lock(&key_lock);
                let f = git::fetch(&repo_dir, &fetch_url, &req.git_ref, &pin, &shape, self.fetch_timeout);
                drop(guard);
                self.cache.measure(&repo_dir);
                self.cache.kick();
                drop(done_tx);
                f
            });
            // Woken when the fetch thread ends (its sender is dropped), or every
            // FETCH_HEARTBEAT to keep the client informed.
            while let Err(crossbeam::channel::RecvTimeoutError::Timeout) = done_rx.recv_timeout(FETCH_HEARTBEAT) {
                p.force();
            }
            let f = h.join().unwrap_or_else(|_| Err(IngestError::BadContent("the fetch thread panicked".into())))?;
            let head = head.and_then(|h| h.join().ok().flatten());
            Ok::<_, IngestError>((f, head))
        })?;
        tracing::info!(url = %url::redact(&req.url), commit = %fetched.commit, blobs = !fetched.filtered, secs = started.elapsed().as_secs_f64(), "fetched");
        // Sizes come from the source only when the cache lacks the blobs.
        let source = source.filter(|_| fetched.filtered);

        // 2. Read the commit with gix.
        let repo = gix::open_opts(&fetched.repo, gix::open::Options::isolated()).map_err(|e| {
            IngestError::BadContent(format!("cannot open the fetch cache {}: {e}", fetched.repo.display()))
        })?;
        let commit = oid_from_hex(&fetched.commit).expect("git returned a full sha");
        let (root_tree, commit_time) = {
            let obj = repo
                .find_object(walk::gix_oid(&commit))
                .map_err(|e| IngestError::BadContent(format!("commit {} cannot be read: {e}", fetched.commit)))?;
            if obj.kind != gix::object::Kind::Commit {
                return Err(IngestError::BadContent(format!("{} is not a commit", fetched.commit)));
            }
            walk::parse_commit(&obj.data)
                .ok_or_else(|| IngestError::BadContent(format!("commit {} is malformed", fetched.commit)))?
        };

        // 3. Plan: the trees not yet stored, top-down, skipping stored subtrees.
        let cluster = Cluster::new(req.nodes.clone(), req.replication as usize, &self.key);
        p.phase("trees");
        let plan = walk::Planner::new(&repo, source.as_ref(), &cluster, &mut p).plan(root_tree)?;
        let trees: usize = plan.levels.iter().map(Vec::len).sum();
        let mut objects = 0;
        let mut bytes = 0;
        // 4. Eager: blobs first, so a stored tree from an eager ingest implies its blobs are stored.
        if req.content == ContentMode::Eager {
            p.phase("blobs");
            let oids: Vec<Oid> = plan.blobs.iter().map(|b| b.oid).collect();
            // The commit may have been fetched before by a lazy ingest, without blobs.
            if git::fetch_missing(&repo, &fetched.repo, &fetch_url, &oids, self.fetch_timeout)? > 0 {
                self.cache.measure(&repo_dir);
            }
            walk::store_blobs(&repo, &fetched.repo, &cluster, &plan.blobs, &mut p)?;
            p.force();
            objects += p.objects;
            bytes += p.bytes;
            p.phase("trees");
        }
        // 5. Trees, level by level by height; the root last.
        walk::store_trees(&cluster, plan.levels, &mut p)?;
        p.force();
        objects += p.objects;
        bytes += p.bytes;
        p.report("done", objects, bytes);
        tracing::info!(
            url = %url::redact(&req.url),
            trees_stored = trees,
            trees_skipped = plan.trees_skipped,
            blobs_planned = plan.blobs.len(),
            lazy = (req.content == ContentMode::Lazy),
            secs = started.elapsed().as_secs_f64(),
            "stored"
        );
        let pending = (req.content == ContentMode::Lazy && !plan.blobs.is_empty()).then(|| {
            let src = Arc::new(Source {
                repo_dir: repo_dir.clone(),
                fetch_url: fetch_url.clone(),
                fetch_timeout: self.fetch_timeout,
                cluster,
                progress: self.prefetch.progress_of(&url::redact(&req.url)),
                ingest: self.ingest_seq.fetch_add(1, Ordering::Relaxed),
            });
            (src, plan.blobs)
        });
        let git_ref = if req.git_ref.is_empty() {
            head_name.unwrap_or_else(|| "HEAD".to_string())
        } else {
            req.git_ref.clone()
        };
        Ok(Ingested {
            entry: NsEntry {
                path: ns_path,
                url: req.url.clone(),
                git_ref,
                commit,
                root_tree,
                commit_time,
                root_subdirs: plan.root_subdirs,
            },
            pending,
        })
    }

    /// Hand a lazy ingest's blobs to the prefetch workers; with none configured
    /// (content only on first read) nothing is queued.
    pub fn enqueue(&self, pending: Option<(Arc<Source>, Vec<BlobRef>)>) {
        if self.prefetch_workers == 0 {
            return;
        }
        if let Some((src, blobs)) = pending {
            self.prefetch.enqueue(src, blobs);
        }
    }

    /// Store chunks `first_chunk .. first_chunk + chunks` of a blob on its
    /// owners. Identical requests in flight share one execution.
    pub fn fetch_blob(&self, req: &FetchBlobRequest) -> Result<(), String> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let _dec = crate::Slot(&self.inflight);
        self.fetch_blobs.fetch_add(1, Ordering::Relaxed);
        let mut nodes = Vec::new();
        for n in &req.nodes {
            nodes.extend_from_slice(n.id.as_bytes());
            nodes.push(0);
            nodes.extend_from_slice(n.addr.as_bytes());
            nodes.push(0);
        }
        nodes.extend_from_slice(&req.replication.to_be_bytes());
        let key = (req.oid, req.first_chunk, req.chunks, xxh3_64(&nodes));
        let (flight, leader) = {
            let mut f = lock(&self.flights);
            match f.get(&key) {
                Some(fl) => (fl.clone(), false),
                None => {
                    let fl = Arc::new(Flight::default());
                    f.insert(key, fl.clone());
                    (fl, true)
                }
            }
        };
        if !leader {
            let mut r = lock(&flight.result);
            while r.is_none() {
                r = wait(&flight.cv, r);
            }
            return r.clone().expect("set");
        }
        let result = self.fetch_blob_slot(req);
        *lock(&flight.result) = Some(result.clone());
        flight.cv.notify_all();
        lock(&self.flights).remove(&key);
        result
    }

    fn fetch_blob_slot(&self, req: &FetchBlobRequest) -> Result<(), String> {
        {
            let deadline = Instant::now() + FETCH_BLOB_SLOT_WAIT;
            let mut n = lock(&self.slots);
            while *n >= MAX_CONCURRENT_FETCH_BLOBS {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!(
                        "busy: the fetcher is running {MAX_CONCURRENT_FETCH_BLOBS} blob fetches already; retry later"
                    ));
                }
                n = wait_timeout(&self.slot_free, n, left).0;
            }
            *n += 1;
        }
        let r = match req.kind {
            SourceKind::Git => self.fetch_git_blob(req).map_err(|e| e.to_string()),
            SourceKind::GoModule => {
                Err("FETCH_BLOB of a Go module source is not served by this fetcher; ingest it eagerly".into())
            }
        };
        *lock(&self.slots) -= 1;
        self.slot_free.notify_one();
        self.cache.kick();
        if r.is_ok() {
            self.prefetch.boost(&req.oid);
        }
        r
    }

    fn fetch_git_blob(&self, req: &FetchBlobRequest) -> Result<(), IngestError> {
        let hex = oid_hex(&req.oid);
        let total = keys::chunk_count(req.size);
        let end = req.first_chunk as u64 + req.chunks as u64;
        if end > total {
            return Err(IngestError::BadRequest(format!(
                "chunks {}..{end} asked of blob {hex}, which has {total} chunks of {} bytes",
                req.first_chunk,
                CHUNK_SIZE
            )));
        }
        if req.nodes.is_empty() {
            return Err(IngestError::BadRequest("no storage nodes given".into()));
        }
        if req.chunks == 0 {
            return Ok(());
        }
        let fetch_url = url::fetch_url(&req.url, self.allow_local_sources)?;
        let shown = url::redact(&req.url);
        let cluster = Cluster::new(req.nodes.clone(), req.replication as usize, &self.key);
        let range = req.first_chunk..end as u32;

        // A materialized copy serves without the repository.
        let blob_path = self.cache.blobs.join(&hex);
        if req.size >= BIG_BLOB {
            let lease = self.cache.lease(&blob_path);
            if let Ok(f) = File::open(&blob_path) {
                self.cache.hits.fetch_add(1, Ordering::Relaxed);
                return self.serve_file(&f, req, range, &cluster, lease);
            }
        }

        let repo_dir = self.repo_dir(&fetch_url);
        let _lease = self.cache.lease(&repo_dir);
        let repo = match self.find_blob(&repo_dir, req)? {
            Some(repo) => {
                self.cache.hits.fetch_add(1, Ordering::Relaxed);
                repo
            }
            None => {
                self.cache.misses.fetch_add(1, Ordering::Relaxed);
                let key_lock = keyed_lock(&repo_dir);
                let _g = lock(&key_lock);
                // Another request may have fetched while this one waited.
                match self.find_blob(&repo_dir, req)? {
                    Some(repo) => repo,
                    None => {
                        // By id, whether or not a ref of the remote still reaches it.
                        let r = git::fetch_by_id(&repo_dir, &fetch_url, std::slice::from_ref(&hex), self.fetch_timeout);
                        self.cache.measure(&repo_dir);
                        r?;
                        self.find_blob(&repo_dir, req)?.ok_or_else(|| {
                            IngestError::BadContent(format!("blob {hex} is not in {shown}: the remote does not have it any more"))
                        })?
                    }
                }
            }
        };
        if req.size < BIG_BLOB {
            let mut items = Vec::new();
            walk::read_blob(&repo, &repo_dir, &req.oid, req.size, &mut |i, c| {
                if range.contains(&i) {
                    items.push((keys::blob_chunk(&req.oid, i), c));
                }
                Ok(())
            })?;
            return walk::put_all(&cluster, items).map_err(IngestError::NodeWrite);
        }
        drop(repo);
        let (f, lease) = self.materialize(&repo_dir, req)?;
        self.serve_file(&f, req, range, &cluster, lease)
    }

    /// The cache repository, if it holds blob `req.oid` (of the size asked).
    fn find_blob(&self, repo_dir: &Path, req: &FetchBlobRequest) -> Result<Option<gix::Repository>, IngestError> {
        if !repo_dir.join("HEAD").exists() {
            return Ok(None);
        }
        let Ok(repo) = gix::open_opts(repo_dir, gix::open::Options::isolated()) else { return Ok(None) };
        let Ok(hdr) = repo.find_header(walk::gix_oid(&req.oid)) else { return Ok(None) };
        let hex = oid_hex(&req.oid);
        if hdr.kind() != gix::object::Kind::Blob {
            return Err(IngestError::BadRequest(format!("object {hex} is not a blob")));
        }
        if hdr.size() != req.size {
            return Err(IngestError::BadRequest(format!(
                "blob {hex} has {} bytes, the request says {}",
                hdr.size(),
                req.size
            )));
        }
        Ok(Some(repo))
    }

    /// Write big blob `req.oid` once to `blobs/<oid>` (temporary file, then
    /// rename), so chunk ranges are served by pread instead of re-reading git.
    fn materialize(&self, repo_dir: &Path, req: &FetchBlobRequest) -> Result<(File, Lease), IngestError> {
        let hex = oid_hex(&req.oid);
        let path = self.cache.blobs.join(&hex);
        let lease = self.cache.lease(&path);
        let key_lock = keyed_lock(&path);
        let _g = lock(&key_lock);
        if let Ok(f) = File::open(&path) {
            return Ok((f, lease));
        }
        let cache_err = |p: &Path, e: std::io::Error| IngestError::Cache { path: p.to_path_buf(), source: e };
        let tmp = self.cache.blobs.join(format!(".tmp-{hex}-{}-{}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        let r = (|| {
            let mut out = std::io::BufWriter::with_capacity(CHUNK_SIZE, File::create(&tmp).map_err(|e| cache_err(&tmp, e))?);
            let timeout = Duration::from_secs(600 + req.size / (1 << 20));
            let mut stream = git::BlobStream::open(repo_dir, &hex, timeout)?;
            let mut buf = vec![0u8; CHUNK_SIZE];
            let mut total = 0u64;
            loop {
                let n = stream.read_chunk(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > req.size {
                    break;
                }
                out.write_all(&buf[..n]).map_err(|e| cache_err(&tmp, e))?;
            }
            stream.finish()?;
            if total != req.size {
                return Err(IngestError::BadContent(format!(
                    "blob {hex}: git returned {total} bytes, its header says {}",
                    req.size
                )));
            }
            out.flush().map_err(|e| cache_err(&tmp, e))?;
            drop(out);
            std::fs::rename(&tmp, &path).map_err(|e| cache_err(&path, e))
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
        self.cache.measure(&path);
        let f = File::open(&path).map_err(|e| cache_err(&path, e))?;
        Ok((f, lease))
    }

    fn serve_file(
        &self,
        f: &File,
        req: &FetchBlobRequest,
        range: std::ops::Range<u32>,
        cluster: &Cluster,
        lease: Lease,
    ) -> Result<(), IngestError> {
        let path = self.cache.blobs.join(oid_hex(&req.oid));
        let mut group = Vec::new();
        for i in range {
            let off = i as u64 * CHUNK_SIZE as u64;
            let len = (req.size - off).min(CHUNK_SIZE as u64) as usize;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off).map_err(|e| IngestError::Cache { path: path.clone(), source: e })?;
            group.push((keys::blob_chunk(&req.oid, i), buf));
            if group.len() == 3 {
                walk::put_all(cluster, std::mem::take(&mut group))?;
            }
        }
        walk::put_all(cluster, group)?;
        drop(lease);
        Ok(())
    }

    /// STATUS: health and cache figures as one JSON object.
    pub fn status_json(&self, addr: &str, ingests: usize, auth_failures: u64) -> String {
        let (cache_bytes, repos_cached, blobs_cached) = self.cache.usage();
        let hits = self.cache.hits.load(Ordering::Relaxed);
        let misses = self.cache.misses.load(Ordering::Relaxed);
        let rate = if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 };
        let mut s = format!(
            "{{\"addr\":{},\"healthy\":true,\"cache_bytes\":{cache_bytes},\"max_cache_bytes\":{},\
             \"repos_cached\":{repos_cached},\"blobs_cached\":{blobs_cached},\"hits\":{hits},\"misses\":{misses},\
             \"hit_rate\":{rate:.4},\"evictions\":{},\"inflight_fetches\":{},\"fetch_blobs\":{},\"ingests_running\":{ingests},\"auth_failures\":{auth_failures},\
             \"prefetch_workers\":{},\"prefetch_queued\":{},\"prefetch_done\":{},\"prefetch_boosted\":{},\"repos\":[",
            json_str(addr),
            self.cache.max_bytes(),
            self.cache.evictions.load(Ordering::Relaxed),
            self.inflight.load(Ordering::SeqCst),
            self.fetch_blobs.load(Ordering::Relaxed),
            self.prefetch_workers,
            self.prefetch.queued(),
            self.prefetch.done.load(Ordering::Relaxed),
            self.prefetch.boosted.load(Ordering::Relaxed),
        );
        for (i, r) in self.prefetch.repos().iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"url\":{},\"queued\":{},\"done\":{},\"pending\":{},\"bytes\":{},\"failed\":{},\"dropped\":{}}}",
                json_str(&r.url),
                r.queued.load(Ordering::Relaxed),
                r.done.load(Ordering::Relaxed),
                r.pending(),
                r.bytes.load(Ordering::Relaxed),
                r.failed.load(Ordering::Relaxed),
                r.dropped.load(Ordering::Relaxed),
            ));
        }
        s.push_str("]}");
        s
    }
}

/// The local repository at `path`, opened to read blob sizes, and its own
/// `uploadpack.allowFilter` if it sets one (an explicit refusal is honoured:
/// such a remote is fetched without the upload-pack that allows the filter).
fn open_source(path: &str) -> Option<(gix::Repository, Option<bool>)> {
    let repo = gix::open_opts(path, gix::open::Options::isolated()).ok()?;
    let allow = repo.config_snapshot().boolean("uploadpack.allowFilter");
    Some((repo, allow))
}

/// A JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_escape() {
        assert_eq!(super::json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
