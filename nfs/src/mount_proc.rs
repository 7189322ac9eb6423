//! MOUNT v3 semantics. We keep no mount table: DUMP is empty and UMNT/UMNTALL are no-ops,
//! which RFC 1813 allows (the list is advisory).

use crate::backend::Backend;
use crate::exports::Exports;
use crate::limits::{MNTPATHLEN, NFS3_FHSIZE};
use crate::mount_xdr::{MountCall, MountReply};
use crate::rpc::{AUTH_NONE, AUTH_UNIX};
use crate::types::MountStatus;

/// Flavors MNT advertises, preferred first (Linux picks AUTH_UNIX).
const AUTH_FLAVORS: [u32; 2] = [AUTH_UNIX, AUTH_NONE];

/// `admitted`: the export rules let this caller mount (its address is named and, for a
/// `secure` client, its port is privileged). Only MNT hands out anything, so only MNT
/// asks; like mountd, EXPORT lists the exports and their clients to anyone.
pub fn run(b: &dyn Backend, exports: &Exports, admitted: bool, call: MountCall) -> MountReply {
    match call {
        MountCall::Null | MountCall::Umnt(_) | MountCall::Umntall => MountReply::Void,
        // mountd answers MNT3ERR_ACCES to an unmatched host and to an illegal port alike
        // (nfs-utils auth_authenticate: "refused mount request ... unmatched host" /
        // "illegal port").
        MountCall::Mnt(_) if !admitted => MountReply::Mnt(Err(MountStatus::Acces)),
        MountCall::Mnt(path) => MountReply::Mnt(mnt(b, &path)),
        MountCall::Dump => MountReply::Dump(Vec::new()),
        MountCall::Export => {
            // The rules of `/` govern every path; with no client there is no export.
            let groups = exports.groups();
            let paths = if groups.is_empty() { Vec::new() } else { b.exports() };
            MountReply::Export(
                paths.into_iter().filter(|p| p.len() <= MNTPATHLEN).map(|p| (p, groups.clone())).collect(),
            )
        }
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
