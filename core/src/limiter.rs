//! A per-reason log limiter, so a peer cannot flood the log (STYLE.md "Logging").
//!
//! Owns only counters and window starts; time comes in as `now`. Each reason may log
//! `burst` lines per `window`; what is held back is counted and reported once, as
//! "suppressed N similar", when the reason's next window opens or at the next flush.

use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    reason: &'static str,
    window_start: Instant,
    admitted: u32,
    suppressed: u64,
}

/// Rate limiter keyed by a static reason name.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    window: Duration,
    entries: Vec<Entry>,
}

/// The limiter's answer for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it. `suppressed` similar events were held back in the previous window.
    Yes {
        /// How many were held back before this one.
        suppressed: u64,
    },
    /// Count it, do not log it.
    No,
}

impl RateLimiter {
    /// `burst` events per `window` and reason.
    pub fn new(burst: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            burst,
            window,
            entries: Vec::new(),
        }
    }

    /// May an event with `reason` be logged at `now`?
    pub fn admit(&mut self, now: Instant, reason: &'static str) -> Admit {
        let window = self.window;
        let index = match self.entries.iter().position(|e| e.reason == reason) {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    reason,
                    window_start: now,
                    admitted: 0,
                    suppressed: 0,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        let mut suppressed = 0;
        if now.saturating_duration_since(entry.window_start) >= window {
            suppressed = std::mem::take(&mut entry.suppressed);
            entry.window_start = now;
            entry.admitted = 0;
        }
        if entry.admitted < self.burst {
            entry.admitted += 1;
            Admit::Yes { suppressed }
        } else {
            entry.suppressed += 1;
            Admit::No
        }
    }

    /// When the earliest window with events held back closes: the caller's timer, so the
    /// summary comes when the window ends, not when the next event of that kind happens
    /// to arrive.
    pub fn next_flush(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.suppressed > 0)
            .map(|e| e.window_start + self.window)
            .min()
    }

    /// Reasons whose window has closed with events held back: (reason, count). Resets them.
    pub fn flush(&mut self, now: Instant) -> Vec<(&'static str, u64)> {
        let window = self.window;
        self.entries
            .iter_mut()
            .filter(|e| e.suppressed > 0 && now.saturating_duration_since(e.window_start) >= window)
            .map(|e| {
                e.window_start = now;
                e.admitted = 0;
                (e.reason, std::mem::take(&mut e.suppressed))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_clock::t0;

    #[test]
    fn burst_then_suppress_then_report() {
        let now = t0();
        let mut limiter = RateLimiter::new(2, Duration::from_secs(10));
        assert_eq!(limiter.admit(now, "bounce"), Admit::Yes { suppressed: 0 });
        assert_eq!(limiter.admit(now, "bounce"), Admit::Yes { suppressed: 0 });
        assert_eq!(limiter.admit(now, "bounce"), Admit::No);
        assert_eq!(limiter.admit(now, "bounce"), Admit::No);
        // Another reason has its own budget.
        assert_eq!(limiter.admit(now, "low_port"), Admit::Yes { suppressed: 0 });
        let later = now + Duration::from_secs(10);
        assert_eq!(limiter.admit(later, "bounce"), Admit::Yes { suppressed: 2 });
    }

    #[test]
    fn flush_reports_held_back_events_once() {
        let now = t0();
        let mut limiter = RateLimiter::new(1, Duration::from_secs(10));
        limiter.admit(now, "unsolicited");
        limiter.admit(now, "unsolicited");
        assert_eq!(limiter.next_flush(), Some(now + Duration::from_secs(10)));
        assert!(limiter.flush(now + Duration::from_secs(9)).is_empty());
        assert_eq!(
            limiter.flush(now + Duration::from_secs(10)),
            vec![("unsolicited", 1)]
        );
        assert!(limiter.flush(now + Duration::from_secs(30)).is_empty());
        assert_eq!(limiter.next_flush(), None, "nothing held back");
    }
}
