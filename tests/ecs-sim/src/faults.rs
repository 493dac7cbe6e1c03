//! Fault injection: per-action latency, hangs, forced error codes, per-key
//! throttling and a failing metadata service. Set from the config at start-up
//! and replaced at run time through `POST /_sim/faults`, so one test can break
//! the cloud mid-run and see how the client copes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The fault plan, as written in `[faults]` or posted as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Per action name (`"*"` matches every action).
    #[serde(default)]
    pub actions: BTreeMap<String, ActionFault>,
    /// Above this many requests in any one-second window from one
    /// AccessKeyId, answer `Throttling.User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_rps_per_key: Option<u32>,
    /// Account-wide flow control per API, as ECS applies it (per account,
    /// region and API, whoever calls): a token bucket per key, the key an
    /// action name or a prefix ending in `*` (`"Describe*"`); the exact name
    /// wins over a prefix, the longest prefix over a shorter one. A request
    /// finding its bucket empty is answered 400 `Throttling.User` (with
    /// `x-acs-retry-after` when `retry_after_ms` is set). The rates are the
    /// test's choice: Alibaba publishes no per-API figures (NOTES.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, RateLimit>,
    /// Make the metadata service fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds: Option<ImdsFault>,
    /// The next N accepted snapshot groups end `failed` instead of
    /// `accomplished` (they progress normally until then). Counts down.
    #[serde(default)]
    pub fail_next_groups: u32,
    /// Extra time CreateSnapshotGroup spends between reserving the group and
    /// answering (a slow accept); tests use it to hit `IdempotentProcessing`.
    #[serde(default)]
    pub accept_delay_ms: u64,
    /// Overrides the config's `pit_delay_ms` while set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pit_delay_ms: Option<u64>,
    /// Overrides the config's `available_delay_ms` while set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_delay_ms: Option<u64>,
    /// AttachDisk succeeds and the disk goes `In_use`, but no loop device
    /// or by-id link ever appears (`times` absent = every attach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_no_device: Option<Times>,
    /// A valid DetachDisk answers this error and the disk stays `In_use`
    /// (default 403 `IncorrectInstanceStatus`; `times` absent = always).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detach_fails: Option<DetachFault>,
    /// With `throttle_rps_per_key`: a throttled answer carries
    /// `x-acs-retry-after: <ms>` (the header the SDK turns into a
    /// `ThrottlingException` with `retry_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// One API's account-wide token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per second.
    pub rate: f64,
    /// The bucket's size (and how full it starts); default one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

impl RateLimit {
    fn size(&self) -> f64 {
        self.burst.unwrap_or(self.rate).max(1.0)
    }
}

/// A bucket's level when last touched.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What to do to one action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionFault {
    /// Added to every request of this action before it is processed.
    #[serde(default)]
    pub latency_ms: u64,
    /// Hold the request this long before processing (a client with a
    /// shorter timeout sees a hang), `hang_times` times.
    #[serde(default)]
    pub hang_secs: u64,
    /// How many requests hang; default 1. Counts down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_times: Option<u32>,
    /// Answer this error instead of processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFault>,
    /// Process the request, then hold the answer this long (`answer_delay_times`
    /// times, default 1): the "accepted but the answer was lost" case that
    /// ClientToken retries exist for.
    #[serde(default)]
    pub answer_delay_secs: u64,
    /// How many answers are delayed; default 1. Counts down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_delay_times: Option<u32>,
}

/// A forced error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    /// The `Code` to answer.
    pub code: String,
    /// HTTP status; default 500.
    #[serde(default = "default_status")]
    pub status: u16,
    /// `Message`; default a generic one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many requests get it; absent = every request until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// A count-down: `times` absent = always.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Times {
    /// How many more times it fires; absent = every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Times {
    /// True if it fires now (and counts it).
    fn fire(&mut self) -> bool {
        match self.times {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.times = Some(n - 1);
                true
            }
        }
    }
}

/// DetachDisk failing with a real DetachDisk error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachFault {
    /// The `Code`; default `IncorrectInstanceStatus` (DetachDisk error table).
    #[serde(default = "default_detach_code")]
    pub code: String,
    /// HTTP status; default 403.
    #[serde(default = "default_detach_status")]
    pub status: u16,
    /// How many requests fail; absent = every one until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

fn default_detach_code() -> String {
    "IncorrectInstanceStatus".into()
}
fn default_detach_status() -> u16 {
    403
}

/// A failing metadata service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImdsFault {
    /// HTTP status to answer every metadata request with; default 500.
    #[serde(default = "default_status")]
    pub status: u16,
    /// How many requests fail; absent = all until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

fn default_status() -> u16 {
    500
}

