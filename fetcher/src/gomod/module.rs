//! Go module paths and versions: validation as `golang.org/x/mod/module` does
//! it, the `!` case-encoding of the module proxy protocol, semantic-version
//! ordering, and the RFC 3339 times of `.info` files.

use std::cmp::Ordering;

use monofs_net::dir::MAX_NAME;

/// Longest module path accepted (it becomes part of a namespace path).
pub const MAX_PATH: usize = 512;
/// Longest version accepted.
pub const MAX_VERSION: usize = 256;
/// Longest suffix MonoFS puts after an escaped version in a file name
/// (`<v>.info`, `<v>.oids`).
const VERSION_FILE_SUFFIX: usize = ".info".len();

/// Windows device names Go refuses as path elements (before the first dot).
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

fn mod_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Characters Go allows in file names inside a module zip
/// (`module.CheckFilePath`): ASCII letters, digits, a set of punctuation, and
/// non-ASCII letters.
fn file_char_ok(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&()+,-.=@[]^_{}~ ".contains(c)
    } else {
        c.is_alphabetic()
    }
}

fn check_elem(elem: &str, file: bool) -> Result<(), String> {
    if elem.is_empty() {
        return Err("empty path element".into());
    }
    if elem.chars().all(|c| c == '.') {
        return Err(format!("invalid path element '{elem}'"));
    }
    if !file && elem.starts_with('.') {
        return Err(format!("leading dot in path element '{elem}'"));
    }
    if elem.ends_with('.') {
        return Err(format!("trailing dot in path element '{elem}'"));
    }
    for c in elem.chars() {
        let ok = if file { file_char_ok(c) } else { mod_char_ok(c) };
        if !ok {
            return Err(format!("invalid char {c:?} in path element '{elem}'"));
        }
    }
    let short = elem.split('.').next().unwrap_or(elem);
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(short)) {
        return Err(format!("'{elem}' is a disallowed path element (a Windows device name)"));
    }
    if !file {
        // Windows short names such as EXAMPL~1.
        if let Some(i) = elem.rfind('~') {
            let suffix = &elem[i + 1..];
            if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("trailing tilde and digits in path element '{elem}'"));
            }
        }
    }
    Ok(())
}

/// Check a module path as `module.CheckPath` does: `/`-separated elements of
/// `[A-Za-z0-9._~-]`, no empty, `.` or `..` elements, a first element of
/// lowercase letters, digits, dots and dashes that contains a dot, and no
/// invalid major-version suffix (`/v0`, `/v1`, `/v01`).
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the module path is empty".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("the module path is longer than {MAX_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err("leading slash".into());
    }
    if path.starts_with('-') {
        return Err("leading dash".into());
    }
    if path.contains("//") {
        return Err("double slash".into());
    }
    if path.ends_with('/') {
        return Err("trailing slash".into());
    }
    for elem in path.split('/') {
        check_elem(elem, false)?;
    }
    let first = path.split('/').next().unwrap_or("");
    if !first.contains('.') {
        return Err(format!("missing dot in first path element '{first}'"));
    }
    if let Some(c) = first
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(format!("invalid char {c:?} in first path element '{first}'"));
    }
    if let Some(last) = path.rsplit('/').next().filter(|_| path.contains('/')) {
        if let Some(n) = last.strip_prefix('v') {
            if !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && !first.eq("gopkg.in")
                && (n.starts_with('0') || n == "1")
            {
                return Err(format!("invalid major version suffix '/{last}'"));
            }
        }
    }
    Ok(())
}

/// Check a file path inside a module (`module.CheckFilePath`).
pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty file path".into());
    }
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return Err(format!("file path '{path}' is not clean"));
    }
    if path.starts_with('-') {
        return Err(format!("file path '{path}' has a leading dash"));
    }
    for elem in path.split('/') {
        check_elem(elem, true).map_err(|e| format!("file path '{path}': {e}"))?;
    }
    Ok(())
}

/// A parsed canonical semantic version `vMAJOR.MINOR.PATCH[-PRE][+incompatible]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Semver<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    pre: Vec<&'a str>,
    pub incompatible: bool,
}

fn num_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

