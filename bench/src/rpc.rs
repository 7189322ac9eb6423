//! A small, independent ONC RPC / XDR / NFSv3 / MOUNT v3 client codec: only the calls the
//! benchmark issues. It shares no code with the MonoFS server, so a bug in one cannot hide
//! a bug in the other.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const NFS_PROG: u32 = 100003;
pub const MOUNT_PROG: u32 = 100005;
pub const NFS_V3: u32 = 3;
pub const MOUNT_V3: u32 = 3;

pub const PROC_GETATTR: u32 = 1;
pub const PROC_LOOKUP: u32 = 3;
pub const PROC_ACCESS: u32 = 4;
pub const PROC_READ: u32 = 6;
pub const PROC_READDIRPLUS: u32 = 17;
pub const MOUNTPROC_MNT: u32 = 1;

/// Largest reply record accepted (a 1 MiB READ plus headers).
pub const MAX_REPLY: usize = 4 << 20;

pub const NF3REG: u32 = 1;
pub const NF3DIR: u32 = 2;

// ------------------------------------------------------------------ XDR

pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.fixed(b)
    }
    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        let pad = (4 - b.len() % 4) % 4;
        self.0.extend_from_slice(&[0u8; 3][..pad]);
        self
    }
}

pub struct Dec<'a> {
    b: &'a [u8],
    pub pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(b: &'a [u8]) -> Dec<'a> {
        Dec { b, pos: 0 }
    }
    pub fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes(s.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let s = self.take(8)?;
        Ok(u64::from_be_bytes(s.try_into().unwrap()))
    }
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u32()? != 0)
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.pos < n {
            bail!("XDR: short reply ({} bytes left, {n} wanted)", self.b.len() - self.pos);
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.take(n)?;
        self.take((4 - n % 4) % 4)?;
        Ok(s)
    }
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > max {
            bail!("XDR: opaque of {n} bytes exceeds {max}");
        }
        self.fixed(n)
    }
}

// ------------------------------------------------------------------ RPC

/// Appends one complete call record (record mark, call header with AUTH_UNIX uid 0, body).
pub fn call_record(out: &mut Vec<u8>, xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) {
    let start = out.len();
    let mut e = Enc(std::mem::take(out));
    e.u32(0); // record mark, patched below
    e.u32(xid).u32(0).u32(2).u32(prog).u32(vers).u32(proc_);
    // AUTH_UNIX: stamp, machinename, uid, gid, gids<>
    let mut cred = Enc(Vec::with_capacity(32));
    cred.u32(0).opaque(b"monofs-bench").u32(0).u32(0).u32(0);
    e.u32(1).opaque(&cred.0);
    e.u32(0).u32(0); // verifier AUTH_NONE
    e.0.extend_from_slice(args);
    let len = (e.0.len() - start - 4) as u32;
    e.0[start..start + 4].copy_from_slice(&(0x8000_0000 | len).to_be_bytes());
    *out = e.0;
}

/// Parses a reply record body: returns (xid, offset of the procedure result).
pub fn reply_header(body: &[u8]) -> Result<(u32, usize)> {
    let mut d = Dec::new(body);
    let xid = d.u32()?;
    if d.u32()? != 1 {
        bail!("RPC: not a reply");
    }
    if d.u32()? != 0 {
        bail!("RPC: call denied");
    }
    let _flavor = d.u32()?;
    d.opaque(400)?;
    let st = d.u32()?;
    if st != 0 {
        bail!("RPC: call not accepted (accept_stat {st})");
    }
    Ok((xid, d.pos))
}

/// Reads one record (all fragments) into `buf`.
pub fn read_record<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    loop {
        let mut m = [0u8; 4];
        r.read_exact(&mut m)?;
        let mark = u32::from_be_bytes(m);
        let n = (mark & 0x7fff_ffff) as usize;
        if buf.len() + n > MAX_REPLY {
            bail!("RPC: reply record larger than {MAX_REPLY} bytes");
        }
        let at = buf.len();
        buf.resize(at + n, 0);
        r.read_exact(&mut buf[at..])?;
        if mark & 0x8000_0000 != 0 {
            return Ok(());
        }
    }
}

// ------------------------------------------------------------------ NFSv3 arguments

pub fn args_fh(fh: &[u8]) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(72));
    e.opaque(fh);
    e.0
}

pub fn args_lookup(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(72 + name.len()));
    e.opaque(dir).opaque(name);
    e.0
}

pub fn args_access(fh: &[u8]) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(72));
    e.opaque(fh).u32(0x1f);
    e.0
}

pub fn args_read(fh: &[u8], offset: u64, count: u32) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(80));
    e.opaque(fh).u64(offset).u32(count);
    e.0
}

pub fn args_readdirplus(dir: &[u8], cookie: u64, verf: [u8; 8], dircount: u32, maxcount: u32) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(96));
    e.opaque(dir).u64(cookie).fixed(&verf).u32(dircount).u32(maxcount);
    e.0
}

// ------------------------------------------------------------------ NFSv3 results

#[derive(Clone, Copy, Debug, Default)]
pub struct Attr {
    pub ftype: u32,
    pub size: u64,
}

fn fattr3(d: &mut Dec) -> Result<Attr> {
    let ftype = d.u32()?;
    d.take(16)?; // mode nlink uid gid
    let size = d.u64()?;
    d.take(84 - 28)?;
    Ok(Attr { ftype, size })
}

fn post_op_attr(d: &mut Dec) -> Result<Option<Attr>> {
    if d.bool()? {
        Ok(Some(fattr3(d)?))
    } else {
        Ok(None)
    }
}

