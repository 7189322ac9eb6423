//! Per-shard counters, updated by the shard's executor and read from any thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ShardMetrics {
    gets: AtomicU64,
    puts: AtomicU64,
    stats: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    checksum_failures: AtomicU64,
    protocol_errors: AtomicU64,
    connections: AtomicU64,
    keys: AtomicU64,
    log_bytes: AtomicU64,
    damaged: AtomicU64,
    /// Peers refused by the handshake or a frame MAC (counted and rate-limited logging).
    pub auth_failures: monofs_net::auth::FailureLog,
}

/// A snapshot of one shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: usize,
    /// GET requests answered (including NOT_FOUND).
    pub gets: u64,
    /// Items stored by PUT_BATCH.
    pub puts: u64,
    pub stats: u64,
    /// Value bytes returned by GET.
    pub bytes_read: u64,
    /// Bytes appended to the log (records with padding).
    pub bytes_written: u64,
    pub checksum_failures: u64,
    pub protocol_errors: u64,
    /// Connections open now.
    pub connections: u64,
    pub keys: u64,
    pub log_bytes: u64,
    /// Damaged extents and records the shard knows of (scan and reads).
    pub damaged: u64,
    /// Connections refused by authentication (see `monofs_net::auth`).
    pub auth_failures: u64,
}

/// Counters of every shard of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    pub shards: Vec<ShardStats>,
}

impl NodeMetrics {
    /// Sum over shards (the `shard` field of the result is meaningless).
    pub fn total(&self) -> ShardStats {
        let mut t = ShardStats::default();
        for s in &self.shards {
            t.gets += s.gets;
            t.puts += s.puts;
            t.stats += s.stats;
            t.bytes_read += s.bytes_read;
            t.bytes_written += s.bytes_written;
            t.checksum_failures += s.checksum_failures;
            t.protocol_errors += s.protocol_errors;
            t.connections += s.connections;
            t.keys += s.keys;
            t.log_bytes += s.log_bytes;
            t.damaged += s.damaged;
            t.auth_failures += s.auth_failures;
        }
        t
    }
}

impl ShardMetrics {
    pub fn get(&self, bytes: usize) {
        self.gets.fetch_add(1, Relaxed);
        self.bytes_read.fetch_add(bytes as u64, Relaxed);
    }
    pub fn put(&self, items: usize, bytes: u64) {
        self.puts.fetch_add(items as u64, Relaxed);
        self.bytes_written.fetch_add(bytes, Relaxed);
    }
    pub fn stat(&self) {
        self.stats.fetch_add(1, Relaxed);
    }
    pub fn checksum_failure(&self) {
        self.checksum_failures.fetch_add(1, Relaxed);
    }
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }
    pub fn conn_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }
    pub fn conn_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }
    pub fn set_keys(&self, n: u64) {
        self.keys.store(n, Relaxed);
    }
    pub fn set_log_bytes(&self, n: u64) {
        self.log_bytes.store(n, Relaxed);
    }
    pub fn set_damaged(&self, n: u64) {
        self.damaged.store(n, Relaxed);
    }
    pub fn snapshot(&self, shard: usize) -> ShardStats {
        ShardStats {
            shard,
            gets: self.gets.load(Relaxed),
            puts: self.puts.load(Relaxed),
            stats: self.stats.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            checksum_failures: self.checksum_failures.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            connections: self.connections.load(Relaxed),
            keys: self.keys.load(Relaxed),
            log_bytes: self.log_bytes.load(Relaxed),
            damaged: self.damaged.load(Relaxed),
            auth_failures: self.auth_failures.count(),
        }
    }
}
