//! NFSv3 (RFC 1813) wire formats: call arguments in, results out. Nothing here decides
//! anything; `nfs3_proc` turns an `Nfs3Call` into an `Nfs3Reply`.

use crate::limits::NFS3_FHSIZE;
use crate::types::*;
use crate::xdr::{opaque_size, Decoder, Encoder, XdrError, XdrResult};

pub const NFS_PROGRAM: u32 = 100003;
pub const NFS_V3: u32 = 3;

pub mod procs {
    pub const NULL: u32 = 0;
    pub const GETATTR: u32 = 1;
    pub const SETATTR: u32 = 2;
    pub const LOOKUP: u32 = 3;
    pub const ACCESS: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const READ: u32 = 6;
    pub const WRITE: u32 = 7;
    pub const CREATE: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const SYMLINK: u32 = 10;
    pub const MKNOD: u32 = 11;
    pub const REMOVE: u32 = 12;
    pub const RMDIR: u32 = 13;
    pub const RENAME: u32 = 14;
    pub const LINK: u32 = 15;
    pub const READDIR: u32 = 16;
    pub const READDIRPLUS: u32 = 17;
    pub const FSSTAT: u32 = 18;
    pub const FSINFO: u32 = 19;
    pub const PATHCONF: u32 = 20;
    pub const COMMIT: u32 = 21;
}

/// Why arguments could not be turned into a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError {
    UnknownProc,
    Garbage,
}

