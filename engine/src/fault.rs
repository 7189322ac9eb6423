//! Faults tests inject into a shard's writes. Compiled only with the
//! `fault-injection` feature, which only the engine's own tests enable: the
//! release binary has no code path that reaches it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every log write under the directory fails with ENOSPC.
    NoSpace,
    /// Every fdatasync of a log under the directory fails with EIO.
    FdatasyncFails,
}

static ACTIVE: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

/// Make `fault` happen for the logs under `db` until [`clear`].
pub fn inject(db: &Path, fault: Fault) {
    ACTIVE.lock().unwrap().push((db.to_path_buf(), fault));
}

/// Stop every fault injected for `db`.
pub fn clear(db: &Path) {
    ACTIVE.lock().unwrap().retain(|(p, _)| p != db);
}

/// The error `fault` makes an operation on `log` fail with, if injected.
pub(crate) fn check(log: &Path, fault: Fault) -> Option<std::io::Error> {
    let hit = ACTIVE.lock().unwrap().iter().any(|(p, f)| *f == fault && log.starts_with(p));
    hit.then(|| {
        std::io::Error::from_raw_os_error(match fault {
            Fault::NoSpace => libc::ENOSPC,
            Fault::FdatasyncFails => libc::EIO,
        })
    })
}
