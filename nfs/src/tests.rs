//! Dispatch-level tests: whole records in, whole replies out, no sockets.

use std::sync::Arc;

use crate::dispatch::{handle, Exported, Services};
use crate::nfs3_xdr::{self, procs, FATTR3_SIZE, FSF3_LINK};
use crate::portmap_xdr::{IPPROTO_TCP, IPPROTO_UDP};
use crate::rpc::encode_call;
use crate::xdr::{Decoder, Encoder};
use crate::*;

const ROOT: &[u8] = b"root";
const BIG: &[u8] = b"big";
const VERF: [u8; 8] = *b"verfverf";
/// Where test calls come from.
const PEER: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 700));

fn attr(ftype: Ftype, fileid: u64) -> Fattr {
    Fattr {
        ftype,
        mode: 0o755,
        nlink: 1,
        uid: 0,
        gid: 0,
        size: 0,
        used: 0,
        rdev: (0, 0),
        fsid: 1,
        fileid,
        atime: Time::default(),
        mtime: Time::default(),
        ctime: Time::default(),
    }
}

/// Root holds directory "big" with `n` files named f0..f{n-1}.
struct Mem {
    n: u64,
}

impl Backend for Mem {
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus> {
        if path == b"/" { Ok(ROOT.to_vec()) } else { Err(MountStatus::NoEnt) }
    }
    fn exports(&self) -> Vec<Vec<u8>> {
        vec![b"/".to_vec()]
    }
    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status> {
        match fh {
            ROOT => Ok(attr(Ftype::Dir, 1)),
            BIG => Ok(attr(Ftype::Dir, 2)),
            _ if fh.starts_with(b"f") => Ok(attr(Ftype::Reg, 100)),
            _ => Err(Status::Stale),
        }
    }
    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status> {
        if dir == ROOT && name == BIG {
            return Ok((BIG.to_vec(), attr(Ftype::Dir, 2)));
        }
        Err(Status::NoEnt)
    }
    fn read(&self, _fh: &[u8], _offset: u64, _count: u32) -> Result<(Vec<u8>, bool), Status> {
        Ok((Vec::new(), true))
    }
    fn readlink(&self, _fh: &[u8]) -> Result<Vec<u8>, Status> {
        Err(Status::Inval)
    }
    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status> {
        if dir != BIG {
            return Err(Status::NotDir);
        }
        // Entry i has cookie i+1.
        let entries: Vec<DirEntry> = (cookie..self.n)
            .take(max)
            .map(|i| DirEntry {
                fileid: 1000 + i,
                name: format!("f{i}").into_bytes(),
                cookie: i + 1,
                handle: format!("f{i}").into_bytes(),
                attr: attr(Ftype::Reg, 1000 + i),
            })
            .collect();
        let eof = entries.last().is_none_or(|e| e.cookie >= self.n);
        Ok(DirPage { entries, eof })
    }
    fn cookie_verifier(&self, _dir: &[u8]) -> Result<[u8; 8], Status> {
        Ok(VERF)
    }
    fn fsstat(&self, _fh: &[u8]) -> Result<FsStat, Status> {
        Ok(FsStat::default())
    }
}

fn svc(n: u64) -> Services {
    svc_exported(n, Exports::default())
}

fn svc_exported(n: u64, exports: Exports) -> Services {
    let backend = Exported { fs: Arc::new(Mem { n }), exports: Arc::new(exports) };
    Services { backend: Some(backend), limits: Limits::default(), ports: Ports { nfs: 2049, mount: 2050, portmap: 111, portmap_udp: true } }
}

fn call(svc: &Services, prog: u32, vers: u32, proc_: u32, args: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    call_from(svc, PEER, prog, vers, proc_, args)
}

fn call_from(svc: &Services, peer: std::net::SocketAddr, prog: u32, vers: u32, proc_: u32, args: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    let mut e = encode_call(0xabcd, prog, vers, proc_);
    args(&mut e);
    handle(&e.into_inner(), svc, peer).expect("a reply")
}

/// Checks an accepted reply's header and returns (accept_stat, body).
fn accepted(reply: &[u8]) -> (u32, Decoder<'_>) {
    let mut d = Decoder::new(reply);
    assert_eq!(d.u32().unwrap(), 0xabcd, "xid");
    assert_eq!(d.u32().unwrap(), 1, "REPLY");
    assert_eq!(d.u32().unwrap(), 0, "MSG_ACCEPTED");
    assert_eq!((d.u32().unwrap(), d.u32().unwrap()), (0, 0), "AUTH_NONE verifier");
    let stat = d.u32().unwrap();
    (stat, d)
}

