//! Module zips: the checks Go's `modzip.CheckZip` makes, the go.sum `h1:`
//! hashes (`dirhash.Hash1`), and Git blob ids of the files, all computed
//! streaming from the zip file on disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use base64::Engine;
use monofs_net::Oid;
use sha1::Digest as _;

use super::module;
use super::proxy::MAX_ZIP;

/// Largest go.mod and LICENSE inside a zip (`modzip.MaxGoMod`, `MaxLICENSE`).
pub const MAX_GO_MOD: u64 = 16 << 20;
/// Most entries in a module zip.
pub const MAX_ZIP_ENTRIES: usize = 1 << 20;

/// One regular file of a module, path relative to the module root.
#[derive(Clone, Debug)]
pub(crate) struct ZipFile {
    pub index: usize,
    pub path: String,
    pub exec: bool,
    pub size: u64,
    pub oid: Oid,
}

pub(crate) struct Checked {
    pub files: Vec<ZipFile>,
    /// go.sum hash of the zip: `h1:<base64>`.
    pub h1: String,
    /// Sum of the file sizes.
    pub bytes: u64,
}

/// The `h1:` hash of a list of `(name, sha256)` (`dirhash.Hash1`).
pub(crate) fn hash1(mut files: Vec<(String, [u8; 32])>) -> String {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = sha2::Sha256::new();
    for (name, sum) in &files {
        h.update(hex(sum).as_bytes());
        h.update(b"  ");
        h.update(name.as_bytes());
        h.update(b"\n");
    }
    format!("h1:{}", base64::engine::general_purpose::STANDARD.encode(h.finalize()))
}

