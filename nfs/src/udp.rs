//! PORTMAP v2 over UDP, for a portmapper on port 111: one datagram per call, no record
//! marking. NFS and MOUNT are not served here (PROG_UNAVAIL).

use std::io;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dispatch::{self, Services};
use crate::limits::{Limits, READ_POLL_INTERVAL, UDP_MAX_DATAGRAM};
use crate::portmap_proc::Ports;

pub fn serve_portmap_udp(socket: UdpSocket, ports: Ports, shutdown: Arc<AtomicBool>) -> io::Result<()> {
    socket.set_read_timeout(Some(READ_POLL_INTERVAL))?;
    let svc = Services { backend: None, limits: Limits::default(), ports };
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    while !shutdown.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => continue,
            // ICMP port-unreachable from an earlier reply surfaces here on Linux.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        if let Some(reply) = dispatch::handle(&buf[..n], &svc, peer) {
            if let Err(e) = socket.send_to(&reply, peer) {
                tracing::warn!(%peer, error = %e, "portmap reply failed");
            }
        }
    }
    Ok(())
}
