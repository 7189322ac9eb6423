//! File handles. A handle is a pure function of the cluster key and of where a
//! file is in the namespace and what Git object it shows, so every router of a
//! cluster mints the same handle for the same file, before and after restarts:
//! no table, no counter, no start time.
//!
//! Layout (all big-endian), each ending in a MAC of the bytes before it:
//! - namespace directory (`/`, hosts, orgs, repository roots):
//!   `[VERSION, KIND_NS] path:u64 mac:[8]` (18 bytes)
//! - Git object: `[VERSION, kind] repo:u64 path:u64 oid:[20] size:u64 mtime:i64 mac:[8]`
//!   (62 bytes); `kind` also carries the Git mode, which is all a kind needs.
//!
//! `path` hashes the full path by chaining each component onto its parent's
//! hash, so a child's handle is computed from its parent's handle and its name,
//! and identical objects at different paths get different handles (Linux keeps
//! one dentry per directory inode; shared handles would break lookups).
//!
//! The MAC is BLAKE3 keyed with the cluster key's `FILE_HANDLES` subkey,
//! truncated to `MAC_LEN` bytes. Without it a client could write any object id
//! and size into a handle and read any blob stored on the nodes, whether or not
//! it is published; with it, a client can only use handles a router gave out.

use monofs_net::key::{context, ClusterKey, KEY_LEN};
use monofs_net::Oid;
use monofs_nfs::Status;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Layout version. 1 was the layout without a MAC; its handles answer STALE.
pub const VERSION: u8 = 2;
/// Bytes of the MAC at the end of every handle: a forger must guess 2^64 values
/// per handle, one NFS round trip each.
pub const MAC_LEN: usize = 8;
const KIND_NS: u8 = 1;
const KIND_TREE: u8 = 2;
const KIND_FILE: u8 = 3;
const KIND_SYMLINK: u8 = 4;
const KIND_SUBMODULE: u8 = 5;
const KIND_EXEC: u8 = 6;

const NS_LEN: usize = 2 + 8 + MAC_LEN;
const OBJ_LEN: usize = 2 + 8 + 8 + 20 + 8 + 8 + MAC_LEN;
const _: () = assert!(
    OBJ_LEN <= monofs_nfs::NFS3_FHSIZE,
    "NFSv3 handles are at most 64 bytes"
);

/// Hash of the namespace root `/`.
pub const ROOT_PATH: u64 = 0x4d6f_6e6f_4653_0001;

/// Path hash of `name` inside the directory whose path hash is `parent`.
pub fn child_path(parent: u64, name: &[u8]) -> u64 {
    match xxh3_64_with_seed(name, parent) {
        0 => 1,
        h => h,
    }
}

/// What a Git tree entry is, from its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjKind {
    Tree,
    /// A blob with mode 100644 (or a legacy 100664, which Git reads as 100644).
    File,
    /// A blob with mode 100755.
    Exec,
    Symlink,
    Submodule,
}

impl ObjKind {
    pub fn is_file(self) -> bool {
        matches!(self, ObjKind::File | ObjKind::Exec)
    }

    fn code(self) -> u8 {
        match self {
            ObjKind::Tree => KIND_TREE,
            ObjKind::File => KIND_FILE,
            ObjKind::Exec => KIND_EXEC,
            ObjKind::Symlink => KIND_SYMLINK,
            ObjKind::Submodule => KIND_SUBMODULE,
        }
    }

