//! What a client knows of each node's health: the outcome of its last exchanges
//! (probes and requests), and the backoff that sends requests elsewhere after a
//! failure.

use std::time::{Duration, Instant};

use serde::Serialize;

/// First backoff after a failure: the node is tried last for this long.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest backoff; each failure in a row doubles it up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Longest error text kept per node.
pub const MAX_ERROR_LEN: usize = 512;

/// One node's health as reported (`Cluster::health`, `GET /api/status`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    pub id: String,
    pub addr: String,
    /// Probed nodes: something succeeded within the unhealthy threshold.
    /// Nodes not probed: the last exchange succeeded.
    pub healthy: bool,
    /// Milliseconds since the last successful probe or request; None: never.
    pub last_ok_ms_ago: Option<u64>,
    /// Duration of the last successful probe (connect, handshake, HELLO).
    pub latency_us: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// Failed over: the node holds no effective ownership.
    pub excluded: bool,
    /// Milliseconds left of the node's backoff (tried last meanwhile).
    pub backoff_ms: u64,
    pub failures_total: u64,
    pub timeouts_total: u64,
    pub retries_total: u64,
}

#[derive(Debug, Default)]
pub(crate) struct HealthState {
    last_ok: Option<Instant>,
    latency: Option<Duration>,
    last_error: Option<String>,
    consecutive_failures: u32,
    backoff: Duration,
    backoff_until: Option<Instant>,
    /// A probe of this node is running (at most one at a time).
    pub(crate) probing: bool,
}

impl HealthState {
    pub(crate) fn succeeded(&mut self, now: Instant) {
        self.last_ok = Some(now);
        self.consecutive_failures = 0;
        self.backoff = Duration::ZERO;
        self.backoff_until = None;
    }

    pub(crate) fn probed(&mut self, now: Instant, latency: Duration) {
        self.latency = Some(latency);
        self.succeeded(now);
    }

    /// A failed request or probe: back off, doubling from `BACKOFF_MIN` to `BACKOFF_MAX`.
    pub(crate) fn failed(&mut self, now: Instant, error: &str) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.backoff_until = Some(now + self.backoff);
        let mut e = error.to_string();
        if e.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e.truncate(cut);
        }
        self.last_error = Some(e);
    }

    pub(crate) fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }

    /// `threshold`: the unhealthy threshold and when probing began, None when
    /// the node is not probed; then it is healthy until an exchange fails. A
    /// probed node is given the threshold to answer its first probe.
    pub(crate) fn healthy(&self, now: Instant, threshold: Option<(Duration, Instant)>) -> bool {
        match threshold {
            None => self.consecutive_failures == 0,
            Some((t, since)) => now.saturating_duration_since(self.last_ok.map_or(since, |ok| ok.max(since))) < t,
        }
    }

    /// Healthy and not backed off: worth trying before the others.
    pub(crate) fn usable(&self, now: Instant, threshold: Option<(Duration, Instant)>) -> bool {
        !self.backing_off(now) && self.healthy(now, threshold)
    }

    pub(crate) fn report(&self, now: Instant) -> (Option<u64>, Option<u64>, u32, Option<String>, u64) {
        (
            self.last_ok.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            self.latency.map(|l| l.as_micros() as u64),
            self.consecutive_failures,
            self.last_error.clone(),
            self.backoff_until.map_or(0, |t| t.saturating_duration_since(now).as_millis() as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_on_success() {
        let t0 = Instant::now();
        let mut h = HealthState::default();
        h.failed(t0, "x");
        assert!(h.backing_off(t0));
        assert!(!h.backing_off(t0 + BACKOFF_MIN));
        for _ in 0..20 {
            h.failed(t0, "x");
        }
        assert_eq!(h.backoff, BACKOFF_MAX);
        assert_eq!(h.consecutive_failures, 21);
        h.succeeded(t0);
        assert!(!h.backing_off(t0));
        assert_eq!(h.consecutive_failures, 0);
        h.failed(t0, &"é".repeat(MAX_ERROR_LEN));
        assert!(h.last_error.as_ref().unwrap().len() <= MAX_ERROR_LEN);
    }

    #[test]
    fn unhealthy_after_the_threshold_without_success() {
        let t0 = Instant::now();
        let th = Duration::from_secs(6);
        let mut h = HealthState::default();
        assert!(h.healthy(t0 + th * 10, None));
        h.failed(t0, "x");
        assert!(!h.healthy(t0, None) && !h.usable(t0, None));
        assert!(h.healthy(t0, Some((th, t0))) && !h.usable(t0, Some((th, t0))));
        h = HealthState::default();
        assert!(h.healthy(t0 + Duration::from_secs(5), Some((th, t0))));
        assert!(!h.healthy(t0 + th, Some((th, t0))));
        h.succeeded(t0 + th);
        assert!(h.healthy(t0 + th + Duration::from_secs(1), Some((th, t0))));
        assert!(!h.healthy(t0 + th * 2, Some((th, t0))));
    }
}
