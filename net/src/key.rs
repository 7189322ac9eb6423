//! The cluster key: 32 secret bytes every router, node and fetcher of one cluster share.
//! It is the only credential inside the cluster. Each use gets its own subkey through
//! `derive` (BLAKE3's key derivation with a context string), so a subkey learned from one
//! use (say, a file-handle MAC) says nothing about another (frame authentication).
//!
//! On disk: 64 lowercase hex digits and a newline, in a file only its owner may read.

use std::fmt;
use std::io;
use std::path::Path;

use crate::secret::{self, SecretError};

/// Bytes of a cluster key.
pub const KEY_LEN: usize = 32;

/// Context strings for `ClusterKey::derive`. One per use; never reuse one for another.
pub mod context {
    /// Authentication of router/node/fetcher frames (`net::auth`).
    pub const FRAMES: &str = "monofs 2026 net frame authentication v1";
    /// The MAC inside NFS file handles (router).
    pub const FILE_HANDLES: &str = "monofs 2026 nfs file handle mac v1";
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cluster key file {0}")]
    File(#[from] SecretError),
    #[error("cluster key file {path}: expected 64 hex digits (as written by `monofs up` or `monofs admin gen-key`)")]
    Malformed { path: String },
}

impl ClusterKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> ClusterKey {
        ClusterKey(b)
    }

    /// A new random key from the kernel's CSPRNG.
    pub fn generate() -> io::Result<ClusterKey> {
        Ok(Self::parse_hex(&secret::random_hex(KEY_LEN)?).expect("random_hex gives 2 digits a byte"))
    }

    /// Reads a key file; refuses one that group or others may read.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        // A few bytes beyond the hex digits and a newline tell a longer file apart.
        let text = secret::read(path, 2 * KEY_LEN + 8)?;
        Self::parse_hex(text.trim()).ok_or(KeyError::Malformed { path: path.display().to_string() })
    }

    /// Writes the key to a new file with mode 0600; fails if the file exists.
    pub fn write_new(&self, path: &Path) -> io::Result<()> {
        secret::write_new(path, &self.hex())
    }

    /// The key at `path`, generating and writing one first if there is no such file
    /// (what `monofs up` does in its data directory).
    pub fn load_or_create(path: &Path) -> Result<ClusterKey, KeyError> {
        secret::create_if_missing(path, || Ok(ClusterKey::generate()?.hex()))?;
        ClusterKey::load(path)
    }

    /// The subkey for one use, named by a `context` string.
    pub fn derive(&self, context: &str) -> [u8; KEY_LEN] {
        blake3::derive_key(context, &self.0)
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn parse_hex(s: &str) -> Option<ClusterKey> {
        if s.len() != 2 * KEY_LEN || !s.is_ascii() {
            return None;
        }
        let mut b = [0u8; KEY_LEN];
        for (i, o) in b.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterKey(b))
    }
}

/// Never prints the secret.
impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_and_permissions() {
        let dir = std::env::temp_dir().join(format!("monofs-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.key");
        let k = ClusterKey::load_or_create(&path).unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap(), k);
        assert_eq!(ClusterKey::load_or_create(&path).unwrap(), k, "an existing key is kept");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(ClusterKey::load(&path), Err(KeyError::File(SecretError::TooOpen { .. }))));
        std::fs::write(dir.join("bad.key"), "zz\n").unwrap();
        std::fs::set_permissions(dir.join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(ClusterKey::load(&dir.join("bad.key")), Err(KeyError::Malformed { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subkeys_differ_by_context() {
        let k = ClusterKey::from_bytes([7; KEY_LEN]);
        assert_ne!(k.derive(context::FRAMES), k.derive(context::FILE_HANDLES));
        assert_eq!(k.derive(context::FRAMES), k.derive(context::FRAMES));
        assert_eq!(format!("{k:?}"), "ClusterKey(..)");
    }
}
