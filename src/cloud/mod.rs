//! Everything appsnap says to Alibaba Cloud: the instance metadata service,
//! RAM-role credentials, request signing and the typed ECS calls.
//!
//! The job module composes these; nothing here knows about freezing.

pub mod credentials;
pub mod ecs;
pub mod metadata;
pub mod retry;
pub mod secret;
pub mod sign;
pub mod tls;
