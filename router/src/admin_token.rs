//! The admin token: the bearer credential of the router's HTTP endpoints that
//! change state (ingest, refresh). Unlike the cluster key it never travels
//! between components; operators and their tools present it to routers.
//!
//! On disk: the token on one line, in a file only its owner may read. A
//! generated token is 64 hex digits (256 random bits).

use std::io;
use std::path::Path;

use monofs_net::secret::{self, SecretError};

/// Shortest token accepted from a file: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted (from a file or in an Authorization header).
pub const MAX_TOKEN_LEN: usize = 256;
/// Random bytes of a generated token.
const GENERATED_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin token file {0}")]
    File(#[from] SecretError),
    #[error("admin token file {path}: expected one line of {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} printable ASCII characters without spaces (`monofs up` writes one)")]
    Malformed { path: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A new random token from the kernel's CSPRNG.
    pub fn generate() -> io::Result<AdminToken> {
        Ok(AdminToken(secret::random_hex(GENERATED_BYTES)?))
    }

    /// Reads a token file; refuses one that group or others may read.
    pub fn load(path: &Path) -> Result<AdminToken, TokenError> {
        let text = secret::read(path, MAX_TOKEN_LEN + 2)?;
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN || t.len() > MAX_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Malformed { path: path.display().to_string() });
        }
        Ok(AdminToken(t.to_string()))
    }

    /// The token at `path`, generating and writing one (mode 0600) first if
    /// there is no such file (what `monofs up` does in its data directory).
    pub fn load_or_create(path: &Path) -> Result<AdminToken, TokenError> {
        secret::create_if_missing(path, || Ok(AdminToken::generate()?.0))?;
        AdminToken::load(path)
    }

    /// The value of an `Authorization` header carrying this token.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value carries this token. The
    /// comparison is of BLAKE3 hashes, whose equality takes the same time
    /// wherever they differ, so timing says nothing about the token.
    pub fn accepts(&self, authorization: &str) -> bool {
        let Some(given) = authorization.strip_prefix("Bearer ") else {
            return false;
        };
        let given = given.trim();
        given.len() <= MAX_TOKEN_LEN && blake3::hash(given.as_bytes()) == blake3::hash(self.0.as_bytes())
    }
}

/// Never prints the secret.
impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_and_comparison() {
        let dir = tempdir();
        let path = dir.join("admin.token");
        let t = AdminToken::load_or_create(&path).unwrap();
        assert_eq!(AdminToken::load_or_create(&path).unwrap(), t, "an existing token is kept");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(t.accepts(&t.bearer()));
        assert!(!t.accepts(&t.bearer()[..t.bearer().len() - 1]));
        assert!(!t.accepts(&t.bearer().replace("Bearer", "Basic")));
        assert!(!t.accepts(""));
        assert_ne!(AdminToken::generate().unwrap(), t);
        assert_eq!(format!("{t:?}"), "AdminToken(..)");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(AdminToken::load(&path), Err(TokenError::File(SecretError::TooOpen { .. }))));
        for bad in ["short\n", "has a space in the middle of it\n", ""] {
            let p = dir.join("bad.token");
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, bad).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(matches!(AdminToken::load(&p), Err(TokenError::Malformed { .. })), "{bad:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("monofs-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
