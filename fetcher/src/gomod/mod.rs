//! Go module ingest: fetch `module@version` from a module proxy (GOPROXY
//! protocol), verify its zip as `go` does (layout, limits, go.sum `h1:` hashes,
//! optionally against a go.sum file), and store it on the nodes in two shapes:
//!
//! - `go/pkg/mod/<escaped module>@<escaped version>`: the extracted files, as
//!   `GOMODCACHE` has them, for browsing and grep;
//! - `go/proxy/<escaped module>/@v`: `list`, `<v>.info`, `<v>.mod`, `<v>.zip`
//!   of every version of the module this fetcher has ingested, so
//!   `GOPROXY=file://<mount>/go/proxy` builds offline.
//!
//! Files are blobs under their Git blob ids and directories are directory
//! records under their Git tree ids, so content shared with a Git ingest of the
//! same sources is stored once.
//!
//! **Per-module state.** The fetcher keeps a mirror of what it ingested in
//! `cache_dir/gomod/<escaped module>/@v/` (the proxy layout: `<v>.info`,
//! `<v>.mod`, `<v>.zip`, and `<v>.oids`, written once the version is stored on
//! the nodes). The `list` of a new ingest is every version with an `.oids` file
//! there, plus the one being ingested; a version whose blobs the nodes no
//! longer have is stored again from the mirror. A different fetcher (another
//! cache directory) therefore publishes the versions *it* has ingested: ingest
//! the others through it to bring its `list` up to date. A version in the
//! mirror is never downloaded again (module versions are immutable), but it is
//! verified again on every ingest.

mod module;
mod modzip;
mod proxy;
mod store;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use monofs_net::sync::lock;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use monofs_net::client::Cluster;
use monofs_net::dir::{Entry, MODE_FILE};
use monofs_net::ns::NsEntry;
use monofs_net::proto::{IngestRequest, SourceKind};
use monofs_net::{keys, oid_from_hex, oid_hex, Oid, CHUNK_SIZE};
use sha1::Digest as _;

pub use module::{check_path, check_version, escape, parse_rfc3339, unescape};
pub use modzip::MAX_GO_MOD;
pub use proxy::{MAX_META, MAX_ZIP, ZIP_WALL_CLOCK};

use crate::IngestError;
use store::{Batcher, FileRef, Progress, Tree, TreeBuilder};

/// Check a module zip held in memory as an ingest checks a downloaded one
/// (layout, names, sizes, limits) and return its go.sum `h1:` hash. The entry
/// point for fuzzing the zip reader with untrusted bytes.
pub fn check_zip(data: &[u8], module: &str, version: &str) -> Result<String, String> {
    modzip::check_reader(std::io::Cursor::new(data), data.len() as u64, module, version, &mut |_| {})
        .map(|c| c.h1)
}

/// Default bound on one proxy request (connect, each read, and the whole of a
/// small request; a zip download is bounded per read and by ZIP_WALL_CLOCK).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How the fetcher reaches Go modules.
#[derive(Clone, Debug)]
pub struct GoModOptions {
    /// One module proxy base URL: `https://proxy.golang.org`,
    /// `http://host:port/path` or `file:///dir`. None refuses Go ingests.
    pub proxy: Option<String>,
    /// A go.sum-format file (`<module> <version> h1:…` and
    /// `<module> <version>/go.mod h1:…` lines). A module version listed there
    /// must match; one not listed is accepted and its hash recorded.
    pub gosum_file: Option<PathBuf>,
    /// Bound on one proxy request.
    pub timeout: Duration,
}

impl Default for GoModOptions {
    fn default() -> Self {
        GoModOptions { proxy: None, gosum_file: None, timeout: DEFAULT_TIMEOUT }
    }
}

/// Namespace path of the extracted module: `go/pkg/mod/<escaped module>@<escaped version>`.
pub fn pkg_mod_path(module: &str, version: &str) -> String {
    format!("go/pkg/mod/{}@{}", escape(module), escape(version))
}

/// Namespace path of the module's proxy directory: `go/proxy/<escaped module>/@v`.
pub fn proxy_path(module: &str) -> String {
    format!("go/proxy/{}/@v", escape(module))
}

