//! Usage-plan limits: token-bucket throttles per stage and per API key, and request quotas per
//! API key per calendar period.
//!
//! A key's throttle and quota count across every stage of its usage plan, as API Gateway
//! applies them ("the usage plan limit is applied per API key and is global to all APIs that
//! have that plan associated", AWS re:Post, QUFD1EPj5dRYaYaqpNepE34A); keys never share limits.
//!
//! The bucket is GCRA (the "virtual scheduling" form of a token bucket, as `governor` uses): one
//! `u64` per bucket holding the theoretical arrival time, updated with a compare-and-swap, so the
//! hot path takes no lock for a stage throttle. We do not use `governor` itself because its rate is
//! a whole number of cells per period and API Gateway's `rateLimit` is a fraction (0.5 requests/s
//! is a valid plan); the emission interval is rounded *up* to whole nanoseconds so the bucket can
//! never admit more than `rate × elapsed + burst`.
//!
//! Quotas follow API Gateway's usage plans: a limit per DAY, WEEK (starting Monday) or MONTH in
//! UTC, with `offset` requests already counted in the first period (the period in which this
//! limiter was created).

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use dashmap::DashMap;
use serde::Serialize;

use super::{Refusal, api_keys::KeyGrant, clock::SharedClock};
use crate::api::{Quota, Throttle};

/// A throttle setting that cannot be enforced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error("throttle rateLimit must be a positive number of requests per second, not {0}")]
    BadRate(f64),
    #[error("throttle burstLimit must be at least 1, not {0}")]
    BadBurst(i64),
    #[error("quota limit must be at least 1, not {0}")]
    BadQuotaLimit(i64),
    #[error("quota offset must not be negative, not {0}")]
    BadQuotaOffset(i64),
    #[error("quota period must be DAY, WEEK or MONTH, not {0:?}")]
    BadPeriod(String),
}

/// A validated throttle: the GCRA emission interval and burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSpec {
    /// Nanoseconds between two requests at the steady rate, rounded up.
    interval_nanos: u64,
    burst: u64,
}

impl ThrottleSpec {
    pub fn new(rate_per_second: f64, burst: i64) -> Result<Self, LimitError> {
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return Err(LimitError::BadRate(rate_per_second));
        }
        let burst_u = u64::try_from(burst)
            .ok()
            .filter(|b| *b >= 1)
            .ok_or(LimitError::BadBurst(burst))?;
        let interval = (1e9 / rate_per_second).ceil();
        // A rate below one request in 584 years saturates; the cast of a finite, positive f64
        // clamps to u64::MAX.
        let interval_nanos = (interval as u64).max(1);
        Ok(Self {
            interval_nanos,
            burst: burst_u,
        })
    }

    /// Largest requests per second this throttle admits at steady state.
    pub fn rate_per_second(&self) -> f64 {
        1e9 / self.interval_nanos as f64
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }
}

impl TryFrom<&Throttle> for ThrottleSpec {
    type Error = LimitError;
    fn try_from(t: &Throttle) -> Result<Self, LimitError> {
        Self::new(t.rate_limit, t.burst_limit)
    }
}

/// A calendar period of a quota, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QuotaPeriod {
    Day,
    /// Weeks start on Monday.
    Week,
    Month,
}

impl QuotaPeriod {
    pub fn parse(s: &str) -> Result<Self, LimitError> {
        match s {
            "DAY" => Ok(Self::Day),
            "WEEK" => Ok(Self::Week),
            "MONTH" => Ok(Self::Month),
            other => Err(LimitError::BadPeriod(other.to_owned())),
        }
    }

    /// A number that grows by one from each period to the next.
    fn index(self, at: DateTime<Utc>) -> i64 {
        let date = at.date_naive();
        let days = i64::from(date.num_days_from_ce());
        match self {
            Self::Day => days,
            // 0001-01-01 was a Monday, so whole weeks counted from it start on Mondays.
            Self::Week => (days - 1).div_euclid(7),
            Self::Month => i64::from(date.year()) * 12 + i64::from(date.month0()),
        }
    }

    /// When the period holding `at` ends (the next one starts).
    fn end(self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let date = at.date_naive();
        let next = match self {
            Self::Day => date.succ_opt()?,
            Self::Week => {
                let monday =
                    date - chrono::Duration::days(i64::from(date.weekday().num_days_from_monday()));
                monday + chrono::Duration::days(7)
            }
            Self::Month => {
                let (y, m) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)?
            }
        };
        Some(next.and_hms_opt(0, 0, 0)?.and_utc())
    }
}

/// A validated quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSpec {
    pub limit: u64,
    pub period: QuotaPeriod,
    /// Requests already counted in the first period.
    pub offset: u64,
}

impl TryFrom<&Quota> for QuotaSpec {
    type Error = LimitError;
    fn try_from(q: &Quota) -> Result<Self, LimitError> {
        let limit = u64::try_from(q.limit)
            .ok()
            .filter(|l| *l >= 1)
            .ok_or(LimitError::BadQuotaLimit(q.limit))?;
        let offset = u64::try_from(q.offset).map_err(|_| LimitError::BadQuotaOffset(q.offset))?;
        Ok(Self {
            limit,
            period: QuotaPeriod::parse(&q.period)?,
            offset,
        })
    }
}

/// One token bucket in GCRA form.
#[derive(Debug, Default)]
struct Bucket {
    /// Theoretical arrival time of the next request, in clock nanoseconds. Zero means "full".
    tat: AtomicU64,
}