impl From<XdrError> for ArgError {
    fn from(_: XdrError) -> Self {
        ArgError::Garbage
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaddirArgs {
    pub dir: Fh,
    pub cookie: u64,
    pub verf: [u8; 8],
    /// READDIR: `count`; READDIRPLUS: `maxcount` (whole reply size).
    pub maxcount: u32,
    /// READDIRPLUS only: bytes of entry3-like directory information.
    pub dircount: Option<u32>,
}

/// A decoded NFSv3 call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nfs3Call {
    Null,
    Getattr(Fh),
    Setattr(SetattrArgs),
    Lookup(DirOpArgs),
    Access(Fh, u32),
    Readlink(Fh),
    Read { file: Fh, offset: u64, count: u32 },
    Write(WriteArgs),
    Create(CreateArgs),
    Mkdir(MkdirArgs),
    Symlink(SymlinkArgs),
    /// `None`: a type without device data (REG, DIR, LNK), answered BADTYPE.
    Mknod(DirOpArgs, Option<MknodWhat>),
    Remove(DirOpArgs),
    Rmdir(DirOpArgs),
    Rename(RenameArgs),
    Link(LinkArgs),
    Readdir(ReaddirArgs),
    Readdirplus(ReaddirArgs),
    Fsstat(Fh),
    Fsinfo(Fh),
    Pathconf(Fh),
    Commit(CommitArgs),
}

fn fh(d: &mut Decoder) -> XdrResult<Fh> {
    Ok(d.opaque(NFS3_FHSIZE)?.to_vec())
}

/// Names are bounded only by the record here; the procedure answers NAMETOOLONG.
fn name(d: &mut Decoder) -> XdrResult<Vec<u8>> {
    Ok(d.opaque(usize::MAX)?.to_vec())
}

fn diropargs(d: &mut Decoder) -> XdrResult<DirOpArgs> {
    Ok(DirOpArgs { dir: fh(d)?, name: name(d)? })
}

fn time(d: &mut Decoder) -> XdrResult<Time> {
    Ok(Time { seconds: d.u32()?, nseconds: d.u32()? })
}

fn set_time(d: &mut Decoder) -> XdrResult<SetTime> {
    match d.u32()? {
        0 => Ok(SetTime::DontChange),
        1 => Ok(SetTime::ServerTime),
        2 => Ok(SetTime::ClientTime(time(d)?)),
        _ => Err(XdrError),
    }
}

fn opt_u32(d: &mut Decoder) -> XdrResult<Option<u32>> {
    Ok(if d.bool()? { Some(d.u32()?) } else { None })
}

fn sattr(d: &mut Decoder) -> XdrResult<Sattr> {
    Ok(Sattr {
        mode: opt_u32(d)?,
        uid: opt_u32(d)?,
        gid: opt_u32(d)?,
        size: if d.bool()? { Some(d.u64()?) } else { None },
        atime: set_time(d)?,
        mtime: set_time(d)?,
    })
}

fn specdata(d: &mut Decoder) -> XdrResult<(u32, u32)> {
    Ok((d.u32()?, d.u32()?))
}

/// Decodes the arguments of NFSv3 procedure `proc_`.
pub fn decode_call(proc_: u32, args: &[u8]) -> Result<Nfs3Call, ArgError> {
    use procs::*;
    let d = &mut Decoder::new(args);
    Ok(match proc_ {
        NULL => Nfs3Call::Null,
        GETATTR => Nfs3Call::Getattr(fh(d)?),
        SETATTR => {
            let object = fh(d)?;
            let attrs = sattr(d)?;
            let guard = if d.bool()? { Some(time(d)?) } else { None };
            Nfs3Call::Setattr(SetattrArgs { object, attrs, guard })
        }
        LOOKUP => Nfs3Call::Lookup(diropargs(d)?),
        ACCESS => Nfs3Call::Access(fh(d)?, d.u32()?),
        READLINK => Nfs3Call::Readlink(fh(d)?),
        READ => Nfs3Call::Read { file: fh(d)?, offset: d.u64()?, count: d.u32()? },
        WRITE => {
            let file = fh(d)?;
            let offset = d.u64()?;
            let count = d.u32()? as usize;
            let stable = match d.u32()? {
                0 => StableHow::Unstable,
                1 => StableHow::DataSync,
                2 => StableHow::FileSync,
                _ => return Err(ArgError::Garbage),
            };
            let data = d.opaque(usize::MAX)?;
            // RFC 1813: count is the amount to write; data beyond it is ignored.
            let data = data[..count.min(data.len())].to_vec();
            Nfs3Call::Write(WriteArgs { file, offset, stable, data })
        }
        CREATE => {
            let DirOpArgs { dir, name } = diropargs(d)?;
            let how = match d.u32()? {
                0 => CreateHow::Unchecked(sattr(d)?),
                1 => CreateHow::Guarded(sattr(d)?),
                2 => CreateHow::Exclusive(d.fixed8()?),
                _ => return Err(ArgError::Garbage),
            };
            Nfs3Call::Create(CreateArgs { dir, name, how })
        }
        MKDIR => {
            let DirOpArgs { dir, name } = diropargs(d)?;
            Nfs3Call::Mkdir(MkdirArgs { dir, name, attrs: sattr(d)? })
        }
        SYMLINK => {
            let DirOpArgs { dir, name } = diropargs(d)?;
            let attrs = sattr(d)?;
            let target = d.opaque(usize::MAX)?.to_vec();
            Nfs3Call::Symlink(SymlinkArgs { dir, name, attrs, target })
        }
        MKNOD => {
            let where_ = diropargs(d)?;
            let ftype = Ftype::from_u32(d.u32()?).ok_or(XdrError)?;
            let what = match ftype {
                Ftype::Chr => Some(MknodWhat::Chr(sattr(d)?, specdata(d)?)),
                Ftype::Blk => Some(MknodWhat::Blk(sattr(d)?, specdata(d)?)),
                Ftype::Sock => Some(MknodWhat::Sock(sattr(d)?)),
                Ftype::Fifo => Some(MknodWhat::Fifo(sattr(d)?)),
                Ftype::Reg | Ftype::Dir | Ftype::Lnk => None,
            };
            Nfs3Call::Mknod(where_, what)
        }
        REMOVE => Nfs3Call::Remove(diropargs(d)?),
        RMDIR => Nfs3Call::Rmdir(diropargs(d)?),
        RENAME => Nfs3Call::Rename(RenameArgs { from: diropargs(d)?, to: diropargs(d)? }),
        LINK => Nfs3Call::Link(LinkArgs { file: fh(d)?, link: diropargs(d)? }),
        READDIR => Nfs3Call::Readdir(ReaddirArgs {
            dir: fh(d)?,
            cookie: d.u64()?,
            verf: d.fixed8()?,
            maxcount: d.u32()?,
            dircount: None,
        }),
        READDIRPLUS => {
            let dir = fh(d)?;
            let cookie = d.u64()?;
            let verf = d.fixed8()?;
            let dircount = d.u32()?;
            let maxcount = d.u32()?;
            Nfs3Call::Readdirplus(ReaddirArgs { dir, cookie, verf, maxcount, dircount: Some(dircount) })
        }
        FSSTAT => Nfs3Call::Fsstat(fh(d)?),
        FSINFO => Nfs3Call::Fsinfo(fh(d)?),
        PATHCONF => Nfs3Call::Pathconf(fh(d)?),
        COMMIT => Nfs3Call::Commit(CommitArgs { file: fh(d)?, offset: d.u64()?, count: d.u32()? }),
        _ => return Err(ArgError::UnknownProc),
    })
}

// ---- results ----

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirList {
    pub verf: [u8; 8],
    pub entries: Vec<DirEntry>,
    pub eof: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub rtmax: u32,
    pub rtpref: u32,
    pub rtmult: u32,
    pub wtmax: u32,
    pub wtpref: u32,
    pub wtmult: u32,
    pub dtpref: u32,
    pub maxfilesize: u64,
    pub time_delta: Time,
    pub properties: u32,
}

/// RFC 1813 FSINFO properties bits.
/// Not advertised: the namespace has no hard links.
#[allow(dead_code)]
pub const FSF3_LINK: u32 = 0x0001;
pub const FSF3_SYMLINK: u32 = 0x0002;
pub const FSF3_HOMOGENEOUS: u32 = 0x0008;
pub const FSF3_CANSETTIME: u32 = 0x0010;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathConf {
    pub linkmax: u32,
    pub name_max: u32,
    pub no_trunc: bool,
    pub chown_restricted: bool,
    pub case_insensitive: bool,
    pub case_preserving: bool,
}

/// Post-op attributes are optional everywhere: `None` encodes as "not present".
pub type PostOp = Option<Fattr>;

/// A result to encode. Error arms carry what RFC 1813 sends on failure (post-op
/// attributes, empty-before wcc_data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nfs3Reply {
    Null,
    Getattr(Result<Fattr, Status>),
    /// wcc_data after-attributes on both arms.
    Setattr(Status, PostOp),
    Lookup(Result<(Fh, PostOp), Status>, PostOp),
    Access(Result<u32, Status>, PostOp),
    Readlink(Result<Vec<u8>, Status>, PostOp),
    Read(Result<(Vec<u8>, bool), Status>, PostOp),
    Write(Result<WriteOk, Status>, PostOp),
    /// CREATE, MKDIR, SYMLINK, MKNOD: new object, and the directory's wcc after-attributes.
    Create(Result<(Fh, PostOp), Status>, PostOp),
    /// REMOVE, RMDIR: the directory's wcc.
    Remove(Status, PostOp),
    Rename(Status, PostOp, PostOp),
    /// File post-op attributes, link directory wcc.
    Link(Status, PostOp, PostOp),
    Readdir(Result<DirList, Status>, PostOp),
    Readdirplus(Result<DirList, Status>, PostOp),
    Fsstat(Result<FsStat, Status>, PostOp),
    Fsinfo(Result<FsInfo, Status>, PostOp),
    Pathconf(Result<PathConf, Status>, PostOp),
    Commit(Result<[u8; 8], Status>, PostOp),
}

