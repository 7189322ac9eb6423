//! Blocking client for nodes and fetchers: framed request/response over TCP,
//! a bounded pool of idle connections per shard, and cluster-wide placement.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{AuthError, AuthStream, FailureLog, FrameError, FrameKey};
use crate::codec::{check_len, DecodeError, EncodeError};
use crate::hrw;
use crate::key::ClusterKey;
use crate::keys;
use crate::proto::{ListKeysRequest, NodeAddr, Request, Response, MAX_LIST_KEYS};

pub use crate::keyset::{BucketDigest, NodeStats, OwnerFilter, DIGEST_BUCKETS};

/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one response may take (a node answers a batch after fdatasync).
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle connections kept per shard.
pub const MAX_IDLE_PER_SHARD: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("{addr}: request cannot be sent: {source}")]
    Encode { addr: String, source: EncodeError },
    #[error("{addr}: {source}")]
    Auth { addr: String, source: AuthError },
    #[error("{addr}: malformed response: {source}")]
    Decode { addr: String, source: DecodeError },
    #[error("{addr}: {message}")]
    Remote { addr: String, message: String },
    #[error("{addr}: unexpected response {got}")]
    Unexpected { addr: String, got: String },
    #[error("no node could serve the request: {0}")]
    Unavailable(String),
}

/// Key/value pairs of one PUT_BATCH.
pub type Items = Vec<(Vec<u8>, Vec<u8>)>;

/// Authentication failures this process's clients met (servers that do not hold
/// the cluster key, frames that did not verify).
pub static AUTH_FAILURES: FailureLog = FailureLog::new();

/// One authenticated connection; requests strictly alternate with responses.
pub struct Conn {
    addr: String,
    stream: AuthStream,
}

impl Conn {
    /// Connect and authenticate with `key` (see `auth`).
    pub fn connect(addr: &str, key: &ClusterKey) -> Result<Conn, NetError> {
        Conn::connect_with(addr, &FrameKey::new(key))
    }

    pub fn connect_with(addr: &str, key: &FrameKey) -> Result<Conn, NetError> {
        let io = |source| NetError::Io { addr: addr.to_string(), source };
        let sa = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::other("address resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let stream = AuthStream::connect(stream, key).map_err(|source| {
            if !matches!(source, AuthError::Closed) {
                AUTH_FAILURES.record("client", addr, &source);
            }
            NetError::Auth { addr: addr.to_string(), source }
        })?;
        Ok(Conn { addr: addr.to_string(), stream })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Change how long a send or a wait for a response may take.
    pub fn set_io_timeout(&mut self, t: Duration) -> Result<(), NetError> {
        let io = |source| NetError::Io { addr: self.addr.clone(), source };
        self.stream.get_ref().set_read_timeout(Some(t)).map_err(io)?;
        self.stream.get_ref().set_write_timeout(Some(t)).map_err(io)
    }

    pub fn send(&mut self, req: &Request) -> Result<(), NetError> {
        let mut body = Vec::new();
        req.encode(&mut body);
        check_len("frame body", body.len(), crate::MAX_FRAME)
            .map_err(|source| NetError::Encode { addr: self.addr.clone(), source })?;
        self.stream
            .write_frame(&body)
            .map_err(|source| NetError::Io { addr: self.addr.clone(), source })
    }

    pub fn recv(&mut self) -> Result<Response, NetError> {
        let addr = || self.addr.clone();
        let body = match self.stream.read_frame() {
            Ok(Some(b)) => b,
            Ok(None) => {
                let source = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(NetError::Io { addr: addr(), source });
            }
            Err(FrameError::Io(source)) => return Err(NetError::Io { addr: addr(), source }),
            Err(FrameError::Header(source)) => return Err(NetError::Decode { addr: addr(), source }),
            Err(FrameError::Auth(source)) => {
                AUTH_FAILURES.record("client", &self.addr, &source);
                return Err(NetError::Auth { addr: addr(), source });
            }
        };
        match Response::decode(&body) {
            Ok(Response::Error(message)) => Err(NetError::Remote { addr: self.addr.clone(), message }),
            Ok(r) => Ok(r),
            Err(source) => Err(NetError::Decode { addr: self.addr.clone(), source }),
        }
    }

    pub fn call(&mut self, req: &Request) -> Result<Response, NetError> {
        self.send(req)?;
        self.recv()
    }

    fn unexpected(&self, got: &Response) -> NetError {
        NetError::Unexpected { addr: self.addr.clone(), got: format!("{got:?}").chars().take(80).collect() }
    }
}

/// A node: its shards each listen on `port + shard`.
pub struct NodeClient {
    pub id: String,
    key: FrameKey,
    host: String,
    base_port: u16,
    shards: u16,
    idle: Vec<Mutex<Vec<Conn>>>,
}

impl NodeClient {
    pub fn connect(id: &str, addr: &str, key: &ClusterKey) -> Result<NodeClient, NetError> {
        NodeClient::connect_with(id, addr, &FrameKey::new(key))
    }

