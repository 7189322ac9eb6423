//! The TCP server: an accept loop, one reader thread per connection, a shared pool of
//! worker threads. Readers only frame records; workers decode, run and reply, so a slow
//! backend call never stalls a connection's other calls. Replies may leave out of order
//! (matched by xid) and are written whole under the connection's write lock.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crossbeam::channel::{bounded, Receiver, Sender};

use crate::dispatch::{self, Services};
use crate::limits::{ACCEPT_POLL_INTERVAL, READ_POLL_INTERVAL, REPLY_WRITE_TIMEOUT, WORK_QUEUE_PER_WORKER};
use crate::record::{self, RecordRead};

/// accept(2) errors that say nothing about the listener itself (Linux errno values):
/// out of descriptors or memory for now; back off and keep serving.
const TRANSIENT_ACCEPT_ERRNOS: [i32; 4] = [23 /* ENFILE */, 24 /* EMFILE */, 12 /* ENOMEM */, 105 /* ENOBUFS */];

/// One client connection, shared by its reader and the workers answering it.
struct Conn {
    peer: SocketAddr,
    writer: Mutex<TcpStream>,
    inflight: Mutex<usize>,
    changed: Condvar,
}

impl Conn {
    /// Waits for an in-flight slot; false if shutting down.
    fn acquire(&self, max: usize, shutdown: &AtomicBool) -> bool {
        let mut n = lock(&self.inflight);
        while *n >= max {
            if shutdown.load(Ordering::Relaxed) {
                return false;
            }
            n = self.changed.wait_timeout(n, READ_POLL_INTERVAL).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        *n += 1;
        true
    }

    fn release(&self) {
        let mut n = lock(&self.inflight);
        *n = n.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Lets calls already read get their replies before the socket goes away.
    fn drain(&self, shutdown: &AtomicBool) {
        let mut n = lock(&self.inflight);
        while *n > 0 && !shutdown.load(Ordering::Relaxed) {
            n = self.changed.wait_timeout(n, READ_POLL_INTERVAL).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn send(&self, body: &[u8]) {
        use std::io::Write;
        let framed = record::frame(body);
        let mut w = lock(&self.writer);
        if let Err(e) = w.write_all(&framed) {
            tracing::debug!(peer = %self.peer, error = %e, "reply write failed; closing");
            let _ = w.shutdown(Shutdown::Both);
        }
    }

    fn close(&self) {
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }
}

/// A poisoned lock only means another thread panicked mid-reply; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Job {
    conn: Arc<Conn>,
    record: Vec<u8>,
}

/// Reads from a socket with a read timeout, retrying until data or shutdown.
struct PollingReader<'a> {
    stream: &'a TcpStream,
    shutdown: &'a AtomicBool,
}

impl Read for PollingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&*self.stream).read(buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                    if self.shutdown.load(Ordering::Relaxed) {
                        return Err(io::Error::other("server shutting down"));
                    }
                }
                other => return other,
            }
        }
    }
}

pub fn serve_tcp(listener: TcpListener, svc: Services, shutdown: Arc<AtomicBool>) -> io::Result<()> {
    let limits = svc.limits;
    let svc = Arc::new(svc);
    let (tx, rx) = bounded::<Job>(limits.workers.saturating_mul(WORK_QUEUE_PER_WORKER));
    for i in 0..limits.workers {
        let rx = rx.clone();
        let svc = svc.clone();
        thread::Builder::new().name(format!("nfs-worker-{i}")).spawn(move || worker(rx, &svc))?;
    }
    drop(rx);
    listener.set_nonblocking(true)?;
    let conns = Arc::new(AtomicUsize::new(0));
    tracing::info!(addr = ?listener.local_addr().ok(), "NFS server listening");
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if conns.load(Ordering::Relaxed) >= limits.max_conns {
                    tracing::warn!(%peer, max = limits.max_conns, "connection limit reached; closing");
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                conns.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = start_conn(stream, peer, tx.clone(), limits, shutdown.clone(), conns.clone()) {
                    tracing::warn!(%peer, error = %e, "could not start connection");
                    conns.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL_INTERVAL),
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

fn start_conn(
    stream: TcpStream,
    peer: SocketAddr,
    tx: Sender<Job>,
    limits: crate::Limits,
    shutdown: Arc<AtomicBool>,
    conns: Arc<AtomicUsize>,
) -> io::Result<()> {
    // Accepted sockets must block; the read timeout is what wakes us for shutdown.
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_POLL_INTERVAL))?;
    stream.set_write_timeout(Some(REPLY_WRITE_TIMEOUT))?;
    let conn = Arc::new(Conn {
        peer,
        writer: Mutex::new(stream.try_clone()?),
        inflight: Mutex::new(0),
        changed: Condvar::new(),
    });
    tracing::debug!(%peer, "connection accepted");
    thread::Builder::new().name(format!("nfs-conn-{peer}")).spawn(move || {
        read_loop(&stream, &conn, &tx, limits, &shutdown);
        conn.drain(&shutdown);
        conn.close();
        conns.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(%peer, "connection closed");
    })?;
    Ok(())
}

fn read_loop(stream: &TcpStream, conn: &Arc<Conn>, tx: &Sender<Job>, limits: crate::Limits, shutdown: &AtomicBool) {
    let mut reader = PollingReader { stream, shutdown };
    loop {
        match record::read_record(&mut reader, limits.max_record) {
            Ok(RecordRead::Record(record)) => {
                // Backpressure: stop reading this client until a slot frees up.
                if !conn.acquire(limits.max_inflight_per_conn, shutdown) {
                    return;
                }
                if tx.send(Job { conn: conn.clone(), record }).is_err() {
                    conn.release();
                    return;
                }
            }
            Ok(RecordRead::Eof) => return,
            Ok(RecordRead::TooLarge) => {
                tracing::warn!(peer = %conn.peer, max = limits.max_record, "RPC record too large; closing");
                return;
            }
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "connection read ended");
                return;
            }
        }
    }
}

fn worker(rx: Receiver<Job>, svc: &Services) {
    for job in rx {
        match catch_unwind(AssertUnwindSafe(|| dispatch::handle(&job.record, svc, job.conn.peer))) {
            Ok(Some(reply)) => job.conn.send(&reply),
            Ok(None) => job.conn.close(),
            Err(_) => {
                tracing::warn!(peer = %job.conn.peer, "call handling panicked");
                match dispatch::system_error(&job.record) {
                    Some(reply) => job.conn.send(&reply),
                    None => job.conn.close(),
                }
            }
        }
        job.conn.release();
    }
}