fn success(reply: &[u8]) -> Decoder<'_> {
    let (stat, d) = accepted(reply);
    assert_eq!(stat, 0, "SUCCESS");
    d
}

fn mismatch(reply: &[u8]) -> (u32, u32) {
    let (stat, mut d) = accepted(reply);
    assert_eq!(stat, 2, "PROG_MISMATCH");
    (d.u32().unwrap(), d.u32().unwrap())
}

#[test]
fn null_procedures_answer() {
    let s = svc(0);
    for (prog, vers) in [(100003, 3), (100005, 3), (100000, 2)] {
        let r = call(&s, prog, vers, 0, |_| {});
        assert_eq!(success(&r).remaining(), 0);
    }
}

#[test]
fn version_mismatches() {
    let s = svc(0);
    assert_eq!(mismatch(&call(&s, 100003, 4, 0, |_| {})), (3, 3), "NFSv4 probe");
    assert_eq!(mismatch(&call(&s, 100003, 2, 0, |_| {})), (3, 3));
    assert_eq!(mismatch(&call(&s, 100005, 1, 0, |_| {})), (3, 3));
    assert_eq!(mismatch(&call(&s, 100000, 3, 0, |_| {})), (2, 2));
    assert_eq!(mismatch(&call(&s, 100000, 4, 0, |_| {})), (2, 2));
}

#[test]
fn unknown_program_and_procedure() {
    let s = svc(0);
    assert_eq!(accepted(&call(&s, 100227, 3, 0, |_| {})).0, 1, "PROG_UNAVAIL");
    assert_eq!(accepted(&call(&s, 100003, 3, 22, |_| {})).0, 3, "PROC_UNAVAIL");
    assert_eq!(accepted(&call(&s, 100005, 3, 6, |_| {})).0, 3);
    assert_eq!(accepted(&call(&s, 100000, 2, 5, |_| {})).0, 3, "CALLIT");
}

#[test]
fn garbage_args() {
    let s = svc(0);
    // Truncated handle.
    let r = call(&s, 100003, 3, procs::GETATTR, |e| e.u32(8));
    assert_eq!(accepted(&r).0, 4);
    // Handle longer than NFS3_FHSIZE.
    let r = call(&s, 100003, 3, procs::GETATTR, |e| e.opaque(&[0; NFS3_FHSIZE + 1]));
    assert_eq!(accepted(&r).0, 4);
    // Bool that is neither 0 nor 1 (SETATTR set_mode3).
    let r = call(&s, 100003, 3, procs::SETATTR, |e| {
        e.opaque(ROOT);
        e.u32(7);
    });
    assert_eq!(accepted(&r).0, 4);
    // Every NFS procedure with no arguments at all (except NULL).
    for p in 1..=21 {
        assert_eq!(accepted(&call(&s, 100003, 3, p, |_| {})).0, 4, "proc {p}");
    }
    assert_eq!(accepted(&call(&s, 100005, 3, 1, |_| {})).0, 4, "MNT");
    assert_eq!(accepted(&call(&s, 100000, 2, 3, |e| e.u32(1))).0, 4, "GETPORT");
}

#[test]
fn rpc_version_and_broken_headers() {
    let s = svc(0);
    let mut e = Encoder::new();
    for v in [0xabcd, 0, 3, 100003, 3, 0] {
        e.u32(v);
    }
    let r = handle(&e.into_inner(), &s, PEER).unwrap();
    let mut d = Decoder::new(&r);
    let words: Vec<u32> = (0..6).map(|_| d.u32().unwrap()).collect();
    assert_eq!(words, [0xabcd, 1, 1, 0, 2, 2], "MSG_DENIED RPC_MISMATCH 2..2");
    let full = encode_call(1, 100003, 3, 0).into_inner();
    for n in 0..full.len() {
        assert!(handle(&full[..n], &s, PEER).is_none(), "truncated header of {n} bytes answered");
    }
    // Unsupported flavor (RPCSEC_GSS) → AUTH_ERROR/BADCRED.
    let mut e = Encoder::new();
    for v in [0xabcd, 0, 2, 100003, 3, 0, 6, 0, 0, 0] {
        e.u32(v);
    }
    let r = handle(&e.into_inner(), &s, PEER).unwrap();
    let mut d = Decoder::new(&r);
    let words: Vec<u32> = (0..5).map(|_| d.u32().unwrap()).collect();
    assert_eq!(words, [0xabcd, 1, 1, 1, 1]);
}

