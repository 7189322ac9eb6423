//! Drives the server with an independent NFSv3 client (nfs3_client), from PORTMAP
//! GETPORT through MNT to READDIRPLUS paging.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use common::*;
use nfs3_client::nfs3_types::nfs3::{self, nfsstat3, Nfs3Option, Nfs3Result};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioConnector;
use nfs3_client::Nfs3ConnectionBuilder;

/// nfs3_client can spin if the server hangs up; never let a test hang.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn run<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { tokio::time::timeout(TEST_TIMEOUT, f).await.expect("test timed out") });
}

async fn connect(server: &Server) -> nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>> {
    // Ports come from our own PORTMAP on the NFS port.
    Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
        .portmapper_port(server.addr.port())
        .connect_from_privileged_port(false)
        .mount()
        .await
        .expect("mount")
}

fn fh(data: &[u8]) -> nfs3::nfs_fh3 {
    nfs3::nfs_fh3 { data: Opaque::owned(data.to_vec()) }
}

#[test]
fn mount_lookup_getattr_read_readlink() {
    let server = start(Default::default());
    run(async {
        let mut c = connect(&server).await;
        let root = c.root_nfs_fh3();
        c.null().await.unwrap();
        let attr = c.getattr(&nfs3::GETATTR3args { object: root.clone() }).await.unwrap().unwrap();
        assert_eq!(attr.obj_attributes.type_, nfs3::ftype3::NF3DIR);

        let lookup = |dir: nfs3::nfs_fh3, name: &'static [u8]| nfs3::LOOKUP3args {
            what: nfs3::diropargs3 { dir, name: name.into() },
        };
        let hello = c.lookup(&lookup(root.clone(), b"hello.txt")).await.unwrap().unwrap();
        assert!(hello.dir_attributes.is_some(), "LOOKUP carries directory attributes");
        let Nfs3Option::Some(a) = &hello.obj_attributes else { panic!("no attributes") };
        assert_eq!(a.size, HELLO.len() as u64);
        let read = c
            .read(&nfs3::READ3args { file: hello.object.clone(), offset: 0, count: 4096 })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.data.as_ref(), HELLO);
        assert!(read.eof);

        // A large file read in chunks.
        let big = c.lookup(&lookup(root.clone(), b"big.bin")).await.unwrap().unwrap();
        let mut data = Vec::new();
        loop {
            let r = c
                .read(&nfs3::READ3args { file: big.object.clone(), offset: data.len() as u64, count: 65536 })
                .await
                .unwrap()
                .unwrap();
            data.extend_from_slice(r.data.as_ref());
            if r.eof {
                break;
            }
        }
        assert_eq!(data, big_content());

        let link = c.lookup(&lookup(root.clone(), b"link")).await.unwrap().unwrap();
        let target = c.readlink(&nfs3::READLINK3args { symlink: link.object }).await.unwrap().unwrap();
        assert_eq!(target.data.0.as_ref(), b"hello.txt");

        let sub = c.lookup(&lookup(root.clone(), b"sub")).await.unwrap().unwrap();
        let up = c.lookup(&lookup(sub.object.clone(), b"..")).await.unwrap().unwrap();
        assert_eq!(up.object, root);

        match c.lookup(&lookup(root.clone(), b"missing")).await.unwrap() {
            Nfs3Result::Err((status, fail)) => {
                assert_eq!(status, nfsstat3::NFS3ERR_NOENT);
                assert!(fail.dir_attributes.is_some());
            }
            Nfs3Result::Ok(_) => panic!("missing name found"),
        }
        match c.getattr(&nfs3::GETATTR3args { object: fh(b"/no/such") }).await.unwrap() {
            Nfs3Result::Err((status, _)) => assert_eq!(status, nfsstat3::NFS3ERR_STALE),
            Nfs3Result::Ok(_) => panic!("stale handle accepted"),
        }

        let access = c.access(&nfs3::ACCESS3args { object: root.clone(), access: 0x3f }).await.unwrap().unwrap();
        assert_eq!(access.access, 0x01 | 0x02, "READ|LOOKUP only on a read-only directory");

        let info = c.fsinfo(&nfs3::FSINFO3args { fsroot: root.clone() }).await.unwrap().unwrap();
        assert_eq!((info.rtmax, info.dtpref, info.rtmult), (1 << 20, 1 << 20, 4096));
        c.fsstat(&nfs3::FSSTAT3args { fsroot: root.clone() }).await.unwrap().unwrap();
        c.pathconf(&nfs3::PATHCONF3args { object: root.clone() }).await.unwrap().unwrap();

        // Mutations answer ROFS.
        let write = c
            .write(&nfs3::WRITE3args {
                file: hello.object.clone(),
                offset: 0,
                count: 3,
                stable: nfs3::stable_how::FILE_SYNC,
                data: Opaque::borrowed(b"abc"),
            })
            .await
            .unwrap();
        match write {
            Nfs3Result::Err((status, _)) => assert_eq!(status, nfsstat3::NFS3ERR_ROFS),
            Nfs3Result::Ok(_) => panic!("write succeeded"),
        }
        match c.remove(&nfs3::REMOVE3args { object: nfs3::diropargs3 { dir: root.clone(), name: b"hello.txt".as_slice().into() } }).await.unwrap() {
            Nfs3Result::Err((status, _)) => assert_eq!(status, nfsstat3::NFS3ERR_ROFS),
            Nfs3Result::Ok(_) => panic!("remove succeeded"),
        }
        c.unmount().await.unwrap();
    });
}

