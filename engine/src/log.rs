//! One shard's append-only, checksummed log file and its in-memory index.
//!
//! On-disk record (all integers big-endian), starting at a 4096-aligned offset:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"MFSR"` |
//! | 4..8 | format version (1) in the high 16 bits, flags (0) in the low 16 |
//! | 8..10 | key length |
//! | 10..12 | reserved (0) |
//! | 12..16 | value length |
//! | 16..24 | xxh3-64 of key ++ value |
//! | 24..32 | sequence number (per shard, increasing) |
//! | 32.. | key, value, zero padding up to a multiple of 4096 |
//!
//! The file starts with one 4096-byte file header (see [`FileHeader`]); records
//! follow from offset 4096. Files are written and read with glommio DMA files
//! (O_DIRECT through io_uring).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions, ReadResult};
use glommio::sync::Semaphore;
use monofs_net::{MAX_FRAME, MAX_KEY};
use xxhash_rust::xxh3::xxh3_64;

use crate::metrics::ShardMetrics;

/// Alignment of every record and every write (O_DIRECT block size).
pub const ALIGN: u64 = 4096;
pub const HEADER_LEN: usize = 32;
pub const MAGIC: u32 = u32::from_be_bytes(*b"MFSR");
pub const VERSION: u16 = 1;
/// Bytes read at a time while rebuilding the index.
const SCAN_WINDOW: usize = 4 << 20;
/// Offset of the first record: the file header takes the first block.
pub const LOG_START: u64 = ALIGN;
pub const FILE_MAGIC: [u8; 8] = *b"MONOFSLG";
pub const FILE_VERSION: u32 = 1;

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
            return Err(format!("unsupported log format version {version}"));
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

/// Length on disk of a record holding `key_len` + `value_len` bytes.
pub fn record_len(key_len: usize, value_len: usize) -> u64 {
    align_up((HEADER_LEN + key_len + value_len) as u64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_len: u16,
    pub value_len: u32,
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
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        if u32_at(0) != MAGIC || (u32_at(4) >> 16) as u16 != VERSION {
            return None;
        }
        let key_len = u16::from_be_bytes([b[8], b[9]]);
        let value_len = u32_at(12);
        if key_len as usize > MAX_KEY || value_len as usize > MAX_FRAME {
            return None;
        }
        Some(Header { key_len, value_len, checksum: u64_at(16), seq: u64_at(24) })
    }

    pub fn record_len(&self) -> u64 {
        record_len(self.key_len as usize, self.value_len as usize)
    }
}

/// Where a key's latest record lives.
#[derive(Clone, Copy, Debug)]
pub struct IndexEntry {
    pub offset: u64,
    pub value_len: u32,
    pub record_len: u32,
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
}

pub struct ShardLog {
    shard: usize,
    path: PathBuf,
    file: DmaFile,
    index: RefCell<HashMap<Vec<u8>, IndexEntry>>,
    /// Offset the next batch is written at; always a multiple of ALIGN.
    append: Cell<u64>,
    next_seq: Cell<u64>,
    /// One writer at a time: batches go to increasing offsets.
    writer: Semaphore,
    /// Set after a failed write or fdatasync: the tail is in an unknown state
    /// and no further write is accepted until restart.
    failed: RefCell<Option<String>>,
    metrics: std::sync::Arc<ShardMetrics>,
}

fn checksum_of(b: &[u8]) -> u64 {
    xxh3_64(b)
}

impl ShardLog {
    pub fn path_for(db: &Path, shard: usize) -> PathBuf {
        db.join(format!("shard-{shard}.log"))
    }