impl<'a> Semver<'a> {
    /// Parse a canonical version, as the module proxy protocol names them.
    pub fn parse(v: &'a str) -> Result<Semver<'a>, String> {
        if v.len() > MAX_VERSION {
            return Err(format!("longer than {MAX_VERSION} bytes"));
        }
        let rest = v
            .strip_prefix('v')
            .ok_or_else(|| "a version starts with 'v' (like v1.2.3)".to_string())?;
        let (rest, incompatible) = match rest.split_once('+') {
            Some((r, "incompatible")) => (r, true),
            Some(_) => {
                return Err("build metadata other than '+incompatible' is not canonical".into())
            }
            None => (rest, false),
        };
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 || !parts.iter().all(|p| num_ok(p)) {
            return Err("not a canonical semantic version vMAJOR.MINOR.PATCH".into());
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                let ids: Vec<&str> = p.split('.').collect();
                for id in &ids {
                    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        return Err(format!("invalid pre-release identifier '{id}'"));
                    }
                    if id.bytes().all(|b| b.is_ascii_digit()) && !num_ok(id) {
                        return Err(format!("numeric pre-release identifier '{id}' has a leading zero"));
                    }
                }
                ids
            }
        };
        if incompatible && parts[0].len() == 1 && matches!(parts[0], "0" | "1") {
            return Err("'+incompatible' needs a major version of 2 or more".into());
        }
        Ok(Semver { major: parts[0], minor: parts[1], patch: parts[2], pre, incompatible })
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

fn cmp_num(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Ord for Semver<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        let c = cmp_num(self.major, o.major)
            .then_with(|| cmp_num(self.minor, o.minor))
            .then_with(|| cmp_num(self.patch, o.patch));
        if c != Ordering::Equal {
            return c;
        }
        match (self.pre.is_empty(), o.pre.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ => {}
        }
        for (a, b) in self.pre.iter().zip(&o.pre) {
            let an = a.bytes().all(|x| x.is_ascii_digit());
            let bn = b.bytes().all(|x| x.is_ascii_digit());
            let c = match (an, bn) {
                (true, true) => cmp_num(a, b),
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => a.cmp(b),
            };
            if c != Ordering::Equal {
                return c;
            }
        }
        self.pre.len().cmp(&o.pre.len())
    }
}

impl PartialOrd for Semver<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Order two canonical versions; unparsable ones sort first, by bytes.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Semver::parse(a), Semver::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Check `version` is canonical and fits `path`'s major-version suffix
/// (`module.Check`): `example.com/m/v2` takes only v2.x.y; a path without a
/// suffix takes v0/v1, or v2+ marked `+incompatible`.
///
/// The escaped version also has to fit the names MonoFS stores it under: the
/// proxy files `<v>.info` and the directory `<last path element>@<v>` are
/// directory entries of at most `dir::MAX_NAME` bytes.
pub fn check_version(path: &str, version: &str) -> Result<(), String> {
    let v = Semver::parse(version)?;
    let last = path.rsplit('/').next().unwrap_or("");
    let (ev, el) = (escape(version).len(), escape(last).len());
    if ev + VERSION_FILE_SUFFIX > MAX_NAME || el + 1 + ev > MAX_NAME {
        return Err(format!(
            "escaped, it makes a file name of {} bytes; names are at most {MAX_NAME} bytes",
            (ev + VERSION_FILE_SUFFIX).max(el + 1 + ev)
        ));
    }
    let suffix = if path.starts_with("gopkg.in/") {
        last.rsplit_once(".v").map(|(_, n)| n).filter(|n| num_ok(n))
    } else {
        last.strip_prefix('v').filter(|n| num_ok(n) && path.contains('/'))
    };
    match suffix {
        Some(n) if path.starts_with("gopkg.in/") => {
            if v.major != n && !(n == "0" || n == "1") {
                return Err(format!("should be v{n}, not v{}", v.major));
            }
        }
        Some(n) => {
            if v.major != n || v.incompatible {
                return Err(format!("should be v{n}, not v{}", v.major));
            }
        }
        None => {
            if !matches!(v.major, "0" | "1") && !v.incompatible {
                return Err(format!(
                    "should be v0 or v1, not v{} (or add '+incompatible')",
                    v.major
                ));
            }
        }
    }
    Ok(())
}