#[test]
fn portmap_answers() {
    let s = svc(0);
    let getport = |prog, prot| {
        let r = call(&s, 100000, 2, 3, |e| {
            for v in [prog, 3, prot, 0] {
                e.u32(v);
            }
        });
        success(&r).u32().unwrap()
    };
    assert_eq!(getport(100003, IPPROTO_TCP), 2049);
    assert_eq!(getport(100005, IPPROTO_TCP), 2050);
    assert_eq!(getport(100003, IPPROTO_UDP), 0);
    assert_eq!(getport(100021, IPPROTO_TCP), 0);
    // The portmapper names itself, over both transports: rpcinfo -p asks that first.
    assert_eq!(getport(100000, IPPROTO_TCP), 111);
    assert_eq!(getport(100000, IPPROTO_UDP), 111);
    let r = call(&s, 100000, 2, 4, |_| {});
    let mut d = success(&r);
    let mut n = 0;
    while d.bool().unwrap() {
        for _ in 0..4 {
            d.u32().unwrap();
        }
        n += 1;
    }
    assert_eq!(n, 4, "portmapper tcp+udp, NFS, MOUNT");
}

#[test]
fn mount_and_export() {
    let s = svc(0);
    let r = call(&s, 100005, 3, 1, |e| e.opaque(b"/"));
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), 0);
    assert_eq!(d.opaque(64).unwrap(), ROOT);
    assert_eq!(d.u32().unwrap(), 2);
    assert_eq!((d.u32().unwrap(), d.u32().unwrap()), (1, 0));
    let r = call(&s, 100005, 3, 1, |e| e.opaque(b"/nope"));
    assert_eq!(success(&r).u32().unwrap(), MountStatus::NoEnt as u32);
    let r = call(&s, 100005, 3, 1, |e| e.opaque(&[b'a'; MNTPATHLEN + 1]));
    assert_eq!(success(&r).u32().unwrap(), MountStatus::NameTooLong as u32);
    let r = call(&s, 100005, 3, 5, |_| {});
    let mut d = success(&r);
    assert!(d.bool().unwrap());
    assert_eq!(d.opaque(1024).unwrap(), b"/");
    assert!(d.bool().unwrap(), "the default rules' one group");
    assert_eq!(d.opaque(1024).unwrap(), b"*");
    assert!(!d.bool().unwrap());
    assert!(!d.bool().unwrap());
    assert_eq!(d.remaining(), 0);
    // No export line: nothing is exported.
    let none = svc_exported(0, Exports::parse("# nothing\n", "t").unwrap());
    let r = call(&none, 100005, 3, 5, |_| {});
    let mut d = success(&r);
    assert!(!d.bool().unwrap());
    assert_eq!(d.remaining(), 0);
    let two = svc_exported(0, Exports::parse("/ 10.0.0.0/8 ::1", "t").unwrap());
    let r = call(&two, 100005, 3, 5, |_| {});
    let mut d = success(&r);
    assert!(d.bool().unwrap());
    assert_eq!(d.opaque(1024).unwrap(), b"/");
    for g in [&b"10.0.0.0/8"[..], b"::1"] {
        assert!(d.bool().unwrap());
        assert_eq!(d.opaque(1024).unwrap(), g);
    }
    assert_eq!((d.bool().unwrap(), d.bool().unwrap()), (false, false));
}

#[test]
fn lookup_and_limits() {
    let s = svc(0);
    let r = call(&s, 100003, 3, procs::LOOKUP, |e| {
        e.opaque(ROOT);
        e.opaque(BIG);
    });
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), 0);
    assert_eq!(d.opaque(64).unwrap(), BIG);
    assert!(d.bool().unwrap());
    d.fixed(FATTR3_SIZE).unwrap();
    assert!(d.bool().unwrap(), "dir attributes");
    d.fixed(FATTR3_SIZE).unwrap();
    assert_eq!(d.remaining(), 0);
    let r = call(&s, 100003, 3, procs::LOOKUP, |e| {
        e.opaque(ROOT);
        e.opaque(&[b'x'; NFS3_MAXNAMLEN + 1]);
    });
    assert_eq!(success(&r).u32().unwrap(), Status::NameTooLong as u32);
}

