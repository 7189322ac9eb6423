//! Export rules as /etc/exports writes them: which clients may mount and call, whether
//! they may write, and which identity their calls run with. Parsing, client matching and
//! squashing live here; the checks against file attributes live in `permission`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::rpc::Auth;

/// Largest exports file we read.
pub const EXPORTS_MAX_BYTES: usize = 64 * 1024;
/// Most lines (comments and blank lines included) in an exports file.
pub const EXPORTS_MAX_LINES: usize = 1024;
/// Most clients on one export line.
pub const EXPORTS_MAX_CLIENTS: usize = 64;
/// anonuid / anongid unless the line says otherwise (nobody / nogroup).
pub const DEFAULT_ANON_ID: u32 = 65534;
/// `secure` admits AUTH_SYS calls only from source ports below this (privileged ports).
pub const PRIVILEGED_PORT_END: u16 = 1024;
/// The rules of a router started without `--exports` (see docs/exports.md).
pub const DEFAULT_EXPORTS: &str = "/ *(ro,root_squash,insecure)";

/// Which callers lose their identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Squash {
    /// `no_root_squash`: every identity is kept.
    None,
    /// `root_squash`: uid 0 and gid 0 become anonuid / anongid.
    Root,
    /// `all_squash`: every caller is anonuid / anongid.
    All,
}

/// The options of one client entry, `CLIENT(OPTIONS)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// `rw`; `ro` (the default) answers ROFS to every mutating procedure.
    pub rw: bool,
    pub squash: Squash,
    pub anonuid: u32,
    pub anongid: u32,
    /// `secure` (the default): calls only from privileged source ports.
    pub secure: bool,
}

impl Default for ClientOptions {
    /// knfsd's defaults: ro, root_squash, secure, anonymous 65534.
    fn default() -> Self {
        ClientOptions { rw: false, squash: Squash::Root, anonuid: DEFAULT_ANON_ID, anongid: DEFAULT_ANON_ID, secure: true }
    }
}

/// Which addresses a client entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientSpec {
    /// `*`
    Any,
    /// An address (`prefix` = full length) or a CIDR network; host bits are masked off.
    Net { addr: IpAddr, prefix: u8 },
}

impl ClientSpec {
    fn matches(&self, peer: IpAddr) -> bool {
        match *self {
            ClientSpec::Any => true,
            ClientSpec::Net { addr, prefix } => match (addr, peer) {
                (IpAddr::V4(a), IpAddr::V4(p)) => masked(u32::from(p) as u128, 32, prefix) == u32::from(a) as u128,
                (IpAddr::V6(a), IpAddr::V6(p)) => masked(u128::from(p), 128, prefix) == u128::from(a),
                _ => false,
            },
        }
    }
}

impl fmt::Display for ClientSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClientSpec::Any => f.write_str("*"),
            ClientSpec::Net { addr, prefix } if prefix == if addr.is_ipv4() { 32 } else { 128 } => write!(f, "{addr}"),
            ClientSpec::Net { addr, prefix } => write!(f, "{addr}/{prefix}"),
        }
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let mask = (!0u128 >> (128 - width as u32)) & !((1u128 << (width - prefix) as u32).wrapping_sub(1));
    bits & mask
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRule {
    pub spec: ClientSpec,
    pub opts: ClientOptions,
}

/// The rules of the one exported tree, `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exports {
    /// In file order; the first that matches the caller decides, as in knfsd.
    clients: Vec<ClientRule>,
}

impl Default for Exports {
    fn default() -> Self {
        Exports::parse(DEFAULT_EXPORTS, "<default exports>").expect("the default exports parse")
    }
}

/// The effective identity a call runs with, after squashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (at most AUTH_UNIX_MAX_GIDS).
    pub gids: Vec<u32>,
}

impl Cred {
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }
}

/// What the rules say about one caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission<'a> {
    /// No client entry names the caller's address.
    Refused,
    /// Named, but `secure` and the call came from an unprivileged port.
    InsecurePort,
    Admitted(&'a ClientOptions),
}

