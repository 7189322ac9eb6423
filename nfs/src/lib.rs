//! MonoFS NFS front end: a user-space NFSv3 + MOUNT v3 + PORTMAP v2 server over ONC RPC
//! (RFC 1813, 1831, 1833), served to the stock Linux kernel client.
//!
//! Protocol only: what the files are comes from a [`Backend`]. Layers, as in Linux knfsd:
//! `record` (TCP record marking) → `rpc` (call/reply headers) → `dispatch` (program,
//! version, procedure) → `*_xdr` (argument and result wire formats) ↔ `*_proc` (procedure
//! semantics, which never touch bytes) → `Backend`. Between dispatch and the procedures,
//! the export rules (`exports`: who may call, as whom; `permission`: mode bits) decide.

mod backend;
mod dispatch;
mod exports;
mod limits;
mod mount_proc;
mod mount_xdr;
mod nfs3_proc;
mod nfs3_xdr;
mod permission;
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
pub use exports::{
    ClientOptions, ClientRule, ClientSpec, Exports, ExportsError, Squash, DEFAULT_ANON_ID, DEFAULT_EXPORTS,
    EXPORTS_MAX_BYTES, EXPORTS_MAX_CLIENTS, EXPORTS_MAX_LINES, PRIVILEGED_PORT_END,
};
pub use limits::*;
pub use portmap_proc::Ports;
pub use types::*;

/// Serves NFSv3 (100003 v3), MOUNT v3 (100005 v3) and PORTMAP v2 (100000) on `listener`
/// under the default export rules ([`DEFAULT_EXPORTS`]). Blocks until `shutdown` is set or
/// the listener fails.
pub fn serve_tcp(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    limits: Limits,
    ports: Ports,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    serve_tcp_exported(listener, backend, Arc::new(Exports::default()), limits, ports, shutdown)
}

/// [`serve_tcp`] under `exports`: NFS and MOUNT calls are admitted, refused and given an
/// identity per caller address and credential (docs/exports.md).
pub fn serve_tcp_exported(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    exports: Arc<Exports>,
    limits: Limits,
    ports: Ports,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let backend = dispatch::Exported { fs: backend, exports };
    let svc = dispatch::Services { backend: Some(backend), limits: limits.sanitized(), ports };
    server::serve_tcp(listener, svc, shutdown)
}

/// PORTMAP v2 over UDP (rpcbind v3/v4 get PROG_MISMATCH 2..2), for a portmapper on port
/// 111. Blocks until `shutdown` is set or the socket fails.
pub fn serve_portmap_udp(socket: UdpSocket, ports: Ports, shutdown: Arc<AtomicBool>) -> std::io::Result<()> {
    udp::serve_portmap_udp(socket, ports, shutdown)
}
