//! The TCP server. Per connection a reader thread frames records and a writer thread
//! drains the connection's reply queue; a shared pool of workers decodes, runs and
//! queues replies. No worker ever touches a socket or waits on a client:
//! - a worker queues its reply and moves on; only the connection's writer blocks on the
//!   peer, and closes the connection when the peer takes nothing for REPLY_STALL_TIMEOUT;
//! - a connection with MAX_QUEUED_REPLY_BYTES unsent is not read, and its calls already
//!   read are held (not run) until the queue drains: its own requests wait, nobody else's;
//! - a call the backend defers (content still being fetched) is parked on its ticket and
//!   run again when the ticket completes, or answered JUKEBOX at its deadline.
//!
//! Why two threads per connection rather than epoll: the reader's blocking reads and
//! the writer's blocking writes keep the code std-only and every wait per-connection;
//! with CONN_THREAD_STACK stacks, 2 × max_conns threads cost a few MiB of touched memory.
//! Connections are bounded server-wide (max_conns) and per client address. A full
//! server closes the connection quiet for longest (EVICT_MIN_QUIET at least) to admit a
//! new one, so idle or half-sent connections from many addresses cannot lock others out.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use crossbeam::channel::{bounded, select, unbounded, Receiver, Sender};

use crate::defer::{Deferring, Parked, Parker};
use crate::dispatch::{self, Exported, Services};
use crate::limits::{
    ACCEPT_POLL_INTERVAL, CONN_THREAD_STACK, DEFERRED_CALL_DEADLINE, EVICT_MIN_QUIET, MAX_QUEUED_REPLY_BYTES, READ_POLL_INTERVAL,
    REPLY_STALL_TIMEOUT, WORK_QUEUE_PER_WORKER, WRITE_POLL_INTERVAL,
};
use crate::record::{self, RecordRead};
use crate::stats::ServerStats;
use crate::types::Status;

/// accept(2) errors that say nothing about the listener itself (Linux errno values):
/// out of descriptors or memory for now; back off and keep serving.
const TRANSIENT_ACCEPT_ERRNOS: [i32; 4] = [23 /* ENFILE */, 24 /* EMFILE */, 12 /* ENOMEM */, 105 /* ENOBUFS */];

/// What the whole server shares.
struct Shared {
    svc: Services,
    stats: Arc<ServerStats>,
    shutdown: Arc<AtomicBool>,
    /// Calls to run again: released from a drained queue or woken by their ticket.
    /// Unbounded, but only calls already counted in some connection's in-flight limit
    /// travel here.
    retry: Sender<Job>,
    parker: Parker<(Job, Vec<u8>)>,
    open: Mutex<Open>,
    /// Zero of the connections' `heard_ms` clocks.
    epoch: Instant,
    next_id: AtomicU64,
}

/// Connections holding a slot: counted in total and per client address, and by id (the
/// candidates for eviction).
#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    conns: HashMap<u64, Arc<Conn>>,
}

/// A call that has been waiting on a ticket.
struct Deferral {
    deadline: Instant,
    prior: Result<(), Status>,
}

struct Job {
    conn: Arc<Conn>,
    record: Vec<u8>,
    deferral: Option<Deferral>,
}

#[derive(Default)]
struct ConnState {
    /// Calls read and not yet answered (queued, running, held or parked).
    inflight: usize,
    /// Framed replies waiting for the writer.
    queue: VecDeque<Vec<u8>>,
    /// Bytes in `queue` plus the reply the writer is sending.
    queued_bytes: usize,
    /// Calls not run while the queue is over its budget.
    held: Vec<Job>,
    /// No more reading, running or replying.
    closing: bool,
}

/// One client connection, shared by its reader, its writer and the workers.
struct Conn {
    id: u64,
    peer: SocketAddr,
    /// When a byte last arrived, in ms since `Shared::epoch`.
    heard_ms: AtomicU64,
    /// Its slot was given up (closed, or evicted for a new connection).
    released: AtomicBool,
    stream: TcpStream,
    st: Mutex<ConnState>,
    changed: Condvar,
    sh: Arc<Shared>,
}

