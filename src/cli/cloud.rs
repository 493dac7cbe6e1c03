//! What the CLI subcommands that talk to the cloud share: a small runtime,
//! connecting, and turning cloud errors into the vendor's exit codes.

use std::future::Future;

use appsnap::cloud::CloudError;
use appsnap::job::outcome::Outcome;

/// Runs one async CLI action on a current-thread runtime (the CLI does one thing at a time).
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// The vendor exit code for a cloud failure.
pub fn outcome(e: &CloudError) -> Outcome {
    appsnap::job::outcome::cloud_outcome(e)
}
