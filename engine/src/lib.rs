//! MonoFS engine crate.
