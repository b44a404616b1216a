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

/// One runtime timer for an event loop's next deadline, moved only when the deadline moves:
/// a turn of the loop that leaves the deadline where it was registers no new timer (a fresh
/// `Sleep` per turn re-registered, and woke the runtime's timer driver, on every message).
#[derive(Debug)]
pub struct DeadlineTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<tokio::time::Instant>,
}

impl DeadlineTimer {
    /// A timer with no deadline.
    #[must_use]
    pub fn new() -> Self {
        DeadlineTimer {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        }
    }

    /// Sets the next deadline (`None`: nothing is due).
    pub fn set(&mut self, deadline: Option<tokio::time::Instant>) {
        if deadline != self.armed
            && let Some(at) = deadline
        {
            self.sleep.as_mut().reset(at);
        }
        self.armed = deadline;
    }

    /// Whether a deadline is set: poll [`DeadlineTimer::fired`] only then.
    #[must_use]
    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Completes at the deadline, which is then cleared. Cancel-safe.
    pub async fn fired(&mut self) {
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

impl Default for DeadlineTimer {
    fn default() -> Self {
        Self::new()
    }
}
