//! Repository URLs: what kind of remote a URL names, the form handed to `git`,
//! and the namespace path a repository is published under.

use std::path::Path;

use crate::IngestError;

/// Longest namespace path component.
pub const MAX_COMPONENT: usize = 255;
/// Longest namespace path.
pub const MAX_NS_PATH: usize = 1024;
/// Longest URL accepted.
pub const MAX_URL: usize = 4096;

/// Schemes `git` is allowed to use for an ingest. `ext::` and friends are refused.
const SCHEMES: &[&str] = &["https", "http", "git", "ssh", "git+ssh", "ssh+git", "file"];

/// A URL split into what the fetch and the namespace need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Remote {
    /// `scheme://[user@]host[:port]/path`
    Net { host: String, path: String },
    /// `file:///abs/path` or a local path (made absolute).
    Local { path: String },
    /// `[user@]host:path` (scp-like ssh).
    Scp { host: String, path: String },
}

fn bad(url: &str, why: &str) -> IngestError {
    IngestError::BadUrl {
        url: redact(url),
        reason: why.to_string(),
    }
}

/// `url` with any password removed, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let user = &rest[..at];
            if let Some((u, _)) = user.split_once(':') {
                return format!("{scheme}://{u}:***@{}", &rest[at + 1..]);
            }
        }
    }
    url.to_string()
}

pub(crate) fn parse(url: &str) -> Result<Remote, IngestError> {
    if url.is_empty() {
        return Err(bad(url, "the URL is empty"));
    }
    if url.len() > MAX_URL {
        return Err(bad(url, "the URL is too long"));
    }
    if url.starts_with('-') {
        return Err(bad(url, "a URL may not start with '-'"));
    }
    if url.chars().any(|c| c.is_control()) {
        return Err(bad(url, "the URL contains control characters"));
    }
    if let Some(i) = url.find("::") {
        if !url[..i].contains('/') {
            return Err(bad(
                url,
                "remote helper URLs (<transport>::<address>) are not supported",
            ));
        }
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme_lc = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme_lc.as_str()) {
            return Err(bad(
                url,
                &format!("unsupported scheme '{scheme}' (use https, http, git, ssh or file)"),
            ));
        }
        if scheme_lc == "file" {
            // file:///abs/path or file://localhost/abs/path
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(bad(url, "a file:// URL needs an absolute path"));
            }
            return Ok(Remote::Local {
                path: path.to_string(),
            });
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let hostport = authority
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(authority);
        if hostport.starts_with('[') {
            return Err(bad(
                url,
                "IPv6 literal hosts are not supported; use a host name",
            ));
        }
        let host = match hostport.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return Err(bad(url, "the port is not a number")),
            None => hostport,
        };
        if host.is_empty() {
            return Err(bad(url, "the URL has no host"));
        }
        return Ok(Remote::Net {
            host: host.to_ascii_lowercase(),
            path: path.to_string(),
        });
    }
    // scp-like: [user@]host:path, where the colon comes before any slash.
    if !url.starts_with('/') && !url.starts_with('.') {
        if let Some(colon) = url.find(':') {
            if url[..colon].find('/').is_none() {
                let hostpart = &url[..colon];
                let host = hostpart
                    .rsplit_once('@')
                    .map(|(_, h)| h)
                    .unwrap_or(hostpart);
                if host.is_empty() {
                    return Err(bad(url, "the URL has no host"));
                }
                return Ok(Remote::Scp {
                    host: host.to_ascii_lowercase(),
                    path: url[colon + 1..].to_string(),
                });
            }
        }
    }
    // A local path; relative paths are taken from the current directory.
    let p = Path::new(url);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad(url, &format!("cannot resolve a relative path: {e}")))?
            .join(p)
    };
    let s = abs
        .to_str()
        .ok_or_else(|| bad(url, "the path is not UTF-8"))?;
    Ok(Remote::Local {
        path: s.to_string(),
    })
}