    /// Open or create the log and rebuild the index by scanning it. A torn or
    /// invalid tail is cut off (truncated) so later appends never sit before
    /// stale bytes.
    pub async fn open(
        db: &Path,
        shard: usize,
        shards: usize,
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

        let mut index: HashMap<Vec<u8>, IndexEntry> = HashMap::new();
        let mut stats = OpenStats::default();
        let mut max_seq = 0u64;
        let mut off = LOG_START;
        // Window of the file currently in memory: [win_start, win_start + win.len()).
        let mut win_start = 0u64;
        let mut win: Option<ReadResult> = None;
        let cut_reason: Option<String> = loop {
            if off >= size {
                break None;
            }
            if size - off < HEADER_LEN as u64 {
                break Some("incomplete header".into());
            }
            let covered = |win: &Option<ReadResult>, win_start: u64, end: u64| {
                win.as_ref().is_some_and(|w| off >= win_start && end <= win_start + w.len() as u64)
            };
            if !covered(&win, win_start, off + HEADER_LEN as u64) {
                let n = SCAN_WINDOW.min(align_up(size - off) as usize);
                win = Some(read_aligned(&file, &path, off, n).await?);
                win_start = off;
            }
            let w = win.as_ref().unwrap();
            let at = (off - win_start) as usize;
            let Some(h) = Header::decode(&w[at..]) else {
                break Some("invalid header".into());
            };
            let rlen = h.record_len();
            if off + rlen > size {
                break Some(format!("record of {rlen} bytes extends past end of file"));
            }
            if !covered(&win, win_start, off + rlen) {
                let n = SCAN_WINDOW.max(rlen as usize).min(align_up(size - off) as usize);
                win = Some(read_aligned(&file, &path, off, n).await?);
                win_start = off;
                if !covered(&win, win_start, off + rlen) {
                    break Some("short read".into());
                }
            }
            let w = win.as_ref().unwrap();
            let at = (off - win_start) as usize;
            let kv = &w[at + HEADER_LEN..at + HEADER_LEN + h.key_len as usize + h.value_len as usize];
            if checksum_of(kv) != h.checksum {
                break Some("checksum mismatch".into());
            }
            let key = kv[..h.key_len as usize].to_vec();
            index.insert(key, IndexEntry { offset: off, value_len: h.value_len, record_len: rlen as u32 });
            max_seq = max_seq.max(h.seq);
            stats.records += 1;
            off += rlen;
        };
        if let Some(reason) = cut_reason {
            stats.cut_bytes = size - off;
            tracing::warn!(
                shard,
                path = %path.display(),
                offset = off,
                cut_bytes = stats.cut_bytes,
                "log tail is torn or invalid ({reason}); cutting it off"
            );
            // Mid-log damage would cut good records too: keep the bytes for the
            // operator rather than destroying them.
            let saved = save_cut_tail(&path, off);
            match &saved {
                Ok(p) => tracing::warn!(shard, "cut bytes saved to {}", p.display()),
                Err(e) => anyhow::bail!("saving the cut tail of {} before truncating: {e}", path.display()),
            }
            file.truncate(off).await.map_err(|e| anyhow::anyhow!("truncating {}: {e}", path.display()))?;
            file.fdatasync().await.map_err(|e| anyhow::anyhow!("fdatasync {}: {e}", path.display()))?;
        }
        stats.keys = index.len();
        stats.log_bytes = off;
        metrics.set_log_bytes(off);
        metrics.set_keys(index.len() as u64);
        Ok((
            ShardLog {
                shard,
                path,
                file,
                index: RefCell::new(index),
                append: Cell::new(off),
                next_seq: Cell::new(max_seq + 1),
                writer: Semaphore::new(1),
                failed: RefCell::new(None),
                metrics,
            },
            stats,
        ))
    }

    pub fn stat(&self, key: &[u8]) -> Option<u64> {
        self.index.borrow().get(key).map(|e| e.value_len as u64)
    }