    fn connect_with(id: &str, addr: &str, key: &FrameKey) -> Result<NodeClient, NetError> {
        let mut c = Conn::connect_with(addr, key)?;
        let (node_id, shards) = match c.call(&Request::Hello)? {
            Response::HelloOk { node_id, shards, .. } => (node_id, shards),
            other => return Err(c.unexpected(&other)),
        };
        if node_id != id {
            return Err(NetError::Remote {
                addr: addr.into(),
                message: format!("node at this address is '{node_id}', expected '{id}'"),
            });
        }
        if shards == 0 {
            return Err(NetError::Remote { addr: addr.into(), message: "node reports 0 shards".into() });
        }
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| NetError::Remote {
            addr: addr.into(),
            message: "address has no port".into(),
        })?;
        let base_port: u16 = port
            .parse()
            .map_err(|_| NetError::Remote { addr: addr.into(), message: "bad port".into() })?;
        Ok(NodeClient {
            id: id.to_string(),
            key: key.clone(),
            host: host.to_string(),
            base_port,
            shards,
            idle: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// Run one request on the shard that owns `key`. A connection that failed is
    /// dropped, never returned to the pool.
    pub fn call_shard(&self, shard: u16, req: &Request) -> Result<Response, NetError> {
        let pooled = crate::sync::lock(&self.idle[shard as usize]).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => Conn::connect_with(&format!("{}:{}", self.host, self.base_port + shard), &self.key)?,
        };
        let resp = conn.call(req);
        if resp.is_ok() {
            let mut idle = crate::sync::lock(&self.idle[shard as usize]);
            if idle.len() < MAX_IDLE_PER_SHARD {
                idle.push(conn);
            }
        }
        resp
    }

    pub fn shard_of(&self, key: &[u8]) -> u16 {
        hrw::shard_of(key, self.shards)
    }

    pub fn get(&self, key: &[u8], offset: u64, len: u32) -> Result<Option<Vec<u8>>, NetError> {
        let req = Request::Get { key: key.to_vec(), offset, len };
        match self.call_shard(self.shard_of(key), &req)? {
            Response::Data(d) => Ok(Some(d)),
            Response::NotFound => Ok(None),
            other => Err(NetError::Unexpected { addr: self.id.clone(), got: format!("{other:?}") }),
        }
    }

    pub fn stat(&self, key: &[u8]) -> Result<Option<u64>, NetError> {
        match self.call_shard(self.shard_of(key), &Request::Stat { key: key.to_vec() })? {
            Response::Size(s) => Ok(Some(s)),
            Response::NotFound => Ok(None),
            other => Err(NetError::Unexpected { addr: self.id.clone(), got: format!("{other:?}") }),
        }
    }

    fn unexpected(&self, got: &Response) -> NetError {
        NetError::Unexpected { addr: self.id.clone(), got: format!("{got:?}").chars().take(80).collect() }
    }

    /// DIGEST_BUCKETS digests of the matching keys, combined over every shard (xor / sum).
    pub fn digest(&self, f: &OwnerFilter) -> Result<Vec<BucketDigest>, NetError> {
        let mut total = vec![BucketDigest::default(); DIGEST_BUCKETS];
        let req = Request::Digest(f.clone());
        for shard in 0..self.shards {
            match self.call_shard(shard, &req)? {
                Response::Digest(d) => total.iter_mut().zip(d).for_each(|(t, b)| t.merge(b)),
                other => return Err(self.unexpected(&other)),
            }
        }
        Ok(total)
    }

    /// Every matching key of `bucket` with its value size, over every shard (paged:
    /// at most MAX_LIST_KEYS keys per reply).
    pub fn list_keys(&self, f: &OwnerFilter, bucket: u16) -> Result<Vec<(Vec<u8>, u64)>, NetError> {
        check_len("digest bucket", bucket as usize, DIGEST_BUCKETS - 1)
            .map_err(|source| NetError::Encode { addr: self.id.clone(), source })?;
        let mut out = Vec::new();
        for shard in 0..self.shards {
            self.list_shard(shard, f, Some(bucket), &mut |k, n| {
                out.push((k.to_vec(), n));
                true
            })?;
        }
        Ok(out)
    }

    /// Every matching key of the node, streamed page by page to `each`; `each`
    /// returns false to stop.
    pub fn scan_keys(&self, f: &OwnerFilter, each: &mut dyn FnMut(&[u8], u64) -> bool) -> Result<(), NetError> {
        for shard in 0..self.shards {
            if !self.list_shard(shard, f, None, each)? {
                break;
            }
        }
        Ok(())
    }

    /// Page through one shard's listing; false if `each` stopped it.
    fn list_shard(
        &self,
        shard: u16,
        f: &OwnerFilter,
        bucket: Option<u16>,
        each: &mut dyn FnMut(&[u8], u64) -> bool,
    ) -> Result<bool, NetError> {
        let mut req = ListKeysRequest { filter: f.clone(), bucket, after: None, limit: MAX_LIST_KEYS as u32 };
        loop {
            let (keys, next) = match self.call_shard(shard, &Request::ListKeys(req.clone()))? {
                Response::Keys { keys, next } => (keys, next),
                other => return Err(self.unexpected(&other)),
            };
            for (k, n) in &keys {
                if !each(k, *n) {
                    return Ok(false);
                }
            }
            match next {
                // A shard that does not move on would page forever.
                Some(n) if req.after.as_ref() == Some(&n) => {
                    return Err(NetError::Remote {
                        addr: self.id.clone(),
                        message: format!("shard {shard} repeated its listing cursor"),
                    })
                }
                Some(n) => req.after = Some(n),
                None => return Ok(true),
            }
        }
    }

    /// Keys, live value bytes, damaged keys, log file bytes; summed over shards.
    pub fn stats(&self) -> Result<NodeStats, NetError> {
        let mut t = NodeStats { shards: self.shards, ..NodeStats::default() };
        for shard in 0..self.shards {
            match self.call_shard(shard, &Request::Stats)? {
                Response::ShardStats { keys, bytes, damaged, log_bytes } => {
                    t.keys += keys;
                    t.bytes += bytes;
                    t.damaged += damaged;
                    t.log_bytes += log_bytes;
                }
                other => return Err(self.unexpected(&other)),
            }
        }
        Ok(t)
    }

    /// Store items durably; items are grouped per shard, one batch per shard.
    pub fn put_batch(&self, items: Items) -> Result<(), NetError> {
        let mut per_shard: HashMap<u16, Items> = HashMap::new();
        for (k, v) in items {
            per_shard.entry(self.shard_of(&k)).or_default().push((k, v));
        }
        for (shard, batch) in per_shard {
            match self.call_shard(shard, &Request::PutBatch(batch))? {
                Response::Ok => {}
                other => {
                    return Err(NetError::Unexpected { addr: self.id.clone(), got: format!("{other:?}") })
                }
            }
        }
        Ok(())
    }
}

/// The set of nodes and the replication factor; places keys by HRW.
#[derive(Clone)]
pub struct Cluster {
    nodes: Vec<NodeAddr>,
    replication: usize,
    key: FrameKey,
    clients: Arc<Vec<Mutex<Option<Arc<NodeClient>>>>>,
}

impl Cluster {
    pub fn new(nodes: Vec<NodeAddr>, replication: usize, key: &ClusterKey) -> Cluster {
        assert!(!nodes.is_empty(), "a cluster needs at least one node");
        let replication = replication.clamp(1, nodes.len());
        let clients = Arc::new(nodes.iter().map(|_| Mutex::new(None)).collect());
        Cluster { nodes, replication, key: FrameKey::new(key), clients }
    }

    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Node indices holding `key`, best first.
    pub fn owners(&self, key: &[u8]) -> Vec<usize> {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        hrw::owners(&ids, keys::placement(key), self.replication)
    }

