//! PORTMAP v2 semantics: a fixed table of what this server serves. SET/UNSET are refused
//! because nothing else may register with us.

use crate::mount_xdr::{MOUNT_PROGRAM, MOUNT_V3};
use crate::nfs3_xdr::{NFS_PROGRAM, NFS_V3};
use crate::portmap_xdr::{Mapping, PmapCall, PmapReply, IPPROTO_TCP, IPPROTO_UDP, PORTMAP_PROGRAM, PORTMAP_V2};

/// What PORTMAP answers: the TCP ports of NFS and MOUNT, and where the
/// portmapper itself listens (rpcinfo asks the portmapper for its own port first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub nfs: u16,
    pub mount: u16,
    /// The portmapper's own port (TCP; 111 when serving the standard port).
    pub portmap: u16,
    /// Whether the portmapper also answers over UDP on `portmap`.
    pub portmap_udp: bool,
}

fn table(ports: Ports) -> Vec<Mapping> {
    let mut t = vec![
        Mapping { prog: PORTMAP_PROGRAM, vers: PORTMAP_V2, prot: IPPROTO_TCP, port: ports.portmap as u32 },
        Mapping { prog: NFS_PROGRAM, vers: NFS_V3, prot: IPPROTO_TCP, port: ports.nfs as u32 },
        Mapping { prog: MOUNT_PROGRAM, vers: MOUNT_V3, prot: IPPROTO_TCP, port: ports.mount as u32 },
    ];
    if ports.portmap_udp {
        t.insert(1, Mapping { prog: PORTMAP_PROGRAM, vers: PORTMAP_V2, prot: IPPROTO_UDP, port: ports.portmap as u32 });
    }
    t
}

pub fn run(ports: Ports, call: PmapCall) -> PmapReply {
    match call {
        PmapCall::Null => PmapReply::Void,
        PmapCall::Set(_) | PmapCall::Unset(_) => PmapReply::Bool(false),
        PmapCall::Getport(q) => PmapReply::Port(getport(ports, q)),
        PmapCall::Dump => PmapReply::Dump(table(ports)),
    }
}

/// Like rpcbind, a program registered under another version still answers its port, so
/// the client reaches us and learns the supported range from PROG_MISMATCH. NFS and
/// MOUNT are served over TCP only: UDP queries for them get 0 and clients (mount.nfs
/// probes UDP first) fall back to TCP.
fn getport(ports: Ports, q: Mapping) -> u32 {
    table(ports)
        .into_iter()
        .find(|m| m.prog == q.prog && m.prot == q.prot)
        .map_or(0, |m| m.port)
}
