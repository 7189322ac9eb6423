//! Keys of the records nodes store, and the placement key each is placed by.

use crate::{Oid, CHUNK_SIZE};

pub const TREE: u8 = b'T';
pub const BLOB: u8 = b'B';
pub const NAMESPACE: u8 = b'N';
/// The cluster state (`state::ClusterState`): not placed by HRW but held by
/// every configured node, and written with MERGE_STATE only.
pub const STATE: u8 = b'S';

/// Placement key of the namespace record.
pub const NS_PLACEMENT: &[u8] = b"ns";

pub fn tree(oid: &Oid) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.push(TREE);
    k.extend_from_slice(oid);
    k
}

pub fn blob_chunk(oid: &Oid, chunk: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(BLOB);
    k.extend_from_slice(oid);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

pub fn namespace() -> Vec<u8> {
    let mut k = vec![NAMESPACE];
    k.extend_from_slice(NS_PLACEMENT);
    k
}

pub fn cluster_state() -> Vec<u8> {
    vec![STATE, b's', b't', b'a', b't', b'e']
}

/// Whether `key` is the cluster state, which every node holds (no placement)
/// and which only MERGE_STATE may change.
pub fn is_cluster_state(key: &[u8]) -> bool {
    key.first() == Some(&STATE)
}

/// The bytes HRW places a key by: the object id for trees, the object id and
/// chunk number for blob chunks (so a big file's chunks spread over the nodes
/// and are read from all of them at once), the key itself otherwise.
pub fn placement(key: &[u8]) -> &[u8] {
    match key.first() {
        Some(&TREE) if key.len() >= 21 => &key[1..21],
        Some(&BLOB) if key.len() >= 25 => &key[1..25],
        Some(&NAMESPACE) => &key[1..],
        _ => key,
    }
}

/// Number of chunks a blob of `size` bytes is stored in (an empty blob has none).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements() {
        let oid = [7u8; 20];
        assert_ne!(placement(&blob_chunk(&oid, 0)), placement(&blob_chunk(&oid, 9)));
        assert_eq!(placement(&blob_chunk(&oid, 3)), &blob_chunk(&oid, 3)[1..]);
        assert_eq!(placement(&tree(&oid)), &oid[..]);
        assert_eq!(placement(&namespace()), NS_PLACEMENT);
        assert!(is_cluster_state(&cluster_state()));
        assert!(!is_cluster_state(&namespace()));
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64 + 1), 2);
    }
}