/// Split `module@version` (or `module@latest`, or `module` with the version in
/// `git_ref`, empty meaning latest) and validate both. The version is
/// `"latest"` or a canonical semantic version.
pub fn parse_spec(url: &str, git_ref: &str) -> Result<(String, String), IngestError> {
    let url = url.trim();
    let url = url.strip_prefix("go:").unwrap_or(url);
    let (path, version) = match url.rsplit_once('@') {
        Some((p, v)) => {
            if !git_ref.is_empty() && git_ref != v {
                return Err(IngestError::BadRequest(format!(
                    "'{url}' names version {v} but the request's ref says {git_ref}"
                )));
            }
            (p, v)
        }
        None if git_ref.is_empty() => (url, "latest"),
        None => (url, git_ref),
    };
    module::check_path(path).map_err(|reason| IngestError::BadUrl {
        url: url.to_string(),
        reason: format!("malformed module path '{path}': {reason}"),
    })?;
    if version != "latest" {
        module::check_version(path, version).map_err(|reason| IngestError::BadRef {
            git_ref: version.to_string(),
            reason: format!("invalid version for module {path}: {reason}"),
        })?;
    }
    Ok((path.to_string(), version.to_string()))
}

fn fetch_err(module: &str, version: &str, message: String) -> IngestError {
    IngestError::Fetch { url: format!("go:{module}@{version}"), message }
}

fn not_found(module: &str, version: &str, proxy: &proxy::Proxy) -> IngestError {
    fetch_err(module, version, format!("module {module} version {version} not found in proxy {}", proxy.shown()))
}

fn cache_err(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Cache { path: path.to_path_buf(), source }
}

/// The lock serialising ingests of one module (they share its mirror).
fn module_lock(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = lock(LOCKS.get_or_init(Default::default));
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// Temporary files removed on drop unless kept.
struct Temps(Vec<PathBuf>);

impl Temps {
    fn new_path(&mut self, dir: &Path, name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = dir.join(format!("{name}.tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        self.0.push(p.clone());
        p
    }
}

impl Drop for Temps {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn write_atomic(temps: &mut Temps, dir: &Path, name: &str, data: &[u8]) -> Result<(), IngestError> {
    let tmp = temps.new_path(dir, name);
    std::fs::write(&tmp, data).map_err(cache_err(&tmp))?;
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).map_err(cache_err(&dest))
}

/// Resolve `latest`: the proxy's `@latest`, else the highest release in its
/// `list`, else the highest pre-release.
fn resolve_latest(p: &proxy::Proxy, module: &str) -> Result<String, IngestError> {
    let esc = escape(module);
    let err = |m: String| fetch_err(module, "latest", m);
    if let Some(body) = p.get(&format!("{esc}/@latest"), MAX_META).map_err(err)? {
        let v = info_version(&body).map_err(|e| err(format!("proxy {} answered @latest with {e}", p.shown())))?;
        module::check_version(module, &v)
            .map_err(|e| err(format!("proxy {} answered @latest with version '{v}': {e}", p.shown())))?;
        return Ok(v);
    }
    let list = p
        .get(&format!("{esc}/@v/list"), MAX_META)
        .map_err(err)?
        .ok_or_else(|| err(format!("module {module} not found in proxy {}", p.shown())))?;
    let text = String::from_utf8_lossy(&list);
    let versions: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| module::check_version(module, v).is_ok())
        .collect();
    let best = |pre: bool| {
        versions
            .iter()
            .filter(|v| module::Semver::parse(v).map(|s| s.is_prerelease() == pre).unwrap_or(false))
            .max_by(|a, b| module::compare(a, b))
            .map(|v| v.to_string())
    };
    best(false)
        .or_else(|| best(true))
        .ok_or_else(|| err(format!("module {module} has no versions in proxy {}", p.shown())))
}

/// The `Version` of an `.info`/`@latest` JSON document.
fn info_version(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("a body that is not JSON ({e})"))?;
    v.get("Version")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| "JSON without a \"Version\" string".to_string())
}

