//! The descriptor limit: every connection is a descriptor, and a soft RLIMIT_NOFILE of
//! 1024 (a common default) would refuse clients long before the connection caps do.

use std::io;

/// Raises the soft RLIMIT_NOFILE to at least `wanted` (never above the hard limit).
/// Returns the soft limit before and after.
pub fn raise_nofile_limit(wanted: u64) -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: rl is a valid rlimit for the kernel to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before: u64 = rl.rlim_cur;
    let target = wanted.min(rl.rlim_max);
    if before >= target {
        return Ok((before, before));
    }
    let new = libc::rlimit { rlim_cur: target, rlim_max: rl.rlim_max };
    // SAFETY: new is a valid rlimit within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, target))
}