/// What the fault plan decided for one ECS request.
#[derive(Debug, Default)]
pub struct Decision {
    /// Sleep this long before going on.
    pub delay: Duration,
    /// Answer this instead of processing (after the delay).
    pub error: Option<ApiError>,
    /// Sleep this long after processing, before answering.
    pub answer_delay: Duration,
    /// `x-acs-retry-after` value (ms) to send with the answer.
    pub retry_after_ms: Option<u64>,
}

/// Live fault state: the plan plus the counters it consumes.
#[derive(Debug, Default)]
pub struct Faults {
    plan: FaultConfig,
    windows: HashMap<String, VecDeque<Instant>>,
    buckets: HashMap<String, Bucket>,
    /// Answers `Throttling.User` by action, since start (for `/_sim/state`).
    throttled: BTreeMap<String, u64>,
}

impl Faults {
    /// Starts from a plan.
    pub fn new(plan: FaultConfig) -> Self {
        Faults {
            plan,
            windows: HashMap::new(),
            buckets: HashMap::new(),
            throttled: BTreeMap::new(),
        }
    }

    /// The plan as it stands now (counters included).
    pub fn plan(&self) -> &FaultConfig {
        &self.plan
    }

    /// Replaces the plan; throttle windows restart.
    pub fn replace(&mut self, plan: FaultConfig) {
        self.plan = plan;
        self.windows.clear();
        self.buckets.clear();
    }

    /// How many answers were `Throttling.User`, by action.
    pub fn throttled(&self) -> &BTreeMap<String, u64> {
        &self.throttled
    }

