//! Background prefetch of the blobs of lazily ingested repositories.
//!
//! A bounded priority queue (MAX_PREFETCH_JOBS) feeds `prefetch_workers`
//! threads. Priority is what clients read first: blobs whose directory was
//! just read (a FETCH_BLOB boosts the queued siblings of the blob it brought),
//! then shallow paths before deep ones, then small blobs before big ones. When
//! the queue is full the lowest-priority job is dropped: its blob is fetched on
//! first read instead. A job asks the blob's first owner first and skips what
//! is stored. A job whose repository cache was evicted is dropped, not fetched
//! again (FETCH_BLOB will, on first read).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use monofs_net::sync::{lock, wait_timeout};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use monofs_net::client::Cluster;
use monofs_net::{keys, oid_hex, Oid};

use crate::cache::Cache;
use crate::walk::{self, BlobRef, BIG_BLOB, MAX_BATCH_BYTES};

/// Most jobs queued; beyond, the lowest-priority job is dropped.
pub const MAX_PREFETCH_JOBS: usize = 2_000_000;
/// Most jobs one worker takes at once (small blobs of one repository share a PUT_BATCH).
pub const MAX_JOBS_PER_BATCH: usize = 256;
/// Repositories whose prefetch figures STATUS keeps (finished ones are forgotten first).
pub const MAX_TRACKED_REPOS: usize = 4096;

/// Prefetch figures of one repository URL, cumulative over its ingests.
#[derive(Default)]
pub(crate) struct RepoProgress {
    pub url: String,
    pub queued: AtomicU64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl RepoProgress {
    pub fn pending(&self) -> u64 {
        let finished = self.done.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.dropped.load(Ordering::Relaxed);
        self.queued.load(Ordering::Relaxed).saturating_sub(finished)
    }
}

/// Where the blobs of one ingest come from and go to.
pub(crate) struct Source {
    pub repo_dir: PathBuf,
    /// Where blobs the cache lacks are fetched from, by id.
    pub fetch_url: String,
    pub fetch_timeout: Duration,
    pub cluster: Cluster,
    pub progress: Arc<RepoProgress>,
    /// Distinguishes the directory numbers of different ingests.
    pub ingest: u64,
}

type DirId = (u64, u32);

/// Priority: lower sorts first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key {
    /// 0: boosted (a sibling was just read), 1: normal.
    class: u8,
    depth: u16,
    size: u64,
    seq: u64,
}

struct Job {
    src: Arc<Source>,
    oid: Oid,
    size: u64,
    dir: DirId,
}

struct Dir {
    members: Vec<Oid>,
    queued: usize,
}

#[derive(Default)]
struct Queue {
    jobs: BTreeMap<Key, Job>,
    by_oid: HashMap<Oid, Key>,
    dirs: HashMap<DirId, Dir>,
    /// Directory of each blob whose directory still has queued jobs.
    dir_of: HashMap<Oid, DirId>,
    running: usize,
    seq: u64,
}

impl Queue {
    fn remove(&mut self, key: &Key) -> Option<Job> {
        let job = self.jobs.remove(key)?;
        self.by_oid.remove(&job.oid);
        if let Some(d) = self.dirs.get_mut(&job.dir) {
            d.queued -= 1;
            if d.queued == 0 {
                let d = self.dirs.remove(&job.dir).expect("present");
                for m in d.members {
                    if self.dir_of.get(&m) == Some(&job.dir) {
                        self.dir_of.remove(&m);
                    }
                }
            }
        }
        Some(job)
    }
}

pub(crate) struct Prefetcher {
    queue: Mutex<Queue>,
    ready: Condvar,
    repos: Mutex<HashMap<String, Arc<RepoProgress>>>,
    pub done: AtomicU64,
    pub boosted: AtomicU64,
    cache: Arc<Cache>,
}