/// Encoded size of fattr3.
pub const FATTR3_SIZE: usize = 84;
/// Encoded size of a present post_op_attr.
pub const POST_OP_ATTR_SIZE: usize = 4 + FATTR3_SIZE;
/// READDIR/READDIRPLUS reply bytes besides the entries: status, dir attributes,
/// cookie verifier, the final "no more entries" word and eof.
pub const READDIR_REPLY_OVERHEAD: usize = 4 + POST_OP_ATTR_SIZE + 8 + 4 + 4;

/// Encoded size of one READDIR entry3 (value_follows, fileid, name, cookie); also what
/// READDIRPLUS charges against `dircount`.
pub fn readdir_entry_size(name_len: usize) -> usize {
    4 + 8 + opaque_size(name_len) + 8
}

/// Encoded size of one READDIRPLUS entryplus3 with attributes and handle present.
pub fn readdirplus_entry_size(name_len: usize, fh_len: usize) -> usize {
    readdir_entry_size(name_len) + POST_OP_ATTR_SIZE + 4 + opaque_size(fh_len)
}

fn put_time(e: &mut Encoder, t: Time) {
    e.u32(t.seconds);
    e.u32(t.nseconds);
}

pub fn put_fattr(e: &mut Encoder, a: &Fattr) {
    e.u32(a.ftype as u32);
    e.u32(a.mode & 0o7777);
    e.u32(a.nlink);
    e.u32(a.uid);
    e.u32(a.gid);
    e.u64(a.size);
    e.u64(a.used);
    e.u32(a.rdev.0);
    e.u32(a.rdev.1);
    e.u64(a.fsid);
    e.u64(a.fileid);
    put_time(e, a.atime);
    put_time(e, a.mtime);
    put_time(e, a.ctime);
}

fn put_post_op(e: &mut Encoder, a: &PostOp) {
    match a {
        Some(a) => {
            e.bool(true);
            put_fattr(e, a);
        }
        None => e.bool(false),
    }
}

fn put_post_op_fh(e: &mut Encoder, fh: &[u8]) {
    e.bool(true);
    e.opaque(fh);
}

/// wcc_data: we never have trustworthy pre-op attributes, so only "after" is sent.
fn put_wcc(e: &mut Encoder, after: &PostOp) {
    e.bool(false);
    put_post_op(e, after);
}

fn put_status<T>(e: &mut Encoder, r: &Result<T, Status>) {
    e.u32(match r {
        Ok(_) => Status::Ok as u32,
        Err(s) => *s as u32,
    });
}

