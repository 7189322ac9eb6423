//! Mode-bit checks with a call's effective identity, as Linux knfsd makes them
//! (fs/nfsd/vfs.c nfsd_permission → generic_permission): the owner class if the uid
//! owns the file, else the group class if any of the caller's groups is the file's, else
//! other. uid 0 (after squashing) has the capabilities knfsd keeps for it
//! (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): it reads anything, searches any directory and
//! executes a file with any execute bit.

use crate::exports::Cred;
use crate::types::{access, Fattr, Ftype};

const MAY_READ: u32 = 0o4;
const MAY_WRITE: u32 = 0o2;
const MAY_EXEC: u32 = 0o1;

/// Whether `cred` has every one of the `want` bits (MAY_*) on a file with `attr`.
fn permits(attr: &Fattr, cred: &Cred, want: u32) -> bool {
    if cred.uid == 0 {
        return want & MAY_EXEC == 0 || attr.ftype == Ftype::Dir || attr.mode & 0o111 != 0;
    }
    let class = if attr.uid == cred.uid {
        attr.mode >> 6
    } else if cred.in_group(attr.gid) {
        attr.mode >> 3
    } else {
        attr.mode
    };
    class & want == want
}

/// READ and READDIR: knfsd opens with NFSD_MAY_OWNER_OVERRIDE, so the owner reads
/// whatever the mode says, and a regular file that may be executed may be read (the
/// client must page a 0111 binary in to run it).
pub fn may_read(attr: &Fattr, cred: &Cred) -> bool {
    attr.uid == cred.uid
        || permits(attr, cred, MAY_READ)
        || (attr.ftype == Ftype::Reg && permits(attr, cred, MAY_EXEC))
}

/// LOOKUP: search permission on the directory (no owner override).
pub fn may_search(dir: &Fattr, cred: &Cred) -> bool {
    permits(dir, cred, MAY_EXEC)
}

/// ACCESS: the bits `cred` holds by mode alone (knfsd's nfsd_access asks without owner
/// override). The modifying bits need a writable export too.
pub fn access_bits(attr: &Fattr, cred: &Cred, writable: bool) -> u32 {
    let mut bits = 0;
    if permits(attr, cred, MAY_READ) {
        bits |= access::READ;
    }
    if permits(attr, cred, MAY_EXEC) {
        bits |= if attr.ftype == Ftype::Dir { access::LOOKUP } else { access::EXECUTE };
    }
    if writable {
        if attr.ftype == Ftype::Dir {
            // Changing a directory's entries needs search permission as well.
            if permits(attr, cred, MAY_WRITE | MAY_EXEC) {
                bits |= access::MODIFY | access::EXTEND | access::DELETE;
            }
        } else if permits(attr, cred, MAY_WRITE) {
            bits |= access::MODIFY | access::EXTEND;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Time;

    fn file(ftype: Ftype, mode: u32, uid: u32, gid: u32) -> Fattr {
        let t = Time::default();
        Fattr { ftype, mode, nlink: 1, uid, gid, size: 0, used: 0, rdev: (0, 0), fsid: 1, fileid: 2, atime: t, mtime: t, ctime: t }
    }

    fn cred(uid: u32, gid: u32, gids: &[u32]) -> Cred {
        Cred { uid, gid, gids: gids.to_vec() }
    }

    const ALL: u32 = access::READ | access::LOOKUP | access::MODIFY | access::EXTEND | access::DELETE | access::EXECUTE;

    #[test]
    fn classes_are_exclusive() {
        // Owner bits deny the owner even though other bits allow: generic_permission.
        let f = file(Ftype::Reg, 0o066, 1000, 100);
        assert_eq!(access_bits(&f, &cred(1000, 100, &[]), true), 0);
        assert_eq!(access_bits(&f, &cred(2000, 100, &[]), true), access::READ | access::MODIFY | access::EXTEND);
        assert_eq!(access_bits(&f, &cred(2000, 1, &[7, 100]), false), access::READ, "supplementary group");
        assert_eq!(access_bits(&f, &cred(2000, 1, &[]), false), access::READ, "other");
        let f = file(Ftype::Reg, 0o640, 1000, 100);
        assert_eq!(access_bits(&f, &cred(2000, 1, &[]), false), 0);
    }

    #[test]
    fn git_modes_serve_everyone() {
        let anon = cred(65534, 65534, &[]);
        let blob = file(Ftype::Reg, 0o644, 0, 0);
        let exe = file(Ftype::Reg, 0o755, 0, 0);
        let dir = file(Ftype::Dir, 0o755, 0, 0);
        assert_eq!(access_bits(&blob, &anon, false), access::READ);
        assert_eq!(access_bits(&exe, &anon, false), access::READ | access::EXECUTE);
        assert_eq!(access_bits(&dir, &anon, false), access::READ | access::LOOKUP);
        assert!(may_read(&blob, &anon) && may_read(&dir, &anon) && may_search(&dir, &anon));
    }

    #[test]
    fn root_overrides_but_not_for_execute() {
        let root = cred(0, 0, &[]);
        let f = file(Ftype::Reg, 0o000, 5, 5);
        assert_eq!(access_bits(&f, &root, true), access::READ | access::MODIFY | access::EXTEND);
        assert!(may_read(&f, &root));
        let x = file(Ftype::Reg, 0o001, 5, 5);
        assert_eq!(access_bits(&x, &root, false), access::READ | access::EXECUTE);
        let d = file(Ftype::Dir, 0o000, 5, 5);
        assert_eq!(access_bits(&d, &root, true), ALL & !access::EXECUTE);
        assert!(may_search(&d, &root));
    }

    #[test]
    fn read_overrides() {
        // The owner reads a 0000 file through READ, but ACCESS does not grant it.
        let f = file(Ftype::Reg, 0o000, 1000, 100);
        let owner = cred(1000, 100, &[]);
        assert!(may_read(&f, &owner));
        assert_eq!(access_bits(&f, &owner, false), 0);
        assert!(!may_read(&f, &cred(1001, 100, &[])));
        // Execute-only regular files may be read (to be run), directories may not be listed.
        assert!(may_read(&file(Ftype::Reg, 0o111, 1, 1), &cred(2, 2, &[])));
        assert!(!may_read(&file(Ftype::Dir, 0o111, 1, 1), &cred(2, 2, &[])));
        assert!(may_search(&file(Ftype::Dir, 0o111, 1, 1), &cred(2, 2, &[])));
        assert!(!may_search(&file(Ftype::Dir, 0o700, 1, 1), &cred(2, 2, &[])));
    }

    #[test]
    fn read_only_exports_grant_no_change() {
        let f = file(Ftype::Dir, 0o777, 1, 1);
        assert_eq!(access_bits(&f, &cred(1, 1, &[]), false), access::READ | access::LOOKUP);
        assert_eq!(access_bits(&f, &cred(1, 1, &[]), true), ALL & !access::EXECUTE);
    }
}
