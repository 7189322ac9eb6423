//! The HTTP API: `POST /api/ingest` (streams NDJSON progress), `GET /api/repos`,
//! `GET /api/damaged` (what each node found damaged in its logs), `GET /api/status`
//! (the router, each node's health and stats, the replication factor), `GET /metrics`
//! (Prometheus), `GET /healthz` (the process answers), `GET /health` (it can serve NFS
//! clients: for load balancers); the cluster state: `GET /api/state`, `POST
//! /api/drain {reason}`, `/api/undrain`, `/api/failover {node_id}`,
//! `/api/failover/clear {node_id}`.
//!
//! Endpoints that change state (`POST`) need the admin token as a bearer
//! token when the router has one, and come from loopback when it has none;
//! the `GET` endpoints show only what any NFS client can list and stay open.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::channel::{bounded, Receiver};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::admin_token::AdminToken;
use crate::ingest::IngestParams;
use crate::Router;
use monofs_net::proto::{ContentMode, SourceKind};

/// Requests handled at once; more get 503.
pub const MAX_CONCURRENT: usize = 64;
/// Largest request body read.
pub const MAX_BODY: usize = 64 << 10;

pub fn serve(router: Arc<Router>, server: Arc<Server>, token: Option<AdminToken>) {
    let busy = Arc::new(AtomicUsize::new(0));
    let token = Arc::new(token);
    for req in server.incoming_requests() {
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
            busy.fetch_sub(1, Ordering::SeqCst);
            let _ = req.respond(json_response(
                503,
                &json!({"error": "router busy, retry later"}),
            ));
            continue;
        }
        let (r, b, t) = (router.clone(), busy.clone(), token.clone());
        let spawned = std::thread::Builder::new()
            .name("http-req".into())
            .spawn(move || {
                handle(&r, &t, req);
                b.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header")
}

fn json_response(status: u16, v: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(format!("{v}\n").into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

/// Why a request that changes state is refused: its status and message.
/// `authorization` is its Authorization header, `from` its peer.
pub fn refusal(token: Option<&AdminToken>, authorization: Option<&str>, from: Option<SocketAddr>) -> Option<(u16, &'static str)> {
    match token {
        Some(t) if authorization.is_some_and(|a| t.accepts(a)) => None,
        Some(_) if authorization.is_some() => Some((401, "wrong admin token")),
        Some(_) => Some((
            401,
            "this endpoint needs the admin token: send 'Authorization: Bearer TOKEN' with the token of the router's --admin-token-file (monofs ingest and monofs admin take --admin-token-file)",
        )),
        None if from.is_some_and(|a| a.ip().to_canonical().is_loopback()) => None,
        None => Some((403, "this router has no --admin-token-file, so it accepts changes from loopback only")),
    }
}

fn authorize(token: Option<&AdminToken>, req: &Request) -> Result<(), Response<std::io::Cursor<Vec<u8>>>> {
    let authorization = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str());
    match refusal(token, authorization, req.remote_addr().copied()) {
        None => Ok(()),
        Some((code, why)) => {
            let r = json_response(code, &json!({ "error": why }));
            Err(if code == 401 { r.with_header(header("WWW-Authenticate", "Bearer realm=\"monofs\"")) } else { r })
        }
    }
}

fn handle(router: &Arc<Router>, token: &Option<AdminToken>, mut req: Request) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    if !matches!(req.method(), Method::Get | Method::Head) {
        if let Err(refused) = authorize(token.as_ref(), &req) {
            let _ = req.respond(refused);
            return;
        }
    }
    let resp = match (req.method(), path.as_str()) {
        (Method::Get, "/healthz") => json_response(200, &json!({"ok": true})),
        (Method::Get, "/health") => {
            let (code, body) = crate::ready::check(router);
            json_response(code, &body)
        }
        (Method::Get, "/metrics") => Response::from_data(
            router
                .metrics
                .render(
                    router.dirs.bytes(),
                    router.blocks.bytes(),
                    &crate::damaged::counts(&crate::damaged::query(&router.cluster)),
                    &router.cluster.health(),
                )
                .into_bytes(),
        )
        .with_header(header("Content-Type", "text/plain; version=0.0.4")),
        (Method::Get, "/api/repos") => match router.repos() {
            Ok(repos) => json_response(200, &Value::Array(repos.iter().map(entry_json).collect())),
            Err(e) => json_response(503, &json!({"error": e})),
        },
        (Method::Get, "/api/damaged") => {
            json_response(200, &Value::Array(crate::damaged::query(&router.cluster)))
        }
        (Method::Get, "/api/status") => json_response(200, &crate::status::report(router)),
        (Method::Get, "/api/fetchers") => {
            json_response(200, &Value::Array(router.fetcher_status()))
        }
        (Method::Get, "/api/state") => match state_json(router) {
            Ok(v) => json_response(200, &v),
            Err(e) => json_response(503, &json!({"error": e})),
        },
        (Method::Post, "/api/rebalance") => {
            let node = read_body(&mut req).and_then(|b| {
                let v: Value = if b.iter().all(u8::is_ascii_whitespace) {
                    json!({})
                } else {
                    serde_json::from_slice(&b).map_err(|e| (400, format!("request body is not JSON: {e}")))?
                };
                Ok(v.get("storage_id").and_then(Value::as_str).map(str::to_string))
            });
            match node.and_then(|n| router.request_rebalance(n.clone()).map(|_| n).map_err(|e| (409, e))) {
                Ok(n) => json_response(200, &json!({"rebalance": "started", "storage_id": n})),
                Err((code, e)) => json_response(code, &json!({"error": e})),
            }
        }
        (Method::Get, "/api/node-files") => {
            // Lists object ids a node holds, published or not: admin only.
            if let Err(refused) = authorize(token.as_ref(), &req) {
                let _ = req.respond(refused);
                return;
            }
            let q = query(req.url());
            let node = q.iter().find(|(k, _)| k == "node_id").map(|(_, v)| v.clone()).unwrap_or_default();
            let limit = q.iter().find(|(k, _)| k == "limit").and_then(|(_, v)| v.parse().ok()).unwrap_or(1000u64);
            if let Err(e) = router.known_node(&node) {
                json_response(400, &json!({"error": e}))
            } else {
                if let Ok(mut out) = Chunked::start(req.into_writer(), "application/x-ndjson") {
                    // Lines gathered into chunks of up to 64 KiB.
                    let mut body = std::io::BufWriter::with_capacity(64 << 10, &mut out);
                    if let Err((_, e)) = crate::node_files::stream(router, &node, limit, &mut body) {
                        let _ = writeln!(body, "{}", json!({"summary": {"complete": false, "error": e}}));
                    }
                    if body.flush().is_ok() {
                        drop(body);
                        let _ = out.finish();
                    }
                }
                return;
            }
        }
        (Method::Post, "/api/drain" | "/api/undrain" | "/api/failover" | "/api/failover/clear") => {
            match read_body(&mut req).and_then(|b| change_state(router, &path, &b)) {
                Ok(v) => json_response(200, &v),
                Err((code, e)) => json_response(code, &json!({"error": e})),
            }
        }
        (Method::Post, "/api/ingest") | (Method::Post, "/api/refresh") => {
            let refresh = path == "/api/refresh";
            let params = read_body(&mut req).and_then(|body| {
                if refresh {
                    let v: Value = serde_json::from_slice(&body)
                        .map_err(|e| (400, format!("request body is not JSON: {e}")))?;
                    let p = v.get("path").and_then(Value::as_str).unwrap_or("");
                    router.refresh_params(p)
                } else {
                    parse_ingest(&body).map_err(|e| (400, e))
                }
            });
            match params {
                Ok(p) => {
                    stream_ingest(start_ingest(router.clone(), p), req.into_writer());
                    return;
                }
                Err((code, e)) => json_response(code, &json!({"error": e})),
            }
        }
        _ => json_response(
            404,
            &json!({"error": format!("no such endpoint: {} {path}", req.method())}),
        ),
    };
    let _ = req.respond(resp);
}

/// `GET /api/state`: drain, failovers, live routers and the number of
/// repositories, from a state read of a majority of nodes.
fn state_json(router: &Router) -> Result<Value, String> {
    let repos = router.repos()?;
    Ok(json!({
        "router": router.id(),
        "drain": router.drained(),
        "failovers": router.failovers(),
        "routers": router.routers(),
        "members": router.members(),
        "repos": repos.len(),
    }))
}

/// The POST endpoints that change the cluster state. A missing field or an
/// unknown node id is a 400, a state that cannot be stored a 503.
fn change_state(router: &Router, path: &str, body: &[u8]) -> Result<Value, (u16, String)> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| (400, format!("request body is not JSON: {e}")))?
    };
    let field = |k: &str| match v.get(k).and_then(Value::as_str).map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err((400, format!("missing \"{k}\""))),
    };
    let unavailable = |e: String| (503, e);
    match path {
        "/api/drain" => {
            let d = router.set_drain(&field("reason")?).map_err(unavailable)?;
            Ok(json!({"drain": d}))
        }
        "/api/undrain" => {
            router.clear_drain().map_err(unavailable)?;
            Ok(json!({"drain": null}))
        }
        _ => {
            let node = field("node_id")?;
            // A removed node's failover mark is cleared by its id alone.
            let marked = path == "/api/failover/clear" && router.failovers().contains_key(&node);
            if !marked {
                router.known_node(&node).map_err(|e| (400, e))?;
            }
            if path == "/api/failover" {
                let f = router.set_failover(&node, crate::state::FailoverReason::Manual).map_err(unavailable)?;
                Ok(json!({"node_id": node, "failover": f}))
            } else {
                router.clear_failover(&node).map_err(unavailable)?;
                Ok(json!({"node_id": node, "failover": null}))
            }
        }
    }
}

