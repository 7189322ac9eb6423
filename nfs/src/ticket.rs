//! A one-shot completion a backend hands out when a call cannot be answered yet (content
//! still being fetched). The server parks the call on it instead of keeping a worker
//! waiting; other holders may still block on it (`wait_timeout`), so one fetch serves both.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::types::Status;

type Waiter = Box<dyn FnOnce(Result<(), Status>) + Send>;

#[derive(Default)]
struct State {
    outcome: Option<Result<(), Status>>,
    waiters: Vec<Waiter>,
}

/// Shared handle to one pending piece of work; clones refer to the same work.
#[derive(Clone, Default)]
pub struct Ticket {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Ticket {
    pub fn new() -> Ticket {
        Ticket::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome and wakes everything waiting. Only the first completion counts.
    pub fn complete(&self, outcome: Result<(), Status>) {
        let waiters = {
            let mut st = self.state();
            if st.outcome.is_some() {
                return;
            }
            st.outcome = Some(outcome);
            std::mem::take(&mut st.waiters)
        };
        self.inner.1.notify_all();
        // Outside the lock: a waiter may touch the ticket again.
        for w in waiters {
            w(outcome);
        }
    }

    /// The outcome, once completed.
    pub fn outcome(&self) -> Option<Result<(), Status>> {
        self.state().outcome
    }

    /// Blocks up to `timeout` for the outcome; `None` if it did not come in time.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<(), Status>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        while st.outcome.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self.inner.1.wait_timeout(st, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
        st.outcome
    }

    /// Runs `f` with the outcome on the completing thread, or at once if already complete.
    pub(crate) fn on_complete(&self, f: impl FnOnce(Result<(), Status>) + Send + 'static) {
        let mut st = self.state();
        match st.outcome {
            Some(o) => {
                drop(st);
                f(o)
            }
            None => st.waiters.push(Box::new(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn completes_once_and_runs_every_waiter() {
        let t = Ticket::new();
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let r = runs.clone();
            t.on_complete(move |o| {
                assert_eq!(o, Err(Status::Io));
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert_eq!(t.wait_timeout(Duration::from_millis(10)), None);
        let t2 = t.clone();
        std::thread::spawn(move || t2.complete(Err(Status::Io))).join().unwrap();
        t.complete(Ok(()));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(t.outcome(), Some(Err(Status::Io)));
        assert_eq!(t.wait_timeout(Duration::ZERO), Some(Err(Status::Io)));
        // Late waiters run at once.
        let r = runs.clone();
        t.on_complete(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }
}