    /// Durably append all items as one contiguous write, fdatasync, then index
    /// them. Returns the bytes written.
    pub async fn put_batch(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<u64, String> {
        for (k, v) in items {
            if k.len() > MAX_KEY || v.len() > MAX_FRAME {
                return Err(format!("item too large: key {} bytes, value {} bytes", k.len(), v.len()));
            }
        }
        let _permit = self.writer.acquire_permit(1).await.map_err(|e| format!("writer closed: {e}"))?;
        if let Some(why) = self.failed.borrow().as_ref() {
            return Err(format!("shard {} refuses writes after an earlier I/O failure: {why}", self.shard));
        }
        if items.is_empty() {
            return Ok(0);
        }
        let total: u64 = items.iter().map(|(k, v)| record_len(k.len(), v.len())).sum();
        let start = self.append.get();
        let mut buf = self.file.alloc_dma_buffer(total as usize);
        let mut placed = Vec::with_capacity(items.len());
        {
            let b = buf.as_bytes_mut();
            let mut at = 0usize;
            let mut seq = self.next_seq.get();
            for (k, v) in items {
                let rlen = record_len(k.len(), v.len()) as usize;
                let rec = &mut b[at..at + rlen];
                rec[HEADER_LEN..HEADER_LEN + k.len()].copy_from_slice(k);
                rec[HEADER_LEN + k.len()..HEADER_LEN + k.len() + v.len()].copy_from_slice(v);
                rec[HEADER_LEN + k.len() + v.len()..].fill(0);
                let checksum = checksum_of(&rec[HEADER_LEN..HEADER_LEN + k.len() + v.len()]);
                Header { key_len: k.len() as u16, value_len: v.len() as u32, checksum, seq }.encode(rec);
                placed.push(IndexEntry { offset: start + at as u64, value_len: v.len() as u32, record_len: rlen as u32 });
                seq += 1;
                at += rlen;
            }
            self.next_seq.set(seq);
        }
        let fail = |what: &str, e: String| {
            let msg = format!("{what} {} at offset {start}: {e}", self.path.display());
            tracing::error!(shard = self.shard, "{msg}");
            *self.failed.borrow_mut() = Some(msg.clone());
            msg
        };
        match self.file.write_at(buf, start).await {
            Ok(n) if n as u64 == total => {}
            Ok(n) => return Err(fail("short write to", format!("{n} of {total} bytes"))),
            Err(e) => return Err(fail("writing", e.to_string())),
        }
        if let Err(e) = self.file.fdatasync().await {
            return Err(fail("fdatasync", e.to_string()));
        }
        self.append.set(start + total);
        let mut index = self.index.borrow_mut();
        for ((k, _), e) in items.iter().zip(placed) {
            index.insert(k.clone(), e);
        }
        self.metrics.set_log_bytes(start + total);
        self.metrics.set_keys(index.len() as u64);
        Ok(total)
    }

    /// Read and verify the key's record; return `value[offset..offset+len]`
    /// clamped to the value.
    pub async fn get(&self, key: &[u8], offset: u64, len: u32) -> Result<Option<Vec<u8>>, GetError> {
        let Some(e) = self.index.borrow().get(key).copied() else {
            return Ok(None);
        };
        let rec = self
            .file
            .read_at_aligned(e.offset, e.record_len as usize)
            .await
            .map_err(|err| GetError::Io(format!("reading {} at {}: {err}", self.path.display(), e.offset)))?;
        if rec.len() < e.record_len as usize {
            return Err(GetError::Corrupt(format!(
                "short read of record at offset {}: {} of {} bytes",
                e.offset,
                rec.len(),
                e.record_len
            )));
        }
        let h = Header::decode(&rec).filter(|h| {
            h.key_len as usize == key.len() && h.value_len == e.value_len && h.record_len() == e.record_len as u64
        });
        let Some(h) = h else {
            return Err(GetError::Corrupt(format!("damaged record header at offset {}", e.offset)));
        };
        let kv = &rec[HEADER_LEN..HEADER_LEN + h.key_len as usize + h.value_len as usize];
        if checksum_of(kv) != h.checksum || &kv[..key.len()] != key {
            return Err(GetError::Corrupt(format!(
                "checksum mismatch in record at offset {} of {}",
                e.offset,
                self.path.display()
            )));
        }
        let value = &kv[key.len()..];
        let from = (offset.min(value.len() as u64)) as usize;
        let to = (offset.saturating_add(len as u64)).min(value.len() as u64) as usize;
        Ok(Some(value[from..to.max(from)].to_vec()))
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

/// Copy `path[off..]` to `path.cut-<off>-<unix secs>` (plain blocking I/O, at start only).
fn save_cut_tail(path: &Path, off: u64) -> std::io::Result<PathBuf> {
    use std::io::{Seek, SeekFrom};
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dest = path.with_extension(format!("log.cut-{off}-{secs}"));
    let mut src = std::fs::File::open(path)?;
    src.seek(SeekFrom::Start(off))?;
    let mut dst = std::fs::File::create(&dest)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.sync_all()?;
    Ok(dest)
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
        assert_eq!(record_len(21, 4096 - 32 - 21), 4096);
        assert_eq!(record_len(21, 4096 - 32 - 20), 8192);
    }
}
