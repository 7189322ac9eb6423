//! The fetcher's local cache: bare repositories (`cache_dir/repos/<h>.git`) and
//! materialized big blobs (`cache_dir/blobs/<oid>`), bounded in bytes and age.
//!
//! Invariants:
//! - An entry with a lease (an ingest, a FETCH_BLOB or a prefetch batch using
//!   it) is never evicted; eviction only takes unleased entries, least recently
//!   used first, or any unleased entry unused for longer than `max_age`.
//! - Eviction never loses content: every cached object can be fetched again from
//!   its remote (FETCH_BLOB does so when it finds the repository gone).
//! - An evicted entry is first renamed into `cache_dir/trash/` under the cache
//!   lock, so a new lease never sees a half-deleted directory; the trash is
//!   emptied outside the lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use monofs_net::sync::lock;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the janitor looks at the cache when nobody kicks it.
pub const JANITOR_INTERVAL: Duration = Duration::from_secs(3);

struct Entry {
    bytes: u64,
    last_used: Instant,
    leases: u32,
    /// Changes when the entry is created again after an eviction, so holders of
    /// open handles (gix repositories) can tell their handle is stale.
    generation: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<PathBuf, Entry>,
    next_generation: u64,
    kicked: bool,
}

pub(crate) struct Cache {
    pub repos: PathBuf,
    pub blobs: PathBuf,
    trash: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    state: Mutex<State>,
    kick: Condvar,
    /// FETCH_BLOB requests served from the cache without a `git fetch`.
    pub hits: AtomicU64,
    /// FETCH_BLOB requests that had to fetch from the remote.
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

/// Use of a cache entry; the entry is not evicted while any lease on it lives.
pub(crate) struct Lease {
    cache: Arc<Cache>,
    path: PathBuf,
    pub generation: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = lock(&self.cache.state);
        if let Some(e) = st.entries.get_mut(&self.path) {
            e.leases = e.leases.saturating_sub(1);
            e.last_used = Instant::now();
        }
    }
}

