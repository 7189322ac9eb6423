//! Rendezvous (highest random weight) placement: every router, node and fetcher
//! computes the same owners for a key from the node list alone, and adding or
//! removing a node moves only the keys that node wins or held.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub fn score(node_id: &str, placement_key: &[u8]) -> u64 {
    xxh3_64_with_seed(placement_key, seed(node_id))
}

/// The seed of a node's scores: hash it once per node list, not once per key.
pub fn seed(node_id: &str) -> u64 {
    xxh3_64(node_id.as_bytes())
}

/// Whether `ids[i]` is among the `rf` owners of `placement_key` (as `owners`
/// ranks them, ties broken by id), given `seeds[j] == seed(ids[j])`. Allocates nothing.
pub fn is_owner(ids: &[&str], seeds: &[u64], placement_key: &[u8], rf: usize, i: usize) -> bool {
    let mine = xxh3_64_with_seed(placement_key, seeds[i]);
    let mut ahead = 0;
    for (j, &s) in seeds.iter().enumerate() {
        if j == i {
            continue;
        }
        let theirs = xxh3_64_with_seed(placement_key, s);
        if theirs > mine || (theirs == mine && ids[j] < ids[i]) {
            ahead += 1;
            if ahead >= rf.max(1) {
                return false;
            }
        }
    }
    true
}

/// Indices into `nodes` of the `rf` owners of `placement_key`, best first.
pub fn owners(nodes: &[&str], placement_key: &[u8], rf: usize) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> =
        nodes.iter().enumerate().map(|(i, n)| (score(n, placement_key), i)).collect();
    // Ties are broken by node id so the order never depends on list order.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| nodes[a.1].cmp(nodes[b.1])));
    scored.into_iter().take(rf.max(1)).map(|(_, i)| i).collect()
}

/// The shard of a node that owns `key`.
pub fn shard_of(key: &[u8], shards: u16) -> u16 {
    assert!(shards > 0);
    (xxh3_64(key) % shards as u64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_independent_of_list_order() {
        let a = ["n1", "n2", "n3", "n4"];
        let b = ["n4", "n3", "n1", "n2"];
        for k in 0..200u32 {
            let key = k.to_be_bytes();
            let oa: Vec<&str> = owners(&a, &key, 2).into_iter().map(|i| a[i]).collect();
            let ob: Vec<&str> = owners(&b, &key, 2).into_iter().map(|i| b[i]).collect();
            assert_eq!(oa, ob);
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let all = ["n1", "n2", "n3"];
        let less = ["n1", "n2"];
        for k in 0..500u32 {
            let key = k.to_be_bytes();
            let before = all[owners(&all, &key, 1)[0]];
            let after = less[owners(&less, &key, 1)[0]];
            if before != "n3" {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn is_owner_agrees_with_owners() {
        let ids = ["n1", "n2", "n3", "n4", "n5"];
        let seeds: Vec<u64> = ids.iter().map(|i| seed(i)).collect();
        for rf in 1..=6 {
            for k in 0..300u32 {
                let key = k.to_be_bytes();
                let own = owners(&ids, &key, rf);
                for i in 0..ids.len() {
                    assert_eq!(is_owner(&ids, &seeds, &key, rf, i), own.contains(&i), "rf {rf} key {k} node {i}");
                }
            }
        }
    }

    #[test]
    fn spreads_keys() {
        let nodes = ["a", "b", "c"];
        let mut counts = [0; 3];
        for k in 0..3000u32 {
            counts[owners(&nodes, &k.to_be_bytes(), 1)[0]] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
