//! The binary protocol spoken between router, node and fetcher, the placement
//! function (rendezvous hashing), and the record formats those components share.
//!
//! Everything here is a pure function of bytes except `client`, which adds blocking
//! TCP transport. See docs/ARCHITECTURE.md, "Wire protocol".

pub mod codec;
pub mod proto;
pub mod hrw;
pub mod keys;
pub mod keyset;
pub mod dir;
pub mod ns;
pub mod client;
pub mod key;
pub mod secret;
pub mod sync;
pub mod auth;

pub use codec::{DecodeError, EncodeError};

/// A Git object id (SHA-1).
pub type Oid = [u8; 20];

/// Largest frame body either side accepts. A blob chunk plus headroom; a
/// PUT_BATCH is cut by its sender to stay below it.
pub const MAX_FRAME: usize = 8 << 20;
/// Largest stored record (directory record, namespace record): it must fit one
/// PUT_BATCH frame with its key and one DATA reply (the headroom covers both headers).
pub const MAX_RECORD: usize = MAX_FRAME - 128;
/// Size of a blob chunk: the unit of storage and of READ fan-out.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Most items in one PUT_BATCH.
pub const MAX_BATCH_ITEMS: usize = 4096;
/// Longest key.
pub const MAX_KEY: usize = 64;

pub fn oid_hex(oid: &Oid) -> String {
    oid.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn oid_from_hex(s: &str) -> Option<Oid> {
    if s.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
