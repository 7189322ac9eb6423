//! The cluster as a client sees it: membership, placement over the effective
//! members, per-node health, and reads and writes that route around failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::health::{HealthState, NodeHealth};
use super::node::{hello, is_timeout, NodeCounters};
use super::{Items, NetError, NodeClient, PROBE_TIMEOUT};
use crate::auth::FrameKey;
use crate::hrw;
use crate::key::ClusterKey;
use crate::keys;
use crate::proto::NodeAddr;
use crate::sync::{lock, read, write};

/// The set of nodes and the replication factor; places keys by HRW. Clones
/// share membership, connections and health.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// As configured; the effective factor is at most the number of nodes.
    replication: usize,
    key: FrameKey,
    members: RwLock<Arc<Members>>,
    /// The unhealthy threshold and when probing began, once nodes are probed.
    probing: Mutex<Option<(Duration, Instant)>>,
}

/// One membership: replaced whole (`set_nodes`, `set_excluded`), so a request
/// works on one consistent snapshot.
struct Members {
    nodes: Vec<NodeAddr>,
    excluded: BTreeSet<String>,
    slots: Vec<Arc<Slot>>,
}

/// One node's client and health. Its locks are held only to read or replace
/// state, never across I/O, so a slow node delays only requests sent to it.
struct Slot {
    node: NodeAddr,
    client: Mutex<Option<Arc<NodeClient>>>,
    health: Mutex<HealthState>,
    counters: Arc<NodeCounters>,
}

impl Slot {
    fn new(node: NodeAddr) -> Arc<Slot> {
        Arc::new(Slot { node, client: Mutex::default(), health: Mutex::default(), counters: Arc::default() })
    }

    /// The cached client, or a new one: connected outside the lock; if two
    /// threads race, the first stored wins and the other's is dropped.
    fn client(&self, key: &FrameKey) -> Result<Arc<NodeClient>, NetError> {
        if let Some(c) = lock(&self.client).clone() {
            return Ok(c);
        }
        let c = NodeClient::connect_with(&self.node.id, &self.node.addr, key, self.counters.clone())?;
        Ok(lock(&self.client).get_or_insert_with(|| Arc::new(c)).clone())
    }
}

impl Members {
    fn new(nodes: Vec<NodeAddr>, excluded: BTreeSet<String>, old: Option<&Members>) -> Members {
        let slots = nodes
            .iter()
            .map(|n| {
                old.and_then(|o| o.slots.iter().find(|s| s.node == *n).cloned())
                    .unwrap_or_else(|| Slot::new(n.clone()))
            })
            .collect();
        Members { nodes, excluded, slots }
    }

    /// Configured minus excluded; all of them if every node is excluded.
    fn effective(&self) -> Vec<usize> {
        let e: Vec<usize> = (0..self.nodes.len()).filter(|&i| !self.excluded.contains(&self.nodes[i].id)).collect();
        if e.is_empty() {
            (0..self.nodes.len()).collect()
        } else {
            e
        }
    }

    fn owners(&self, pkey: &[u8], rf: usize) -> Vec<usize> {
        let eff = self.effective();
        let ids: Vec<&str> = eff.iter().map(|&i| self.nodes[i].id.as_str()).collect();
        hrw::owners(&ids, pkey, rf).into_iter().map(|j| eff[j]).collect()
    }

    /// Every configured node, in HRW order.
    fn ranked(&self, pkey: &[u8]) -> Vec<usize> {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        hrw::owners(&ids, pkey, ids.len())
    }
}

impl Cluster {
    pub fn new(nodes: Vec<NodeAddr>, replication: usize, key: &ClusterKey) -> Cluster {
        assert!(!nodes.is_empty(), "a cluster needs at least one node");
        Cluster {
            inner: Arc::new(Inner {
                replication: replication.max(1),
                key: FrameKey::new(key),
                members: RwLock::new(Arc::new(Members::new(nodes, BTreeSet::new(), None))),
                probing: Mutex::new(None),
            }),
        }
    }

    fn snapshot(&self) -> Arc<Members> {
        read(&self.inner.members).clone()
    }