/// A poisoned lock only means another thread panicked mid-reply; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    fn wait<'a>(&self, g: MutexGuard<'a, ConnState>) -> MutexGuard<'a, ConnState> {
        self.changed.wait_timeout(g, READ_POLL_INTERVAL).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0)
    }

    fn shutting_down(&self) -> bool {
        self.sh.shutdown.load(Ordering::Relaxed)
    }

    /// Waits until the connection may take one more call (in-flight slot free, reply
    /// queue under budget) and takes the slot; false if the connection is going away.
    fn admit_call(&self, max_inflight: usize) -> bool {
        let stats = &self.sh.stats;
        let mut st = lock(&self.st);
        let mut paused = false;
        let ok = loop {
            if st.closing || self.shutting_down() {
                break false;
            }
            if st.queued_bytes < MAX_QUEUED_REPLY_BYTES && st.inflight < max_inflight {
                break true;
            }
            if st.queued_bytes >= MAX_QUEUED_REPLY_BYTES && !paused {
                paused = true;
                ServerStats::inc(&stats.conns_paused);
                ServerStats::inc(&stats.paused_total);
                tracing::debug!(peer = %self.peer, queued = st.queued_bytes, "reply queue full; connection paused");
            }
            st = self.wait(st);
        };
        if paused {
            ServerStats::dec(&stats.conns_paused);
        }
        if ok {
            st.inflight += 1;
        }
        ok
    }

    /// The job back if it may run now; otherwise it is held for a drained queue, or
    /// dropped with the closing connection.
    fn may_run(&self, job: Job) -> Option<Job> {
        let mut st = lock(&self.st);
        if st.closing {
            st.inflight = st.inflight.saturating_sub(1);
            self.changed.notify_all();
            return None;
        }
        if st.queued_bytes >= MAX_QUEUED_REPLY_BYTES {
            st.held.push(job);
            return None;
        }
        Some(job)
    }

    /// Ends one call: queues its reply for the writer (none: nothing to answer).
    fn finish(&self, reply: Option<&[u8]>) {
        let mut st = lock(&self.st);
        st.inflight = st.inflight.saturating_sub(1);
        if let Some(body) = reply.filter(|_| !st.closing) {
            let framed = record::frame(body);
            st.queued_bytes += framed.len();
            self.sh.stats.reply_bytes_queued.fetch_add(framed.len() as u64, Ordering::Relaxed);
            st.queue.push_back(framed);
        }
        self.changed.notify_all();
    }

    /// The writer sent `len` queued bytes (or dropped them with the connection). Releases
    /// held calls once the queue is under budget again.
    fn sent(&self, len: usize) {
        let held = {
            let mut st = lock(&self.st);
            st.queued_bytes = st.queued_bytes.saturating_sub(len);
            self.sh.stats.reply_bytes_queued.fetch_sub(len as u64, Ordering::Relaxed);
            self.changed.notify_all();
            if st.queued_bytes < MAX_QUEUED_REPLY_BYTES {
                std::mem::take(&mut st.held)
            } else {
                Vec::new()
            }
        };
        for job in held {
            let _ = self.sh.retry.send(job);
        }
    }

    /// Stops the connection: drops queued replies and held calls, wakes everyone and
    /// shuts the socket so a blocked read or write returns.
    fn close(&self) {
        let dropped = {
            let mut st = lock(&self.st);
            st.closing = true;
            let held = std::mem::take(&mut st.held).len();
            st.inflight = st.inflight.saturating_sub(held);
            let queued: usize = st.queue.drain(..).map(|r| r.len()).sum();
            self.changed.notify_all();
            queued
        };
        self.sent(dropped);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Nothing read is unanswered and nothing answered is unsent.
    fn quiet(&self) -> bool {
        let st = lock(&self.st);
        st.inflight == 0 && st.queue.is_empty() && st.queued_bytes == 0
    }

    /// Lets calls already read get their replies out before the socket goes away (the
    /// peer half-closed); the writer's stall timeout bounds the wait.
    fn drain(&self) {
        let mut st = lock(&self.st);
        while (st.inflight > 0 || st.queued_bytes > 0) && !st.closing && !self.shutting_down() {
            st = self.wait(st);
        }
    }
}

