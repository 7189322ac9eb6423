//! One shard's append-only, checksummed log file and its in-memory index.
//!
//! On-disk record, format version 2 (all integers big-endian), starting at a
//! 4096-aligned offset:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"MFSR"` |
//! | 4..8 | format version (2) in the high 16 bits, flags (0) in the low 16 |
//! | 8..10 | key length |
//! | 10..12 | reserved (0) |
//! | 12..16 | value length |
//! | 16..24 | meta checksum: xxh3-64 of bytes 0..16 ++ bytes 24..meta_len |
//! | 24..32 | sequence number (per shard, increasing) |
//! | 32.. | key |
//! | ..meta_len | block table: xxh3-64 of each 4096-byte block of the value (the last may be short) |
//! | value_off.. | value, zero padding up to a multiple of 4096 |
//!
//! `meta_len = 32 + key_len + 8 * ceil(value_len / 4096)`. The value follows the
//! table directly (`value_off = meta_len`) unless it is at least
//! [`ALIGNED_VALUE_MIN`] bytes long or aligning it costs no extra disk block; then
//! it starts at the next 4096 boundary, so block `i` of the value is exactly disk
//! block `value_off / 4096 + i` and a 4 KiB read of a 1 MiB chunk is one 4 KiB
//! O_DIRECT read. See [`Layout`].
//!
//! A GET reads only the disk blocks covering the value blocks it needs and verifies
//! those blocks against the table; the table comes from the index (kept at scan or
//! put time, up to [`TABLE_CACHE_BYTES`] per shard) or is read and verified (meta
//! checksum) together with the blocks.
//!
//! The file starts with one 4096-byte file header (see [`FileHeader`]); records
//! follow from offset 4096. Files are written and read with glommio DMA files
//! (O_DIRECT through io_uring).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use std::time::{Duration, Instant};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};
use glommio::sync::Semaphore;
use monofs_net::keyset::{bucket_of_hash, bucket_start, BucketDigest, Matcher, DIGEST_BUCKETS};
use monofs_net::{MAX_FRAME, MAX_KEY};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::damage::{hex, Damage, DamageList, Found};
use crate::metrics::ShardMetrics;

/// Alignment of every record and every write (O_DIRECT block size).
pub const ALIGN: u64 = 4096;
/// Value bytes covered by one block checksum.
pub const BLOCK: usize = 4096;
pub const HEADER_LEN: usize = 32;
pub const MAGIC: u32 = u32::from_be_bytes(*b"MFSR");
pub const VERSION: u16 = 2;
/// Values at least this long always start at a 4096-aligned offset in their record
/// (at most 4 KiB of padding, <= 6.25 %).
pub const ALIGNED_VALUE_MIN: usize = 64 << 10;
/// Block tables (8 bytes per 4 KiB of value) kept in the index, per shard: 64 MiB
/// covers 32 GiB of 1 MiB chunks. Tables of records beyond the budget are read from
/// disk with the blocks. Tables of values of at most one block (8 bytes) are always
/// kept, inline in the index entry.
pub const TABLE_CACHE_BYTES: usize = 64 << 20;
/// Group commit: one write + fdatasync carries at most this many bytes (a single
/// larger batch still goes alone) ...
pub const GROUP_MAX_BYTES: u64 = 8 << 20;
/// ... and at most this many PUT_BATCHes.
pub const GROUP_MAX_BATCHES: usize = 64;
/// Bytes read at a time while rebuilding the index.
const SCAN_WINDOW: usize = 4 << 20;
/// The start-up scan verifies the value blocks of every record that ends within
/// this many bytes of the end of the file, and of every record with a value
/// below [`ALIGNED_VALUE_MIN`] (read anyway: its meta and value share the scan
/// window). Only the last write can be torn by a crash — each group's write is
/// followed by fdatasync before the next one starts — and one write is at most
/// GROUP_MAX_BYTES or one batch (one frame of payload, 8 MiB, plus at most
/// 4096 × 4 KiB of meta and padding): 64 MiB covers it. Older large records have
/// only their meta (header, key, block table) read and checked at start; their
/// blocks are checked by every GET.
pub const TAIL_VERIFY: u64 = 64 << 20;
/// The torn-tail rule of the start-up scan. Records that fail their checks
/// (header, meta checksum, extent within the file, sequence above every record
/// before them, and — where verified, see [`TAIL_VERIFY`] — value blocks) are
/// skipped: the scan tries every following 4096-aligned offset until a record
/// passes all checks, indexes it and goes on. What it skipped is then
/// *damage*: an intact record follows it, so it was written, made durable and
/// acknowledged before that record, and it is reported and kept in place.
/// Only if no intact record follows and the skipped bytes start within the
/// last `TORN_TAIL_MAX` bytes of the file are they a *torn tail*: the end of
/// the last write, cut short by a crash before its fdatasync returned, never
/// acknowledged. They are cut off. Skipped bytes with no intact record after
/// them that start earlier cannot all belong to one write, so they are damage
/// too. One write is at most [`max_write_bytes`] bytes, which this bound covers.
pub const TORN_TAIL_MAX: u64 = TAIL_VERIFY;
/// After a write failed for lack of space, batches are refused at once for this
/// long; the next batch after it tries writing again.
pub const NO_SPACE_RETRY: Duration = Duration::from_secs(2);

/// The most bytes one group write can carry: a group of batches up to
/// GROUP_MAX_BYTES, or one batch alone, whose frame (at most MAX_FRAME of keys,
/// values and 6 bytes of framing per item) grows on disk by at most a header, a
/// block table and two blocks of padding per item.
pub const fn max_write_bytes() -> u64 {
    let items = monofs_net::MAX_BATCH_ITEMS as u64;
    let table = 8 * (MAX_FRAME as u64 / BLOCK as u64 + items);
    let batch = MAX_FRAME as u64 + items * (HEADER_LEN as u64 + 2 * ALIGN) + table;
    if batch > GROUP_MAX_BYTES {
        batch
    } else {
        GROUP_MAX_BYTES
    }
}
const _: () = assert!(max_write_bytes() <= TORN_TAIL_MAX);

/// Offset of the first record: the file header takes the first block.
pub const LOG_START: u64 = ALIGN;
pub const FILE_MAGIC: [u8; 8] = *b"MONOFSLG";
/// Version 2: per-block checksums (version 1 checksummed key ++ value as a whole).
pub const FILE_VERSION: u32 = 2;

/// The first block of a log file: `b"MONOFSLG"`, u32 format version, u16 shard
/// index, u16 shard count (big-endian), zeros to 4096 bytes.
///
/// Besides naming the file, it keeps a log from ever being empty when glommio
/// opens it: glommio probes io_uring polled I/O with a read at offset 0 and
/// caches the answer per device, and on an empty file that read succeeds
/// without touching the device, wrongly enabling polled reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub shard: u16,
    pub shards: u16,
}

impl FileHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; LOG_START as usize];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..12].copy_from_slice(&FILE_VERSION.to_be_bytes());
        b[12..14].copy_from_slice(&self.shard.to_be_bytes());
        b[14..16].copy_from_slice(&self.shards.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<FileHeader, String> {
        if b.len() < 16 || b[0..8] != FILE_MAGIC {
            return Err("not a MonoFS log (bad magic)".into());
        }
        let version = u32::from_be_bytes(b[8..12].try_into().unwrap());
        if version != FILE_VERSION {
            return Err(format!(
                "log format version {version} is not supported by this MonoFS node (it reads and writes only \
                 version {FILE_VERSION}); there is no migration: move the db path aside, start with a fresh one \
                 and ingest again"
            ));
        }
        Ok(FileHeader {
            shard: u16::from_be_bytes([b[12], b[13]]),
            shards: u16::from_be_bytes([b[14], b[15]]),
        })
    }
}

