//! The cluster state: a state-based CRDT (a map of last-writer-wins registers)
//! stored whole on every node under `keys::cluster_state()`.
//!
//! Merge rule: for each entry name, the entry with the greater
//! `(stamp, writer, value)` wins. That order is total, so the join is
//! commutative, associative and idempotent: replicas that have seen the same
//! writes hold the same state whatever the order they saw them in, and every
//! decision (which URL a path has, whether the cluster is drained) is the same
//! on every router. `value` only breaks ties between two writes with the same
//! stamp and writer, which a correct writer never issues (its clock is
//! monotonic); it keeps the join a function even then. A removal is a
//! tombstone (`value: None`) and wins or loses like any other write.
//!
//! Encoding: `u8 version (1), u32 n`, then n entries in strictly increasing
//! name order: `string name, u64 wall_ms, u32 counter, string writer, u8
//! present (0 tombstone, 1 value), [bytes32 value]`. Sorted, unique names make
//! the encoding canonical: what decodes re-encodes to the same bytes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec::{check_len, DecodeError, EncodeError, Reader, Writer};
use crate::MAX_RECORD;

/// Format version of the encoded state.
pub const VERSION: u8 = 1;
/// Most entries (repositories, routers, failovers, drain) in the state.
pub const MAX_ENTRIES: usize = crate::ns::MAX_REPOS + 4096;
/// Longest entry name (`repo/<namespace path>` and the like).
pub const MAX_NAME: usize = 4096;
/// Longest writer id (a router id).
pub const MAX_WRITER: usize = 256;
/// Longest entry value (a namespace entry with long URL and ref still fits).
pub const MAX_VALUE: usize = 256 << 10;

/// Hybrid logical clock stamp: wall-clock milliseconds, and a counter that
/// orders stamps issued within one millisecond or after observing a later one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    pub wall_ms: u64,
    pub counter: u32,
}

impl Hlc {
    /// The stamp of entries read from before the cluster state existed.
    pub const ZERO: Hlc = Hlc { wall_ms: 0, counter: 0 };

    /// The next stamp after `self` at wall time `wall_ms`.
    pub fn tick(self, wall_ms: u64) -> Hlc {
        if wall_ms > self.wall_ms {
            Hlc { wall_ms, counter: 0 }
        } else if self.counter == u32::MAX {
            Hlc { wall_ms: self.wall_ms.saturating_add(1), counter: 0 }
        } else {
            Hlc { wall_ms: self.wall_ms, counter: self.counter + 1 }
        }
    }
}

/// This process's clock: every stamp it issues is greater than every stamp it
/// issued or observed before.
pub struct Clock {
    last: Mutex<Hlc>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    pub const fn new() -> Clock {
        Clock { last: Mutex::new(Hlc::ZERO) }
    }

    /// A fresh stamp.
    pub fn now(&self) -> Hlc {
        let mut last = crate::sync::lock(&self.last);
        *last = last.tick(wall_ms());
        *last
    }

    /// Take note of a stamp read from elsewhere, so the next `now()` exceeds it.
    pub fn observe(&self, remote: Hlc) {
        let mut last = crate::sync::lock(&self.last);
        *last = (*last).max(remote);
    }
}

/// The process-wide clock.
pub static CLOCK: Clock = Clock::new();

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub stamp: Hlc,
    /// Who wrote it (a router id).
    pub writer: String,
    /// None: removed (a tombstone).
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// Whether `self` wins over `other` under the merge rule.
    fn beats(&self, other: &Entry) -> bool {
        (self.stamp, &self.writer, &self.value) > (other.stamp, &other.writer, &other.value)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub entries: BTreeMap<String, Entry>,
}

impl ClusterState {
    /// Join one entry in.
    pub fn insert(&mut self, name: String, e: Entry) {
        match self.entries.get_mut(&name) {
            Some(old) if !e.beats(old) => {}
            Some(old) => *old = e,
            None => {
                self.entries.insert(name, e);
            }
        }
    }

    /// Join `other` into `self`.
    pub fn join(&mut self, other: ClusterState) {
        for (name, e) in other.entries {
            self.insert(name, e);
        }
    }

    /// The greatest stamp held (for `Clock::observe`).
    pub fn max_stamp(&self) -> Hlc {
        self.entries.values().map(|e| e.stamp).max().unwrap_or(Hlc::ZERO)
    }

