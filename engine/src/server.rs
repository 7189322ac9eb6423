//! One shard's network side: accept loop, framed connections, request handling.

use std::cell::Cell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::AsRawFd;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::io::ReadResult;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use monofs_net::auth::{
    AuthError, FrameKey, ServerHandshake, Session, CLIENT_HELLO_LEN, HANDSHAKE_TIMEOUT, MAC_LEN, PROOF_LEN,
};
use monofs_net::hrw::shard_of;
use monofs_net::keyset::Matcher;
use monofs_net::proto::{frame_len, op, Request, Response};
use monofs_net::MAX_FRAME;

use crate::damage::hex;
use crate::log::{GetError, PutError, ShardLog};
use crate::metrics::ShardMetrics;

/// Connections one shard serves at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Request body bytes one shard holds in memory at once, over all connections
/// (each request is at most MAX_FRAME).
pub const MAX_INFLIGHT_BYTES: usize = 8 * MAX_FRAME;
/// Time a peer has to deliver a request body once its header arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a request is answered with: a DATA reply is sent straight from the read
/// buffer (frame header and data in one `sendmsg`, no copy).
pub enum Reply {
    Resp(Response),
    Data(ReadResult),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Resp(r)
    }
}

pub struct Shard {
    pub index: u16,
    pub shards: u16,
    pub node_id: String,
    pub log: ShardLog,
    pub metrics: Arc<ShardMetrics>,
    connections: Cell<usize>,
    inflight: Semaphore,
    key: FrameKey,
}

impl Shard {
    pub fn new(
        index: u16,
        shards: u16,
        node_id: String,
        log: ShardLog,
        metrics: Arc<ShardMetrics>,
        key: FrameKey,
    ) -> Shard {
        Shard {
            key,
            index,
            shards,
            node_id,
            log,
            metrics,
            connections: Cell::new(0),
            inflight: Semaphore::new(MAX_INFLIGHT_BYTES as u64),
        }
    }

    fn owner(&self, key: &[u8]) -> Option<u16> {
        let s = shard_of(key, self.shards);
        (s != self.index).then_some(s)
    }

    pub async fn handle(&self, req: Request) -> Reply {
        match req {
            Request::Get { key, offset, len } => {
                if let Some(s) = self.owner(&key) {
                    return Response::WrongShard(s).into();
                }
                // A DATA body is 1 + 4 + data bytes and must fit in a frame.
                let len = len.min((MAX_FRAME - 5) as u32);
                match self.log.get(&key, offset, len).await {
                    Ok(Some(d)) => {
                        self.metrics.get(d.len());
                        Reply::Data(d)
                    }
                    Ok(None) => {
                        self.metrics.get(0);
                        Response::NotFound.into()
                    }
                    Err(GetError::Corrupt(m)) => {
                        self.metrics.checksum_failure();
                        tracing::error!(shard = self.index, key = %hex(&key), "refusing to serve corrupt record: {m}");
                        Response::Error(m).into()
                    }
                    Err(GetError::Io(m)) => {
                        tracing::error!(shard = self.index, key = %hex(&key), "read failed: {m}");
                        Response::Error(m).into()
                    }
                }
            }
            req => self.handle_other(req).await.into(),
        }
    }

