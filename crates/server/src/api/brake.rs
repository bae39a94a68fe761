//! A brake on guessing tokens: after [`MAX_FAILURES`] failed authentications (401)
//! from one address within [`WINDOW`], that address gets 429 with `Retry-After` for the
//! rest of the window, and those requests never reach the vault.
//!
//! Tokens carry 256 random bits, so guessing is hopeless anyway; the brake is there to
//! keep a misbehaving client (or a scanner) from filling the audit log and taking
//! vault-thread time from everyone else. Braked requests are not audited: recording
//! them would be exactly the load the brake exists to shed.
//!
//! The time is passed in, so tests step it without sleeping. The map is bounded: when
//! it is full, expired windows go first, then the oldest one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications allowed per window.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window, counted from an address's first failure.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Window {
    failures: u32,
    start: Instant,
}

impl Window {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) < WINDOW
    }
}

/// Failed authentications per client address.
#[derive(Debug, Default)]
pub(crate) struct Brake {
    // A std Mutex, not tokio's: it is held for a map lookup and never across an await.
    windows: Mutex<HashMap<String, Window>>,
}

impl Brake {
    /// `Some(seconds to wait)` when `remote` is braked at `now`.
    pub(crate) fn blocked(&self, remote: &str, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.get(remote)?;
        if w.failures < MAX_FAILURES || !w.live(now) {
            return None;
        }
        let left = WINDOW.saturating_sub(now.saturating_duration_since(w.start));
        // Round up, so a client that waits as told is not braked once more.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(secs.max(1))
    }

    /// Records a failed authentication from `remote` at `now`.
    pub(crate) fn failed(&self, remote: &str, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = windows.get_mut(remote) {
            if w.live(now) {
                w.failures = w.failures.saturating_add(1);
            } else {
                *w = Window {
                    failures: 1,
                    start: now,
                };
            }
            return;
        }
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| w.live(now));
        }
        if windows.len() >= MAX_TRACKED {
            let oldest = windows
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                windows.remove(&oldest);
            }
        }
        windows.insert(
            remote.to_string(),
            Window {
                failures: 1,
                start: now,
            },
        );
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_brake_an_address_for_the_rest_of_its_window() {
        let brake = Brake::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(brake.blocked("10.0.0.1", t0), None, "failure {i}");
            brake.failed("10.0.0.1", t0 + Duration::from_secs(u64::from(i)));
        }
        let at = t0 + Duration::from_secs(20);
        assert_eq!(brake.blocked("10.0.0.1", at), Some(40));
        assert_eq!(
            brake.blocked("10.0.0.2", at),
            None,
            "other addresses are not braked"
        );
        assert_eq!(
            brake.blocked("10.0.0.1", t0 + Duration::from_millis(59_500)),
            Some(1)
        );
        assert_eq!(
            brake.blocked("10.0.0.1", t0 + WINDOW),
            None,
            "the window ends"
        );
        brake.failed("10.0.0.1", t0 + WINDOW);
        assert_eq!(
            brake.blocked("10.0.0.1", t0 + WINDOW),
            None,
            "a new window starts at 1"
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let brake = Brake::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 5 {
            brake.failed(&format!("a{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(brake.tracked(), MAX_TRACKED);
        // Expired windows are swept when room is needed.
        brake.failed("late", t0 + WINDOW * 3);
        assert_eq!(brake.tracked(), 1);
    }
}
