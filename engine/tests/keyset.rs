//! DIGEST, LIST_KEYS and STATS against a real node: what they answer is computed
//! again here from the keys the test stored.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use monofs_engine::log::MAX_LIST_SCAN;
use monofs_net::client::{BucketDigest, Conn, NetError, NodeClient, OwnerFilter, DIGEST_BUCKETS};
use monofs_net::keyset::{bucket_of, is_content_key};
use monofs_net::proto::{ListKeysRequest, Request, Response, MAX_LIST_KEYS};
use monofs_net::{hrw, keys, Oid};
use xxhash_rust::xxh3::xxh3_64;

const MEMBERS: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn filter(rf: u16, include: &[&str], exclude: &[&str]) -> OwnerFilter {
    OwnerFilter { members: ids(&MEMBERS), rf, include: ids(include), exclude: ids(exclude) }
}

fn oid(i: u64) -> Oid {
    let mut o = [0u8; 20];
    o[..8].copy_from_slice(&i.to_be_bytes());
    o[8..16].copy_from_slice(&xxh3_64(&i.to_le_bytes()).to_be_bytes());
    o
}

/// What a filter selects, decided from `hrw::owners` (the placement every router uses).
fn selects(f: &OwnerFilter, key: &[u8]) -> bool {
    if !is_content_key(key) {
        return false;
    }
    let members: Vec<&str> = f.members.iter().map(String::as_str).collect();
    let owners: Vec<&str> =
        hrw::owners(&members, keys::placement(key), f.rf as usize).into_iter().map(|i| members[i]).collect();
    f.include.iter().all(|i| owners.contains(&i.as_str())) && !f.exclude.iter().any(|e| owners.contains(&e.as_str()))
}

fn expected_digest<'a>(f: &OwnerFilter, stored: impl Iterator<Item = &'a Vec<u8>>) -> Vec<BucketDigest> {
    let mut d = vec![BucketDigest::default(); DIGEST_BUCKETS];
    for k in stored.filter(|k| selects(f, k)) {
        d[bucket_of(k) as usize].add(xxh3_64(k));
    }
    d
}

/// Store `items` in PUT_BATCHes of at most 4000 items.
fn put_all(c: &NodeClient, items: &[(Vec<u8>, Vec<u8>)]) {
    for chunk in items.chunks(4000) {
        c.put_batch(chunk.to_vec()).unwrap();
    }
}

fn sorted(mut v: Vec<(Vec<u8>, u64)>) -> Vec<(Vec<u8>, u64)> {
    v.sort();
    v
}

