//! `secret-core`: the vault itself — validated names and values, envelope encryption,
//! the store interface (SQLite here; PostgreSQL in `secret-store-postgres`), the
//! audit chain, policies and the clock. No async runtime and no
//! HTTP: everything here is synchronous and called by the adapters above it.
//!
//! # Layout
//!
//! ```text
//!  vault (the facade) ──► store (StoreTx + Backend traits; store::sqlite: SQL, migrations/sqlite;
//!    │                │         store::image: every table and column, rows between stores)
//!    │                ├─► crypto (the only user of age and ring)
//!    │                ├─► audit (chain encoding, MACs, verification)
//!    │                ├─► integrity (MACs over labels, versions, tokens, census)
//!    │                └─► private_file (0600 files through an exclusive temp file)
//!    └─ model · rotation_state · policy · scope · clock · error · render
//! ```
//!
//! - [`vault::Vault`] is the facade every adapter calls. It unlocks the vault key,
//!   applies the versioning rules, and appends one audit entry per operation (in the
//!   same transaction as a change; committed before a read returns its value).
//! - [`store`] is the one interface to where rows live: [`store::StoreTx`] (every row
//!   operation, object-safe; the vault sees `&Tx<'_>`) and [`store::Backend`] (one
//!   connection: begin, commit, a second connection, scrub, snapshot). [`store::sqlite`]
//!   owns the SQLite file and its SQL; the PostgreSQL backend is its own crate, so no
//!   async runtime reaches this one. Rows stay inside it and at the vault's boundary.
//! - [`crypto`] wraps the vault key with age and seals values with AES-256-GCM (ring).
//! - [`audit`] defines the entry encoding, the MAC chain, the sealed head, and
//!   verification (across key epochs); [`vault`] decides what gets recorded, as an
//!   [`action::Action`].
//! - [`integrity`] encodes and MACs the metadata that decides what a read returns
//!   (labels, latest version, deleted and destroyed flags, version rows, tokens, the
//!   number of secrets); the vault checks it on every read and renews it on every write.
//! - The vault's keys and recovery (recipients, passphrase, rekey, backup, restore)
//!   live in `vault::keys`; `vault::copy` is `secret store copy` (the whole vault into
//!   another store, proven on both sides), built on [`store::image`].
//! - [`model`] holds validated names, version numbers and the value wrapper that keeps
//!   plaintext out of `Debug`; [`rotation_state`] the typed states, steps, outcomes and
//!   triggers of a rotation run, stored as text only at the store boundary.
//! - [`dotenv`] reads and writes dotenv files (`import`, `export`).
//! - [`policy`] parses `policies/*.toml` strictly; [`scope`] parses token scopes.
//! - [`private_file`] writes files that hold values or the audit trail: through an
//!   exclusively created temporary file in the same folder, then a rename.
//! - [`clock`] is the one source of "now"; [`error`] maps every failure to one exit
//!   code; [`render`] is the presentation the CLI and the API share (times, audit
//!   entries, rotation runs as JSON).
//!
//! Nothing here imports from the rotation, server or CLI crates; Cargo enforces it.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod action;
pub mod audit;
pub mod clock;
pub mod crypto;
pub mod dotenv;
pub mod error;
pub mod integrity;
pub mod model;
pub mod policy;
pub mod private_file;
pub mod render;
pub mod rotation_state;
pub mod scope;
pub mod store;
pub mod vault;
