//! Export rules against a real server over real sockets, driven by the independent
//! nfs3_client: client addresses (CIDR), root_squash / no_root_squash / all_squash, and
//! secure ports. The tests run as root, so the privileged-port cases bind ports < 1024.

mod common;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use nfs3_client::nfs3_types::mount::mountstat3;
use nfs3_client::nfs3_types::nfs3::{self, nfsstat3, Nfs3Result};
use nfs3_client::nfs3_types::rpc::{auth_stat, auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioIo;
use nfs3_client::{ConnectError, MountError, Nfs3Client, Nfs3Connection, Nfs3ConnectionBuilder, RpcError};
use tokio::net::{TcpSocket, TcpStream};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

type Conn = Nfs3Connection<TokioIo<TcpStream>>;

fn run<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { tokio::time::timeout(TEST_TIMEOUT, f).await.expect("test timed out") });
}

/// Connects from a chosen loopback address (and port, when the client asks for one).
struct From(IpAddr);

impl nfs3_client::net::Connector for From {
    type Connection = TokioIo<TcpStream>;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Connection> {
        self.connect_with_port(addr, 0).await
    }

    async fn connect_with_port(&self, addr: SocketAddr, port: u16) -> std::io::Result<Self::Connection> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.0, port))?;
        Ok(TokioIo::new(socket.connect(addr).await?))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn unix(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix { stamp: 1, machinename: Opaque::borrowed(b"test"), uid, gid, gids: vec![gid] })
}

async fn mount(server: &Server, from: &str, privileged: bool, cred: opaque_auth<'static>) -> Result<Conn, ConnectError> {
    Nfs3ConnectionBuilder::new(From(ip(from)), "127.0.0.1", "/")
        .mount_port(server.addr.port())
        .nfs3_port(server.addr.port())
        .connect_from_privileged_port(privileged)
        .credential(cred)
        .mount()
        .await
}

fn assert_mount_refused(r: Result<Conn, ConnectError>) {
    match r {
        Err(ConnectError::Mount(MountError::Denied(mountstat3::MNT3ERR_ACCES))) => {}
        Err(e) => panic!("expected MNT3ERR_ACCES, got {e:?}"),
        Ok(_) => panic!("expected MNT3ERR_ACCES, the mount succeeded"),
    }
}

async fn lookup(c: &mut Conn, path: &str) -> Result<nfs3::nfs_fh3, nfsstat3> {
    let mut fh = c.root_nfs_fh3();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        let args = nfs3::LOOKUP3args { what: nfs3::diropargs3 { dir: fh, name: name.as_bytes().into() } };
        fh = match c.lookup(&args).await.unwrap() {
            Nfs3Result::Ok(ok) => ok.object,
            Nfs3Result::Err((s, _)) => return Err(s),
        };
    }
    Ok(fh)
}

