//! Counters exported in Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Default)]
pub struct Metrics {
    pub getattr: AtomicU64,
    pub lookup: AtomicU64,
    pub read: AtomicU64,
    pub read_bytes: AtomicU64,
    pub readdir: AtomicU64,
    pub readlink: AtomicU64,
    pub errors: AtomicU64,
    pub dir_cache_hits: AtomicU64,
    pub dir_cache_misses: AtomicU64,
    pub lazy_fetches: AtomicU64,
    pub block_cache_hits: AtomicU64,
    pub block_cache_misses: AtomicU64,
    pub ingests_ok: AtomicU64,
    pub ingests_failed: AtomicU64,
    /// The NFS server's connection counters.
    pub nfs: Arc<monofs_nfs::ServerStats>,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// `node_damaged`: each answering node's count of damaged log extents and
    /// records; `nodes`: every node's health and request counters.
    pub fn render(
        &self,
        dir_cache_bytes: usize,
        block_cache_bytes: usize,
        node_damaged: &[(String, u64)],
        nodes: &[monofs_net::client::NodeHealth],
    ) -> String {
        let mut s = String::new();
        let ops = [
            ("getattr", &self.getattr),
            ("lookup", &self.lookup),
            ("read", &self.read),
            ("readdir", &self.readdir),
            ("readlink", &self.readlink),
        ];
        s.push_str(
            "# HELP monofs_router_nfs_ops_total NFS operations served by the router backend.\n",
        );
        s.push_str("# TYPE monofs_router_nfs_ops_total counter\n");
        for (name, c) in ops {
            let _ = writeln!(
                s,
                "monofs_router_nfs_ops_total{{op=\"{name}\"}} {}",
                c.load(Relaxed)
            );
        }
        let one = |s: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            &mut s,
            "monofs_router_read_bytes_total",
            "counter",
            "Bytes returned by READ.",
            self.read_bytes.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_nfs_errors_total",
            "counter",
            "NFS operations answered with an error other than NOENT.",
            self.errors.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_dir_cache_hits_total",
            "counter",
            "Directory records served from the router cache.",
            self.dir_cache_hits.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_dir_cache_misses_total",
            "counter",
            "Directory records fetched from nodes.",
            self.dir_cache_misses.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_dir_cache_bytes",
            "gauge",
            "Bytes held by the directory cache.",
            dir_cache_bytes as u64,
        );
        one(
            &mut s,
            "monofs_router_block_cache_hits_total",
            "counter",
            "64 KiB blocks of file content served from the router cache.",
            self.block_cache_hits.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_block_cache_misses_total",
            "counter",
            "64 KiB blocks of file content read from nodes.",
            self.block_cache_misses.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_block_cache_bytes",
            "gauge",
            "Bytes held by the file content cache.",
            block_cache_bytes as u64,
        );
        one(
            &mut s,
            "monofs_router_lazy_fetches_total",
            "counter",
            "READs that asked a fetcher for content no node had yet.",
            self.lazy_fetches.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_ingests_total",
            "counter",
            "Ingests published.",
            self.ingests_ok.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_ingests_failed_total",
            "counter",
            "Ingests that failed.",
            self.ingests_failed.load(Relaxed),
        );
        one(
            &mut s,
            "monofs_router_auth_failures_total",
            "counter",
            "Nodes or fetchers that failed authentication (wrong cluster key, a frame that did not verify).",
            monofs_net::client::AUTH_FAILURES.count(),
        );
        s.push_str(
            "# HELP monofs_node_damaged_records Damaged log extents and records a node found \
             (start-up scan and reads) since it started.\n# TYPE monofs_node_damaged_records gauge\n",
        );
        for (node, n) in node_damaged {
            let _ = writeln!(s, "monofs_node_damaged_records{{node=\"{}\"}} {n}", label(node));
        }
        type Field = fn(&monofs_net::client::NodeHealth) -> u64;
        let per_node: [(&str, &str, &str, Field); 5] = [
            ("monofs_router_node_healthy", "gauge", "1 while the node answers its health probes within the unhealthy threshold.", |h| h.healthy as u64),
            ("monofs_router_node_probe_latency_microseconds", "gauge", "Duration of the node's last successful health probe.", |h| h.latency_us.unwrap_or(0)),
            ("monofs_router_node_request_failures_total", "counter", "Requests to the node that failed (timeouts included); each moved to the next replica.", |h| h.failures_total),
            ("monofs_router_node_request_timeouts_total", "counter", "Requests to the node that got no answer within their timeout.", |h| h.timeouts_total),
            ("monofs_router_node_connection_retries_total", "counter", "Pooled connections to the node found closed (a node restart) and replaced by a fresh one.", |h| h.retries_total),
        ];
        for (name, kind, help, field) in per_node {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for h in nodes {
                let _ = writeln!(s, "{name}{{node=\"{}\"}} {}", label(&h.id), field(h));
            }
        }
        self.render_nfs(&mut s);
        s
    }
}

/// `v` as a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// The NFS connection counters, as `monofs_router_nfs_*`; labelled series of
    /// one family share their HELP and TYPE lines.
    fn render_nfs(&self, s: &mut String) {
        let mut last_family = "";
        for (name, help, gauge, v) in self.nfs.snapshot() {
            let family = name.split('{').next().unwrap_or(name);
            if family != last_family {
                let kind = if gauge { "gauge" } else { "counter" };
                let _ = writeln!(s, "# HELP monofs_router_nfs_{family} {help}\n# TYPE monofs_router_nfs_{family} {kind}");
                last_family = family;
            }
            let _ = writeln!(s, "monofs_router_nfs_{name} {v}");
        }
    }
}