#[test]
fn digests_and_listings_select_by_owner() {
    let db = db_dir("keyset-digest");
    let (node, addr) = start_node(&db, 2);
    let c = client(&addr);
    let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..1500u64 {
        items.push((keys::tree(&oid(i)), value(i as u32, (i % 50) as usize)));
        items.push((keys::blob_chunk(&oid(i), (i % 4) as u32), value(i as u32 + 7, (i % 300) as usize)));
    }
    // Not content keys: never covered.
    items.push((keys::namespace(), b"namespace".to_vec()));
    items.push((key(1), b"other".to_vec()));
    put_all(&c, &items);
    let stored: Vec<Vec<u8>> = items.iter().map(|(k, _)| k.clone()).collect();

    let filters = [
        OwnerFilter::all(),
        filter(2, &["n2"], &[]),
        filter(2, &["n1"], &["n3"]),
        filter(3, &["n1", "n4"], &[]),
        filter(1, &[], &["n2"]),
        // An included id that is no member selects nothing.
        filter(2, &["n9"], &[]),
    ];
    for f in &filters {
        let want = expected_digest(f, stored.iter());
        assert_eq!(c.digest(f).unwrap(), want, "{f:?}");
        let n: u64 = want.iter().map(|b| b.count).sum();
        if f.include.iter().any(|i| i == "n9") {
            assert_eq!(n, 0);
        } else {
            assert!(n > 100, "{f:?} selects only {n}");
        }
        // Every key the filter selects, each with its size, by scanning the node.
        let mut scanned = Vec::new();
        c.scan_keys(f, &mut |k, size| {
            scanned.push((k.to_vec(), size));
            true
        })
        .unwrap();
        let want_keys: Vec<(Vec<u8>, u64)> =
            items.iter().filter(|(k, _)| selects(f, k)).map(|(k, v)| (k.clone(), v.len() as u64)).collect();
        assert_eq!(sorted(scanned), sorted(want_keys.clone()), "{f:?}");
        // And bucket by bucket, for the buckets the digest says are not empty.
        for b in (0..DIGEST_BUCKETS).filter(|&b| want[b].count > 0).take(40) {
            let got = c.list_keys(f, b as u16).unwrap();
            let in_bucket: Vec<_> = want_keys.iter().filter(|(k, _)| bucket_of(k) as usize == b).cloned().collect();
            assert_eq!(sorted(got), sorted(in_bucket));
        }
    }
    // An empty bucket lists nothing; scanning stops when asked to.
    let all = expected_digest(&OwnerFilter::all(), stored.iter());
    let empty = (0..DIGEST_BUCKETS).find(|&b| all[b].count == 0);
    if let Some(b) = empty {
        assert!(c.list_keys(&OwnerFilter::all(), b as u16).unwrap().is_empty());
    }
    let mut seen = 0;
    c.scan_keys(&OwnerFilter::all(), &mut |_, _| {
        seen += 1;
        seen < 10
    })
    .unwrap();
    assert_eq!(seen, 10);
    // A filter no caller means is refused with the reason.
    match c.digest(&filter(0, &[], &[])) {
        Err(NetError::Remote { message, .. }) => assert!(message.contains("rf"), "{message}"),
        other => panic!("rf 0 accepted: {other:?}"),
    }
    assert!(matches!(c.list_keys(&OwnerFilter::all(), DIGEST_BUCKETS as u16), Err(NetError::Encode { .. })));
    node.shutdown().unwrap();
}

/// Tree keys whose digest bucket is `bucket`: found by trying object ids.
fn keys_in_bucket(bucket: u16, n: usize) -> Vec<Vec<u8>> {
    (0u64..).map(|i| keys::tree(&oid(i))).filter(|k| bucket_of(k) == bucket).take(n).collect()
}

#[test]
fn a_bucket_larger_than_a_page_is_listed_in_pages() {
    let db = db_dir("keyset-pages");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    let n = MAX_LIST_KEYS + 904;
    let ks = keys_in_bucket(5, n);
    let items: Vec<_> = ks.iter().enumerate().map(|(i, k)| (k.clone(), value(i as u32, i % 9))).collect();
    put_all(&c, &items);
    // Neighbours of the bucket that must not appear in it.
    put_all(&c, &[4u16, 6].iter().flat_map(|&b| keys_in_bucket(b, 3)).map(|k| (k, vec![1])).collect::<Vec<_>>());

    let got = c.list_keys(&OwnerFilter::all(), 5).unwrap();
    let want: Vec<_> = items.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
    assert_eq!(got.len(), n);
    assert_eq!(sorted(got), sorted(want));

    // The pages on the wire: the first is full and says where to go on, the
    // second holds the rest and ends the listing.
    let mut conn = Conn::connect(&addr, &test_key()).unwrap();
    let mut req = ListKeysRequest { filter: OwnerFilter::all(), bucket: Some(5), after: None, limit: MAX_LIST_KEYS as u32 };
    let Response::Keys { keys: first, next: Some(cursor) } = conn.call(&Request::ListKeys(req.clone())).unwrap() else {
        panic!("first page ended the listing")
    };
    assert_eq!(first.len(), MAX_LIST_KEYS);
    assert_eq!(cursor, first.last().unwrap().0, "the cursor is the last key returned");
    req.after = Some(cursor);
    let Response::Keys { keys: second, next: None } = conn.call(&Request::ListKeys(req.clone())).unwrap() else {
        panic!("second page did not end the listing")
    };
    assert_eq!(second.len(), n - MAX_LIST_KEYS);
    assert!(first.iter().all(|k| !second.contains(k)));
    // Small pages, and a limit over a page is refused by the codec.
    req.after = None;
    req.limit = 7;
    let Response::Keys { keys, next: Some(_) } = conn.call(&Request::ListKeys(req)).unwrap() else { panic!() };
    assert_eq!(keys.len(), 7);
    node.shutdown().unwrap();
}