/// Version and time (seconds) of an `.info` document.
fn parse_info(body: &[u8]) -> Result<(String, i64), String> {
    let version = info_version(body)?;
    let v: serde_json::Value = serde_json::from_slice(body).expect("parsed above");
    let time = match v.get("Time") {
        None | Some(serde_json::Value::Null) => 0,
        Some(t) => {
            let s = t.as_str().ok_or_else(|| "a \"Time\" that is not a string".to_string())?;
            parse_rfc3339(s).ok_or_else(|| format!("a \"Time\" that is not RFC 3339: '{s}'"))?
        }
    };
    Ok((version, time))
}

/// Expected `h1:` hashes for `module version` and `module version/go.mod`.
fn gosum_lookup(file: &Path, module: &str, version: &str) -> Result<(Vec<String>, Vec<String>), IngestError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        IngestError::BadRequest(format!("the gosum file {} cannot be read: {e}", file.display()))
    })?;
    let mod_version = format!("{version}/go.mod");
    let (mut zip, mut gomod) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() != 3 {
            return Err(IngestError::BadRequest(format!(
                "the gosum file {} is malformed at line {}: '{line}'",
                file.display(),
                n + 1
            )));
        }
        if f[0] != module || !f[2].starts_with("h1:") {
            continue;
        }
        if f[1] == version {
            zip.push(f[2].to_string());
        } else if f[1] == mod_version {
            gomod.push(f[2].to_string());
        }
    }
    Ok((zip, gomod))
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Stream `size` bytes from `r` as the chunks of blob `oid`, checking they hash to it.
fn push_stream(b: &mut Batcher, r: &mut dyn Read, oid: &Oid, size: u64, what: &str) -> Result<(), IngestError> {
    let mut git = modzip::git_blob_hasher(size);
    let mut total = 0u64;
    let mut i = 0u32;
    loop {
        let mut buf = vec![0u8; CHUNK_SIZE];
        let n = read_full(r, &mut buf).map_err(|e| IngestError::BadContent(format!("{what}: {e}")))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        git.update(&buf);
        total += n as u64;
        b.blob_chunk(oid, i, buf)?;
        i += 1;
        if n < CHUNK_SIZE {
            break;
        }
    }
    let got: Oid = git.finalize().into();
    if total != size || got != *oid {
        return Err(IngestError::BadContent(format!("{what} changed while it was being stored")));
    }
    b.blob_done();
    Ok(())
}

/// Store a file of the mirror as one blob; returns its id and size.
fn store_file(b: &mut Batcher, path: &Path) -> Result<(Oid, u64), IngestError> {
    let mut f = File::open(path).map_err(cache_err(path))?;
    let size = f.metadata().map_err(cache_err(path))?.len();
    let mut git = modzip::git_blob_hasher(size);
    std::io::copy(&mut f.by_ref().take(size), &mut HashWriter(&mut git)).map_err(cache_err(path))?;
    let oid: Oid = git.finalize().into();
    if b.claim_blob(&oid) {
        let mut f = File::open(path).map_err(cache_err(path))?;
        push_stream(b, &mut f, &oid, size, &path.display().to_string())?;
    }
    Ok((oid, size))
}

struct HashWriter<'a>(&'a mut sha1::Sha1);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Blob ids and sizes of one version's proxy files, as kept in `<v>.oids`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VersionBlobs {
    info: (Oid, u64),
    gomod: (Oid, u64),
    zip: (Oid, u64),
}

impl VersionBlobs {
    fn encode(&self, h1: &str) -> String {
        let l = |k: &str, (o, s): (Oid, u64)| format!("{k} {} {s}\n", oid_hex(&o));
        format!("{}{}{}h1 {h1}\n", l("info", self.info), l("mod", self.gomod), l("zip", self.zip))
    }

    fn decode(text: &str) -> Option<VersionBlobs> {
        let mut m = HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() == 3 {
                m.insert(f[0], (oid_from_hex(f[1])?, f[2].parse().ok()?));
            }
        }
        Some(VersionBlobs { info: *m.get("info")?, gomod: *m.get("mod")?, zip: *m.get("zip")? })
    }
}

/// Whether the nodes hold the last chunk of a blob (an empty blob has none).
fn on_nodes(cluster: &Cluster, (oid, size): (Oid, u64)) -> bool {
    let n = keys::chunk_count(size);
    n == 0 || matches!(cluster.get(&keys::blob_chunk(&oid, (n - 1) as u32), 0, 0), Ok(Some(_)))
}

