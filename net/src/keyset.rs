//! Sets of content keys a node holds, as the anti-entropy repair compares them:
//! which keys an operation covers (`OwnerFilter`), the digest buckets keys fall
//! in, and a node's totals (`NodeStats`).

use xxhash_rust::xxh3::xxh3_64;

use crate::hrw;
use crate::keys;
use crate::proto::MAX_NODES;

/// Which keys an operation covers: content keys only (tree and blob-chunk keys; the
/// namespace record and anything else mutable is never covered). A key matches when
/// every id in `include` is among its top-`rf` HRW owners over `members` (by
/// `keys::placement`), and no id in `exclude` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerFilter {
    pub members: Vec<String>,
    pub rf: u16,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl OwnerFilter {
    /// Every content key, whoever owns it.
    pub fn all() -> OwnerFilter {
        OwnerFilter { members: Vec::new(), rf: 1, include: Vec::new(), exclude: Vec::new() }
    }
}

/// Buckets of a digest: bucket of a key = top 12 bits of xxh3_64(key).
pub const DIGEST_BUCKETS: usize = 4096;
const BUCKET_SHIFT: u32 = 64 - DIGEST_BUCKETS.trailing_zeros();

/// One digest bucket: how many matching keys it holds and the xor of their
/// `xxh3_64(key)`. Xor makes it independent of order, so shards and nodes combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketDigest {
    pub count: u64,
    pub hash: u64,
}

impl BucketDigest {
    pub fn add(&mut self, key_hash: u64) {
        self.count += 1;
        self.hash ^= key_hash;
    }

    pub fn merge(&mut self, other: BucketDigest) {
        self.count += other.count;
        self.hash ^= other.hash;
    }
}

/// A node's totals, summed over its shards.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    /// Keys held (damaged ones excluded).
    pub keys: u64,
    /// Value bytes of those keys.
    pub bytes: u64,
    /// Damaged log extents and records known.
    pub damaged: u64,
    pub shards: u16,
    /// Bytes of the log files.
    pub log_bytes: u64,
}

/// Bucket of a key whose `xxh3_64` is `key_hash`. Buckets are ranges of the hash,
/// so a store ordered by hash holds each bucket contiguously.
pub fn bucket_of_hash(key_hash: u64) -> u16 {
    (key_hash >> BUCKET_SHIFT) as u16
}

pub fn bucket_of(key: &[u8]) -> u16 {
    bucket_of_hash(xxh3_64(key))
}

/// The lowest key hash of `bucket`.
pub fn bucket_start(bucket: u16) -> u64 {
    (bucket as u64) << BUCKET_SHIFT
}

/// Tree and blob-chunk keys: immutable, so a copy from any replica is right.
pub fn is_content_key(key: &[u8]) -> bool {
    matches!((key.first(), key.len()), (Some(&keys::TREE), 21) | (Some(&keys::BLOB), 25))
}

/// An `OwnerFilter` prepared for testing many keys: member seeds hashed once,
/// include/exclude resolved to member positions. Testing a key allocates nothing.
pub struct Matcher<'a> {
    ids: Vec<&'a str>,
    seeds: Vec<u64>,
    rf: usize,
    /// Member positions that must own the key; `None` if an included id is no
    /// member (then no key matches).
    include: Option<Vec<usize>>,
    exclude: Vec<usize>,
}

impl<'a> Matcher<'a> {
    /// Refuses filters no caller means: rf 0, repeated members, more ids than
    /// `MAX_NODES`.
    pub fn new(f: &'a OwnerFilter) -> Result<Matcher<'a>, String> {
        if f.rf == 0 {
            return Err("owner filter: rf must be at least 1".into());
        }
        for (what, n) in [("members", f.members.len()), ("include", f.include.len()), ("exclude", f.exclude.len())] {
            if n > MAX_NODES {
                return Err(format!("owner filter: {n} {what}, at most {MAX_NODES}"));
            }
        }
        let ids: Vec<&str> = f.members.iter().map(String::as_str).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("owner filter: member '{}' named twice", w[0]));
        }
        let pos = |id: &String| ids.iter().position(|m| *m == id.as_str());
        let include = f.include.iter().map(pos).collect::<Option<Vec<usize>>>();
        // An excluded id that is no member owns nothing: it excludes nothing.
        let exclude = f.exclude.iter().filter_map(pos).collect();
        let seeds = ids.iter().map(|id| hrw::seed(id)).collect();
        Ok(Matcher { ids, seeds, rf: f.rf as usize, include, exclude })
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        if !is_content_key(key) {
            return false;
        }
        let Some(include) = &self.include else { return false };
        let pk = keys::placement(key);
        let owns = |i: usize| hrw::is_owner(&self.ids, &self.seeds, pk, self.rf, i);
        include.iter().all(|&i| owns(i)) && !self.exclude.iter().any(|&i| owns(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Oid;

    fn filter(members: &[&str], rf: u16, include: &[&str], exclude: &[&str]) -> OwnerFilter {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        OwnerFilter { members: v(members), rf, include: v(include), exclude: v(exclude) }
    }

    #[test]
    fn matches_as_placement_says() {
        let members = ["n1", "n2", "n3", "n4"];
        let f = filter(&members, 2, &["n2"], &["n3"]);
        let m = Matcher::new(&f).unwrap();
        let mut hits = 0;
        for i in 0..2000u32 {
            let mut oid: Oid = [0; 20];
            oid[..4].copy_from_slice(&i.to_be_bytes());
            for key in [keys::tree(&oid), keys::blob_chunk(&oid, i % 3)] {
                let owners: Vec<&str> =
                    hrw::owners(&members, keys::placement(&key), 2).into_iter().map(|o| members[o]).collect();
                let want = owners.contains(&"n2") && !owners.contains(&"n3");
                assert_eq!(m.matches(&key), want);
                hits += want as u32;
            }
        }
        assert!(hits > 500, "{hits}");
        assert!(!m.matches(&keys::namespace()));
        // Every content key, and nothing else, for an empty filter.
        let all = OwnerFilter::all();
        let m = Matcher::new(&all).unwrap();
        assert!(m.matches(&keys::tree(&[1; 20])) && !m.matches(&keys::namespace()) && !m.matches(b"T1"));
        // An included id that is no member owns nothing.
        let f = filter(&members, 2, &["n9"], &[]);
        assert!(!Matcher::new(&f).unwrap().matches(&keys::tree(&[1; 20])));
    }

    #[test]
    fn refuses_bad_filters() {
        assert!(Matcher::new(&filter(&["a"], 0, &[], &[])).is_err());
        assert!(Matcher::new(&filter(&["a", "b", "a"], 1, &[], &[])).is_err());
    }

    #[test]
    fn buckets_are_hash_ranges() {
        assert_eq!(bucket_of_hash(0), 0);
        assert_eq!(bucket_of_hash(u64::MAX), (DIGEST_BUCKETS - 1) as u16);
        assert_eq!(bucket_of_hash(bucket_start(77)), 77);
        assert_eq!(bucket_of_hash(bucket_start(78) - 1), 77);
    }
}