/// Flip one byte in value block 1 of the 20 KiB record at `record_offset` of a
/// 1-shard log (its value follows its 97-byte meta).
fn damage_value_block(db: &std::path::Path, record_offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(db.join("shard-0.log")).unwrap();
    let at = record_offset + 4096 + 100;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn stats_count_live_keys_and_damaged_keys_are_not_held() {
    let db = db_dir("keyset-stats");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    // The first record (at 4096, after the file header): a 20 KiB chunk.
    let victim = keys::blob_chunk(&oid(1), 0);
    let victim_value = value(1, 20_000);
    c.put_batch(vec![(victim.clone(), victim_value.clone())]).unwrap();
    let others: Vec<_> = (2..40u64).map(|i| (keys::tree(&oid(i)), value(i as u32, i as usize * 10))).collect();
    c.put_batch(others.clone()).unwrap();
    c.put_batch(vec![(keys::namespace(), b"ns".to_vec())]).unwrap();
    // Overwritten: only the live record counts.
    c.put_batch(vec![(others[0].0.clone(), vec![9; 3])]).unwrap();

    let bytes: u64 = 20_000 + others[1..].iter().map(|(_, v)| v.len() as u64).sum::<u64>() + 3 + 2;
    let s = c.stats().unwrap();
    let log_len = std::fs::metadata(db.join("shard-0.log")).unwrap().len();
    assert_eq!((s.keys, s.bytes, s.damaged, s.shards, s.log_bytes), (40, bytes, 0, 1, log_len));

    // A damaged value block found by a read: the key is no longer held.
    damage_value_block(&db, 4096);
    assert!(c.get(&victim, 0, u32::MAX).is_err());
    let s = c.stats().unwrap();
    assert_eq!((s.keys, s.bytes, s.damaged), (39, bytes - 20_000, 1));
    assert_eq!(c.digest(&OwnerFilter::all()).unwrap()[bucket_of(&victim) as usize].count, 0);
    assert!(c.list_keys(&OwnerFilter::all(), bucket_of(&victim)).unwrap().is_empty());

    // Copied back (as a repair does): held again.
    c.put_batch(vec![(victim.clone(), victim_value.clone())]).unwrap();
    assert_eq!(c.get(&victim, 0, u32::MAX).unwrap().unwrap(), victim_value);
    let s = c.stats().unwrap();
    assert_eq!((s.keys, s.bytes), (40, bytes));
    assert_eq!(
        c.list_keys(&OwnerFilter::all(), bucket_of(&victim)).unwrap(),
        vec![(victim.clone(), victim_value.len() as u64)]
    );
    node.shutdown().unwrap();

    // After a restart the scan finds the old damaged record superseded: all held.
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    assert_eq!(c.stats().unwrap().keys, 40);
    node.shutdown().unwrap();
}

#[test]
fn damaged_record_found_at_start_is_not_held() {
    let db = db_dir("keyset-scan-damage");
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    let victim = keys::blob_chunk(&oid(1), 0);
    c.put_batch(vec![(victim.clone(), value(1, 20_000))]).unwrap();
    c.put_batch(vec![(keys::tree(&oid(2)), value(2, 10))]).unwrap();
    node.shutdown().unwrap();
    damage_value_block(&db, 4096);
    let (node, addr) = start_node(&db, 1);
    let c = client(&addr);
    let s = c.stats().unwrap();
    assert_eq!((s.keys, s.bytes, s.damaged), (1, 10, 1));
    let mut listed = Vec::new();
    c.scan_keys(&OwnerFilter::all(), &mut |k, _| {
        listed.push(k.to_vec());
        true
    })
    .unwrap();
    assert_eq!(listed, vec![keys::tree(&oid(2))]);
    node.shutdown().unwrap();
}

#[test]
fn a_digest_of_200k_keys_does_not_starve_gets() {
    let db = db_dir("keyset-200k");
    let (node, addr) = start_node(&db, 1);
    let c = Arc::new(client(&addr));
    let n = 200_000u64;
    let t = Instant::now();
    let probe_value = value(3, 3000);
    let items: Vec<_> = (0..n)
        .map(|i| (keys::blob_chunk(&oid(i), 0), if i == 777 { probe_value.clone() } else { Vec::new() }))
        .collect();
    put_all(&c, &items);
    eprintln!("stored {n} keys in {:.1} s", t.elapsed().as_secs_f64());
    let probe = items[777].0.clone();
    drop(items);

    // Two members, this node one of them: every key is examined and half match.
    let f = OwnerFilter { members: ids(&["n1", "n2"]), rf: 1, include: ids(&["n1"]), exclude: vec![] };
    let running = Arc::new(AtomicBool::new(true));
    let during = Arc::new(AtomicBool::new(false));
    let digester = {
        let (c, running, during, f) = (c.clone(), running.clone(), during.clone(), f.clone());
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while running.load(Ordering::SeqCst) {
                during.store(true, Ordering::SeqCst);
                let t = Instant::now();
                let d = c.digest(&f).unwrap();
                times.push(t.elapsed());
                during.store(false, Ordering::SeqCst);
                let total: u64 = d.iter().map(|b| b.count).sum();
                assert!(total > n / 3 && total < 2 * n / 3, "{total}");
            }
            times
        })
    };
    let (mut gets, mut overlapped, max_us) = (0u64, 0u64, AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(4);
    std::thread::sleep(Duration::from_millis(50));
    while Instant::now() < until {
        let busy = during.load(Ordering::SeqCst);
        let t = Instant::now();
        assert_eq!(c.get(&probe, 0, u32::MAX).unwrap().as_ref(), Some(&probe_value));
        let took = t.elapsed();
        assert!(took < Duration::from_secs(5), "a GET waited {took:?} behind a digest");
        max_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        gets += 1;
        overlapped += (busy && during.load(Ordering::SeqCst)) as u64;
    }
    running.store(false, Ordering::SeqCst);
    let times = digester.join().unwrap();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    eprintln!(
        "{} digests of {n} keys, mean {:.0} ms; {gets} GETs meanwhile ({overlapped} during a digest), slowest {} us",
        times.len(),
        mean.as_secs_f64() * 1000.0,
        max_us.load(Ordering::Relaxed)
    );
    assert!(overlapped > 0, "no request was answered while a digest ran");

    // A filter that matches nothing: each page examines at most MAX_LIST_SCAN keys,
    // then answers empty with where to go on.
    let none = OwnerFilter { members: ids(&["n1"]), rf: 1, include: ids(&["n9"]), exclude: vec![] };
    let mut conn = Conn::connect(&addr, &test_key()).unwrap();
    let mut req = ListKeysRequest { filter: none.clone(), bucket: None, after: None, limit: MAX_LIST_KEYS as u32 };
    let mut pages = 0;
    loop {
        let Response::Keys { keys, next } = conn.call(&Request::ListKeys(req.clone())).unwrap() else { panic!() };
        assert!(keys.is_empty());
        pages += 1;
        match next {
            Some(k) => req.after = Some(k),
            None => break,
        }
    }
    assert_eq!(pages, n.div_ceil(MAX_LIST_SCAN as u64));
    let mut found = 0;
    c.scan_keys(&none, &mut |_, _| {
        found += 1;
        true
    })
    .unwrap();
    assert_eq!(found, 0);
    node.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&db);
}
