//! The credential source the whole daemon shares.
//!
//! Follows the official chain for what applies on a server: the environment
//! (`ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `ALIBABA_CLOUD_SECURITY_TOKEN`)
//! first, then the instance's RAM role (from `cloud.ram_role` or discovered
//! through the metadata service). Role credentials are cached and refreshed by a
//! background task at `Expiration − 15 min` or one hour after the last fetch,
//! whichever comes first; a failed refresh keeps the cached value while it is
//! valid and retries with jittered backoff. Before freezing, the job calls
//! [`Credentials::ensure_valid_for`] so no request inside the frozen window can
//! meet an expired token.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub use super::access_key::AccessKey;
use super::metadata::{MetadataClient, MetadataError};
use super::retry::Backoff;
use super::secret::Secret;
use crate::policy::types::CloudSettings;

/// Environment variable holding a static AccessKeyId.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// Environment variable holding a static AccessKeySecret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// Environment variable holding an optional STS token for the static pair.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

/// Validity every plain API request asks for: enough for one call with retries.
pub const MIN_REQUEST_VALIDITY: Duration = Duration::from_secs(60);

/// Where credentials come from; shown by `check`, never secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialOrigin {
    /// `ALIBABA_CLOUD_ACCESS_KEY_*` environment variables.
    Environment,
    /// Supplied by code (tests, embedding).
    Static,
    /// The named RAM role, through the metadata service (name `None` until discovered).
    RamRole(Option<String>),
    /// A custom fetcher.
    Custom(String),
}

impl std::fmt::Display for CredentialOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialOrigin::Environment => f.write_str("environment"),
            CredentialOrigin::Static => f.write_str("static"),
            CredentialOrigin::RamRole(Some(r)) => write!(f, "RAM role {r}"),
            CredentialOrigin::RamRole(None) => f.write_str("RAM role (not yet discovered)"),
            CredentialOrigin::Custom(s) => f.write_str(s),
        }
    }
}

/// Why no usable credentials could be had; never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The environment names a key pair only partly.
    #[error("incomplete credentials in the environment: {0}")]
    Environment(String),
    /// The metadata service failed.
    #[error("cannot get RAM role credentials: {0}")]
    Metadata(#[from] MetadataError),
    /// Credentials were obtained but end before the caller's horizon.
    #[error(
        "credentials from {origin} expire at {expiration} ({remaining_secs} s from now), \
         but {needed_secs} s of validity are needed"
    )]
    ExpireTooSoon {
        /// Where they came from.
        origin: CredentialOrigin,
        /// When they expire.
        expiration: DateTime<Utc>,
        /// Seconds of validity left.
        remaining_secs: u64,
        /// Seconds asked for.
        needed_secs: u64,
    },
}

/// A boxed future, as [`FetchCredentials`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that can produce fresh credentials; the RAM role in production,
/// a fake in job tests.
pub trait FetchCredentials: Send + Sync + 'static {
    /// Fetches a fresh set (one logical fetch; the implementation retries as it sees fit).
    fn fetch(&self) -> BoxFuture<'_, Result<AccessKey, CredentialsError>>;
    /// What to call this source in messages.
    fn origin(&self) -> CredentialOrigin;
}

/// Fetches the RAM role's credentials from the metadata service, discovering
/// the role name on first use when the policy does not name one.
pub struct RamRoleFetcher {
    metadata: Arc<MetadataClient>,
    role: RwLock<Option<String>>,
}

impl RamRoleFetcher {
    /// `role: None` means "the role attached to the instance".
    pub fn new(metadata: Arc<MetadataClient>, role: Option<String>) -> RamRoleFetcher {
        RamRoleFetcher {
            metadata,
            role: RwLock::new(role.filter(|r| !r.is_empty())),
        }
    }

    async fn fetch_inner(&self) -> Result<AccessKey, CredentialsError> {
        let known = self
            .role
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let role = match known {
            Some(r) => r,
            None => {
                let r = self.metadata.role_name().await?;
                tracing::info!(role = %r, "discovered the instance's RAM role");
                *self.role.write().unwrap_or_else(PoisonError::into_inner) = Some(r.clone());
                r
            }
        };
        Ok(self.metadata.role_credentials(&role).await?)
    }
}

