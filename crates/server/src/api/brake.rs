//! A brake on guessing tokens: after [`MAX_FAILURES`] failed authentications (401)
//! from one address within [`WINDOW`], that address gets 429 with `Retry-After` for the
//! rest of the window, and those requests never reach the vault.
//!
//! Tokens carry 256 random bits, so guessing is hopeless anyway; the brake is there to
//! keep a misbehaving client (or a scanner) from filling the audit log and taking
//! vault-thread time from everyone else. Braked requests are not audited: recording
//! them would be exactly the load the brake exists to shed.
//!
//! A client with many addresses (an IPv6 prefix, a botnet, a header a trusted proxy
//! passes on) is bounded too: after [`GLOBAL_MAX_FAILURES`] failures from all addresses
//! together within a window, only tokens that authenticated recently (see
//! `tally::Proven`) reach the vault until the window ends; the rest get 429. So the
//! vault records at most `GLOBAL_MAX_FAILURES` failed authentications per window
//! (plus those in flight when the limit is reached), whoever sends them.
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
/// Failed authentications allowed per window from all addresses together.
pub(crate) const GLOBAL_MAX_FAILURES: u32 = 100;
/// Addresses tracked at most.
const MAX_TRACKED: usize = 10_000;

/// Seconds left in `w`'s window, rounded up (a client that waits as told is not braked
/// once more).
fn wait(w: &Window, now: Instant) -> u64 {
    let left = WINDOW.saturating_sub(now.saturating_duration_since(w.start));
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.max(1)
}

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
    /// Failures from every address together.
    global: Mutex<Option<Window>>,
}

impl Brake {
    /// `Some(seconds to wait)` when `remote` is braked at `now`. `proven`: the request
    /// carries a token that authenticated recently (it passes the global brake).
    pub(crate) fn blocked(&self, remote: &str, now: Instant, proven: bool) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = windows.get(remote) {
            if w.failures >= MAX_FAILURES && w.live(now) {
                return Some(wait(w, now));
            }
        }
        drop(windows);
        if proven {
            return None;
        }
        let global = self.global.lock().unwrap_or_else(|e| e.into_inner());
        global
            .as_ref()
            .filter(|w| w.failures >= GLOBAL_MAX_FAILURES && w.live(now))
            .map(|w| wait(w, now))
    }

    /// Records a failed authentication from `remote` at `now`.
    pub(crate) fn failed(&self, remote: &str, now: Instant) {
        {
            let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
            match global.as_mut() {
                Some(w) if w.live(now) => w.failures = w.failures.saturating_add(1),
                _ => {
                    *global = Some(Window {
                        failures: 1,
                        start: now,
                    })
                }
            }
        }
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
            assert_eq!(brake.blocked("10.0.0.1", t0, false), None, "failure {i}");
            brake.failed("10.0.0.1", t0 + Duration::from_secs(u64::from(i)));
        }
        let at = t0 + Duration::from_secs(20);
        assert_eq!(brake.blocked("10.0.0.1", at, false), Some(40));
        assert_eq!(
            brake.blocked("10.0.0.2", at, false),
            None,
            "other addresses are not braked"
        );
        assert_eq!(
            brake.blocked("10.0.0.1", t0 + Duration::from_millis(59_500), false),
            Some(1)
        );
        assert_eq!(
            brake.blocked("10.0.0.1", t0 + WINDOW, false),
            None,
            "the window ends"
        );
        brake.failed("10.0.0.1", t0 + WINDOW);
        assert_eq!(
            brake.blocked("10.0.0.1", t0 + WINDOW, false),
            None,
            "a new window starts at 1"
        );
    }

    #[test]
    fn failures_from_many_addresses_brake_all_but_proven_tokens() {
        let brake = Brake::default();
        let t0 = Instant::now();
        for i in 0..GLOBAL_MAX_FAILURES {
            // Fewer than MAX_FAILURES each: no address is braked on its own.
            brake.failed(&format!("2001:db8::{i}"), t0);
        }
        assert_eq!(brake.blocked("2001:db8::ffff", t0, false), Some(60));
        assert_eq!(
            brake.blocked("2001:db8::ffff", t0, true),
            None,
            "a proven token passes"
        );
        assert_eq!(
            brake.blocked("2001:db8::ffff", t0 + WINDOW, false),
            None,
            "until the window ends"
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
