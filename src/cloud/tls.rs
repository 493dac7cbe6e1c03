//! One place that installs the rustls crypto provider.
//!
//! reqwest is built with `rustls-no-provider` (ring instead of aws-lc-rs: smaller,
//! no cmake), and then panics if a client is built before a provider is installed.
//! Every client constructor in `cloud` calls [`install_provider`] first.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Installs rustls' ring provider as the process default; safe to call any number of times.
pub fn install_provider() {
    INSTALL.call_once(|| {
        // An Err means another provider is already the default, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