impl FetchCredentials for RamRoleFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<AccessKey, CredentialsError>> {
        Box::pin(self.fetch_inner())
    }

    fn origin(&self) -> CredentialOrigin {
        CredentialOrigin::RamRole(
            self.role
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// When role credentials are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh this long before `Expiration` (SDK: 15 min).
    pub before_expiry: Duration,
    /// Refresh at the latest this long after a fetch (SDK prefetch: 1 h).
    pub max_age: Duration,
    /// Backoff between failed background refreshes.
    pub retry: Backoff,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            before_expiry: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(3600),
            retry: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        }
    }
}

#[derive(Clone)]
struct Cached {
    key: Arc<AccessKey>,
    fetched_at: Instant,
    /// `Expiration` mapped onto the monotonic clock at fetch time.
    expires_at: Option<Instant>,
}

impl Cached {
    fn new(key: AccessKey) -> Cached {
        let now = Instant::now();
        let expires_at = key.expiration.map(|exp| {
            let left = (exp - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            now + left
        });
        Cached {
            key: Arc::new(key),
            fetched_at: now,
            expires_at,
        }
    }

    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires_at.map(|e| e.saturating_duration_since(now))
    }

    fn valid_for(&self, now: Instant, d: Duration) -> bool {
        self.remaining(now).is_none_or(|r| r >= d)
    }

    fn refresh_due(&self, policy: &RefreshPolicy) -> Instant {
        let by_age = self.fetched_at + policy.max_age;
        match self.expires_at {
            Some(e) => by_age.min(
                e.checked_sub(policy.before_expiry)
                    .unwrap_or(self.fetched_at),
            ),
            None => by_age,
        }
    }
}

enum Source {
    /// Fixed credentials: the set itself is kept here too, so no path needs
    /// the cache to hold it (nothing that runs while frozen may panic).
    Static(CredentialOrigin, Cached),
    Fetch(Arc<dyn FetchCredentials>),
}

struct Inner {
    source: Source,
    policy: RefreshPolicy,
    cached: RwLock<Option<Cached>>,
    /// Serializes fetches so concurrent callers share one IMDS round trip.
    fetching: tokio::sync::Mutex<()>,
}

