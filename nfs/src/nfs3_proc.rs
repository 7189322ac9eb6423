//! NFSv3 procedure semantics (RFC 1813 §3.3): what to ask the backend and what to answer.
//! Wire sizes come from `nfs3_xdr`; no bytes are read or written here.

use crate::backend::Backend;
use crate::exports::Cred;
use crate::limits::{Limits, IO_MULTIPLE, MAX_FILE_SIZE, NFS3_FHSIZE, NFS3_MAXNAMLEN, NFS3_MAXPATHLEN, READDIR_BACKEND_PAGE};
use crate::nfs3_xdr::*;
use crate::permission;
use crate::types::*;

/// PATHCONF: the namespace has no hard links beyond the one name.
const PATHCONF_LINKMAX: u32 = 1;
/// FSINFO time_delta: we keep nanosecond timestamps.
const TIME_DELTA: Time = Time { seconds: 0, nseconds: 1 };
/// FSINFO properties: symlinks, homogeneous PATHCONF, settable times (no hard links).
const FS_PROPERTIES: u32 = FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME;

/// Who is calling, as the export rules admitted them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The identity after squashing.
    pub cred: Cred,
    /// `rw` export; otherwise every mutating procedure answers ROFS.
    pub writable: bool,
}

pub fn run(b: &dyn Backend, limits: &Limits, caller: &Caller, call: Nfs3Call) -> Nfs3Reply {
    if !caller.writable && mutates(&call) {
        // knfsd: nfsd_permission answers nfserr_rofs for a write on a read-only export.
        return refuse(&call, Status::Rofs);
    }
    let cred = &caller.cred;
    match call {
        Nfs3Call::Null => Nfs3Reply::Null,
        Nfs3Call::Getattr(fh) => Nfs3Reply::Getattr(sane(b.getattr(&fh))),
        Nfs3Call::Setattr(args) => match sane(b.setattr(&args)) {
            Ok(attr) => Nfs3Reply::Setattr(Status::Ok, Some(attr)),
            Err(s) => Nfs3Reply::Setattr(s, None),
        },
        Nfs3Call::Lookup(args) => lookup(b, cred, args),
        Nfs3Call::Access(fh, requested) => match sane(b.access(&fh, requested)) {
            Ok((attr, bits)) => {
                let bits = bits & permission::access_bits(&attr, cred, caller.writable);
                Nfs3Reply::Access(Ok(bits), Some(attr))
            }
            Err(s) => Nfs3Reply::Access(Err(s), None),
        },
        // No mode check: knfsd's nfsd_readlink verifies the handle with NFSD_MAY_NOP, and
        // a symlink's target is no secret from whoever may look the link up.
        Nfs3Call::Readlink(fh) => {
            let res = sane(b.readlink(&fh));
            Nfs3Reply::Readlink(res, b.getattr(&fh).ok())
        }
        Nfs3Call::Read { file, offset, count } => read(b, limits, cred, &file, offset, count),
        Nfs3Call::Write(args) => match sane(b.write(&args)) {
            Ok(w) => Nfs3Reply::Write(Ok(w), b.getattr(&args.file).ok()),
            Err(s) => Nfs3Reply::Write(Err(s), None),
        },
        Nfs3Call::Create(args) => {
            let res = check_name(&args.name).and_then(|_| b.create(&args));
            created(b, &args.dir, res)
        }
        Nfs3Call::Mkdir(args) => {
            let res = check_name(&args.name).and_then(|_| b.mkdir(&args));
            created(b, &args.dir, res)
        }
        Nfs3Call::Symlink(args) => {
            let res = check_name(&args.name).and_then(|_| check_target(&args.target)).and_then(|_| b.symlink(&args));
            created(b, &args.dir, res)
        }
        Nfs3Call::Mknod(where_, what) => {
            let res = check_name(&where_.name).and_then(|_| match what {
                // RFC 1813 §3.3.11: regular files, directories and symlinks have their own procedures.
                None => Err(Status::BadType),
                Some(what) => b.mknod(&MknodArgs { dir: where_.dir.clone(), name: where_.name.clone(), what }),
            });
            created(b, &where_.dir, res)
        }
        Nfs3Call::Remove(args) => removed(b, &args, check_name(&args.name).and_then(|_| b.remove(&args))),
        Nfs3Call::Rmdir(args) => removed(b, &args, check_name(&args.name).and_then(|_| b.rmdir(&args))),
        Nfs3Call::Rename(args) => {
            let res = check_name(&args.from.name)
                .and_then(|_| check_name(&args.to.name))
                .and_then(|_| b.rename(&args));
            match sane(res) {
                Ok(()) => Nfs3Reply::Rename(Status::Ok, b.getattr(&args.from.dir).ok(), b.getattr(&args.to.dir).ok()),
                Err(s) => Nfs3Reply::Rename(s, None, None),
            }
        }
        Nfs3Call::Link(args) => match sane(check_name(&args.link.name).and_then(|_| b.link(&args))) {
            Ok(()) => Nfs3Reply::Link(Status::Ok, b.getattr(&args.file).ok(), b.getattr(&args.link.dir).ok()),
            Err(s) => Nfs3Reply::Link(s, None, None),
        },
        Nfs3Call::Readdir(args) => {
            let (res, attr) = list_dir(b, limits, cred, &args, false);
            Nfs3Reply::Readdir(res, attr)
        }
        Nfs3Call::Readdirplus(args) => {
            let (res, attr) = list_dir(b, limits, cred, &args, true);
            Nfs3Reply::Readdirplus(res, attr)
        }
        Nfs3Call::Fsstat(fh) => {
            let res = sane(b.fsstat(&fh));
            Nfs3Reply::Fsstat(res, b.getattr(&fh).ok())
        }
        Nfs3Call::Fsinfo(fh) => match sane(b.getattr(&fh)) {
            Ok(attr) => Nfs3Reply::Fsinfo(Ok(fsinfo(limits)), Some(attr)),
            Err(s) => Nfs3Reply::Fsinfo(Err(s), None),
        },
        Nfs3Call::Pathconf(fh) => match sane(b.getattr(&fh)) {
            Ok(attr) => Nfs3Reply::Pathconf(Ok(pathconf()), Some(attr)),
            Err(s) => Nfs3Reply::Pathconf(Err(s), None),
        },
        Nfs3Call::Commit(args) => match sane(b.commit(&args)) {
            Ok(verf) => Nfs3Reply::Commit(Ok(verf), b.getattr(&args.file).ok()),
            Err(s) => Nfs3Reply::Commit(Err(s), None),
        },
    }
}