    fn from_code(c: u8) -> Option<ObjKind> {
        Some(match c {
            KIND_TREE => ObjKind::Tree,
            KIND_FILE => ObjKind::File,
            KIND_EXEC => ObjKind::Exec,
            KIND_SYMLINK => ObjKind::Symlink,
            KIND_SUBMODULE => ObjKind::Submodule,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjHandle {
    pub kind: ObjKind,
    /// Path hash of the repository root this object was reached through.
    pub repo: u64,
    pub path: u64,
    pub oid: Oid,
    /// Blob size; subdirectory count for trees.
    pub size: u64,
    /// Commit time of the commit this object was reached from.
    pub mtime: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handle {
    Ns { path: u64 },
    Obj(ObjHandle),
}

/// The key of the handle MAC, derived from the cluster key.
#[derive(Clone)]
pub struct HandleKey([u8; KEY_LEN]);

impl HandleKey {
    pub fn new(cluster: &ClusterKey) -> HandleKey {
        HandleKey(cluster.derive(context::FILE_HANDLES))
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let h = blake3::keyed_hash(&self.0, body);
        h.as_bytes()[..MAC_LEN].try_into().unwrap()
    }
}

/// Never prints the key.
impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

/// Equal without an early exit, so the time taken says nothing about how many
/// leading MAC bytes a guess got right.
fn same_mac(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Handle {
    pub fn path(&self) -> u64 {
        match self {
            Handle::Ns { path } => *path,
            Handle::Obj(o) => o.path,
        }
    }

    pub fn encode(&self, key: &HandleKey) -> Vec<u8> {
        let mut v = Vec::with_capacity(OBJ_LEN);
        match self {
            Handle::Ns { path } => {
                v.extend_from_slice(&[VERSION, KIND_NS]);
                v.extend_from_slice(&path.to_be_bytes());
            }
            Handle::Obj(o) => {
                v.extend_from_slice(&[VERSION, o.kind.code()]);
                v.extend_from_slice(&o.repo.to_be_bytes());
                v.extend_from_slice(&o.path.to_be_bytes());
                v.extend_from_slice(&o.oid);
                v.extend_from_slice(&o.size.to_be_bytes());
                v.extend_from_slice(&o.mtime.to_be_bytes());
            }
        }
        let mac = key.mac(&v);
        v.extend_from_slice(&mac);
        debug_assert!(v.len() == NS_LEN || v.len() == OBJ_LEN);
        v
    }

    /// The handle, if this cluster minted it.
    ///
    /// A handle of another layout version, or whose MAC does not match, answers
    /// STALE rather than BADHANDLE: both are what a client holds after an
    /// upgrade or a cluster key change, and STALE is the error the Linux client
    /// recovers from by looking the path up again (as knfsd answers for handles
    /// it cannot resolve), while BADHANDLE only surfaces as an I/O error. A
    /// forger learns nothing from the difference. Handles of the wrong size or
    /// kind for this version cannot have come from any router: BADHANDLE.
    pub fn decode(b: &[u8], key: &HandleKey) -> Result<Handle, Status> {
        match b.first() {
            None => return Err(Status::BadHandle),
            Some(&v) if v != VERSION => return Err(Status::Stale),
            Some(_) => {}
        }
        let kind = match (b.get(1), b.len()) {
            (Some(&KIND_NS), NS_LEN) => None,
            (Some(&k), OBJ_LEN) => Some(ObjKind::from_code(k).ok_or(Status::BadHandle)?),
            _ => return Err(Status::BadHandle),
        };
        let (body, mac) = b.split_at(b.len() - MAC_LEN);
        if !same_mac(&key.mac(body), mac) {
            return Err(Status::Stale);
        }
        let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().unwrap());
        Ok(match kind {
            None => Handle::Ns { path: u64_at(2) },
            Some(kind) => Handle::Obj(ObjHandle {
                kind,
                repo: u64_at(2),
                path: u64_at(10),
                oid: body[18..38].try_into().unwrap(),
                size: u64_at(38),
                mtime: u64_at(46) as i64,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> HandleKey {
        HandleKey::new(&ClusterKey::from_bytes([b; KEY_LEN]))
    }

    fn samples() -> Vec<Handle> {
        let obj = |kind| {
            Handle::Obj(ObjHandle {
                kind,
                repo: 1,
                path: 2,
                oid: [3; 20],
                size: 4,
                mtime: -5,
            })
        };
        vec![
            Handle::Ns { path: ROOT_PATH },
            obj(ObjKind::Tree),
            obj(ObjKind::File),
            obj(ObjKind::Exec),
            obj(ObjKind::Symlink),
            obj(ObjKind::Submodule),
        ]
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        for h in samples() {
            let b = h.encode(&k);
            assert!(b.len() <= monofs_nfs::NFS3_FHSIZE);
            assert_eq!(Handle::decode(&b, &k), Ok(h));
        }
        assert_eq!(Handle::decode(&[], &k), Err(Status::BadHandle));
        assert_eq!(Handle::decode(&[VERSION], &k), Err(Status::BadHandle));
        assert_eq!(Handle::decode(&[VERSION, KIND_FILE, 0], &k), Err(Status::BadHandle));
        let mut unknown_kind = samples()[1].encode(&k);
        unknown_kind[1] = 99;
        assert_eq!(Handle::decode(&unknown_kind, &k), Err(Status::BadHandle));
    }

    #[test]
    fn old_layout_is_stale() {
        // A version 1 namespace handle: [1, KIND_NS] path, no MAC.
        let mut v1 = vec![1, KIND_NS];
        v1.extend_from_slice(&ROOT_PATH.to_be_bytes());
        assert_eq!(Handle::decode(&v1, &key(1)), Err(Status::Stale));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let k = key(1);
        for h in samples() {
            let good = h.encode(&k);
            for bit in 0..good.len() * 8 {
                let mut b = good.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                let r = Handle::decode(&b, &k);
                assert!(
                    matches!(r, Err(Status::Stale | Status::BadHandle)),
                    "bit {bit} of {h:?} gave {r:?}"
                );
            }
        }
    }

    #[test]
    fn another_clusters_handles_are_refused() {
        for h in samples() {
            assert_eq!(Handle::decode(&h.encode(&key(2)), &key(1)), Err(Status::Stale));
        }
    }

    #[test]
    fn routers_with_one_key_agree() {
        // Two routers load the same key file: the same bytes, derived separately.
        let (a, b) = (key(7), key(7));
        for h in samples() {
            assert_eq!(h.encode(&a), h.encode(&b));
            assert_eq!(Handle::decode(&h.encode(&a), &b), Ok(h));
        }
        assert_eq!(format!("{a:?}"), "HandleKey(..)");
    }

    #[test]
    fn same_name_in_different_dirs_differs() {
        let a = child_path(ROOT_PATH, b"a");
        let b = child_path(ROOT_PATH, b"b");
        assert_ne!(child_path(a, b"x"), child_path(b, b"x"));
        assert_eq!(
            child_path(a, b"x"),
            child_path(child_path(ROOT_PATH, b"a"), b"x")
        );
    }
}