/// Check, before any file is created, that the logs already in `db` were
/// written by a node with `shards` shards.
pub fn check_db(db: &Path, shards: usize) -> anyhow::Result<()> {
    use std::io::Read;
    let entries = match std::fs::read_dir(db) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("reading db directory {}: {e}", db.display()),
    };
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("reading db directory {}: {e}", db.display()))?;
        let name = entry.file_name();
        let Some(idx) = name.to_str().and_then(|n| n.strip_prefix("shard-")?.strip_suffix(".log")?.parse::<usize>().ok())
        else {
            continue;
        };
        let mut b = [0u8; 16];
        let found = std::fs::File::open(entry.path()).and_then(|mut f| f.read_exact(&mut b));
        let recorded = match found {
            Ok(()) => FileHeader::decode(&b).map_err(|e| anyhow::anyhow!("{}: {e}", entry.path().display()))?.shards,
            // Cut short while being created: no records, no opinion.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
            Err(e) => anyhow::bail!("reading {}: {e}", entry.path().display()),
        };
        if recorded as usize != shards || idx >= shards {
            anyhow::bail!(
                "{} was written by a node with {recorded} shards, but this node runs {shards}: keys would be \
                 misplaced; start with {recorded} shards or use a fresh db path",
                entry.path().display()
            );
        }
    }
    Ok(())
}

/// Create the log with its header if it is missing (or was cut short while
/// being created), or check the header of an existing one. Plain blocking I/O:
/// this runs once per shard at start.
fn prepare_file(path: &Path, want: FileHeader) -> anyhow::Result<()> {
    use std::io::Read;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => anyhow::bail!("stat {}: {e}", path.display()),
    };
    if len >= LOG_START {
        let mut b = [0u8; 16];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| anyhow::anyhow!("reading header of {}: {e}", path.display()))?;
        let h = FileHeader::decode(&b).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if h != want {
            anyhow::bail!(
                "{} belongs to shard {} of {}, but this node runs {} shards: keys would be \
                 misplaced; start with --shards {} or use a fresh db path",
                path.display(),
                h.shard,
                h.shards,
                want.shards,
                h.shards
            );
        }
        return Ok(());
    }
    let tmp = path.with_extension("log.new");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&want.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
    };
    write().map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))
}

pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

fn align_down(n: u64) -> u64 {
    n / ALIGN * ALIGN
}

/// Where the parts of a record holding `key_len` + `value_len` bytes lie, relative
/// to its start. A pure function of the two lengths, so the scan, PUT and GET agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub key_len: usize,
    pub value_len: usize,
    /// Value blocks (and table entries): `ceil(value_len / BLOCK)`.
    pub blocks: usize,
    /// Header + key + table: what the meta checksum covers (minus its own field).
    pub meta_len: usize,
    pub value_off: usize,
    pub record_len: u64,
}

impl Layout {
    pub fn new(key_len: usize, value_len: usize) -> Layout {
        let blocks = value_len.div_ceil(BLOCK);
        let meta_len = HEADER_LEN + key_len + 8 * blocks;
        let packed = align_up((meta_len + value_len) as u64);
        let aligned_off = align_up(meta_len as u64) as usize;
        let aligned = align_up((aligned_off + value_len) as u64);
        let value_off = if value_len >= ALIGNED_VALUE_MIN || aligned == packed { aligned_off } else { meta_len };
        Layout { key_len, value_len, blocks, meta_len, value_off, record_len: align_up((value_off + value_len) as u64) }
    }

    fn table_at(&self) -> usize {
        HEADER_LEN + self.key_len
    }

    /// Record-relative byte range of value blocks `b0..b1`.
    fn blocks_range(&self, b0: usize, b1: usize) -> (usize, usize) {
        (self.value_off + b0 * BLOCK, self.value_off + (b1 * BLOCK).min(self.value_len))
    }
}

/// Length on disk of a record holding `key_len` + `value_len` bytes.
pub fn record_len(key_len: usize, value_len: usize) -> u64 {
    Layout::new(key_len, value_len).record_len
}

/// xxh3-64 of a record's meta (`meta.len()` = `meta_len`), skipping the checksum field.
pub fn meta_checksum(meta: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&meta[..16]);
    h.update(&meta[24..]);
    h.digest()
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_len: u16,
    pub value_len: u32,
    /// Meta checksum (see [`meta_checksum`]).
    pub checksum: u64,
    pub seq: u64,
}

impl Header {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&((VERSION as u32) << 16).to_be_bytes());
        out[8..10].copy_from_slice(&self.key_len.to_be_bytes());
        out[10..12].copy_from_slice(&0u16.to_be_bytes());
        out[12..16].copy_from_slice(&self.value_len.to_be_bytes());
        out[16..24].copy_from_slice(&self.checksum.to_be_bytes());
        out[24..32].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// A header that could describe a record: magic, version and lengths in range.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        if u32_at(0) != MAGIC || (u32_at(4) >> 16) as u16 != VERSION {
            return None;
        }
        let key_len = u16::from_be_bytes([b[8], b[9]]);
        let value_len = u32_at(12);
        if key_len as usize > MAX_KEY || value_len as usize > MAX_FRAME {
            return None;
        }
        Some(Header { key_len, value_len, checksum: be64(b, 16), seq: be64(b, 24) })
    }

    pub fn layout(&self) -> Layout {
        Layout::new(self.key_len as usize, self.value_len as usize)
    }

    pub fn record_len(&self) -> u64 {
        self.layout().record_len
    }
}

/// Check a record's meta (`meta` starts at the record and holds at least
/// `meta_len` bytes): header valid, meta checksum right. Returns the header, the
/// layout and the block table.
pub fn check_meta(meta: &[u8]) -> Result<(Header, Layout, Vec<u64>), String> {
    let h = Header::decode(meta).ok_or("invalid record header")?;
    let l = h.layout();
    if meta.len() < l.meta_len {
        return Err("short record meta".into());
    }
    if meta_checksum(&meta[..l.meta_len]) != h.checksum {
        return Err("meta checksum mismatch".into());
    }
    let t = l.table_at();
    Ok((h, l, (0..l.blocks).map(|i| be64(meta, t + 8 * i)).collect()))
}

/// Write the record for `key`/`value` into `rec` (exactly `record_len` bytes).
/// Returns the block table.
pub fn encode_record(rec: &mut [u8], key: &[u8], value: &[u8], seq: u64) -> Vec<u64> {
    let l = Layout::new(key.len(), value.len());
    debug_assert_eq!(rec.len() as u64, l.record_len);
    rec[HEADER_LEN..HEADER_LEN + key.len()].copy_from_slice(key);
    let t = l.table_at();
    let mut sums = Vec::with_capacity(l.blocks);
    for (i, blk) in value.chunks(BLOCK).enumerate() {
        let s = xxh3_64(blk);
        rec[t + 8 * i..t + 8 * i + 8].copy_from_slice(&s.to_be_bytes());
        sums.push(s);
    }
    rec[l.meta_len..l.value_off].fill(0);
    rec[l.value_off..l.value_off + value.len()].copy_from_slice(value);
    rec[l.value_off + value.len()..].fill(0);
    Header { key_len: key.len() as u16, value_len: value.len() as u32, checksum: 0, seq }.encode(rec);
    let c = meta_checksum(&rec[..l.meta_len]);
    rec[16..24].copy_from_slice(&c.to_be_bytes());
    sums
}

/// Verify value blocks `b0..` held in `data` (starting at block `b0`'s first byte)
/// against `sums` (the table entries from `b0` on).
fn check_blocks(data: &[u8], sums: &[u64]) -> Result<(), usize> {
    for (i, (blk, want)) in data.chunks(BLOCK).zip(sums).enumerate() {
        if xxh3_64(blk) != *want {
            return Err(i);
        }
    }
    Ok(())
}

