//! Time as a parameter: every policy that counts, expires or refills reads a [`Clock`], so tests
//! move time by hand instead of sleeping.
//!
//! Two readings are offered because they answer different questions: monotonic nanoseconds for
//! intervals (token buckets, cache TTLs: immune to wall-clock jumps) and UTC wall time for
//! calendar periods (quotas per day/week/month) and JWT `exp`/`nbf`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic nanoseconds since an arbitrary origin fixed for this clock.
    fn now_nanos(&self) -> u64;
    /// The wall-clock time.
    fn utc(&self) -> DateTime<Utc>;
}

/// A shared clock, as the policies hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The real clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 {
        // u64 nanoseconds last 584 years; saturate rather than wrap.
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn utc(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicU64,
    utc: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock whose wall time starts at `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            nanos: AtomicU64::new(0),
            utc: Mutex::new(start),
        })
    }

    /// A clock starting at 2026-01-05T00:00:00Z (a Monday).
    pub fn at_epoch() -> Arc<Self> {
        let start = DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default();
        Self::new(start)
    }

    /// Moves both readings forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
        let mut utc = self.utc.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(delta) = chrono::Duration::from_std(by) {
            *utc += delta;
        }
    }

    /// Sets the wall time only (a wall-clock jump; monotonic time is unaffected).
    pub fn set_utc(&self, to: DateTime<Utc>) {
        *self.utc.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }

    fn utc(&self) -> DateTime<Utc> {
        *self.utc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_epoch();
        let start = clock.utc();
        assert_eq!(clock.now_nanos(), 0);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_nanos(), 1_500_000_000);
        assert_eq!(clock.utc() - start, chrono::Duration::milliseconds(1500));
        assert_eq!(start.to_rfc3339(), "2026-01-05T00:00:00+00:00");
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock::new();
        let a = clock.now_nanos();
        let b = clock.now_nanos();
        assert!(b >= a);
    }
}