/// Procedures that change the namespace or a file's contents or attributes.
fn mutates(call: &Nfs3Call) -> bool {
    matches!(
        call,
        Nfs3Call::Setattr(_)
            | Nfs3Call::Write(_)
            | Nfs3Call::Create(_)
            | Nfs3Call::Mkdir(_)
            | Nfs3Call::Symlink(_)
            // MKNOD of a type it cannot make is BADTYPE first, as in knfsd.
            | Nfs3Call::Mknod(_, Some(_))
            | Nfs3Call::Remove(_)
            | Nfs3Call::Rmdir(_)
            | Nfs3Call::Rename(_)
            | Nfs3Call::Link(_)
            | Nfs3Call::Commit(_)
    )
}

/// The reply to `call` failing with `s` before the backend was asked (no attributes).
pub fn refuse(call: &Nfs3Call, s: Status) -> Nfs3Reply {
    match call {
        Nfs3Call::Null => Nfs3Reply::Null,
        Nfs3Call::Getattr(_) => Nfs3Reply::Getattr(Err(s)),
        Nfs3Call::Setattr(_) => Nfs3Reply::Setattr(s, None),
        Nfs3Call::Lookup(_) => Nfs3Reply::Lookup(Err(s), None),
        Nfs3Call::Access(..) => Nfs3Reply::Access(Err(s), None),
        Nfs3Call::Readlink(_) => Nfs3Reply::Readlink(Err(s), None),
        Nfs3Call::Read { .. } => Nfs3Reply::Read(Err(s), None),
        Nfs3Call::Write(_) => Nfs3Reply::Write(Err(s), None),
        Nfs3Call::Create(_) | Nfs3Call::Mkdir(_) | Nfs3Call::Symlink(_) | Nfs3Call::Mknod(..) => {
            Nfs3Reply::Create(Err(s), None)
        }
        Nfs3Call::Remove(_) | Nfs3Call::Rmdir(_) => Nfs3Reply::Remove(s, None),
        Nfs3Call::Rename(_) => Nfs3Reply::Rename(s, None, None),
        Nfs3Call::Link(_) => Nfs3Reply::Link(s, None, None),
        Nfs3Call::Readdir(_) => Nfs3Reply::Readdir(Err(s), None),
        Nfs3Call::Readdirplus(_) => Nfs3Reply::Readdirplus(Err(s), None),
        Nfs3Call::Fsstat(_) => Nfs3Reply::Fsstat(Err(s), None),
        Nfs3Call::Fsinfo(_) => Nfs3Reply::Fsinfo(Err(s), None),
        Nfs3Call::Pathconf(_) => Nfs3Reply::Pathconf(Err(s), None),
        Nfs3Call::Commit(_) => Nfs3Reply::Commit(Err(s), None),
    }
}

