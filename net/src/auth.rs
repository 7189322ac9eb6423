//! Authenticated connections between routers, nodes and fetchers: a handshake that
//! proves both ends hold the cluster key, then a MAC on every frame.
//!
//! All MACs are BLAKE3 in keyed mode. The frame key `K` is the cluster key's subkey for
//! `key::context::FRAMES`, so nothing learned here helps against another use of the key.
//!
//! Handshake (fixed sizes, so a server never allocates by a length a stranger sent):
//!
//! ```text
//! client -> server  CLIENT_HELLO  MAGIC[8] | cn[32]                      40 bytes
//! server -> client  SERVER_HELLO  MAGIC[8] | sn[32] | server_proof[32]   72 bytes
//! client -> server  CLIENT_PROOF  client_proof[32]                       32 bytes
//!
//! server_proof = BLAKE3_keyed(K, "monofs server proof" | cn | sn)
//! client_proof = BLAKE3_keyed(K, "monofs client proof" | cn | sn)
//! session key  = BLAKE3_keyed(K, "monofs session key"  | cn | sn)
//! ```
//!
//! - `MAGIC` names the protocol and its version; a peer speaking anything else (an old
//!   client sending a bare frame, a port scanner) is refused after 40 bytes.
//! - `cn` and `sn` are fresh random nonces, one chosen by each side, so every connection
//!   has its own session key: a frame or a whole recorded conversation replayed on a
//!   new connection does not verify, whichever side the attacker plays.
//! - The proofs cover both nonces and differ by label, so neither can be reflected back
//!   as the other's proof, and a proof from one connection is worthless on another.
//! - The server proves first; the client sends its proof even when the server's did not
//!   verify, so a key mismatch is reported (and logged) on both ends as such rather
//!   than as a closed connection.
//! - The whole handshake must finish within `HANDSHAKE_TIMEOUT`, so a silent or
//!   trickling socket cannot hold a connection slot.
//!
//! Frames after the handshake:
//!
//! ```text
//! u32 body_len | body | mac[16]
//! mac = BLAKE3_keyed(session, dir[1] | seq[u64 BE] | body_len[4] | body)[..16]
//! ```
//!
//! - `dir` is 0 for client-to-server, 1 for server-to-client: a frame cannot be
//!   reflected back to its sender.
//! - `seq` counts the frames each side sent in that direction, starting at 0. It is
//!   never sent: both sides count, so a dropped, reordered or replayed frame arrives
//!   with a sequence number other than the one its MAC was made for.
//! - The MAC is a trailer so the sender can stream the body (the node sends DATA from
//!   its read buffer with one `sendmsg` of header, data and MAC) and the receiver reads
//!   exactly `body_len + 16` bytes, bounded by MAX_FRAME as before.
//! - 16 bytes (128 bits) of MAC: forging one is as unlikely as guessing a random key of
//!   that size, and one failed verification closes the connection.
//!
//! Frames are authenticated, not encrypted: the cluster network is trusted for
//! confidentiality, not for integrity or for who may connect.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::codec::DecodeError;
use crate::key::{context, ClusterKey, KEY_LEN};
use crate::proto::frame_len;
use crate::MAX_FRAME;

/// Protocol name and version at the start of both hellos.
pub const MAGIC: [u8; 8] = *b"MONOFSA1";
/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a handshake proof.
pub const PROOF_LEN: usize = 32;
/// Bytes of the MAC trailing every frame.
pub const MAC_LEN: usize = 16;
pub const CLIENT_HELLO_LEN: usize = MAGIC.len() + NONCE_LEN;
pub const SERVER_HELLO_LEN: usize = MAGIC.len() + NONCE_LEN + PROOF_LEN;
/// Time the whole handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Authentication failures logged per component within `FAILURE_LOG_WINDOW`; the rest are
/// only counted, and summed up in the first line of the next window.
pub const FAILURE_LOG_BURST: u32 = 10;
pub const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(60);

