//! The cluster state as this router reads and writes it (docs/ARCHITECTURE.md,
//! "Cluster state"): every configured node holds a copy; a write is a
//! MERGE_STATE on every node and counts once a majority acknowledged it; a
//! read asks every node and joins what a majority answered. Any two majorities
//! share a node, so a read always meets every acknowledged write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monofs_net::client::{Cluster, NetError};
use monofs_net::proto::{Request, Response};
use monofs_net::state::{ClusterState, Entry, CLOCK};
use monofs_net::sync::lock;
use monofs_net::{keys, MAX_RECORD};
use serde::{Deserialize, Serialize};

/// How often a router writes its `router/<id>` entry.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A router is live while its last heartbeat is at most this many periods old.
pub const LIVE_HEARTBEATS: u64 = 3;

pub const REPO_PREFIX: &str = "repo/";
pub const ROUTER_PREFIX: &str = "router/";
pub const FAILOVER_PREFIX: &str = "failover/";
pub const DRAIN: &str = "drain";
/// The node list, as `id=host:port` strings: written when an operator changes it
/// (SIGHUP of `--nodes @FILE`), adopted by every router.
pub const MEMBERS: &str = "members";

/// `drain`: the cluster is being drained (set by an operator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub reason: String,
    /// Router id that wrote it.
    pub by: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverReason {
    /// An operator asked for it (`monofs admin trigger-failover`).
    Manual,
    /// The repair loop found the node down.
    Down,
}

/// `failover/<node id>`: the node's replicas are to be served and rebuilt elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    pub reason: FailoverReason,
    /// Milliseconds since the Unix epoch.
    pub since: u64,
    pub by: String,
}

/// `router/<id>`: a router's last heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInfo {
    #[serde(default)]
    pub id: String,
    pub http: String,
    pub nfs: String,
    pub version: String,
    pub seen_ms: u64,
}

/// One entry stamped now by `writer`.
pub fn stamped(writer: &str, name: String, value: Option<Vec<u8>>) -> ClusterState {
    let mut s = ClusterState::default();
    s.insert(name, Entry { stamp: CLOCK.now(), writer: writer.to_string(), value });
    s
}

/// What a read found: the joined cluster state, and the legacy namespace
/// record(s) the answering nodes hold.
/// One request to the shard of node `i` owning `key`. A pooled connection may
/// have died with its node's restart: a failure other than a timeout is
/// retried once.
fn call(cluster: &Cluster, i: usize, key: &[u8], req: &Request) -> Result<Response, String> {
    let id = cluster.nodes().get(i).map(|n| n.id.clone()).unwrap_or_default();
    let once = || -> Result<Response, NetError> {
        let c = cluster.client(i)?;
        c.call_shard(c.shard_of(key), req)
    };
    match once() {
        Err(e @ NetError::Io { .. }) if !monofs_net::client::is_timeout(&e) => once(),
        r => r,
    }
    .map_err(|e| format!("node {id}: {e}"))
}

fn get(cluster: &Cluster, i: usize, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let req = Request::Get { key: key.to_vec(), offset: 0, len: MAX_RECORD as u32 };
    match call(cluster, i, key, &req)? {
        Response::Data(d) => Ok(Some(d)),
        Response::NotFound => Ok(None),
        other => Err(format!("node {i}: unexpected answer {other:?}")),
    }
}

fn node_id(cluster: &Cluster, i: usize) -> String {
    cluster.nodes().get(i).map(|n| n.id.clone()).unwrap_or_default()
}

pub struct Snapshot {
    pub state: ClusterState,
    pub legacy: Vec<Vec<u8>>,
}

pub struct Store {
    cluster: Cluster,
    /// The last snapshot read (or written through), and when.
    cache: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    /// The last read that failed, and why: reads within `max_age` of it fail
    /// at once instead of waiting for the same silent nodes again.
    failed: Mutex<Option<(Instant, String)>>,
}

/// Nodes that must answer: more than half of those configured.
pub fn majority(nodes: usize) -> usize {
    nodes / 2 + 1
}