    async fn handle_other(&self, req: Request) -> Response {
        match req {
            Request::Hello => Response::HelloOk {
                node_id: self.node_id.clone(),
                shards: self.shards,
                this_shard: self.index,
            },
            Request::PutBatch(items) => {
                if let Some(s) = items.iter().find_map(|(k, _)| self.owner(k)) {
                    return Response::WrongShard(s);
                }
                let n = items.len();
                match self.log.put_batch(items).await {
                    Ok(bytes) => {
                        self.metrics.put(n, bytes);
                        Response::Ok
                    }
                    Err(PutError::NoSpace(why)) => {
                        Response::Error(format!("no space left on device: node {} {why}", self.node_id))
                    }
                    Err(PutError::Refused(e)) => Response::Error(e),
                }
            }
            Request::Get { .. } => unreachable!("GET is handled by handle"),
            Request::Stat { key } => {
                if let Some(s) = self.owner(&key) {
                    return Response::WrongShard(s);
                }
                self.metrics.stat();
                match self.log.stat(&key) {
                    Some(n) => Response::Size(n),
                    None => Response::NotFound,
                }
            }
            Request::Damaged => Response::Data(self.log.damage_json(&self.node_id, self.index).to_string().into_bytes()),
            Request::Digest(f) => match Matcher::new(&f) {
                Ok(m) => Response::Digest(self.log.digest(&m).await),
                Err(e) => Response::Error(e),
            },
            Request::ListKeys(l) => match Matcher::new(&l.filter) {
                Ok(m) => {
                    let (keys, next) = self.log.list(&m, l.bucket, l.after.as_deref(), l.limit as usize).await;
                    Response::Keys { keys, next }
                }
                Err(e) => Response::Error(e),
            },
            Request::Stats => {
                let (keys, bytes) = self.log.held();
                Response::ShardStats { keys, bytes, damaged: self.log.damaged(), log_bytes: self.log.log_bytes() }
            }
            Request::Ingest(_) | Request::FetchBlob(_) | Request::Status => {
                Response::Error("this is a MonoFS storage node; INGEST, FETCH_BLOB and STATUS go to a fetcher".into())
            }
        }
    }
}

/// Accept connections until the listener fails in a way retrying cannot fix.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                let transient = match &e {
                    glommio::GlommioError::IoError(io) => {
                        matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
                            || matches!(
                                io.kind(),
                                ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
                            )
                    }
                    _ => false,
                };
                if transient {
                    tracing::warn!(shard = shard.index, "accept failed: {e}; retrying");
                    glommio::timer::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                return Err(anyhow::anyhow!("shard {}: accept failed: {e}", shard.index));
            }
        };
        if shard.connections.get() >= MAX_CONNECTIONS {
            tracing::warn!(shard = shard.index, "connection limit {MAX_CONNECTIONS} reached; closing new connection");
            drop(stream);
            continue;
        }
        shard.connections.set(shard.connections.get() + 1);
        shard.metrics.conn_opened();
        let s = shard.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
            serve_conn(&s, stream, &peer).await;
            s.connections.set(s.connections.get() - 1);
            s.metrics.conn_closed();
        })
        .detach();
    }
}

/// The server's side of the handshake (see `monofs_net::auth`): fixed-size reads
/// only, all within HANDSHAKE_TIMEOUT.
async fn handshake(stream: &mut TcpStream, key: &FrameKey) -> Result<Session, AuthError> {
    let exchange = async {
        let mut hello = [0u8; CLIENT_HELLO_LEN];
        if let Err(e) = stream.read_exact(&mut hello).await {
            return Ok(Err(match e.kind() {
                ErrorKind::UnexpectedEof => AuthError::Closed,
                _ => AuthError::Io(e),
            }));
        }
        let (hs, answer) = match ServerHandshake::respond(key, &hello) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let mut proof = [0u8; PROOF_LEN];
        let io = async {
            stream.write_all(&answer).await?;
            stream.flush().await?;
            stream.read_exact(&mut proof).await
        };
        Ok(match io.await {
            Ok(()) => hs.finish(&proof),
            Err(e) => Err(AuthError::Io(e)),
        })
    };
    glommio::timer::timeout(HANDSHAKE_TIMEOUT, exchange).await.unwrap_or(Err(AuthError::Timeout))
}