/// The URL handed to `git fetch`: the URL itself, except that local paths are
/// made absolute. Local paths and file:// URLs only with `allow_local`: every
/// fetch goes through here, so this is where the fetcher's file system is
/// closed to its clients.
pub(crate) fn fetch_url(url: &str, allow_local: bool) -> Result<String, IngestError> {
    match parse(url)? {
        Remote::Local { .. } if !allow_local => Err(bad(
            url,
            "local paths and file:// URLs are refused: the fetcher was not started with --allow-local-sources",
        )),
        Remote::Local { path } if !url.contains("://") => Ok(path),
        _ => Ok(url.to_string()),
    }
}

/// Hexadecimal digits of the path hash in a local repository's default
/// namespace path (`local/<name>-<hash>`): 32 bits, so two local repositories
/// of one name collide only by chance (about one in 4 billion per pair).
pub const LOCAL_ID_HEX: usize = 8;

/// The hash that tells apart local repositories of one name: of the
/// repository's directory (`/a/repo` for `/a/repo/.git` too), with symbolic
/// links resolved when the directory exists, so each spelling of one
/// repository gets the same path.
fn local_id(comps: &[&str]) -> String {
    let joined = format!("/{}", comps.join("/"));
    let canonical = std::fs::canonicalize(&joined)
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or(joined);
    let h = xxhash_rust::xxh3::xxh3_64(canonical.as_bytes());
    format!("{h:016x}")[..LOCAL_ID_HEX].to_string()
}

