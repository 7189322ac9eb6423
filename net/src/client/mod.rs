//! Blocking client for nodes and fetchers: framed request/response over TCP
//! (`conn`), a bounded pool of idle connections per shard (`node`), per-node
//! health (`health`) and cluster-wide placement that routes around failed
//! nodes (`cluster`).

mod cluster;
mod conn;
mod health;
mod node;

use std::time::Duration;

pub use cluster::Cluster;
pub use conn::Conn;
pub use health::{NodeHealth, BACKOFF_MAX, BACKOFF_MIN, MAX_ERROR_LEN};
pub use node::{is_timeout, NodeClient, NodeCounters};
pub use crate::keyset::{BucketDigest, NodeStats, OwnerFilter, DIGEST_BUCKETS};

use crate::auth::{AuthError, FailureLog};
use crate::codec::{DecodeError, EncodeError};
use crate::proto::{NodeAddr, Request};

/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one exchange on a plain `Conn` may take (fetcher traffic sets its own).
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// A node's answer to HELLO, GET, STAT and DAMAGED.
pub const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// HELLO when a client first learns a node's shards.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A node's answer to PUT_BATCH, which waits for fdatasync.
pub const PUT_BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A node's answer to DIGEST and LIST_KEYS, which walk a shard's keys.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(30);
/// HELLO of a health probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per shard.
pub const MAX_IDLE_PER_SHARD: usize = 16;

/// How long a node may take to answer `req`.
pub fn op_timeout(req: &Request) -> Duration {
    match req {
        Request::PutBatch(_) => PUT_BATCH_TIMEOUT,
        Request::Digest(_) | Request::ListKeys(_) => SCAN_TIMEOUT,
        _ => GET_TIMEOUT,
    }
}

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
