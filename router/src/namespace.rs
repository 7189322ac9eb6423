//! The namespace directories (`/`, hosts, orgs) derived from the published
//! repositories: the `repo/` entries of the cluster state. Rebuilt whenever
//! they change; a router keeps nothing here that another router could not
//! rebuild.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use monofs_net::ns::NsEntry;
use monofs_net::state::{ClusterState, Entry, Hlc};
use xxhash_rust::xxh3::xxh3_64;

use crate::state::REPO_PREFIX;

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
    /// Changes whenever the published repositories change: the cookie
    /// verifier of namespace dirs.
    pub generation: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The new path lies inside an existing repository, or an existing one inside it.
    Nested(String),
    /// The path is published from another URL.
    OtherUrl(String),
}

impl Conflict {
    /// Why publishing `new` is refused.
    pub fn message(&self, new: &NsEntry) -> String {
        match self {
            Conflict::Nested(other) => {
                format!("'{}' would nest with the published repository '{other}'", new.path)
            }
            Conflict::OtherUrl(url) => format!(
                "/{} is already published from {url}; refusing to publish {} there (pass --source-id to publish it at another path)",
                new.path, new.url
            ),
        }
    }
}

/// Whether a path published from `a` may be published again from `b`: the same
/// URL (a refresh), or two versions of one Go module (`go:MODULE@VERSION`), whose
/// proxy listing `/go/proxy/MODULE/@v` every version of the module updates.
fn same_source(a: &str, b: &str) -> bool {
    let module = |u: &str| u.strip_prefix("go:").and_then(|m| m.rsplit_once('@')).map(|(m, _)| m.to_string());
    a == b || module(a).is_some_and(|m| module(b) == Some(m))
}

/// Whether one of `accepted` lies inside `path` or `path` inside one of them.
fn nests(accepted: &BTreeSet<String>, path: &str) -> bool {
    let ancestor = path.match_indices('/').any(|(i, _)| accepted.contains(&path[..i]));
    let below = format!("{path}/");
    ancestor || accepted.range(below.clone()..).next().is_some_and(|p| p.starts_with(&below))
}

/// The published repositories, sorted by path, and their generation: the
/// `repo/` entries of `state` joined with the entries of `legacy` namespace
/// records (written before the cluster state, so stamped 0: any write in the
/// state, a removal included, wins over them). Two paths published at once by
/// two routers may nest; the entry that wins the merge order (greater stamp,
/// then writer) is kept and the other is not shown, the same on every router.
pub fn published(state: &ClusterState, legacy: &[Vec<u8>]) -> (Vec<NsEntry>, u64) {
    let mut repos = ClusterState::default();
    for (name, e) in state.entries.range(REPO_PREFIX.to_string()..).take_while(|(n, _)| n.starts_with(REPO_PREFIX)) {
        repos.insert(name.clone(), e.clone());
    }
    for raw in legacy {
        match monofs_net::ns::decode(raw) {
            Ok(entries) => {
                for e in entries {
                    let entry = Entry { stamp: Hlc::ZERO, writer: String::new(), value: Some(e.encode()) };
                    repos.insert(format!("{REPO_PREFIX}{}", e.path), entry);
                }
            }
            Err(e) => tracing::warn!(error = %e, "legacy namespace record is corrupt; ignoring it"),
        }
    }
    let mut candidates: Vec<(Hlc, &str, NsEntry)> = repos
        .live(REPO_PREFIX)
        .filter_map(|(path, e, v)| NsEntry::decode(v).ok().filter(|n| n.path == path).map(|n| (e.stamp, e.writer.as_str(), n)))
        .collect();
    candidates.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
    let mut accepted = BTreeSet::new();
    let mut out = Vec::with_capacity(candidates.len());
    for (_, _, n) in candidates {
        if !nests(&accepted, &n.path) {
            accepted.insert(n.path.clone());
            out.push(n);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let mut bytes = Vec::new();
    for n in &out {
        bytes.extend_from_slice(&n.encode());
    }
    (out, xxh3_64(&bytes))
}

impl Namespace {
    pub fn build(repos: Vec<NsEntry>, generation: u64) -> Namespace {
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
            generation,
        }
    }

    /// Whether `new` can be published beside the existing repositories: its
    /// path must not nest with another's, and a path already published keeps
    /// its URL (publishing the same URL again refreshes it).
    pub fn check_new(repos: &[NsEntry], new: &NsEntry) -> Result<(), Conflict> {
        let path = new.path.as_str();
        for r in repos {
            if r.path == path {
                if !same_source(&r.url, &new.url) {
                    return Err(Conflict::OtherUrl(r.url.clone()));
                }
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
            7,
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
    fn refuses_nesting_and_another_url() {
        let repos = vec![e("h/a/b", 0)];
        assert!(Namespace::check_new(&repos, &e("h/a/b/c", 0)).is_err());
        assert!(Namespace::check_new(&repos, &e("h/a", 0)).is_err());
        assert!(Namespace::check_new(&repos, &e("h/a/bc", 0)).is_ok());
        assert!(Namespace::check_new(&repos, &e("h/a/b", 1)).is_ok(), "the same URL refreshes");
        let other = NsEntry { url: "https://elsewhere".into(), ..e("h/a/b", 0) };
        let c = Namespace::check_new(&repos, &other).unwrap_err();
        assert_eq!(c, Conflict::OtherUrl(String::new()));
        assert!(c.message(&other).contains("--source-id"));
        // Versions of one Go module share the module's proxy listing; other modules do not.
        let v1 = NsEntry { url: "go:example.com/m@v1.0.0".into(), ..e("go/proxy/example.com/m/@v", 0) };
        let v2 = NsEntry { url: "go:example.com/m@v1.1.0".into(), ..v1.clone() };
        let n = NsEntry { url: "go:example.com/n@v1.0.0".into(), ..v1.clone() };
        assert!(Namespace::check_new(&[v1.clone()], &v2).is_ok());
        assert!(Namespace::check_new(&[v1], &n).is_err());
    }

    fn put(s: &mut ClusterState, wall_ms: u64, writer: &str, n: &NsEntry) {
        let entry = Entry { stamp: Hlc { wall_ms, counter: 0 }, writer: writer.into(), value: Some(n.encode()) };
        s.insert(format!("{REPO_PREFIX}{}", n.path), entry);
    }

    #[test]
    fn published_joins_legacy_and_resolves_nesting_by_merge_order() {
        let mut s = ClusterState::default();
        put(&mut s, 5, "r1", &e("h/a", 1));
        // Published at once elsewhere, nesting with h/a: the later stamp wins.
        put(&mut s, 6, "r2", &e("h/a/b", 2));
        put(&mut s, 5, "r1", &e("h/c", 3));
        // The legacy record names h/c too (the state wins) and h/old (kept).
        let legacy = monofs_net::ns::encode(&[e("h/c", 99), e("h/old", 4)]).unwrap();
        let (repos, generation) = published(&s, std::slice::from_ref(&legacy));
        let got: Vec<(&str, i64)> = repos.iter().map(|r| (r.path.as_str(), r.commit_time)).collect();
        assert_eq!(got, [("h/a/b", 2), ("h/c", 3), ("h/old", 4)]);
        // A removal in the state hides the legacy entry.
        s.insert("repo/h/old".into(), Entry { stamp: Hlc { wall_ms: 1, counter: 0 }, writer: "r".into(), value: None });
        let (repos2, generation2) = published(&s, &[legacy]);
        assert_eq!(repos2.len(), 2);
        assert_ne!(generation, generation2);
    }
}