/// nfsstat3 of a result; Err for a non-zero status.
pub fn status(d: &mut Dec, what: &str) -> Result<()> {
    let st = d.u32()?;
    if st != 0 {
        bail!("{what}: NFS3 status {st}");
    }
    Ok(())
}

pub fn res_getattr(body: &[u8]) -> Result<Attr> {
    let mut d = Dec::new(body);
    status(&mut d, "GETATTR")?;
    fattr3(&mut d)
}

pub fn res_lookup(body: &[u8]) -> Result<(Vec<u8>, Option<Attr>)> {
    let mut d = Dec::new(body);
    status(&mut d, "LOOKUP")?;
    let fh = d.opaque(64)?.to_vec();
    let a = post_op_attr(&mut d)?;
    Ok((fh, a))
}

pub fn res_access(body: &[u8]) -> Result<()> {
    let mut d = Dec::new(body);
    status(&mut d, "ACCESS")
}

/// (bytes returned, eof)
pub fn res_read(body: &[u8]) -> Result<(u32, bool)> {
    let mut d = Dec::new(body);
    status(&mut d, "READ")?;
    post_op_attr(&mut d)?;
    let count = d.u32()?;
    let eof = d.bool()?;
    let n = d.u32()?;
    if n != count {
        bail!("READ: count {count} but {n} data bytes");
    }
    d.fixed(n as usize)?;
    Ok((count, eof))
}

pub struct DirEntry {
    pub name: Vec<u8>,
    pub cookie: u64,
    pub attr: Option<Attr>,
    pub fh: Option<Vec<u8>>,
}

pub struct DirPage {
    pub verf: [u8; 8],
    pub entries: Vec<DirEntry>,
    pub eof: bool,
}

/// Parses a READDIRPLUS result; `keep` false only counts entries (names are not copied).
pub fn res_readdirplus(body: &[u8], keep: bool) -> Result<(DirPage, usize, u64)> {
    let mut d = Dec::new(body);
    status(&mut d, "READDIRPLUS")?;
    post_op_attr(&mut d)?;
    let verf: [u8; 8] = d.take(8)?.try_into().unwrap();
    let mut entries = Vec::new();
    let mut n = 0usize;
    let mut last = 0u64;
    while d.bool()? {
        d.u64()?; // fileid
        let name = d.opaque(4096)?;
        let cookie = d.u64()?;
        let attr = post_op_attr(&mut d)?;
        let fh = if d.bool()? { Some(d.opaque(64)?) } else { None };
        n += 1;
        last = cookie;
        if keep {
            entries.push(DirEntry { name: name.to_vec(), cookie, attr, fh: fh.map(|f| f.to_vec()) });
        }
    }
    let eof = d.bool()?;
    Ok((DirPage { verf, entries, eof }, n, last))
}

// ------------------------------------------------------------------ a simple blocking client

/// One call at a time; used for setup (mount, path walk, tree discovery), not for load.
pub struct SyncClient {
    s: TcpStream,
    xid: u32,
    buf: Vec<u8>,
}

impl SyncClient {
    pub fn connect(addr: &str) -> Result<SyncClient> {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        SyncClient::from_stream(s, Duration::from_secs(60))
    }

    /// A client on a connected stream; a call gives up after `timeout` without progress.
    pub fn from_stream(s: TcpStream, timeout: Duration) -> Result<SyncClient> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(SyncClient { s, xid: 0x1000, buf: Vec::new() })
    }

    /// Returns the procedure result (after the accepted-reply header).
    pub fn call(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Result<Vec<u8>> {
        self.xid = self.xid.wrapping_add(1);
        let mut rec = Vec::new();
        call_record(&mut rec, self.xid, prog, vers, proc_, args);
        self.s.write_all(&rec)?;
        loop {
            read_record(&mut self.s, &mut self.buf)?;
            let (xid, at) = reply_header(&self.buf)?;
            if xid == self.xid {
                return Ok(self.buf[at..].to_vec());
            }
        }
    }

    pub fn mount(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut e = Enc(Vec::new());
        e.opaque(path.as_bytes());
        let r = self.call(MOUNT_PROG, MOUNT_V3, MOUNTPROC_MNT, &e.0)?;
        let mut d = Dec::new(&r);
        let st = d.u32()?;
        if st != 0 {
            bail!("MNT {path}: mount status {st}");
        }
        Ok(d.opaque(64)?.to_vec())
    }

    pub fn lookup(&mut self, dir: &[u8], name: &[u8]) -> Result<(Vec<u8>, Option<Attr>)> {
        let r = self.call(NFS_PROG, NFS_V3, PROC_LOOKUP, &args_lookup(dir, name))?;
        res_lookup(&r).with_context(|| format!("LOOKUP {}", String::from_utf8_lossy(name)))
    }

    pub fn getattr(&mut self, fh: &[u8]) -> Result<Attr> {
        let r = self.call(NFS_PROG, NFS_V3, PROC_GETATTR, &args_fh(fh))?;
        res_getattr(&r)
    }

    /// Every entry of a directory (without . and ..).
    pub fn readdirplus_all(&mut self, dir: &[u8], max_entries: usize) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut cookie = 0u64;
        let mut verf = [0u8; 8];
        loop {
            let r = self.call(NFS_PROG, NFS_V3, PROC_READDIRPLUS, &args_readdirplus(dir, cookie, verf, 65536, 262144))?;
            let (page, _, _) = res_readdirplus(&r, true)?;
            verf = page.verf;
            let progressed = !page.entries.is_empty();
            for e in page.entries {
                cookie = e.cookie;
                if e.name != b"." && e.name != b".." {
                    out.push(e);
                }
            }
            if page.eof || out.len() >= max_entries {
                return Ok(out);
            }
            if !progressed {
                bail!("READDIRPLUS: no entries and no eof");
            }
        }
    }
}
