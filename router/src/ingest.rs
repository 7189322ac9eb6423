//! Running an ingest: pick a fetcher, relay its progress, publish the result.

use std::time::Duration;

use monofs_net::auth::FrameKey;
use monofs_net::client::{Conn, NetError};
use monofs_net::hrw;
use monofs_net::ns::NsEntry;
use monofs_net::proto::{ContentMode, IngestRequest, Request, Response, SourceKind};

use crate::metrics::Metrics;
use crate::Router;

/// Longest silence from a fetcher during an ingest (it reports progress
/// several times a second while working; a fetch of a huge remote may be quiet
/// for a while before its first object).
pub const FETCHER_SILENCE: Duration = Duration::from_secs(15 * 60);

pub struct IngestParams {
    pub kind: SourceKind,
    pub content: ContentMode,
    pub url: String,
    pub git_ref: String,
    pub source_id: String,
}

impl Router {
    /// What a refresh of the repository published at `path` ingests: the same
    /// remote and ref again, under the same path. Errors carry an HTTP status.
    pub fn refresh_params(&self, path: &str) -> Result<IngestParams, (u16, String)> {
        let path = path.trim_matches('/');
        let repos = self.repos().map_err(|e| (503, e))?;
        let e = repos
            .iter()
            .find(|e| e.path == path)
            .ok_or_else(|| (404, format!("no repository is published at /{path}")))?;
        if crate::lazy::source_kind(&e.url) == SourceKind::GoModule {
            return Err((
                400,
                format!("/{path} is a Go module version: it never changes"),
            ));
        }
        Ok(IngestParams {
            kind: SourceKind::Git,
            content: ContentMode::Lazy,
            url: e.url.clone(),
            git_ref: e.git_ref.clone(),
            source_id: e.path.clone(),
        })
    }

    /// Refresh every published Git repository to the newest commit of its ref.
    pub fn refresh_all(&self) {
        let repos = match self.repos() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "periodic refresh: namespace unavailable");
                return;
            }
        };
        for e in repos {
            let Ok(p) = self.refresh_params(&e.path) else {
                continue;
            };
            match self.ingest(&p, &mut |_, _, _| {}) {
                Ok(_) => tracing::info!(path = %e.path, "refreshed"),
                Err(err) => tracing::warn!(path = %e.path, error = %err, "refresh failed"),
            }
        }
    }

    /// Each fetcher's STATUS, or why it could not be had.
    pub fn fetcher_status(&self) -> Vec<serde_json::Value> {
        self.fetchers
            .iter()
            .map(|addr| {
                let r = Conn::connect_with(addr, &self.frame_key).and_then(|mut c| {
                    c.set_io_timeout(Duration::from_secs(10))?;
                    c.call(&Request::Status)
                });
                match r {
                    Ok(Response::Data(d)) => serde_json::from_slice(&d).unwrap_or_else(
                        |e| serde_json::json!({"addr": addr, "healthy": false, "error": format!("bad status: {e}")}),
                    ),
                    Ok(other) => serde_json::json!({"addr": addr, "healthy": false, "error": format!("unexpected answer {other:?}")}),
                    Err(e) => serde_json::json!({"addr": addr, "healthy": false, "error": e.to_string()}),
                }
            })
            .collect()
    }

    /// Ingest through the repository's preferred fetcher (HRW on the URL),
    /// falling back to the next when one cannot be reached, then publish.
    pub fn ingest(
        &self,
        p: &IngestParams,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<Vec<NsEntry>, String> {
        let r = self.ingest_inner(p, progress);
        Metrics::inc(if r.is_ok() {
            &self.metrics.ingests_ok
        } else {
            &self.metrics.ingests_failed
        });
        r
    }

    fn ingest_inner(
        &self,
        p: &IngestParams,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<Vec<NsEntry>, String> {
        let req = Request::Ingest(IngestRequest {
            kind: p.kind,
            content: p.content,
            url: p.url.clone(),
            git_ref: p.git_ref.clone(),
            source_id: p.source_id.clone(),
            replication: self.cluster.replication() as u16,
            nodes: self.cluster.nodes().to_vec(),
        });
        let mut entries = None;
        with_fetcher(
            &self.fetchers,
            &self.frame_key,
            p.url.as_bytes(),
            FETCHER_SILENCE,
            &req,
            &mut |resp| match resp {
                Response::Progress {
                    phase,
                    objects,
                    bytes,
                } => {
                    progress(&phase, objects, bytes);
                    Ok(None)
                }
                Response::IngestDone(raw) => {
                    let es = monofs_net::ns::decode(&raw)
                        .map_err(|e| format!("malformed result: {e}"))?;
                    entries = Some(es);
                    Ok(Some(()))
                }
                other => Err(format!("unexpected answer {other:?}")),
            },
        )?;
        let entries = entries.unwrap_or_default();
        if entries.is_empty() {
            return Err("the fetcher published nothing".into());
        }
        progress("publishing", 0, 0);
        for entry in &entries {
            self.publish(entry.clone())?;
            tracing::info!(path = %entry.path, commit = %monofs_net::oid_hex(&entry.commit), "published");
        }
        Ok(entries)
    }
}

/// Send `req` to the preferred fetcher for `key` (HRW), falling back to the
/// next while one cannot be reached, and feed its answers to `on` until it
/// returns Some. An error answer from a reachable fetcher is final.
pub(crate) fn with_fetcher(
    fetchers: &[String],
    frame_key: &FrameKey,
    key: &[u8],
    silence: std::time::Duration,
    req: &Request,
    on: &mut dyn FnMut(Response) -> Result<Option<()>, String>,
) -> Result<(), String> {
    if fetchers.is_empty() {
        return Err("this router has no fetchers configured (--fetchers)".into());
    }
    let ids: Vec<&str> = fetchers.iter().map(String::as_str).collect();
    let mut unreachable = Vec::new();
    for i in hrw::owners(&ids, key, ids.len()) {
        let addr = &fetchers[i];
        let mut conn = match Conn::connect_with(addr, frame_key) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(fetcher = %addr, error = %e, "fetcher unreachable, trying the next");
                unreachable.push(e.to_string());
                continue;
            }
        };
        conn.set_io_timeout(silence).map_err(|e| e.to_string())?;
        conn.send(req).map_err(|e| e.to_string())?;
        loop {
            match conn.recv() {
                Ok(resp) => {
                    if on(resp)
                        .map_err(|e| format!("fetcher {addr}: {e}"))?
                        .is_some()
                    {
                        return Ok(());
                    }
                }
                Err(NetError::Remote { message, .. }) => return Err(message),
                Err(e) => return Err(format!("fetcher {addr} failed: {e}")),
            }
        }
    }
    Err(format!("no fetcher reachable: {}", unreachable.join("; ")))
}