    /// ECS's flow-control answer to `action`, counted.
    fn throttle(&mut self, action: &str) -> Decision {
        *self.throttled.entry(action.to_string()).or_default() += 1;
        Decision {
            error: Some(ApiError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            )),
            retry_after_ms: self.plan.retry_after_ms,
            ..Decision::default()
        }
    }

    /// The rate-limit key that governs `action`, if any.
    fn limit_key(&self, action: &str) -> Option<String> {
        if self.plan.rate_limits.contains_key(action) {
            return Some(action.to_string());
        }
        self.plan
            .rate_limits
            .keys()
            .filter(|k| k.strip_suffix('*').is_some_and(|p| action.starts_with(p)))
            .max_by_key(|k| k.len())
            .cloned()
    }

    /// Takes a token for `action` from its account-wide bucket; false when
    /// the bucket is empty (the request is throttled).
    fn take_token(&mut self, action: &str, now: Instant) -> bool {
        let Some(key) = self.limit_key(action) else {
            return true;
        };
        let Some(limit) = self.plan.rate_limits.get(&key).copied() else {
            return true;
        };
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: limit.size(),
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limit.rate).min(limit.size());
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Decides delay/error for an authenticated request of `action` by `ak`.
    pub fn on_ecs(&mut self, action: &str, ak: &str) -> Decision {
        let mut d = Decision::default();
        if let Some(limit) = self.plan.throttle_rps_per_key {
            let now = Instant::now();
            let w = self.windows.entry(ak.to_string()).or_default();
            while w
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                w.pop_front();
            }
            if w.len() as u64 >= u64::from(limit) {
                return self.throttle(action);
            }
            w.push_back(now);
        }
        if !self.take_token(action, Instant::now()) {
            return self.throttle(action);
        }
        for key in [action, "*"] {
            let Some(f) = self.plan.actions.get_mut(key) else {
                continue;
            };
            d.delay += Duration::from_millis(f.latency_ms);
            if f.hang_secs > 0 {
                let left = f.hang_times.unwrap_or(1);
                if left > 0 {
                    d.delay += Duration::from_secs(f.hang_secs);
                    f.hang_times = Some(left - 1);
                }
            }
            if f.answer_delay_secs > 0 {
                let left = f.answer_delay_times.unwrap_or(1);
                if left > 0 {
                    d.answer_delay += Duration::from_secs(f.answer_delay_secs);
                    f.answer_delay_times = Some(left - 1);
                }
            }
            if d.error.is_none() {
                if let Some(e) = &mut f.error {
                    let fire = match e.times {
                        None => true,
                        Some(0) => false,
                        Some(n) => {
                            e.times = Some(n - 1);
                            true
                        }
                    };
                    if fire {
                        d.error = Some(ApiError::new(
                            e.status,
                            &e.code,
                            e.message
                                .clone()
                                .unwrap_or_else(|| format!("Injected fault {}.", e.code)),
                        ));
                    }
                }
            }
        }
        d
    }

    /// True if the group being accepted now must end `failed`.
    pub fn take_group_failure(&mut self) -> bool {
        if self.plan.fail_next_groups > 0 {
            self.plan.fail_next_groups -= 1;
            true
        } else {
            false
        }
    }

    /// True if this AttachDisk must show no device (`attach_no_device`).
    pub fn take_attach_no_device(&mut self) -> bool {
        self.plan.attach_no_device.as_mut().is_some_and(Times::fire)
    }

    /// The error this DetachDisk must answer (`detach_fails`), if any.
    pub fn take_detach_failure(&mut self) -> Option<ApiError> {
        let f = self.plan.detach_fails.as_mut()?;
        let mut t = Times { times: f.times };
        let fire = t.fire();
        f.times = t.times;
        fire.then(|| {
            ApiError::new(
                f.status,
                &f.code,
                "The current status of the resource does not support this operation.",
            )
        })
    }

    /// Status to fail a metadata request with, if the plan says so.
    pub fn on_imds(&mut self) -> Option<u16> {
        let f = self.plan.imds.as_mut()?;
        match f.times {
            None => Some(f.status),
            Some(0) => None,
            Some(n) => {
                f.times = Some(n - 1);
                Some(f.status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_down_and_wildcard_applies() {
        let mut plan = FaultConfig::default();
        plan.actions.insert(
            "A".into(),
            ActionFault {
                latency_ms: 5,
                hang_secs: 1,
                hang_times: Some(1),
                error: Some(ErrorFault {
                    code: "X".into(),
                    status: 503,
                    message: None,
                    times: Some(1),
                }),
                ..Default::default()
            },
        );
        plan.actions.insert(
            "*".into(),
            ActionFault {
                latency_ms: 7,
                ..Default::default()
            },
        );
        let mut f = Faults::new(plan);
        let d = f.on_ecs("A", "k");
        assert_eq!(d.delay, Duration::from_millis(1012));
        assert_eq!(d.error.unwrap().code, "X");
        let d = f.on_ecs("A", "k");
        assert_eq!(d.delay, Duration::from_millis(12));
        assert!(d.error.is_none());
        assert_eq!(f.on_ecs("B", "k").delay, Duration::from_millis(7));
    }

    #[test]
    fn imds_fault_times() {
        let mut f = Faults::new(FaultConfig {
            imds: Some(ImdsFault {
                status: 500,
                times: Some(1),
            }),
            ..Default::default()
        });
        assert_eq!(f.on_imds(), Some(500));
        assert_eq!(f.on_imds(), None);
    }

    #[test]
    fn throttle_counts_per_key() {
        let mut f = Faults::new(FaultConfig {
            throttle_rps_per_key: Some(2),
            ..Default::default()
        });
        assert!(f.on_ecs("A", "k1").error.is_none());
        assert!(f.on_ecs("A", "k1").error.is_none());
        assert_eq!(f.on_ecs("A", "k1").error.unwrap().code, "Throttling.User");
        assert!(f.on_ecs("A", "k2").error.is_none());
    }

    #[test]
    fn retry_after_only_on_throttled_answers() {
        let mut f = Faults::new(FaultConfig {
            throttle_rps_per_key: Some(1),
            retry_after_ms: Some(1500),
            ..Default::default()
        });
        assert_eq!(f.on_ecs("A", "k").retry_after_ms, None);
        let d = f.on_ecs("A", "k");
        assert_eq!(d.error.unwrap().code, "Throttling.User");
        assert_eq!(d.retry_after_ms, Some(1500));
    }

    #[test]
    fn account_wide_buckets_refill_at_their_rate_and_the_exact_name_wins() {
        let plan: FaultConfig = toml::from_str(
            "retry_after_ms = 250\n[rate_limits.CreateSnapshotGroup]\nrate = 2.0\nburst = 2.0\n[rate_limits.\"Describe*\"]\nrate = 1.0\n[rate_limits.\"DescribeSnapshot*\"]\nrate = 100.0\n",
        )
        .unwrap();
        let mut f = Faults::new(plan);
        // Every caller shares the bucket: the account's limit, not a key's.
        assert!(f.on_ecs("CreateSnapshotGroup", "k1").error.is_none());
        assert!(f.on_ecs("CreateSnapshotGroup", "k2").error.is_none());
        let d = f.on_ecs("CreateSnapshotGroup", "k3");
        assert_eq!(d.error.unwrap().code, "Throttling.User");
        assert_eq!(d.retry_after_ms, Some(250));
        assert_eq!(f.throttled().get("CreateSnapshotGroup"), Some(&1));
        // Half a second refills one token at 2/s.
        std::thread::sleep(Duration::from_millis(520));
        assert!(f.on_ecs("CreateSnapshotGroup", "k3").error.is_none());
        assert!(f.on_ecs("CreateSnapshotGroup", "k3").error.is_some());
        // The longest matching prefix governs; other actions are free.
        assert!(f.on_ecs("DescribeDisks", "k1").error.is_none());
        assert!(f.on_ecs("DescribeDisks", "k1").error.is_some());
        for _ in 0..50 {
            assert!(f.on_ecs("DescribeSnapshotGroups", "k1").error.is_none());
        }
        assert!(f.on_ecs("TagResources", "k1").error.is_none());
    }
}