async fn serve_conn(shard: &Shard, mut stream: TcpStream, peer: &str) {
    let _ = stream.set_nodelay(true);
    let mut session = match handshake(&mut stream, &shard.key).await {
        Ok(s) => s,
        Err(AuthError::Closed) => return,
        Err(e) => {
            shard.metrics.auth_failures.record("node", peer, &e);
            return;
        }
    };
    let mut out = Vec::new();
    loop {
        let mut hdr = [0u8; 4];
        match stream.read_exact(&mut hdr).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return,
            Err(e) => {
                tracing::debug!(shard = shard.index, peer, "read failed: {e}");
                return;
            }
        }
        let n = match frame_len(hdr) {
            Ok(n) => n,
            Err(e) => {
                shard.metrics.protocol_error();
                tracing::warn!(shard = shard.index, peer, "bad frame header ({e}); closing connection");
                return;
            }
        };
        // The request's bytes count against the shard's budget until answered.
        let Ok(_permit) = shard.inflight.acquire_permit((n + MAC_LEN) as u64).await else { return };
        let mut body = vec![0u8; n + MAC_LEN];
        let read = glommio::timer::timeout(BODY_TIMEOUT, async {
            stream.read_exact(&mut body).await.map_err(glommio::GlommioError::from)
        })
        .await;
        if let Err(e) = read {
            shard.metrics.protocol_error();
            tracing::warn!(shard = shard.index, peer, "incomplete request body of {n} bytes ({e}); closing connection");
            return;
        }
        let (b, mac) = body.split_at(n);
        if let Err(e) = session.open(&[&hdr, b], mac) {
            shard.metrics.auth_failures.record("node", peer, &e);
            return;
        }
        let req = match Request::decode(b) {
            Ok(r) => r,
            Err(e) => {
                shard.metrics.protocol_error();
                tracing::warn!(shard = shard.index, peer, "undecodable request ({e}); closing connection");
                let resp = Response::Error(format!("malformed request: {e}"));
                let _ = send(&mut stream, &mut session, &mut out, &resp).await;
                return;
            }
        };
        drop(body);
        let sent = match shard.handle(req).await {
            Reply::Resp(resp) => send(&mut stream, &mut session, &mut out, &resp).await,
            Reply::Data(d) => send_data(&mut stream, &mut session, &d).await,
        };
        if let Err(e) = sent {
            tracing::debug!(shard = shard.index, peer, "write failed: {e}");
            return;
        }
    }
}

async fn send(stream: &mut TcpStream, session: &mut Session, out: &mut Vec<u8>, resp: &Response) -> std::io::Result<()> {
    out.clear();
    out.extend_from_slice(&[0u8; 4]);
    resp.encode(out);
    let n = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&n.to_be_bytes());
    let mac = session.seal(&[out]);
    out.extend_from_slice(&mac);
    stream.write_all(out).await?;
    stream.flush().await?;
    // Keep a large response buffer from pinning memory on an idle connection.
    if out.capacity() > 64 << 10 {
        *out = Vec::new();
    }
    Ok(())
}

/// Send a DATA reply: frame header, opcode and length (9 bytes), the data straight
/// from the read buffer, then the frame's MAC. One non-blocking `sendmsg` of the three
/// usually takes all of it; whatever it did not take is written through glommio.
async fn send_data(stream: &mut TcpStream, session: &mut Session, d: &[u8]) -> std::io::Result<()> {
    let mut hdr = [0u8; 9];
    hdr[..4].copy_from_slice(&((1 + 4 + d.len()) as u32).to_be_bytes());
    hdr[4] = op::DATA;
    hdr[5..].copy_from_slice(&(d.len() as u32).to_be_bytes());
    let mac = session.seal(&[&hdr, d]);
    let parts: [&[u8]; 3] = [&hdr, d, &mac];
    let mut iov = parts.map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() });
    // SAFETY: a zeroed msghdr is valid; it points at the three iovecs, which
    // point at `hdr`, `d` and `mac`, all alive for the duration of the call.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    let mut skip = if sent < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::WouldBlock {
            return Err(e);
        }
        0
    } else {
        sent as usize
    };
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        stream.write_all(&p[skip..]).await?;
        skip = 0;
    }
    stream.flush().await
}