pub fn serve_tcp(listener: TcpListener, svc: Services, stats: Arc<ServerStats>, shutdown: Arc<AtomicBool>) -> io::Result<()> {
    let limits = svc.limits;
    let (tx, rx) = bounded::<Job>(limits.workers.saturating_mul(WORK_QUEUE_PER_WORKER));
    let (retry, retry_rx) = unbounded::<Job>();
    let sh = Arc::new(Shared {
        svc,
        stats,
        shutdown: shutdown.clone(),
        retry,
        parker: Parker::new(),
        open: Mutex::default(),
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
    });
    for i in 0..limits.workers {
        let (rx, retry_rx, sh) = (rx.clone(), retry_rx.clone(), sh.clone());
        thread::Builder::new().name(format!("nfs-worker-{i}")).spawn(move || worker(&rx, &retry_rx, &sh))?;
    }
    drop(rx);
    {
        let sh = sh.clone();
        thread::Builder::new().name("nfs-parked".into()).spawn(move || {
            sh.parker.run(&sh.shutdown, |(job, reply): (Job, Vec<u8>)| {
                ServerStats::inc(&sh.stats.deferred_expired_total);
                job.conn.finish(Some(&reply));
            })
        })?;
    }
    listener.set_nonblocking(true)?;
    tracing::info!(addr = ?listener.local_addr().ok(), max_conns = limits.max_conns,
        max_conns_per_client = limits.max_conns_per_client, idle_timeout_s = limits.idle_timeout.as_secs(),
        "NFS server listening");
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => accept(&sh, stream, peer, &tx),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for_connection(&listener),
            Err(e)
                if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
                    || e.raw_os_error().is_some_and(|c| TRANSIENT_ACCEPT_ERRNOS.contains(&c)) =>
            {
                tracing::warn!(error = %e, "accept failed; retrying");
                thread::sleep(ACCEPT_POLL_INTERVAL);
            }
            Err(e) => return Err(e),
        }
    }
    tracing::info!("NFS server shutting down");
    Ok(())
}

/// Sleeps until a connection is waiting or ACCEPT_POLL_INTERVAL passed (to look at the
/// shutdown flag). A plain sleep would let a burst of connects overflow the listen
/// backlog, and each dropped SYN costs its client a one-second retransmit.
fn wait_for_connection(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ACCEPT_POLL_INTERVAL.as_millis() as libc::c_int) };
    if r < 0 {
        thread::sleep(ACCEPT_POLL_INTERVAL);
    }
}

/// Takes a connection slot for `ip`, or says which cap refused it. A full server first
/// evicts the connection quiet for longest, if one has been quiet for EVICT_MIN_QUIET.
fn take_slot(sh: &Shared, ip: IpAddr) -> Result<(), &'static str> {
    let limits = &sh.svc.limits;
    let mut open = lock(&sh.open);
    if open.per_client.get(&ip).copied().unwrap_or(0) >= limits.max_conns_per_client {
        ServerStats::inc(&sh.stats.refused_client_cap_total);
        return Err("per-client connection limit reached");
    }
    if open.total >= limits.max_conns {
        let Some(victim) = quietest(sh, &open) else {
            ServerStats::inc(&sh.stats.refused_conn_cap_total);
            return Err("server connection limit reached");
        };
        release(sh, &mut open, &victim);
        ServerStats::inc(&sh.stats.closed_evicted_total);
        tracing::info!(peer = %victim.peer, "server full: closing the connection quiet for longest");
        // Its threads see the shut socket and exit; its slot is already free.
        let _ = victim.stream.shutdown(Shutdown::Both);
    }
    *open.per_client.entry(ip).or_insert(0) += 1;
    open.total += 1;
    ServerStats::inc(&sh.stats.conns_open);
    Ok(())
}

/// The open connection with nothing in flight or queued that received nothing for the
/// longest time, if that is at least EVICT_MIN_QUIET.
fn quietest(sh: &Shared, open: &Open) -> Option<Arc<Conn>> {
    let now = sh.epoch.elapsed().as_millis() as u64;
    let min_quiet = EVICT_MIN_QUIET.as_millis() as u64;
    open.conns
        .values()
        .filter(|c| now.saturating_sub(c.heard_ms.load(Ordering::Relaxed)) >= min_quiet && c.quiet())
        .min_by_key(|c| c.heard_ms.load(Ordering::Relaxed))
        .cloned()
}

/// Gives up `conn`'s slot, once.
fn release(sh: &Shared, open: &mut Open, conn: &Conn) {
    if conn.released.swap(true, Ordering::SeqCst) {
        return;
    }
    open.conns.remove(&conn.id);
    free_slot(sh, open, conn.peer.ip());
}

fn free_slot(sh: &Shared, open: &mut Open, ip: IpAddr) {
    open.total = open.total.saturating_sub(1);
    if let Some(n) = open.per_client.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            open.per_client.remove(&ip);
        }
    }
    ServerStats::dec(&sh.stats.conns_open);
}