/// The block table of an indexed record, if kept in memory.
#[derive(Debug)]
enum Sums {
    /// Not cached (over the shard's budget): read from the record.
    OnDisk,
    /// Values of at most one block: no heap allocation (0 for an empty value).
    One(u64),
    Table(Box<[u64]>),
}

impl Sums {
    fn range(&self, b0: usize, b1: usize) -> Option<Vec<u64>> {
        match self {
            Sums::OnDisk => None,
            Sums::One(s) => Some(vec![*s]),
            Sums::Table(t) => Some(t[b0..b1].to_vec()),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Sums::Table(t) => t.len() * 8,
            _ => 0,
        }
    }
}

/// Where a key's latest record lives.
#[derive(Debug)]
pub struct IndexEntry {
    pub offset: u64,
    pub value_len: u32,
    pub record_len: u32,
    /// The record was found damaged (bad value blocks): still indexed so its good
    /// blocks are served, but not counted as held, so a repair copies it back.
    damaged: bool,
    sums: Sums,
}

/// Keys a digest or a listing examines between chances for other tasks (GETs)
/// of the shard to run; the index is not borrowed across them.
pub const KEYS_PER_YIELD: usize = 4096;
/// Keys one LIST_KEYS page examines at most, matching or not: a page of a filter
/// that few keys match ends early with a cursor instead of walking the shard.
pub const MAX_LIST_SCAN: usize = 65536;

/// Position in the index: keys are ordered by `xxh3_64(key)`, then by key bytes,
/// so each digest bucket (a range of the hash) is one contiguous range.
type Pos = (u64, Vec<u8>);

/// The shard's key → record map, with the block tables it keeps (bounded).
struct Index {
    map: BTreeMap<Pos, IndexEntry>,
    table_bytes: usize,
    table_budget: usize,
    /// Damaged entries and the value bytes of the undamaged ones.
    damaged: u64,
    held_bytes: u64,
}

impl Index {
    fn new(table_budget: usize) -> Index {
        Index { map: BTreeMap::new(), table_bytes: 0, table_budget, damaged: 0, held_bytes: 0 }
    }

    fn get(&self, key: &[u8]) -> Option<&IndexEntry> {
        let h = xxh3_64(key);
        // `Vec::new()` does not allocate: the lookup costs no allocation.
        self.map.range((h, Vec::new())..).take_while(|((kh, _), _)| *kh == h).find(|((_, k), _)| k == key).map(|(_, e)| e)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Keys held (undamaged) and their value bytes.
    fn held(&self) -> (u64, u64) {
        (self.map.len() as u64 - self.damaged, self.held_bytes)
    }

    fn account(&mut self, e: &IndexEntry, sign: i64) {
        if e.damaged {
            self.damaged = self.damaged.wrapping_add_signed(sign);
        } else {
            self.held_bytes = self.held_bytes.wrapping_add_signed(sign * e.value_len as i64);
        }
    }

    fn mark_damaged(&mut self, key: &[u8]) {
        let h = xxh3_64(key);
        let Some(e) = self.map.get_mut(&(h, key.to_vec())) else { return };
        if !e.damaged {
            e.damaged = true;
            self.damaged += 1;
            self.held_bytes -= e.value_len as u64;
        }
    }

    /// Call `f` on the entries after `from` in index order, stopping before hash
    /// `end` (exclusive; `None`: the end of the index), after `max` entries, or
    /// when `f` returns false. Returns the position to resume after, or `None` if
    /// the range is done.
    fn visit(
        &self,
        from: &Bound<Pos>,
        end: Option<u64>,
        max: usize,
        mut f: impl FnMut(u64, &[u8], &IndexEntry) -> bool,
    ) -> Option<Pos> {
        let mut n = 0;
        for ((h, k), e) in self.map.range((from.clone(), Bound::Unbounded)) {
            if end.is_some_and(|end| *h >= end) {
                return None;
            }
            let go_on = f(*h, k, e);
            n += 1;
            if !go_on || n >= max {
                return Some((*h, k.clone()));
            }
        }
        None
    }

    fn insert(&mut self, key: Vec<u8>, offset: u64, l: &Layout, sums: Vec<u64>) {
        let sums = match sums.len() {
            0 => Sums::One(0),
            1 => Sums::One(sums[0]),
            n if self.table_bytes + 8 * n <= self.table_budget => {
                self.table_bytes += 8 * n;
                Sums::Table(sums.into_boxed_slice())
            }
            _ => Sums::OnDisk,
        };
        let e =
            IndexEntry { offset, value_len: l.value_len as u32, record_len: l.record_len as u32, damaged: false, sums };
        self.account(&e, 1);
        if let Some(old) = self.map.insert((xxh3_64(&key), key), e) {
            self.table_bytes -= old.sums.heap_bytes();
            self.account(&old, -1);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(&(xxh3_64(key), key.to_vec())) {
            self.table_bytes -= old.sums.heap_bytes();
            self.account(&old, -1);
        }
    }
}

#[derive(Debug)]
pub enum GetError {
    /// The record on disk does not match its checksum (or its header is damaged).
    Corrupt(String),
    Io(String),
}

/// What rebuilding the index found.
#[derive(Debug, Default)]
pub struct OpenStats {
    pub records: u64,
    pub keys: usize,
    pub log_bytes: u64,
    pub cut_bytes: u64,
    /// Damaged extents skipped and records kept with damaged value blocks.
    pub damaged: u64,
    /// Bytes of block tables kept in the index.
    pub table_bytes: usize,
}

/// Why a PUT_BATCH was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutError {
    /// A write found no space; batches are refused for [`NO_SPACE_RETRY`], then
    /// writing is tried again.
    NoSpace(String),
    /// The batch is invalid, or the shard refuses all writes until restart.
    Refused(String),
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::NoSpace(m) => write!(f, "no space left on device: {m}"),
            PutError::Refused(m) => f.write_str(m),
        }
    }
}

type Done = Rc<Cell<Option<Result<u64, PutError>>>>;

/// A PUT_BATCH waiting for its group's write.
struct Pending {
    items: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: u64,
    done: Done,
}

/// What the scan found at one 4096-aligned offset.
enum Probe {
    /// A record whose header and meta checksum are right and that fits in the
    /// file. `bad_block` is the first value block failing its checksum, for the
    /// records whose blocks the scan verifies.
    Record { h: Header, l: Layout, sums: Vec<u64>, key: Vec<u8>, bad_block: Option<usize> },
    /// No record starts here; `key` is what a decodable but unverified header names.
    Invalid { reason: String, key: Option<Vec<u8>> },
}

/// Reads the log for the start-up scan through one window of it in memory.
struct Scanner<'a> {
    file: &'a DmaFile,
    path: &'a Path,
    size: u64,
    /// Large records ending before this have only their meta read.
    sparse_until: u64,
    win: Option<ReadResult>,
    win_start: u64,
    /// The last record probed was read sparsely: the next is likely large too.
    sparse: bool,
}

