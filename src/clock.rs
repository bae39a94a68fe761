//! Where "now" comes from. Production reads the system clock; tests of the scheduler
//! run on tokio's paused clock, so that hours of schedule pass in milliseconds and
//! every decision (due times, grace ends, leases) sees the same time.

/// A source of the current time in milliseconds since the Unix epoch.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    /// The system time when it was made, advanced by tokio's clock since (which a test
    /// can pause and advance).
    Tokio {
        base_ms: i64,
        base: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's (possibly paused) time from now on.
    pub fn tokio() -> Self {
        Clock::Tokio {
            base_ms: system_now_ms(),
            base: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Tokio { base_ms, base } => base_ms + base.elapsed().as_millis() as i64,
        }
    }
}

fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