    /// Live (not removed) values of the entries named `prefix…`, by the rest of the name.
    pub fn live<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Entry, &'a [u8])> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(n, _)| n.starts_with(prefix))
            .filter_map(move |(n, e)| Some((&n[prefix.len()..], e, e.value.as_deref()?)))
    }

    /// The live value of one entry.
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.entries.get(name)?.value.as_deref()
    }

    /// Encode; a state beyond any limit (which `decode` would refuse) is an error.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        check_len("cluster state entries", self.entries.len(), MAX_ENTRIES)?;
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u8(VERSION).u32(self.entries.len() as u32);
        for (name, e) in &self.entries {
            check_len("cluster state entry name", name.len(), MAX_NAME)?;
            check_len("cluster state writer", e.writer.len(), MAX_WRITER)?;
            w.string(name).u64(e.stamp.wall_ms).u32(e.stamp.counter).string(&e.writer);
            match &e.value {
                None => {
                    w.u8(0);
                }
                Some(v) => {
                    check_len("cluster state value", v.len(), MAX_VALUE)?;
                    w.u8(1).bytes32(v);
                }
            }
            check_len("cluster state", w.0.len(), MAX_RECORD)?;
        }
        Ok(out)
    }

    pub fn decode(buf: &[u8]) -> Result<ClusterState, DecodeError> {
        check_len("cluster state", buf.len(), MAX_RECORD)
            .map_err(|_| DecodeError::TooLong { len: buf.len(), max: MAX_RECORD })?;
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::BadValue(version as u32));
        }
        let n = r.u32()? as usize;
        if n > MAX_ENTRIES {
            return Err(DecodeError::TooLong { len: n, max: MAX_ENTRIES });
        }
        let mut entries = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..n {
            let name = r.string(MAX_NAME)?;
            // Strictly increasing names: no duplicates, one encoding per state.
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(DecodeError::BadValue(entries.len() as u32));
            }
            let stamp = Hlc { wall_ms: r.u64()?, counter: r.u32()? };
            let writer = r.string(MAX_WRITER)?;
            let value = match r.u8()? {
                0 => None,
                1 => Some(r.bytes32(MAX_VALUE)?.to_vec()),
                other => return Err(DecodeError::BadValue(other as u32)),
            };
            last = Some(name.clone());
            entries.insert(name, Entry { stamp, writer, value });
        }
        r.finish()?;
        Ok(ClusterState { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reproducible random numbers without a dependency: xxh3 of a counter.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 += 1;
            xxhash_rust::xxh3::xxh3_64(&self.0.to_le_bytes()) % n
        }
    }

    fn random_state(rng: &mut Rng) -> ClusterState {
        let mut s = ClusterState::default();
        for _ in 0..rng.below(8) {
            let e = Entry {
                // Few names, stamps and writers, so that collisions and ties happen.
                stamp: Hlc { wall_ms: rng.below(4), counter: rng.below(3) as u32 },
                writer: format!("r{}", rng.below(3)),
                value: match rng.below(4) {
                    0 => None,
                    v => Some(vec![v as u8; rng.below(3) as usize]),
                },
            };
            s.insert(format!("repo/{}", rng.below(5)), e);
        }
        s
    }

    fn joined(parts: &[ClusterState]) -> ClusterState {
        let mut s = ClusterState::default();
        for p in parts {
            s.join(p.clone());
        }
        s
    }

    #[test]
    fn join_is_commutative_associative_idempotent() {
        let mut rng = Rng(0);
        for _ in 0..2000 {
            let parts: Vec<ClusterState> = (0..1 + rng.below(6)).map(|_| random_state(&mut rng)).collect();
            let expect = joined(&parts);
            // Many random orders of the same states give the same result.
            for _ in 0..10 {
                let mut order = parts.clone();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i as u64 + 1) as usize);
                }
                assert_eq!(joined(&order), expect);
            }
            // Any grouping: join two halves joined separately.
            let cut = rng.below(parts.len() as u64 + 1) as usize;
            let mut left = joined(&parts[..cut]);
            left.join(joined(&parts[cut..]));
            assert_eq!(left, expect);
            // Idempotent: joining again, or with itself, changes nothing.
            let mut again = expect.clone();
            again.join(expect.clone());
            for p in &parts {
                again.join(p.clone());
            }
            assert_eq!(again, expect);
            // And it survives the encoding.
            assert_eq!(ClusterState::decode(&expect.encode().unwrap()).unwrap(), expect);
        }
    }

    #[test]
    fn greater_stamp_then_writer_wins() {
        let e = |wall_ms, writer: &str, v: &[u8]| Entry {
            stamp: Hlc { wall_ms, counter: 0 },
            writer: writer.into(),
            value: Some(v.to_vec()),
        };
        let mut s = ClusterState::default();
        s.insert("drain".into(), e(5, "b", b"first"));
        s.insert("drain".into(), e(4, "z", b"older"));
        assert_eq!(s.value("drain"), Some(&b"first"[..]));
        s.insert("drain".into(), e(5, "c", b"same time, greater writer"));
        assert_eq!(s.value("drain"), Some(&b"same time, greater writer"[..]));
        s.insert("drain".into(), Entry { stamp: Hlc { wall_ms: 6, counter: 0 }, writer: "a".into(), value: None });
        assert_eq!(s.value("drain"), None);
        assert!(s.entries.contains_key("drain"), "a removal is kept as a tombstone");
        s.insert("repo/a".into(), e(1, "a", b"1"));
        s.insert("repo/b".into(), e(1, "a", b"2"));
        s.insert("repox".into(), e(1, "a", b"3"));
        let live: Vec<&str> = s.live("repo/").map(|(n, _, _)| n).collect();
        assert_eq!(live, ["a", "b"]);
        assert_eq!(s.max_stamp(), Hlc { wall_ms: 6, counter: 0 });
    }

    #[test]
    fn clock_is_monotonic_and_passes_what_it_observed() {
        let c = Clock::new();
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        let future = Hlc { wall_ms: wall_ms() + 3_600_000, counter: 7 };
        c.observe(future);
        assert!(c.now() > future);
        assert_eq!(Hlc { wall_ms: 3, counter: u32::MAX }.tick(1), Hlc { wall_ms: 4, counter: 0 });
        assert_eq!(Hlc { wall_ms: 3, counter: 2 }.tick(9), Hlc { wall_ms: 9, counter: 0 });
    }

    #[test]
    fn decode_refuses_bad_input() {
        let mut s = ClusterState::default();
        s.insert("a".into(), Entry { stamp: Hlc::ZERO, writer: "w".into(), value: Some(b"v".to_vec()) });
        s.insert("b".into(), Entry { stamp: Hlc::ZERO, writer: "w".into(), value: None });
        let raw = s.encode().unwrap();
        for cut in 0..raw.len() {
            assert!(ClusterState::decode(&raw[..cut]).is_err(), "truncated at {cut} decoded");
        }
        let mut bad_version = raw.clone();
        bad_version[0] = 9;
        assert!(ClusterState::decode(&bad_version).is_err());
        // Names out of order (swap "a" and "b").
        let mut unsorted = raw.clone();
        let a = unsorted.iter().position(|&b| b == b'a').unwrap();
        let b = unsorted.iter().position(|&b| b == b'b').unwrap();
        unsorted.swap(a, b);
        assert!(ClusterState::decode(&unsorted).is_err());
        // A count beyond the limit is refused before anything is allocated.
        assert!(ClusterState::decode(&[VERSION, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut trailing = raw.clone();
        trailing.push(0);
        assert!(ClusterState::decode(&trailing).is_err());
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let mut s = ClusterState::default();
        let e = |v: usize| Entry { stamp: Hlc::ZERO, writer: "w".into(), value: Some(vec![0; v]) };
        s.insert("x".repeat(MAX_NAME + 1), e(0));
        assert!(matches!(s.encode(), Err(EncodeError::TooLong { what: "cluster state entry name", .. })));
        let mut s = ClusterState::default();
        s.insert("x".into(), e(MAX_VALUE + 1));
        assert!(matches!(s.encode(), Err(EncodeError::TooLong { what: "cluster state value", .. })));
        let mut s = ClusterState::default();
        for i in 0..MAX_RECORD / MAX_VALUE + 1 {
            s.insert(format!("repo/{i}"), e(MAX_VALUE));
        }
        assert!(matches!(s.encode(), Err(EncodeError::TooLong { what: "cluster state", .. })));
    }
}