/// Make sure an earlier version's proxy files are on the nodes (storing them
/// again from the mirror if not); None when the mirror lacks them.
fn ensure_version(b: &mut Batcher, cluster: &Cluster, dir: &Path, ev: &str) -> Result<Option<VersionBlobs>, IngestError> {
    let recorded = std::fs::read_to_string(dir.join(format!("{ev}.oids"))).ok().and_then(|t| VersionBlobs::decode(&t));
    if let Some(r) = recorded {
        if on_nodes(cluster, r.info) && on_nodes(cluster, r.gomod) && on_nodes(cluster, r.zip) {
            return Ok(Some(r));
        }
    }
    let files = ["info", "mod", "zip"].map(|ext| dir.join(format!("{ev}.{ext}")));
    if !files.iter().all(|f| f.is_file()) {
        tracing::warn!(dir = %dir.display(), version = ev, "mirror incomplete; version left out of the list");
        return Ok(None);
    }
    Ok(Some(VersionBlobs { info: store_file(b, &files[0])?, gomod: store_file(b, &files[1])?, zip: store_file(b, &files[2])? }))
}

/// Ingest a Go module; see the module documentation. `req.url` is
/// `module@version`, `module@latest` or `module` (version in `req.git_ref`,
/// empty meaning latest). Content is always stored eagerly. Returns the
/// `go/pkg/mod/...` entry and the `go/proxy/.../@v` entry, in that order.
pub fn ingest(
    cache_dir: &Path,
    key: &monofs_net::key::ClusterKey,
    opts: &GoModOptions,
    req: &IngestRequest,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Vec<NsEntry>, IngestError> {
    if req.kind != SourceKind::GoModule {
        return Err(IngestError::BadRequest("not a Go module request".into()));
    }
    let (module, version) = parse_spec(&req.url, &req.git_ref)?;
    if !req.source_id.is_empty() {
        return Err(IngestError::BadRequest(format!(
            "a Go module is published at go/pkg/mod/... and go/proxy/...; a source_id ('{}') cannot move it",
            req.source_id
        )));
    }
    if req.nodes.is_empty() {
        return Err(IngestError::BadRequest("no storage nodes given".into()));
    }
    let proxy_url = opts.proxy.as_deref().filter(|p| !p.trim().is_empty()).ok_or_else(|| {
        IngestError::BadRequest(format!(
            "cannot ingest Go module {module}: this fetcher has no module proxy configured \
             (start it with --gomod-proxy URL, e.g. https://proxy.golang.org or file:///srv/goproxy)"
        ))
    })?;
    let p = proxy::Proxy::new(proxy_url, opts.timeout)
        .map_err(|e| IngestError::BadRequest(format!("invalid module proxy: {e}")))?;
    let mut p_ = Progress::new(progress);
    let prog = &mut p_;
    prog.force("fetching", 0, 0);

    let esc = escape(&module);
    let dir = cache_dir.join("gomod").join(&esc).join("@v");
    std::fs::create_dir_all(&dir).map_err(cache_err(&dir))?;
    let key_lock = module_lock(&dir);
    let _guard = lock(&key_lock);

    let version = if version == "latest" { resolve_latest(&p, &module)? } else { version };
    let ev = escape(&version);
    let shown = format!("{module}@{version}");
    let mut temps = Temps(Vec::new());

    // 1. The three files, from the mirror or the proxy.
    let cached = ["info", "mod", "zip"].iter().all(|x| dir.join(format!("{ev}.{x}")).is_file());
    let (info, gomod, zip_path, zip_tmp) = if cached {
        tracing::info!(module = %module, version = %version, "module version in the fetch cache; verifying it again");
        let info = std::fs::read(dir.join(format!("{ev}.info"))).map_err(cache_err(&dir))?;
        let gomod = std::fs::read(dir.join(format!("{ev}.mod"))).map_err(cache_err(&dir))?;
        (info, gomod, dir.join(format!("{ev}.zip")), false)
    } else {
        let get = |ext: &str| -> Result<Vec<u8>, IngestError> {
            p.get(&format!("{esc}/@v/{ev}.{ext}"), MAX_META)
                .map_err(|e| fetch_err(&module, &version, e))?
                .ok_or_else(|| not_found(&module, &version, &p))
        };
        let info = get("info")?;
        let gomod = get("mod")?;
        let tmp = temps.new_path(&dir, &format!("{ev}.zip"));
        prog.force("fetching", 0, 0);
        p.download(&format!("{esc}/@v/{ev}.zip"), &tmp, MAX_ZIP)
            .map_err(|e| fetch_err(&module, &version, e))?
            .ok_or_else(|| not_found(&module, &version, &p))?;
        (info, gomod, tmp, true)
    };
    let garbage = |what: &str, e: String| {
        IngestError::BadContent(format!("{shown}: the {what} from proxy {} is unusable: {e}", p.shown()))
    };
    let (info_version, commit_time) = parse_info(&info).map_err(|e| garbage(".info", format!("it is {e}")))?;
    if info_version != version {
        return Err(garbage(".info", format!("it describes version {info_version}")));
    }
    if gomod.len() as u64 > MAX_GO_MOD {
        return Err(garbage(".mod", format!("it is larger than {MAX_GO_MOD} bytes")));
    }

    // 2. Verify.
    prog.force("verifying", 0, 0);
    let mut read = 0u64;
    let checked = modzip::check(&zip_path, &module, &version, &mut |n| {
        read += n;
        prog.tick("verifying", 0, read);
    })
    .map_err(|e| garbage(".zip", e))?;
    let mod_h1 = modzip::hash_go_mod(&gomod);
    if let Some(f) = &opts.gosum_file {
        let (want_zip, want_mod) = gosum_lookup(f, &module, &version)?;
        let mismatch = |what: &str, got: &str, want: &[String]| {
            IngestError::BadContent(format!(
                "checksum mismatch for {shown}{what}: the proxy {} serves content hashing to {got}, \
                 the gosum file {} says {}; the download is refused",
                p.shown(),
                f.display(),
                want.join(" or ")
            ))
        };
        if !want_zip.is_empty() && !want_zip.contains(&checked.h1) {
            return Err(mismatch("", &checked.h1, &want_zip));
        }
        if !want_mod.is_empty() && !want_mod.contains(&mod_h1) {
            return Err(mismatch("/go.mod", &mod_h1, &want_mod));
        }
        if want_zip.is_empty() {
            tracing::info!(module = %module, version = %version, h1 = %checked.h1, go_mod = %mod_h1, gosum = %f.display(), "module not in the gosum file; hash recorded");
        } else {
            tracing::info!(module = %module, version = %version, h1 = %checked.h1, "module matches the gosum file");
        }
    } else {
        tracing::info!(module = %module, version = %version, h1 = %checked.h1, go_mod = %mod_h1, bytes = checked.bytes, "module verified; no gosum file configured, hash recorded");
    }
    // Verified: into the mirror (the zip last, so a complete triple means verified).
    let zip_path = if zip_tmp {
        write_atomic(&mut temps, &dir, &format!("{ev}.info"), &info)?;
        write_atomic(&mut temps, &dir, &format!("{ev}.mod"), &gomod)?;
        let dest = dir.join(format!("{ev}.zip"));
        std::fs::rename(&zip_path, &dest).map_err(cache_err(&dest))?;
        dest
    } else {
        zip_path
    };

    // 3. Store: the files, their trees, the proxy directory; roots last.
    let cluster = Cluster::new(req.nodes.clone(), req.replication as usize, key);
    let mut b = Batcher::new(&cluster, prog);
    b.progress.force("storing", 0, 0);
    let mut z = zip::ZipArchive::new(File::open(&zip_path).map_err(cache_err(&zip_path))?)
        .map_err(|e| garbage(".zip", e.to_string()))?;
    let mut tree = TreeBuilder::default();
    for f in &checked.files {
        if b.claim_blob(&f.oid) {
            let mut zf = z.by_index(f.index).map_err(|e| garbage(".zip", e.to_string()))?;
            push_stream(&mut b, &mut zf, &f.oid, f.size, &format!("{zip_path:?}: '{}'", f.path))?;
        }
        tree.add(&f.path, FileRef { mode: store::file_mode(f.exec), oid: f.oid, size: f.size })
            .map_err(|e| garbage(".zip", e))?;
    }
    let pkg_root = tree.build(&mut |t: &Tree| b.tree(t))?;

    let mut versions: Vec<(String, VersionBlobs)> = Vec::new();
    let current = VersionBlobs {
        info: (b.blob_bytes(&info)?, info.len() as u64),
        gomod: (b.blob_bytes(&gomod)?, gomod.len() as u64),
        zip: store_file(&mut b, &zip_path)?,
    };
    versions.push((version.clone(), current));
    for e in std::fs::read_dir(&dir).map_err(cache_err(&dir))? {
        let e = e.map_err(cache_err(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(other_ev) = name.strip_suffix(".oids") else { continue };
        let Some(other) = unescape(other_ev) else { continue };
        if other == version || module::check_version(&module, &other).is_err() {
            continue;
        }
        if let Some(vb) = ensure_version(&mut b, &cluster, &dir, other_ev)? {
            versions.push((other, vb));
        }
    }
    versions.sort_by(|a, c| module::compare(&a.0, &c.0));
    let list: String = versions.iter().map(|(v, _)| format!("{v}\n")).collect();
    let mut entries = vec![Entry { name: b"list".to_vec(), mode: MODE_FILE, oid: b.blob_bytes(list.as_bytes())?, size: list.len() as u64 }];
    for (v, vb) in &versions {
        let ev = escape(v);
        for (ext, (oid, size)) in [("info", vb.info), ("mod", vb.gomod), ("zip", vb.zip)] {
            entries.push(Entry { name: format!("{ev}.{ext}").into_bytes(), mode: MODE_FILE, oid, size });
        }
    }
    let at_v = store::make_tree(entries, 0)?;
    let (objects, bytes) = b.finish(&[&pkg_root, &at_v])?;
    write_atomic(&mut temps, &dir, &format!("{ev}.oids"), current.encode(&checked.h1).as_bytes())?;
    tracing::info!(module = %module, version = %version, objects, bytes, tree = %oid_hex(&pkg_root.oid), versions = versions.len(), "go module stored");

    let url = format!("go:{shown}");
    let git_ref = format!("{version} {}", checked.h1);
    Ok(vec![
        NsEntry {
            path: pkg_mod_path(&module, &version),
            url: url.clone(),
            git_ref: git_ref.clone(),
            commit: pkg_root.oid,
            root_tree: pkg_root.oid,
            commit_time,
            root_subdirs: pkg_root.subdirs,
        },
        NsEntry {
            path: proxy_path(&module),
            url,
            git_ref,
            commit: pkg_root.oid,
            root_tree: at_v.oid,
            commit_time,
            root_subdirs: 0,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("golang.org/x/mod@v0.20.0", "").unwrap(), ("golang.org/x/mod".into(), "v0.20.0".into()));
        assert_eq!(parse_spec("go:golang.org/x/mod@latest", "").unwrap().1, "latest");
        assert_eq!(parse_spec("golang.org/x/mod", "").unwrap().1, "latest");
        assert_eq!(parse_spec("golang.org/x/mod", "v0.1.0").unwrap().1, "v0.1.0");
        assert!(matches!(parse_spec("golang.org/../mod@v1.0.0", ""), Err(IngestError::BadUrl { .. })));
        assert!(matches!(parse_spec("golang.org/x/mod@v1", ""), Err(IngestError::BadRef { .. })));
        assert!(matches!(parse_spec("golang.org/x/mod@v1.0.0", "v2.0.0"), Err(IngestError::BadRequest(_))));
        assert_eq!(pkg_mod_path("example.com/Foo/bar", "v1.0.0-RC1"), "go/pkg/mod/example.com/!foo/bar@v1.0.0-!r!c1");
        assert_eq!(proxy_path("example.com/Foo/bar"), "go/proxy/example.com/!foo/bar/@v");
    }

    #[test]
    fn oids_files_round_trip() {
        let v = VersionBlobs { info: ([1; 20], 5), gomod: ([2; 20], 0), zip: ([3; 20], 1 << 30) };
        assert_eq!(VersionBlobs::decode(&v.encode("h1:x")), Some(v));
        assert_eq!(VersionBlobs::decode("info zz 1\n"), None);
    }
}
