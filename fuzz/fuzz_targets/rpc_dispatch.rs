//! One ONC RPC record through the whole NFS server path: call header,
//! program/version/procedure dispatch, NFSv3/MOUNT/PORTMAP argument decoding,
//! procedure semantics and reply encoding, against a backend that answers
//! every call with a small fixed tree.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use monofs_nfs::{
    answer_record, Backend, DirEntry, DirPage, Fattr, Fh, FsStat, Ftype, Limits, MountStatus, Ports, Status, Time,
};

/// Handle `[1]` is the root directory, `[2]` a file, `[3]` a symlink; any
/// other handle is stale.
struct Tree;

fn attr(fh: &[u8]) -> Result<Fattr, Status> {
    let (ftype, mode, size) = match fh {
        [1] => (Ftype::Dir, 0o755, 4096),
        [2] => (Ftype::Reg, 0o644, 100_000),
        [3] => (Ftype::Lnk, 0o777, 4),
        _ => return Err(Status::Stale),
    };
    let t = Time { seconds: 1_600_000_000, nseconds: 0 };
    Ok(Fattr {
        ftype,
        mode,
        nlink: 1,
        uid: 0,
        gid: 0,
        size,
        used: size,
        rdev: (0, 0),
        fsid: 1,
        fileid: fh[0] as u64,
        atime: t,
        mtime: t,
        ctime: t,
    })
}

impl Backend for Tree {
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus> {
        if path == b"/" {
            Ok(vec![1])
        } else {
            Err(MountStatus::NoEnt)
        }
    }
    fn exports(&self) -> Vec<Vec<u8>> {
        vec![b"/".to_vec()]
    }
    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status> {
        attr(fh)
    }
    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status> {
        if attr(dir)?.ftype != Ftype::Dir {
            return Err(Status::NotDir);
        }
        let fh = match name {
            b"." | b".." => vec![1],
            b"file" => vec![2],
            b"link" => vec![3],
            _ => return Err(Status::NoEnt),
        };
        let a = attr(&fh)?;
        Ok((fh, a))
    }
    fn read(&self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), Status> {
        let size = attr(fh)?.size;
        let start = offset.min(size);
        let end = start.saturating_add(count as u64).min(size);
        Ok((vec![b'x'; (end - start) as usize], end == size))
    }
    fn readlink(&self, fh: &[u8]) -> Result<Vec<u8>, Status> {
        match attr(fh)?.ftype {
            Ftype::Lnk => Ok(b"file".to_vec()),
            _ => Err(Status::Inval),
        }
    }
    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status> {
        if attr(dir)?.ftype != Ftype::Dir {
            return Err(Status::NotDir);
        }
        let all = [(b"file".to_vec(), vec![2u8]), (b"link".to_vec(), vec![3u8])];
        let entries: Vec<DirEntry> = all
            .into_iter()
            .enumerate()
            .skip(cookie.min(2) as usize)
            .take(max)
            .map(|(i, (name, handle))| DirEntry {
                fileid: handle[0] as u64,
                name,
                cookie: i as u64 + 1,
                attr: attr(&handle).expect("fixed handle"),
                handle,
            })
            .collect();
        let eof = entries.last().is_none_or(|e| e.cookie == 2);
        Ok(DirPage { entries, eof })
    }
    fn cookie_verifier(&self, dir: &[u8]) -> Result<[u8; 8], Status> {
        attr(dir).map(|_| [7; 8])
    }
    fn fsstat(&self, fh: &[u8]) -> Result<FsStat, Status> {
        attr(fh).map(|_| FsStat::default())
    }
}

fuzz_target!(|record: &[u8]| {
    static BACKEND: OnceLock<Arc<dyn Backend>> = OnceLock::new();
    let backend = BACKEND.get_or_init(|| Arc::new(Tree)).clone();
    let ports = Ports { nfs: 2049, mount: 2049, portmap: 111, portmap_udp: false };
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 700));
    let _ = answer_record(record, backend, Limits::default(), ports, peer);
});