fn accept(sh: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, tx: &Sender<Job>) {
    if let Err(why) = take_slot(sh, peer.ip()) {
        tracing::warn!(%peer, why, "connection refused; closing");
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    ServerStats::inc(&sh.stats.conns_accepted_total);
    if let Err(e) = start_conn(sh, stream, peer, tx.clone()) {
        tracing::warn!(%peer, error = %e, "could not start connection");
    }
}

/// Starts serving a connection whose slot was taken; on failure the slot is given back.
fn start_conn(sh: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, tx: Sender<Job>) -> io::Result<()> {
    // Accepted sockets must block; the timeouts are what wake us for deadlines and shutdown.
    let setup = || -> io::Result<TcpStream> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_POLL_INTERVAL))?;
        stream.set_write_timeout(Some(WRITE_POLL_INTERVAL))?;
        stream.try_clone()
    };
    let clone = setup().inspect_err(|_| free_slot(sh, &mut lock(&sh.open), peer.ip()))?;
    let conn = Arc::new(Conn {
        id: sh.next_id.fetch_add(1, Ordering::Relaxed),
        peer,
        heard_ms: AtomicU64::new(sh.epoch.elapsed().as_millis() as u64),
        released: AtomicBool::new(false),
        stream: clone,
        st: Mutex::default(),
        changed: Condvar::new(),
        sh: sh.clone(),
    });
    lock(&sh.open).conns.insert(conn.id, conn.clone());
    tracing::debug!(%peer, "connection accepted");
    let spawn = |name: &str| thread::Builder::new().name(name.into()).stack_size(CONN_THREAD_STACK);
    let writer = {
        let conn = conn.clone();
        spawn("nfs-conn-write").spawn(move || write_loop(&conn))
    };
    let spawned = writer.and_then(|writer| {
        let conn = conn.clone();
        spawn("nfs-conn-read").spawn(move || {
            if read_loop(&stream, &conn, &tx) {
                conn.drain();
            }
            conn.close();
            let _ = writer.join();
            release(&conn.sh, &mut lock(&conn.sh.open), &conn);
            tracing::debug!(%peer, "connection closed");
        })
    });
    if let Err(e) = spawned {
        // A writer already started exits once the connection is closing.
        conn.close();
        release(sh, &mut lock(&sh.open), &conn);
        return Err(e);
    }
    Ok(())
}

/// Why the reader gave up on a quiet socket.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expired {
    Idle,
    SlowRecord,
    Shutdown,
}