impl Bucket {
    fn admit(&self, spec: &ThrottleSpec, now: u64) -> bool {
        let tolerance = spec.interval_nanos.saturating_mul(spec.burst - 1);
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let tat = current.max(now);
            if tat - now > tolerance {
                return false;
            }
            let next = tat.saturating_add(spec.interval_nanos);
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

/// Quota counting for one key of one plan.
#[derive(Debug)]
struct QuotaCounter {
    period_index: i64,
    used: u64,
    /// The spec last checked against, for the usage report.
    spec: Option<QuotaSpec>,
}

/// Everything kept per key of a plan.
#[derive(Debug)]
struct KeyState {
    key_id: String,
    plan: String,
    bucket: Bucket,
    quota: Mutex<QuotaCounter>,
}

/// Current usage of one key, for the admin endpoint and UsagePlan status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    pub key_id: String,
    pub usage_plan: String,
    /// Requests counted in the current period (including the plan's offset in the first one).
    pub used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<QuotaPeriod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<DateTime<Utc>>,
}

/// The gateway's rate limiter. Long-lived: it outlives routing-table rebuilds, so counters keep
/// counting when objects change; the limits themselves are passed in on every call.
#[derive(Debug)]
pub struct UsagePlanLimiter {
    clock: SharedClock,
    /// The wall time this limiter started: quota offsets apply to the period holding it.
    started: DateTime<Utc>,
    stages: DashMap<Box<str>, Bucket>,
    keys: DashMap<Box<str>, KeyState>,
}

impl UsagePlanLimiter {
    pub fn new(clock: SharedClock) -> Self {
        let started = clock.utc();
        Self {
            clock,
            started,
            stages: DashMap::new(),
            keys: DashMap::new(),
        }
    }

    /// Admits or refuses one request: the stage throttle first, then the key's quota and throttle
    /// (checked together, so a throttled request does not use up quota).
    ///
    /// `stage_id` names the stage's bucket (any stable string, e.g. `api/stage`).
    pub fn check(
        &self,
        stage_id: &str,
        stage_throttle: Option<&ThrottleSpec>,
        key: Option<&KeyGrant<'_>>,
    ) -> Result<(), Refusal> {
        // An open route (no throttle, no key) does not even read the clock.
        if stage_throttle.is_none() && key.is_none() {
            return Ok(());
        }
        let now = self.clock.now_nanos();
        if let Some(spec) = stage_throttle {
            let admitted = match self.stages.get(stage_id) {
                Some(bucket) => bucket.admit(spec, now),
                None => self
                    .stages
                    .entry(stage_id.into())
                    .or_default()
                    .admit(spec, now),
            };
            if !admitted {
                return Err(Refusal::Throttled);
            }
        }
        let Some(grant) = key else {
            return Ok(());
        };
        let info = grant.key();
        if info.throttle.is_none() && info.quota.is_none() {
            return Ok(());
        }
        let id = grant.limit_id();
        let state = match self.keys.get(id) {
            Some(state) => state,
            None => {
                self.keys.entry(id.into()).or_insert_with(|| KeyState {
                    key_id: info.id.clone(),
                    plan: info.plan.clone(),
                    bucket: Bucket::default(),
                    quota: Mutex::new(QuotaCounter {
                        period_index: i64::MIN,
                        used: 0,
                        spec: None,
                    }),
                });
                self.keys.get(id).ok_or(Refusal::Throttled)?
            }
        };
        let mut counter = state.quota.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(quota) = &info.quota {
            self.roll(&mut counter, quota);
            if counter.used >= quota.limit {
                return Err(Refusal::QuotaExceeded);
            }
        }
        if let Some(throttle) = &info.throttle
            && !state.bucket.admit(throttle, now)
        {
            return Err(Refusal::Throttled);
        }
        if info.quota.is_some() {
            counter.used += 1;
        }
        Ok(())
    }

    /// Starts a new count when the period changed (never backwards on a wall-clock jump).
    fn roll(&self, counter: &mut QuotaCounter, quota: &QuotaSpec) {
        let index = quota.period.index(self.clock.utc());
        let period_changed = counter.spec.map(|s| s.period) != Some(quota.period);
        if period_changed || index > counter.period_index {
            counter.period_index = index;
            counter.used = if index == quota.period.index(self.started) {
                quota.offset
            } else {
                0
            };
        }
        counter.spec = Some(*quota);
    }

    /// Usage of every key seen so far, sorted by plan and key.
    pub fn usage(&self) -> Vec<KeyUsage> {
        let now = self.clock.utc();
        let mut out: Vec<KeyUsage> = self
            .keys
            .iter()
            .map(|entry| {
                let state = entry.value();
                let counter = state.quota.lock().unwrap_or_else(|e| e.into_inner());
                let spec = counter.spec;
                let current = spec.is_some_and(|s| s.period.index(now) <= counter.period_index);
                let used = if current { counter.used } else { 0 };
                KeyUsage {
                    key_id: state.key_id.clone(),
                    usage_plan: state.plan.clone(),
                    used,
                    limit: spec.map(|s| s.limit),
                    remaining: spec.map(|s| s.limit.saturating_sub(used)),
                    period: spec.map(|s| s.period),
                    resets_at: spec.and_then(|s| s.period.end(now)),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.usage_plan, &a.key_id).cmp(&(&b.usage_plan, &b.key_id)));
        out
    }

    /// Forgets the state of keys and stages no longer configured, so a long-running gateway
    /// does not keep counters for deleted objects. `keep_key` receives a limit id
    /// ([`KeyGrant::limit_id`]); `keep_stage` a stage id.
    pub fn retain(&self, keep_stage: impl Fn(&str) -> bool, keep_key: impl Fn(&str) -> bool) {
        self.stages.retain(|id, _| keep_stage(id));
        self.keys.retain(|id, _| keep_key(id));
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
