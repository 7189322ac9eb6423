//! Health probing: every `interval`, each node gets a HELLO on a fresh
//! connection with short timeouts (`Cluster::probe`); a node with no success
//! for `unhealthy_threshold` is routed around (tried after the healthy ones).
//! Each probe runs on its own thread, so a silent node delays only its own
//! probes, and a node is never probed twice at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monofs_net::client::Cluster;

/// Default time between two probes of a node (`--health-interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default time without a successful probe before a node is unhealthy
/// (`--unhealthy-threshold`).
pub const DEFAULT_UNHEALTHY_THRESHOLD: Duration = Duration::from_secs(6);
/// Shortest probe interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest probe interval or threshold accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    pub interval: Duration,
    pub unhealthy_threshold: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval: DEFAULT_INTERVAL, unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD }
    }
}

impl HealthConfig {
    /// Both within bounds, and the threshold at least one interval (else a
    /// healthy node would flap between probes).
    pub fn check(&self) -> Result<(), String> {
        let range = MIN_INTERVAL..=MAX_INTERVAL;
        if !range.contains(&self.interval) || !range.contains(&self.unhealthy_threshold) {
            return Err(format!(
                "health interval and unhealthy threshold must be between {MIN_INTERVAL:?} and {MAX_INTERVAL:?}"
            ));
        }
        if self.unhealthy_threshold < self.interval {
            return Err(format!(
                "unhealthy threshold {:?} is shorter than the health interval {:?}",
                self.unhealthy_threshold, self.interval
            ));
        }
        Ok(())
    }
}

/// Start probing the nodes of `cluster` until `shutdown`.
pub fn spawn(cluster: Cluster, cfg: HealthConfig, shutdown: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    cluster.set_unhealthy_threshold(cfg.unhealthy_threshold);
    std::thread::Builder::new().name("health".into()).spawn(move || {
        let mut next = Instant::now();
        while !shutdown.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                next = Instant::now() + cfg.interval;
                for n in cluster.nodes() {
                    let c = cluster.clone();
                    let spawned = std::thread::Builder::new()
                        .name("health-probe".into())
                        .stack_size(PROBE_STACK)
                        .spawn(move || log_change(&c, &n.id));
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start a health probe");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50).min(cfg.interval));
        }
    })
}

/// Stack of a probe thread (it only connects and sends HELLO).
const PROBE_STACK: usize = 256 << 10;

/// Probe node `id`; log when it turns unhealthy or healthy again.
fn log_change(cluster: &Cluster, id: &str) {
    let was = healthy(cluster, id);
    let Some(r) = cluster.probe(id) else { return };
    let now = healthy(cluster, id);
    match (was, now, r) {
        (Some(true), Some(false), Err(e)) => tracing::warn!(node = id, error = %e, "node unhealthy"),
        (Some(false), Some(true), _) => tracing::info!(node = id, "node healthy again"),
        _ => {}
    }
}

fn healthy(cluster: &Cluster, id: &str) -> Option<bool> {
    cluster.health().into_iter().find(|h| h.id == id).map(|h| h.healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(HealthConfig::default().check().is_ok());
        let c = |i, t| HealthConfig { interval: Duration::from_millis(i), unhealthy_threshold: Duration::from_millis(t) };
        assert!(c(10, 1000).check().is_err());
        assert!(c(2000, 1000).check().is_err());
        assert!(c(100, 100).check().is_ok());
        assert!(c(1000, 7_200_000).check().is_err());
    }
}
