//! File content on demand: a READ of a blob chunk no node has yet asks a
//! fetcher to bring it (and a few chunks after it), then reads again.
//!
//! Concurrent READs of the same chunks share one fetch, a `Ticket`. READs from
//! NFS clients never wait in a worker: the backend hands the ticket to the NFS
//! server, which parks the call until the fetch is done (or answers
//! NFS3ERR_JUKEBOX at its deadline, telling the client to retry while the fetch
//! goes on). Other callers block on the ticket for at most `FETCH_WAIT`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use monofs_net::proto::{FetchBlobRequest, Request, Response, SourceKind};
use monofs_net::sync::lock;
use monofs_net::{keys, Oid};
use monofs_nfs::{Status, Ticket};

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

/// Fetches in flight, by (blob, first chunk); each is a ticket every READ of those
/// chunks shares, whether it blocks on it or is parked on it by the NFS server.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<(Oid, u32), Ticket>>,
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
    /// Bring chunk `chunk` (and the ones after it) of blob `oid` onto its owners,
    /// blocking up to `FETCH_WAIT`.
    pub(crate) fn bring_chunk(&self, repo: u64, oid: &Oid, size: u64, chunk: u32) -> Result<(), Status> {
        let ticket = self.chunk_ticket(repo, oid, size, chunk)?;
        ticket.wait_timeout(FETCH_WAIT).unwrap_or(Err(Status::Jukebox))
    }

    /// The fetch bringing chunk `chunk` (and the ones after it) of blob `oid`:
    /// the one in flight, or a new one. Completes with `Err(Status::Io)` if the
    /// fetch failed.
    pub(crate) fn chunk_ticket(&self, repo: u64, oid: &Oid, size: u64, chunk: u32) -> Result<Ticket, Status> {
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
        let ticket = {
            let mut map = lock(&self.flights.map);
            if let Some(t) = map.get(&key) {
                return Ok(t.clone());
            }
            if self.flights.running.load(Ordering::SeqCst) >= MAX_FETCHES {
                return Err(Status::Jukebox);
            }
            let t = Ticket::new();
            map.insert(key, t.clone());
            self.flights.running.fetch_add(1, Ordering::SeqCst);
            t
        };
        let (flights, t, fetchers, frame_key) =
            (self.flights.clone(), ticket.clone(), self.fetchers.clone(), self.frame_key.clone());
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
            // A panic must still end the flight, or every reader of these chunks
            // would wait out its deadline and `running` would leak.
            let r = std::panic::catch_unwind(|| fetch_blob(&fetchers, &frame_key, &req))
                .unwrap_or_else(|_| Err("fetch panicked".to_string()));
            if let Err(e) = &r {
                tracing::error!(blob = %monofs_net::oid_hex(&key.0), chunk = key.1, error = %e, "fetch failed");
            }
            // Out of the map first: a READ woken by the ticket that finds the chunk
            // still missing must start a new fetch, not rejoin this one.
            lock(&flights.map).remove(&key);
            flights.running.fetch_sub(1, Ordering::SeqCst);
            t.complete(r.map_err(|_| Status::Io));
        });
        if spawned.is_err() {
            lock(&self.flights.map).remove(&key);
            self.flights.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::Jukebox);
        }
        Ok(ticket)
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
