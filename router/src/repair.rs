//! Repair: brings every content key back to its owners after a node died, came
//! back, lost records to damage, or the membership changed.
//!
//! One router runs it, the *repair leader*: the smallest router id among the
//! routers whose heartbeat is live in the cluster state (a rule every router
//! evaluates alike, so no election is needed and at most one leader acts once
//! heartbeats agree; two leaders for a moment only copy the same keys twice —
//! content keys are immutable, so a copy is idempotent). Every router, leader
//! or not, places keys by the failover state it reads from the cluster.
//!
//! A pass, unless the cluster is drained:
//! 1. **Failover**: a node unhealthy for longer than `--rebalance-delay` gets
//!    `failover/<id>` (reason `down`): its keys now belong to the next HRW
//!    owners. A node failed over as `down` that is healthy again loses the
//!    entry and is caught up by step 2. Manual failovers stay until
//!    `clear-failover`.
//! 2. **Anti-entropy**: for every pair of healthy effective members, the
//!    digests of the keys both own are compared bucket by bucket; only buckets
//!    that differ are listed, and only the keys one side lacks are copied.
//! 3. **Handoff**: keys a node holds but does not own (written while an owner
//!    was down, owned before a failover or a membership change) are copied to
//!    the owners that lack them. A node whose non-owned keys were all verified
//!    at the same digest is not listed again.
//!
//! Copies are paced by `--repair-bandwidth` and travel on the repair's own
//! connections; the nodes interleave them with client reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use monofs_net::client::{BucketDigest, NetError, NodeClient, OwnerFilter, DIGEST_BUCKETS};
use monofs_net::sync::lock;
use serde::Serialize;

use crate::state::FailoverReason;
use crate::Router;

/// Bytes of values sent in one PUT_BATCH of a repair (a single larger value
/// goes alone; every value fits a frame, as it was stored through one).
pub const COPY_BATCH_BYTES: usize = 4 << 20;
/// How often the leader looks at node health and the failover state.
pub const TICK: Duration = Duration::from_secs(1);
/// Errors kept in a pass report.
pub const MAX_REPORTED_ERRORS: usize = 20;

#[derive(Clone, Debug)]
pub struct RepairConfig {
    /// How long a node may stay unhealthy before its keys are re-replicated.
    pub rebalance_delay: Duration,
    /// Bytes per second a repair may copy.
    pub bandwidth: u64,
    /// Longest time between two passes when nothing changes.
    pub interval: Duration,
}

impl Default for RepairConfig {
    fn default() -> RepairConfig {
        RepairConfig {
            rebalance_delay: Duration::from_secs(600),
            bandwidth: 64 << 20,
            interval: Duration::from_secs(60),
        }
    }
}

impl RepairConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.bandwidth == 0 {
            return Err("--repair-bandwidth must be more than 0".into());
        }
        if self.interval < TICK {
            return Err(format!("--repair-interval must be at least {}s", TICK.as_secs()));
        }
        Ok(())
    }
}

