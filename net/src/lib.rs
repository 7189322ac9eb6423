//! MonoFS net crate.
