//! A least-recently-used cache bounded by the bytes of what it holds.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use monofs_net::sync::lock;

/// Entries with their sizes, and the total.
type Entries<K, V> = (lru::LruCache<K, (Arc<V>, usize)>, usize);

pub struct ByteLru<K: Hash + Eq, V> {
    inner: Mutex<Entries<K, V>>,
    max_bytes: usize,
}

impl<K: Hash + Eq, V> ByteLru<K, V> {
    pub fn new(max_bytes: usize) -> Self {
        ByteLru {
            inner: Mutex::new((lru::LruCache::unbounded(), 0)),
            max_bytes,
        }
    }

    pub fn get(&self, k: &K) -> Option<Arc<V>> {
        lock(&self.inner).0.get(k).map(|(v, _)| v.clone())
    }

    pub fn insert(&self, k: K, v: Arc<V>, bytes: usize) {
        let mut g = lock(&self.inner);
        let (map, total) = &mut *g;
        if let Some((_, old)) = map.put(k, (v, bytes)) {
            *total -= old;
        }
        *total += bytes;
        while *total > self.max_bytes {
            match map.pop_lru() {
                Some((_, (_, b))) => *total -= b,
                None => break,
            }
        }
    }

    pub fn bytes(&self) -> usize {
        lock(&self.inner).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_by_bytes() {
        let c = ByteLru::new(100);
        c.insert(1, Arc::new("a"), 60);
        c.insert(2, Arc::new("b"), 30);
        assert!(c.get(&1).is_some()); // 1 is now most recent
        c.insert(3, Arc::new("c"), 30);
        assert!(c.get(&2).is_none());
        assert!(c.get(&1).is_some());
        assert!(c.bytes() <= 100);
    }

    #[test]
    fn a_panic_while_locked_leaves_the_cache_usable() {
        let c = Arc::new(ByteLru::new(100));
        c.insert(1, Arc::new(1), 10);
        let c2 = c.clone();
        assert!(std::thread::spawn(move || {
            let _g = c2.inner.lock();
            panic!("injected");
        })
        .join()
        .is_err());
        assert_eq!(c.get(&1).as_deref(), Some(&1));
        c.insert(2, Arc::new(2), 10);
        assert_eq!(c.bytes(), 20);
    }
}
