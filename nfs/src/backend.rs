//! What a filesystem must supply for this crate to serve it. The nfs layer handles
//! everything on the wire (sizes, cookies verifiers, post-op attributes); the backend
//! only answers questions about handles.

use crate::types::*;

pub trait Backend: Send + Sync + 'static {
    /// MNT: the root handle for an export path as sent by the client ("/" etc.).
    fn mount(&self, path: &[u8]) -> Result<Fh, MountStatus>;
    /// EXPORT: the export paths (e.g. `[b"/"]`).
    fn exports(&self) -> Vec<Vec<u8>>;
    fn getattr(&self, fh: &[u8]) -> Result<Fattr, Status>;
    /// `name` may be "." or ".."; the backend resolves those too.
    fn lookup(&self, dir: &[u8], name: &[u8]) -> Result<(Fh, Fattr), Status>;
    /// Up to `count` bytes at `offset`, and whether the end of file was reached.
    fn read(&self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), Status>;
    fn readlink(&self, fh: &[u8]) -> Result<Vec<u8>, Status>;
    /// Up to `max` entries whose cookie is greater than `cookie` (0 = from the start), in
    /// cookie order.
    fn readdir(&self, dir: &[u8], cookie: u64, max: usize) -> Result<DirPage, Status>;
    /// Changes whenever cookies of `dir` stop being valid.
    fn cookie_verifier(&self, dir: &[u8]) -> Result<[u8; 8], Status>;
    fn fsstat(&self, fh: &[u8]) -> Result<FsStat, Status>;

    /// ACCESS. The backend sees no credentials, so the default grants READ, LOOKUP
    /// (directories) and EXECUTE (non-directories) when any of the owner/group/other bits
    /// allow it, and never MODIFY, EXTEND or DELETE; the nfs layer then keeps only the
    /// bits the caller's squashed identity holds (`permission::access_bits`).
    fn access(&self, fh: &[u8], requested: u32) -> Result<(Fattr, u32), Status> {
        let attr = self.getattr(fh)?;
        let mut granted = 0;
        if attr.mode & 0o444 != 0 {
            granted |= access::READ;
        }
        if attr.mode & 0o111 != 0 {
            granted |= if attr.ftype == Ftype::Dir { access::LOOKUP } else { access::EXECUTE };
        }
        Ok((attr, requested & granted))
    }

    // Mutating procedures: a read-only namespace answers ROFS to all of them.

    /// SETATTR; returns the new attributes.
    fn setattr(&self, _args: &SetattrArgs) -> Result<Fattr, Status> {
        Err(Status::Rofs)
    }
    fn write(&self, _args: &WriteArgs) -> Result<WriteOk, Status> {
        Err(Status::Rofs)
    }
    /// CREATE; returns the new file's handle and attributes.
    fn create(&self, _args: &CreateArgs) -> Result<(Fh, Fattr), Status> {
        Err(Status::Rofs)
    }
    fn mkdir(&self, _args: &MkdirArgs) -> Result<(Fh, Fattr), Status> {
        Err(Status::Rofs)
    }
    fn symlink(&self, _args: &SymlinkArgs) -> Result<(Fh, Fattr), Status> {
        Err(Status::Rofs)
    }
    fn mknod(&self, _args: &MknodArgs) -> Result<(Fh, Fattr), Status> {
        Err(Status::Rofs)
    }
    fn remove(&self, _args: &DirOpArgs) -> Result<(), Status> {
        Err(Status::Rofs)
    }
    fn rmdir(&self, _args: &DirOpArgs) -> Result<(), Status> {
        Err(Status::Rofs)
    }
    fn rename(&self, _args: &RenameArgs) -> Result<(), Status> {
        Err(Status::Rofs)
    }
    fn link(&self, _args: &LinkArgs) -> Result<(), Status> {
        Err(Status::Rofs)
    }
    /// COMMIT; returns the write verifier.
    fn commit(&self, _args: &CommitArgs) -> Result<[u8; 8], Status> {
        Err(Status::Rofs)
    }
}