impl Store {
    pub fn new(cluster: Cluster) -> Store {
        Store { cluster, cache: Mutex::new(None), failed: Mutex::new(None) }
    }

    /// Run `call` against every configured node at once and return as soon as
    /// a majority answered (the answers of those), or an error once a majority
    /// can no longer answer (`failed` says what did not happen, `verb` what a
    /// node that answered did). A silent node never holds the answer longer
    /// than the others take: its call finishes on its own thread, bounded by
    /// the node timeouts.
    fn ask_majority<T: Send + 'static>(
        &self,
        failed: &str,
        verb: &str,
        call: impl Fn(&Cluster, usize) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Vec<T>, String> {
        let n = self.cluster.nodes().len();
        let need = majority(n);
        let call = Arc::new(call);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..n {
            let (c, call, answer) = (self.cluster.clone(), call.clone(), tx.clone());
            let spawned = std::thread::Builder::new()
                .name("state-call".into())
                .spawn(move || {
                    let _ = answer.send(call(&c, i));
                });
            if let Err(e) = spawned {
                let _ = tx.send(Err(format!("cannot start a state call: {e}")));
            }
        }
        drop(tx);
        let (mut oks, mut errors) = (Vec::new(), Vec::new());
        while oks.len() < need && errors.len() <= n - need {
            match rx.recv() {
                Ok(Ok(v)) => oks.push(v),
                Ok(Err(e)) => errors.push(e),
                Err(_) => break,
            }
        }
        if oks.len() < need {
            return Err(format!("{failed}: {} of {n} nodes {verb}, {need} needed ({})", oks.len(), errors.join("; ")));
        }
        for e in &errors {
            tracing::warn!(error = %e, "cluster state: a node missed ({failed} otherwise)");
        }
        Ok(oks)
    }

    /// Cache `snap` as the state read now.
    fn keep(&self, snap: Snapshot) -> Arc<Snapshot> {
        CLOCK.observe(snap.state.max_stamp());
        let snap = Arc::new(snap);
        *lock(&self.cache) = Some((Instant::now(), snap.clone()));
        snap
    }

    /// Merge `entries` into every node's state; Ok once a majority stored it,
    /// with the join of their answers (which holds every acknowledged write).
    pub fn write(&self, entries: ClusterState) -> Result<Arc<Snapshot>, String> {
        let raw = entries.encode().map_err(|e| format!("cluster state update refused: {e}"))?;
        let key = keys::cluster_state();
        let req = Request::MergeState(raw);
        let answers = self.ask_majority("cluster state not stored", "acknowledged", move |c, i| {
            match call(c, i, &key, &req)? {
                Response::Data(d) => ClusterState::decode(&d)
                    .map_err(|e| format!("node {}: bad MERGE_STATE answer: {e}", node_id(c, i))),
                other => Err(format!("node {}: unexpected answer {other:?}", node_id(c, i))),
            }
        })?;
        let mut joined = ClusterState::default();
        for s in answers {
            joined.join(s);
        }
        // The answers hold no legacy namespace record: they replace the cache
        // only once a read has found what legacy records there are.
        let legacy = lock(&self.cache).as_ref().map(|(_, s)| s.legacy.clone());
        match legacy {
            Some(legacy) => Ok(self.keep(Snapshot { state: joined, legacy })),
            None => {
                CLOCK.observe(joined.max_stamp());
                Ok(Arc::new(Snapshot { state: joined, legacy: Vec::new() }))
            }
        }
    }

