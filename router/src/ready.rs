//! `GET /health`: whether this router can serve NFS clients now, for a load
//! balancer choosing between routers (deploy/haproxy/haproxy.cfg). A router
//! that is alive but cannot read the namespace would answer every client with
//! NFS3ERR_IO, so it must be taken out of rotation; `/healthz` only says the
//! process answers. The check costs nothing while the namespace is cached
//! (`NS_TTL`) and one read of the namespace record from its owners otherwise.
//!
//! A node that stops answering without closing its connection (a partition)
//! holds a read for the node I/O timeout: the check answers within
//! `HEALTH_DEADLINE` anyway. Checks that arrive while a read runs (a load
//! balancer checks from each of its backends) wait for that read rather than
//! start another or fail at once: threads never pile up, and a read that is
//! merely slower than the gap between two checks fails neither.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use monofs_net::sync::{lock, wait_timeout};
use serde_json::{json, Value};

use crate::Router;

/// Longest `GET /health` waits for the namespace before answering 503.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(2);

/// The one namespace read that concurrent checks share.
#[derive(Default)]
pub struct Probe {
    state: Mutex<ProbeState>,
    done: Condvar,
}

#[derive(Default)]
struct ProbeState {
    running_since: Option<Instant>,
    /// Reads finished so far.
    finished: u64,
    /// The last read's outcome: repositories in the namespace, or why not.
    last: Option<Result<usize, String>>,
}

/// HTTP status and body: 200 `{"ok":true,"repos":N}` or 503
/// `{"ok":false,"error":REASON}`.
pub fn check(router: &Arc<Router>) -> (u16, Value) {
    let unhealthy = |why: String| (503, json!({"ok": false, "error": why}));
    if !router.nfs_serving.load(Ordering::SeqCst) {
        return unhealthy("the NFS listener is not serving".into());
    }
    let deadline = Instant::now() + HEALTH_DEADLINE;
    let probe = &router.health_probe;
    let mut st = lock(&probe.state);
    // The read running now, or the one this check starts.
    let awaited = st.finished + 1;
    if st.running_since.is_none() {
        st.running_since = Some(Instant::now());
        let r = router.clone();
        let spawned = std::thread::Builder::new().name("health".into()).spawn(move || {
            let res = r.namespace_or_reason().map(|ns| ns.repos.len());
            let mut st = lock(&r.health_probe.state);
            st.running_since = None;
            st.finished += 1;
            st.last = Some(res);
            r.health_probe.done.notify_all();
        });
        if let Err(e) = spawned {
            st.running_since = None;
            return unhealthy(format!("cannot start the namespace read: {e}"));
        }
    }
    while st.finished < awaited {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let running = st.running_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
            return unhealthy(format!(
                "the namespace record could not be read within {} s (the read has been running for {running:.1} s): its nodes do not answer",
                HEALTH_DEADLINE.as_secs()
            ));
        }
        st = wait_timeout(&probe.done, st, left).0;
    }
    match st.last.clone() {
        Some(Ok(repos)) => (200, json!({"ok": true, "repos": repos})),
        Some(Err(e)) => unhealthy(e),
        None => unhealthy("no namespace read has finished".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    use monofs_net::proto::NodeAddr;
    use serde_json::json;

    use super::HEALTH_DEADLINE;
    use crate::stand_in_node;

    fn start(node: NodeAddr) -> crate::RouterHandle {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        crate::start(crate::RouterConfig {
            nfs_listen: any,
            portmap_port: None,
            http_listen: any,
            nodes: vec![node],
            replication: 1,
            fetchers: Vec::new(),
            refresh_interval: None,
            cluster_key: stand_in_node::key(),
            admin_token: None,
            exports: monofs_nfs::Exports::default(),
            nfs_limits: monofs_nfs::Limits::default(),
            health: Default::default(),
            router_id: "ready-test".into(),
            repair: Default::default(),
            caches: Default::default(),
        })
        .unwrap()
    }

    /// Status code and parsed body of `GET /health`, over a real socket.
    fn get_health(addr: SocketAddr) -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        (code, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn healthy_with_a_readable_namespace() {
        let h = start(stand_in_node::start());
        let (code, v) = get_health(h.http_addr);
        assert_eq!((code, &v["ok"], &v["repos"]), (200, &json!(true), &json!(0)), "{v}");
        h.router.publish(stand_in_node::repo("github.com/org/one")).unwrap();
        let (code, v) = get_health(h.http_addr);
        assert_eq!((code, &v["repos"]), (200, &json!(1)), "{v}");
        h.shutdown();
    }

    #[test]
    fn unhealthy_when_the_namespace_cannot_be_read() {
        // A port nothing listens on: the namespace's owner is down.
        let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let h = start(NodeAddr { id: "n1".into(), addr: gone.to_string() });
        let (code, v) = get_health(h.http_addr);
        assert_eq!((code, &v["ok"]), (503, &json!(false)), "{v}");
        assert!(v["error"].as_str().unwrap().contains("unavailable"), "{v}");
        // Liveness is another question.
        let mut s = TcpStream::connect(h.http_addr).unwrap();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        h.shutdown();
    }

    #[test]
    fn a_node_that_never_answers_makes_it_unhealthy_within_the_deadline() {
        // Accepts connections, holds them, never answers: a partitioned node.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let held: Vec<TcpStream> = silent.incoming().flatten().collect();
            drop(held);
        });
        let h = start(NodeAddr { id: "n1".into(), addr });
        let (code, v) = get_health(h.http_addr);
        assert_eq!(code, 503, "{v}");
        assert!(v["error"].as_str().unwrap().contains("could not be read within"), "{v}");
        // The stuck read is not repeated: the next check waits for it.
        let (code, v) = get_health(h.http_addr);
        assert_eq!(code, 503, "{v}");
        let why = v["error"].as_str().unwrap();
        assert!(why.contains("could not be read within"), "{v}");
        let running: f64 = why.split("running for ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(running >= 2.0 * HEALTH_DEADLINE.as_secs_f64() - 0.1, "one read, begun by the first check: {v}");
    }

    #[test]
    fn unhealthy_without_the_nfs_listener() {
        let node = stand_in_node::start();
        let router = std::sync::Arc::new(crate::Router::new(vec![node], 1, vec![], &stand_in_node::key()));
        let (code, v) = super::check(&router);
        assert_eq!(code, 503, "{v}");
        assert!(v["error"].as_str().unwrap().contains("NFS listener"), "{v}");
        // Once the accept loop runs and stops again, the answer follows it.
        let h = start(stand_in_node::start());
        assert_eq!(super::check(&h.router).0, 200);
        let r = h.router.clone();
        h.shutdown();
        assert_eq!(super::check(&r).0, 503);
    }
}
