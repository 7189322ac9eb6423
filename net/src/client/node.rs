//! One node: a pool of idle connections per shard, and the stale-connection retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::{op_timeout, Conn, Items, NetError, HELLO_TIMEOUT, MAX_IDLE_PER_SHARD};
use super::{BucketDigest, NodeStats, OwnerFilter, DIGEST_BUCKETS};
use crate::auth::FrameKey;
use crate::codec::check_len;
use crate::hrw;
use crate::key::ClusterKey;
use crate::proto::{ListKeysRequest, Request, Response, MAX_LIST_KEYS};

/// What went wrong talking to one node, counted since this process started.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Requests that failed (any error, the timeouts included).
    pub failures: AtomicU64,
    /// Requests that failed because the node did not answer in time.
    pub timeouts: AtomicU64,
    /// Pooled connections found closed (a node restart) and replaced by a fresh one.
    pub retries: AtomicU64,
}

/// A node: its shards each listen on `port + shard`.
pub struct NodeClient {
    pub id: String,
    key: FrameKey,
    host: String,
    base_port: u16,
    shards: u16,
    idle: Vec<Mutex<Vec<Conn>>>,
    counters: Arc<NodeCounters>,
}

impl NodeClient {
    pub fn connect(id: &str, addr: &str, key: &ClusterKey) -> Result<NodeClient, NetError> {
        NodeClient::connect_with(id, addr, &FrameKey::new(key), Arc::default())
    }

    /// Learn the node's shards with HELLO on shard 0, which also proves the node
    /// at `addr` is `id`.
    pub(crate) fn connect_with(
        id: &str,
        addr: &str,
        key: &FrameKey,
        counters: Arc<NodeCounters>,
    ) -> Result<NodeClient, NetError> {
        let (node_id, shards) = hello(addr, key, HELLO_TIMEOUT)?;
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
            counters,
        })
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// Run one request on shard `shard`, within the request's timeout
    /// (`op_timeout`). A pooled connection that fails before any reply byte
    /// (the node restarted since it was opened) is replaced by a fresh one once,
    /// so a restart is not an error; every request here is idempotent. A
    /// connection that failed is dropped, never returned to the pool.
    pub fn call_shard(&self, shard: u16, req: &Request) -> Result<Response, NetError> {
        let timeout = op_timeout(req);
        let pool = self.idle.get(shard as usize).ok_or_else(|| NetError::Remote {
            addr: self.id.clone(),
            message: format!("shard {shard} of {}", self.shards),
        })?;
        let pooled = crate::sync::lock(pool).pop();
        if let Some(mut conn) = pooled {
            match conn.call_within(req, timeout) {
                Ok(r) => {
                    self.put_back(pool, conn);
                    return Ok(r);
                }
                Err(e) if closed_before_reply(&e) => {
                    self.counters.retries.fetch_add(1, Relaxed);
                    // Its pool mates were opened before the same restart.
                    crate::sync::lock(pool).clear();
                }
                Err(e) => return Err(e),
            }
        }
        let addr = format!("{}:{}", self.host, self.base_port + shard);
        let mut conn = Conn::connect_with(&addr, &self.key)?;
        let r = conn.call_within(req, timeout)?;
        self.put_back(pool, conn);
        Ok(r)
    }

    fn put_back(&self, pool: &Mutex<Vec<Conn>>, conn: Conn) {
        let mut idle = crate::sync::lock(pool);
        if idle.len() < MAX_IDLE_PER_SHARD {
            idle.push(conn);
        }
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

/// HELLO on a fresh connection to `addr`: the node's id and shard count.
pub(crate) fn hello(addr: &str, key: &FrameKey, timeout: std::time::Duration) -> Result<(String, u16), NetError> {
    let mut c = Conn::connect_with(addr, key)?;
    match c.call_within(&Request::Hello, timeout)? {
        Response::HelloOk { node_id, shards, .. } => Ok((node_id, shards)),
        other => Err(c.unexpected(&other)),
    }
}

/// The peer closed or reset the connection before sending any byte of the reply,
/// as a node does to the connections it held when it restarted.
fn closed_before_reply(e: &NetError) -> bool {
    use std::io::ErrorKind::*;
    matches!(e, NetError::Io { source, .. }
        if matches!(source.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected))
}

/// The node did not answer within the time allowed (the handshake included).
pub fn is_timeout(e: &NetError) -> bool {
    match e {
        NetError::Io { source, .. } => {
            matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
        NetError::Auth { source, .. } => matches!(source, crate::auth::AuthError::Timeout),
        _ => false,
    }
}