const SERVER_PROOF_LABEL: &[u8] = b"monofs server proof";
const CLIENT_PROOF_LABEL: &[u8] = b"monofs client proof";
const SESSION_LABEL: &[u8] = b"monofs session key";
const DIR_TO_SERVER: u8 = 0;
const DIR_TO_CLIENT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed: peer does not hold this cluster's key")]
    WrongKey,
    #[error("authentication failed: peer does not speak the MonoFS authenticated protocol")]
    NotMonofs,
    #[error("authentication failed: frame {seq} does not verify (modified, dropped, reordered or replayed)")]
    BadFrame { seq: u64 },
    #[error("authentication failed: handshake did not complete within {}s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    /// Not counted as an authentication failure: nothing was proven either way.
    #[error("peer closed the connection before the handshake")]
    Closed,
    #[error("authentication failed: handshake: {0}")]
    Io(io::Error),
}

impl AuthError {
    fn from_io(e: io::Error) -> AuthError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AuthError::Timeout,
            _ => AuthError::Io(e),
        }
    }
}

/// The cluster key's subkey for frames.
#[derive(Clone)]
pub struct FrameKey([u8; KEY_LEN]);

impl FrameKey {
    pub fn new(key: &ClusterKey) -> FrameKey {
        FrameKey(key.derive(context::FRAMES))
    }
}

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

/// A fresh unpredictable nonce: BLAKE3 keyed by a per-process secret from the kernel,
/// over a counter, so each costs no system call and no two in a process repeat.
fn fresh_nonce() -> [u8; NONCE_LEN] {
    static SEED: OnceLock<[u8; 32]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        let mut s = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut s))
            .expect("reading /dev/urandom for connection nonces");
        s
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    *blake3::keyed_hash(seed, &n.to_be_bytes()).as_bytes()
}

fn labelled(key: &FrameKey, label: &[u8], cn: &[u8; NONCE_LEN], sn: &[u8; NONCE_LEN]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(label).update(cn).update(sn);
    *h.finalize().as_bytes()
}

/// Equality that takes the same time wherever the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's side of the handshake, between its hello and the server's answer.
pub struct ClientHandshake {
    key: FrameKey,
    cn: [u8; NONCE_LEN],
}

/// What the client does with the server's hello: send `proof` (if any), then use `session`.
pub struct ClientFinish {
    /// The client's proof, to be sent even when `session` is an error (see the module doc).
    pub proof: Option<[u8; PROOF_LEN]>,
    pub session: Result<Session, AuthError>,
}

impl ClientHandshake {
    pub fn start(key: &FrameKey) -> (ClientHandshake, [u8; CLIENT_HELLO_LEN]) {
        let cn = fresh_nonce();
        let mut hello = [0u8; CLIENT_HELLO_LEN];
        hello[..MAGIC.len()].copy_from_slice(&MAGIC);
        hello[MAGIC.len()..].copy_from_slice(&cn);
        (ClientHandshake { key: key.clone(), cn }, hello)
    }

    pub fn finish(self, server_hello: &[u8; SERVER_HELLO_LEN]) -> ClientFinish {
        if server_hello[..MAGIC.len()] != MAGIC {
            return ClientFinish { proof: None, session: Err(AuthError::NotMonofs) };
        }
        let sn: [u8; NONCE_LEN] = server_hello[MAGIC.len()..MAGIC.len() + NONCE_LEN].try_into().expect("sized");
        let proof = labelled(&self.key, CLIENT_PROOF_LABEL, &self.cn, &sn);
        let expected = labelled(&self.key, SERVER_PROOF_LABEL, &self.cn, &sn);
        let session = if ct_eq(&expected, &server_hello[MAGIC.len() + NONCE_LEN..]) {
            Ok(Session::new(labelled(&self.key, SESSION_LABEL, &self.cn, &sn), Role::Client))
        } else {
            Err(AuthError::WrongKey)
        };
        ClientFinish { proof: Some(proof), session }
    }
}

/// The server's side of the handshake, between its hello and the client's proof.
pub struct ServerHandshake {
    key: FrameKey,
    cn: [u8; NONCE_LEN],
    sn: [u8; NONCE_LEN],
}

