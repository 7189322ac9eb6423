//! `GET /health`: whether this router can serve NFS clients now, for a load
//! balancer choosing between routers (deploy/haproxy/haproxy.cfg). A router
//! that is alive but cannot read the namespace would answer every client with
//! NFS3ERR_IO, so it must be taken out of rotation; `/healthz` only says the
//! process answers. The check costs nothing while the namespace is cached
//! (`NS_TTL`) and one read of the namespace record from its owners otherwise.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::Router;

/// HTTP status and body: 200 `{"ok":true,"repos":N}` or 503
/// `{"ok":false,"error":REASON}`.
pub fn check(router: &Router) -> (u16, Value) {
    if !router.nfs_serving.load(Ordering::SeqCst) {
        return (503, json!({"ok": false, "error": "the NFS listener is not serving"}));
    }
    match router.namespace_or_reason() {
        Ok(ns) => (200, json!({"ok": true, "repos": ns.repos.len()})),
        Err(e) => (503, json!({"ok": false, "error": e})),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    use monofs_net::proto::NodeAddr;
    use serde_json::json;

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
        assert!(v["error"].as_str().unwrap().contains("namespace record unavailable"), "{v}");
        // Liveness is another question.
        let mut s = TcpStream::connect(h.http_addr).unwrap();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        h.shutdown();
    }

    #[test]
    fn unhealthy_without_the_nfs_listener() {
        let node = stand_in_node::start();
        let router = crate::Router::new(vec![node], 1, vec![], &stand_in_node::key());
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