/// An `Err(Status::Ok)` from a backend would encode as success with no body: a broken
/// reply. Turn it into SERVERFAULT.
fn sane<T>(r: Result<T, Status>) -> Result<T, Status> {
    match r {
        Err(Status::Ok) => Err(Status::ServerFault),
        other => other,
    }
}

/// Handles the backend hands out must fit the wire type.
fn sane_fh(fh: &[u8]) -> Result<(), Status> {
    if fh.len() > NFS3_FHSIZE {
        tracing::warn!(len = fh.len(), "backend returned an oversized file handle");
        return Err(Status::ServerFault);
    }
    Ok(())
}

/// Names are single path components of bounded length.
fn check_name(name: &[u8]) -> Result<(), Status> {
    if name.len() > NFS3_MAXNAMLEN {
        return Err(Status::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Status::Inval);
    }
    Ok(())
}

/// Symlink targets are paths of bounded length.
fn check_target(target: &[u8]) -> Result<(), Status> {
    if target.len() > NFS3_MAXPATHLEN {
        return Err(Status::NameTooLong);
    }
    Ok(())
}

fn lookup(b: &dyn Backend, cred: &Cred, args: DirOpArgs) -> Nfs3Reply {
    let dir_attr = b.getattr(&args.dir).ok();
    if dir_attr.as_ref().is_some_and(|a| !permission::may_search(a, cred)) {
        return Nfs3Reply::Lookup(Err(Status::Acces), dir_attr);
    }
    let res = check_name(&args.name)
        .and_then(|_| b.lookup(&args.dir, &args.name))
        .and_then(|(fh, attr)| sane_fh(&fh).map(|_| (fh, Some(attr))));
    Nfs3Reply::Lookup(sane(res), dir_attr)
}

/// The object's attributes if `allowed` grants `cred` access to it; they double as the
/// reply's post-op attributes, which a read does not change.
fn checked_attr(
    b: &dyn Backend,
    fh: &[u8],
    cred: &Cred,
    allowed: fn(&Fattr, &Cred) -> bool,
) -> Result<Fattr, (Status, PostOp)> {
    match sane(b.getattr(fh)) {
        Ok(attr) if allowed(&attr, cred) => Ok(attr),
        Ok(attr) => Err((Status::Acces, Some(attr))),
        Err(s) => Err((s, None)),
    }
}

fn list_dir(b: &dyn Backend, limits: &Limits, cred: &Cred, args: &ReaddirArgs, plus: bool) -> (Result<DirList, Status>, PostOp) {
    match checked_attr(b, &args.dir, cred, permission::may_read) {
        Ok(attr) => (fill_dir(b, limits, args, plus), Some(attr)),
        Err((s, attr)) => (Err(s), attr),
    }
}

fn read(b: &dyn Backend, limits: &Limits, cred: &Cred, fh: &[u8], offset: u64, count: u32) -> Nfs3Reply {
    let attr = match checked_attr(b, fh, cred, permission::may_read) {
        Ok(attr) => attr,
        Err((s, attr)) => return Nfs3Reply::Read(Err(s), attr),
    };
    // Clients learn rtmax from FSINFO; a larger request is served short, not refused.
    let count = count.min(limits.max_io);
    let res = sane(b.read(fh, offset, count)).map(|(mut data, eof)| {
        if data.len() > count as usize {
            tracing::warn!(got = data.len(), count, "backend read returned more than asked");
            data.truncate(count as usize);
            (data, false)
        } else {
            (data, eof)
        }
    });
    Nfs3Reply::Read(res, Some(attr))
}

