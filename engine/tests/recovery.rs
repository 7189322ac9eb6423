//! Start-up recovery of one shard's log: damage anywhere costs only the damaged
//! record, a torn last write is cut without touching what was acknowledged.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use common::*;
use monofs_engine::log::{record_len, GetError, OpenStats, ShardLog, LOG_START};

async fn open(db: &Path) -> (ShardLog, OpenStats) {
    ShardLog::open(db, 0, 1, monofs_engine::log::TABLE_CACHE_BYTES, Arc::default()).await.unwrap()
}

async fn read(log: &ShardLog, k: &[u8]) -> Result<Option<Vec<u8>>, String> {
    match log.get(k, 0, u32::MAX).await {
        Ok(d) => Ok(d.map(|d| d.to_vec())),
        Err(GetError::Corrupt(m)) | Err(GetError::Io(m)) => Err(m),
    }
}

/// Items of mixed sizes: 1 MiB chunks, values above and below the 64 KiB
/// alignment threshold, single-block ones and empty ones. Keys are unique.
fn mixed_items(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let len = match i % 10 {
                0 if i % 100 == 0 => 1 << 20,
                0 => 70_000 + i as usize * 13,
                2 => 0,
                3 | 4 => 4000,
                5 => 20_000 + i as usize * 7,
                _ => 100 + i as usize * 3,
            };
            (key(i), value(i, len))
        })
        .collect()
}

/// Write `items` in batches of 8 and return each item's record offset (in order:
/// one writer, so records follow each other).
async fn write_all(log: &ShardLog, items: &[(Vec<u8>, Vec<u8>)]) -> Vec<(u64, u64)> {
    let mut at = LOG_START;
    let mut extents = Vec::new();
    for batch in items.chunks(8) {
        log.put_batch(batch.to_vec()).await.unwrap();
        for (k, v) in batch {
            let n = record_len(k.len(), v.len());
            extents.push((at, n));
            at += n;
        }
    }
    extents
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 200 single-bit flips at random offsets of a log of 300 records: after each
/// restart every record except the one holding the flipped bit is served
/// whole, and that one is never served wrong.
#[test]
fn single_bit_flips_cost_only_the_damaged_record() {
    init_tracing();
    let db = db_dir("bitflips");
    let items = mixed_items(300);
    let path = ShardLog::path_for(&db, 0);
    run_local(async {
        let (log, _) = open(&db).await;
        let extents = write_all(&log, &items).await;
        log.close().await;
        let pristine = std::fs::read(&path).unwrap();
        let size = pristine.len() as u64;
        assert_eq!(extents.last().map(|(o, n)| o + n), Some(size));

        let seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rng = Rng(seed);
        let (mut lost_beyond, mut damaged_lost, mut damaged_reported, mut cut, mut harmless) = (0, 0, 0, 0, 0);
        for trial in 0..200 {
            let at = LOG_START + rng.next() % (size - LOG_START);
            let bit = 1u8 << (rng.next() % 8);
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            f.write_all_at(&[pristine[at as usize] ^ bit], at).unwrap();
            drop(f);
            let hit = extents.iter().position(|(o, n)| at >= *o && at < o + n).unwrap();

            let (log, stats) = open(&db).await;
            for (i, (k, v)) in items.iter().enumerate() {
                match read(&log, k).await {
                    Ok(Some(got)) => assert_eq!(&got, v, "trial {trial}: record {i} served wrong (flip at {at})"),
                    Ok(None) | Err(_) if i == hit => damaged_lost += 1,
                    other => {
                        lost_beyond += 1;
                        eprintln!("trial {trial}: flip at {at} in record {hit} also lost record {i}: {other:?}");
                    }
                }
            }
            if stats.damaged > 0 || log.damaged() > 0 {
                damaged_reported += 1;
            } else if stats.cut_bytes > 0 {
                cut += 1;
            } else {
                harmless += 1; // the bit was in padding, which no checksum covers
            }
            log.close().await;

            // Put the pristine bytes back (the scan may have cut the tail).
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            let now = f.metadata().unwrap().len();
            if now < size {
                f.write_all_at(&pristine[now as usize..], now).unwrap();
            }
            if at < now {
                f.write_all_at(&pristine[at as usize..at as usize + 1], at).unwrap();
            }
        }
        eprintln!(
            "bit flips: 200 trials over {} records ({size} bytes), seed {seed:#x}: records lost beyond the \
             damaged one: {lost_beyond}; damaged record unreadable: {damaged_lost}; reported as damage: \
             {damaged_reported}; cut as torn tail: {cut}; in unchecked padding: {harmless}",
            items.len()
        );
        assert_eq!(lost_beyond, 0);
    });
}

/// The last group commit torn at each 4 KiB boundary: every earlier record is
/// served; of the torn group, whole records may be, partial ones never.
#[test]
fn torn_last_group_is_cut_at_every_boundary() {
    init_tracing();
    let db = db_dir("torn-group");
    let items = mixed_items(60);
    let torn: Vec<(Vec<u8>, Vec<u8>)> =
        (1000..1012).map(|i| (key(i), value(i, if i == 1005 { 200_000 } else { 3000 + i as usize * 11 }))).collect();
    let path = ShardLog::path_for(&db, 0);
    run_local(async {
        let (log, _) = open(&db).await;
        write_all(&log, &items).await;
        let group_start = std::fs::metadata(&path).unwrap().len();
        // One batch: one write, one fdatasync.
        log.put_batch(torn.clone()).await.unwrap();
        assert_eq!(log.groups(), (items.len() as u64).div_ceil(8) + 1);
        log.close().await;
        let pristine = std::fs::read(&path).unwrap();
        let size = pristine.len() as u64;
        let mut ends = vec![];
        let mut at = group_start;
        for (k, v) in &torn {
            at += record_len(k.len(), v.len());
            ends.push(at);
        }
        assert_eq!(at, size);

        let mut cuts = 0;
        for cut_at in (group_start..size).step_by(4096) {
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut_at).unwrap();
            let (log, stats) = open(&db).await;
            let whole = ends.iter().filter(|e| **e <= cut_at).count();
            let kept_end = if whole == 0 { group_start } else { ends[whole - 1] };
            assert_eq!(stats.cut_bytes, cut_at - kept_end, "cut at {cut_at}");
            assert_eq!(stats.damaged, 0, "a torn tail is not damage (cut at {cut_at})");
            for (k, v) in &items {
                assert_eq!(read(&log, k).await.unwrap().as_ref(), Some(v), "acknowledged record lost, cut at {cut_at}");
            }
            for (j, (k, v)) in torn.iter().enumerate() {
                let want = (j < whole).then_some(v);
                assert_eq!(read(&log, k).await.unwrap().as_ref(), want, "torn record {j}, cut at {cut_at}");
            }
            if cuts % 8 == 0 {
                // The next write goes right after the last whole record.
                log.put_batch(vec![(b"Bafter".to_vec(), b"after".to_vec())]).await.unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().len(), kept_end + 4096);
            }
            log.close().await;
            std::fs::write(&path, &pristine).unwrap();
            cuts += 1;
        }
        eprintln!("torn group of {} records, {} bytes: cut at {cuts} boundaries", torn.len(), size - group_start);
    });
}

