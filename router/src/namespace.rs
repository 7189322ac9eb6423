//! The namespace directories (`/`, hosts, orgs) derived from the published
//! repositories. Rebuilt from the namespace record whenever it changes; a
//! router keeps nothing here that another router could not rebuild.

use std::collections::{BTreeMap, HashMap};

use monofs_net::ns::NsEntry;
use xxhash_rust::xxh3::xxh3_64;

use crate::handle::{child_path, ROOT_PATH};

#[derive(Debug)]
pub struct NsDir {
    /// Path without leading slash; "" for the root.
    pub path: String,
    pub parent: u64,
    /// Sorted by name: (name, path hash of the child).
    pub children: Vec<(Vec<u8>, u64)>,
    /// Index into `Namespace::repos` when this directory is a repository root.
    pub repo: Option<usize>,
    /// Newest commit time of the repositories at or below this directory.
    pub mtime: i64,
}

#[derive(Debug)]
pub struct Namespace {
    pub repos: Vec<NsEntry>,
    pub dirs: HashMap<u64, NsDir>,
    /// Changes whenever the record changes: the cookie verifier of namespace dirs.
    pub generation: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The new path lies inside an existing repository, or an existing one inside it.
    Nested(String),
}

impl Namespace {
    pub fn build(repos: Vec<NsEntry>, raw: &[u8]) -> Namespace {
        let mut dirs: HashMap<u64, NsDir> = HashMap::new();
        let mut children: HashMap<u64, BTreeMap<Vec<u8>, u64>> = HashMap::new();
        dirs.insert(
            ROOT_PATH,
            NsDir {
                path: String::new(),
                parent: ROOT_PATH,
                children: vec![],
                repo: None,
                mtime: 0,
            },
        );
        for (i, r) in repos.iter().enumerate() {
            let mut cur = ROOT_PATH;
            let mut path = String::new();
            for comp in r.path.split('/') {
                let next = child_path(cur, comp.as_bytes());
                children
                    .entry(cur)
                    .or_default()
                    .insert(comp.as_bytes().to_vec(), next);
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(comp);
                let parent = cur;
                let d = dirs.entry(next).or_insert_with(|| NsDir {
                    path: path.clone(),
                    parent,
                    children: vec![],
                    repo: None,
                    mtime: 0,
                });
                d.mtime = d.mtime.max(r.commit_time);
                cur = next;
            }
            dirs.get_mut(&ROOT_PATH).unwrap().mtime = dirs[&ROOT_PATH].mtime.max(r.commit_time);
            dirs.get_mut(&cur).unwrap().repo = Some(i);
        }
        for (h, c) in children {
            let d = dirs.get_mut(&h).unwrap();
            // A repository root shows its tree, not namespace children.
            if d.repo.is_none() {
                d.children = c.into_iter().collect();
            }
        }
        Namespace {
            repos,
            dirs,
            generation: xxh3_64(raw),
        }
    }

    /// Whether `path` can be published beside the existing repositories.
    pub fn check_new(repos: &[NsEntry], path: &str) -> Result<(), Conflict> {
        for r in repos {
            if r.path == path {
                continue;
            }
            let inside =
                |a: &str, b: &str| a.starts_with(b) && a.as_bytes().get(b.len()) == Some(&b'/');
            if inside(path, &r.path) || inside(&r.path, path) {
                return Err(Conflict::Nested(r.path.clone()));
            }
        }
        Ok(())
    }

    pub fn lookup(&self, dir: u64, name: &[u8]) -> Option<u64> {
        let d = self.dirs.get(&dir)?;
        d.children
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| d.children[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, t: i64) -> NsEntry {
        NsEntry {
            path: path.into(),
            url: String::new(),
            git_ref: String::new(),
            commit: [0; 20],
            root_tree: [1; 20],
            commit_time: t,
            root_subdirs: 0,
        }
    }

    #[test]
    fn builds_dirs() {
        let ns = Namespace::build(
            vec![
                e("github.com/a/x", 5),
                e("github.com/b/y", 9),
                e("local/z", 1),
            ],
            b"r",
        );
        let gh = ns.lookup(ROOT_PATH, b"github.com").unwrap();
        assert_eq!(ns.dirs[&gh].children.len(), 2);
        assert_eq!(ns.dirs[&gh].mtime, 9);
        let a = ns.lookup(gh, b"a").unwrap();
        let x = ns.lookup(a, b"x").unwrap();
        assert_eq!(ns.dirs[&x].repo, Some(0));
        assert_eq!(ns.dirs[&x].parent, a);
        assert_eq!(ns.dirs[&ROOT_PATH].children.len(), 2);
        assert!(ns.lookup(ROOT_PATH, b"nope").is_none());
    }

    #[test]
    fn refuses_nesting() {
        let repos = vec![e("h/a/b", 0)];
        assert!(Namespace::check_new(&repos, "h/a/b/c").is_err());
        assert!(Namespace::check_new(&repos, "h/a").is_err());
        assert!(Namespace::check_new(&repos, "h/a/bc").is_ok());
        assert!(Namespace::check_new(&repos, "h/a/b").is_ok());
    }
}
