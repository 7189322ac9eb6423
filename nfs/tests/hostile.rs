//! Clients that misbehave must not hurt other clients: a peer that never reads its
//! replies, one that trickles a record, idle connections, one address opening too many
//! connections, and READs whose content is still on its way (deferred by the backend).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::*;
use common::*;
use monofs_nfs::xdr::{Decoder, Encoder};
use monofs_nfs::*;

const NFS: u32 = 100003;
const GETATTR: u32 = 1;
const READ: u32 = 6;

fn getattr_args(fh: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.opaque(fh);
    e.into_inner()
}

fn read_args(fh: &[u8], count: u32) -> Vec<u8> {
    let mut e = Encoder::new();
    e.opaque(fh);
    e.u64(0);
    e.u32(count);
    e.into_inner()
}

/// nfsstat3 of an accepted NFS reply.
fn nfs_status(reply: &[u8]) -> u32 {
    let (_, stat, rest) = accepted(reply);
    assert_eq!(stat, 0, "call accepted");
    Decoder::new(&rest).u32().unwrap()
}

/// GETATTR of the root on `s` answers OK.
fn getattr_ok(s: &mut TcpStream, xid: u32) {
    s.write_all(&framed(&call_body(xid, NFS, 3, GETATTR, &getattr_args(b"/")))).unwrap();
    assert_eq!(nfs_status(&read_reply(s)), 0);
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection from a chosen loopback address.
fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
        sock.connect(server).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

#[test]
fn stuck_readers_pause_only_themselves_and_resume_when_they_read() {
    let stats = Arc::new(ServerStats::default());
    // Fewer workers than stuck clients: a worker writing to a socket would be lost.
    let server = start_with(Arc::new(MemFs::new()), Limits { workers: 2, ..Limits::default() }, None, stats.clone());
    const PIPELINE: u32 = 64;
    let mut stuck = Vec::new();
    for c in 0..4u32 {
        let mut s = connect(server.addr);
        let mut bytes = Vec::new();
        for i in 0..PIPELINE {
            bytes.extend(framed(&call_body(c * 1000 + i, NFS, 3, READ, &read_args(b"/big.bin", 1 << 20))));
        }
        s.write_all(&bytes).unwrap();
        stuck.push(s);
    }
    // 64 × 300 KiB per connection is far more than socket buffers and the queue budget.
    wait_until("a connection paused for its reply queue", IO_TIMEOUT, || stats.conns_paused.load(Relaxed) > 0);
    let mut victim = connect(server.addr);
    let t = Instant::now();
    for xid in 0..200 {
        getattr_ok(&mut victim, xid);
    }
    eprintln!("200 GETATTR beside 4 stuck readers: {:?}", t.elapsed());
    null_works(server.addr);
    assert!(stats.paused_total.load(Relaxed) >= 1);
    let queued = stats.reply_bytes_queued.load(Relaxed) as usize;
    // Per connection: the budget, plus one reply per worker that was already running.
    assert!(queued <= 4 * (MAX_QUEUED_REPLY_BYTES + 2 * (BIG_LEN + 1024)), "{queued} bytes queued");
    // The stuck clients start reading: every reply arrives, in full.
    for (c, s) in stuck.iter_mut().enumerate() {
        let mut xids: Vec<u32> = (0..PIPELINE)
            .map(|_| {
                let reply = read_reply(s);
                assert_eq!(nfs_status(&reply), 0);
                accepted(&reply).0
            })
            .collect();
        xids.sort();
        assert_eq!(xids, (0..PIPELINE).map(|i| c as u32 * 1000 + i).collect::<Vec<_>>());
    }
    wait_until("the queues to drain", IO_TIMEOUT, || stats.reply_bytes_queued.load(Relaxed) == 0);
    assert_eq!(stats.conns_paused.load(Relaxed), 0);
}

#[test]
fn slow_record_is_closed_at_its_deadline() {
    let stats = Arc::new(ServerStats::default());
    let limits = Limits { record_deadline: Duration::from_secs(1), ..Limits::default() };
    let server = start_with(Arc::new(MemFs::new()), limits, None, stats.clone());
    let mut s = connect(server.addr);
    // Announce a 1 MiB record, send 4 bytes of it.
    s.write_all(&(0x8000_0000u32 | (1 << 20)).to_be_bytes()).unwrap();
    s.write_all(b"abcd").unwrap();
    let t = Instant::now();
    assert_closed(&mut s);
    assert!(t.elapsed() >= Duration::from_millis(900), "closed before the deadline");
    wait_until("the close to be counted", IO_TIMEOUT, || stats.closed_slow_record_total.load(Relaxed) == 1);
    null_works(server.addr);
}

#[test]
fn idle_connection_is_closed_and_busy_one_is_not() {
    let stats = Arc::new(ServerStats::default());
    let limits = Limits { idle_timeout: Duration::from_secs(1), ..Limits::default() };
    let server = start_with(Arc::new(MemFs::new()), limits, None, stats.clone());
    let mut idle = connect(server.addr);
    getattr_ok(&mut idle, 1);
    // A connection that keeps calling, from before the idle one's timeout to well past
    // it, stays open.
    let mut busy = connect(server.addr);
    let caller = std::thread::spawn(move || {
        let t = Instant::now();
        let mut xid = 0;
        while t.elapsed() < Duration::from_secs(3) {
            getattr_ok(&mut busy, xid);
            xid += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let t = Instant::now();
    assert_closed(&mut idle);
    assert!(t.elapsed() >= Duration::from_millis(900), "closed before the idle timeout");
    caller.join().expect("the busy connection was served throughout");
    assert_eq!(stats.closed_idle_total.load(Relaxed), 1);
}

#[test]
fn per_address_cap_refuses_one_address_not_another() {
    let stats = Arc::new(ServerStats::default());
    let server = start_with(Arc::new(MemFs::new()), Limits { max_conns_per_client: 3, ..Limits::default() }, None, stats.clone());
    let mut mine: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", server.addr)).collect();
    for (i, s) in mine.iter_mut().enumerate() {
        getattr_ok(s, i as u32);
    }
    let mut extra = connect_from("127.0.0.1", server.addr);
    assert_closed(&mut extra);
    assert_eq!(stats.refused_client_cap_total.load(Relaxed), 1);
    let mut other = connect_from("127.0.0.2", server.addr);
    getattr_ok(&mut other, 9);
    // A slot frees when one of the first address's connections goes.
    drop(mine.pop());
    wait_until("the slot to free", IO_TIMEOUT, || stats.conns_open.load(Relaxed) == 3);
    getattr_ok(&mut connect_from("127.0.0.1", server.addr), 10);
}

#[test]
fn full_server_evicts_the_connection_quiet_for_longest() {
    let stats = Arc::new(ServerStats::default());
    let limits = Limits { max_conns: 3, ..Limits::default() };
    let server = start_with(Arc::new(MemFs::new()), limits, None, stats.clone());
    let mut oldest = connect_from("127.0.0.1", server.addr);
    getattr_ok(&mut oldest, 1);
    std::thread::sleep(Duration::from_millis(100));
    let mut half_sent = connect_from("127.0.0.1", server.addr);
    half_sent.write_all(&(0x8000_0000u32 | (1 << 20)).to_be_bytes()).unwrap();
    let mut busy = connect_from("127.0.0.1", server.addr);
    // Too soon: nobody has been quiet for EVICT_MIN_QUIET, so the server refuses.
    let mut early = connect_from("127.0.0.2", server.addr);
    assert_closed(&mut early);
    assert_eq!(stats.refused_conn_cap_total.load(Relaxed), 1);

    let t = Instant::now();
    let mut xid = 10;
    while t.elapsed() < EVICT_MIN_QUIET + Duration::from_millis(300) {
        getattr_ok(&mut busy, xid);
        xid += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Full, and two connections quiet long enough: the older one makes room.
    let mut newcomer = connect_from("127.0.0.2", server.addr);
    getattr_ok(&mut newcomer, 100);
    assert_closed(&mut oldest);
    assert_eq!(stats.closed_evicted_total.load(Relaxed), 1);
    getattr_ok(&mut busy, 101);
    // The next newcomer takes the half-sent one's place.
    let mut second = connect_from("127.0.0.3", server.addr);
    getattr_ok(&mut second, 102);
    assert_closed(&mut half_sent);
    assert_eq!(stats.closed_evicted_total.load(Relaxed), 2);
    assert_eq!(stats.conns_open.load(Relaxed), 3);
}

/// MemFs whose READs of /big.bin wait on tickets the test completes.
struct Deferred {
    fs: MemFs,
    tickets: Mutex<Vec<Ticket>>,
}

impl Backend for Deferred {
    fn read_or_wait(&self, fh: &[u8], offset: u64, count: u32) -> Result<ReadOutcome, Status> {
        if fh == b"/big.bin" {
            let mut tickets = self.tickets.lock().unwrap();
            match tickets.last().and_then(|t| t.outcome()) {
                // The last fetch failed or none was asked yet: start one.
                None if tickets.is_empty() => {}
                Some(Err(_)) => {}
                None => return Ok(ReadOutcome::Wait(tickets.last().unwrap().clone())),
                Some(Ok(())) => return self.read(fh, offset, count).map(|(d, e)| ReadOutcome::Ready(d, e)),
            }
            let t = Ticket::new();
            tickets.push(t.clone());
            return Ok(ReadOutcome::Wait(t));
        }
        self.read(fh, offset, count).map(|(d, e)| ReadOutcome::Ready(d, e))
    }
    fn read(&self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), Status> {
        self.fs.read(fh, offset, count)
    }
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus> {
        self.fs.mount(path)
    }
    fn exports(&self) -> Vec<Vec<u8>> {
        self.fs.exports()
    }
    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status> {
        self.fs.getattr(fh)
    }
    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status> {
        self.fs.lookup(dir, name)
    }
    fn readlink(&self, fh: &[u8]) -> Result<Vec<u8>, Status> {
        self.fs.readlink(fh)
    }
    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status> {
        self.fs.readdir(dir, cookie, max)
    }
    fn cookie_verifier(&self, dir: &[u8]) -> Result<[u8; 8], Status> {
        self.fs.cookie_verifier(dir)
    }
    fn fsstat(&self, fh: &[u8]) -> Result<FsStat, Status> {
        self.fs.fsstat(fh)
    }
}

fn send_read(s: &mut TcpStream, xid: u32) {
    s.write_all(&framed(&call_body(xid, NFS, 3, READ, &read_args(b"/big.bin", 4096)))).unwrap();
}

/// The ticket the backend handed out for the n-th fetch.
fn nth_ticket(b: &Deferred, n: usize) -> Ticket {
    wait_until("the READ to be deferred", IO_TIMEOUT, || b.tickets.lock().unwrap().len() > n);
    b.tickets.lock().unwrap()[n].clone()
}

#[test]
fn deferred_read_frees_its_worker_and_answers_when_the_ticket_completes() {
    let stats = Arc::new(ServerStats::default());
    let backend = Arc::new(Deferred { fs: MemFs::new(), tickets: Mutex::default() });
    // One worker: if the deferred READ held it, nothing else could be answered.
    let server = start_with(backend.clone(), Limits { workers: 1, ..Limits::default() }, None, stats.clone());
    let mut reader = connect(server.addr);
    send_read(&mut reader, 1);
    send_read(&mut reader, 2);
    let first = nth_ticket(&backend, 0);
    let mut other = connect(server.addr);
    for xid in 0..20 {
        getattr_ok(&mut other, xid);
    }
    assert_eq!(stats.calls_deferred_total.load(Relaxed), 2);
    // A failed fetch answers the waiting READs with its error.
    first.complete(Err(Status::Io));
    for _ in 0..2 {
        assert_eq!(nfs_status(&read_reply(&mut reader)), 5, "NFS3ERR_IO");
    }
    // A fetch that succeeds: the READ is run again and gets the data.
    send_read(&mut reader, 3);
    let second = nth_ticket(&backend, 1);
    getattr_ok(&mut other, 100);
    second.complete(Ok(()));
    let reply = read_reply(&mut reader);
    assert_eq!(accepted(&reply).0, 3);
    assert_eq!(nfs_status(&reply), 0);
    assert_eq!(stats.deferred_expired_total.load(Relaxed), 0);
}

#[test]
fn deferred_read_gets_jukebox_at_its_deadline() {
    let stats = Arc::new(ServerStats::default());
    let backend = Arc::new(Deferred { fs: MemFs::new(), tickets: Mutex::default() });
    let server = start_with(backend.clone(), Limits { workers: 1, ..Limits::default() }, None, stats.clone());
    let mut reader = connect(server.addr);
    reader.set_read_timeout(Some(DEFERRED_CALL_DEADLINE + IO_TIMEOUT)).unwrap();
    let t = Instant::now();
    send_read(&mut reader, 7);
    let ticket = nth_ticket(&backend, 0);
    let reply = read_reply(&mut reader);
    assert!(t.elapsed() >= DEFERRED_CALL_DEADLINE - Duration::from_millis(100), "answered after {:?}", t.elapsed());
    assert_eq!(nfs_status(&reply), 10008, "NFS3ERR_JUKEBOX");
    assert_eq!(stats.deferred_expired_total.load(Relaxed), 1);
    // The ticket completing later finds nothing parked.
    ticket.complete(Ok(()));
    getattr_ok(&mut reader, 8);
}
