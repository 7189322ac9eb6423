//! Calls parked without a worker. A worker runs every call against a `Deferring` view of
//! the backend, whose READ goes through `Backend::read_or_wait`: when that says "wait",
//! the READ answers NFS3ERR_JUKEBOX to the procedure layer and the ticket is kept. The
//! server then parks the call (with that JUKEBOX reply) instead of sending it; the
//! ticket's completion re-queues the call, and the `Parker`'s timer sends the JUKEBOX
//! reply if the deadline comes first. Procedure code is unaware of any of it.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::backend::{Backend, ReadOutcome};
use crate::limits::READ_POLL_INTERVAL;
use crate::ticket::Ticket;
use crate::types::*;

/// One call's view of the backend: READ may defer; everything else passes through.
pub struct Deferring {
    inner: Arc<dyn Backend>,
    /// Outcome of the ticket this call waited on before, if it is being run again.
    prior: Option<Result<(), Status>>,
    ticket: Mutex<Option<Ticket>>,
}

impl Deferring {
    pub fn new(inner: Arc<dyn Backend>, prior: Option<Result<(), Status>>) -> Deferring {
        Deferring { inner, prior, ticket: Mutex::new(None) }
    }

    /// The ticket the call must wait on, if its READ deferred.
    pub fn take_ticket(&self) -> Option<Ticket> {
        self.ticket.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Backend for Deferring {
    fn read(&self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), Status> {
        // What was waited for failed: that is the READ's answer.
        if let Some(Err(s)) = self.prior {
            return Err(s);
        }
        match self.inner.read_or_wait(fh, offset, count)? {
            ReadOutcome::Ready(data, eof) => Ok((data, eof)),
            ReadOutcome::Wait(t) => {
                *self.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                Err(Status::Jukebox)
            }
        }
    }

    fn read_or_wait(&self, fh: &[u8], offset: u64, count: u32) -> Result<ReadOutcome, Status> {
        self.inner.read_or_wait(fh, offset, count)
    }
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus> {
        self.inner.mount(path)
    }
    fn exports(&self) -> Vec<Vec<u8>> {
        self.inner.exports()
    }
    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status> {
        self.inner.getattr(fh)
    }
    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status> {
        self.inner.lookup(dir, name)
    }
    fn readlink(&self, fh: &[u8]) -> Result<Vec<u8>, Status> {
        self.inner.readlink(fh)
    }
    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status> {
        self.inner.readdir(dir, cookie, max)
    }
    fn cookie_verifier(&self, dir: &[u8]) -> Result<[u8; 8], Status> {
        self.inner.cookie_verifier(dir)
    }
    fn fsstat(&self, fh: &[u8]) -> Result<FsStat, Status> {
        self.inner.fsstat(fh)
    }
    fn access(&self, fh: &[u8], requested: u32) -> Result<(Fattr, u32), Status> {
        self.inner.access(fh, requested)
    }
    fn setattr(&self, args: &SetattrArgs) -> Result<Fattr, Status> {
        self.inner.setattr(args)
    }
    fn write(&self, args: &WriteArgs) -> Result<WriteOk, Status> {
        self.inner.write(args)
    }
    fn create(&self, args: &CreateArgs) -> Result<(Fh, Fattr), Status> {
        self.inner.create(args)
    }
    fn mkdir(&self, args: &MkdirArgs) -> Result<(Fh, Fattr), Status> {
        self.inner.mkdir(args)
    }
    fn symlink(&self, args: &SymlinkArgs) -> Result<(Fh, Fattr), Status> {
        self.inner.symlink(args)
    }
    fn mknod(&self, args: &MknodArgs) -> Result<(Fh, Fattr), Status> {
        self.inner.mknod(args)
    }
    fn remove(&self, args: &DirOpArgs) -> Result<(), Status> {
        self.inner.remove(args)
    }
    fn rmdir(&self, args: &DirOpArgs) -> Result<(), Status> {
        self.inner.rmdir(args)
    }
    fn rename(&self, args: &RenameArgs) -> Result<(), Status> {
        self.inner.rename(args)
    }
    fn link(&self, args: &LinkArgs) -> Result<(), Status> {
        self.inner.link(args)
    }
    fn commit(&self, args: &CommitArgs) -> Result<[u8; 8], Status> {
        self.inner.commit(args)
    }
}

/// A parked call: whoever takes it first (ticket completion or deadline) decides its fate.
pub struct Parked<T> {
    slot: Mutex<Option<T>>,
}

impl<T> Parked<T> {
    pub fn new(item: T) -> Arc<Parked<T>> {
        Arc::new(Parked { slot: Mutex::new(Some(item)) })
    }

    pub fn take(&self) -> Option<T> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct Due<T> {
    at: Instant,
    parked: Arc<Parked<T>>,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Due<T> {
    /// Earliest deadline on top of the (max-)heap.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.at.cmp(&self.at)
    }
}

/// Deadlines of parked calls, served by one timer thread. Entries already taken by their
/// ticket stay until their deadline; there are at most as many as calls in flight.
pub struct Parker<T> {
    heap: Mutex<BinaryHeap<Due<T>>>,
    changed: Condvar,
}

impl<T: Send + 'static> Parker<T> {
    pub fn new() -> Parker<T> {
        Parker { heap: Mutex::new(BinaryHeap::new()), changed: Condvar::new() }
    }

    pub fn add(&self, at: Instant, parked: Arc<Parked<T>>) {
        self.heap.lock().unwrap_or_else(|e| e.into_inner()).push(Due { at, parked });
        self.changed.notify_one();
    }

    /// Runs `expire` on every call still parked at its deadline, until `shutdown`.
    pub fn run(&self, shutdown: &AtomicBool, expire: impl Fn(T)) {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        while !shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = match heap.peek() {
                Some(d) if d.at <= now => {
                    let due = heap.pop().expect("peeked");
                    drop(heap);
                    if let Some(item) = due.parked.take() {
                        expire(item);
                    }
                    heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                Some(d) => (d.at - now).min(READ_POLL_INTERVAL),
                None => READ_POLL_INTERVAL,
            };
            heap = self.changed.wait_timeout(heap, wait).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }
}
