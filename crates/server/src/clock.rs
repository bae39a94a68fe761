//! A clock on tokio's time, for code that runs under `tokio::time::pause()`: the
//! scheduler's tests let hours of schedule pass in milliseconds, and the vault, the
//! engine and the scheduler all see the same time.

use secret_core::clock::{Clock, TimeSource};

struct TokioTime {
    base_ms: i64,
    base: tokio::time::Instant,
}

impl TimeSource for TokioTime {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }
}

/// The system time now, advanced by tokio's (possibly paused) clock from here on.
pub fn tokio_clock() -> Clock {
    Clock::from_source(TokioTime {
        base_ms: Clock::System.now_ms(),
        base: tokio::time::Instant::now(),
    })
}