impl Prefetcher {
    pub fn new(cache: Arc<Cache>) -> Arc<Prefetcher> {
        Arc::new(Prefetcher {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            repos: Mutex::new(HashMap::new()),
            done: AtomicU64::new(0),
            boosted: AtomicU64::new(0),
            cache,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// The figures of `url` (redacted), created if new.
    pub fn progress_of(&self, url: &str) -> Arc<RepoProgress> {
        let mut repos = lock(&self.repos);
        if !repos.contains_key(url) && repos.len() >= MAX_TRACKED_REPOS {
            let finished: Vec<String> =
                repos.iter().filter(|(_, p)| p.pending() == 0).map(|(u, _)| u.clone()).collect();
            for u in finished.into_iter().take(repos.len() / 2 + 1) {
                repos.remove(&u);
            }
        }
        repos
            .entry(url.to_string())
            .or_insert_with(|| Arc::new(RepoProgress { url: url.to_string(), ..Default::default() }))
            .clone()
    }

    pub fn repos(&self) -> Vec<Arc<RepoProgress>> {
        let mut v: Vec<_> = lock(&self.repos).values().cloned().collect();
        v.sort_by(|a, b| a.url.cmp(&b.url));
        v
    }

    /// Jobs waiting or running.
    pub fn queued(&self) -> u64 {
        let q = self.lock();
        (q.jobs.len() + q.running) as u64
    }

    /// Queue the blobs of one ingest; a blob already queued is not queued twice.
    pub fn enqueue(&self, src: Arc<Source>, blobs: Vec<BlobRef>) {
        let mut dropped: Vec<Arc<Source>> = Vec::new();
        {
            let mut q = self.lock();
            for b in blobs {
                if q.by_oid.contains_key(&b.oid) {
                    continue;
                }
                q.seq += 1;
                let key = Key { class: 1, depth: b.depth, size: b.size, seq: q.seq };
                let dir = (src.ingest, b.dir);
                let d = q.dirs.entry(dir).or_insert_with(|| Dir { members: Vec::new(), queued: 0 });
                d.members.push(b.oid);
                d.queued += 1;
                q.dir_of.entry(b.oid).or_insert(dir);
                q.by_oid.insert(b.oid, key);
                q.jobs.insert(key, Job { src: src.clone(), oid: b.oid, size: b.size, dir });
                src.progress.queued.fetch_add(1, Ordering::Relaxed);
                if q.jobs.len() > MAX_PREFETCH_JOBS {
                    let last = *q.jobs.keys().next_back().expect("non-empty");
                    let j = q.remove(&last).expect("present");
                    dropped.push(j.src);
                }
            }
        }
        for s in dropped {
            s.progress.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.notify_all();
    }

    /// A client just read blob `oid`: move the queued blobs of its directory
    /// ahead of everything not boosted.
    pub fn boost(&self, oid: &Oid) {
        let mut q = self.lock();
        let Some(dir) = q.dir_of.get(oid).copied() else { return };
        let members = match q.dirs.get(&dir) {
            Some(d) => d.members.clone(),
            None => return,
        };
        let mut n = 0;
        for m in members {
            let Some(&key) = q.by_oid.get(&m) else { continue };
            if key.class == 0 {
                continue;
            }
            let job = q.jobs.remove(&key).expect("indexed");
            let nk = Key { class: 0, ..key };
            q.by_oid.insert(m, nk);
            q.jobs.insert(nk, job);
            n += 1;
        }
        self.boosted.fetch_add(n, Ordering::Relaxed);
    }

    /// Take the best job and, while they are small and of the same ingest, the
    /// ones right after it. Waits up to 250 ms.
    fn take(&self) -> Vec<Job> {
        let mut q = self.lock();
        if q.jobs.is_empty() {
            q = wait_timeout(&self.ready, q, Duration::from_millis(250)).0;
        }
        let mut out: Vec<Job> = Vec::new();
        let mut bytes = 0u64;
        while let Some((&key, next)) = q.jobs.iter().next() {
            if let Some(first) = out.first() {
                if !Arc::ptr_eq(&first.src, &next.src)
                    || out.len() >= MAX_JOBS_PER_BATCH
                    || bytes + next.size > MAX_BATCH_BYTES as u64 / 2
                    || next.size >= BIG_BLOB
                {
                    break;
                }
            }
            let j = q.remove(&key).expect("present");
            bytes += j.size;
            let big = j.size >= BIG_BLOB;
            out.push(j);
            if big {
                break;
            }
        }
        q.running += out.len();
        out
    }

    fn finish(&self, n: usize) {
        self.lock().running -= n;
    }

    pub fn spawn_workers(self: &Arc<Self>, n: usize, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        for i in 0..n {
            let me = self.clone();
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("monofs-prefetch-{i}")).spawn(move || {
                let mut open: Option<(PathBuf, u64, gix::Repository)> = None;
                while !stop.load(Ordering::SeqCst) {
                    let jobs = me.take();
                    if jobs.is_empty() {
                        open = None;
                        continue;
                    }
                    let n = jobs.len();
                    me.run(jobs, &mut open);
                    me.finish(n);
                    me.done.fetch_add(n as u64, Ordering::Relaxed);
                }
            })?;
        }
        Ok(())
    }

    /// Store the blobs of `jobs` (all of one ingest) that are not stored yet.
    fn run(&self, jobs: Vec<Job>, open: &mut Option<(PathBuf, u64, gix::Repository)>) {
        let src = jobs[0].src.clone();
        let progress = &src.progress;
        let n = jobs.len() as u64;
        if !src.repo_dir.join("HEAD").exists() {
            progress.dropped.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let lease = self.cache.lease(&src.repo_dir);
        // Evicted between the check and the lease: the directory is gone.
        if !src.repo_dir.join("HEAD").exists() {
            progress.dropped.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let stale = !matches!(open, Some((p, g, _)) if *p == src.repo_dir && *g == lease.generation);
        if stale {
            *open = None;
            match gix::open_opts(&src.repo_dir, gix::open::Options::isolated()) {
                Ok(r) => *open = Some((src.repo_dir.clone(), lease.generation, r)),
                Err(e) => {
                    tracing::warn!(repo = %src.repo_dir.display(), error = %e, "prefetch cannot open the cache");
                    progress.failed.fetch_add(n, Ordering::Relaxed);
                    return;
                }
            }
        }
        let repo = &open.as_ref().expect("opened").2;
        let mut items = Vec::new();
        let mut bytes = 0u64;
        let mut done = 0u64;
        let mut failed = 0u64;
        // The blobs not stored yet, fetched in one `git fetch` where the cache lacks them.
        let mut wanted = Vec::with_capacity(jobs.len());
        for j in jobs {
            match walk::blob_present(&src.cluster, &j.oid, j.size) {
                Ok(true) => done += 1,
                Ok(false) => wanted.push(j),
                Err(e) => {
                    tracing::warn!(blob = %oid_hex(&j.oid), error = %e, "prefetch failed; the blob is fetched on first read");
                    failed += 1;
                }
            }
        }
        let oids: Vec<Oid> = wanted.iter().map(|j| j.oid).collect();
        match crate::git::fetch_missing(repo, &src.repo_dir, &src.fetch_url, &oids, src.fetch_timeout) {
            Ok(0) => {}
            Ok(_) => self.cache.measure(&src.repo_dir),
            Err(e) => tracing::warn!(repo = %progress.url, error = %e, "prefetch cannot fetch blobs; they are fetched on first read"),
        }
        for j in &wanted {
            let r = (|| -> Result<(), crate::IngestError> {
                if j.size >= BIG_BLOB {
                    // Alone in its batch: stream it out in PUT_BATCH-sized groups.
                    let mut group = Vec::new();
                    walk::read_blob(repo, &src.repo_dir, &j.oid, j.size, &mut |i, c| {
                        group.push((keys::blob_chunk(&j.oid, i), c));
                        if group.len() * monofs_net::CHUNK_SIZE >= MAX_BATCH_BYTES - (64 << 10) {
                            walk::put_all(&src.cluster, std::mem::take(&mut group))?;
                        }
                        Ok(())
                    })?;
                    walk::put_all(&src.cluster, group)?;
                } else {
                    walk::read_blob(repo, &src.repo_dir, &j.oid, j.size, &mut |i, c| {
                        items.push((keys::blob_chunk(&j.oid, i), c));
                        Ok(())
                    })?;
                }
                bytes += j.size;
                Ok(())
            })();
            match r {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(blob = %oid_hex(&j.oid), error = %e, "prefetch failed; the blob is fetched on first read");
                    failed += 1;
                }
            }
        }
        if !items.is_empty() {
            if let Err(e) = walk::put_all(&src.cluster, items) {
                tracing::warn!(repo = %progress.url, error = %e, "prefetch could not store a batch; those blobs are fetched on first read");
                // Nothing tells which of the batch were stored: count the whole batch failed.
                failed += done;
                done = 0;
                bytes = 0;
            }
        }
        drop(lease);
        progress.done.fetch_add(done, Ordering::Relaxed);
        progress.failed.fetch_add(failed, Ordering::Relaxed);
        progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(ingest: u64) -> Arc<Source> {
        Arc::new(Source {
            repo_dir: PathBuf::from("/nonexistent"),
            fetch_url: "/nonexistent".into(),
            fetch_timeout: Duration::from_secs(1),
            cluster: Cluster::new(vec![monofs_net::proto::NodeAddr { id: "n".into(), addr: "127.0.0.1:1".into() }], 1, &monofs_net::key::ClusterKey::from_bytes([1; monofs_net::key::KEY_LEN])),
            progress: Arc::new(RepoProgress::default()),
            ingest,
        })
    }

    fn b(o: u8, size: u64, depth: u16, dir: u32) -> BlobRef {
        BlobRef { oid: [o; 20], size, depth, dir }
    }

    #[test]
    fn orders_shallow_small_first_and_boosts_siblings() {
        let tmp = std::env::temp_dir().join(format!("monofs-prefetch-test-{}", std::process::id()));
        let p = Prefetcher::new(Cache::open(&tmp, 1 << 30, Duration::from_secs(60)).unwrap());
        let s = src(1);
        // dir 0 at depth 1; dir 1 deep; dir 2 deeper still.
        p.enqueue(s.clone(), vec![b(1, 500, 1, 0), b(2, 10, 1, 0), b(3, 1, 3, 1), b(4, 2, 3, 1), b(5, 1, 5, 2)]);
        p.enqueue(s.clone(), vec![b(2, 10, 1, 0)]);
        assert_eq!(p.queued(), 5, "queued once");
        p.boost(&[4; 20]);
        let order: Vec<u8> = (0..5)
            .map(|_| {
                let mut q = p.lock();
                let k = *q.jobs.keys().next().unwrap();
                q.remove(&k).unwrap().oid[0]
            })
            .collect();
        assert_eq!(order, vec![3, 4, 2, 1, 5]);
        assert!(p.lock().dirs.is_empty() && p.lock().dir_of.is_empty());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
