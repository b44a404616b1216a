//! The agent's clock: wall-clock milliseconds since the Unix epoch, read once at start and then
//! advanced by the monotonic clock, so the cores get a time that never goes backwards and the
//! API can still show real timestamps.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shoal_gossip::Millis;

/// A monotonic clock in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    /// Starts the clock now.
    #[must_use]
    pub fn new() -> Self {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    /// Now, in Unix milliseconds.
    #[must_use]
    pub fn now(&self) -> Millis {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Millis(self.start_unix_ms.saturating_add(elapsed))
    }

    /// The `Instant` at which `at` falls, for `tokio::time::sleep_until`.
    #[must_use]
    pub fn instant_of(&self, at: Millis) -> Instant {
        self.start + std::time::Duration::from_millis(at.0.saturating_sub(self.start_unix_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
