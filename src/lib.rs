//! `secret`: a self-hosted secrets vault with versions, envelope encryption and a
//! tamper-evident audit log.
//!
//! # Layout
//!
//! ```text
//!  cli (clap) ──► vault ──► store (SQLite: every SQL statement, migrations/)
//!                   ├─────► crypto (the only user of age and ring)
//!                   └─────► audit (chain encoding, MACs, verification)
//! ```
//!
//! - [`vault::Vault`] is the facade every adapter calls. It unlocks the vault key,
//!   applies the versioning rules, and appends one audit entry per operation (in the
//!   same transaction as a change; committed before a read returns its value).
//! - [`store`] owns the SQLite file and all SQL. The rest of the crate sees rows and
//!   domain types, which is what lets another store be added later.
//! - [`crypto`] wraps the vault key with age and seals values with AES-256-GCM (ring).
//! - [`audit`] defines the entry encoding, the MAC chain, the sealed head, and
//!   verification; [`vault`] decides what gets recorded.
//! - [`model`] holds validated names, version numbers and the value wrapper that keeps
//!   plaintext out of `Debug`; [`error`] maps every failure to one exit code.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod providers;
pub mod rotation;
pub mod scheduler;
pub mod scope;
pub mod serve;
pub mod service;
pub mod standin;
pub mod store;
pub mod targets;
pub mod vault;