    /// The state as a majority of nodes hold it, at most `max_age` old.
    pub fn read(&self, max_age: Duration) -> Result<Arc<Snapshot>, String> {
        if let Some((at, s)) = lock(&self.cache).as_ref() {
            if at.elapsed() < max_age {
                return Ok(s.clone());
            }
        }
        if let Some((at, e)) = lock(&self.failed).as_ref() {
            if at.elapsed() < max_age {
                return Err(e.clone());
            }
        }
        let (skey, nkey) = (keys::cluster_state(), keys::namespace());
        let answers = self.ask_majority("cluster state unavailable", "answered", move |c, i| {
            let state = match get(c, i, &skey)? {
                None => ClusterState::default(),
                Some(raw) => ClusterState::decode(&raw)
                    .map_err(|e| format!("node {}: stored cluster state is corrupt: {e}", node_id(c, i)))?,
            };
            // The namespace record of before the cluster state: only its owners
            // hold it, so a node without it is no error.
            let legacy = get(c, i, &nkey).unwrap_or(None);
            Ok((state, legacy))
        });
        let answers = match answers {
            Ok(a) => {
                *lock(&self.failed) = None;
                a
            }
            Err(e) => {
                *lock(&self.failed) = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        let mut snap = Snapshot { state: ClusterState::default(), legacy: Vec::new() };
        for (s, legacy) in answers {
            snap.state.join(s);
            if let Some(l) = legacy.filter(|l| !l.is_empty() && !snap.legacy.contains(l)) {
                snap.legacy.push(l);
            }
        }
        Ok(self.keep(snap))
    }

    /// The last snapshot read, however old (for accessors that must answer
    /// even while a majority of nodes is unreachable).
    pub fn last(&self) -> Option<Arc<Snapshot>> {
        lock(&self.cache).as_ref().map(|(_, s)| s.clone())
    }
}

/// The node list of the `members` entry, if one was written.
pub fn members(s: &ClusterState) -> Option<Vec<monofs_net::proto::NodeAddr>> {
    let list: Vec<String> = serde_json::from_slice(s.value(MEMBERS)?).ok()?;
    monofs_net::client::parse_nodes(&list.join(",")).ok()
}

/// The drain entry, if set.
pub fn drain(s: &ClusterState) -> Option<Drain> {
    serde_json::from_slice(s.value(DRAIN)?).ok()
}

/// Nodes marked for failover, by node id.
pub fn failovers(s: &ClusterState) -> BTreeMap<String, Failover> {
    s.live(FAILOVER_PREFIX)
        .filter_map(|(id, _, v)| Some((id.to_string(), serde_json::from_slice(v).ok()?)))
        .collect()
}

/// Routers whose last heartbeat is at most LIVE_HEARTBEATS periods older than `now_ms`.
pub fn live_routers(s: &ClusterState, now_ms: u64) -> Vec<RouterInfo> {
    let window = LIVE_HEARTBEATS * HEARTBEAT.as_millis() as u64;
    s.live(ROUTER_PREFIX)
        .filter_map(|(id, _, v)| {
            let mut r: RouterInfo = serde_json::from_slice(v).ok()?;
            r.id = id.to_string();
            (r.seen_ms + window >= now_ms).then_some(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use monofs_net::state::Hlc;

    fn put(s: &mut ClusterState, name: &str, v: serde_json::Value) {
        s.insert(name.into(), Entry { stamp: Hlc { wall_ms: 1, counter: 0 }, writer: "r".into(), value: Some(v.to_string().into_bytes()) });
    }

    #[test]
    fn reads_drain_failovers_and_live_routers() {
        let mut s = ClusterState::default();
        assert_eq!(drain(&s), None);
        put(&mut s, DRAIN, serde_json::json!({"reason": "upgrade", "by": "r1", "at": 5}));
        assert_eq!(drain(&s), Some(Drain { reason: "upgrade".into(), by: "r1".into(), at: 5 }));
        put(&mut s, "failover/n2", serde_json::json!({"reason": "down", "since": 7, "by": "r1"}));
        put(&mut s, "failover/n3", serde_json::json!({"reason": "manual", "since": 8, "by": "r2"}));
        let f = failovers(&s);
        assert_eq!(f.len(), 2);
        assert_eq!(f["n2"].reason, FailoverReason::Down);
        assert_eq!(f["n3"].reason, FailoverReason::Manual);
        put(&mut s, "router/a", serde_json::json!({"http": "h", "nfs": "n", "version": "v", "seen_ms": 100_000}));
        put(&mut s, "router/b", serde_json::json!({"http": "h", "nfs": "n", "version": "v", "seen_ms": 50_000}));
        let live: Vec<String> = live_routers(&s, 110_000).into_iter().map(|r| r.id).collect();
        assert_eq!(live, ["a"]);
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
    }
}
