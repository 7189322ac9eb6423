#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use monofs_engine::{start, NodeConfig, NodeHandle};
use monofs_net::client::NodeClient;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// A fresh directory on the real disk (O_DIRECT does not work on tmpfs).
pub fn db_dir(name: &str) -> PathBuf {
    let base = if is_tmpfs(Path::new("/tmp")) {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/engine-tests")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("monofs-engine-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn is_tmpfs(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, bool)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && p.starts_with(f[1]) && best.is_none_or(|(n, _)| f[1].len() >= n) {
            best = Some((f[1].len(), f[2] == "tmpfs"));
        }
    }
    best.is_some_and(|(_, t)| t)
}

/// The cluster key every test component shares.
pub fn test_key() -> monofs_net::key::ClusterKey {
    monofs_net::key::ClusterKey::from_bytes([0x5a; monofs_net::key::KEY_LEN])
}

/// A base port whose `shards` consecutive ports are free right now.
fn free_ports(shards: usize) -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p as usize + shards > 65535 {
            continue;
        }
        if (1..shards).all(|i| TcpListener::bind(("127.0.0.1", p + i as u16)).is_ok()) {
            return p;
        }
    }
}

pub fn start_at(db: &Path, shards: usize, port: u16) -> anyhow::Result<NodeHandle> {
    start_named_at(db, shards, port, "n1")
}

fn start_named_at(db: &Path, shards: usize, port: u16, id: &str) -> anyhow::Result<NodeHandle> {
    start(NodeConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        node_id: id.into(),
        db_path: db.to_path_buf(),
        shards,
        cluster_key: test_key(),
    })
}

/// Start node "n1" on free ports, retrying if another process took one meanwhile.
pub fn start_node(db: &Path, shards: usize) -> (NodeHandle, String) {
    start_named(db, shards, "n1")
}

/// Start node `id` on free ports.
pub fn start_named(db: &Path, shards: usize, id: &str) -> (NodeHandle, String) {
    init_tracing();
    let mut last = None;
    for _ in 0..20 {
        let port = free_ports(shards);
        match start_named_at(db, shards, port, id) {
            Ok(h) => return (h, format!("127.0.0.1:{port}")),
            Err(e) if format!("{e:#}").contains("binding") => last = Some(e),
            Err(e) => panic!("start failed: {e:#}"),
        }
    }
    panic!("no free ports: {last:?}");
}

/// Run `f` on a glommio executor set up as a shard's.
pub fn run_local<T>(f: impl std::future::Future<Output = T>) -> T {
    monofs_engine::check_io_uring().unwrap();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(monofs_engine::IO_MEMORY)
        .make()
        .unwrap()
        .run(f)
}

pub fn client(addr: &str) -> NodeClient {
    NodeClient::connect("n1", addr, &test_key()).unwrap()
}

/// A socket that completed the handshake by hand, with its session, so a test can
/// send frames an honest client never would.
pub fn raw_session(addr: &str, key: &monofs_net::key::ClusterKey) -> (std::net::TcpStream, monofs_net::auth::Session) {
    use monofs_net::auth::{ClientHandshake, FrameKey, SERVER_HELLO_LEN};
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let (hs, hello) = ClientHandshake::start(&FrameKey::new(key));
    s.write_all(&hello).unwrap();
    let mut answer = [0u8; SERVER_HELLO_LEN];
    s.read_exact(&mut answer).unwrap();
    let fin = hs.finish(&answer);
    s.write_all(&fin.proof.unwrap()).unwrap();
    (s, fin.session.unwrap())
}

/// Everything the node sends until it closes the connection (a reset counts as closed;
/// 20 s without either fails the test).
pub fn read_to_end_or_reset(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            // A signal to this process (the executors' threads use them) is no answer.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("connection not closed: {e}"),
        }
    }
}

/// `body` as a frame with its MAC.
pub fn sealed(session: &mut monofs_net::auth::Session, body: &[u8]) -> Vec<u8> {
    let hdr = (body.len() as u32).to_be_bytes();
    let mac = session.seal(&[&hdr, body]);
    [&hdr[..], body, &mac].concat()
}

/// Deterministic bytes for a value.
pub fn value(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1) as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn key(i: u32) -> Vec<u8> {
    let mut k = b"Bkey-".to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}