fn created(b: &dyn Backend, dir: &[u8], res: Result<(Fh, Fattr), Status>) -> Nfs3Reply {
    let res = sane(res).and_then(|(fh, attr)| sane_fh(&fh).map(|_| (fh, Some(attr))));
    match res {
        Ok(obj) => Nfs3Reply::Create(Ok(obj), b.getattr(dir).ok()),
        Err(s) => Nfs3Reply::Create(Err(s), None),
    }
}

fn removed(b: &dyn Backend, args: &DirOpArgs, res: Result<(), Status>) -> Nfs3Reply {
    match sane(res) {
        Ok(()) => Nfs3Reply::Remove(Status::Ok, b.getattr(&args.dir).ok()),
        Err(s) => Nfs3Reply::Remove(s, None),
    }
}

fn fsinfo(limits: &Limits) -> FsInfo {
    FsInfo {
        rtmax: limits.max_io,
        rtpref: limits.max_io,
        rtmult: IO_MULTIPLE,
        wtmax: limits.max_io,
        wtpref: limits.max_io,
        wtmult: IO_MULTIPLE,
        dtpref: limits.max_io,
        maxfilesize: MAX_FILE_SIZE,
        time_delta: TIME_DELTA,
        properties: FS_PROPERTIES,
    }
}

fn pathconf() -> PathConf {
    PathConf {
        linkmax: PATHCONF_LINKMAX,
        name_max: NFS3_MAXNAMLEN as u32,
        no_trunc: true,
        chown_restricted: true,
        case_insensitive: false,
        case_preserving: true,
    }
}

/// READDIR / READDIRPLUS: pull backend pages after the client's cookie and keep every
/// entry that still fits the client's byte limits. The reply stops before the first entry
/// that does not fit (eof=false), so the client resumes from the last cookie sent and no
/// entry is skipped or repeated.
fn fill_dir(b: &dyn Backend, limits: &Limits, args: &ReaddirArgs, plus: bool) -> Result<DirList, Status> {
    let verf = sane(b.cookie_verifier(&args.dir))?;
    // A zero verifier means the client has none yet (first call, or it does not care).
    if args.cookie != 0 && args.verf != [0u8; 8] && args.verf != verf {
        return Err(Status::BadCookie);
    }
    let maxcount = args.maxcount.min(limits.max_io) as usize;
    let dircount = args.dircount.map(|c| c.min(limits.max_io) as usize);
    if maxcount < READDIR_REPLY_OVERHEAD {
        return Err(Status::TooSmall);
    }
    let mut used = READDIR_REPLY_OVERHEAD;
    let mut dir_used = 0usize;
    let mut entries: Vec<DirEntry> = Vec::new();
    let mut cookie = args.cookie;
    loop {
        let page = sane(b.readdir(&args.dir, cookie, READDIR_BACKEND_PAGE))?;
        let got = page.entries.len();
        for ent in page.entries {
            if ent.cookie <= cookie || ent.handle.len() > NFS3_FHSIZE || ent.name.len() > NFS3_MAXNAMLEN {
                // Going on could loop forever or emit an undecodable entry.
                tracing::warn!(cookie = ent.cookie, after = cookie, "backend readdir entry out of order or oversized");
                return Err(Status::ServerFault);
            }
            let size = if plus {
                readdirplus_entry_size(ent.name.len(), ent.handle.len())
            } else {
                readdir_entry_size(ent.name.len())
            };
            let dsize = readdir_entry_size(ent.name.len());
            // dircount never refuses the first entry: some clients send a tiny one.
            let fits_dir = entries.is_empty() || dircount.is_none_or(|dc| dir_used + dsize <= dc);
            if used + size > maxcount || !fits_dir {
                if entries.is_empty() {
                    return Err(Status::TooSmall);
                }
                return Ok(DirList { verf, entries, eof: false });
            }
            used += size;
            dir_used += dsize;
            cookie = ent.cookie;
            entries.push(ent);
        }
        if page.eof {
            return Ok(DirList { verf, entries, eof: true });
        }
        if got == 0 {
            // No progress and no eof: a backend bug; never spin on it.
            tracing::warn!(cookie, "backend readdir returned an empty page without eof");
            if entries.is_empty() {
                return Err(Status::ServerFault);
            }
            return Ok(DirList { verf, entries, eof: false });
        }
    }
}
