//! Raw-socket helpers: hand-built calls, framed records, reply parsing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use monofs_nfs::xdr::{Decoder, Encoder};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn call_body(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    for v in [xid, 0, 2, prog, vers, proc_, 0, 0, 0, 0] {
        e.u32(v);
    }
    let mut v = e.into_inner();
    v.extend_from_slice(args);
    v
}

pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (0x8000_0000u32 | body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

pub fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr).unwrap();
    let word = u32::from_be_bytes(hdr);
    assert!(word & 0x8000_0000 != 0, "replies are single fragments");
    let mut body = vec![0u8; (word & 0x7fff_ffff) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

/// (xid, accept_stat, rest) of an accepted reply.
pub fn accepted(reply: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut d = Decoder::new(reply);
    let xid = d.u32().unwrap();
    assert_eq!([d.u32().unwrap(), d.u32().unwrap(), d.u32().unwrap(), d.u32().unwrap()], [1, 0, 0, 0]);
    let stat = d.u32().unwrap();
    (xid, stat, d.rest().to_vec())
}

/// The server closed the connection (EOF or reset), rather than timing out.
pub fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("got {n} bytes instead of a close"),
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "connection not closed: {e}"
        ),
    }
}

pub fn null_works(addr: SocketAddr) {
    let mut s = connect(addr);
    s.write_all(&framed(&call_body(1, 100003, 3, 0, &[]))).unwrap();
    assert_eq!(accepted(&read_reply(&mut s)).1, 0);
}
