//! File handles. A handle is a pure function of where a file is in the namespace
//! and what Git object it shows, so every router mints the same handle for the
//! same file, before and after restarts: no table, no counter, no start time.
//!
//! Layout (all big-endian):
//! - namespace directory (`/`, hosts, orgs, repository roots):
//!   `[VERSION, KIND_NS] path:u64`
//! - Git object: `[VERSION, kind] repo:u64 path:u64 oid:[20] mode:u32 size:u64 mtime:i64`
//!
//! `path` hashes the full path by chaining each component onto its parent's
//! hash, so a child's handle is computed from its parent's handle and its name,
//! and identical objects at different paths get different handles (Linux keeps
//! one dentry per directory inode; shared handles would break lookups).

use monofs_net::Oid;
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub const VERSION: u8 = 1;
const KIND_NS: u8 = 1;
const KIND_TREE: u8 = 2;
const KIND_FILE: u8 = 3;
const KIND_SYMLINK: u8 = 4;
const KIND_SUBMODULE: u8 = 5;

const NS_LEN: usize = 10;
const OBJ_LEN: usize = 58;
const _: () = assert!(OBJ_LEN <= 64, "NFSv3 handles are at most 64 bytes");

/// Hash of the namespace root `/`.
pub const ROOT_PATH: u64 = 0x4d6f_6e6f_4653_0001;

/// Path hash of `name` inside the directory whose path hash is `parent`.
pub fn child_path(parent: u64, name: &[u8]) -> u64 {
    match xxh3_64_with_seed(name, parent) {
        0 => 1,
        h => h,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjKind {
    Tree,
    File,
    Symlink,
    Submodule,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjHandle {
    pub kind: ObjKind,
    /// Path hash of the repository root this object was reached through.
    pub repo: u64,
    pub path: u64,
    pub oid: Oid,
    /// Git mode.
    pub mode: u32,
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

impl Handle {
    pub fn path(&self) -> u64 {
        match self {
            Handle::Ns { path } => *path,
            Handle::Obj(o) => o.path,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Handle::Ns { path } => {
                let mut v = vec![VERSION, KIND_NS];
                v.extend_from_slice(&path.to_be_bytes());
                v
            }
            Handle::Obj(o) => {
                let kind = match o.kind {
                    ObjKind::Tree => KIND_TREE,
                    ObjKind::File => KIND_FILE,
                    ObjKind::Symlink => KIND_SYMLINK,
                    ObjKind::Submodule => KIND_SUBMODULE,
                };
                let mut v = Vec::with_capacity(OBJ_LEN);
                v.extend_from_slice(&[VERSION, kind]);
                v.extend_from_slice(&o.repo.to_be_bytes());
                v.extend_from_slice(&o.path.to_be_bytes());
                v.extend_from_slice(&o.oid);
                v.extend_from_slice(&o.mode.to_be_bytes());
                v.extend_from_slice(&o.size.to_be_bytes());
                v.extend_from_slice(&o.mtime.to_be_bytes());
                debug_assert_eq!(v.len(), OBJ_LEN);
                v
            }
        }
    }

    /// None for anything this router did not mint (the NFS layer answers BADHANDLE).
    pub fn decode(b: &[u8]) -> Option<Handle> {
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        if b.len() < 2 || b[0] != VERSION {
            return None;
        }
        let kind = match (b[1], b.len()) {
            (KIND_NS, NS_LEN) => return Some(Handle::Ns { path: u64_at(2) }),
            (KIND_TREE, OBJ_LEN) => ObjKind::Tree,
            (KIND_FILE, OBJ_LEN) => ObjKind::File,
            (KIND_SYMLINK, OBJ_LEN) => ObjKind::Symlink,
            (KIND_SUBMODULE, OBJ_LEN) => ObjKind::Submodule,
            _ => return None,
        };
        Some(Handle::Obj(ObjHandle {
            kind,
            repo: u64_at(2),
            path: u64_at(10),
            oid: b[18..38].try_into().unwrap(),
            mode: u32::from_be_bytes(b[38..42].try_into().unwrap()),
            size: u64_at(42),
            mtime: i64::from_be_bytes(b[50..58].try_into().unwrap()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Handle::Obj(ObjHandle {
            kind: ObjKind::Symlink,
            repo: 1,
            path: 2,
            oid: [3; 20],
            mode: 0o120000,
            size: 4,
            mtime: -5,
        });
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        let n = Handle::Ns { path: ROOT_PATH };
        assert_eq!(Handle::decode(&n.encode()), Some(n));
        assert_eq!(Handle::decode(&[]), None);
        assert_eq!(Handle::decode(&[VERSION, KIND_FILE, 0]), None);
        assert_eq!(Handle::decode(&[9, KIND_NS, 0, 0, 0, 0, 0, 0, 0, 0]), None);
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
