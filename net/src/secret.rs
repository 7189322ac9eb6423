//! Files holding secrets (the cluster key, a router's admin token): created with mode
//! 0600 and never overwritten, refused when group or others may read them, read with a
//! bound, generated from the kernel's CSPRNG.

use std::io::{self, Read, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} can be read by group or others (mode {mode:o}); chmod 600 it")]
    TooOpen { path: String, mode: u32 },
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

/// The text of a secret file (at most `max` bytes are read); refuses a file that group
/// or others may read.
pub fn read(path: &Path, max: usize) -> Result<String, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let p = path.display().to_string();
    let io_err = |source| SecretError::Io { path: p.clone(), source };
    let mode = std::fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen { path: p, mode });
    }
    let mut text = String::new();
    std::fs::File::open(path).and_then(|f| f.take(max as u64).read_to_string(&mut text)).map_err(io_err)?;
    Ok(text)
}

/// Writes `text` and a newline to a new file with mode 0600; fails if the file exists.
pub fn write_new(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()
}

/// Writes `make()`'s text to `path` if there is no such file yet (another process that
/// created it first wins); the caller then reads the file.
pub fn create_if_missing(path: &Path, make: impl FnOnce() -> io::Result<String>) -> Result<(), SecretError> {
    if path.exists() {
        return Ok(());
    }
    let io_err = |source| SecretError::Io { path: path.display().to_string(), source };
    match write_new(path, &make().map_err(io_err)?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(e)),
    }
}
