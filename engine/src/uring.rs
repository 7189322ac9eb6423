//! Whether io_uring can be used here, and if not, one line saying why and how to fix it.

/// glommio refuses to start below this RLIMIT_MEMLOCK.
const MIN_MEMLOCK: u64 = 512 << 10;
/// What we try to raise RLIMIT_MEMLOCK to (rings and registered I/O buffers).
const WANT_MEMLOCK: u64 = 64 << 20;
/// Oldest kernel glommio supports.
const MIN_KERNEL: (u32, u32) = (5, 8);

fn sysctl_io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?.trim().parse().ok()
}

fn kernel_version() -> Option<(u32, u32, String)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim().to_string();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor, release))
}

fn seccomp_mode() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Seccomp:")).and_then(|v| v.trim().parse().ok())
}

#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
fn getrlimit_memlock() -> Result<(u64, u64), String> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: rl is a valid rlimit for the kernel to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return Err(format!("getrlimit(RLIMIT_MEMLOCK): {}", std::io::Error::last_os_error()));
    }
    Ok((rl.rlim_cur as u64, rl.rlim_max as u64))
}

fn setrlimit_memlock(cur: u64, max: u64) -> bool {
    let rl = libc::rlimit { rlim_cur: cur as libc::rlim_t, rlim_max: max as libc::rlim_t };
    // SAFETY: rl is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) == 0 }
}

/// Raise RLIMIT_MEMLOCK towards WANT_MEMLOCK: the soft limit up to the hard one,
/// and the hard one too if we are privileged. Returns the resulting soft limit.
#[allow(clippy::unnecessary_cast)]
fn raise_memlock() -> Result<u64, String> {
    let (cur, max) = getrlimit_memlock()?;
    let infinite = libc::RLIM_INFINITY as u64;
    if cur == infinite || cur >= WANT_MEMLOCK {
        return Ok(cur);
    }
    if max == infinite || max >= WANT_MEMLOCK {
        setrlimit_memlock(WANT_MEMLOCK, max);
    } else if !setrlimit_memlock(WANT_MEMLOCK, WANT_MEMLOCK) {
        setrlimit_memlock(max, max);
    }
    Ok(getrlimit_memlock()?.0)
}

/// Create (and close) a tiny ring. Ok, or the errno.
fn try_io_uring_setup() -> Result<(), std::io::Error> {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u32; 30];
    // SAFETY: params is a zeroed io_uring_params the kernel may write into.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is the ring descriptor just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Ok when io_uring is usable by this process; otherwise one line naming the
/// cause and the fix.
pub fn check_io_uring() -> Result<(), String> {
    if let Some((major, minor, release)) = kernel_version() {
        if (major, minor) < MIN_KERNEL {
            return Err(format!(
                "io_uring unusable: kernel {release} is too old (MonoFS needs Linux >= {}.{}); upgrade the kernel",
                MIN_KERNEL.0, MIN_KERNEL.1
            ));
        }
    }
    let memlock = raise_memlock()?;
    if memlock < MIN_MEMLOCK {
        return Err(format!(
            "io_uring unusable: RLIMIT_MEMLOCK is {memlock} bytes (need >= {MIN_MEMLOCK}) and could not be raised; \
             run `ulimit -l unlimited` as root, set `memlock` in /etc/security/limits.conf, \
             LimitMEMLOCK=infinity in the systemd unit, or `--ulimit memlock=-1` for docker"
        ));
    }
    let err = match try_io_uring_setup() {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let disabled = sysctl_io_uring_disabled().unwrap_or(0);
    let seccomp = seccomp_mode().unwrap_or(0);
    let errno = err.raw_os_error().unwrap_or(0);
    Err(match errno {
        libc::EPERM if disabled != 0 => format!(
            "io_uring unusable: kernel.io_uring_disabled = {disabled} ({err}); \
             run `sysctl -w kernel.io_uring_disabled=0` (or, for value 1, add this user to the group in kernel.io_uring_group)"
        ),
        libc::EPERM | libc::ENOSYS | libc::EACCES if seccomp == 2 => format!(
            "io_uring unusable: a seccomp filter blocks io_uring_setup ({err}); \
             allow io_uring_setup/io_uring_enter/io_uring_register, e.g. docker/podman `--security-opt seccomp=unconfined`"
        ),
        libc::ENOSYS => format!(
            "io_uring unusable: io_uring_setup is not implemented ({err}); \
             the kernel was built without CONFIG_IO_URING or is too old; use a kernel >= {}.{} with io_uring",
            MIN_KERNEL.0, MIN_KERNEL.1
        ),
        libc::ENOMEM => format!(
            "io_uring unusable: io_uring_setup ran out of locked memory ({err}, RLIMIT_MEMLOCK {memlock} bytes); \
             raise it with `ulimit -l unlimited` or LimitMEMLOCK=infinity"
        ),
        libc::EPERM => format!(
            "io_uring unusable: io_uring_setup denied ({err}); check kernel.io_uring_disabled, \
             seccomp and LSM (SELinux/AppArmor) policy for io_uring"
        ),
        _ => format!("io_uring unusable: io_uring_setup failed: {err}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn usable_here() {
        assert_eq!(super::check_io_uring(), Ok(()));
    }
}