async fn read(c: &mut Conn, path: &str) -> Result<Vec<u8>, nfsstat3> {
    let file = lookup(c, path).await?;
    match c.read(&nfs3::READ3args { file, offset: 0, count: 4096 }).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(ok.data.as_ref().to_vec()),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

async fn access(c: &mut Conn, path: &str) -> u32 {
    let object = lookup(c, path).await.unwrap();
    c.access(&nfs3::ACCESS3args { object, access: 0x3f }).await.unwrap().unwrap().access
}

async fn list(c: &mut Conn, path: &str) -> Result<usize, nfsstat3> {
    let dir = lookup(c, path).await?;
    let args = nfs3::READDIRPLUS3args { dir, cookie: 0, cookieverf: nfs3::cookieverf3::default(), dircount: 4096, maxcount: 65536 };
    match c.readdirplus(&args).await.unwrap() {
        Nfs3Result::Ok(ok) => Ok(ok.reply.entries.into_inner().len()),
        Nfs3Result::Err((s, _)) => Err(s),
    }
}

const READ: u32 = 0x01;
const LOOKUP: u32 = 0x02;

#[test]
fn only_named_networks_mount_and_call() {
    let server = start_exported("# test\n/ 127.0.0.2/32(insecure) 10.0.0.0/8(insecure)\n");
    run(async {
        assert_mount_refused(mount(&server, "127.0.0.3", false, opaque_auth::default()).await);
        let mut c = mount(&server, "127.0.0.2", false, opaque_auth::default()).await.expect("127.0.0.2 may mount");
        assert_eq!(read(&mut c, "/hello.txt").await.unwrap(), HELLO);
        // A handle learned elsewhere does not help an address the rules do not name: the
        // call is denied at the RPC layer, as knfsd denies it (AUTH_BADCRED).
        let root = c.root_nfs_fh3();
        let socket = From(ip("127.0.0.3"));
        let io = nfs3_client::net::Connector::connect(&socket, server.addr).await.unwrap();
        let mut stranger = Nfs3Client::new(io);
        stranger.null().await.expect("NULL is answered to anyone");
        match stranger.getattr(&nfs3::GETATTR3args { object: root.clone() }).await {
            Err(RpcError::Auth(auth_stat::AUTH_BADCRED)) => {}
            other => panic!("expected AUTH_BADCRED, got {other:?}"),
        }
        match stranger.read(&nfs3::READ3args { file: root, offset: 0, count: 10 }).await {
            Err(RpcError::Auth(auth_stat::AUTH_BADCRED)) => {}
            other => panic!("expected AUTH_BADCRED, got {other:?}"),
        }
    });
}

#[test]
fn root_squash_hides_root_only_files_from_root() {
    let server = start_exported("/ 127.0.0.1(insecure)");
    run(async {
        let mut c = mount(&server, "127.0.0.1", false, unix(0, 0)).await.unwrap();
        assert_eq!(read(&mut c, "/hello.txt").await.unwrap(), HELLO, "world-readable files stay readable");
        assert_eq!(read(&mut c, "/sub/secret.txt").await, Err(nfsstat3::NFS3ERR_ACCES));
        assert_eq!(access(&mut c, "/sub/secret.txt").await, 0);
        assert_eq!(access(&mut c, "/sub/vault").await, 0);
        assert_eq!(lookup(&mut c, "/sub/vault/inner.txt").await, Err(nfsstat3::NFS3ERR_ACCES));
        assert_eq!(list(&mut c, "/sub/vault").await, Err(nfsstat3::NFS3ERR_ACCES));
        assert_eq!(access(&mut c, "/sub").await, READ | LOOKUP);
    });
    let server = start_exported("/ 127.0.0.1(insecure,no_root_squash)");
    run(async {
        let mut c = mount(&server, "127.0.0.1", false, unix(0, 0)).await.unwrap();
        assert_eq!(read(&mut c, "/sub/secret.txt").await.unwrap(), SECRET);
        assert_eq!(access(&mut c, "/sub/secret.txt").await & READ, READ);
        assert_eq!(read(&mut c, "/sub/vault/inner.txt").await.unwrap(), SECRET);
        assert_eq!(list(&mut c, "/sub/vault").await, Ok(1));
        // Root may read another user's private file too (knfsd keeps CAP_DAC_OVERRIDE for it).
        assert_eq!(read(&mut c, "/sub/mine.txt").await.unwrap(), MINE);
        // AUTH_NONE is anonymous whatever the squashing.
        let mut anon = mount(&server, "127.0.0.1", false, opaque_auth::default()).await.unwrap();
        assert_eq!(read(&mut anon, "/sub/secret.txt").await, Err(nfsstat3::NFS3ERR_ACCES));
    });
}

#[test]
fn owners_and_all_squash() {
    let server = start_exported("/ 127.0.0.1(insecure)");
    run(async {
        let mut owner = mount(&server, "127.0.0.1", false, unix(USER, USER)).await.unwrap();
        assert_eq!(read(&mut owner, "/sub/mine.txt").await.unwrap(), MINE);
        let mut other = mount(&server, "127.0.0.1", false, unix(USER + 1, USER + 1)).await.unwrap();
        assert_eq!(read(&mut other, "/sub/mine.txt").await, Err(nfsstat3::NFS3ERR_ACCES));
    });
    let server = start_exported("/ 127.0.0.1(insecure,all_squash)");
    run(async {
        let mut owner = mount(&server, "127.0.0.1", false, unix(USER, USER)).await.unwrap();
        assert_eq!(read(&mut owner, "/sub/mine.txt").await, Err(nfsstat3::NFS3ERR_ACCES), "squashed to 65534");
        assert_eq!(read(&mut owner, "/hello.txt").await.unwrap(), HELLO);
    });
    let server = start_exported("/ 127.0.0.1(insecure,all_squash,anonuid=1000,anongid=1000)");
    run(async {
        let mut anyone = mount(&server, "127.0.0.1", false, unix(4242, 4242)).await.unwrap();
        assert_eq!(read(&mut anyone, "/sub/mine.txt").await.unwrap(), MINE, "everyone is uid 1000");
        assert_eq!(read(&mut anyone, "/sub/secret.txt").await, Err(nfsstat3::NFS3ERR_ACCES));
    });
}

#[test]
fn secure_wants_a_privileged_port() {
    let server = start_exported("/ 127.0.0.1(no_root_squash)");
    run(async {
        assert_mount_refused(mount(&server, "127.0.0.1", false, unix(0, 0)).await);
        let mut c = mount(&server, "127.0.0.1", true, unix(0, 0)).await.expect("a privileged port may mount");
        assert_eq!(read(&mut c, "/sub/secret.txt").await.unwrap(), SECRET);
        // The same handle from an unprivileged port: knfsd's nfserr_perm.
        let io = nfs3_client::net::Connector::connect(&From(ip("127.0.0.1")), server.addr).await.unwrap();
        let mut insecure = Nfs3Client::new_with_auth(io, unix(0, 0), opaque_auth::default());
        let object = c.root_nfs_fh3();
        match insecure.getattr(&nfs3::GETATTR3args { object }).await.unwrap() {
            Nfs3Result::Err((s, _)) => assert_eq!(s, nfsstat3::NFS3ERR_PERM),
            Nfs3Result::Ok(_) => panic!("an unprivileged port was served"),
        }
    });
}