    pub fn client(&self, i: usize) -> Result<Arc<NodeClient>, NetError> {
        let mut slot = crate::sync::lock(&self.clients[i]);
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(NodeClient::connect_with(&self.nodes[i].id, &self.nodes[i].addr, &self.key)?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Read from the first owner that answers; an owner that is down is skipped,
    /// one that answers NOT_FOUND is asked no further only if it is the last.
    pub fn get(&self, key: &[u8], offset: u64, len: u32) -> Result<Option<Vec<u8>>, NetError> {
        let mut last_err = None;
        for i in self.owners(key) {
            match self.client(i).and_then(|c| c.get(key, offset, len)) {
                Ok(Some(d)) => return Ok(Some(d)),
                Ok(None) => {}
                Err(e) => {
                    self.forget(i);
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Write items to every owner; returns once all owners acknowledged.
    pub fn put_batch(&self, items: Items) -> Result<(), NetError> {
        let mut per_node: HashMap<usize, Items> = HashMap::new();
        for (k, v) in items {
            for i in self.owners(&k) {
                per_node.entry(i).or_default().push((k.clone(), v.clone()));
            }
        }
        for (i, batch) in per_node {
            let r = self.client(i).and_then(|c| c.put_batch(batch));
            if r.is_err() {
                self.forget(i);
            }
            r?;
        }
        Ok(())
    }

    /// Drop a cached client so the next call reconnects (and re-learns shards).
    fn forget(&self, i: usize) {
        *crate::sync::lock(&self.clients[i]) = None;
    }
}

/// Parse `id=host:port,id=host:port`.
pub fn parse_nodes(spec: &str) -> Result<Vec<NodeAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("node '{part}' is not of the form id=host:port"))?;
        if id.is_empty() || !addr.contains(':') {
            return Err(format!("node '{part}' is not of the form id=host:port"));
        }
        if out.iter().any(|n: &NodeAddr| n.id == id) {
            return Err(format!("node id '{id}' named twice"));
        }
        out.push(NodeAddr { id: id.to_string(), addr: addr.to_string() });
    }
    if out.is_empty() {
        return Err("no nodes given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_lists() {
        let n = parse_nodes("a=127.0.0.1:1,b=h:2").unwrap();
        assert_eq!(n[1].addr, "h:2");
        assert!(parse_nodes("a=1").is_err());
        assert!(parse_nodes("a=h:1,a=h:2").is_err());
        assert!(parse_nodes("").is_err());
    }
}
