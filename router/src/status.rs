//! `GET /api/status`: the router, every node's health and what each node
//! reports of itself, gathered from all nodes at once within `NODE_ANSWER_WAIT`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use monofs_net::client::Cluster;
use serde_json::{json, Value};

use crate::Router;

/// How long the status waits for the nodes' answers; a node that has not
/// answered by then is shown with an error.
pub const NODE_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// `f(cluster, i)` for every node `i`, each on its own thread, collected for at
/// most `wait`; a node without an answer by then gets `Err`. The threads left
/// behind end on their own (every node request has a timeout).
pub fn per_node<T: Send + 'static>(
    cluster: &Cluster,
    wait: Duration,
    f: fn(&Cluster, usize) -> Result<T, String>,
) -> Vec<Result<T, String>> {
    let n = cluster.nodes().len();
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let (c, answer) = (cluster.clone(), tx.clone());
        let spawned = std::thread::Builder::new()
            .name("node-query".into())
            .spawn(move || {
                let _ = answer.send((i, f(&c, i)));
            });
        if let Err(e) = spawned {
            let _ = tx.send((i, Err(format!("cannot start a query: {e}"))));
        }
    }
    drop(tx);
    let mut out: Vec<Option<Result<T, String>>> = (0..n).map(|_| None).collect();
    let deadline = Instant::now() + wait;
    while out.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, r)) => out[i] = Some(r),
            Err(_) => break,
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(format!("no answer within {}s", wait.as_secs()))))
        .collect()
}

/// The status document (docs/operations.md, "Status JSON").
pub fn report(router: &Router) -> Value {
    let cluster = &router.cluster;
    let health = cluster.health();
    let stats = per_node(cluster, NODE_ANSWER_WAIT, |c, i| c.client(i).and_then(|n| n.stats()).map_err(|e| e.to_string()));
    let nodes: Vec<Value> = health
        .iter()
        .zip(stats)
        .map(|(h, st)| {
            let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
            match st {
                Ok(st) => v["stats"] = serde_json::to_value(st).unwrap_or(Value::Null),
                Err(e) => v["stats_error"] = json!(e),
            }
            v
        })
        .collect();
    let drain = router.drained();
    let failovers = router.failovers();
    let healthy = health.iter().filter(|h| h.healthy).count();
    json!({
        "router": {
            "id": router.id(),
            "listen": router.listen.get().cloned().unwrap_or_default(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": router.started.elapsed().as_secs(),
        },
        "nodes": nodes,
        "replication": { "factor": cluster.replication() },
        "cluster": {
            "nodes": health.len(),
            "healthy": healthy,
            "excluded": cluster.excluded(),
            "drained": drain,
            "failovers": failovers,
        },
        "routers": router.routers(),
        "repair": router.repair_status(),
    })
}
