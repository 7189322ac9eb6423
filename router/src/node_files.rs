//! `GET /api/node-files?node_id=ID[&limit=N]`: the content keys one node holds,
//! streamed as NDJSON (one line per key, then a summary line), so a node of
//! millions of keys is listed in bounded memory. Operators use it to see what a
//! node holds before it is removed, and the tests to count replicas.

use std::io::Write;

use monofs_net::client::OwnerFilter;
use monofs_net::{hrw, keys, oid_hex};
use serde_json::json;

use crate::Router;

/// One line of the listing: what the key names, its size, and whether the
/// node is one of the key's owners under the effective membership.
fn line(key: &[u8], size: u64, owned: bool) -> serde_json::Value {
    let (kind, chunk) = match key.first() {
        Some(&keys::TREE) => ("tree", None),
        Some(&keys::BLOB) => ("blob", key.get(21..25).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
        _ => ("other", None),
    };
    let oid = key.get(1..21).map(|o| {
        let mut a = [0u8; 20];
        a.copy_from_slice(o);
        oid_hex(&a)
    });
    json!({"kind": kind, "oid": oid, "chunk": chunk, "size": size, "owned": owned})
}

/// Write the listing of `node_id` to `w` (at most `limit` key lines; 0: all).
/// Errors before the first byte is written come back as (HTTP status, message).
pub fn stream(router: &Router, node_id: &str, limit: u64, w: &mut dyn Write) -> Result<(), (u16, String)> {
    router.known_node(node_id).map_err(|e| (400, e))?;
    let nodes = router.cluster.nodes();
    let i = nodes.iter().position(|n| n.id == node_id).ok_or_else(|| (400, format!("unknown node id '{node_id}'")))?;
    let client = router.cluster.client(i).map_err(|e| (503, format!("node {node_id}: {e}")))?;
    let excluded = router.cluster.excluded();
    let effective: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).filter(|id| !excluded.contains(*id)).collect();
    let me = effective.iter().position(|id| *id == node_id);
    let rf = router.cluster.replication();
    let (mut listed, mut total, mut bytes, mut owned_keys) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = None;
    let r = client.scan_keys(&OwnerFilter::all(), &mut |key, size| {
        let owned = me.is_some_and(|m| hrw::owners(&effective, keys::placement(key), rf).contains(&m));
        total += 1;
        bytes += size;
        owned_keys += owned as u64;
        if limit == 0 || listed < limit {
            listed += 1;
            if let Err(e) = writeln!(w, "{}", line(key, size, owned)) {
                failed = Some(e);
                return false;
            }
        }
        true
    });
    if failed.is_some() {
        return Ok(()); // the client left
    }
    let summary = match r {
        Ok(()) => json!({"summary": {"node_id": node_id, "keys": total, "bytes": bytes, "owned": owned_keys,
                                     "listed": listed, "complete": true}}),
        Err(e) => json!({"summary": {"node_id": node_id, "keys": total, "bytes": bytes, "owned": owned_keys,
                                     "listed": listed, "complete": false, "error": e.to_string()}}),
    };
    let _ = writeln!(w, "{summary}");
    Ok(())
}
