//! Running an ingest: pick a fetcher, relay its progress, publish the result.

use std::time::Duration;

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
    pub url: String,
    pub git_ref: String,
    pub source_id: String,
}

impl Router {
    /// Ingest through the repository's preferred fetcher (HRW on the URL),
    /// falling back to the next when one cannot be reached, then publish.
    pub fn ingest(&self, p: &IngestParams, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Vec<NsEntry>, String> {
        let r = self.ingest_inner(p, progress);
        Metrics::inc(if r.is_ok() { &self.metrics.ingests_ok } else { &self.metrics.ingests_failed });
        r
    }

    fn ingest_inner(&self, p: &IngestParams, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Vec<NsEntry>, String> {
        if self.fetchers.is_empty() {
            return Err("this router has no fetchers configured (--fetchers)".into());
        }
        let req = Request::Ingest(IngestRequest {
            kind: SourceKind::Git,
            content: ContentMode::Eager,
            url: p.url.clone(),
            git_ref: p.git_ref.clone(),
            source_id: p.source_id.clone(),
            replication: self.cluster.replication() as u16,
            nodes: self.cluster.nodes().to_vec(),
        });
        let ids: Vec<&str> = self.fetchers.iter().map(String::as_str).collect();
        let mut unreachable = Vec::new();
        for i in hrw::owners(&ids, p.url.as_bytes(), ids.len()) {
            let addr = &self.fetchers[i];
            let mut conn = match Conn::connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(fetcher = %addr, error = %e, "fetcher unreachable, trying the next");
                    unreachable.push(e.to_string());
                    continue;
                }
            };
            conn.set_io_timeout(FETCHER_SILENCE).map_err(|e| e.to_string())?;
            conn.send(&req).map_err(|e| e.to_string())?;
            loop {
                match conn.recv() {
                    Ok(Response::Progress { phase, objects, bytes }) => progress(&phase, objects, bytes),
                    Ok(Response::IngestDone(raw)) => {
                        let entries = monofs_net::ns::decode(&raw)
                            .map_err(|e| format!("fetcher {addr} sent a malformed result: {e}"))?;
                        if entries.is_empty() {
                            return Err(format!("fetcher {addr} published nothing"));
                        }
                        progress("publishing", 0, 0);
                        for entry in &entries {
                            self.publish(entry.clone())?;
                            tracing::info!(path = %entry.path, commit = %monofs_net::oid_hex(&entry.commit), "published");
                        }
                        return Ok(entries);
                    }
                    Ok(other) => return Err(format!("fetcher {addr} answered {other:?}")),
                    Err(NetError::Remote { message, .. }) => return Err(message),
                    Err(e) => return Err(format!("fetcher {addr} failed during the ingest: {e}")),
                }
            }
        }
        Err(format!("no fetcher reachable: {}", unreachable.join("; ")))
    }
}