impl Exports {
    /// The first client entry naming `peer`, and whether its port is acceptable.
    pub fn admit(&self, peer: SocketAddr) -> Admission<'_> {
        // A dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d; rules name them as IPv4.
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match self.clients.iter().find(|c| c.spec.matches(ip)) {
            None => Admission::Refused,
            Some(c) if c.opts.secure && peer.port() >= PRIVILEGED_PORT_END => Admission::InsecurePort,
            Some(c) => Admission::Admitted(&c.opts),
        }
    }

    /// Reads and parses an exports file, bounded by `EXPORTS_MAX_BYTES`.
    pub fn load(path: &Path) -> Result<Exports, ExportsError> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| ExportsError { file: name.clone(), line: 0, col: 0, what: e.to_string() };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > EXPORTS_MAX_BYTES as u64 {
            return Err(ExportsError {
                file: name.clone(),
                line: 0,
                col: 0,
                what: format!("{} bytes; an exports file holds at most {EXPORTS_MAX_BYTES}", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Exports::parse(&text, &name)
    }

    /// Parses exports text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Exports, ExportsError> {
        let err = |line: usize, col: usize, what: String| ExportsError { file: file.to_string(), line, col, what };
        if text.len() > EXPORTS_MAX_BYTES {
            return Err(err(0, 0, format!("{} bytes; an exports file holds at most {EXPORTS_MAX_BYTES}", text.len())));
        }
        let mut exported: Option<Vec<ClientRule>> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if line > EXPORTS_MAX_LINES {
                return Err(err(line, 1, format!("more than {EXPORTS_MAX_LINES} lines")));
            }
            let content = raw.split('#').next().unwrap_or("");
            let mut words = words(content);
            let Some((col, path)) = words.next() else { continue };
            if !path.starts_with('/') {
                return Err(err(line, col, format!("expected an absolute export path, found '{path}'")));
            }
            if path != "/" {
                // Handles carry no export of their own, so a subtree's rules could not be
                // told apart from the whole tree's on later calls.
                return Err(err(line, col, format!("expected the export path '/', found '{path}' (only the whole namespace is exported)")));
            }
            if exported.is_some() {
                return Err(err(line, col, "'/' is already exported on an earlier line".to_string()));
            }
            let mut clients = Vec::new();
            for (col, word) in words {
                if clients.len() == EXPORTS_MAX_CLIENTS {
                    return Err(err(line, col, format!("more than {EXPORTS_MAX_CLIENTS} clients on one line")));
                }
                clients.push(client(word).map_err(|(off, what)| err(line, col + off, what))?);
            }
            if clients.is_empty() {
                return Err(err(line, raw.len() + 1, "expected at least one client after the path, e.g. '*(ro)'".to_string()));
            }
            exported = Some(clients);
        }
        Ok(Exports { clients: exported.unwrap_or_default() })
    }

    /// The client entries in the order they are tried.
    pub fn clients(&self) -> &[ClientRule] {
        &self.clients
    }

    /// The clients as MOUNT EXPORT names them (`*`, `10.0.0.0/8`, `::1`).
    pub fn groups(&self) -> Vec<Vec<u8>> {
        self.clients.iter().map(|c| c.spec.to_string().into_bytes()).collect()
    }
}

/// Whitespace-separated words with their 1-based columns.
fn words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = s;
    let mut base = 0;
    std::iter::from_fn(move || {
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let len = rest[start..].find(char::is_whitespace).unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        let col = base + start + 1;
        base += start + len;
        rest = &rest[start + len..];
        Some((col, word))
    })
}