impl ServerHandshake {
    pub fn respond(
        key: &FrameKey,
        client_hello: &[u8; CLIENT_HELLO_LEN],
    ) -> Result<(ServerHandshake, [u8; SERVER_HELLO_LEN]), AuthError> {
        if client_hello[..MAGIC.len()] != MAGIC {
            return Err(AuthError::NotMonofs);
        }
        let cn: [u8; NONCE_LEN] = client_hello[MAGIC.len()..].try_into().expect("sized");
        let sn = fresh_nonce();
        let mut hello = [0u8; SERVER_HELLO_LEN];
        hello[..MAGIC.len()].copy_from_slice(&MAGIC);
        hello[MAGIC.len()..MAGIC.len() + NONCE_LEN].copy_from_slice(&sn);
        hello[MAGIC.len() + NONCE_LEN..].copy_from_slice(&labelled(key, SERVER_PROOF_LABEL, &cn, &sn));
        Ok((ServerHandshake { key: key.clone(), cn, sn }, hello))
    }

    pub fn finish(self, client_proof: &[u8; PROOF_LEN]) -> Result<Session, AuthError> {
        let expected = labelled(&self.key, CLIENT_PROOF_LABEL, &self.cn, &self.sn);
        if !ct_eq(&expected, client_proof) {
            return Err(AuthError::WrongKey);
        }
        Ok(Session::new(labelled(&self.key, SESSION_LABEL, &self.cn, &self.sn), Role::Server))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// One connection's frame authentication: the session key and both sequence counters.
pub struct Session {
    key: [u8; 32],
    role: Role,
    sent: u64,
    received: u64,
}

impl Session {
    fn new(key: [u8; 32], role: Role) -> Session {
        Session { key, role, sent: 0, received: 0 }
    }

    fn mac(&self, dir: u8, seq: u64, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&[dir]).update(&seq.to_be_bytes());
        for p in parts {
            h.update(p);
        }
        h.finalize().as_bytes()[..MAC_LEN].try_into().expect("sized")
    }

    fn dirs(&self) -> (u8, u8) {
        match self.role {
            Role::Client => (DIR_TO_SERVER, DIR_TO_CLIENT),
            Role::Server => (DIR_TO_CLIENT, DIR_TO_SERVER),
        }
    }

    /// The MAC of the next outgoing frame, whose bytes (length header first, then the
    /// body) are the concatenation of `parts`.
    pub fn seal(&mut self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mac = self.mac(self.dirs().0, self.sent, parts);
        self.sent += 1;
        mac
    }

    /// Check the MAC of the next incoming frame (`parts` as for `seal`). After a failure
    /// the connection must be closed: the counters no longer agree.
    pub fn open(&mut self, parts: &[&[u8]], mac: &[u8]) -> Result<(), AuthError> {
        let seq = self.received;
        self.received += 1;
        if ct_eq(&self.mac(self.dirs().1, seq, parts), mac) {
            Ok(())
        } else {
            Err(AuthError::BadFrame { seq })
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad frame header: {0}")]
    Header(DecodeError),
    #[error("{0}")]
    Auth(AuthError),
}

/// A blocking TCP connection after the handshake: frames in, frames out, each MAC'd.
pub struct AuthStream {
    stream: TcpStream,
    session: Session,
}

/// `read_exact` that gives up at `deadline`, however slowly the bytes trickle in.
fn read_exact_by(stream: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs `f` with the socket's timeouts bounded by the handshake's, then restores them.
fn with_handshake_timeouts<T>(
    stream: &mut TcpStream,
    f: impl FnOnce(&mut TcpStream, Instant) -> Result<T, AuthError>,
) -> Result<T, AuthError> {
    let (rt, wt) = (stream.read_timeout().map_err(AuthError::Io)?, stream.write_timeout().map_err(AuthError::Io)?);
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(AuthError::Io)?;
    let r = f(stream, deadline);
    stream.set_read_timeout(rt).map_err(AuthError::Io)?;
    stream.set_write_timeout(wt).map_err(AuthError::Io)?;
    r
}

impl AuthStream {
    /// The client's handshake on a connected socket.
    pub fn connect(mut stream: TcpStream, key: &FrameKey) -> Result<AuthStream, AuthError> {
        let session = with_handshake_timeouts(&mut stream, |s, deadline| {
            let (hs, hello) = ClientHandshake::start(key);
            s.write_all(&hello).map_err(AuthError::from_io)?;
            let mut answer = [0u8; SERVER_HELLO_LEN];
            read_exact_by(s, &mut answer, deadline).map_err(|e| match e.kind() {
                // Closed at accept (say, the server's connection limit): no verdict on keys.
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => AuthError::Closed,
                _ => AuthError::from_io(e),
            })?;
            let fin = hs.finish(&answer);
            if let Some(proof) = fin.proof {
                // A server that refused us may have closed already: its error is not news.
                let sent = s.write_all(&proof);
                if fin.session.is_ok() {
                    sent.map_err(AuthError::from_io)?;
                }
            }
            fin.session
        })?;
        Ok(AuthStream { stream, session })
    }

    /// The server's handshake on an accepted socket. Reads exactly
    /// `CLIENT_HELLO_LEN + PROOF_LEN` bytes before it trusts the peer.
    pub fn accept(mut stream: TcpStream, key: &FrameKey) -> Result<AuthStream, AuthError> {
        let session = with_handshake_timeouts(&mut stream, |s, deadline| {
            let mut hello = [0u8; CLIENT_HELLO_LEN];
            read_exact_by(s, &mut hello, deadline).map_err(|e| match e.kind() {
                // A probe that only checks the port is listening.
                io::ErrorKind::UnexpectedEof => AuthError::Closed,
                _ => AuthError::from_io(e),
            })?;
            let (hs, answer) = ServerHandshake::respond(key, &hello)?;
            s.write_all(&answer).map_err(AuthError::from_io)?;
            let mut proof = [0u8; PROOF_LEN];
            read_exact_by(s, &mut proof, deadline).map_err(AuthError::from_io)?;
            hs.finish(&proof)
        })?;
        Ok(AuthStream { stream, session })
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Send one frame: header, body and MAC in one write.
    pub fn write_frame(&mut self, body: &[u8]) -> io::Result<()> {
        // The peer would refuse it and close; say why here instead.
        crate::codec::check_len("frame body", body.len(), MAX_FRAME)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let hdr = (body.len() as u32).to_be_bytes();
        let mac = self.session.seal(&[&hdr, body]);
        let mut f = Vec::with_capacity(4 + body.len() + MAC_LEN);
        f.extend_from_slice(&hdr);
        f.extend_from_slice(body);
        f.extend_from_slice(&mac);
        self.stream.write_all(&f)
    }

    /// The next frame's verified body; `None` if the peer closed between frames.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut hdr = [0u8; 4];
        match self.stream.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let n = frame_len(hdr).map_err(FrameError::Header)?;
        let mut body = vec![0u8; n + MAC_LEN];
        self.stream.read_exact(&mut body)?;
        let (b, mac) = body.split_at(n);
        self.session.open(&[&hdr, b], mac).map_err(FrameError::Auth)?;
        body.truncate(n);
        Ok(Some(body))
    }
}

/// Counts a component's authentication failures and logs them with the peer's address,
/// at most `FAILURE_LOG_BURST` lines per `FAILURE_LOG_WINDOW` so a flood cannot fill a disk.
#[derive(Debug, Default)]
pub struct FailureLog {
    count: AtomicU64,
    window: Mutex<Option<LogWindow>>,
}

#[derive(Debug)]
struct LogWindow {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl FailureLog {
    pub const fn new() -> FailureLog {
        FailureLog { count: AtomicU64::new(0), window: Mutex::new(None) }
    }

    /// Failures so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Count one failure by `peer` seen by `component` ("node", "fetcher", "client"), and
    /// log it unless this window's lines are spent.
    pub fn record(&self, component: &str, peer: &str, err: &dyn fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let win = match w.as_mut() {
            Some(win) if now.duration_since(win.start) < FAILURE_LOG_WINDOW => win,
            _ => {
                let earlier = w.as_ref().map_or(0, |win| win.suppressed);
                if earlier > 0 {
                    tracing::warn!(component, suppressed = earlier, "{earlier} further authentication failures were not logged");
                }
                w.insert(LogWindow { start: now, logged: 0, suppressed: 0 })
            }
        };
        if win.logged < FAILURE_LOG_BURST {
            win.logged += 1;
            tracing::warn!(component, peer, total = self.count(), "{err}");
        } else {
            win.suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests;
