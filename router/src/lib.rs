//! MonoFS router crate.