    /// The configured nodes; indices elsewhere (`owners`, `client`) refer to this list.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        self.snapshot().nodes.clone()
    }

    /// Copies of every record: the configured factor, at most the number of nodes.
    pub fn replication(&self) -> usize {
        self.inner.replication.min(self.snapshot().nodes.len())
    }

    /// Change membership at run time. Nodes kept (same id and address) keep
    /// their connections and health; exclusions of nodes still named stay.
    pub fn set_nodes(&self, nodes: Vec<NodeAddr>) -> Result<(), String> {
        if nodes.is_empty() {
            return Err("a cluster needs at least one node".into());
        }
        let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        if ids.len() != nodes.len() {
            return Err("a node id is named twice".into());
        }
        let mut m = write(&self.inner.members);
        let excluded = m.excluded.iter().filter(|e| ids.contains(e.as_str())).cloned().collect();
        *m = Arc::new(Members::new(nodes, excluded, Some(&m)));
        Ok(())
    }

    /// Fail nodes over: their keys move to the next HRW owners among the rest.
    pub fn set_excluded(&self, ids: BTreeSet<String>) {
        let mut m = write(&self.inner.members);
        *m = Arc::new(Members { nodes: m.nodes.clone(), excluded: ids, slots: m.slots.clone() });
    }

    pub fn excluded(&self) -> BTreeSet<String> {
        self.snapshot().excluded.clone()
    }

    /// Node indices holding `key`, best first: top-rf by HRW over the effective
    /// members (configured minus excluded).
    pub fn owners(&self, key: &[u8]) -> Vec<usize> {
        self.snapshot().owners(keys::placement(key), self.inner.replication)
    }

    /// Where to look for `key`: its effective owners (healthy before unhealthy),
    /// then every other configured node in HRW order, for keys still on old
    /// owners during a repair or a membership change.
    pub fn read_order(&self, key: &[u8]) -> Vec<usize> {
        self.read_order_in(&self.snapshot(), key).0
    }

    /// The read order and how many of its first entries are owners.
    fn read_order_in(&self, m: &Members, key: &[u8]) -> (Vec<usize>, usize) {
        let pkey = keys::placement(key);
        let now = Instant::now();
        let mut order = m.owners(pkey, self.inner.replication);
        order.sort_by_key(|&i| !self.usable(m, i, now));
        let owners = order.len();
        for i in m.ranked(pkey) {
            if !order[..owners].contains(&i) {
                order.push(i);
            }
        }
        (order, owners)
    }

    /// Healthy and not backed off after a failure.
    fn usable(&self, m: &Members, i: usize, now: Instant) -> bool {
        lock(&m.slots[i].health).usable(now, *lock(&self.inner.probing))
    }

    /// The client of node `i` (an index into `nodes()`), connecting if needed.
    pub fn client(&self, i: usize) -> Result<Arc<NodeClient>, NetError> {
        let m = self.snapshot();
        let slot = m.slots.get(i).ok_or_else(|| NetError::Unavailable(format!("no node {i}")))?;
        slot.client(&self.inner.key)
    }

    /// Run `f` on node `i` and record the outcome in its health: a failure backs
    /// the node off and drops its client (so the next call reconnects and
    /// re-learns its shards) unless the node itself answered with an error.
    fn on_node<T>(&self, m: &Members, i: usize, f: impl FnOnce(&NodeClient) -> Result<T, NetError>) -> Result<T, NetError> {
        let slot = &m.slots[i];
        let r = slot.client(&self.inner.key).and_then(|c| f(&c));
        match &r {
            Ok(_) => lock(&slot.health).succeeded(Instant::now()),
            Err(e) => {
                slot.counters.failures.fetch_add(1, Relaxed);
                if is_timeout(e) {
                    slot.counters.timeouts.fetch_add(1, Relaxed);
                }
                lock(&slot.health).failed(Instant::now(), &e.to_string());
                if !matches!(e, NetError::Remote { .. }) {
                    *lock(&slot.client) = None;
                }
                tracing::debug!(node = %slot.node.id, error = %e, "node request failed");
            }
        }
        r
    }

    /// Read `key` along `read_order`: an owner that fails or answers NOT_FOUND
    /// passes the request on to the next node; nodes that are not owners are
    /// asked only while healthy. NOT_FOUND when every node asked that answered
    /// said so; an error only when no node answered.
    pub fn get(&self, key: &[u8], offset: u64, len: u32) -> Result<Option<Vec<u8>>, NetError> {
        let m = self.snapshot();
        let (order, owners) = self.read_order_in(&m, key);
        let now = Instant::now();
        let mut answered = false;
        let mut last_err = None;
        for (pos, i) in order.into_iter().enumerate() {
            if pos >= owners && !self.usable(&m, i, now) {
                continue;
            }
            match self.on_node(&m, i, |c| c.get(key, offset, len)) {
                Ok(Some(d)) => return Ok(Some(d)),
                Ok(None) => answered = true,
                Err(e) => last_err = Some(e),
            }
        }
        match (answered, last_err) {
            (true, _) => Ok(None),
            (false, Some(e)) => Err(e),
            (false, None) => Err(NetError::Unavailable("no node is reachable".into())),
        }
    }

    /// The size of `key` as the first of its effective owners that answers
    /// knows it (usable owners first); an error only when no owner answered.
    pub fn stat(&self, key: &[u8]) -> Result<Option<u64>, NetError> {
        let m = self.snapshot();
        let (order, owners) = self.read_order_in(&m, key);
        let mut last_err = None;
        for &i in &order[..owners] {
            match self.on_node(&m, i, |c| c.stat(key)) {
                Ok(size) => return Ok(size),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| NetError::Unavailable("no node is reachable".into())))
    }

    /// Write each item to its effective owners. An owner that fails is replaced
    /// by the next node in the item's write order (`write_order`), until
    /// min(rf, configured nodes) distinct nodes acknowledged it durably; the
    /// batch fails if any item falls short. Nodes are written in parallel.
    pub fn put_batch(&self, items: Items) -> Result<(), NetError> {
        let m = self.snapshot();
        let need = self.inner.replication.min(m.nodes.len());
        let now = Instant::now();
        // Per item: its write order, how far along it the item went, and its acks.
        let mut state: Vec<(Vec<usize>, usize, usize)> =
            items.iter().map(|(k, _)| (self.write_order(&m, k, now), 0, 0)).collect();
        let mut errors = Vec::new();
        loop {
            let mut per_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (j, (order, next, acked)) in state.iter_mut().enumerate() {
                let take = (need - *acked).min(order.len() - *next);
                for &i in &order[*next..*next + take] {
                    per_node.entry(i).or_default().push(j);
                }
                *next += take;
            }
            if per_node.is_empty() {
                break;
            }
            let send = |i: usize, js: &[usize]| {
                let batch: Items = js.iter().map(|&j| items[j].clone()).collect();
                self.on_node(&m, i, |c| c.put_batch(batch))
            };
            let results: Vec<(Vec<usize>, Result<(), NetError>)> = if per_node.len() == 1 {
                per_node.into_iter().map(|(i, js)| { let r = send(i, &js); (js, r) }).collect()
            } else {
                std::thread::scope(|s| {
                    let running: Vec<_> = per_node
                        .into_iter()
                        .map(|(i, js)| s.spawn(move || { let r = send(i, &js); (js, r) }))
                        .collect();
                    running.into_iter().map(|h| h.join().unwrap_or_else(|_| (Vec::new(), Err(NetError::Unavailable("writer panicked".into()))))).collect()
                })
            };
            for (js, r) in results {
                match r {
                    Ok(()) => js.iter().for_each(|&j| state[j].2 += 1),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        let short = state.iter().filter(|s| s.2 < need).count();
        if short == 0 {
            return Ok(());
        }
        Err(NetError::Unavailable(format!(
            "{short} of {} items reached fewer than {need} nodes: {}",
            items.len(),
            errors.join("; ")
        )))
    }

    /// Where to write `key`: its effective owners that are usable, then the other
    /// usable nodes in HRW order, then the unusable owners and the rest (tried last).
    fn write_order(&self, m: &Members, key: &[u8], now: Instant) -> Vec<usize> {
        let pkey = keys::placement(key);
        let owners = m.owners(pkey, self.inner.replication);
        let mut order: Vec<usize> = owners.clone();
        order.extend(m.ranked(pkey).into_iter().filter(|i| !owners.contains(i)));
        let good = |&i: &usize| self.usable(m, i, now) && !m.excluded.contains(&m.nodes[i].id);
        let (mut first, last): (Vec<usize>, Vec<usize>) = order.into_iter().partition(good);
        first.extend(last);
        first
    }

    /// Judge nodes by probes from now on: a node with no success for
    /// `threshold` is unhealthy (tried after all healthy ones).
    pub fn set_unhealthy_threshold(&self, threshold: Duration) {
        *lock(&self.inner.probing) = Some((threshold, Instant::now()));
    }

    /// HELLO to node `id` on a fresh connection with short timeouts, recorded in
    /// its health. None if the node is unknown or a probe of it is running.
    pub fn probe(&self, id: &str) -> Option<Result<Duration, NetError>> {
        let m = self.snapshot();
        let slot = m.slots.iter().find(|s| s.node.id == id)?.clone();
        {
            let mut h = lock(&slot.health);
            if h.probing {
                return None;
            }
            h.probing = true;
        }
        let t0 = Instant::now();
        let r = hello(&slot.node.addr, &self.inner.key, PROBE_TIMEOUT).and_then(|(got, _)| {
            if got == id {
                Ok(t0.elapsed())
            } else {
                Err(NetError::Remote {
                    addr: slot.node.addr.clone(),
                    message: format!("node at this address is '{got}', expected '{id}'"),
                })
            }
        });
        let mut h = lock(&slot.health);
        h.probing = false;
        match &r {
            Ok(latency) => h.probed(Instant::now(), *latency),
            Err(e) => h.failed(Instant::now(), &e.to_string()),
        }
        Some(r)
    }

    /// Every configured node's health, in `nodes()` order.
    pub fn health(&self) -> Vec<NodeHealth> {
        let m = self.snapshot();
        let now = Instant::now();
        let probing = *lock(&self.inner.probing);
        m.slots
            .iter()
            .map(|s| {
                let h = lock(&s.health);
                let (last_ok_ms_ago, latency_us, consecutive_failures, last_error, backoff_ms) = h.report(now);
                NodeHealth {
                    id: s.node.id.clone(),
                    addr: s.node.addr.clone(),
                    healthy: h.healthy(now, probing),
                    last_ok_ms_ago,
                    latency_us,
                    consecutive_failures,
                    last_error,
                    excluded: m.excluded.contains(&s.node.id),
                    backoff_ms,
                    failures_total: s.counters.failures.load(Relaxed),
                    timeouts_total: s.counters.timeouts.load(Relaxed),
                    retries_total: s.counters.retries.load(Relaxed),
                }
            })
            .collect()
    }
}