impl Scanner<'_> {
    fn covered(&self, off: u64, end: u64) -> bool {
        self.win.as_ref().is_some_and(|w| off >= self.win_start && end <= self.win_start + w.len() as u64)
    }

    /// Make `off .. off + need` be in the window, reading `want` bytes from `off`
    /// if it is not. False if the file holds fewer bytes.
    async fn ensure(&mut self, off: u64, need: u64, want: usize) -> anyhow::Result<bool> {
        if !self.covered(off, off + need) {
            let n = want.max(need as usize).min(align_up(self.size - off) as usize);
            self.win = Some(read_aligned(self.file, self.path, off, n).await?);
            self.win_start = off;
        }
        Ok(self.covered(off, off + need))
    }

    fn bytes(&self, off: u64, n: u64) -> &[u8] {
        let at = (off - self.win_start) as usize;
        &self.win.as_ref().unwrap()[at..at + n as usize]
    }

    async fn probe(&mut self, off: u64) -> anyhow::Result<Probe> {
        let invalid = |reason: &str, key: Option<Vec<u8>>| Ok(Probe::Invalid { reason: reason.into(), key });
        if self.size - off < HEADER_LEN as u64 {
            return invalid("incomplete header", None);
        }
        let first = if self.sparse { ALIGN as usize } else { SCAN_WINDOW };
        self.sparse = false;
        if !self.ensure(off, HEADER_LEN as u64, first).await? {
            return invalid("short read", None);
        }
        let Some(h) = Header::decode(self.bytes(off, HEADER_LEN as u64)) else {
            return invalid("invalid record header", None);
        };
        let l = h.layout();
        let key_end = (HEADER_LEN + l.key_len) as u64;
        let key = self.covered(off, off + key_end).then(|| self.bytes(off, key_end)[HEADER_LEN..].to_vec());
        if off + l.record_len > self.size {
            return invalid(&format!("record of {} bytes extends past the end of the file", l.record_len), key);
        }
        let sparse = l.value_len >= ALIGNED_VALUE_MIN && off + l.record_len <= self.sparse_until;
        // What must be in memory: the meta of a record read sparsely, else all of it.
        let need = if sparse { align_up(l.meta_len as u64) } else { l.record_len };
        let want = if sparse { need as usize } else { SCAN_WINDOW.max(l.record_len as usize) };
        if !self.ensure(off, need, want).await? {
            return invalid("short read", None);
        }
        let rec = self.bytes(off, need);
        let key = rec[HEADER_LEN..HEADER_LEN + l.key_len].to_vec();
        let (h, l, sums) = match check_meta(rec) {
            Ok(x) => x,
            Err(e) => return invalid(&e, Some(key)),
        };
        let bad_block = if sparse {
            None
        } else {
            let (v0, v1) = l.blocks_range(0, l.blocks);
            check_blocks(&rec[v0..v1], &sums).err()
        };
        self.sparse = sparse;
        Ok(Probe::Record { h, l, sums, key, bad_block })
    }
}

/// Something the scan found since the last intact record: damage if an intact
/// record follows, else (near the end) a torn tail.
enum Suspect {
    /// Offsets holding no valid record.
    Extent { start: u64, end: u64, reason: String, key: Option<Vec<u8>> },
    /// A record with intact meta and a bad value block.
    Blocks { off: u64, l: Layout, sums: Vec<u64>, key: Vec<u8>, block: usize },
}

impl Suspect {
    fn start(&self) -> u64 {
        match self {
            Suspect::Extent { start, .. } => *start,
            Suspect::Blocks { off, .. } => *off,
        }
    }
}

/// The scan met an intact record (or chose to keep the damage): everything
/// pending before it is damage. Extents are logged and listed, and the key their
/// header names, if any, is dropped from the index so an older record of it is
/// not served in place of the lost one; records with bad blocks are indexed.
fn settle(
    pending: &mut Vec<Suspect>,
    shard: usize,
    path: &Path,
    index: &mut Index,
    damage: &mut DamageList,
    stats: &mut OpenStats,
) {
    for s in pending.drain(..) {
        let d = match s {
            Suspect::Extent { start, end, reason, key } => {
                if let Some(k) = &key {
                    index.remove(k);
                }
                Damage { offset: start, length: end - start, key, key_verified: false, found: Found::Skipped, reason }
            }
            Suspect::Blocks { off, l, sums, key, block } => {
                index.insert(key.clone(), off, &l, sums);
                index.mark_damaged(&key);
                stats.records += 1;
                let reason = format!("checksum mismatch in value block {block}");
                Damage { offset: off, length: l.record_len, key: Some(key), key_verified: true, found: Found::BadBlocks, reason }
            }
        };
        tracing::error!(
            shard,
            path = %path.display(),
            offset = d.offset,
            length = d.length,
            key = d.key.as_deref().map(hex).unwrap_or_default(),
            key_verified = d.key_verified,
            "damaged log extent ({}): {}; the records around it are served",
            d.reason,
            if d.found == Found::Skipped { "skipped" } else { "kept, its bad blocks are refused" },
        );
        damage.note(d);
        stats.damaged += 1;
    }
}

