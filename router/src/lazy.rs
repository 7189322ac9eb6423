//! File content on demand: a READ of a blob chunk no node has yet asks a
//! fetcher to bring it (and a few chunks after it), then reads again.
//!
//! Concurrent READs of the same chunks share one fetch. A READ waits at most
//! `FETCH_WAIT`; past that it answers NFS3ERR_JUKEBOX, which tells the client to
//! retry a little later while the fetch goes on, so a slow remote never holds
//! the NFS worker threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use monofs_net::proto::{FetchBlobRequest, Request, Response, SourceKind};
use monofs_net::{keys, Oid};
use monofs_nfs::Status;

use crate::ingest::with_fetcher;
use crate::Router;

/// Longest a READ waits for a fetch before answering JUKEBOX.
pub const FETCH_WAIT: Duration = Duration::from_secs(20);
/// Chunks brought per fetch: the one read and the ones after it.
pub const READAHEAD_CHUNKS: u32 = 8;
/// Fetches in flight at once from one router; beyond, READs get JUKEBOX.
pub const MAX_FETCHES: usize = 32;
/// Longest one FETCH_BLOB may take at the fetcher (a cold fetch of a big remote).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Flight {
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<(Oid, u32), Arc<Flight>>>,
    running: AtomicUsize,
}

/// The source kind of a published repository, from its URL.
pub fn source_kind(url: &str) -> SourceKind {
    if url.starts_with("go:") {
        SourceKind::GoModule
    } else {
        SourceKind::Git
    }
}

impl Router {
    /// Bring chunk `chunk` (and the ones after it) of blob `oid` onto its owners.
    pub(crate) fn bring_chunk(
        &self,
        repo: u64,
        oid: &Oid,
        size: u64,
        chunk: u32,
    ) -> Result<(), Status> {
        let ns = self.namespace()?;
        let url = ns
            .dirs
            .get(&repo)
            .and_then(|d| d.repo)
            .map(|i| ns.repos[i].url.clone())
            .ok_or(Status::Stale)?;
        let total = keys::chunk_count(size).min(u32::MAX as u64) as u32;
        let chunks = READAHEAD_CHUNKS.min(total.saturating_sub(chunk)).max(1);
        let key = (*oid, chunk);
        let (flight, leader) = {
            let mut map = self.flights.map.lock().unwrap();
            match map.get(&key) {
                Some(f) => (f.clone(), false),
                None => {
                    if self.flights.running.load(Ordering::SeqCst) >= MAX_FETCHES {
                        return Err(Status::Jukebox);
                    }
                    let f = Arc::new(Flight::default());
                    map.insert(key, f.clone());
                    (f, true)
                }
            }
        };
        if leader {
            self.flights.running.fetch_add(1, Ordering::SeqCst);
            let (flights, f, fetchers, frame_key) =
                (self.flights.clone(), flight.clone(), self.fetchers.clone(), self.frame_key.clone());
            let req = Request::FetchBlob(FetchBlobRequest {
                kind: source_kind(&url),
                url,
                oid: *oid,
                size,
                first_chunk: chunk,
                chunks,
                replication: self.cluster.replication() as u16,
                nodes: self.cluster.nodes().to_vec(),
            });
            let spawned = std::thread::Builder::new().name("fetch-blob".into()).spawn(move || {
                let r = fetch_blob(&fetchers, &frame_key, &req);
                if let Err(e) = &r {
                    tracing::error!(blob = %monofs_net::oid_hex(&key.0), chunk = key.1, error = %e, "fetch failed");
                }
                *f.result.lock().unwrap() = Some(r);
                f.done.notify_all();
                flights.map.lock().unwrap().remove(&key);
                flights.running.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                self.flights.map.lock().unwrap().remove(&key);
                self.flights.running.fetch_sub(1, Ordering::SeqCst);
                return Err(Status::Jukebox);
            }
        }
        let deadline = Instant::now() + FETCH_WAIT;
        let mut r = flight.result.lock().unwrap();
        while r.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::Jukebox);
            }
            r = flight.done.wait_timeout(r, left).unwrap().0;
        }
        match r.as_ref().unwrap() {
            Ok(()) => Ok(()),
            Err(_) => Err(Status::Io),
        }
    }
}

/// Tries of a FETCH_BLOB that a fetcher answered "busy" (all its slots taken).
pub const BUSY_TRIES: u32 = 3;
/// Pause between those tries.
pub const BUSY_PAUSE: Duration = Duration::from_secs(1);

fn fetch_blob(fetchers: &[String], frame_key: &monofs_net::auth::FrameKey, req: &Request) -> Result<(), String> {
    let Request::FetchBlob(f) = req else {
        unreachable!("fetch_blob takes FETCH_BLOB")
    };
    let mut tries = 0;
    loop {
        let r = with_fetcher(
            fetchers,
            frame_key,
            f.url.as_bytes(),
            FETCH_TIMEOUT,
            req,
            &mut |resp| match resp {
                Response::Ok => Ok(Some(())),
                other => Err(format!("unexpected answer {other:?}")),
            },
        );
        tries += 1;
        match r {
            Err(e) if e.starts_with("busy") && tries < BUSY_TRIES => std::thread::sleep(BUSY_PAUSE),
            r => return r,
        }
    }
}