/// `CLIENT` or `CLIENT(OPTIONS)`; errors carry the 0-based offset within the word.
fn client(word: &str) -> Result<ClientRule, (usize, String)> {
    let (host, opts) = match word.find('(') {
        None => (word, None),
        Some(open) => {
            let Some(inner) = word[open + 1..].strip_suffix(')') else {
                return Err((word.len(), format!("expected ')' to close the options of '{word}'")));
            };
            (&word[..open], Some((open + 1, inner)))
        }
    };
    let spec = spec(host).map_err(|what| (0, what))?;
    let mut o = ClientOptions::default();
    if let Some((mut off, inner)) = opts {
        for opt in inner.split(',') {
            option(&mut o, opt).map_err(|what| (off, what))?;
            off += opt.len() + 1;
        }
    }
    Ok(ClientRule { spec, opts: o })
}

fn spec(host: &str) -> Result<ClientSpec, String> {
    if host == "*" {
        return Ok(ClientSpec::Any);
    }
    let expected = || format!("expected a client: '*', an IPv4/IPv6 address or a CIDR network, found '{host}'");
    let (addr, prefix) = match host.split_once('/') {
        None => (host, None),
        Some((a, p)) => (a, Some(p)),
    };
    let addr: IpAddr = addr.parse().map_err(|_| expected())?;
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => width,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= width && !p.starts_with('+') => n,
            _ => return Err(format!("expected a prefix length 0..={width} after '/', found '{p}'")),
        },
    };
    let addr = match addr {
        IpAddr::V4(a) => IpAddr::V4((masked(u32::from(a) as u128, 32, prefix) as u32).into()),
        IpAddr::V6(a) => IpAddr::V6(masked(u128::from(a), 128, prefix).into()),
    };
    Ok(ClientSpec::Net { addr, prefix })
}

fn option(o: &mut ClientOptions, opt: &str) -> Result<(), String> {
    let id = |v: &str, name: &str| {
        v.parse::<u32>().map_err(|_| format!("expected a number 0..=4294967295 after '{name}=', found '{v}'"))
    };
    match opt.split_once('=') {
        Some(("anonuid", v)) => o.anonuid = id(v, "anonuid")?,
        Some(("anongid", v)) => o.anongid = id(v, "anongid")?,
        _ => match opt {
            "ro" => o.rw = false,
            "rw" => o.rw = true,
            "root_squash" => o.squash = Squash::Root,
            "no_root_squash" => o.squash = Squash::None,
            "all_squash" => o.squash = Squash::All,
            "secure" => o.secure = true,
            "insecure" => o.secure = false,
            _ => {
                return Err(format!(
                    "expected an option (ro, rw, root_squash, no_root_squash, all_squash, anonuid=N, anongid=N, secure, insecure), found '{opt}'"
                ))
            }
        },
    }
    Ok(())
}

impl ClientOptions {
    /// The identity a call runs with (knfsd's nfsd_setuser): AUTH_NONE is anonymous;
    /// all_squash makes everyone anonymous; root_squash maps uid 0 and gid 0 (also among
    /// the supplementary groups) to anonuid / anongid.
    pub fn effective(&self, auth: &Auth) -> Cred {
        let anon = Cred { uid: self.anonuid, gid: self.anongid, gids: Vec::new() };
        match (auth, self.squash) {
            (Auth::None, _) | (_, Squash::All) => anon,
            (Auth::Sys { uid, gid, gids }, Squash::None) => Cred { uid: *uid, gid: *gid, gids: gids.clone() },
            (Auth::Sys { uid, gid, gids }, Squash::Root) => {
                let id = |v: u32, anon: u32| if v == 0 { anon } else { v };
                Cred {
                    uid: id(*uid, self.anonuid),
                    gid: id(*gid, self.anongid),
                    gids: gids.iter().map(|&g| id(g, self.anongid)).collect(),
                }
            }
        }
    }
}

/// A line, column and what was expected; line 0 is about the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportsError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub what: String,
}

impl fmt::Display for ExportsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.what)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.what)
        }
    }
}