/// Damage whose bytes run to the end of the file but start more than one write
/// before it is older than the last write: kept and reported, not cut.
#[test]
fn damage_before_the_last_write_is_never_cut() {
    init_tracing();
    let db = db_dir("old-damage");
    let path = ShardLog::path_for(&db, 0);
    run_local(async {
        let (log, _) = open(&db).await;
        // 70 chunks of 1 MiB: more than TORN_TAIL_MAX.
        let items: Vec<_> = (0..70).map(|i| (key(i), value(i, 1 << 20))).collect();
        for it in &items {
            log.put_batch(vec![it.clone()]).await.unwrap();
        }
        log.close().await;
        // Destroy the header of every record from the 3rd on.
        let rec = |i: u64| LOG_START + i * (4096 + (1 << 20));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for i in 2..70 {
            f.write_all_at(b"XXXX", rec(i)).unwrap();
        }
        let size = f.metadata().unwrap().len();
        drop(f);
        let (log, stats) = open(&db).await;
        assert_eq!((stats.records, stats.cut_bytes, stats.damaged), (2, 0, 1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "damage must stay in place");
        assert_eq!(read(&log, &key(1)).await.unwrap(), Some(items[1].1.clone()));
        assert_eq!(read(&log, &key(2)).await.unwrap(), None);
        let j = log.damage_json("n1", 0);
        assert_eq!(j["damaged"][0]["offset"].as_u64(), Some(rec(2)));
        assert_eq!(j["damaged"][0]["length"].as_u64(), Some(size - rec(2)));
        // New records go after the damage and are found after a restart.
        log.put_batch(vec![(b"Bnew".to_vec(), b"new".to_vec())]).await.unwrap();
        log.close().await;
        let (log, stats) = open(&db).await;
        assert_eq!((stats.records, stats.damaged, stats.cut_bytes), (3, 1, 0));
        assert_eq!(read(&log, b"Bnew").await.unwrap(), Some(b"new".to_vec()));
        log.close().await;
    });
}