/// Cut the torn tail `from..size` off, first copying it aside if there is room.
async fn cut_torn_tail(file: &DmaFile, path: &Path, shard: usize, from: u64, size: u64) -> anyhow::Result<()> {
    tracing::warn!(
        shard,
        path = %path.display(),
        offset = from,
        cut_bytes = size - from,
        "log ends in a torn write (no intact record after offset {from}); cutting it off"
    );
    match save_cut_tail(path, from) {
        Ok(p) => tracing::warn!(shard, "cut bytes saved to {}", p.display()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => tracing::warn!(
            shard,
            "no room to save the {} cut bytes ({e}); dropped without a copy: they were never acknowledged",
            size - from
        ),
        Err(e) => anyhow::bail!("saving the cut tail of {} before truncating: {e}", path.display()),
    }
    // Truncation needs no free space.
    file.truncate(from).await.map_err(|e| anyhow::anyhow!("truncating {}: {e}", path.display()))?;
    file.fdatasync().await.map_err(|e| anyhow::anyhow!("fdatasync {}: {e}", path.display()))?;
    Ok(())
}

pub struct ShardLog {
    shard: usize,
    path: PathBuf,
    file: DmaFile,
    index: RefCell<Index>,
    /// Offset the next batch is written at; always a multiple of ALIGN.
    append: Cell<u64>,
    next_seq: Cell<u64>,
    /// Batches not yet written, in arrival order.
    queue: RefCell<VecDeque<Pending>>,
    /// One writer at a time: groups go to increasing offsets, and one group's
    /// write + fdatasync completes before the next group's write starts.
    writer: Semaphore,
    /// Set after a failed write or fdatasync: the tail is in an unknown state
    /// and no further write is accepted until restart.
    failed: RefCell<Option<String>>,
    /// Set after a write found no space: until this instant batches are refused
    /// with the message; then the next one tries writing again.
    no_space: RefCell<Option<(Instant, String)>>,
    damage: RefCell<DamageList>,
    /// Group writes done (each one write + one fdatasync).
    groups: Cell<u64>,
    metrics: std::sync::Arc<ShardMetrics>,
}

impl ShardLog {
    pub fn path_for(db: &Path, shard: usize) -> PathBuf {
        db.join(format!("shard-{shard}.log"))
    }

    /// Open or create the log and rebuild the index by scanning it: every
    /// record's meta checksum is verified, and the block checksums of the records
    /// in the last [`TAIL_VERIFY`] bytes and of all small ones. Damaged records
    /// are skipped and listed, a torn last write is cut off (see
    /// [`TORN_TAIL_MAX`]). `table_budget` bounds the block tables kept in memory.
    pub async fn open(
        db: &Path,
        shard: usize,
        shards: usize,
        table_budget: usize,
        metrics: std::sync::Arc<ShardMetrics>,
    ) -> anyhow::Result<(ShardLog, OpenStats)> {
        let path = Self::path_for(db, shard);
        prepare_file(&path, FileHeader { shard: shard as u16, shards: shards as u16 })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&path)
            .await
            .map_err(|e| anyhow::anyhow!("opening {} with O_DIRECT: {e}", path.display()))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| anyhow::anyhow!("stat {}: {e}", path.display()))?;

        let mut index = Index::new(table_budget);
        let mut damage = DamageList::default();
        let mut stats = OpenStats::default();
        let mut max_seq = 0u64;
        let mut off = LOG_START;
        let mut scan = Scanner {
            file: &file,
            path: &path,
            size,
            sparse_until: size.saturating_sub(TAIL_VERIFY),
            win: None,
            win_start: 0,
            sparse: false,
        };
        // What failed since the last intact record (see TORN_TAIL_MAX).
        let mut pending: Vec<Suspect> = Vec::new();
        while off < size {
            match scan.probe(off).await? {
                Probe::Record { h, l, sums, key, bad_block } if h.seq > max_seq => {
                    max_seq = h.seq;
                    match bad_block {
                        Some(block) => pending.push(Suspect::Blocks { off, l, sums, key, block }),
                        None => {
                            settle(&mut pending, shard, &path, &mut index, &mut damage, &mut stats);
                            index.insert(key, off, &l, sums);
                            stats.records += 1;
                        }
                    }
                    off += l.record_len;
                }
                probe => {
                    let (reason, key) = match probe {
                        Probe::Invalid { reason, key } => (reason, key),
                        // Its key has a newer record: not a key to report missing.
                        Probe::Record { h, .. } => {
                            (format!("stale record: sequence {} is not above {max_seq}", h.seq), None)
                        }
                    };
                    let end = (off + ALIGN).min(size);
                    match pending.last_mut() {
                        Some(Suspect::Extent { end: e, .. }) if *e == off => *e = end,
                        _ => pending.push(Suspect::Extent { start: off, end, reason, key }),
                    }
                    off += ALIGN;
                }
            }
        }
        let mut end = off.min(size);
        if let Some(first) = pending.first().map(Suspect::start) {
            if size - first <= TORN_TAIL_MAX {
                stats.cut_bytes = size - first;
                end = first;
                cut_torn_tail(&file, &path, shard, first, size).await?;
                pending.clear();
            } else {
                tracing::error!(
                    shard,
                    path = %path.display(),
                    offset = first,
                    "no intact record follows damage that starts {} bytes before the end of the log, more than \
                     one write: keeping it in place as damage, appending after it",
                    size - first
                );
                settle(&mut pending, shard, &path, &mut index, &mut damage, &mut stats);
                end = align_up(size);
            }
        }
        let off = end;
        stats.keys = index.len();
        stats.log_bytes = off;
        stats.table_bytes = index.table_bytes;
        metrics.set_log_bytes(off);
        metrics.set_keys(index.len() as u64);
        metrics.set_damaged(damage.total());
        Ok((
            ShardLog {
                shard,
                path,
                file,
                index: RefCell::new(index),
                append: Cell::new(off),
                next_seq: Cell::new(max_seq + 1),
                queue: RefCell::new(VecDeque::new()),
                writer: Semaphore::new(1),
                failed: RefCell::new(None),
                no_space: RefCell::new(None),
                damage: RefCell::new(damage),
                groups: Cell::new(0),
                metrics,
            },
            stats,
        ))
    }

    pub fn stat(&self, key: &[u8]) -> Option<u64> {
        self.index.borrow().get(key).map(|e| e.value_len as u64)
    }

    /// Bytes of the log file (header, records, padding, kept damage).
    pub fn log_bytes(&self) -> u64 {
        self.append.get()
    }

    /// Keys held (damaged ones excluded) and their value bytes.
    pub fn held(&self) -> (u64, u64) {
        self.index.borrow().held()
    }

    /// DIGEST_BUCKETS digests of the held keys `m` matches. Answered from the
    /// index alone; other tasks run every KEYS_PER_YIELD keys, and what it holds
    /// meanwhile is the digest and one key.
    pub async fn digest(&self, m: &Matcher<'_>) -> Vec<BucketDigest> {
        let mut d = vec![BucketDigest::default(); DIGEST_BUCKETS];
        let mut from = Bound::Unbounded;
        loop {
            let next = self.index.borrow().visit(&from, None, KEYS_PER_YIELD, |h, k, e| {
                if !e.damaged && m.matches(k) {
                    d[bucket_of_hash(h) as usize].add(h);
                }
                true
            });
            match next {
                Some(p) => from = Bound::Excluded(p),
                None => return d,
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Up to `limit` held keys `m` matches, with their value sizes, in index order
    /// after `after` (within `bucket` if given), and where the next page starts.
    /// Examines at most MAX_LIST_SCAN keys.
    pub async fn list(
        &self,
        m: &Matcher<'_>,
        bucket: Option<u16>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<(Vec<u8>, u64)>, Option<Vec<u8>>) {
        let end = bucket.and_then(|b| (b as usize + 1 < DIGEST_BUCKETS).then(|| bucket_start(b + 1)));
        // A cursor from outside the bucket cannot lead before it.
        let after = after.map(|k| (xxh3_64(k), k)).filter(|(h, _)| bucket.is_none_or(|b| *h >= bucket_start(b)));
        let mut from = match (after, bucket) {
            (Some((h, k)), _) => Bound::Excluded((h, k.to_vec())),
            (None, Some(b)) => Bound::Included((bucket_start(b), Vec::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut keys = Vec::new();
        let mut scanned = 0;
        loop {
            let step = KEYS_PER_YIELD.min(MAX_LIST_SCAN - scanned);
            let next = self.index.borrow().visit(&from, end, step, |_, k, e| {
                if !e.damaged && m.matches(k) {
                    keys.push((k.to_vec(), e.value_len as u64));
                }
                keys.len() < limit
            });
            let Some(p) = next else { return (keys, None) };
            scanned += step;
            if keys.len() >= limit || scanned >= MAX_LIST_SCAN {
                return (keys, Some(p.1));
            }
            from = Bound::Excluded(p);
            glommio::yield_if_needed().await;
        }
    }

    /// Group writes (one write + one fdatasync each) done since open.
    pub fn groups(&self) -> u64 {
        self.groups.get()
    }

    /// Bytes of block tables the index holds now.
    pub fn table_bytes(&self) -> usize {
        self.index.borrow().table_bytes
    }

    /// Durably append all items, then index them. Returns the bytes written for
    /// this batch. Batches arriving while a group is being written wait and go out
    /// together in the next group: one contiguous aligned write and one fdatasync
    /// (group commit); each is answered only after that fdatasync.
    pub async fn put_batch(&self, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<u64, PutError> {
        for (k, v) in &items {
            if k.len() > MAX_KEY || v.len() > MAX_FRAME {
                return Err(PutError::Refused(format!(
                    "item too large: key {} bytes, value {} bytes",
                    k.len(),
                    v.len()
                )));
            }
        }
        let bytes: u64 = items.iter().map(|(k, v)| record_len(k.len(), v.len())).sum();
        let done: Done = Rc::new(Cell::new(None));
        self.queue.borrow_mut().push_back(Pending { items, bytes, done: done.clone() });
        let _permit =
            self.writer.acquire_permit(1).await.map_err(|e| PutError::Refused(format!("writer closed: {e}")))?;
        loop {
            // Written (or failed) by an earlier holder of the permit?
            if let Some(r) = done.take() {
                return r;
            }
            // Our batch is still queued: write a group from the queue's front.
            self.write_group().await;
        }
    }

    /// Take up to GROUP_MAX_BATCHES / GROUP_MAX_BYTES of queued batches (at least
    /// one), write them as one aligned write, fdatasync, index them, and complete
    /// each. Called with the writer permit held.
    async fn write_group(&self) {
        let failed = self.failed.borrow().clone();
        if let Some(why) = failed {
            let e = PutError::Refused(format!("shard {} refuses writes after an earlier I/O failure: {why}", self.shard));
            for p in self.queue.borrow_mut().drain(..) {
                p.done.set(Some(Err(e.clone())));
            }
            return;
        }
        let no_space = self.no_space.borrow().clone();
        if let Some((until, why)) = no_space {
            if Instant::now() < until {
                for p in self.queue.borrow_mut().drain(..) {
                    p.done.set(Some(Err(PutError::NoSpace(why.clone()))));
                }
                return;
            }
        }
        let group: Vec<Pending> = {
            let mut q = self.queue.borrow_mut();
            let mut total = 0u64;
            let mut n = 0;
            while n < q.len() && n < GROUP_MAX_BATCHES && (n == 0 || total + q[n].bytes <= GROUP_MAX_BYTES) {
                total += q[n].bytes;
                n += 1;
            }
            q.drain(..n).collect()
        };
        let total: u64 = group.iter().map(|p| p.bytes).sum();
        if total == 0 {
            for p in group {
                p.done.set(Some(Ok(0)));
            }
            return;
        }
        let start = self.append.get();
        let mut buf = self.file.alloc_dma_buffer(total as usize);
        let mut placed = Vec::with_capacity(group.iter().map(|p| p.items.len()).sum());
        {
            let b = buf.as_bytes_mut();
            let mut at = 0usize;
            let mut seq = self.next_seq.get();
            for p in &group {
                for (k, v) in &p.items {
                    let l = Layout::new(k.len(), v.len());
                    let rlen = l.record_len as usize;
                    let sums = encode_record(&mut b[at..at + rlen], k, v, seq);
                    placed.push((start + at as u64, l, sums));
                    seq += 1;
                    at += rlen;
                }
            }
            self.next_seq.set(seq);
        }
        // After a failed write or fdatasync the state of the written pages is
        // unknown: a later fdatasync may report success for pages the kernel
        // already dropped (the PostgreSQL "fsyncgate" lesson), so nothing after it
        // could be trusted to be durable. The shard refuses writes until restart,
        // whose scan finds what really is on disk.
        let fail = |what: &str, e: String| {
            let msg = format!("{what} {} at offset {start}: {e}", self.path.display());
            tracing::error!(shard = self.shard, "{msg}");
            *self.failed.borrow_mut() = Some(msg.clone());
            for p in &group {
                p.done.set(Some(Err(PutError::Refused(msg.clone()))));
            }
        };
        let short = match self.write_at(buf, start).await {
            Ok(n) if n as u64 == total => None,
            // O_DIRECT writes stop short when the file system fills up.
            Ok(n) => Some(format!("short write, {n} of {total} bytes")),
            Err(e) if is_no_space(&e) => Some(e.to_string()),
            Err(e) => return fail("writing", e.to_string()),
        };
        if let Some(e) = short {
            // Nothing of the group is indexed and the log end stays at `start`: the
            // next write goes there, over what of this one reached the disk. Cutting
            // that off (truncation needs no space) keeps it from being taken for
            // records at the next start.
            if let Err(te) = self.file.truncate(start).await {
                return fail("cutting a failed write off", format!("{e}; then truncating: {te}"));
            }
            let why = format!(
                "shard {} refuses writes; reads continue ({e}: {total} bytes at offset {start} of {}; writing is \
                 tried again {NO_SPACE_RETRY:?} after the failure)",
                self.shard,
                self.path.display()
            );
            tracing::error!(shard = self.shard, "no space left on device: {why}");
            *self.no_space.borrow_mut() = Some((Instant::now() + NO_SPACE_RETRY, why.clone()));
            for p in &group {
                p.done.set(Some(Err(PutError::NoSpace(why.clone()))));
            }
            return;
        }
        if let Err(e) = self.fdatasync().await {
            return fail("fdatasync", e.to_string());
        }
        if self.no_space.borrow_mut().take().is_some() {
            tracing::info!(shard = self.shard, "log writes succeed again after running out of space");
        }
        self.append.set(start + total);
        self.groups.set(self.groups.get() + 1);
        let mut index = self.index.borrow_mut();
        let mut placed = placed.into_iter();
        for p in group {
            for (k, _) in p.items {
                let (off, l, sums) = placed.next().unwrap();
                index.insert(k, off, &l, sums);
            }
            p.done.set(Some(Ok(p.bytes)));
        }
        self.metrics.set_log_bytes(start + total);
        self.metrics.set_keys(index.len() as u64);
    }

    /// Return `value[offset..offset+len]` clamped to the value, reading only the
    /// disk blocks that hold the value blocks covering that range (and the record's
    /// meta if its block table is not in the index) and verifying just those blocks.
    /// The result points into the read buffer (no copy).
    /// A record found damaged is added to the damage list.
    pub async fn get(&self, key: &[u8], offset: u64, len: u32) -> Result<Option<ReadResult>, GetError> {
        let r = self.read_value(key, offset, len).await;
        if let Err(GetError::Corrupt(m)) = &r {
            self.note_read_damage(key, m);
        }
        r
    }

    fn note_read_damage(&self, key: &[u8], reason: &str) {
        let Some((offset, length)) = self.index.borrow().get(key).map(|e| (e.offset, e.record_len as u64)) else {
            return;
        };
        self.index.borrow_mut().mark_damaged(key);
        let d = Damage {
            offset,
            length,
            key: Some(key.to_vec()),
            key_verified: true,
            found: Found::Read,
            reason: reason.to_string(),
        };
        let mut list = self.damage.borrow_mut();
        if list.note(d) {
            self.metrics.set_damaged(list.total());
        }
    }

    /// The damage list as the `DAMAGED` op answers it.
    pub fn damage_json(&self, node: &str, shard: u16) -> serde_json::Value {
        self.damage.borrow().to_json(node, shard, &self.path.display().to_string())
    }

    /// Damaged extents and records known (listed or not).
    pub fn damaged(&self) -> u64 {
        self.damage.borrow().total()
    }

    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> std::io::Result<usize> {
        #[cfg(feature = "fault-injection")]
        if let Some(e) = crate::fault::check(&self.path, crate::fault::Fault::NoSpace) {
            return Err(e);
        }
        self.file.write_at(buf, pos).await.map_err(io_error)
    }

    async fn fdatasync(&self) -> std::io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if let Some(e) = crate::fault::check(&self.path, crate::fault::Fault::FdatasyncFails) {
            return Err(e);
        }
        self.file.fdatasync().await.map_err(io_error)
    }

    async fn read_value(&self, key: &[u8], offset: u64, len: u32) -> Result<Option<ReadResult>, GetError> {
        let (rec_off, l, from, to, cached) = {
            let index = self.index.borrow();
            let Some(e) = index.get(key) else {
                return Ok(None);
            };
            let vlen = e.value_len as u64;
            let from = offset.min(vlen) as usize;
            let to = offset.saturating_add(len as u64).min(vlen) as usize;
            if to <= from {
                return Ok(Some(ReadResult::default()));
            }
            let l = Layout::new(key.len(), e.value_len as usize);
            (e.offset, l, from, to, e.sums.range(from / BLOCK, to.div_ceil(BLOCK)))
        };
        let (b0, b1) = (from / BLOCK, to.div_ceil(BLOCK));
        let (d0, d1) = l.blocks_range(b0, b1);
        // Record-relative, aligned: what to read for the blocks.
        let (r0, r1) = (align_down(d0 as u64), align_up(d1 as u64));
        let corrupt = |what: String| GetError::Corrupt(format!("{what} in record at offset {rec_off} of {}", self.path.display()));
        let (buf, base, sums) = match cached {
            Some(sums) => (self.read(rec_off + r0, (r1 - r0) as usize).await?, r0, sums),
            None => {
                let meta_end = align_up(l.meta_len as u64);
                let (meta, data, base) = if r0 <= meta_end {
                    // Meta and blocks are adjacent: one read from the record start.
                    let b = self.read(rec_off, r1.max(meta_end) as usize).await?;
                    (b.clone(), b, 0)
                } else {
                    let (m, d) = futures_lite::future::zip(
                        self.read(rec_off, meta_end as usize),
                        self.read(rec_off + r0, (r1 - r0) as usize),
                    )
                    .await;
                    (m?, d?, r0)
                };
                let (h, ml, table) = check_meta(&meta).map_err(corrupt)?;
                if ml != l || &meta[HEADER_LEN..HEADER_LEN + key.len()] != key {
                    return Err(corrupt(format!("record header does not match the index (seq {})", h.seq)));
                }
                (data, base, table[b0..b1].to_vec())
            }
        };
        let (s0, s1) = ((d0 as u64 - base) as usize, (d1 as u64 - base) as usize);
        if buf.len() < s1 {
            return Err(corrupt(format!("short read: {} of {} bytes", buf.len(), s1)));
        }
        if let Err(i) = check_blocks(&buf[s0..s1], &sums) {
            return Err(corrupt(format!("checksum mismatch in value block {}", b0 + i)));
        }
        let at = (l.value_off + from) as u64 - base;
        ReadResult::slice(&buf, at as usize, to - from)
            .map(Some)
            .ok_or_else(|| corrupt(format!("short read: {} bytes", buf.len())))
    }

    async fn read(&self, pos: u64, n: usize) -> Result<ReadResult, GetError> {
        self.file
            .read_at_aligned(pos, n)
            .await
            .map_err(|err| GetError::Io(format!("reading {} at {pos}: {err}", self.path.display())))
    }

    /// Wait until no write is in flight and refuse further ones.
    pub async fn quiesce(&self) {
        if let Ok(p) = self.writer.acquire_permit(1).await {
            *self.failed.borrow_mut() = Some("shard is shutting down".into());
            drop(p);
        }
    }

    pub async fn close(self) {
        if let Err(e) = self.file.close().await {
            tracing::warn!(shard = self.shard, "closing {}: {e}", self.path.display());
        }
    }
}

/// Copy `path[off..]` to `path.cut-<off>-<unix secs>` (plain blocking I/O, at
/// start only). A copy that failed is removed.
fn save_cut_tail(path: &Path, off: u64) -> std::io::Result<PathBuf> {
    use std::io::{Seek, SeekFrom};
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dest = path.with_extension(format!("log.cut-{off}-{secs}"));
    let copy = || -> std::io::Result<()> {
        let mut src = std::fs::File::open(path)?;
        src.seek(SeekFrom::Start(off))?;
        let mut dst = std::fs::File::create(&dest)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.sync_all()
    };
    match copy() {
        Ok(()) => Ok(dest),
        Err(e) => {
            let _ = std::fs::remove_file(&dest);
            Err(e)
        }
    }
}

/// The OS error inside a glommio error, so ENOSPC can be told from others.
fn io_error(e: glommio::GlommioError<()>) -> std::io::Error {
    match e {
        glommio::GlommioError::IoError(e) | glommio::GlommioError::EnhancedIoError { source: e, .. } => e,
        other => std::io::Error::other(other.to_string()),
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

async fn read_aligned(file: &DmaFile, path: &Path, off: u64, n: usize) -> anyhow::Result<ReadResult> {
    file.read_at_aligned(off, n)
        .await
        .map_err(|e| anyhow::anyhow!("reading {} at {off}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_header_round_trip() {
        let h = FileHeader { shard: 3, shards: 4 };
        let b = h.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(FileHeader::decode(&b), Ok(h));
        assert!(FileHeader::decode(&b"MONOFSLX\0\0\0\x01\0\0\0\0"[..]).is_err());
    }

    #[test]
    fn header_round_trip() {
        let h = Header { key_len: 21, value_len: 1 << 20, checksum: 0xdead_beef, seq: 7 };
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(Header::decode(&b), Some(h));
        assert_eq!(&b[0..4], b"MFSR");
        b[0] ^= 1;
        assert_eq!(Header::decode(&b), None);
        assert_eq!(record_len(0, 0), 4096);
        // One block of value: one table entry.
        assert_eq!(record_len(21, 4096 - 32 - 21 - 8), 4096);
        assert_eq!(record_len(21, 4096 - 32 - 21 - 7), 8192);
    }

    #[test]
    fn layout() {
        // A 1 MiB chunk: header, key and 256-entry table in the first block, the
        // value block-aligned after it.
        let l = Layout::new(25, 1 << 20);
        assert_eq!((l.blocks, l.meta_len, l.value_off), (256, 32 + 25 + 2048, 4096));
        assert_eq!(l.record_len, 4096 + (1 << 20));
        // The engine benchmark's records: one block on disk.
        let l = Layout::new(25, 4000);
        assert_eq!((l.blocks, l.value_off, l.record_len), (1, 65, 4096));
        // Small and medium values follow the table unless aligning is free.
        let l = Layout::new(25, 10_000);
        assert_eq!((l.value_off, l.record_len), (32 + 25 + 24, 12288));
        let l = Layout::new(25, 8192);
        assert_eq!((l.value_off, l.record_len), (4096, 12288));
        assert_eq!(Layout::new(25, 0).record_len, 4096);
        // Every layout fits its record.
        for v in [0, 1, 4095, 4096, 4097, 60_000, 65_535, 65_536, 70_000, MAX_FRAME] {
            let l = Layout::new(MAX_KEY, v);
            assert!(l.value_off >= l.meta_len && l.value_off as u64 + v as u64 <= l.record_len, "{l:?}");
            assert_eq!(l.record_len % ALIGN, 0);
        }
    }

    #[test]
    fn record_round_trip() {
        let key = b"Bsome-key".to_vec();
        let value: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let l = Layout::new(key.len(), value.len());
        let mut rec = vec![0xeeu8; l.record_len as usize];
        let sums = encode_record(&mut rec, &key, &value, 42);
        let (h, l2, table) = check_meta(&rec).unwrap();
        assert_eq!((h.seq, l2, &table), (42, l, &sums));
        assert_eq!(&rec[l.value_off..l.value_off + value.len()], &value[..]);
        assert!(check_blocks(&rec[l.value_off..l.value_off + value.len()], &sums).is_ok());
        // Any change to the header, key or table breaks the meta checksum.
        for at in [5, 9, 13, 25, HEADER_LEN + 2, l.meta_len - 1] {
            let mut bad = rec.clone();
            bad[at] ^= 1;
            assert!(check_meta(&bad).is_err(), "byte {at}");
        }
        // A value byte breaks exactly its block.
        let mut bad = rec.clone();
        bad[l.value_off + 3 * BLOCK + 17] ^= 1;
        assert_eq!(check_blocks(&bad[l.value_off..l.value_off + value.len()], &sums), Err(3));
    }

    fn db_dir(name: &str) -> PathBuf {
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/engine-tests")
            .join(format!("unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .unwrap()
            .run(f)
    }

    async fn open(db: &Path, budget: usize) -> ShardLog {
        ShardLog::open(db, 0, 1, budget, Default::default()).await.unwrap().0
    }

    fn val(seed: u32, n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2654435761) ^ seed).to_le_bytes()[1]).collect()
    }

    fn flip(db: &Path, at: u64) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(ShardLog::path_for(db, 0)).unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
        f.sync_all().unwrap();
    }

    async fn get(log: &ShardLog, key: &[u8], off: u64, len: u32) -> Result<Vec<u8>, String> {
        match log.get(key, off, len).await {
            Ok(Some(d)) => Ok(d.to_vec()),
            Ok(None) => Err("not found".into()),
            Err(GetError::Corrupt(m)) | Err(GetError::Io(m)) => Err(m),
        }
    }

    /// With no table budget every GET reads and verifies the record's meta too.
    #[test]
    fn tables_not_in_memory_are_read_and_verified() {
        let db = db_dir("uncached");
        run(async {
            let big = val(1, 1 << 20);
            let mid = val(2, 70_000);
            let small = val(3, 5000);
            let log = open(&db, 0).await;
            let items =
                vec![(b"Bbig".to_vec(), big.clone()), (b"Bmid".to_vec(), mid.clone()), (b"Bsmall".to_vec(), small.clone())];
            log.put_batch(items).await.unwrap();
            assert_eq!(log.table_bytes(), 0);
            for (k, v) in [(&b"Bbig"[..], &big), (b"Bmid", &mid), (b"Bsmall", &small)] {
                for (off, len) in [(0u64, u32::MAX), (0, 10), (4096, 4096), (4000, 200), (v.len() as u64 - 3, 100)] {
                    let from = off as usize;
                    let to = (from + len as usize).min(v.len());
                    assert_eq!(get(&log, k, off, len).await.unwrap(), &v[from..to], "{off} {len}");
                }
            }
            // Same answers with the tables in memory (after a restart with a budget).
            log.close().await;
            let log = open(&db, TABLE_CACHE_BYTES).await;
            assert_eq!(log.table_bytes(), 8 * (256 + 18 + 2));
            assert_eq!(get(&log, b"Bbig", 8190, 5).await.unwrap(), &big[8190..8195]);
            assert_eq!(get(&log, b"Bmid", 0, u32::MAX).await.unwrap(), mid);
            log.close().await;

            // A damaged table entry (block 9 of Bbig): without the table in memory
            // every read of Bbig fails on the meta checksum, before any block is served.
            let log = open(&db, 0).await;
            flip(&db, LOG_START + (HEADER_LEN + 4 + 8 * 9) as u64);
            for (off, len) in [(0u64, 10u32), (9 * 4096, 4096), (0, u32::MAX)] {
                let e = get(&log, b"Bbig", off, len).await.unwrap_err();
                assert!(e.contains("meta checksum mismatch"), "{e}");
            }
            assert_eq!(get(&log, b"Bmid", 0, u32::MAX).await.unwrap(), mid);
            log.close().await;
            let (log, stats) = ShardLog::open(&db, 0, 1, 0, Default::default()).await.unwrap();
            // The scan verifies meta checksums: the damaged record is skipped as
            // damage (intact records follow it), the others are served.
            assert_eq!((stats.records, stats.keys, stats.cut_bytes, stats.damaged), (2, 2, 0, 1));
            assert!(get(&log, b"Bbig", 0, 10).await.is_err());
            assert_eq!(get(&log, b"Bmid", 0, u32::MAX).await.unwrap(), mid);
            let j = log.damage_json("n1", 0);
            assert_eq!((j["total"].as_u64(), j["damaged"][0]["offset"].as_u64()), (Some(1), Some(LOG_START)));
            assert_eq!(j["damaged"][0]["key"], hex(b"Bbig"));
            log.close().await;
        });
    }

    #[test]
    fn damaged_block_is_refused_only_where_read() {
        for budget in [0, TABLE_CACHE_BYTES] {
            let db = db_dir(&format!("block-{budget}"));
            run(async {
                let big = val(1, 1 << 20);
                let log = open(&db, budget).await;
                log.put_batch(vec![(b"Bbig".to_vec(), big.clone())]).await.unwrap();
                let l = Layout::new(4, big.len());
                // Damage value block 5.
                flip(&db, LOG_START + (l.value_off + 5 * BLOCK + 100) as u64);
                // Other blocks are served.
                assert_eq!(get(&log, b"Bbig", 2 * 4096, 4096).await.unwrap(), &big[8192..12288]);
                assert_eq!(get(&log, b"Bbig", 6 * 4096, 3 * 4096).await.unwrap(), &big[6 * 4096..9 * 4096]);
                // Block 5, or any range touching it, is not.
                for (off, len) in [(5 * 4096u64, 4096u32), (5 * 4096 + 100, 1), (4 * 4096, 8192), (0, u32::MAX)] {
                    let e = get(&log, b"Bbig", off, len).await.unwrap_err();
                    assert!(e.contains("checksum mismatch in value block 5"), "{e}");
                }
                log.close().await;
            });
        }
    }

    /// Batches arriving during a write go out together; each is acknowledged
    /// only after the group's fdatasync, and all are readable after a restart.
    #[test]
    fn concurrent_batches_are_group_committed() {
        let db = db_dir("group");
        run(async {
            let log = Rc::new(open(&db, TABLE_CACHE_BYTES).await);
            let n = 200u32;
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let k = format!("Bk{i}").into_bytes();
                        log.put_batch(vec![(k.clone(), val(i, 100 + i as usize * 50))]).await.unwrap();
                        // Acknowledged means durable and indexed.
                        assert_eq!(log.stat(&k), Some(100 + i as u64 * 50));
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let groups = log.groups();
            assert!(groups < n as u64 / 2, "{groups} groups for {n} batches");
            assert!(groups >= (n as u64).div_ceil(GROUP_MAX_BATCHES as u64));
            Rc::try_unwrap(log).ok().unwrap().close().await;
            let (log, stats) = ShardLog::open(&db, 0, 1, TABLE_CACHE_BYTES, Default::default()).await.unwrap();
            assert_eq!((stats.records, stats.cut_bytes), (n as u64, 0));
            for i in 0..n {
                let v = val(i, 100 + i as usize * 50);
                assert_eq!(get(&log, format!("Bk{i}").as_bytes(), 0, u32::MAX).await.unwrap(), v);
            }
            // A failed shard refuses the queued and the later batches alike.
            *log.failed.borrow_mut() = Some("test".into());
            let e = log.put_batch(vec![(b"Bx".to_vec(), vec![1])]).await.unwrap_err().to_string();
            assert!(e.contains("refuses writes"), "{e}");
            log.close().await;
        });
    }

    /// A damaged block of a large record before the tail region is not a torn
    /// tail: the scan reads only that record's meta, keeps every record, and GET
    /// refuses the block. Damage in the tail region is cut at start.
    #[test]
    fn scan_verifies_blocks_in_the_tail_only() {
        let db = db_dir("tail");
        run(async {
            let log = open(&db, TABLE_CACHE_BYTES).await;
            let n = 80u32; // 80 MiB + meta: the first records end before the tail region
            for i in 0..n {
                log.put_batch(vec![(format!("Bc{i}").into_bytes(), val(i, 1 << 20))]).await.unwrap();
            }
            log.close().await;
            let rec = |i: u64| LOG_START + i * (4096 + (1 << 20));
            flip(&db, rec(1) + 4096 + 3 * 4096); // block 3 of Bc1
            flip(&db, rec(n as u64 - 1) + 4096 + 200 * 4096); // block 200 of the last record
            let (log, stats) = ShardLog::open(&db, 0, 1, TABLE_CACHE_BYTES, Default::default()).await.unwrap();
            assert_eq!(stats.records, n as u64 - 1, "only the damaged last record is cut");
            assert_eq!(stats.cut_bytes, 4096 + (1 << 20));
            let e = get(&log, b"Bc1", 3 * 4096, 10).await.unwrap_err();
            assert!(e.contains("checksum mismatch in value block 3"), "{e}");
            assert_eq!(get(&log, b"Bc1", 4 * 4096, 10).await.unwrap(), &val(1, 1 << 20)[4 * 4096..4 * 4096 + 10]);
            assert_eq!(get(&log, b"Bc2", 0, u32::MAX).await.unwrap(), val(2, 1 << 20));
            log.close().await;
        });
    }
}