/// What one pass found and did (documented in docs/operations.md).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    pub trigger: String,
    /// Node pairs whose co-owned keys are compared, and how many are done.
    pub pairs_total: usize,
    pub pairs_done: usize,
    pub buckets_compared: u64,
    pub buckets_differing: u64,
    /// Keys found on fewer owners than the replication factor.
    pub keys_missing: u64,
    pub keys_copied: u64,
    pub bytes_copied: u64,
    /// Keys held by a node that does not own them, checked against their owners.
    pub handoff_keys_checked: u64,
    /// Keys and bytes each node received.
    pub received: BTreeMap<String, Received>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Received {
    pub keys: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairStatus {
    /// "leader" runs failover and repair; "standby" only follows the state.
    pub role: &'static str,
    /// "idle", "running", "drained" (suspended by `monofs admin drain`).
    pub state: &'static str,
    pub passes: u64,
    /// Keys missing on an owner at the end of the last pass (0: every key is
    /// on its replication factor of owners, as far as the healthy nodes show).
    pub under_replicated: u64,
    pub current: Option<PassReport>,
    pub last: Option<PassReport>,
    /// Nodes unhealthy now, with the seconds until they are failed over.
    pub pending_failover: BTreeMap<String, u64>,
    /// Keys and bytes each node received from repairs since this router started.
    pub received_total: BTreeMap<String, Received>,
}

/// A node's handoff digest found complete, and the effective members it was
/// computed under.
type Verified = (Vec<String>, Vec<BucketDigest>);

/// Shared between the repair thread and the HTTP API.
#[derive(Default)]
pub struct Repair {
    status: Mutex<RepairStatus>,
    /// Set by `monofs admin rebalance`: run a pass now, limited to one node
    /// when it names one.
    trigger: Mutex<Option<(String, Option<String>)>>,
    /// Handoff digests verified complete, per node, with the membership they
    /// were computed under.
    verified: Mutex<HashMap<String, Verified>>,
}

impl Repair {
    pub fn status(&self) -> RepairStatus {
        lock(&self.status).clone()
    }

    /// Ask for a pass at once (`rebalance`). With `node`, only the pairs that
    /// node belongs to are compared and only its keys are handed off
    /// (`--storage-id`); its handoff is checked again even if verified before.
    pub fn request(&self, why: String, node: Option<String>) {
        match &node {
            Some(n) => {
                lock(&self.verified).remove(n);
            }
            None => lock(&self.verified).clear(),
        }
        *lock(&self.trigger) = Some((why, node));
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Paces copies to `rate` bytes per second.
struct Throttle {
    rate: u64,
    start: Instant,
    sent: u64,
}

impl Throttle {
    fn new(rate: u64) -> Throttle {
        Throttle { rate: rate.max(1), start: Instant::now(), sent: 0 }
    }

    fn take(&mut self, bytes: u64) {
        self.sent += bytes;
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Run until `shutdown`.
pub fn run(router: Arc<Router>, cfg: RepairConfig, shutdown: Arc<AtomicBool>) {
    let mut down_since: HashMap<String, Instant> = HashMap::new();
    let mut last_pass = Instant::now() - cfg.interval;
    let mut last_topology: Option<Topology> = None;
    while !shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
        let health = router.cluster.health();
        for h in &health {
            if h.healthy {
                down_since.remove(&h.id);
            } else {
                down_since.entry(h.id.clone()).or_insert_with(Instant::now);
            }
        }
        // Every router places keys by the cluster's node list and failover state.
        router.follow_members();
        let failovers = router.failovers();
        let excluded: BTreeSet<String> = failovers.keys().cloned().collect();
        if excluded != router.cluster.excluded() {
            tracing::info!(excluded = ?excluded, "failover state changed: placing keys without these nodes");
            router.cluster.set_excluded(excluded.clone());
        }
        let leader = router.is_repair_leader();
        let drained = router.drained().is_some();
        {
            let mut st = lock(&router.repair.status);
            st.role = if leader { "leader" } else { "standby" };
            st.state = if drained { "drained" } else { "idle" };
            st.pending_failover = down_since
                .iter()
                .filter(|(id, _)| !excluded.contains(*id))
                .map(|(id, t)| (id.clone(), cfg.rebalance_delay.saturating_sub(t.elapsed()).as_secs()))
                .collect();
        }
        if !leader || drained {
            continue;
        }
        // Step 1: failover.
        let mut changed = false;
        for (id, since) in &down_since {
            if !failovers.contains_key(id) && since.elapsed() >= cfg.rebalance_delay {
                tracing::warn!(node = %id, down_secs = since.elapsed().as_secs(), "node down past the rebalance delay: failing it over");
                match router.set_failover(id, FailoverReason::Down) {
                    Ok(_) => changed = true,
                    Err(e) => tracing::warn!(node = %id, error = %e, "cannot record failover"),
                }
            }
        }
        for (id, f) in &failovers {
            if f.reason == FailoverReason::Down && !down_since.contains_key(id) && health.iter().any(|h| &h.id == id) {
                tracing::info!(node = %id, "failed-over node is healthy again: catching it up");
                match router.clear_failover(id) {
                    Ok(()) => changed = true,
                    Err(e) => tracing::warn!(node = %id, error = %e, "cannot clear failover"),
                }
            }
        }
        if changed {
            continue; // placement changes on the next tick, once the state is re-read
        }
        let topology = Topology::now(&router);
        let trigger = lock(&router.repair.trigger).take();
        let only = trigger.as_ref().and_then(|(_, n)| n.clone());
        let why = match (&trigger, &last_topology) {
            (Some((t, _)), _) => t.clone(),
            (None, Some(t)) if *t != topology => "membership or health changed".to_string(),
            (None, None) => "router started".to_string(),
            _ if last_pass.elapsed() >= cfg.interval => "periodic".to_string(),
            _ => continue,
        };
        last_pass = Instant::now();
        let complete = pass(&router, &cfg, &topology, why, only.as_deref(), &shutdown);
        // A pass cut short (a node failed mid-way) runs again on the next tick.
        if only.is_none() || !complete {
            last_topology = complete.then_some(topology);
        }
    }
}

/// What a pass depends on: a change of it starts a pass at once.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Topology {
    members: Vec<String>,
    excluded: BTreeSet<String>,
    healthy: BTreeSet<String>,
}

impl Topology {
    fn now(router: &Router) -> Topology {
        Topology {
            members: router.cluster.nodes().into_iter().map(|n| n.id).collect(),
            excluded: router.cluster.excluded(),
            healthy: router.cluster.health().into_iter().filter(|h| h.healthy).map(|h| h.id).collect(),
        }
    }

    fn effective(&self) -> Vec<String> {
        self.members.iter().filter(|m| !self.excluded.contains(*m)).cloned().collect()
    }
}

struct Pass<'a> {
    router: &'a Router,
    clients: BTreeMap<String, Arc<NodeClient>>,
    rf: u16,
    effective: Vec<String>,
    throttle: Throttle,
    report: PassReport,
    shutdown: &'a AtomicBool,
}

/// One pass; false when it could not finish.
fn pass(
    router: &Router,
    cfg: &RepairConfig,
    t: &Topology,
    trigger: String,
    only: Option<&str>,
    shutdown: &AtomicBool,
) -> bool {
    let mut clients = BTreeMap::new();
    let nodes = router.cluster.nodes();
    for (i, n) in nodes.iter().enumerate() {
        if t.healthy.contains(&n.id) {
            if let Ok(c) = router.cluster.client(i) {
                clients.insert(n.id.clone(), c);
            }
        }
    }
    let effective = t.effective();
    let live: Vec<String> = effective.iter().filter(|id| clients.contains_key(*id)).cloned().collect();
    let pairs: Vec<(String, String)> = live
        .iter()
        .enumerate()
        .flat_map(|(i, a)| live[i + 1..].iter().map(move |b| (a.clone(), b.clone())))
        .filter(|(a, b)| only.is_none_or(|n| n == a || n == b))
        .collect();
    let mut p = Pass {
        router,
        clients,
        rf: router.cluster.replication() as u16,
        effective,
        throttle: Throttle::new(cfg.bandwidth),
        report: PassReport {
            started_unix_ms: unix_ms(),
            trigger,
            pairs_total: pairs.len(),
            ..Default::default()
        },
        shutdown,
    };
    tracing::info!(trigger = %p.report.trigger, pairs = pairs.len(), "repair pass started");
    p.publish(true);
    let ok = p.run(&pairs, only);
    p.report.finished_unix_ms = Some(unix_ms());
    let r = &p.report;
    tracing::info!(
        complete = ok,
        keys_missing = r.keys_missing,
        keys_copied = r.keys_copied,
        bytes_copied = r.bytes_copied,
        buckets_differing = r.buckets_differing,
        errors = r.errors.len(),
        "repair pass finished"
    );
    let mut st = lock(&router.repair.status);
    for (id, r) in &r.received {
        let t = st.received_total.entry(id.clone()).or_default();
        t.keys += r.keys;
        t.bytes += r.bytes;
    }
    st.passes += 1;
    // Only a whole pass tells how many keys are still missing.
    if ok {
        st.under_replicated = r.keys_missing.saturating_sub(r.keys_copied);
    }
    st.last = Some(r.clone());
    st.current = None;
    st.state = "idle";
    ok
}

impl Pass<'_> {
    /// Compare `pairs`, then hand off what the nodes (or `only`) hold without
    /// owning; false when something failed or the pass was stopped.
    fn run(&mut self, pairs: &[(String, String)], only: Option<&str>) -> bool {
        let mut ok = true;
        for (a, b) in pairs {
            if let Err(e) = self.pair(a, b) {
                self.error(format!("{a} ⇄ {b}: {e}"));
                ok = false;
            }
            self.report.pairs_done += 1;
            self.publish(true);
            if self.stopped() {
                return false;
            }
        }
        let holders: Vec<String> = self.clients.keys().filter(|n| only.is_none_or(|o| o == n.as_str())).cloned().collect();
        for n in &holders {
            if let Err(e) = self.handoff(n) {
                self.error(format!("handoff from {n}: {e}"));
                ok = false;
            }
            if self.stopped() {
                return false;
            }
        }
        ok
    }

    fn stopped(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst) || self.router.drained().is_some()
    }

    fn error(&mut self, e: String) {
        tracing::warn!(error = %e, "repair");
        if self.report.errors.len() < MAX_REPORTED_ERRORS {
            self.report.errors.push(e);
        }
    }

    fn publish(&self, running: bool) {
        let mut st = lock(&self.router.repair.status);
        st.current = running.then(|| self.report.clone());
        st.state = if running { "running" } else { "idle" };
    }

    fn filter(&self, include: &[&str], exclude: &[&str]) -> OwnerFilter {
        OwnerFilter {
            members: self.effective.clone(),
            rf: self.rf,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Anti-entropy between two owners: copy what one holds and the other lacks.
    fn pair(&mut self, a: &str, b: &str) -> Result<(), NetError> {
        let f = self.filter(&[a, b], &[]);
        let (ca, cb) = (self.clients[a].clone(), self.clients[b].clone());
        let (da, db) = (ca.digest(&f)?, cb.digest(&f)?);
        self.report.buckets_compared += DIGEST_BUCKETS as u64;
        for bucket in 0..DIGEST_BUCKETS {
            if da[bucket] == db[bucket] {
                continue;
            }
            self.report.buckets_differing += 1;
            let ka = ca.list_keys(&f, bucket as u16)?;
            let kb = cb.list_keys(&f, bucket as u16)?;
            let in_a: HashSet<&[u8]> = ka.iter().map(|(k, _)| k.as_slice()).collect();
            let in_b: HashSet<&[u8]> = kb.iter().map(|(k, _)| k.as_slice()).collect();
            let to_b: Vec<(Vec<u8>, u64)> = ka.iter().filter(|(k, _)| !in_b.contains(k.as_slice())).cloned().collect();
            let to_a: Vec<(Vec<u8>, u64)> = kb.iter().filter(|(k, _)| !in_a.contains(k.as_slice())).cloned().collect();
            self.report.keys_missing += (to_a.len() + to_b.len()) as u64;
            self.copy(&ca, &cb, &to_b)?;
            self.copy(&cb, &ca, &to_a)?;
            if self.stopped() {
                break;
            }
        }
        Ok(())
    }

    /// Copy the keys `n` holds without owning them to the owners that lack them.
    fn handoff(&mut self, n: &str) -> Result<(), NetError> {
        let f = self.filter(&[], &[n]);
        let cn = self.clients[n].clone();
        let digest = cn.digest(&f)?;
        let memo = (self.effective.clone(), digest.clone());
        if lock(&self.router.repair.verified).get(n) == Some(&memo) {
            return Ok(());
        }
        let mut complete = true;
        for (bucket, d) in digest.iter().enumerate() {
            if d.count == 0 {
                continue;
            }
            let held = cn.list_keys(&f, bucket as u16)?;
            self.report.handoff_keys_checked += held.len() as u64;
            // The owners' keys of this bucket, asked once per owner.
            let mut owner_keys: BTreeMap<String, HashSet<Vec<u8>>> = BTreeMap::new();
            let mut to: BTreeMap<String, Vec<(Vec<u8>, u64)>> = BTreeMap::new();
            for (key, size) in &held {
                for o in self.owners(key) {
                    if !owner_keys.contains_key(&o) {
                        let Some(co) = self.clients.get(&o).cloned() else {
                            complete = false; // an owner is down: check again later
                            continue;
                        };
                        let keys = co.list_keys(&self.filter(&[&o], &[]), bucket as u16)?;
                        owner_keys.insert(o.clone(), keys.into_iter().map(|(k, _)| k).collect());
                    }
                    if !owner_keys[&o].contains(key) {
                        to.entry(o).or_default().push((key.clone(), *size));
                    }
                }
            }
            for (o, keys) in to {
                self.report.keys_missing += keys.len() as u64;
                let co = self.clients[&o].clone();
                self.copy(&cn, &co, &keys)?;
            }
            if self.stopped() {
                return Ok(());
            }
        }
        if complete {
            lock(&self.router.repair.verified).insert(n.to_string(), memo);
        }
        Ok(())
    }

    /// Effective owners of `key`, by id.
    fn owners(&self, key: &[u8]) -> Vec<String> {
        let ids: Vec<&str> = self.effective.iter().map(String::as_str).collect();
        monofs_net::hrw::owners(&ids, monofs_net::keys::placement(key), self.rf as usize)
            .into_iter()
            .map(|i| self.effective[i].clone())
            .collect()
    }

    /// Read each key whole from `src` and store it on `dst`, paced.
    fn copy(&mut self, src: &NodeClient, dst: &NodeClient, keys: &[(Vec<u8>, u64)]) -> Result<(), NetError> {
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        for (key, size) in keys {
            let Some(value) = src.get(key, 0, *size as u32)? else {
                // Gone or damaged since it was listed: another holder supplies it later.
                continue;
            };
            self.throttle.take(value.len() as u64);
            if batch_bytes + value.len() > COPY_BATCH_BYTES && !batch.is_empty() {
                self.flush(dst, &mut batch, &mut batch_bytes)?;
            }
            batch_bytes += value.len();
            batch.push((key.clone(), value));
        }
        self.flush(dst, &mut batch, &mut batch_bytes)
    }

    fn flush(&mut self, dst: &NodeClient, batch: &mut Vec<(Vec<u8>, Vec<u8>)>, bytes: &mut usize) -> Result<(), NetError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        dst.put_batch(std::mem::take(batch))?;
        self.report.keys_copied += n;
        self.report.bytes_copied += *bytes as u64;
        let r = self.report.received.entry(dst.id.clone()).or_default();
        r.keys += n;
        r.bytes += *bytes as u64;
        *bytes = 0;
        self.publish(true);
        Ok(())
    }
}
