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

/// How often a non-blocking accept loop looks at the shutdown flag.
pub const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Read timeout on sockets, so blocked readers notice the shutdown flag.
pub const READ_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A reply write blocked this long (client not reading) closes the connection, so one
/// stuck client cannot hold workers.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest PORTMAP datagram we read or answer (calls are a few dozen bytes).
pub const UDP_MAX_DATAGRAM: usize = 8800;

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record: DEFAULT_MAX_RECORD,
            max_inflight_per_conn: DEFAULT_MAX_INFLIGHT_PER_CONN,
            max_conns: DEFAULT_MAX_CONNS,
            max_io: DEFAULT_MAX_IO,
            workers: DEFAULT_WORKERS,
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
        }
    }
}