#[test]
fn mutations_are_rofs_and_mknod_reg_is_badtype() {
    let s = svc(0);
    let r = call(&s, 100003, 3, procs::WRITE, |e| {
        e.opaque(ROOT);
        e.u64(0);
        e.u32(3);
        e.u32(2);
        e.opaque(b"abc");
    });
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), Status::Rofs as u32);
    assert_eq!((d.bool().unwrap(), d.bool().unwrap()), (false, false), "empty wcc_data");
    assert_eq!(d.remaining(), 0);
    let r = call(&s, 100003, 3, procs::MKNOD, |e| {
        e.opaque(ROOT);
        e.opaque(b"n");
        e.u32(Ftype::Reg as u32);
    });
    assert_eq!(success(&r).u32().unwrap(), Status::BadType as u32);
    let r = call(&s, 100003, 3, procs::RENAME, |e| {
        for _ in 0..2 {
            e.opaque(ROOT);
            e.opaque(b"a");
        }
    });
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), Status::Rofs as u32);
    for _ in 0..4 {
        assert!(!d.bool().unwrap());
    }
}

#[test]
fn fsinfo_and_pathconf() {
    let s = svc(0);
    let r = call(&s, 100003, 3, procs::FSINFO, |e| e.opaque(ROOT));
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), 0);
    assert!(d.bool().unwrap());
    d.fixed(FATTR3_SIZE).unwrap();
    let v: Vec<u32> = (0..7).map(|_| d.u32().unwrap()).collect();
    assert_eq!(v, [1 << 20, 1 << 20, 4096, 1 << 20, 1 << 20, 4096, 1 << 20]);
    assert_eq!(d.u64().unwrap(), u64::MAX >> 1);
    assert_eq!((d.u32().unwrap(), d.u32().unwrap()), (0, 1));
    let props = d.u32().unwrap();
    assert_eq!(props, 0x1a);
    assert_eq!(props & FSF3_LINK, 0);
    let r = call(&s, 100003, 3, procs::PATHCONF, |e| e.opaque(ROOT));
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), 0);
    assert!(d.bool().unwrap());
    d.fixed(FATTR3_SIZE).unwrap();
    let v: Vec<u32> = (0..6).map(|_| d.u32().unwrap()).collect();
    assert_eq!(v, [1, 255, 1, 1, 0, 1]);
}

/// Runs READDIR(PLUS) calls from cookie 0 to eof and returns the names in order,
/// checking that each reply body fits the client's count.
fn list_all(s: &Services, plus: bool, count: u32) -> Vec<String> {
    let mut names = Vec::new();
    let (mut cookie, mut verf) = (0u64, [0u8; 8]);
    for _ in 0..100_000 {
        let proc_ = if plus { procs::READDIRPLUS } else { procs::READDIR };
        let r = call(s, 100003, 3, proc_, |e| {
            e.opaque(BIG);
            e.u64(cookie);
            e.fixed(&verf);
            if plus {
                e.u32(count / 8);
            }
            e.u32(count);
        });
        let mut d = success(&r);
        assert!(d.remaining() <= count as usize, "reply {} > count {count}", d.remaining());
        assert_eq!(d.u32().unwrap(), 0, "status");
        assert!(d.bool().unwrap());
        d.fixed(FATTR3_SIZE).unwrap();
        verf = d.fixed8().unwrap();
        while d.bool().unwrap() {
            d.u64().unwrap();
            names.push(String::from_utf8(d.opaque(255).unwrap().to_vec()).unwrap());
            cookie = d.u64().unwrap();
            if plus {
                assert!(d.bool().unwrap());
                d.fixed(FATTR3_SIZE).unwrap();
                assert!(d.bool().unwrap());
                d.opaque(64).unwrap();
            }
        }
        if d.bool().unwrap() {
            assert_eq!(d.remaining(), 0);
            return names;
        }
    }
    panic!("readdir never reached eof");
}

#[test]
fn readdir_pages_every_entry_once() {
    let s = svc(3000);
    let want: Vec<String> = (0..3000).map(|i| format!("f{i}")).collect();
    for (plus, count) in [(false, 4096), (true, 4096), (false, 1 << 20), (true, 1 << 20), (true, 777)] {
        assert_eq!(list_all(&s, plus, count), want, "plus={plus} count={count}");
    }
    let empty = svc(0);
    assert!(list_all(&empty, true, 4096).is_empty());
}

#[test]
fn readdir_errors() {
    let s = svc(10);
    let rd = |cookie: u64, verf: [u8; 8], count: u32| {
        let r = call(&s, 100003, 3, procs::READDIR, |e| {
            e.opaque(BIG);
            e.u64(cookie);
            e.fixed(&verf);
            e.u32(count);
        });
        success(&r).u32().unwrap()
    };
    assert_eq!(rd(3, *b"stalever", 4096), Status::BadCookie as u32);
    assert_eq!(rd(3, VERF, 4096), 0);
    assert_eq!(rd(3, [0; 8], 4096), 0, "zero verifier is accepted");
    assert_eq!(rd(0, *b"stalever", 4096), 0, "cookie 0 ignores the verifier");
    assert_eq!(rd(0, [0; 8], 120), Status::TooSmall as u32);
    assert_eq!(rd(0, [0; 8], 20), Status::TooSmall as u32);
    let r = call(&s, 100003, 3, procs::READDIR, |e| {
        e.opaque(ROOT);
        e.u64(0);
        e.fixed(&[0; 8]);
        e.u32(4096);
    });
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), Status::NotDir as u32);
    assert!(d.bool().unwrap(), "dir attributes on failure");
}