#[test]
fn readdirplus_and_readdir_list_every_name_once() {
    let server = start(Default::default());
    run(async {
        let mut c = connect(&server).await;
        let root = c.root_nfs_fh3();
        let many = c
            .lookup(&nfs3::LOOKUP3args { what: nfs3::diropargs3 { dir: root, name: b"many".as_slice().into() } })
            .await
            .unwrap()
            .unwrap()
            .object;
        let want: HashSet<String> = (0..MANY).map(many_name).collect();

        // READDIRPLUS with small limits: many pages, each resumed from the last cookie.
        for (dircount, maxcount) in [(2048, 8192), (65536, 1 << 20)] {
            let (mut cookie, mut verf) = (0, nfs3::cookieverf3::default());
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let res = c
                    .readdirplus(&nfs3::READDIRPLUS3args { dir: many.clone(), cookie, cookieverf: verf, dircount, maxcount })
                    .await
                    .unwrap()
                    .unwrap();
                pages += 1;
                verf = res.cookieverf;
                for e in res.reply.entries.0 {
                    assert!(e.name_attributes.is_some() && e.name_handle.is_some());
                    seen.push(String::from_utf8(e.name.0.to_vec()).unwrap());
                    cookie = e.cookie;
                }
                if res.reply.eof {
                    break;
                }
            }
            assert_eq!(seen.len(), MANY, "dircount {dircount}: every entry exactly once");
            assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), want);
            if maxcount == 8192 {
                assert!(pages > 10, "small maxcount should page ({pages} pages)");
            }
        }

        // Plain READDIR.
        let (mut cookie, mut verf) = (0, nfs3::cookieverf3::default());
        let mut seen = Vec::new();
        loop {
            let res = c
                .readdir(&nfs3::READDIR3args { dir: many.clone(), cookie, cookieverf: verf, count: 4096 })
                .await
                .unwrap()
                .unwrap();
            verf = res.cookieverf;
            for e in res.reply.entries.0 {
                seen.push(String::from_utf8(e.name.0.to_vec()).unwrap());
                cookie = e.cookie;
            }
            if res.reply.eof {
                break;
            }
        }
        assert_eq!(seen.len(), MANY);
        assert_eq!(seen.into_iter().collect::<HashSet<_>>(), want);

        // A stale verifier with a non-zero cookie.
        match c
            .readdir(&nfs3::READDIR3args { dir: many.clone(), cookie: 5, cookieverf: nfs3::cookieverf3(*b"oldverf!"), count: 4096 })
            .await
            .unwrap()
        {
            Nfs3Result::Err((status, _)) => assert_eq!(status, nfsstat3::NFS3ERR_BAD_COOKIE),
            Nfs3Result::Ok(_) => panic!("stale verifier accepted"),
        }
    });
}

#[test]
fn several_connections_at_once() {
    let server = start(Default::default());
    run(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let port = server.addr.port();
            tasks.push(tokio::spawn(async move {
                let mut c = Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
                    .mount_port(port)
                    .nfs3_port(port)
                    .connect_from_privileged_port(false)
                    .mount()
                    .await
                    .expect("mount");
                let root = c.root_nfs_fh3();
                for _ in 0..50 {
                    c.getattr(&nfs3::GETATTR3args { object: root.clone() }).await.unwrap().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}