/// The go.sum `/go.mod` hash of a `.mod` file (Go hashes it under the name `go.mod`).
pub(crate) fn hash_go_mod(data: &[u8]) -> String {
    hash1(vec![("go.mod".to_string(), sha2::Sha256::digest(data).into())])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Git blob id of `size` bytes whose content follows.
pub(crate) fn git_blob_hasher(size: u64) -> sha1::Sha1 {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {size}\0").as_bytes());
    h
}

pub(crate) fn git_blob_oid(data: &[u8]) -> Oid {
    let mut h = git_blob_hasher(data.len() as u64);
    h.update(data);
    h.finalize().into()
}

/// Paths folded for the case-collision check, remembering which are directories.
#[derive(Default)]
struct Collisions(HashMap<String, (bool, String)>);

impl Collisions {
    fn check(&mut self, path: &str, is_dir: bool) -> Result<(), String> {
        let folded = path.to_lowercase();
        match self.0.get(&folded) {
            Some((_, other)) if other != path => {
                Err(format!("'{path}' and '{other}' differ only in case"))
            }
            Some((d, _)) if *d != is_dir => Err(format!("'{path}' is both a file and a directory")),
            Some((false, _)) => Err(format!("'{path}' appears twice")),
            Some((true, _)) => Ok(()),
            None => {
                self.0.insert(folded, (is_dir, path.to_string()));
                Ok(())
            }
        }
    }
}

/// Open and check the zip of `module@version` at `zip_path`, hashing every
/// entry. `tick(bytes)` is called as content is read.
pub(crate) fn check(
    zip_path: &Path,
    module: &str,
    version: &str,
    tick: &mut dyn FnMut(u64),
) -> Result<Checked, String> {
    let f = File::open(zip_path).map_err(|e| format!("{}: {e}", zip_path.display()))?;
    let len = f.metadata().map_err(|e| format!("{}: {e}", zip_path.display()))?.len();
    check_reader(f, len, module, version, tick)
}

/// `check` of a zip of `len` bytes read from `r`.
pub(crate) fn check_reader<R: Read + Seek>(
    r: R,
    len: u64,
    module: &str,
    version: &str,
    tick: &mut dyn FnMut(u64),
) -> Result<Checked, String> {
    if len > MAX_ZIP {
        return Err(format!("the zip is {len} bytes, more than Go's limit of {MAX_ZIP}"));
    }
    let mut z = zip::ZipArchive::new(r).map_err(|e| format!("not a valid zip file: {e}"))?;
    if z.has_duplicate_names() {
        return Err("the zip names a file twice".into());
    }
    if z.len() > MAX_ZIP_ENTRIES {
        return Err(format!("the zip has {} entries, more than {MAX_ZIP_ENTRIES}", z.len()));
    }
    let prefix = format!("{module}@{version}/");
    let mut collisions = Collisions::default();
    let mut sums: Vec<(String, [u8; 32])> = Vec::with_capacity(z.len());
    let mut files = Vec::with_capacity(z.len());
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..z.len() {
        let mut zf = z.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = std::str::from_utf8(zf.name_raw())
            .map_err(|_| format!("zip entry {i} has a name that is not UTF-8"))?
            .to_string();
        if name.contains('\n') {
            return Err(format!("zip entry {name:?} has a newline in its name"));
        }
        let rel = name
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("zip entry '{name}' is not under '{prefix}'"))?;
        let size = zf.size();
        let is_dir = rel.is_empty() || rel.ends_with('/');
        if !rel.is_empty() {
            let p = rel.strip_suffix('/').unwrap_or(rel);
            module::check_file_path(p).map_err(|e| format!("zip entry '{name}': {e}"))?;
            // Every parent is a directory, for the collision check.
            for (j, _) in p.match_indices('/') {
                collisions.check(&p[..j], true).map_err(|e| format!("zip: {e}"))?;
            }
            collisions.check(p, is_dir).map_err(|e| format!("zip: {e}"))?;
            let base = p.rsplit('/').next().unwrap_or(p);
            if !is_dir
                && (base.eq_ignore_ascii_case("go.mod") || base.eq_ignore_ascii_case("LICENSE"))
                && size > MAX_GO_MOD
            {
                return Err(format!("'{name}' is {size} bytes, more than Go's limit of {MAX_GO_MOD}"));
            }
        }
        if is_dir && size != 0 {
            return Err(format!("zip directory entry '{name}' has content"));
        }
        total += size;
        if total > MAX_ZIP {
            return Err(format!(
                "the module's files add up to more than Go's limit of {MAX_ZIP} bytes"
            ));
        }
        let mut sha = sha2::Sha256::new();
        let mut git = git_blob_hasher(size);
        let mut read = 0u64;
        loop {
            let n = zf.read(&mut buf).map_err(|e| format!("zip entry '{name}': {e}"))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if read > size {
                return Err(format!("zip entry '{name}' is longer than its header says"));
            }
            sha.update(&buf[..n]);
            git.update(&buf[..n]);
            tick(n as u64);
        }
        if read != size {
            return Err(format!(
                "zip entry '{name}' has {read} bytes, its header says {size}"
            ));
        }
        sums.push((name.clone(), sha.finalize().into()));
        if !is_dir {
            let exec = zf.unix_mode().is_some_and(|m| m & 0o111 != 0);
            files.push(ZipFile { index: i, path: rel.to_string(), exec, size, oid: git.finalize().into() });
        }
    }
    Ok(Checked { files, h1: hash1(sums), bytes: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_mod_hash_matches_go() {
        // cmd/go's goModSum: Hash1 over one file named "go.mod" (not
        // "<module>@<version>/go.mod"), spelled out independently here.
        let data = b"module golang.org/x/text\n";
        let sum: [u8; 32] = sha2::Sha256::digest(data).into();
        let text = format!("{}  go.mod\n", hex(&sum));
        let want = format!(
            "h1:{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
        );
        assert_eq!(hash_go_mod(data), want);
    }

    #[test]
    fn blob_ids_are_gits() {
        assert_eq!(monofs_net::oid_hex(&git_blob_oid(b"")), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
        assert_eq!(monofs_net::oid_hex(&git_blob_oid(b"hello\n")), "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn collisions() {
        let mut c = Collisions::default();
        c.check("a", true).unwrap();
        c.check("a", true).unwrap();
        c.check("a/b", false).unwrap();
        assert!(c.check("A", true).is_err());
        assert!(c.check("A/b", false).is_err());
        assert!(c.check("a", false).is_err());
        assert!(c.check("a/b", false).is_err());
    }
}
