//! Counters of the connection layer, read by whoever exports metrics (the router's
//! `/metrics`). Gauges go up and down; `_total` counters only up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ServerStats {
    /// Gauge: connections being served.
    pub conns_open: AtomicU64,
    pub conns_accepted_total: AtomicU64,
    /// Closed at accept: the server-wide connection cap was reached.
    pub refused_conn_cap_total: AtomicU64,
    /// Closed at accept: the client's address had its cap of connections.
    pub refused_client_cap_total: AtomicU64,
    pub closed_idle_total: AtomicU64,
    /// A record that started did not arrive whole within the record deadline.
    pub closed_slow_record_total: AtomicU64,
    /// The peer took none of its queued replies for the stall timeout.
    pub closed_stalled_total: AtomicU64,
    /// Closed to make room for a new connection while the server was full: the one
    /// quiet for longest.
    pub closed_evicted_total: AtomicU64,
    /// Gauge: reply bytes queued and not yet taken by peers.
    pub reply_bytes_queued: AtomicU64,
    /// Gauge: connections not read because their reply queue is full.
    pub conns_paused: AtomicU64,
    pub paused_total: AtomicU64,
    /// Calls the backend deferred (parked without a worker).
    pub calls_deferred_total: AtomicU64,
    /// Deferred calls answered at their deadline (NFS3ERR_JUKEBOX) instead of with data.
    pub deferred_expired_total: AtomicU64,
}

impl ServerStats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Relaxed);
    }

    /// Every counter as (name, help, is_gauge, value), for exporters.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, bool, u64)> {
        let v = |c: &AtomicU64| c.load(Relaxed);
        vec![
            ("conns_open", "NFS connections being served.", true, v(&self.conns_open)),
            ("conns_accepted_total", "NFS connections accepted.", false, v(&self.conns_accepted_total)),
            ("conns_refused_total{cap=\"server\"}", "NFS connections closed at accept by a connection cap.", false, v(&self.refused_conn_cap_total)),
            ("conns_refused_total{cap=\"client\"}", "NFS connections closed at accept by a connection cap.", false, v(&self.refused_client_cap_total)),
            ("conns_closed_total{reason=\"idle\"}", "NFS connections closed by the server.", false, v(&self.closed_idle_total)),
            ("conns_closed_total{reason=\"slow_record\"}", "NFS connections closed by the server.", false, v(&self.closed_slow_record_total)),
            ("conns_closed_total{reason=\"stalled\"}", "NFS connections closed by the server.", false, v(&self.closed_stalled_total)),
            ("conns_closed_total{reason=\"evicted\"}", "NFS connections closed by the server.", false, v(&self.closed_evicted_total)),
            ("reply_bytes_queued", "Reply bytes queued for NFS clients and not yet sent.", true, v(&self.reply_bytes_queued)),
            ("conns_paused", "NFS connections not read until their reply queue drains.", true, v(&self.conns_paused)),
            ("conns_paused_total", "Times an NFS connection was paused for a full reply queue.", false, v(&self.paused_total)),
            ("calls_deferred_total", "NFS calls parked until their content arrived.", false, v(&self.calls_deferred_total)),
            ("calls_deferred_expired_total", "Parked NFS calls answered JUKEBOX at their deadline.", false, v(&self.deferred_expired_total)),
        ]
    }
}
