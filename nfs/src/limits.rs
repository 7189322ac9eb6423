//! Every limit the server enforces, by name. `Limits` holds the ones an operator may tune;
//! the rest are fixed by the RFCs or chosen here so that no input can make us allocate
//! or loop without bound.

use std::time::Duration;

/// RFC 1813 §2.5: an NFSv3 file handle is at most 64 bytes.
pub const NFS3_FHSIZE: usize = 64;
/// Longest file name we accept in a call (NAMETOOLONG beyond); matches PATHCONF name_max.
pub const NFS3_MAXNAMLEN: usize = 255;
/// Longest symlink target we accept in SYMLINK (Linux PATH_MAX).
pub const NFS3_MAXPATHLEN: usize = 4096;
/// RFC 1813 Appendix I: MOUNT dirpath is at most 1024 bytes.
pub const MNTPATHLEN: usize = 1024;
/// RFC 1831 §8.2: an opaque_auth body is at most 400 bytes.
pub const MAX_AUTH_BYTES: usize = 400;
/// RFC 1831 Appendix A: AUTH_UNIX machinename<255>.
pub const AUTH_UNIX_MAX_MACHINENAME: usize = 255;
/// RFC 1831 Appendix A: AUTH_UNIX gids<16>.
pub const AUTH_UNIX_MAX_GIDS: usize = 16;

/// Largest call record we reassemble: a 1 MiB WRITE plus generous header room.
pub const DEFAULT_MAX_RECORD: usize = 1024 * 1024 + 64 * 1024;
/// Calls one connection may have queued or running before its reader stops reading.
pub const DEFAULT_MAX_INFLIGHT_PER_CONN: usize = 64;
/// Connections served at once; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNS: usize = 1024;
/// Largest READ/WRITE/READDIR transfer (FSINFO rtmax, wtmax, dtpref).
pub const DEFAULT_MAX_IO: u32 = 1024 * 1024;
/// Worker threads running procedures (backend calls may block on the network).
pub const DEFAULT_WORKERS: usize = 16;

/// Upper bound on a configured max_io: a reply must fit one record fragment (< 2 GiB)
/// and a worker's buffer; 64 MiB is far above what clients use.
pub const MAX_IO_CEILING: u32 = 64 * 1024 * 1024;
/// FSINFO rtmult/wtmult: the page size clients should align transfers to.
pub const IO_MULTIPLE: u32 = 4096;
/// FSINFO maxfilesize: largest offset a client may address (fits i64 for Linux).
pub const MAX_FILE_SIZE: u64 = u64::MAX >> 1;
/// Entries asked of the backend per readdir page while filling one reply.
pub const READDIR_BACKEND_PAGE: usize = 512;
/// Calls waiting for a worker, per worker, before readers block (backpressure).
pub const WORK_QUEUE_PER_WORKER: usize = 8;

/// How often the accept loop, waiting for connections, looks at the shutdown flag.
pub const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Read timeout on sockets, so blocked readers notice the shutdown flag.
pub const READ_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A connection whose peer has not taken one byte of its queued replies for this long is
/// closed (the peer stopped reading); only that connection's writer ever waits on it.
pub const REPLY_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A full server makes room for a new connection by closing the one that has been quiet
/// (nothing in flight, nothing queued, no byte received) the longest — as knfsd closes
/// its oldest connection when over its limit — but only one quiet at least this long, so
/// a client between two calls of a burst is never cut off.
pub const EVICT_MIN_QUIET: Duration = Duration::from_secs(1);
/// Socket send timeout of a connection's writer: how often it looks at the stall clock.
pub const WRITE_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Unsent reply bytes one connection may have queued: at or above it the connection is not
/// read and its calls not run until the queue drains below (its own requests wait, nobody
/// else's). Workers already running a call of the connection may add one reply each.
pub const MAX_QUEUED_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Default for `Limits::idle_timeout` (knfsd's 6 minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// Default for `Limits::record_deadline`: once its first byte arrived, a record must be
/// complete within this time.
pub const DEFAULT_RECORD_DEADLINE: Duration = Duration::from_secs(30);
/// Default for `Limits::max_conns_per_client`: connections from one IP address at once.
pub const DEFAULT_MAX_CONNS_PER_CLIENT: usize = 64;
/// Stack of a connection's reader and writer threads. They only frame records and copy
/// bytes (no backend calls, no recursion), so 2 × max_conns threads stay cheap.
pub const CONN_THREAD_STACK: usize = 128 * 1024;
/// Longest a call the backend deferred (a READ of content still being fetched) stays
/// parked without a worker; then it is answered with what it got last (NFS3ERR_JUKEBOX).
pub const DEFERRED_CALL_DEADLINE: Duration = Duration::from_secs(20);
/// Smallest descriptor soft limit the server wants: two per connection (socket and the
/// headroom for backend connections) at the default connection cap.
pub const WANTED_NOFILE: u64 = 8192;
/// Largest PORTMAP datagram we read or answer (calls are a few dozen bytes).
pub const UDP_MAX_DATAGRAM: usize = 8800;

/// Shortest idle timeout or record deadline accepted: below the read poll interval the
/// clocks could not be honoured anyway.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Tunable limits of one server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest reassembled RPC record; a larger one closes the connection.
    pub max_record: usize,
    /// Calls in flight per connection; the reader blocks when reached.
    pub max_inflight_per_conn: usize,
    /// Connections served at once.
    pub max_conns: usize,
    /// Largest READ/READDIR transfer, advertised in FSINFO.
    pub max_io: u32,
    /// Worker threads.
    pub workers: usize,
    /// A connection with nothing in flight that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A record must arrive whole within this time of its first byte.
    pub record_deadline: Duration,
    /// Connections from one client IP address at once; more are closed when accepted.
    pub max_conns_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record: DEFAULT_MAX_RECORD,
            max_inflight_per_conn: DEFAULT_MAX_INFLIGHT_PER_CONN,
            max_conns: DEFAULT_MAX_CONNS,
            max_io: DEFAULT_MAX_IO,
            workers: DEFAULT_WORKERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            record_deadline: DEFAULT_RECORD_DEADLINE,
            max_conns_per_client: DEFAULT_MAX_CONNS_PER_CLIENT,
        }
    }
}

impl Limits {
    /// Zero would deadlock (no worker, no permit) or refuse everything: clamp to one.
    pub(crate) fn sanitized(self) -> Limits {
        Limits {
            max_record: self.max_record.max(1),
            max_inflight_per_conn: self.max_inflight_per_conn.max(1),
            max_conns: self.max_conns.max(1),
            max_io: self.max_io.clamp(IO_MULTIPLE, MAX_IO_CEILING),
            workers: self.workers.max(1),
            idle_timeout: self.idle_timeout.max(MIN_TIMEOUT),
            record_deadline: self.record_deadline.max(MIN_TIMEOUT),
            max_conns_per_client: self.max_conns_per_client.max(1),
        }
    }
}
