//! ecs-sim: a local emulator of the ECS snapshot API and the instance
//! metadata service, strict where ECS is strict, so appsnap's tests prove
//! something. It shares no code with appsnap: its signature verifier is an
//! independent implementation of the vendor's spec.

#![warn(missing_docs)]

pub mod actions;
pub mod auth;
pub mod config;
pub mod control;
pub mod devcommand;
pub mod diskcopy;
pub mod ecs;
pub mod error;
pub mod faults;
pub mod imds;
pub mod loopdev;
pub mod params;
pub mod pct;
pub mod probe;
pub mod reqlog;
pub mod server;
pub mod state;
pub mod testkit;
pub mod util;
pub mod validate;
pub mod verify;
pub mod xml;

pub use config::SimConfig;
pub use server::{start, SimHandle, StartError, Started};
