//! Routes one RPC record to its program: header → program/version check → argument
//! decoding → export rules → procedure → result encoding. The only place the three
//! programs meet, and where a caller's address and credential meet the export rules.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::exports::{Admission, Exports};
use crate::limits::Limits;
use crate::nfs3_xdr::{ArgError, Nfs3Call, Nfs3Reply, NFS_PROGRAM, NFS_V3};
use crate::mount_xdr::{MOUNT_PROGRAM, MOUNT_V3};
use crate::portmap_proc::Ports;
use crate::portmap_xdr::{PORTMAP_PROGRAM, PORTMAP_V2};
use crate::nfs3_proc::Caller;
use crate::rpc::{self, AcceptStat, AuthStat, CallHeader, HeaderError};
use crate::types::Status;
use crate::{mount_proc, mount_xdr, nfs3_proc, nfs3_xdr, portmap_proc, portmap_xdr};

/// A backend and the rules it is exported under.
#[derive(Clone)]
pub struct Exported {
    pub fs: Arc<dyn Backend>,
    pub exports: Arc<Exports>,
}

/// What one listener serves.
#[derive(Clone)]
pub struct Services {
    /// NFS and MOUNT; `None` where only PORTMAP is served (the UDP portmapper).
    pub backend: Option<Exported>,
    pub limits: Limits,
    pub ports: Ports,
}

/// Answers one record from `peer`. `None` means there is nothing to answer and the
/// connection should be dropped (a header too broken to even address a reply) or the
/// message ignored.
pub fn handle(record: &[u8], svc: &Services, peer: SocketAddr) -> Option<Vec<u8>> {
    let (hdr, args) = match rpc::decode_call(record) {
        Ok(x) => x,
        Err(HeaderError::Malformed) => {
            tracing::warn!(len = record.len(), "malformed RPC call header");
            return None;
        }
        Err(HeaderError::NotACall) => {
            tracing::warn!("RPC reply received by the server; ignored");
            return None;
        }
        Err(HeaderError::RpcMismatch { xid }) => {
            tracing::warn!(xid, "RPC version mismatch");
            return Some(rpc::rpc_mismatch(xid));
        }
        Err(HeaderError::Auth { xid, stat }) => {
            tracing::warn!(xid, ?stat, "RPC credential refused");
            return Some(rpc::auth_error(xid, stat));
        }
    };
    tracing::debug!(xid = hdr.xid, prog = hdr.prog, vers = hdr.vers, proc_ = hdr.proc_, "rpc call");
    Some(route(&hdr, args, svc, peer))
}

fn route(hdr: &CallHeader, args: &[u8], svc: &Services, peer: SocketAddr) -> Vec<u8> {
    let xid = hdr.xid;
    match (hdr.prog, &svc.backend) {
        (NFS_PROGRAM, Some(ex)) => {
            // v2 and v4 probes must learn "3 only" so mount.nfs settles on v3.
            if hdr.vers != NFS_V3 {
                return rpc::prog_mismatch(xid, NFS_V3, NFS_V3);
            }
            let admission = ex.exports.admit(peer);
            if admission == Admission::Refused && hdr.proc_ != nfs3_xdr::procs::NULL {
                // knfsd: svcauth_unix_set_client finds no client for the address (NULL
                // excepted) and denies the call with AUTH_BADCRED.
                // Debug, not warn: a client without access may retry without end.
                tracing::debug!(xid, %peer, "NFS call from a client no export rule names");
                return rpc::auth_error(xid, AuthStat::BadCred);
            }
            finish(xid, hdr, nfs3_xdr::decode_call(hdr.proc_, args), |call| {
                let reply = match (admission, &call) {
                    (Admission::Admitted(opts), _) => {
                        let caller = Caller { cred: opts.effective(&hdr.auth), writable: opts.rw };
                        nfs3_proc::run(ex.fs.as_ref(), &svc.limits, &caller, call)
                    }
                    (_, Nfs3Call::Null) => Nfs3Reply::Null,
                    // Only an insecure port is left: knfsd's nfsd_setuser_and_check_port
                    // answers nfserr_perm ("request from insecure port") before the procedure.
                    _ => {
                        tracing::debug!(xid, %peer, "NFS call from an insecure port refused");
                        nfs3_proc::refuse(&call, Status::Perm)
                    }
                };
                let mut e = rpc::success(xid, nfs3_xdr::reply_capacity(&reply));
                nfs3_xdr::encode_reply(&mut e, &reply);
                e.into_inner()
            })
        }
        (MOUNT_PROGRAM, Some(ex)) => {
            // MOUNT v1/v2 MNT returns a fixed 32-byte handle, which cannot carry ours.
            if hdr.vers != MOUNT_V3 {
                return rpc::prog_mismatch(xid, MOUNT_V3, MOUNT_V3);
            }
            let admitted = matches!(ex.exports.admit(peer), Admission::Admitted(_));
            finish(xid, hdr, mount_xdr::decode_call(hdr.proc_, args), |call| {
                if !admitted && matches!(call, mount_xdr::MountCall::Mnt(_)) {
                    tracing::warn!(xid, %peer, "MNT refused by the export rules");
                }
                let reply = mount_proc::run(ex.fs.as_ref(), &ex.exports, admitted, call);
                let mut e = rpc::success(xid, 256);
                mount_xdr::encode_reply(&mut e, &reply);
                e.into_inner()
            })
        }
        (PORTMAP_PROGRAM, _) => {
            // rpcbind v3/v4 callers fall back to PORTMAP v2 on this answer.
            if hdr.vers != PORTMAP_V2 {
                return rpc::prog_mismatch(xid, PORTMAP_V2, PORTMAP_V2);
            }
            finish(xid, hdr, portmap_xdr::decode_call(hdr.proc_, args), |call| {
                let reply = portmap_proc::run(svc.ports, call);
                let mut e = rpc::success(xid, 128);
                portmap_xdr::encode_reply(&mut e, &reply);
                e.into_inner()
            })
        }
        _ => {
            tracing::debug!(xid, prog = hdr.prog, "program unavailable");
            rpc::accept_error(xid, AcceptStat::ProgUnavail)
        }
    }
}

fn finish<C>(xid: u32, hdr: &CallHeader, decoded: Result<C, ArgError>, run: impl FnOnce(C) -> Vec<u8>) -> Vec<u8> {
    match decoded {
        Ok(call) => run(call),
        Err(ArgError::UnknownProc) => {
            tracing::warn!(xid, prog = hdr.prog, proc_ = hdr.proc_, "procedure unavailable");
            rpc::accept_error(xid, AcceptStat::ProcUnavail)
        }
        Err(ArgError::Garbage) => {
            tracing::warn!(xid, prog = hdr.prog, proc_ = hdr.proc_, "undecodable arguments");
            rpc::accept_error(xid, AcceptStat::GarbageArgs)
        }
    }
}

/// SYSTEM_ERR for a call whose handling panicked, if its xid can be read at all.
pub fn system_error(record: &[u8]) -> Option<Vec<u8>> {
    let xid = u32::from_be_bytes(record.get(..4)?.try_into().ok()?);
    Some(rpc::accept_error(xid, AcceptStat::SystemErr))
}
