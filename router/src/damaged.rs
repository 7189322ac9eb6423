//! What every node reports damaged in its logs (`DAMAGED`, per shard), for
//! `GET /api/damaged` and the `monofs_node_damaged_records` metric.

use monofs_net::client::Cluster;
use monofs_net::proto::{Request, Response};
use serde_json::{json, Value};

/// One entry per node: `{"node", "addr", "total", "shards": [...]}`, or
/// `{"node", "addr", "error"}` for a node that did not answer. Each shard's
/// answer is the node's own JSON (at most 1000 listed entries plus a count).
pub fn query(cluster: &Cluster) -> Vec<Value> {
    // All nodes at once, so a silent node delays the answer by at most the wait.
    let answers = crate::status::per_node(cluster, crate::status::NODE_ANSWER_WAIT, node);
    cluster
        .nodes()
        .iter()
        .zip(answers)
        .map(|(n, r)| match r {
            Ok(shards) => {
                let total: u64 = shards.iter().map(|s| s["total"].as_u64().unwrap_or(0)).sum();
                json!({"node": n.id, "addr": n.addr, "total": total, "shards": shards})
            }
            Err(e) => json!({"node": n.id, "addr": n.addr, "error": e}),
        })
        .collect()
}

fn node(cluster: &Cluster, i: usize) -> Result<Vec<Value>, String> {
    let c = cluster.client(i).map_err(|e| e.to_string())?;
    (0..c.shards())
        .map(|s| match c.call_shard(s, &Request::Damaged).map_err(|e| e.to_string())? {
            Response::Data(d) => serde_json::from_slice(&d).map_err(|e| format!("shard {s}: bad DAMAGED answer: {e}")),
            other => Err(format!("shard {s}: unexpected answer to DAMAGED: {other:?}")),
        })
        .collect()
}

/// `(node id, damaged extents and records)` of every node that answered.
pub fn counts(report: &[Value]) -> Vec<(String, u64)> {
    report
        .iter()
        .filter_map(|n| Some((n["node"].as_str()?.to_string(), n["total"].as_u64()?)))
        .collect()
}
