//! The namespace record: which repositories are published, and where.

use crate::codec::{check_len, DecodeError, EncodeError, Reader, Writer};
use crate::proto::MAX_STRING;
use crate::{Oid, MAX_RECORD};

/// Most repositories in one namespace record.
pub const MAX_REPOS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsEntry {
    /// Namespace path without leading slash: `github.com/org/repo`.
    pub path: String,
    pub url: String,
    pub git_ref: String,
    pub commit: Oid,
    pub root_tree: Oid,
    /// Committer time, seconds since the epoch.
    pub commit_time: i64,
    /// Subdirectories of the root tree (for nlink).
    pub root_subdirs: u64,
}

impl NsEntry {
    pub fn encode_into(&self, w: &mut Writer) {
        w.string(&self.path)
            .string(&self.url)
            .string(&self.git_ref)
            .raw(&self.commit)
            .raw(&self.root_tree)
            .i64(self.commit_time)
            .u64(self.root_subdirs);
    }

    pub fn decode_from(r: &mut Reader) -> Result<NsEntry, DecodeError> {
        Ok(NsEntry {
            path: r.string(MAX_STRING)?,
            url: r.string(MAX_STRING)?,
            git_ref: r.string(MAX_STRING)?,
            commit: r.array()?,
            root_tree: r.array()?,
            commit_time: r.i64()?,
            root_subdirs: r.u64()?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut Writer(&mut out));
        out
    }

    pub fn decode(buf: &[u8]) -> Result<NsEntry, DecodeError> {
        let mut r = Reader::new(buf);
        let e = NsEntry::decode_from(&mut r)?;
        r.finish()?;
        Ok(e)
    }
}

/// Encode the record; more than MAX_REPOS entries, a string over MAX_STRING
/// (which `decode` would refuse) or a record over MAX_RECORD is an error.
pub fn encode(entries: &[NsEntry]) -> Result<Vec<u8>, EncodeError> {
    check_len("namespace entries", entries.len(), MAX_REPOS)?;
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    w.u32(entries.len() as u32);
    for e in entries {
        check_len("namespace path", e.path.len(), MAX_STRING)?;
        check_len("namespace url", e.url.len(), MAX_STRING)?;
        check_len("namespace ref", e.git_ref.len(), MAX_STRING)?;
        e.encode_into(&mut w);
    }
    check_len("namespace record", out.len(), MAX_RECORD)?;
    Ok(out)
}

pub fn decode(buf: &[u8]) -> Result<Vec<NsEntry>, DecodeError> {
    let mut r = Reader::new(buf);
    let n = r.u32()? as usize;
    if n > MAX_REPOS {
        return Err(DecodeError::TooLong { len: n, max: MAX_REPOS });
    }
    let mut v = Vec::with_capacity(n.min(r.remaining() / 64));
    for _ in 0..n {
        v.push(NsEntry::decode_from(&mut r)?);
    }
    r.finish()?;
    Ok(v)
}

/// Replace or add `entry` by path, keeping entries sorted by path.
pub fn upsert(entries: &mut Vec<NsEntry>, entry: NsEntry) {
    match entries.binary_search_by(|e| e.path.cmp(&entry.path)) {
        Ok(i) => entries[i] = entry,
        Err(i) => entries.insert(i, entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_upsert() {
        let e = |p: &str, t: i64| NsEntry {
            path: p.into(),
            url: "u".into(),
            git_ref: "main".into(),
            commit: [1; 20],
            root_tree: [2; 20],
            commit_time: t,
            root_subdirs: 3,
        };
        let mut v = vec![];
        upsert(&mut v, e("b/x", 1));
        upsert(&mut v, e("a/y", 1));
        upsert(&mut v, e("b/x", 2));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].path, "a/y");
        assert_eq!(v[1].commit_time, 2);
        assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v);
        assert_eq!(NsEntry::decode(&v[0].encode()).unwrap(), v[0]);
    }

    fn entry(path: String, url: String) -> NsEntry {
        NsEntry { path, url, git_ref: "main".into(), commit: [1; 20], root_tree: [2; 20], commit_time: 0, root_subdirs: 0 }
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        // A field over MAX_STRING: the decoder would refuse the record.
        let long_url = entry("a/b".into(), "u".repeat(MAX_STRING + 1));
        assert!(matches!(encode(&[long_url]), Err(EncodeError::TooLong { what: "namespace url", .. })));
        let exact = entry("a/b".into(), "u".repeat(MAX_STRING));
        assert_eq!(decode(&encode(std::slice::from_ref(&exact)).unwrap()).unwrap(), vec![exact]);
        // Within every field limit but over the record limit.
        let big: Vec<NsEntry> = (0..MAX_RECORD / MAX_STRING + 1)
            .map(|i| entry(format!("p/{i}"), "u".repeat(MAX_STRING)))
            .collect();
        assert!(matches!(encode(&big), Err(EncodeError::TooLong { what: "namespace record", .. })));
        // More repositories than allowed.
        let many: Vec<NsEntry> = (0..=MAX_REPOS).map(|i| entry(format!("p/{i}"), String::new())).collect();
        assert!(matches!(encode(&many), Err(EncodeError::TooLong { what: "namespace entries", .. })));
    }
}
