//! MOUNT v3 (RFC 1813 Appendix I) wire formats.

use crate::nfs3_xdr::ArgError;
use crate::types::{Fh, MountStatus};
use crate::xdr::{Decoder, Encoder};

pub const MOUNT_PROGRAM: u32 = 100005;
pub const MOUNT_V3: u32 = 3;

pub mod procs {
    pub const NULL: u32 = 0;
    pub const MNT: u32 = 1;
    pub const DUMP: u32 = 2;
    pub const UMNT: u32 = 3;
    pub const UMNTALL: u32 = 4;
    pub const EXPORT: u32 = 5;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountCall {
    Null,
    /// Paths are bounded only by the record here; the procedure answers NAMETOOLONG.
    Mnt(Vec<u8>),
    Dump,
    Umnt(Vec<u8>),
    Umntall,
    Export,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountReply {
    Void,
    /// Root handle and accepted auth flavors.
    Mnt(Result<(Fh, Vec<u32>), MountStatus>),
    /// (hostname, directory) pairs.
    Dump(Vec<(Vec<u8>, Vec<u8>)>),
    /// Export paths, each with the groups (client names) it is exported to.
    Export(Vec<(Vec<u8>, Vec<Vec<u8>>)>),
}

pub fn decode_call(proc_: u32, args: &[u8]) -> Result<MountCall, ArgError> {
    let d = &mut Decoder::new(args);
    Ok(match proc_ {
        procs::NULL => MountCall::Null,
        procs::MNT => MountCall::Mnt(d.opaque(usize::MAX)?.to_vec()),
        procs::DUMP => MountCall::Dump,
        procs::UMNT => MountCall::Umnt(d.opaque(usize::MAX)?.to_vec()),
        procs::UMNTALL => MountCall::Umntall,
        procs::EXPORT => MountCall::Export,
        _ => return Err(ArgError::UnknownProc),
    })
}

pub fn encode_reply(e: &mut Encoder, r: &MountReply) {
    match r {
        MountReply::Void => {}
        MountReply::Mnt(Ok((fh, flavors))) => {
            e.u32(MountStatus::Ok as u32);
            e.opaque(fh);
            e.u32(flavors.len() as u32);
            for f in flavors {
                e.u32(*f);
            }
        }
        MountReply::Mnt(Err(s)) => e.u32(*s as u32),
        MountReply::Dump(list) => {
            for (host, dir) in list {
                e.bool(true);
                e.opaque(host);
                e.opaque(dir);
            }
            e.bool(false);
        }
        MountReply::Export(list) => {
            for (dir, groups) in list {
                e.bool(true);
                e.opaque(dir);
                for g in groups {
                    e.bool(true);
                    e.opaque(g);
                }
                e.bool(false);
            }
            e.bool(false);
        }
    }
}
