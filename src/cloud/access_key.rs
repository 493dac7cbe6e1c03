//! One set of credentials, the type both the metadata client (which fetches
//! role credentials) and the credential cache (which holds them) use: its own
//! module, so neither of those imports the other back.

use chrono::{DateTime, Utc};

use super::secret::Secret;
use super::sign::SigningKey;

/// One set of credentials. `Debug` is safe: the secret parts are [`Secret`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// AccessKeyId (`STS.` prefix for role credentials).
    pub access_key_id: String,
    /// AccessKeySecret.
    pub access_key_secret: Secret,
    /// STS SecurityToken, for role credentials.
    pub security_token: Option<Secret>,
    /// When they stop working; `None` for long-lived keys.
    pub expiration: Option<DateTime<Utc>>,
}

impl AccessKey {
    /// The borrowed form the signer takes.
    pub fn signing_key(&self) -> SigningKey<'_> {
        SigningKey {
            access_key_id: &self.access_key_id,
            access_key_secret: &self.access_key_secret,
            security_token: self.security_token.as_ref(),
        }
    }
}
