//! MonoFS NFS front end: a user-space NFSv3 + MOUNT v3 + PORTMAP v2 server over ONC RPC
//! (RFC 1813, 1831, 1833), served to the stock Linux kernel client.
//!
//! Protocol only: what the files are comes from a [`Backend`]. Layers, as in Linux knfsd:
//! `record` (TCP record marking) → `rpc` (call/reply headers) → `dispatch` (program,
//! version, procedure) → `*_xdr` (argument and result wire formats) ↔ `*_proc` (procedure
//! semantics, which never touch bytes) → `Backend`.

mod backend;
mod dispatch;
mod limits;
mod mount_proc;
mod mount_xdr;
mod nfs3_proc;
mod nfs3_xdr;
mod portmap_proc;
mod portmap_xdr;
mod record;
mod rpc;
mod server;
mod types;
mod udp;
pub mod xdr;

#[cfg(test)]
mod tests;

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use backend::Backend;
pub use limits::*;
pub use portmap_proc::Ports;
pub use types::*;

/// Serves NFSv3 (100003 v3), MOUNT v3 (100005 v3) and PORTMAP v2 (100000) on `listener`.
/// Blocks until `shutdown` is set or the listener fails.
pub fn serve_tcp(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    limits: Limits,
    ports: Ports,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let svc = dispatch::Services { backend: Some(backend), limits: limits.sanitized(), ports };
    server::serve_tcp(listener, svc, shutdown)
}

/// Answers one RPC record (call header, program, procedure, arguments) as the
/// TCP server does, without a socket; `None` when nothing is answered. The
/// entry point for fuzzing the whole decode and dispatch path.
pub fn answer_record(
    record: &[u8],
    backend: Arc<dyn Backend>,
    limits: Limits,
    ports: Ports,
    peer: std::net::SocketAddr,
) -> Option<Vec<u8>> {
    let svc = dispatch::Services { backend: Some(backend), limits: limits.sanitized(), ports };
    dispatch::handle(record, &svc, peer)
}

/// PORTMAP v2 over UDP (rpcbind v3/v4 get PROG_MISMATCH 2..2), for a portmapper on port
/// 111. Blocks until `shutdown` is set or the socket fails.
pub fn serve_portmap_udp(socket: UdpSocket, ports: Ports, shutdown: Arc<AtomicBool>) -> std::io::Result<()> {
    udp::serve_portmap_udp(socket, ports, shutdown)
}
