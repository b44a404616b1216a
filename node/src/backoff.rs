//! The one back-off of the agent: delays that start small and double up to a cap.
//!
//! A plain iterator of delays rather than a retry crate (`backon`, `backoff`): the four loops
//! that use it sleep in different ways (a `select!` against shutdown or a cut-off, a blocking
//! thread on the blocking pool) and stop on different conditions (success, a deadline, a number
//! of tries), so what they share is only the sequence of delays.

use std::time::Duration;

/// Delays `first`, `2 × first`, `4 × first`, … up to `cap`, then `cap` for ever.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first` (taken as at most `cap`).
    #[must_use]
    pub fn new(first: Duration, cap: Duration) -> Self {
        let first = first.min(cap);
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.cap);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(ms(100), ms(500));
        let seen: Vec<_> = b.by_ref().take(5).collect();
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next(), Some(ms(100)));
        assert_eq!(Backoff::new(ms(9), ms(3)).next(), Some(ms(3)));
        let huge = Backoff::new(Duration::MAX, Duration::MAX).nth(3);
        assert_eq!(huge, Some(Duration::MAX), "no overflow");
    }
}
