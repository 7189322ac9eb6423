//! Poison-tolerant locking. A thread that panics while holding a lock poisons
//! it; std's `lock().unwrap()` would then turn that one failed request into a
//! failure of every later request that takes the lock. MonoFS's locked state
//! (caches, flight tables, slot counters) stays consistent across a panic at
//! any point, so the guard is taken back and used.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Lock `m`, whether or not a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-lock `l`, whether or not a panicking thread poisoned it.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-lock `l`, whether or not a panicking thread poisoned it.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// `cv.wait(g)`, tolerating poison.
pub fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

/// `cv.wait_timeout(g, d)`, tolerating poison; the guard, and true if it timed out.
pub fn wait_timeout<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, d: Duration) -> (MutexGuard<'a, T>, bool) {
    let (g, t) = cv.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner());
    (g, t.timed_out())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_panic_under_the_lock_does_not_spread() {
        let m = Arc::new((Mutex::new(1), Condvar::new()));
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let mut g = m2.0.lock().unwrap();
            *g = 2;
            panic!("injected");
        })
        .join();
        assert!(r.is_err());
        assert!(m.0.is_poisoned());
        assert_eq!(*lock(&m.0), 2);
        let (g, timed_out) = wait_timeout(&m.1, lock(&m.0), Duration::from_millis(1));
        assert!(timed_out);
        assert_eq!(*g, 2);
    }
}
