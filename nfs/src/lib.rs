//! MonoFS nfs crate.