/// `a=1&b=x%20y` of a URL, percent-decoded.
fn query(url: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 3;
                            continue;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b'+' => out.push(b' '),
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub fn entry_json(e: &monofs_net::ns::NsEntry) -> Value {
    json!({
        "path": format!("/{}", e.path),
        "url": e.url,
        "ref": e.git_ref,
        "commit": monofs_net::oid_hex(&e.commit),
        "root_tree": monofs_net::oid_hex(&e.root_tree),
        "commit_time": e.commit_time,
    })
}

fn read_body(req: &mut Request) -> Result<Vec<u8>, (u16, String)> {
    let mut body = Vec::new();
    req.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| (400, e.to_string()))?;
    if body.len() > MAX_BODY {
        return Err((413, format!("request body over {MAX_BODY} bytes")));
    }
    Ok(body)
}

fn parse_ingest(body: &[u8]) -> Result<IngestParams, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let url = s("url");
    if url.trim().is_empty() {
        return Err("missing \"url\"".into());
    }
    let kind = match s("kind").as_str() {
        "" | "git" => SourceKind::Git,
        "go" => SourceKind::GoModule,
        other => return Err(format!("unknown \"kind\" '{other}' (git or go)")),
    };
    let content = match s("content").as_str() {
        "" | "lazy" => ContentMode::Lazy,
        "eager" => ContentMode::Eager,
        other => return Err(format!("unknown \"content\" '{other}' (lazy or eager)")),
    };
    Ok(IngestParams {
        kind,
        content,
        url,
        git_ref: s("ref"),
        source_id: s("source_id"),
    })
}