#[test]
fn fattr_encoding_size() {
    let mut e = Encoder::new();
    nfs3_xdr::put_fattr(&mut e, &attr(Ftype::Lnk, 9));
    assert_eq!(e.len(), FATTR3_SIZE);
}

#[test]
fn export_rules_per_peer() {
    let s = svc_exported(0, Exports::parse("/ 10.0.0.0/8(rw) 127.0.0.1(insecure) 192.168.0.0/16", "t").unwrap());
    let at = |ip: &str, port: u16| std::net::SocketAddr::new(ip.parse().unwrap(), port);
    let getattr = |peer| call_from(&s, peer, 100003, 3, procs::GETATTR, |e| e.opaque(ROOT));
    let mnt = |peer| call_from(&s, peer, 100005, 3, 1, |e| e.opaque(b"/"));
    // Unnamed address: MNT ACCES, NFS calls denied AUTH_BADCRED, NULL and EXPORT still answered.
    let stranger = at("172.16.0.1", 700);
    assert_eq!(success(&mnt(stranger)).u32().unwrap(), MountStatus::Acces as u32);
    let r = getattr(stranger);
    assert_eq!(r.len(), 20);
    assert_eq!(Decoder::new(&r[8..]).u32().unwrap(), 1, "MSG_DENIED");
    assert_eq!(Decoder::new(&r[12..]).u32().unwrap(), 1, "AUTH_ERROR");
    assert_eq!(Decoder::new(&r[16..]).u32().unwrap(), 1, "AUTH_BADCRED");
    success(&call_from(&s, stranger, 100003, 3, procs::NULL, |_| {}));
    success(&call_from(&s, stranger, 100005, 3, 5, |_| {}));
    // secure: a privileged port is admitted, an unprivileged one gets MNT ACCES / NFS3ERR_PERM.
    assert_eq!(success(&mnt(at("192.168.3.4", 1023))).u32().unwrap(), 0);
    assert_eq!(success(&getattr(at("192.168.3.4", 1023))).u32().unwrap(), 0);
    assert_eq!(success(&mnt(at("192.168.3.4", 1024))).u32().unwrap(), MountStatus::Acces as u32);
    let r = getattr(at("192.168.3.4", 40000));
    let mut d = success(&r);
    assert_eq!(d.u32().unwrap(), Status::Perm as u32);
    assert_eq!(d.remaining(), 0);
    assert_eq!(success(&getattr(at("127.0.0.1", 40000))).u32().unwrap(), 0, "insecure");
    let null = call_from(&s, at("192.168.3.4", 40000), 100003, 3, procs::NULL, |_| {});
    assert_eq!(success(&null).remaining(), 0, "NULL answers an insecure port");
    // rw lets a write reach the backend (which is read-only itself); ro answers first.
    let write = |peer| {
        call_from(&s, peer, 100003, 3, procs::SETATTR, |e| {
            e.opaque(ROOT);
            for _ in 0..6 {
                e.u32(0);
            }
            e.u32(0);
        })
    };
    assert_eq!(success(&write(at("10.1.1.1", 1000))).u32().unwrap(), Status::Rofs as u32);
    assert_eq!(success(&write(at("192.168.3.4", 1000))).u32().unwrap(), Status::Rofs as u32);
}

#[test]
fn access_follows_the_squashed_identity() {
    // Mem serves root-owned 0755 entries: everyone may read and search, no one changes.
    for rules in ["/ *(insecure)", "/ *(insecure,no_root_squash)", "/ *(insecure,all_squash)"] {
        let s = svc_exported(0, Exports::parse(rules, "t").unwrap());
        let r = call(&s, 100003, 3, procs::ACCESS, |e| {
            e.opaque(ROOT);
            e.u32(0x3f);
        });
        let mut d = success(&r);
        assert_eq!(d.u32().unwrap(), 0);
        assert!(d.bool().unwrap());
        d.fixed(FATTR3_SIZE).unwrap();
        assert_eq!(d.u32().unwrap(), access::READ | access::LOOKUP, "{rules}");
    }
}
