//! A bound on how many log lines one kind of event writes per second, so a failing backend
//! under load cannot flood the log (or spend the data path's CPU on writing it).
//!
//! Written here rather than taken from a crate: it is one window of two atomics, shared by all
//! workers, with no per-key state (pingora-limits estimates rates per key, governor adds a clock
//! abstraction and a dependency tree for what is a counter reset once a second).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct LogLimit {
    per_second: u64,
    /// The current second (Unix time) in the high 32 bits, lines counted in it in the low 32.
    window: AtomicU64,
    /// Lines refused since the last line that got through.
    suppressed: AtomicU64,
}

impl LogLimit {
    pub const fn new(per_second: u64) -> Self {
        LogLimit {
            per_second,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were refused since the
    /// last one; `None` when this second's lines are used up.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.allow_at(now)
    }

    fn allow_at(&self, second: u64) -> Option<u64> {
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (sec, count) = (cur >> 32, cur & 0xffff_ffff);
            let next = if sec == second & 0xffff_ffff {
                if count >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                cur + 1
            } else {
                ((second & 0xffff_ffff) << 32) | 1
            };
            match self
                .window
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_a_second_and_counts_the_rest() {
        let l = LogLimit::new(2);
        assert_eq!(l.allow_at(100), Some(0));
        assert_eq!(l.allow_at(100), Some(0));
        assert_eq!(l.allow_at(100), None);
        assert_eq!(l.allow_at(100), None);
        // A new second: the first line says two were left out.
        assert_eq!(l.allow_at(101), Some(2));
        assert_eq!(l.allow_at(101), Some(0));
        assert_eq!(l.allow_at(101), None);
    }
}
