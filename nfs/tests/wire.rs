//! Raw-socket tests: record marking, limits, pipelining, malformed input, UDP portmap.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::*;
use common::*;
use monofs_nfs::xdr::Encoder;
use monofs_nfs::*;

#[test]
fn nfs_v4_probe_gets_prog_mismatch_3_3() {
    let server = start(Limits::default());
    let mut s = connect(server.addr);
    s.write_all(&framed(&call_body(42, 100003, 4, 0, &[]))).unwrap();
    let (xid, stat, rest) = accepted(&read_reply(&mut s));
    assert_eq!((xid, stat), (42, 2));
    assert_eq!(rest, [0, 0, 0, 3, 0, 0, 0, 3]);
}

#[test]
fn huge_fragment_closes_connection() {
    let server = start(Limits::default());
    let mut s = connect(server.addr);
    s.write_all(&0xffff_ffffu32.to_be_bytes()).unwrap();
    assert_closed(&mut s);
    null_works(server.addr);
}

#[test]
fn fragments_beyond_max_record_close_connection() {
    let server = start(Limits { max_record: 1024, ..Limits::default() });
    let mut s = connect(server.addr);
    let mut bytes = (600u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 600]);
    bytes.extend_from_slice(&(0x8000_0000u32 | 600).to_be_bytes());
    bytes.extend_from_slice(&[0u8; 600]);
    s.write_all(&bytes).unwrap();
    assert_closed(&mut s);
}

#[test]
fn multi_fragment_record_is_reassembled() {
    let server = start(Limits::default());
    let mut s = connect(server.addr);
    let body = call_body(7, 100003, 3, 0, &[]);
    let (a, b) = body.split_at(10);
    let mut bytes = (a.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(a);
    bytes.extend_from_slice(&framed(b));
    s.write_all(&bytes).unwrap();
    assert_eq!(accepted(&read_reply(&mut s)).0, 7);
}

#[test]
fn malformed_and_truncated_input_never_kills_the_server() {
    let server = start(Limits::default());
    // Garbage header: closed.
    let mut s = connect(server.addr);
    s.write_all(&framed(&[0xff; 8])).unwrap();
    assert_closed(&mut s);
    // Record cut short by the client.
    let mut s = connect(server.addr);
    let f = framed(&call_body(1, 100003, 3, 0, &[]));
    s.write_all(&f[..f.len() - 3]).unwrap();
    drop(s);
    // Wrong RPC version: MSG_DENIED, connection stays usable.
    let mut s = connect(server.addr);
    let mut e = Encoder::new();
    for v in [9, 0, 3, 100003, 3, 0] {
        e.u32(v);
    }
    s.write_all(&framed(&e.into_inner())).unwrap();
    assert_eq!(read_reply(&mut s), [0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2]);
    // Garbage args.
    s.write_all(&framed(&call_body(10, 100003, 3, 1, &[0, 0, 0, 200]))).unwrap();
    assert_eq!(accepted(&read_reply(&mut s)).1, 4);
    null_works(server.addr);
}

#[test]
fn pipelined_calls_all_answered_with_backpressure() {
    let server = start(Limits { max_inflight_per_conn: 2, workers: 3, ..Limits::default() });
    let mut s = connect(server.addr);
    let mut args = Encoder::new();
    args.opaque(b"/big.bin");
    args.u64(0);
    args.u32(65536);
    let args = args.into_inner();
    let mut bytes = Vec::new();
    const N: u32 = 200;
    for xid in 0..N {
        let (proc_, a) = if xid % 2 == 0 { (6, &args[..]) } else { (0, &[][..]) };
        bytes.extend(framed(&call_body(1000 + xid, 100003, 3, proc_, a)));
    }
    // Write from another thread: the server stops reading once 2 calls are in flight, so
    // a single thread writing everything first could deadlock against full socket buffers.
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes).unwrap());
    let mut xids: Vec<u32> = (0..N).map(|_| accepted(&read_reply(&mut s)).0).collect();
    writer.join().unwrap();
    xids.sort();
    assert_eq!(xids, (1000..1000 + N).collect::<Vec<_>>());
}

#[test]
fn connection_limit_closes_extra_connections() {
    let server = start(Limits { max_conns: 2, ..Limits::default() });
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    for s in [&mut a, &mut b] {
        s.write_all(&framed(&call_body(1, 100003, 3, 0, &[]))).unwrap();
        read_reply(s);
    }
    let mut c = connect(server.addr);
    assert_closed(&mut c);
    drop(a);
    // The slot frees once the server notices the close.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut s = connect(server.addr);
        if s.write_all(&framed(&call_body(2, 100003, 3, 0, &[]))).is_ok() {
            let mut hdr = [0u8; 4];
            if s.read_exact(&mut hdr).is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shutdown_flag_stops_serve_tcp() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let ports = Ports { nfs: 1, mount: 1, portmap: 1, portmap_udp: false };
    let h = std::thread::spawn(move || serve_tcp(listener, Arc::new(MemFs::new()), Limits::default(), ports, f));
    std::thread::sleep(Duration::from_millis(100));
    flag.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + IO_TIMEOUT;
    while !h.is_finished() {
        assert!(Instant::now() < deadline, "serve_tcp did not return");
        std::thread::sleep(Duration::from_millis(20));
    }
    h.join().unwrap().unwrap();
}

#[test]
fn portmap_over_udp() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let h = std::thread::spawn(move || serve_portmap_udp(sock, Ports { nfs: 2049, mount: 20048, portmap: 111, portmap_udp: true }, f));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let ask = |body: Vec<u8>| {
        client.send_to(&body, addr).unwrap();
        let mut buf = [0u8; 512];
        let n = client.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let getport = |prog: u32, prot: u32| {
        let mut a = Encoder::new();
        for v in [prog, 3, prot, 0] {
            a.u32(v);
        }
        let (_, stat, rest) = accepted(&ask(call_body(5, 100000, 2, 3, &a.into_inner())));
        assert_eq!(stat, 0);
        u32::from_be_bytes(rest[..4].try_into().unwrap())
    };
    assert_eq!(getport(100003, 6), 2049);
    assert_eq!(getport(100005, 6), 20048);
    assert_eq!(getport(100005, 17), 0, "no UDP service");
    let (_, stat, rest) = accepted(&ask(call_body(6, 100000, 4, 3, &[])));
    assert_eq!((stat, rest), (2, vec![0, 0, 0, 2, 0, 0, 0, 2]), "rpcbind v4 → PROG_MISMATCH 2..2");
    assert_eq!(accepted(&ask(call_body(7, 100003, 3, 0, &[]))).1, 1, "no NFS over UDP");
    flag.store(true, Ordering::Relaxed);
    h.join().unwrap().unwrap();
}
