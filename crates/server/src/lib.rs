//! `secret-server`: `secret serve` — the HTTP API, the rotation scheduler and the
//! Prometheus metrics in one process.
//!
//! # Layout
//!
//! ```text
//!  serve ─┬─► api (axum: routes, auth, errors, OpenAPI) ─► service (the vault thread,
//!         │                                                 group-committed calls)
//!         ├─► scheduler (its own thread and vault connection) ─► secret_rotation::Engine
//!         │                                                       secret_rotation::drift
//!         └─► backup (scheduled backups: a blocking thread, its own vault connection)
//!  metrics (one registry both write)     clock (tokio time for paused-clock tests)
//!  passes (what the scheduler's passes did with rotations the API asked for)
//!  connections (the accept loop: cap, header-read and idle timeouts)
//! ```
//!
//! - [`serve`] wires the rest together and owns shutdown; [`serve::run_until_signal`]
//!   is what the binary calls, with options it resolved itself.
//! - [`api`] is an adapter over the vault facade: it never touches SQL or crypto, and
//!   renders through `secret_core::render` like the CLI does.
//! - [`service`] runs the API's vault on one thread and batches concurrent calls into
//!   shared commits.
//! - [`scheduler`] decides what is due and hands it to the rotation engine; while it
//!   holds the lease it also checks drift every `drift_every` (`secret_drift`).
//! - [`backup`] writes an age-encrypted snapshot every period and keeps the newest N.
//! - [`connections`] accepts and serves connections within a cap and timeouts, so idle
//!   or half-sent sockets cannot exhaust the process.
//!
//! It depends on `secret-core` and `secret-rotation`, never on the CLI.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod backup;
pub mod clock;
pub mod connections;
pub mod metrics;
pub mod passes;
pub mod scheduler;
pub mod serve;
pub mod service;