/// Reads with the socket's poll timeout, enforcing the idle timeout between records and
/// the record deadline within one.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    conn: &'a Conn,
    record_started: Option<Instant>,
    last_heard: Instant,
    expired: Option<Expired>,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limits = &self.conn.sh.svc.limits;
        loop {
            match (&*self.stream).read(buf) {
                Ok(n) => {
                    if n > 0 {
                        self.last_heard = Instant::now();
                        self.record_started.get_or_insert(self.last_heard);
                        let sh = &self.conn.sh;
                        self.conn.heard_ms.store(sh.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                    let expired = if self.conn.shutting_down() {
                        Some(Expired::Shutdown)
                    } else if let Some(t) = self.record_started {
                        (t.elapsed() >= limits.record_deadline).then_some(Expired::SlowRecord)
                    } else if self.last_heard.elapsed() >= limits.idle_timeout {
                        // Calls still being answered keep a connection alive.
                        if self.conn.quiet() {
                            Some(Expired::Idle)
                        } else {
                            self.last_heard = Instant::now();
                            None
                        }
                    } else {
                        None
                    };
                    if let Some(x) = expired {
                        self.expired = Some(x);
                        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{x:?}")));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Frames records into jobs until the connection ends; true if the peer closed cleanly
/// between records (its calls still deserve answers).
fn read_loop(stream: &TcpStream, conn: &Arc<Conn>, tx: &Sender<Job>) -> bool {
    let limits = conn.sh.svc.limits;
    let stats = &conn.sh.stats;
    let mut reader = DeadlineReader { stream, conn, record_started: None, last_heard: Instant::now(), expired: None };
    loop {
        reader.record_started = None;
        match record::read_record(&mut reader, limits.max_record) {
            Ok(RecordRead::Record(record)) => {
                if !conn.admit_call(limits.max_inflight_per_conn) {
                    return false;
                }
                if tx.send(Job { conn: conn.clone(), record, deferral: None }).is_err() {
                    conn.finish(None);
                    return false;
                }
            }
            Ok(RecordRead::Eof) => return true,
            Ok(RecordRead::TooLarge) => {
                tracing::warn!(peer = %conn.peer, max = limits.max_record, "RPC record too large; closing");
                return false;
            }
            Err(e) => {
                match reader.expired {
                    Some(Expired::Idle) => {
                        ServerStats::inc(&stats.closed_idle_total);
                        tracing::debug!(peer = %conn.peer, "connection idle; closing");
                    }
                    Some(Expired::SlowRecord) => {
                        ServerStats::inc(&stats.closed_slow_record_total);
                        tracing::warn!(peer = %conn.peer, deadline_s = limits.record_deadline.as_secs(), "RPC record not complete in time; closing");
                    }
                    _ => tracing::debug!(peer = %conn.peer, error = %e, "connection read ended"),
                }
                return false;
            }
        }
    }
}

/// Sends queued replies in order until the connection closes. The only thread that
/// waits on the peer taking bytes.
fn write_loop(conn: &Conn) {
    loop {
        let reply = {
            let mut st = lock(&conn.st);
            loop {
                if let Some(r) = st.queue.pop_front() {
                    break r;
                }
                if st.closing || conn.shutting_down() {
                    return;
                }
                st = conn.wait(st);
            }
        };
        let mut off = 0;
        let mut last_progress = Instant::now();
        while off < reply.len() {
            match (&conn.stream).write(&reply[off..]) {
                Ok(0) => break,
                Ok(n) => {
                    off += n;
                    last_progress = Instant::now();
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                    if last_progress.elapsed() >= REPLY_STALL_TIMEOUT {
                        ServerStats::inc(&conn.sh.stats.closed_stalled_total);
                        tracing::warn!(peer = %conn.peer, "client took no reply bytes in time; closing");
                        break;
                    }
                    if lock(&conn.st).closing || conn.shutting_down() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "reply write failed; closing");
                    break;
                }
            }
        }
        conn.sent(reply.len());
        if off < reply.len() {
            conn.close();
            return;
        }
    }
}

fn worker(rx: &Receiver<Job>, retry_rx: &Receiver<Job>, sh: &Shared) {
    loop {
        // Calls run again go first: they were read earlier.
        let job = match retry_rx.try_recv() {
            Ok(job) => job,
            Err(_) => select! {
                recv(retry_rx) -> j => match j { Ok(j) => j, Err(_) => return },
                recv(rx) -> j => match j { Ok(j) => j, Err(_) => return },
            },
        };
        let conn = job.conn.clone();
        if let Some(job) = conn.may_run(job) {
            run(job, sh);
        }
    }
}

fn run(mut job: Job, sh: &Shared) {
    let Some(exported) = sh.svc.backend.as_ref() else {
        let reply = dispatch::handle(&job.record, &sh.svc, job.conn.peer);
        return job.conn.finish(reply.as_deref());
    };
    let view = Arc::new(Deferring::new(exported.fs.clone(), job.deferral.as_ref().map(|d| d.prior)));
    let backend = Exported { fs: view.clone(), exports: exported.exports.clone() };
    let svc = Services { backend: Some(backend), limits: sh.svc.limits, ports: sh.svc.ports };
    let reply = match catch_unwind(AssertUnwindSafe(|| dispatch::handle(&job.record, &svc, job.conn.peer))) {
        Ok(Some(reply)) => reply,
        Ok(None) => {
            job.conn.finish(None);
            return job.conn.close();
        }
        Err(_) => {
            tracing::warn!(peer = %job.conn.peer, "call handling panicked");
            match dispatch::system_error(&job.record) {
                Some(reply) => reply,
                None => {
                    job.conn.finish(None);
                    return job.conn.close();
                }
            }
        }
    };
    if let Some(ticket) = view.take_ticket() {
        let deadline = match &job.deferral {
            Some(d) => d.deadline,
            None => {
                ServerStats::inc(&sh.stats.calls_deferred_total);
                Instant::now() + DEFERRED_CALL_DEADLINE
            }
        };
        if Instant::now() < deadline {
            job.deferral = Some(Deferral { deadline, prior: Ok(()) });
            let parked = Parked::new((job, reply));
            sh.parker.add(deadline, parked.clone());
            let retry = sh.retry.clone();
            // Runs on the thread completing the ticket: only a channel send.
            ticket.on_complete(move |outcome| {
                if let Some((mut job, _)) = parked.take() {
                    if let Some(d) = job.deferral.as_mut() {
                        d.prior = outcome;
                    }
                    let _ = retry.send(job);
                }
            });
            return;
        }
        ServerStats::inc(&sh.stats.deferred_expired_total);
    }
    job.conn.finish(Some(&reply));
}