/// The shared credential source; clone it freely (all clones share one cache).
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exp = self.current().and_then(|k| k.expiration);
        f.debug_struct("Credentials")
            .field("origin", &self.origin())
            .field("expiration", &exp)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Fixed credentials that never refresh.
    pub fn from_static(key: AccessKey) -> Credentials {
        Credentials::fixed(key, CredentialOrigin::Static)
    }

    fn fixed(key: AccessKey, origin: CredentialOrigin) -> Credentials {
        let cached = Cached::new(key);
        Credentials {
            inner: Arc::new(Inner {
                source: Source::Static(origin, cached.clone()),
                policy: RefreshPolicy::default(),
                cached: RwLock::new(Some(cached)),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Credentials produced (and re-produced) by `fetcher`, refreshed per `policy`.
    /// Nothing is fetched until first use or [`Credentials::spawn_refresher`].
    pub fn from_fetcher(fetcher: Arc<dyn FetchCredentials>, policy: RefreshPolicy) -> Credentials {
        Credentials {
            inner: Arc::new(Inner {
                source: Source::Fetch(fetcher),
                policy,
                cached: RwLock::new(None),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Static credentials from `lookup` (the environment in production):
    /// `Ok(None)` when no key id is set, an error when the pair is incomplete.
    pub fn from_env_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Credentials>, CredentialsError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let Some(id) = get(ENV_ACCESS_KEY_ID) else {
            return Ok(None);
        };
        let secret = get(ENV_ACCESS_KEY_SECRET).ok_or_else(|| {
            CredentialsError::Environment(format!(
                "{ENV_ACCESS_KEY_ID} is set but {ENV_ACCESS_KEY_SECRET} is not"
            ))
        })?;
        let key = AccessKey {
            access_key_id: id,
            access_key_secret: Secret::new(secret),
            security_token: get(ENV_SECURITY_TOKEN).map(Secret::new),
            expiration: None,
        };
        Ok(Some(Credentials::fixed(key, CredentialOrigin::Environment)))
    }

    /// The production chain: environment first, else the RAM role named by
    /// `settings.ram_role` or attached to the instance.
    pub fn discover(
        settings: &CloudSettings,
        metadata: Arc<MetadataClient>,
    ) -> Result<Credentials, CredentialsError> {
        if let Some(c) = Credentials::from_env_lookup(|k| std::env::var(k).ok())? {
            tracing::info!("using credentials from the environment");
            return Ok(c);
        }
        let fetcher = RamRoleFetcher::new(metadata, settings.ram_role.clone());
        Ok(Credentials::from_fetcher(
            Arc::new(fetcher),
            RefreshPolicy::default(),
        ))
    }

    /// Where the credentials come from (role name once known).
    pub fn origin(&self) -> CredentialOrigin {
        match &self.inner.source {
            Source::Static(o, _) => o.clone(),
            Source::Fetch(f) => f.origin(),
        }
    }

    /// The cached credentials, without fetching and whatever their age (for display).
    pub fn current(&self) -> Option<Arc<AccessKey>> {
        self.inner.cached().map(|c| c.key)
    }

    /// `text` with the cached secret and security token redacted: for the
    /// output of scripts, which may print their environment or a config
    /// file holding them.
    pub fn scrub(&self, text: &str) -> String {
        let key = self.current();
        let secrets: Vec<&Secret> = key
            .iter()
            .flat_map(|k| std::iter::once(&k.access_key_secret).chain(&k.security_token))
            .collect();
        super::secret::scrub(text, &secrets)
    }

    /// Credentials good for at least one request ([`MIN_REQUEST_VALIDITY`]).
    pub async fn get(&self) -> Result<Arc<AccessKey>, CredentialsError> {
        self.ensure_valid_for(MIN_REQUEST_VALIDITY).await
    }

    /// Credentials that stay valid for at least `d` from now, fetching fresh ones
    /// if the cached set ends sooner. The job calls this before freezing with the
    /// longest the frozen window and snapshot call can take.
    pub async fn ensure_valid_for(&self, d: Duration) -> Result<Arc<AccessKey>, CredentialsError> {
        if let Some(c) = self.inner.cached() {
            if c.valid_for(Instant::now(), d) {
                return Ok(c.key);
            }
        }
        let Source::Fetch(_) = &self.inner.source else {
            // Static credentials cannot be renewed: report how short they are.
            let c = self.inner.cached().or_else(|| self.inner.static_set());
            return match c {
                Some(c) if c.valid_for(Instant::now(), d) => Ok(c.key),
                Some(c) => Err(self.too_soon(&c, d)),
                None => Err(CredentialsError::Environment(
                    "no credentials are held".into(),
                )),
            };
        };
        let _one_fetch = self.inner.fetching.lock().await;
        // Another caller may have refreshed while we waited for the lock.
        if let Some(c) = self.inner.cached() {
            if c.valid_for(Instant::now(), d) {
                return Ok(c.key);
            }
        }
        let c = self.inner.fetch_and_store().await?;
        if c.valid_for(Instant::now(), d) {
            Ok(c.key)
        } else {
            Err(self.too_soon(&c, d))
        }
    }

    /// Fetches a fresh set now, whatever the cache holds (no-op for static ones).
    pub async fn refresh(&self) -> Result<Arc<AccessKey>, CredentialsError> {
        if let Source::Static(_, c) = &self.inner.source {
            return Ok(c.key.clone());
        }
        let _one_fetch = self.inner.fetching.lock().await;
        Ok(self.inner.fetch_and_store().await?.key)
    }

    /// Starts the background refresher on the current tokio runtime. It ends by
    /// itself once every `Credentials` clone is dropped (or when aborted).
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(refresher(weak))
    }

    fn too_soon(&self, c: &Cached, d: Duration) -> CredentialsError {
        CredentialsError::ExpireTooSoon {
            origin: self.origin(),
            expiration: c.key.expiration.unwrap_or_else(Utc::now),
            remaining_secs: c.remaining(Instant::now()).unwrap_or_default().as_secs(),
            needed_secs: d.as_secs(),
        }
    }
}

impl Inner {
    fn cached(&self) -> Option<Cached> {
        self.cached
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The fixed set, for static credentials.
    fn static_set(&self) -> Option<Cached> {
        match &self.source {
            Source::Static(_, c) => Some(c.clone()),
            Source::Fetch(_) => None,
        }
    }

    /// Caller holds `fetching`.
    async fn fetch_and_store(&self) -> Result<Cached, CredentialsError> {
        let fetcher = match &self.source {
            Source::Fetch(f) => f,
            Source::Static(_, c) => return Ok(c.clone()),
        };
        let key = fetcher.fetch().await?;
        let c = Cached::new(key);
        tracing::info!(
            origin = %fetcher.origin(),
            access_key_id = %c.key.access_key_id,
            expiration = ?c.key.expiration,
            "obtained credentials"
        );
        *self.cached.write().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
        Ok(c)
    }
}

/// The background loop: sleep until the refresh is due, refresh, repeat; on
/// failure keep the cache and retry with jittered backoff.
async fn refresher(weak: Weak<Inner>) {
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    loop {
        let due = {
            let Some(inner) = weak.upgrade() else { return };
            if let Source::Static(..) = inner.source {
                return;
            }
            match (retry_at, inner.cached()) {
                (Some(at), _) => at,
                (None, Some(c)) => c.refresh_due(&inner.policy),
                (None, None) => Instant::now(),
            }
        };
        tokio::time::sleep_until(due).await;
        let Some(inner) = weak.upgrade() else { return };
        let result = {
            let _one_fetch = inner.fetching.lock().await;
            // A caller of ensure_valid_for may have refreshed meanwhile.
            match inner.cached() {
                Some(c) if retry_at.is_none() && c.refresh_due(&inner.policy) > Instant::now() => {
                    Ok(c)
                }
                _ => inner.fetch_and_store().await,
            }
        };
        let now = Instant::now();
        match result {
            // Fresh credentials that are not already due for refresh.
            Ok(c) if c.refresh_due(&inner.policy) > now => {
                failures = 0;
                retry_at = None;
            }
            Ok(_) => {
                tracing::warn!("metadata service returned credentials that expire within the refresh margin; will retry");
                retry_at = Some(now + inner.policy.retry.delay(failures));
                failures = failures.saturating_add(1);
            }
            Err(e) => {
                let valid = inner
                    .cached()
                    .is_some_and(|c| c.valid_for(now, Duration::ZERO));
                tracing::warn!(error = %e, cached_still_valid = valid, "credential refresh failed; will retry");
                retry_at = Some(now + inner.policy.retry.delay(failures));
                failures = failures.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_chain() {
        let none = Credentials::from_env_lookup(|_| None).unwrap();
        assert!(none.is_none());
        let partial = Credentials::from_env_lookup(|k| {
            (k == ENV_ACCESS_KEY_ID).then(|| "LTAIid".to_string())
        });
        assert!(matches!(partial, Err(CredentialsError::Environment(_))));
        let full = Credentials::from_env_lookup(|k| match k {
            ENV_ACCESS_KEY_ID => Some("LTAIid".into()),
            ENV_ACCESS_KEY_SECRET => Some("env-secret-value".into()),
            _ => None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(full.origin(), CredentialOrigin::Environment);
        let k = full.current().unwrap();
        assert_eq!(k.access_key_secret.expose(), "env-secret-value");
        assert!(k.security_token.is_none());
        assert!(!format!("{full:?} {k:?}").contains("env-secret-value"));
    }
}