/// Bytes under `p` (a file or a directory tree), not following symlinks.
pub(crate) fn disk_usage(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else { return 0 };
    if !md.is_dir() {
        return md.len();
    }
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

impl Cache {
    /// Open the cache under `root`, adopting what a previous run left (ages
    /// from modification times) and emptying the trash.
    pub fn open(root: &Path, max_bytes: u64, max_age: Duration) -> std::io::Result<Arc<Cache>> {
        let repos = root.join("repos");
        let blobs = root.join("blobs");
        let trash = root.join("trash");
        for d in [&repos, &blobs] {
            std::fs::create_dir_all(d)?;
        }
        if trash.exists() {
            let _ = std::fs::remove_dir_all(&trash);
        }
        std::fs::create_dir_all(&trash)?;
        let mut st = State::default();
        let now = Instant::now();
        for dir in [&repos, &blobs] {
            for e in std::fs::read_dir(dir)?.flatten() {
                let p = e.path();
                let name = e.file_name();
                if name.to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                let last_used = now.checked_sub(age).unwrap_or(now);
                st.next_generation += 1;
                let generation = st.next_generation;
                st.entries
                    .insert(p.clone(), Entry { bytes: disk_usage(&p), last_used, leases: 0, generation });
            }
        }
        Ok(Arc::new(Cache {
            repos,
            blobs,
            trash,
            max_bytes,
            max_age,
            state: Mutex::new(st),
            kick: Condvar::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Lease `path` (a repository directory or a blob file under this cache),
    /// creating its entry if needed. The path need not exist yet.
    pub fn lease(self: &Arc<Self>, path: &Path) -> Lease {
        let mut st = self.lock();
        let st = &mut *st;
        let e = st.entries.entry(path.to_path_buf()).or_insert_with(|| {
            st.next_generation += 1;
            Entry { bytes: 0, last_used: Instant::now(), leases: 0, generation: st.next_generation }
        });
        e.leases += 1;
        e.last_used = Instant::now();
        Lease { cache: self.clone(), path: path.to_path_buf(), generation: e.generation }
    }

    /// Record the size of a leased entry (after a fetch or a materialization).
    pub fn measure(&self, path: &Path) {
        let bytes = disk_usage(path);
        if let Some(e) = self.lock().entries.get_mut(path) {
            e.bytes = bytes;
        }
    }

    /// Total bytes of the entries and their number (repositories, blob files).
    pub fn usage(&self) -> (u64, usize, usize) {
        let st = self.lock();
        let bytes = st.entries.values().map(|e| e.bytes).sum();
        let repos = st.entries.keys().filter(|p| p.starts_with(&self.repos)).count();
        (bytes, repos, st.entries.len() - repos)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Ask the janitor to run now (after a fetch).
    pub fn kick(&self) {
        self.lock().kicked = true;
        self.kick.notify_all();
    }

    /// Evict unleased entries, least recently used first, until the cache is
    /// within its byte bound, and every unleased entry older than the age bound.
    /// Returns the number of entries evicted.
    pub fn evict(&self) -> usize {
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut st = self.lock();
            let mut total: u64 = st.entries.values().map(|e| e.bytes).sum();
            let mut idle: Vec<(Instant, PathBuf)> = st
                .entries
                .iter()
                .filter(|(_, e)| e.leases == 0)
                .map(|(p, e)| (e.last_used, p.clone()))
                .collect();
            idle.sort();
            for (last_used, p) in idle {
                let old = now.duration_since(last_used) > self.max_age;
                if !old && total <= self.max_bytes {
                    continue;
                }
                let e = st.entries.remove(&p).expect("listed above");
                total -= e.bytes;
                if p.exists() {
                    st.next_generation += 1;
                    let t = self.trash.join(format!("{}", st.next_generation));
                    match std::fs::rename(&p, &t) {
                        Ok(()) => {
                            // Counted with the removal, so STATUS never shows one without the other.
                            self.evictions.fetch_add(1, Ordering::Relaxed);
                            gone.push(t);
                        }
                        Err(err) => tracing::warn!(path = %p.display(), error = %err, "cannot evict"),
                    }
                }
            }
        }
        for t in &gone {
            let r = if t.is_dir() { std::fs::remove_dir_all(t) } else { std::fs::remove_file(t) };
            if let Err(err) = r {
                tracing::warn!(path = %t.display(), error = %err, "cannot delete an evicted cache entry");
            }
        }
        if !gone.is_empty() {
            tracing::info!(entries = gone.len(), "cache entries evicted");
        }
        gone.len()
    }

    /// Run `evict` every JANITOR_INTERVAL and whenever kicked, until `stop`.
    pub fn spawn_janitor(self: &Arc<Self>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new().name("monofs-fetch-janitor".into()).spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                {
                    let st = me.lock();
                    let (mut st, _) = me
                        .kick
                        .wait_timeout_while(st, Duration::from_millis(250), |s| !s.kicked)
                        .unwrap_or_else(|e| e.into_inner());
                    if !st.kicked && last.elapsed() < JANITOR_INTERVAL {
                        continue;
                    }
                    st.kicked = false;
                }
                last = Instant::now();
                me.evict();
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_lru_but_never_leased() {
        let tmp = std::env::temp_dir().join(format!("monofs-cache-test-{}", std::process::id()));
        let c = Cache::open(&tmp, 10, Duration::from_secs(3600)).unwrap();
        let a = c.repos.join("a.git");
        let b = c.blobs.join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("pack"), vec![0u8; 8]).unwrap();
        std::fs::write(&b, vec![0u8; 8]).unwrap();
        let la = c.lease(&a);
        c.measure(&a);
        {
            let _lb = c.lease(&b);
            c.measure(&b);
            assert_eq!(c.usage().0, 16);
            assert_eq!(c.evict(), 0, "both leased");
        }
        assert_eq!(c.evict(), 1);
        assert!(!b.exists() && a.exists());
        drop(la);
        assert_eq!(c.evict(), 0, "within the bound");
        let c2 = Cache::open(&tmp, 10, Duration::from_secs(0)).unwrap();
        assert_eq!(c2.usage().1, 1, "adopted at open");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c2.evict(), 1, "too old");
        assert!(!a.exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
