//! Directory records: a Git tree as MonoFS stores it, with the sizes Git trees
//! lack, so a directory listing with attributes is one record read.

use crate::codec::{check_len, DecodeError, EncodeError, Reader, Writer};
use crate::{Oid, MAX_RECORD};

pub const MODE_TREE: u32 = 0o040000;
pub const MODE_FILE: u32 = 0o100644;
pub const MODE_EXEC: u32 = 0o100755;
pub const MODE_SYMLINK: u32 = 0o120000;
pub const MODE_SUBMODULE: u32 = 0o160000;

/// Most entries a directory record may hold; Git itself has no limit, MonoFS
/// refuses to ingest a tree beyond this.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Longest entry name (NFS name_max).
pub const MAX_NAME: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub mode: u32,
    pub oid: Oid,
    /// Blob size for files and symlinks; number of subdirectories for trees;
    /// 0 for submodules.
    pub size: u64,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode == MODE_TREE || self.mode == MODE_SUBMODULE
    }
}

/// Encode entries, which must be sorted by name and unique. A directory over
/// MAX_ENTRIES, a name over MAX_NAME or a record over MAX_RECORD is an error.
pub fn encode(entries: &[Entry]) -> Result<Vec<u8>, EncodeError> {
    check_len("directory entries", entries.len(), MAX_ENTRIES)?;
    debug_assert!(entries.windows(2).all(|w| w[0].name < w[1].name), "entries unsorted");
    let mut out = Vec::with_capacity(4 + entries.len() * 48);
    let mut w = Writer(&mut out);
    w.u32(entries.len() as u32);
    for e in entries {
        check_len("entry name", e.name.len(), MAX_NAME)?;
        w.bytes16(&e.name).u32(e.mode).raw(&e.oid).u64(e.size);
    }
    check_len("directory record", out.len(), MAX_RECORD)?;
    Ok(out)
}

pub fn decode(buf: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut r = Reader::new(buf);
    let n = r.u32()? as usize;
    if n > MAX_ENTRIES {
        return Err(DecodeError::TooLong { len: n, max: MAX_ENTRIES });
    }
    // Each entry takes at least 34 bytes: never allocate beyond what the input can hold.
    let mut entries = Vec::with_capacity(n.min(r.remaining() / 34));
    for _ in 0..n {
        let name = r.bytes16()?;
        if name.len() > MAX_NAME {
            return Err(DecodeError::TooLong { len: name.len(), max: MAX_NAME });
        }
        entries.push(Entry { name: name.to_vec(), mode: r.u32()?, oid: r.array()?, size: r.u64()? });
    }
    r.finish()?;
    Ok(entries)
}

/// Find `name` in sorted entries.
pub fn find<'a>(entries: &'a [Entry], name: &[u8]) -> Option<(usize, &'a Entry)> {
    entries.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| (i, &entries[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_find() {
        let es = vec![
            Entry { name: b"a b".to_vec(), mode: MODE_FILE, oid: [1; 20], size: 3 },
            Entry { name: "é".as_bytes().to_vec(), mode: MODE_TREE, oid: [2; 20], size: 1 },
        ];
        let enc = encode(&es).unwrap();
        assert_eq!(decode(&enc).unwrap(), es);
        assert_eq!(find(&es, "é".as_bytes()).unwrap().0, 1);
        assert!(find(&es, b"zz").is_none());
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut]).is_err());
        }
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    fn entry(name: Vec<u8>) -> Entry {
        Entry { name, mode: MODE_FILE, oid: [7; 20], size: 1 }
    }

    #[test]
    fn encode_refuses_what_the_format_cannot_hold() {
        // A Git tree may name an entry with up to 4096 bytes; a record holds 255.
        let long = entry(vec![b'n'; 300]);
        assert_eq!(
            encode(&[long]),
            Err(EncodeError::TooLong { what: "entry name", len: 300, max: MAX_NAME })
        );
        assert!(encode(&[entry(vec![b'n'; MAX_NAME])]).is_ok());
        // Names of 255 bytes: about 29,000 entries fill a record.
        let per = 2 + MAX_NAME + 4 + 20 + 8;
        let n = MAX_RECORD / per + 1;
        let big: Vec<Entry> = (0..n)
            .map(|i| {
                let mut name = format!("{i:08}").into_bytes();
                name.resize(MAX_NAME, b'x');
                entry(name)
            })
            .collect();
        assert!(matches!(encode(&big), Err(EncodeError::TooLong { what: "directory record", .. })));
        assert!(encode(&big[..n - 1]).is_ok());
        let too_many: Vec<Entry> = (0..=MAX_ENTRIES).map(|i| entry((i as u32).to_be_bytes().to_vec())).collect();
        assert!(matches!(encode(&too_many), Err(EncodeError::TooLong { what: "directory entries", .. })));
    }
}
