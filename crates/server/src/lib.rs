//! `secret-server`: `secret serve` — the HTTP API, the rotation scheduler and the
//! Prometheus metrics in one process.
//!
//! # Layout
//!
//! ```text
//!  serve ─┬─► api (axum: routes, auth, errors, OpenAPI) ─► service (the vault thread,
//!         │                                                 group-committed calls)
//!         └─► scheduler (its own thread and vault connection) ─► secret_rotation::Engine
//!  metrics (one registry both write)     clock (tokio time for paused-clock tests)
//!  connections (the accept loop: cap, header-read and idle timeouts)
//! ```
//!
//! - [`serve`] wires the rest together and owns shutdown; [`serve::run_until_signal`]
//!   is what the binary calls, with options it resolved itself.
//! - [`api`] is an adapter over the vault facade: it never touches SQL or crypto, and
//!   renders through `secret_core::render` like the CLI does.
//! - [`service`] runs the API's vault on one thread and batches concurrent calls into
//!   shared commits.
//! - [`scheduler`] decides what is due and hands it to the rotation engine.
//! - [`connections`] accepts and serves connections within a cap and timeouts, so idle
//!   or half-sent sockets cannot exhaust the process.
//!
//! It depends on `secret-core` and `secret-rotation`, never on the CLI.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod clock;
pub mod connections;
pub mod metrics;
pub mod scheduler;
pub mod serve;
pub mod service;