/// Rough size of an encoded reply, to size the buffer once.
pub fn reply_capacity(r: &Nfs3Reply) -> usize {
    const SMALL: usize = 512;
    match r {
        Nfs3Reply::Read(Ok((data, _)), _) => SMALL + data.len(),
        Nfs3Reply::Readlink(Ok(data), _) => SMALL + data.len(),
        Nfs3Reply::Readdir(Ok(l), _) | Nfs3Reply::Readdirplus(Ok(l), _) => {
            SMALL + l.entries.iter().map(|x| readdirplus_entry_size(x.name.len(), x.handle.len())).sum::<usize>()
        }
        _ => SMALL,
    }
}

pub fn encode_reply(e: &mut Encoder, r: &Nfs3Reply) {
    match r {
        Nfs3Reply::Null => {}
        Nfs3Reply::Getattr(res) => {
            put_status(e, res);
            if let Ok(a) = res {
                put_fattr(e, a);
            }
        }
        Nfs3Reply::Setattr(st, after) | Nfs3Reply::Remove(st, after) => {
            e.u32(*st as u32);
            put_wcc(e, after);
        }
        Nfs3Reply::Lookup(res, dir) => {
            put_status(e, res);
            if let Ok((fh, obj)) = res {
                e.opaque(fh);
                put_post_op(e, obj);
            }
            put_post_op(e, dir);
        }
        Nfs3Reply::Access(res, obj) => {
            put_status(e, res);
            put_post_op(e, obj);
            if let Ok(bits) = res {
                e.u32(*bits);
            }
        }
        Nfs3Reply::Readlink(res, obj) => {
            put_status(e, res);
            put_post_op(e, obj);
            if let Ok(path) = res {
                e.opaque(path);
            }
        }
        Nfs3Reply::Read(res, obj) => {
            put_status(e, res);
            put_post_op(e, obj);
            if let Ok((data, eof)) = res {
                e.u32(data.len() as u32);
                e.bool(*eof);
                e.opaque(data);
            }
        }
        Nfs3Reply::Write(res, obj) => {
            put_status(e, res);
            put_wcc(e, obj);
            if let Ok(w) = res {
                e.u32(w.count);
                e.u32(w.committed as u32);
                e.fixed(&w.verf);
            }
        }
        Nfs3Reply::Create(res, dir) => {
            put_status(e, res);
            if let Ok((fh, obj)) = res {
                put_post_op_fh(e, fh);
                put_post_op(e, obj);
            }
            put_wcc(e, dir);
        }
        Nfs3Reply::Rename(st, from, to) => {
            e.u32(*st as u32);
            put_wcc(e, from);
            put_wcc(e, to);
        }
        Nfs3Reply::Link(st, file, dir) => {
            e.u32(*st as u32);
            put_post_op(e, file);
            put_wcc(e, dir);
        }
        Nfs3Reply::Readdir(res, dir) | Nfs3Reply::Readdirplus(res, dir) => {
            let plus = matches!(r, Nfs3Reply::Readdirplus(..));
            put_status(e, res);
            put_post_op(e, dir);
            if let Ok(list) = res {
                e.fixed(&list.verf);
                for ent in &list.entries {
                    e.bool(true);
                    e.u64(ent.fileid);
                    e.opaque(&ent.name);
                    e.u64(ent.cookie);
                    if plus {
                        put_post_op(e, &Some(ent.attr.clone()));
                        put_post_op_fh(e, &ent.handle);
                    }
                }
                e.bool(false);
                e.bool(list.eof);
            }
        }
        Nfs3Reply::Fsstat(res, obj) => {
            put_status(e, res);
            put_post_op(e, obj);
            if let Ok(s) = res {
                for v in [s.tbytes, s.fbytes, s.abytes, s.tfiles, s.ffiles, s.afiles] {
                    e.u64(v);
                }
                e.u32(s.invarsec);
            }
        }
        Nfs3Reply::Fsinfo(res, obj) => {
            put_status(e, res);
            put_post_op(e, obj);
            if let Ok(i) = res {
                for v in [i.rtmax, i.rtpref, i.rtmult, i.wtmax, i.wtpref, i.wtmult, i.dtpref] {
                    e.u32(v);
                }
                e.u64(i.maxfilesize);
                put_time(e, i.time_delta);
                e.u32(i.properties);
            }
        }
        Nfs3Reply::Pathconf(res, obj) => {
            put_status(e, res);
            put_post_op(e, obj);
            if let Ok(p) = res {
                e.u32(p.linkmax);
                e.u32(p.name_max);
                for b in [p.no_trunc, p.chown_restricted, p.case_insensitive, p.case_preserving] {
                    e.bool(b);
                }
            }
        }
        Nfs3Reply::Commit(res, obj) => {
            put_status(e, res);
            put_wcc(e, obj);
            if let Ok(verf) = res {
                e.fixed(verf);
            }
        }
    }
}