impl std::error::Error for ExportsError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Exports, ExportsError> {
        Exports::parse(s, "exports")
    }

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    fn opts(e: &Exports, ip: &str) -> Option<ClientOptions> {
        match e.admit(at(ip, 700)) {
            Admission::Admitted(o) => Some(*o),
            _ => None,
        }
    }

    #[test]
    fn every_option() {
        let e = parse("/ 10.0.0.1(rw,no_root_squash,insecure,anonuid=7,anongid=8) 10.0.0.2(all_squash) 10.0.0.3").unwrap();
        let o = opts(&e, "10.0.0.1").unwrap();
        assert_eq!(o, ClientOptions { rw: true, squash: Squash::None, anonuid: 7, anongid: 8, secure: false });
        assert_eq!(opts(&e, "10.0.0.2").unwrap().squash, Squash::All);
        assert_eq!(opts(&e, "10.0.0.3").unwrap(), ClientOptions::default());
        // The last of two contradicting options wins, as in exportfs.
        let e = parse("/ *(rw,ro,insecure,secure,no_root_squash,root_squash)").unwrap();
        assert_eq!(opts(&e, "1.2.3.4").unwrap(), ClientOptions::default());
    }

    #[test]
    fn default_rules() {
        let e = Exports::default();
        let o = opts(&e, "203.0.113.9").unwrap();
        assert_eq!(o, ClientOptions { secure: false, ..ClientOptions::default() });
        assert!(matches!(e.admit(at("127.0.0.1", 40000)), Admission::Admitted(_)));
        assert!(matches!(e.admit(at("::1", 40000)), Admission::Admitted(_)));
    }

    #[test]
    fn comments_blank_lines_and_no_export() {
        let e = parse("# nothing\n\n   # still nothing\n").unwrap();
        assert!(e.clients().is_empty());
        assert_eq!(e.admit(at("127.0.0.1", 100)), Admission::Refused);
        let e = parse("\n/ 127.0.0.2/32(insecure) # the test client\n").unwrap();
        assert_eq!(e.clients().len(), 1);
    }

    #[test]
    fn cidr_v4_and_v6() {
        let e = parse("/ 10.0.0.0/8 192.168.1.77/24 2001:db8::/32 ::1 0.0.0.0/0(rw)").unwrap();
        assert!(!opts(&e, "10.255.1.2").unwrap().rw);
        assert!(!opts(&e, "192.168.1.200").unwrap().rw);
        assert!(opts(&e, "192.168.2.1").unwrap().rw, "falls through to 0.0.0.0/0");
        assert!(!opts(&e, "2001:db8:ffff::1").unwrap().rw);
        assert!(!opts(&e, "::1").unwrap().rw);
        assert_eq!(opts(&e, "2001:db9::1"), None, "0.0.0.0/0 names no IPv6 address");
        // An IPv4 caller on a dual-stack socket matches IPv4 rules.
        assert!(!opts(&e, "::ffff:10.1.2.3").unwrap().rw);
        let e = parse("/ 127.0.0.2/32").unwrap();
        assert!(opts(&e, "127.0.0.2").is_some());
        assert!(opts(&e, "127.0.0.1").is_none());
        let e = parse("/ ::/0(rw)").unwrap();
        assert!(opts(&e, "fe80::1").unwrap().rw);
        let e = parse("/ * 10.1.2.3/8 192.0.2.7 2001:db8::9/32 ::1").unwrap();
        let groups: Vec<String> = e.groups().into_iter().map(|g| String::from_utf8(g).unwrap()).collect();
        assert_eq!(groups, ["*", "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]);
    }

    #[test]
    fn first_matching_client_decides() {
        let e = parse("/ 10.0.0.0/8(ro) 10.1.0.0/16(rw)").unwrap();
        assert!(!opts(&e, "10.1.2.3").unwrap().rw, "the wider entry comes first and wins");
        let e = parse("/ 10.1.0.0/16(rw) 10.0.0.0/8(ro)").unwrap();
        assert!(opts(&e, "10.1.2.3").unwrap().rw);
    }

    #[test]
    fn secure_port_boundary() {
        let e = parse("/ *").unwrap();
        assert!(matches!(e.admit(at("10.0.0.1", 1023)), Admission::Admitted(_)));
        assert_eq!(e.admit(at("10.0.0.1", 1024)), Admission::InsecurePort);
        let e = parse("/ *(insecure)").unwrap();
        assert!(matches!(e.admit(at("10.0.0.1", 60000)), Admission::Admitted(_)));
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("/ *(ro,bogus)", 1, 8, "found 'bogus'"),
            ("# c\n/ *(rw", 2, 7, "expected ')'"),
            ("/ 10.0.0.0/33", 1, 3, "prefix length 0..=32"),
            ("/ ::/129", 1, 3, "prefix length 0..=128"),
            ("/ host.example(ro)", 1, 3, "expected a client"),
            ("/ *(anonuid=x)", 1, 5, "after 'anonuid='"),
            ("/ *(anongid=-1)", 1, 5, "after 'anongid='"),
            ("/", 1, 2, "at least one client"),
            ("srv *", 1, 1, "absolute export path"),
            ("  /github.com/org *", 1, 3, "only the whole namespace"),
            ("/ *\n/ 10.0.0.1", 2, 1, "already exported"),
            ("/ *(ro,,rw)", 1, 8, "found ''"),
        ];
        for (text, line, col, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.col), (*line, *col), "{text:?}: {e}");
            assert!(e.what.contains(what), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("exports:{line}:{col}: ")), "{e}");
        }
    }

    #[test]
    fn bounds() {
        let many = format!("/ {}", vec!["*"; EXPORTS_MAX_CLIENTS + 1].join(" "));
        let e = parse(&many).unwrap_err();
        assert!(e.what.contains("clients on one line"), "{e}");
        assert!(parse(&format!("/ {}", vec!["*"; EXPORTS_MAX_CLIENTS].join(" "))).is_ok());
        let e = parse(&"#\n".repeat(EXPORTS_MAX_LINES + 1)).unwrap_err();
        assert_eq!(e.line, EXPORTS_MAX_LINES + 1);
        let e = parse(&"#".repeat(EXPORTS_MAX_BYTES + 1)).unwrap_err();
        assert_eq!(e.line, 0);
        let dir = std::env::temp_dir().join(format!("monofs-exports-{}", std::process::id()));
        std::fs::write(&dir, "#".repeat(EXPORTS_MAX_BYTES + 1)).unwrap();
        let e = Exports::load(&dir).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        std::fs::write(&dir, "/ 10.0.0.0/8(rw)\n").unwrap();
        assert_eq!(Exports::load(&dir).unwrap().clients().len(), 1);
        std::fs::remove_file(&dir).unwrap();
        assert!(Exports::load(&dir).unwrap_err().to_string().starts_with(&dir.display().to_string()));
    }

    #[test]
    fn squashing() {
        let root = Auth::Sys { uid: 0, gid: 0, gids: vec![0, 5] };
        let user = Auth::Sys { uid: 1000, gid: 100, gids: vec![0, 20] };
        let anon = |uid, gid| Cred { uid, gid, gids: vec![] };
        let o = ClientOptions::default();
        assert_eq!(o.effective(&root), Cred { uid: 65534, gid: 65534, gids: vec![65534, 5] });
        assert_eq!(o.effective(&user), Cred { uid: 1000, gid: 100, gids: vec![65534, 20] });
        assert_eq!(o.effective(&Auth::None), anon(65534, 65534));
        let o = ClientOptions { squash: Squash::None, ..o };
        assert_eq!(o.effective(&root), Cred { uid: 0, gid: 0, gids: vec![0, 5] });
        assert_eq!(o.effective(&Auth::None), anon(65534, 65534), "AUTH_NONE stays anonymous");
        let o = ClientOptions { squash: Squash::All, anonuid: 7, anongid: 8, ..o };
        assert_eq!(o.effective(&user), anon(7, 8));
        assert_eq!(o.effective(&root), anon(7, 8));
    }
}