/// `!`-encode upper-case ASCII letters (`module.EscapePath`/`EscapeVersion`):
/// `github.com/BurntSushi` → `github.com/!burnt!sushi`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Inverse of `escape`; None for a string that is not a valid encoding.
pub fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut bang = false;
    for c in s.chars() {
        if bang {
            if !c.is_ascii_lowercase() {
                return None;
            }
            out.push(c.to_ascii_uppercase());
            bang = false;
        } else if c == '!' {
            bang = true;
        } else if c.is_ascii_uppercase() {
            return None;
        } else {
            out.push(c);
        }
    }
    (!bang).then_some(out)
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Seconds since the epoch of an RFC 3339 time (`2023-07-24T14:25:03Z`,
/// fractions and `±hh:mm` offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (h, mi, se) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &rest[1..];
            if r.len() != 5 || r.as_bytes()[2] != b':' {
                return None;
            }
            let (oh, om) = (digits(&r[0..2])?, digits(&r[3..5])?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["golang.org/x/mod", "example.com/Foo/bar", "gopkg.in/yaml.v3", "example.com/m/v2", "a.b/c~d"] {
            check_path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "/x.com", "x.com/", "x.com//a", "x.com/../a", "x.com/./a", "x.com/a/..", "Example.com/a",
            "nodot/a", "x.com/a b", "x.com/a\\b", "-x.com", "x.com/.hidden", "x.com/a.", "x.com/v1",
            "x.com/v0", "x.com/con", "x.com/ab~1", "x.com/a@b", "x.com/a!b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_file_path("a/b.go").is_ok());
        assert!(check_file_path(".github/x y.yml").is_ok());
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a\\b", "a:b", "a\"b", "con.go"] {
            assert!(check_file_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn versions() {
        check_version("golang.org/x/mod", "v0.20.0").unwrap();
        check_version("example.com/m/v2", "v2.1.0-rc.1").unwrap();
        check_version("example.com/m", "v2.0.0+incompatible").unwrap();
        check_version("gopkg.in/yaml.v3", "v3.0.1").unwrap();
        check_version("x.com/m", "v0.0.0-20230101000000-abcdefabcdef").unwrap();
        for bad in ["", "1.0.0", "v1", "v1.0", "v1.0.0+meta", "v01.0.0", "v1.0.0-", "v1.0.0-01", "v1.0.0-a..b", "latest", "v1.0.0/../x"] {
            assert!(check_version("x.com/m", bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_version("x.com/m", "v2.0.0").is_err());
        assert!(check_version("x.com/m/v2", "v1.0.0").is_err());
    }

    #[test]
    fn versions_fit_file_names() {
        // `<v>.info` must fit 255 bytes: 250 bytes of version is the most.
        let v = |n: usize, c: &str| format!("v1.0.0-{}", c.repeat(n - 7));
        check_version("x.com/m", &v(250, "a")).unwrap();
        for bad in [v(251, "a"), v(MAX_VERSION, "a")] {
            let e = check_version("x.com/m", &bad).unwrap_err();
            assert!(e.contains("names are at most 255 bytes"), "{e}");
        }
        assert!(check_version("x.com/m", &v(300, "a")).is_err());
        // Upper case doubles in escaping (`A` → `!a`).
        assert!(check_version("x.com/m", &v(130, "A")).is_err());
        // `<last element>@<v>` must fit too.
        let long_last = format!("x.com/{}", "m".repeat(200));
        assert!(check_version(&long_last, &v(60, "a")).is_err());
        check_version(&long_last, &v(54, "a")).unwrap();
    }

    #[test]
    fn ordering() {
        let mut v = vec!["v1.10.0", "v1.2.0", "v1.2.0-rc.1", "v1.2.0-beta", "v1.2.0-rc.10", "v1.2.0-rc.2", "v0.9.9", "v1.2.0-alpha.1"];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(v, ["v0.9.9", "v1.2.0-alpha.1", "v1.2.0-beta", "v1.2.0-rc.1", "v1.2.0-rc.2", "v1.2.0-rc.10", "v1.2.0", "v1.10.0"]);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("github.com/BurntSushi/toml"), "github.com/!burnt!sushi/toml");
        assert_eq!(unescape("github.com/!burnt!sushi/toml").unwrap(), "github.com/BurntSushi/toml");
        assert!(unescape("a/B").is_none());
        assert!(unescape("a/!").is_none());
        assert!(unescape("a/!1").is_none());
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2021-02-03T04:05:06Z"), Some(1612325106));
        assert_eq!(parse_rfc3339("2021-02-03T04:05:06.123456789Z"), Some(1612325106));
        assert_eq!(parse_rfc3339("2021-02-03T06:05:06+02:00"), Some(1612325106));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951782400));
        assert!(parse_rfc3339("2021-02-03 04:05:06").is_none());
        assert!(parse_rfc3339("2021-13-03T04:05:06Z").is_none());
        assert!(parse_rfc3339("2021-02-03T04:05:06").is_none());
    }
}
