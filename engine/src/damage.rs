//! The damaged extents and keys one shard knows of: found by the start-up scan
//! (records skipped, records kept with bad value blocks) and by GETs that hit a
//! bad block. Kept until restart for the operator (`DAMAGED` op) and for repair
//! from replicas.

use std::collections::HashSet;

use serde_json::{json, Value};

/// Damage entries one shard lists; beyond this only the count grows.
pub const MAX_DAMAGE_ENTRIES: usize = 1000;

/// How the damage was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The start-up scan skipped an extent holding no valid record.
    Skipped,
    /// The start-up scan found a record whose meta is intact but whose value
    /// blocks are not (still indexed; GET of a bad block errors).
    BadBlocks,
    /// A GET found the record's meta or a value block damaged.
    Read,
}

impl Found {
    fn as_str(self) -> &'static str {
        match self {
            Found::Skipped => "skipped",
            Found::BadBlocks => "bad-blocks",
            Found::Read => "read",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Log offset of the extent (a record start for [`Found::BadBlocks`]).
    pub offset: u64,
    pub length: u64,
    /// The key the extent's first header names, if readable.
    pub key: Option<Vec<u8>>,
    /// Whether `key` passed the meta checksum (false: it is what the damaged
    /// header says, perhaps itself damaged).
    pub key_verified: bool,
    pub found: Found,
    pub reason: String,
}

/// A shard's damage list: at most [`MAX_DAMAGE_ENTRIES`] entries, one per offset,
/// plus the count of all.
#[derive(Debug, Default)]
pub struct DamageList {
    entries: Vec<Damage>,
    offsets: HashSet<u64>,
    total: u64,
}

impl DamageList {
    /// Record `d` unless an entry at its offset exists. Returns whether it was new.
    pub fn note(&mut self, d: Damage) -> bool {
        if self.offsets.contains(&d.offset) {
            return false;
        }
        self.total += 1;
        if self.entries.len() < MAX_DAMAGE_ENTRIES {
            self.offsets.insert(d.offset);
            self.entries.push(d);
        }
        true
    }

    /// Damaged extents and records found (including those not listed).
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn entries(&self) -> &[Damage] {
        &self.entries
    }

    /// The `DAMAGED` answer: `{"node", "shard", "total", "listed", "truncated", "damaged": [...]}`.
    pub fn to_json(&self, node: &str, shard: u16, log: &str) -> Value {
        let damaged: Vec<Value> = self
            .entries
            .iter()
            .map(|d| {
                json!({
                    "offset": d.offset,
                    "length": d.length,
                    "key": d.key.as_deref().map(hex),
                    "key_verified": d.key_verified,
                    "found": d.found.as_str(),
                    "reason": d.reason,
                })
            })
            .collect();
        json!({
            "node": node,
            "shard": shard,
            "log": log,
            "total": self.total,
            "listed": damaged.len(),
            "truncated": (damaged.len() as u64) < self.total,
            "damaged": damaged,
        })
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(offset: u64) -> Damage {
        Damage { offset, length: 4096, key: Some(b"Bk".to_vec()), key_verified: false, found: Found::Skipped, reason: "r".into() }
    }

    #[test]
    fn bounded_and_deduplicated() {
        let mut l = DamageList::default();
        assert!(l.note(d(4096)));
        assert!(!l.note(d(4096)));
        for i in 0..2 * MAX_DAMAGE_ENTRIES as u64 {
            l.note(d(8192 + i * 4096));
        }
        assert_eq!(l.entries().len(), MAX_DAMAGE_ENTRIES);
        assert_eq!(l.total(), 1 + 2 * MAX_DAMAGE_ENTRIES as u64);
        let j = l.to_json("n1", 0, "x");
        assert_eq!(j["truncated"], true);
        assert_eq!(j["damaged"][0]["key"], "426b");
    }
}
