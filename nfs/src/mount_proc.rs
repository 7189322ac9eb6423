//! MOUNT v3 semantics. We keep no mount table: DUMP is empty and UMNT/UMNTALL are no-ops,
//! which RFC 1813 allows (the list is advisory).

use crate::backend::Backend;
use crate::limits::{MNTPATHLEN, NFS3_FHSIZE};
use crate::mount_xdr::{MountCall, MountReply};
use crate::rpc::{AUTH_NONE, AUTH_UNIX};
use crate::types::MountStatus;

/// Flavors MNT advertises, preferred first (Linux picks AUTH_UNIX).
const AUTH_FLAVORS: [u32; 2] = [AUTH_UNIX, AUTH_NONE];

pub fn run(b: &dyn Backend, call: MountCall) -> MountReply {
    match call {
        MountCall::Null | MountCall::Umnt(_) | MountCall::Umntall => MountReply::Void,
        MountCall::Mnt(path) => MountReply::Mnt(mnt(b, &path)),
        MountCall::Dump => MountReply::Dump(Vec::new()),
        MountCall::Export => MountReply::Export(
            b.exports().into_iter().filter(|p| p.len() <= MNTPATHLEN).collect(),
        ),
    }
}

fn mnt(b: &dyn Backend, path: &[u8]) -> Result<(Vec<u8>, Vec<u32>), MountStatus> {
    if path.len() > MNTPATHLEN {
        return Err(MountStatus::NameTooLong);
    }
    match b.mount(path) {
        Ok(fh) if fh.len() <= NFS3_FHSIZE => Ok((fh, AUTH_FLAVORS.to_vec())),
        Ok(fh) => {
            tracing::warn!(len = fh.len(), "backend returned an oversized root handle");
            Err(MountStatus::ServerFault)
        }
        // Ok as an error would encode a success without a handle.
        Err(MountStatus::Ok) => Err(MountStatus::ServerFault),
        Err(s) => Err(s),
    }
}