/// The directory of a local repository URL (`file://` or a path), None for a
/// remote one.
pub(crate) fn local_path(url: &str) -> Option<String> {
    match parse(url).ok()? {
        Remote::Local { path } => Some(path),
        _ => None,
    }
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

fn strip_git(name: &str) -> &str {
    name.strip_suffix(".git")
        .filter(|s| !s.is_empty())
        .unwrap_or(name)
}

/// Check a namespace path: '/'-separated components, each non-empty, not `.` or
/// `..`, of `[A-Za-z0-9._~+-]` only.
pub fn validate_ns_path(p: &str, what: &str) -> Result<(), IngestError> {
    let err = |reason: String| IngestError::BadUrl {
        url: what.to_string(),
        reason,
    };
    if p.is_empty() {
        return Err(err("the namespace path is empty".into()));
    }
    if p.len() > MAX_NS_PATH {
        return Err(err(format!(
            "the namespace path is longer than {MAX_NS_PATH} bytes"
        )));
    }
    for c in p.split('/') {
        if c.is_empty() {
            return Err(err(format!("namespace path '{p}' has an empty component")));
        }
        if c == "." || c == ".." {
            return Err(err(format!("namespace path '{p}' contains '{c}'")));
        }
        if c.len() > MAX_COMPONENT {
            return Err(err(format!(
                "namespace path '{p}' has a component longer than {MAX_COMPONENT} bytes"
            )));
        }
        if let Some(ch) = c
            .chars()
            .find(|ch| !(ch.is_ascii_alphanumeric() || "._~+-".contains(*ch)))
        {
            return Err(err(format!(
                "namespace path '{p}' contains '{ch}'; only letters, digits and . _ ~ + - are allowed"
            )));
        }
    }
    Ok(())
}

/// See the crate-level `namespace_path`.
pub fn namespace_path(url: &str, source_id: &str) -> Result<String, IngestError> {
    if !source_id.is_empty() {
        let p = source_id.trim_matches('/');
        validate_ns_path(p, source_id)?;
        return Ok(p.to_string());
    }
    let path = match parse(url)? {
        Remote::Local { path } => {
            let mut comps = components(&path);
            if comps.len() >= 2 && comps.last() == Some(&".git") {
                comps.pop();
            }
            let name = strip_git(comps.last().copied().unwrap_or(""));
            if name.is_empty() {
                return Err(bad(
                    url,
                    "cannot name a repository at the file system root; give a source_id",
                ));
            }
            format!("local/{name}-{}", local_id(&comps))
        }
        Remote::Net { host, path } | Remote::Scp { host, path } => {
            let mut comps = components(&path);
            if let Some(last) = comps.last_mut() {
                *last = strip_git(last);
            }
            if comps.is_empty() {
                return Err(bad(url, "the URL names a host but no repository path"));
            }
            let mut p = host;
            for c in comps {
                p.push('/');
                p.push_str(c);
            }
            p
        }
    };
    validate_ns_path(&path, &redact(url))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_paths() {
        let ok = |u: &str, want: &str| assert_eq!(namespace_path(u, "").unwrap(), want, "{u}");
        ok("https://github.com/org/repo", "github.com/org/repo");
        ok("https://github.com/org/repo.git", "github.com/org/repo");
        ok("https://GitHub.com/org/repo.git/", "github.com/org/repo");
        ok(
            "https://user:tok@github.com/org/repo",
            "github.com/org/repo",
        );
        ok("git://host:9418/a/b.git", "host/a/b");
        ok("ssh://git@host:22/org/repo.git", "host/org/repo");
        let id = local_id(&["x", "y", "repo"]);
        let local = format!("local/repo-{id}");
        ok("file:///x/y/repo", &local);
        ok("file://localhost/x/y/repo", &local);
        ok("/x/y/repo", &local);
        ok("/x/y/repo/.git", &local);
        ok("/x/y/repo/", &local);
        ok("//x/y//repo", &local);
        ok("file:///x/y/repo.git", &format!("local/repo-{}", local_id(&["x", "y", "repo.git"])));
        // Two repositories of one name in two directories do not collide.
        assert_ne!(namespace_path("/a/repo", "").unwrap(), namespace_path("/b/repo", "").unwrap());
        assert_eq!(id.len(), LOCAL_ID_HEX);
        ok("git@host:org/repo", "host/org/repo");
        ok("git@host:org/repo.git", "host/org/repo");
        assert_eq!(
            namespace_path("whatever", "my/own-id").unwrap(),
            "my/own-id"
        );
        assert_eq!(namespace_path("whatever", "/my/own/").unwrap(), "my/own");
        for bad_id in ["a/../b", "a//b", "a/./b", "a b", "ä", "a/b?c", ".."] {
            assert!(namespace_path("https://h/x", bad_id).is_err(), "{bad_id}");
        }
        for bad_url in [
            "",
            "https://github.com",
            "https://github.com/",
            "ext::sh -c x",
            "-oProxy",
            "https://h/a b",
            "https://h/a/../b",
            "ftp://h/x",
            "/",
            "https://[::1]/x",
        ] {
            let e = namespace_path(bad_url, "");
            assert!(e.is_err(), "{bad_url} gave {e:?}");
        }
    }

    #[test]
    fn local_paths_through_symlinks_get_one_name() {
        let tmp = std::env::temp_dir().join(format!("monofs-url-test-{}", std::process::id()));
        let real = tmp.join("real/repo");
        std::fs::create_dir_all(&real).unwrap();
        let link = tmp.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(tmp.join("real"), &link).unwrap();
        let by_real = namespace_path(real.to_str().unwrap(), "").unwrap();
        let by_link = namespace_path(&format!("file://{}/repo/.git", link.display()), "").unwrap();
        assert_eq!(by_real, by_link);
        assert!(by_real.starts_with("local/repo-"), "{by_real}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn local_sources_need_permission() {
        for u in ["/x/y/repo", "file:///x/y/repo", "FILE://localhost/x/repo", "./repo", "repo"] {
            let e = fetch_url(u, false).unwrap_err().to_string();
            assert!(e.contains("--allow-local-sources"), "{u}: {e}");
            assert!(fetch_url(u, true).is_ok(), "{u}");
        }
        assert_eq!(fetch_url("/x/y/repo", true).unwrap(), "/x/y/repo");
        for u in ["https://h/x", "git@h:x", "ssh://h/x"] {
            assert_eq!(fetch_url(u, false).unwrap(), u);
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("https://u:secret@h/x"), "https://u:***@h/x");
        assert_eq!(redact("https://u@h/x"), "https://u@h/x");
    }
}
