//! The protocol's data model as the `Backend` sees it: no bytes, no XDR.

/// An opaque NFSv3 file handle of at most `NFS3_FHSIZE` bytes; this crate never looks inside.
pub type Fh = Vec<u8>;

/// RFC 1813 ftype3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ftype {
    Reg = 1,
    Dir = 2,
    Blk = 3,
    Chr = 4,
    Lnk = 5,
    Sock = 6,
    Fifo = 7,
}

impl Ftype {
    pub fn from_u32(v: u32) -> Option<Ftype> {
        Some(match v {
            1 => Ftype::Reg,
            2 => Ftype::Dir,
            3 => Ftype::Blk,
            4 => Ftype::Chr,
            5 => Ftype::Lnk,
            6 => Ftype::Sock,
            7 => Ftype::Fifo,
            _ => return None,
        })
    }
}

/// RFC 1813 nfstime3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Time {
    pub seconds: u32,
    pub nseconds: u32,
}

/// RFC 1813 fattr3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fattr {
    pub ftype: Ftype,
    /// Permission bits only (e.g. 0o755); the file type travels in `ftype`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub used: u64,
    pub rdev: (u32, u32),
    pub fsid: u64,
    pub fileid: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

/// RFC 1813 nfsstat3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Nxio = 6,
    Acces = 13,
    Exist = 17,
    Xdev = 18,
    Nodev = 19,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    Fbig = 27,
    NoSpc = 28,
    Rofs = 30,
    Mlink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    Dquot = 69,
    Stale = 70,
    Remote = 71,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    Jukebox = 10008,
}

/// RFC 1813 Appendix I mountstat3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountStatus {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    NameTooLong = 63,
    NotSupp = 10004,
    ServerFault = 10006,
}

/// One directory entry; READDIR uses fileid/name/cookie, READDIRPLUS all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub fileid: u64,
    pub name: Vec<u8>,
    /// Position after this entry; strictly increasing within a directory, never 0.
    pub cookie: u64,
    pub handle: Fh,
    pub attr: Fattr,
}

/// A page of entries from `Backend::readdir`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    /// No entries after the last one returned.
    pub eof: bool,
}

/// RFC 1813 FSSTAT3resok without the attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStat {
    pub tbytes: u64,
    pub fbytes: u64,
    pub abytes: u64,
    pub tfiles: u64,
    pub ffiles: u64,
    pub afiles: u64,
    pub invarsec: u32,
}

/// RFC 1813 ACCESS3 bits.
pub mod access {
    pub const READ: u32 = 0x0001;
    pub const LOOKUP: u32 = 0x0002;
    pub const MODIFY: u32 = 0x0004;
    pub const EXTEND: u32 = 0x0008;
    pub const DELETE: u32 = 0x0010;
    pub const EXECUTE: u32 = 0x0020;
}

/// RFC 1813 set_atime / set_mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    DontChange,
    ServerTime,
    ClientTime(Time),
}

/// RFC 1813 sattr3: `None` means "leave unchanged".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sattr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

/// RFC 1813 stable_how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StableHow {
    Unstable = 0,
    DataSync = 1,
    FileSync = 2,
}

/// SETATTR arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetattrArgs {
    pub object: Fh,
    pub attrs: Sattr,
    /// Only apply if the object's ctime equals this.
    pub guard: Option<Time>,
}

/// WRITE arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteArgs {
    pub file: Fh,
    pub offset: u64,
    pub stable: StableHow,
    pub data: Vec<u8>,
}

/// WRITE result (the nfs layer adds the post-op attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOk {
    pub count: u32,
    pub committed: StableHow,
    pub verf: [u8; 8],
}

/// RFC 1813 createhow3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateHow {
    Unchecked(Sattr),
    Guarded(Sattr),
    Exclusive([u8; 8]),
}

/// CREATE arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateArgs {
    pub dir: Fh,
    pub name: Vec<u8>,
    pub how: CreateHow,
}

/// MKDIR arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MkdirArgs {
    pub dir: Fh,
    pub name: Vec<u8>,
    pub attrs: Sattr,
}

/// SYMLINK arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymlinkArgs {
    pub dir: Fh,
    pub name: Vec<u8>,
    pub attrs: Sattr,
    pub target: Vec<u8>,
}

/// RFC 1813 mknoddata3. Types without data (REG, DIR, LNK) are answered BADTYPE by the
/// nfs layer before the backend is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MknodWhat {
    Chr(Sattr, (u32, u32)),
    Blk(Sattr, (u32, u32)),
    Sock(Sattr),
    Fifo(Sattr),
}

/// MKNOD arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MknodArgs {
    pub dir: Fh,
    pub name: Vec<u8>,
    pub what: MknodWhat,
}

/// REMOVE / RMDIR arguments (RFC 1813 diropargs3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirOpArgs {
    pub dir: Fh,
    pub name: Vec<u8>,
}

/// RENAME arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenameArgs {
    pub from: DirOpArgs,
    pub to: DirOpArgs,
}

/// LINK arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkArgs {
    pub file: Fh,
    pub link: DirOpArgs,
}

/// COMMIT arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitArgs {
    pub file: Fh,
    pub offset: u64,
    pub count: u32,
}
