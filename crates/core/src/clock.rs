//! Where "now" comes from: one injected clock for everything the library decides by
//! time (audit entries, version times, due times, grace ends, leases, token expiry).
//!
//! Production reads the system clock. A caller with a clock of its own (the server's
//! scheduler tests run on tokio's paused clock, so hours of schedule pass in
//! milliseconds) plugs it in through [`TimeSource`]; the core itself has no runtime.
//! Nothing in the library reads the system time except [`Clock::System`].

use std::fmt;
use std::sync::Arc;

/// A source of the current time in milliseconds since the Unix epoch.
pub trait TimeSource: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The clock a vault and everything above it reads.
#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Any other source (a paused test clock, a fixed time).
    Source(Arc<dyn TimeSource>),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::System => f.write_str("Clock::System"),
            Clock::Source(_) => f.write_str("Clock::Source"),
        }
    }
}

impl Clock {
    /// A clock that reads `source`.
    pub fn from_source(source: impl TimeSource + 'static) -> Self {
        Clock::Source(Arc::new(source))
    }

    /// A clock stopped at `ms` (tests).
    pub fn fixed(ms: i64) -> Self {
        Clock::from_source(Fixed(ms))
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Source(source) => source.now_ms(),
        }
    }
}

struct Fixed(i64);

impl TimeSource for Fixed {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_stays_put_and_the_system_clock_moves_forward() {
        let fixed = Clock::fixed(1_700_000_000_000);
        assert_eq!(fixed.now_ms(), 1_700_000_000_000);
        assert_eq!(fixed.now_ms(), 1_700_000_000_000);
        assert!(Clock::System.now_ms() > 1_700_000_000_000);
    }
}