/// Run the ingest on its own thread; each progress event and the result become
/// one JSON line. The channel is bounded: a slow client slows only its ingest's
/// progress reports, which are dropped rather than queued when it falls behind.
fn start_ingest(router: Arc<Router>, p: IngestParams) -> Receiver<Vec<u8>> {
    let (tx, rx) = bounded::<Vec<u8>>(256);
    let _ = std::thread::Builder::new().name("ingest".into()).spawn(move || {
        let line = |v: Value| format!("{v}\n").into_bytes();
        let mut last = std::time::Instant::now() - std::time::Duration::from_secs(1);
        let result = router.ingest(&p, &mut |phase, objects, bytes| {
            if last.elapsed().as_millis() >= 100 || phase == "publishing" {
                last = std::time::Instant::now();
                let _ = tx.try_send(line(json!({"phase": phase, "objects": objects, "bytes": bytes})));
            }
        });
        let fin = match result {
            Ok(es) => json!({"done": true, "repo": entry_json(&es[0]), "published": es.iter().map(entry_json).collect::<Vec<_>>()}),
            Err(e) => json!({"done": false, "error": e}),
        };
        let _ = tx.send(line(fin));
    });
    rx
}

/// Write the progress lines as they come. tiny_http's chunked encoder holds
/// back 8 KiB before sending, which would hide progress until the end, so the
/// response is written raw, one chunk per line, ended by the zero chunk.
/// A response body in HTTP/1.1 chunked transfer coding: each `write` is one
/// chunk, `finish` writes the last. The client sees the end of a body whose
/// length is not known in advance without the connection being closed.
struct Chunked<W: Write>(W);

impl<W: Write> Chunked<W> {
    /// Send the head of a 200 response of `content_type`.
    fn start(mut w: W, content_type: &str) -> std::io::Result<Chunked<W>> {
        write!(w, "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        w.flush()?;
        Ok(Chunked(w))
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.0.write_all(b"0\r\n\r\n")?;
        self.0.flush()
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn stream_ingest(rx: Receiver<Vec<u8>>, w: Box<dyn Write + Send>) {
    let mut out = Chunked::start(w, "application/x-ndjson").ok();
    for line in rx {
        // The client may leave; the ingest itself runs to completion anyway.
        if let Some(o) = out.as_mut() {
            if o.write_all(&line).and_then(|_| o.flush()).is_err() {
                out = None;
            }
        }
    }
    if let Some(o) = out {
        let _ = o.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_change_state() {
        let t = AdminToken::generate().unwrap();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        // With a token: the token, from anywhere, and nothing else.
        assert_eq!(refusal(Some(&t), Some(&t.bearer()), Some(remote)), None);
        assert_eq!(refusal(Some(&t), None, Some(local)).map(|r| r.0), Some(401));
        assert_eq!(refusal(Some(&t), Some("Bearer nope"), Some(local)).map(|r| r.0), Some(401));
        // Without one: loopback only.
        assert_eq!(refusal(None, None, Some(local)), None);
        assert_eq!(refusal(None, None, Some(mapped)), None);
        assert_eq!(refusal(None, Some("Bearer x"), Some(remote)).map(|r| r.0), Some(403));
        assert_eq!(refusal(None, None, None).map(|r| r.0), Some(403));
    }
}
