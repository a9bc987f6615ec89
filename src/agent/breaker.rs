//! A circuit breaker per MCP server (pure): after `threshold` failures in a row the
//! server is not called for `cooldown`; then one call is let through to probe it.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold: threshold.max(1), cooldown, failures: 0, open_until: None }
    }

    /// `Err(until)` while open. Once the cooldown is over the next call is let through;
    /// its outcome closes the breaker or opens it again.
    pub fn check(&mut self, now: Instant) -> Result<(), Instant> {
        match self.open_until {
            Some(until) if now < until => Err(until),
            Some(_) => {
                // Half open: one probe; a failure re-opens at once.
                self.open_until = None;
                self.failures = self.threshold.saturating_sub(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.failures >= self.threshold {
            self.open_until = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(30);
        let mut b = Breaker::new(3, cool);
        for _ in 0..2 {
            assert!(b.check(t0).is_ok());
            b.failure(t0);
        }
        assert!(b.check(t0).is_ok(), "two failures: still closed");
        b.failure(t0);
        assert_eq!(b.check(t0 + Duration::from_secs(1)), Err(t0 + cool));
        // After the cooldown one probe goes through; failing it re-opens at once.
        assert!(b.check(t0 + cool).is_ok());
        b.failure(t0 + cool);
        assert!(b.check(t0 + cool + Duration::from_secs(1)).is_err());
        // A successful probe closes it.
        assert!(b.check(t0 + cool * 3).is_ok());
        b.success();
        b.failure(t0 + cool * 3);
        assert!(b.check(t0 + cool * 3).is_ok(), "one failure after a success does not open it");
    }
}
