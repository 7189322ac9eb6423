//! MonoFS fetcher crate.
