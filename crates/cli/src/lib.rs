//! `secret`, the command: argument parsing (clap), where the vault and identity come
//! from (flags, the [`Environment`] read once by `main`, XDG defaults), reading values
//! from stdin, and rendering results for a terminal or a pipe.
//!
//! # Layout
//!
//! ```text
//!  main.rs ─► lib.rs (clap definitions, vault commands, audit, tokens)
//!               ├─► rotation.rs (rotate, rotations, plan, policy check) ─► secret_rotation
//!               ├─► drift.rs (drift [--fix]: targets against the vault) ─► secret_rotation
//!               ├─► daily.rs (import, export, run)
//!               ├─► copy.rs (store copy: the vault into another file or database)
//!               ├─► backend.rs (local Vault | remote.rs: a `secret serve` over HTTP)
//!               ├─► environment.rs (the only reader of environment variables)
//!               └─► secret_server::serve (`secret serve`, with options resolved here)
//!  all of them ─► secret_core (the vault facade; render for shared output)
//!  lib.rs (Context::open/init), copy.rs, keys.rs (restore) ─► secret_store_postgres
//!    when --vault or --to is a postgres:// URL
//! ```
//!
//! It calls the [`Vault`] facade only; no SQL, no crypto here. Output shared with the
//! API (times, audit entries, rotation runs) comes from `secret_core::render`. The
//! commands that also work against a server (get, set, list, history, delete, rotate,
//! rotations, audit, export, run) go through `backend::Backend`, which answers with the
//! same types in both modes, so their output is rendered once.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use secret_core::action::Action;
use secret_core::audit::{Actor, AuditFilter, ExpectedHead};
use secret_core::clock::Clock;
use secret_core::crypto::{self, Charset, Identities};
use secret_core::error::VaultError;
use secret_core::model::{
    InputError, Label, SecretValue, VersionNumber, VersionSelector, MAX_VALUE_BYTES,
};
use secret_core::private_file;
use secret_core::render::{age, entry_json, rfc3339};
use secret_core::vault::{InitOptions, SetOptions, Unlocker, Vault};
use secret_server::backup::BackupOptions;
use secret_server::scheduler::SchedulerOptions;
use secret_server::serve::{run_until_signal, ServeCommand, ServeOptions};
use secret_store_postgres::{is_postgres_url, PgLocation, PgStore};

mod backend;
mod copy;
mod daily;
mod drift;
mod environment;
mod keys;
mod remote;
mod rotation;
pub mod usage;

pub use copy::{CopyArgs, StoreCommand};
pub use environment::{Environment, Tuning};
pub use keys::{BackupArgs, PassphraseCommand, RecipientsCommand, RestoreArgs};

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  other error (including a PostgreSQL server that cannot be reached)
  2  usage (bad arguments, invalid name or value, a malformed postgres:// URL, a
     `store copy` to the vault itself)
  3  not found (secret, version)
  4  conflict (version check failed, vault exists, rotation already running, a
     `store copy` destination that is not empty)
  5  vault locked (wrong identity or passphrase; remote: token refused or lacking the scope)
  6  rotation failed (and was rolled back)
  7  integrity failure (tampered ciphertext, metadata or audit chain)
  8  drift found (`secret drift`: a target differs from the vault)
  126, 127  `secret run`: the command cannot be run / is not found

Environment:
  SECRET_VAULT          vault file, or postgres://USER@HOST/DB (default: $XDG_DATA_HOME/secret/vault.db)
  SECRET_IDENTITY_FILE  age identity file (default: $XDG_CONFIG_HOME/secret/identity.txt)
  SECRET_IDENTITY       the AGE-SECRET-KEY-1... text itself
  SECRET_PASSPHRASE     passphrase of a passphrase-protected vault
  SECRET_ADDR           remote mode: the `secret serve` to use instead of a vault file
  SECRET_TOKEN          remote mode: the API token (or SECRET_TOKEN_FILE, --token-file)
  SECRET_CA_FILE        remote mode: PEM certificate of a private CA that signed the server's";

#[derive(Debug, Parser)]
#[command(
    name = "secret",
    version,
    about = "A self-hosted secrets vault: encrypted, versioned, audited.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Vault file, or a postgres:// URL of a PostgreSQL database.
    #[arg(long, global = true, env = "SECRET_VAULT", value_name = "PATH|URL")]
    pub vault: Option<PathBuf>,
    /// age identity file that unlocks the vault.
    #[arg(long, global = true, env = "SECRET_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print only what was asked for (values, JSON); no confirmations.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Policy directory (default ./policies).
    #[arg(long, global = true, env = "SECRET_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,
    // The remote-mode flags go before the command (`secret --addr URL get X`): global
    // flags are copied into every subcommand on each start, which cost a local
    // `secret get` ~110,000 instructions (4%) for three of them (BENCHMARKS.md).
    /// Remote mode: use this `secret serve` instead of a vault file (default: SECRET_ADDR).
    #[arg(long, value_name = "URL")]
    pub addr: Option<String>,
    /// Remote mode: file holding the API token (default: SECRET_TOKEN_FILE, else SECRET_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Remote mode: PEM certificate of the CA that signed the server's (default: SECRET_CA_FILE).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a vault (and an identity, if none exists and no --recipient/--passphrase is given).
    Init {
        /// Also wrap the vault key to a passphrase (SECRET_PASSPHRASE, else asked twice).
        #[arg(long)]
        passphrase: bool,
        /// Also wrap the vault key to this age recipient (age1...). Repeatable.
        #[arg(long = "recipient", value_name = "AGE_RECIPIENT")]
        recipients: Vec<String>,
    },
    /// Store a new version of a secret. The value comes from stdin, never from argv.
    Set(SetArgs),
    /// Print a secret's value (no trailing newline when stdout is not a terminal).
    Get {
        name: String,
        /// A specific version.
        #[arg(long, conflicts_with = "previous",
              value_parser = clap::value_parser!(u64).range(1..=usage::MAX_VERSION))]
        version: Option<u64>,
        /// The version before the current one.
        #[arg(long)]
        previous: bool,
        /// Print {"name","version","created_at","value"}.
        #[arg(long)]
        json: bool,
    },
    /// List secrets: names, versions, ages. Never values.
    List {
        #[arg(long)]
        json: bool,
        /// Include soft-deleted secrets.
        #[arg(long)]
        all: bool,
    },
    /// Show a secret's versions and labels. Never values.
    History {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Soft-delete a secret (hidden until `undelete`).
    Delete { name: String },
    /// Restore a soft-deleted secret.
    Undelete { name: String },
    /// Wipe the ciphertext of one version for good.
    Destroy {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=usage::MAX_VERSION))]
        version: u64,
    },
    /// Read the audit log, or verify / export it.
    Audit(AuditArgs),
    /// Rotate secrets now: mint, push to their targets, verify, then finish or roll back.
    Rotate(RotateArgs),
    /// Rotation runs, their steps and outcome.
    Rotations {
        name: Option<String>,
        #[arg(long)]
        json: bool,
        /// Show at most N runs.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// What would rotate when, and where each value goes.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Policies: validate them.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// API tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the HTTP API and the rotation scheduler until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Import a dotenv or JSON file: every secret or none, one audited `set` each.
    Import(daily::ImportArgs),
    /// Print current values as dotenv, JSON or shell (asks --force on a terminal).
    Export(daily::ExportArgs),
    /// Run a command with the current values in its environment (it replaces this process).
    Run(daily::RunArgs),
    /// Print a shell completion script: `secret completions bash > /etc/bash_completion.d/secret`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `secret man > /usr/local/share/man/man1/secret.1`.
    Man,
    /// Write an age-encrypted, consistent snapshot of the vault to FILE (`-`: stdout).
    Backup(BackupArgs),
    /// Replace the vault with a proven backup (the replaced vault is kept aside).
    ///
    /// The backup is proven first: its vault key unwraps with your identity, its audit
    /// chain verifies, every ciphertext opens. Until then nothing changes.
    Restore(RestoreArgs),
    /// Who can unlock the vault: list, add or remove age recipients.
    Recipients {
        #[command(subcommand)]
        command: RecipientsCommand,
    },
    /// Add or remove the passphrase copy of the vault key.
    Passphrase {
        #[command(subcommand)]
        command: PassphraseCommand,
    },
    /// Replace the vault key: every version re-encrypted, API tokens revoked.
    ///
    /// One transaction: a crash leaves the old key or the new one in force. The audit
    /// chain stays verifiable across the change (the retired audit key is kept sealed).
    Rekey,
    /// Compare what each target holds with the vault, by fingerprint (never values).
    /// Exit 8 when a variable differs, is missing or should not be there.
    Drift(DriftArgs),
    /// Move the vault between stores: `secret store copy --to PATH|URL`.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// JSON: an array with one object per finding (with --fix: {"found","fixed","after"}).
    #[arg(long)]
    pub json: bool,
    /// Push the vault's values where a target drifted (one upsert and one deploy per
    /// service, one write per dotenv file), then check again.
    #[arg(long)]
    pub fix: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8200", value_name = "ADDR")]
    pub listen: String,
    /// Serve the API only; no rotations run from this process.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Time between scheduler passes.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub tick: std::time::Duration,
    /// On SIGTERM, how long to wait for a rotation pass in progress before exiting
    /// anyway (what it leaves is resumed at the next start).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Behind one trusted proxy (Railway's edge): take each client's address from the
    /// last entry of X-Forwarded-For, for the audit log and the failed-auth brake.
    #[arg(long)]
    pub trust_forwarded_for: bool,
    /// Write an age-encrypted backup into DIR every --backup-every (as `secret backup`).
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Time between scheduled backups.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, requires = "backup_dir")]
    pub backup_every: std::time::Duration,
    /// How many scheduled backups to keep in --backup-dir (the oldest go first).
    #[arg(long, default_value_t = 7, value_name = "N", requires = "backup_dir",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
    /// Time between drift checks of the targets (secret_drift in /metrics); 0 turns
    /// them off. Run by the scheduler that holds the lease.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub drift_every: std::time::Duration,
    /// Open connections at most; past it, the connection idle longest is closed.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A request's headers must arrive whole within this.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// A connection with no request in flight is closed after this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// A request, body included, must be answered within this (else 408).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// This instance's name in /readyz and /metrics (default: RAILWAY_REPLICA_ID, else
    /// hostname:pid).
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        name: String,
        /// admin, secrets:list, secrets:read:GLOB, secrets:write:GLOB, secrets:delete:GLOB,
        /// rotate:GLOB, audit:read
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime (e.g. 30d); none by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["names", "due"])))]
pub struct RotateArgs {
    /// Secrets to rotate.
    pub names: Vec<String>,
    /// Everything due: interrupted rotations, ended graces, secrets past their schedule.
    #[arg(long)]
    pub due: bool,
    /// Print exactly what would be minted, pushed where and revoked when; contact nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policies and report every problem at once (file, table, key).
    Check { dir: Option<PathBuf> },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub name: String,
    /// Compare-and-set: fail (exit 4) unless the current version is N (0 = create only).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=usage::MAX_VERSION))]
    pub if_version: Option<u64>,
    /// Generate a random value with the system RNG instead of reading stdin.
    #[arg(long)]
    pub generate: bool,
    /// Length of a generated value.
    #[arg(long, requires = "generate", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_VALUE_BYTES as i64))]
    pub length: u32,
    /// Characters of a generated value.
    #[arg(long, requires = "generate", value_enum, default_value_t = CharsetArg::Alnum)]
    pub charset: CharsetArg,
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Accept an empty value.
    #[arg(long)]
    pub allow_empty: bool,
    /// Keep stdin byte for byte (by default one trailing newline is removed).
    #[arg(long)]
    pub raw: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CharsetArg {
    Alnum,
    Hex,
    Base64url,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only entries about this secret.
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Only this action (`get`, `set`, ...; `audit` matches `audit.*`).
    #[arg(long, value_name = "A")]
    pub action: Option<String>,
    /// Only this actor (`alice`, `user:alice`, `token:ID`, `scheduler`).
    #[arg(long, value_name = "X")]
    pub actor: Option<String>,
    /// Only entries at or after T: a date (2026-11-01), an RFC 3339 time, or an age (7d, 12h).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Only the newest N matching entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain; print the entry count and the head as SEQ:MAC. Exit 7 if broken.
    Verify {
        /// A head noted earlier: fail if that entry is gone or differs.
        #[arg(long, value_name = "SEQ:MAC")]
        expect_head: Option<ExpectedHead>,
    },
    /// Write every entry to FILE as JSON lines (mode 0600).
    Export { file: PathBuf },
}

/// Runs one parsed command in `env`.
pub fn run(cli: Cli, env: Environment) -> Result<(), VaultError> {
    let ctx = Context::new(&cli, env);
    match cli.command {
        Command::Init {
            passphrase,
            recipients,
        } => init(&ctx, passphrase, recipients),
        Command::Set(args) => set(&ctx, args),
        Command::Get {
            name,
            version,
            previous,
            json,
        } => get(&ctx, &name, version, previous, json),
        Command::List { json, all } => list(&ctx, json, all),
        Command::History { name, json } => history(&ctx, &name, json),
        Command::Delete { name } => {
            let changed = ctx.backend()?.delete(&name)?;
            ctx.say(if changed {
                format!("deleted {name} (`secret undelete {name}` restores it)")
            } else {
                format!("{name} was already deleted")
            })
        }
        Command::Undelete { name } => {
            let changed = ctx.open()?.undelete(&name)?;
            ctx.say(if changed {
                format!("restored {name}")
            } else {
                format!("{name} was not deleted")
            })
        }
        Command::Destroy { name, version } => {
            let number = VersionNumber::new(version).ok_or_else(|| {
                VaultError::Usage(format!(
                    "a version is a number from 1 to {}",
                    usage::MAX_VERSION
                ))
            })?;
            let changed = ctx.open()?.destroy(&name, number)?;
            ctx.say(if changed {
                format!("destroyed version {version} of {name}")
            } else {
                format!("version {version} of {name} was already destroyed")
            })
        }
        Command::Audit(args) => audit_command(&ctx, args),
        Command::Rotate(args) => rotation::rotate(&ctx, args),
        Command::Rotations { name, json, limit } => rotation::rotations(&ctx, name, json, limit),
        Command::Plan { json } => rotation::plan(&ctx, json),
        Command::Policy {
            command: PolicyCommand::Check { dir },
        } => rotation::policy_check(&ctx, dir),
        Command::Token { command } => token_command(&ctx, command),
        Command::Serve(args) => serve(&ctx, args),
        Command::Import(args) => daily::import(&ctx, args),
        Command::Export(args) => daily::export(&ctx, args),
        Command::Run(args) => daily::run(&ctx, args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "secret", &mut out);
            stdout_result(io::stdout().write_all(&out))
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(io_error("cannot render the manual page"))?;
            stdout_result(io::stdout().write_all(&out))
        }
        Command::Backup(args) => keys::backup(&ctx, args),
        Command::Restore(args) => keys::restore(&ctx, args),
        Command::Recipients { command } => keys::recipients(&ctx, command),
        Command::Passphrase { command } => keys::passphrase(&ctx, command),
        Command::Rekey => keys::rekey(&ctx),
        Command::Drift(args) => drift::drift(&ctx, args),
        Command::Store { command } => copy::store(&ctx, command),
    }
}

/// `secret serve`: loads the policies, then serves until SIGTERM or SIGINT.
fn serve(ctx: &Context, args: ServeArgs) -> Result<(), VaultError> {
    let policies = if ctx.policies_dir.exists() {
        secret_core::policy::load_dir(&ctx.policies_dir).map_err(|report| {
            VaultError::Usage(format!(
                "the policies in {} have problems:\n{report}",
                ctx.policies_dir.display()
            ))
        })?
    } else {
        eprintln!(
            "warning: no policy directory at {}: serving the API only, nothing will rotate",
            ctx.policies_dir.display()
        );
        secret_core::policy::PolicySet::default()
    };
    if args.backup_dir.is_some() && args.backup_every < std::time::Duration::from_secs(1) {
        return Err(VaultError::Usage(format!(
            "--backup-every {:?} is too short: give at least 1s (24h is the default)",
            args.backup_every
        )));
    }
    let scheduler = (!args.no_scheduler).then(|| SchedulerOptions {
        tick: args.tick,
        lease_ttl: args.tick,
        drift_every: (!args.drift_every.is_zero()).then_some(args.drift_every),
        engine: rotation::engine_options(ctx, secret_rotation::Trigger::Scheduler),
        ..Default::default()
    });
    let command = ServeCommand {
        listen: args.listen,
        vault_path: match &ctx.vault {
            VaultAt::File(path) => Some(path.clone()),
            VaultAt::Postgres(_) => None,
        },
        options: ServeOptions {
            scheduler,
            shutdown_grace: args.shutdown_grace,
            trust_forwarded_for: args.trust_forwarded_for,
            backup: args.backup_dir.map(|dir| BackupOptions {
                dir,
                every: args.backup_every,
                keep: args.backup_keep as usize,
                passphrase: ctx.env.passphrase.clone(),
                scrypt_log_n: ctx.env.scrypt_log_n,
            }),
            limits: secret_server::connections::ConnectionLimits {
                max_connections: args.max_connections as usize,
                header_read_timeout: args.header_timeout,
                idle_timeout: args.idle_timeout,
                request_timeout: args.request_timeout,
            },
            instance: args
                .instance_id
                .unwrap_or_else(|| ctx.env.default_instance_id()),
        },
    };
    run_until_signal(command, policies, || ctx.open())
}

/// Where the vault is: a SQLite file (a path), or a PostgreSQL database (a
/// `postgres://` or `postgresql://` URL, checked when it is opened).
#[derive(Clone, Debug)]
pub(crate) enum VaultAt {
    File(PathBuf),
    Postgres(String),
}

impl VaultAt {
    /// A value meant as a URL (it starts with `postgres:`) is never taken for a path,
    /// so a mistyped URL is an error, not a folder named `postgres:`.
    fn from_arg(arg: PathBuf) -> Self {
        match arg.to_str() {
            Some(text) if is_postgres_url(text) => VaultAt::Postgres(text.to_string()),
            _ => VaultAt::File(arg),
        }
    }

    /// For messages: the path, or the URL without its password.
    pub(crate) fn shown(&self) -> String {
        match self {
            VaultAt::File(path) => path.display().to_string(),
            VaultAt::Postgres(url) => secret_store_postgres::redact(url),
        }
    }
}

/// Where things are, resolved once from flags, environment and XDG defaults.
pub struct Context {
    pub(crate) vault: VaultAt,
    identity_flag: Option<PathBuf>,
    pub(crate) quiet: bool,
    pub(crate) actor: Actor,
    pub(crate) policies_dir: PathBuf,
    pub(crate) env: Environment,
    /// The one clock every command reads.
    pub(crate) clock: Clock,
    /// Remote mode, when `--addr` or `SECRET_ADDR` names a server.
    remote: Option<remote::Settings>,
}

fn os_user(env: &Environment) -> String {
    if let Some(name) = &env.user {
        return name.clone();
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    passwd_name(uid).unwrap_or_else(|| format!("uid{uid}"))
}

/// The login name of `uid` from the password database.
fn passwd_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf.len()` is
    // the size of `buf`; on success `pw_name` points into `buf`, which outlives its use.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str()
        .ok()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

pub(crate) fn io_error(what: &str) -> impl Fn(io::Error) -> VaultError + '_ {
    move |e| VaultError::Io(format!("{what}: {e}"))
}

/// Output errors: a closed pipe (`secret audit --json | head`) ends output quietly.
pub(crate) fn stdout_result(result: io::Result<()>) -> Result<(), VaultError> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(io_error("cannot write to stdout")),
    }
}

impl Context {
    fn new(cli: &Cli, env: Environment) -> Self {
        let vault = VaultAt::from_arg(
            cli.vault
                .clone()
                .unwrap_or_else(|| env.default_vault_path()),
        );
        let request_id = crypto::random_array::<8>()
            .map(|b| crypto::hex(&b))
            .unwrap_or_default();
        let remote = remote::Settings::resolve(
            cli.addr.as_deref(),
            cli.token_file.as_deref(),
            cli.ca_file.as_deref(),
            &env,
        );
        Self {
            remote,
            vault,
            identity_flag: cli.identity.clone(),
            quiet: cli.quiet,
            policies_dir: cli
                .policies
                .clone()
                .unwrap_or_else(|| PathBuf::from("policies")),
            actor: Actor {
                name: format!("user:{}", os_user(&env)),
                pid: Some(std::process::id()),
                request_id,
            },
            env,
            clock: Clock::System,
        }
    }

    /// Prints a confirmation unless `--quiet`.
    pub(crate) fn say(&self, line: String) -> Result<(), VaultError> {
        if !self.quiet {
            println!("{line}");
        }
        Ok(())
    }

    /// Identities from `--identity`/`SECRET_IDENTITY_FILE`, `SECRET_IDENTITY`, or the default file.
    pub(crate) fn identities(&self) -> Result<Option<Identities>, VaultError> {
        if let Some(path) = &self.identity_flag {
            return load_identity_file(path).map(Some);
        }
        if let Some(text) = &self.env.identity_text {
            return Identities::parse(text).map(Some).map_err(|e| {
                VaultError::Locked(format!("SECRET_IDENTITY is not an age identity: {e}"))
            });
        }
        let default = self.env.default_identity_path();
        if default.exists() {
            return load_identity_file(&default).map(Some);
        }
        Ok(None)
    }

    fn identity_hint(&self) -> String {
        format!(
            "pass --identity FILE, set SECRET_IDENTITY_FILE or SECRET_IDENTITY, or create {}",
            self.env.default_identity_path().display()
        )
    }

    /// What the caller brings to unlock: identities, and a passphrase asked only if needed.
    pub(crate) fn unlocker(&self) -> Result<Unlocker, VaultError> {
        Ok(Unlocker {
            identities: self.identities()?,
            passphrase: Some({
                let from_env = self.env.passphrase.clone();
                Box::new(move || ask_passphrase(from_env, false))
            }),
            identity_hint: self.identity_hint(),
        })
    }

    /// Where the commands that work in both modes read and write: the vault file, or
    /// in remote mode the server (connected only then).
    pub(crate) fn backend(&self) -> Result<backend::Backend, VaultError> {
        match &self.remote {
            Some(settings) => Ok(backend::Backend::Remote(remote::Client::connect(
                settings, &self.env,
            )?)),
            None => self.open().map(backend::Backend::Local),
        }
    }

    /// The server, in remote mode.
    pub(crate) fn remote_client(&self) -> Result<Option<remote::Client>, VaultError> {
        self.remote
            .as_ref()
            .map(|settings| remote::Client::connect(settings, &self.env))
            .transpose()
    }

    /// Refuses, in remote mode, a command that works on a vault file only.
    pub(crate) fn local_only(&self) -> Result<(), VaultError> {
        match self.remote {
            Some(_) => Err(VaultError::Usage(
                "this command works on a vault file only, and remote mode is on (SECRET_ADDR \
                 or --addr is set); remote mode covers get, set, list, history, delete, rotate, \
                 rotations, audit, export and run: unset SECRET_ADDR to use a vault file"
                    .into(),
            )),
            None => Ok(()),
        }
    }

    /// Opens the local vault, a file or a PostgreSQL database (refused in remote mode).
    pub(crate) fn open(&self) -> Result<Vault, VaultError> {
        self.local_only()?;
        match &self.vault {
            VaultAt::File(path) => {
                if !path.exists() {
                    return Err(VaultError::NoVault(path.display().to_string()));
                }
                Vault::open(path, self.unlocker()?, self.actor.clone())
            }
            VaultAt::Postgres(url) => {
                let store = PgStore::open(url)?;
                Vault::open_in(
                    store,
                    self.unlocker()?,
                    self.actor.clone(),
                    self.clock.clone(),
                )
            }
        }
    }

    /// Whether there may be a vault to open: a file that exists, or any database.
    pub(crate) fn vault_may_exist(&self) -> bool {
        match &self.vault {
            VaultAt::File(path) => path.exists(),
            VaultAt::Postgres(_) => true,
        }
    }
}

fn load_identity_file(path: &Path) -> Result<Identities, VaultError> {
    let meta = fs::metadata(path).map_err(|e| {
        VaultError::Locked(format!("cannot read identity file {}: {e}", path.display()))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "warning: identity file {} is readable by others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| {
        VaultError::Locked(format!("cannot read identity file {}: {e}", path.display()))
    })?);
    Identities::parse(&SecretString::from(text.as_str().to_string())).map_err(|e| {
        VaultError::Locked(format!(
            "{} is not an age identity file: {e}",
            path.display()
        ))
    })
}

/// The passphrase from `SECRET_PASSPHRASE`, else asked on the terminal without echo.
pub(crate) fn ask_passphrase(
    from_env: Option<SecretString>,
    confirm: bool,
) -> Result<SecretString, String> {
    if let Some(p) = from_env {
        return Ok(p);
    }
    let no_tty =
        |e: io::Error| format!("no passphrase: set SECRET_PASSPHRASE or run on a terminal ({e})");
    let first = Zeroizing::new(rpassword::prompt_password("vault passphrase: ").map_err(no_tty)?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("again: ").map_err(no_tty)?);
        if *first != *again {
            return Err("the passphrases differ".into());
        }
    }
    if first.is_empty() {
        return Err("the passphrase is empty".into());
    }
    Ok(SecretString::from(first.as_str().to_string()))
}

fn init(ctx: &Context, passphrase: bool, extra_recipients: Vec<String>) -> Result<(), VaultError> {
    ctx.local_only()?;
    match &ctx.vault {
        VaultAt::File(path) if path.exists() => {
            return Err(VaultError::VaultExists(path.display().to_string()));
        }
        VaultAt::File(_) => {}
        // A URL that does not parse is refused before an identity is made for it.
        VaultAt::Postgres(url) => drop(PgLocation::parse(url)?),
    }
    for r in &extra_recipients {
        crypto::canonical_recipient(r).map_err(|e| VaultError::Usage(e.to_string()))?;
    }
    let mut recipients = Vec::new();
    let mut created_identity = None;
    // A named identity file that does not exist yet is where a new identity goes.
    let named_but_absent = ctx.identity_flag.as_ref().is_some_and(|p| !p.exists());
    let existing = if named_but_absent {
        Ok(None)
    } else {
        ctx.identities()
    };
    match existing {
        Ok(Some(ids)) => recipients.extend(ids.recipients()),
        Ok(None) if extra_recipients.is_empty() && !passphrase => {
            let path = ctx
                .identity_flag
                .clone()
                .unwrap_or_else(|| ctx.env.default_identity_path());
            let generated = crypto::generate_identity(&rfc3339(ctx.clock.now_ms(), false));
            write_private_file(&path, generated.file_text.expose_secret().as_bytes(), false)?;
            recipients.push(generated.recipient.clone());
            created_identity = Some((path, generated.recipient));
        }
        Ok(None) => {}
        // An identity was named but cannot be read: do not silently make another.
        Err(e) => return Err(e),
    }
    recipients.extend(extra_recipients);
    recipients.dedup();
    let passphrase = if passphrase {
        Some(ask_passphrase(ctx.env.passphrase.clone(), true).map_err(VaultError::Usage)?)
    } else {
        None
    };
    let scrypt_log_n = ctx.env.scrypt_log_n;
    let options = InitOptions {
        recipients: recipients.clone(),
        passphrase,
        scrypt_log_n,
    };
    let made = match &ctx.vault {
        VaultAt::File(path) => Vault::init(path, options, ctx.actor.clone()),
        VaultAt::Postgres(url) => Vault::init_in(
            || PgStore::create(url),
            options,
            ctx.actor.clone(),
            ctx.clock.clone(),
        ),
    };
    if let Err(e) = made {
        if let Some((path, _)) = &created_identity {
            let _ = fs::remove_file(path);
        }
        return Err(e);
    }
    ctx.say(format!("created vault {}", ctx.vault.shown()))?;
    if let Some((path, recipient)) = created_identity {
        ctx.say(format!(
            "created identity {} (public key {recipient})",
            path.display()
        ))?;
        ctx.say("back it up: without it the vault cannot be opened".into())?;
    }
    for r in &recipients {
        ctx.say(format!("recipient {r}"))?;
    }
    Ok(())
}

/// Writes a file readable only by its owner, creating private parent folders, through
/// an exclusively created temporary file renamed into place (`private_file`).
/// `replace`: an existing file (or a symlink in its place) is replaced; otherwise an
/// existing name is refused.
fn write_private_file(path: &Path, contents: &[u8], replace: bool) -> Result<(), VaultError> {
    private_file::write(path, contents, replace).map_err(|e| VaultError::Io(e.to_string()))
}

/// Reads a value from stdin: asked without echo on a terminal, else read to EOF
/// (bounded). One trailing newline is removed unless `raw`.
fn read_value(name: &str, raw: bool, allow_empty: bool) -> Result<SecretValue, InputError> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!("value for {name}: "))
                .map_err(|e| InputError::Other(format!("cannot read the value: {e}")))?,
        );
        return SecretValue::from_bytes(Zeroizing::new(typed.as_bytes().to_vec()), allow_empty);
    }
    // Room for the limit plus a trailing CRLF, allocated once so no copy is left behind.
    let cap = MAX_VALUE_BYTES + 3;
    let mut buf = Zeroizing::new(Vec::with_capacity(cap));
    stdin
        .lock()
        .take(cap as u64)
        .read_to_end(&mut buf)
        .map_err(|e| InputError::Other(format!("cannot read stdin: {e}")))?;
    if !raw {
        let len = buf.len();
        if buf.ends_with(b"\r\n") {
            buf.truncate(len - 2);
        } else if buf.ends_with(b"\n") {
            buf.truncate(len - 1);
        }
    }
    SecretValue::from_bytes(buf, allow_empty)
}

fn set(ctx: &Context, args: SetArgs) -> Result<(), VaultError> {
    let mut backend = ctx.backend()?;
    let value = if args.generate {
        let charset = match args.charset {
            CharsetArg::Alnum => Charset::Alnum,
            CharsetArg::Hex => Charset::Hex,
            CharsetArg::Base64url => Charset::Base64Url,
        };
        remote::NewValue::Generate {
            charset,
            length: args.length,
        }
    } else {
        remote::NewValue::Given {
            value: read_value(&args.name, args.raw, args.allow_empty),
            allow_empty: args.allow_empty,
        }
    };
    let options = SetOptions {
        if_version: args.if_version,
        description: args.description,
        generated: args.generate,
    };
    let version = backend.set(&args.name, value, &options)?;
    ctx.say(format!("{}: version {version} is current", args.name))
}

fn get(
    ctx: &Context,
    name: &str,
    version: Option<u64>,
    previous: bool,
    json: bool,
) -> Result<(), VaultError> {
    let selector = match (version, previous) {
        (Some(v), _) => VersionSelector::Number(VersionNumber::new(v).ok_or_else(|| {
            VaultError::Usage(format!(
                "a version is a number from 1 to {}",
                usage::MAX_VERSION
            ))
        })?),
        (None, true) => VersionSelector::Label(Label::Previous),
        (None, false) => VersionSelector::Label(Label::Current),
    };
    let revealed = ctx.backend()?.get(name, selector)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            name: &'a str,
            version: u64,
            created_at: String,
            value: &'a str,
        }
        let text = Zeroizing::new(
            serde_json::to_string(&Shown {
                name: revealed.name.as_str(),
                version: revealed.version.get(),
                created_at: rfc3339(revealed.created_at_ms, true),
                value: revealed.value.expose(),
            })
            .map_err(|e| VaultError::Io(e.to_string()))?,
        );
        stdout_result(
            out.write_all(text.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush()),
        )
    } else {
        let newline: &[u8] = if stdout.is_terminal() { b"\n" } else { b"" };
        stdout_result(
            out.write_all(revealed.value.expose().as_bytes())
                .and_then(|_| out.write_all(newline))
                .and_then(|_| out.flush()),
        )
    }
}

fn list(ctx: &Context, json: bool, all: bool) -> Result<(), VaultError> {
    let secrets = ctx.backend()?.list(all)?;
    if json {
        let rows: Vec<_> = secrets
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "version": s.current_version,
                    "latest_version": s.latest_version,
                    "versions": s.live_versions,
                    "description": s.description,
                    "created_at": rfc3339(s.created_at_ms, true),
                    "updated_at": rfc3339(s.updated_at_ms, true),
                    "deleted": s.deleted_at_ms.is_some(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    let now = ctx.clock.now_ms();
    let mut table = Table::new(&[
        "NAME",
        "VERSION",
        "VERSIONS",
        "UPDATED",
        "STATE",
        "DESCRIPTION",
    ]);
    for s in &secrets {
        table.row(vec![
            s.name.clone(),
            s.current_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            s.live_versions.to_string(),
            age(now, s.updated_at_ms),
            if s.deleted_at_ms.is_some() {
                "deleted".into()
            } else {
                "active".into()
            },
            s.description.clone().unwrap_or_default(),
        ]);
    }
    table.print(ctx.quiet && secrets.is_empty());
    Ok(())
}

fn history(ctx: &Context, name: &str, json: bool) -> Result<(), VaultError> {
    let backend::History {
        name: row_name,
        description,
        deleted_at_ms,
        versions,
    } = ctx.backend()?.history(name)?;
    if json {
        let rows: Vec<_> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "version": v.version,
                    "labels": v.labels,
                    "created_at": rfc3339(v.created_at_ms, true),
                    "destroyed": v.destroyed_at_ms.is_some(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "name": row_name,
                "deleted": deleted_at_ms.is_some(),
                "description": description,
                "versions": rows,
            })
        );
        return Ok(());
    }
    if deleted_at_ms.is_some() && !ctx.quiet {
        println!("{name} is deleted (`secret undelete {name}` restores it)");
    }
    let mut table = Table::new(&["VERSION", "LABELS", "CREATED", "STATE"]);
    for v in versions.iter().rev() {
        table.row(vec![
            v.version.to_string(),
            if v.labels.is_empty() {
                "-".into()
            } else {
                v.labels.join(",")
            },
            rfc3339(v.created_at_ms, false),
            if v.destroyed_at_ms.is_some() {
                "destroyed".into()
            } else {
                "active".into()
            },
        ]);
    }
    table.print(false);
    Ok(())
}

fn audit_command(ctx: &Context, args: AuditArgs) -> Result<(), VaultError> {
    match args.command {
        Some(AuditCommand::Verify { expect_head }) => {
            let report = ctx.open()?.audit_verify(expect_head)?;
            ctx.say(format!(
                "audit chain intact: {} entries verified (this check is entry {}); \
                 metadata intact: {} secrets, {} tokens",
                report.verified,
                report.verified + 1,
                report.secrets,
                report.tokens
            ))?;
            println!("head: {}", report.head);
            Ok(())
        }
        Some(AuditCommand::Export { file }) => {
            let entries = ctx
                .open()?
                .audit_entries(&AuditFilter::default(), Action::AuditExport)?;
            let mut text = String::new();
            for e in &entries {
                text.push_str(&entry_json(e).to_string());
                text.push('\n');
            }
            write_private_file(&file, text.as_bytes(), true)?;
            ctx.say(format!(
                "exported {} entries to {}",
                entries.len(),
                file.display()
            ))
        }
        None => {
            // A name that is not one is refused before it reaches the log's details.
            if let Some(name) = &args.secret {
                secret_core::model::SecretName::new(name)?;
            }
            let filter = AuditFilter {
                secret: args.secret,
                action: args.action,
                actor: args.actor,
                since_ms: args
                    .since
                    .as_deref()
                    .map(|t| parse_since(t, ctx.clock.now_ms()))
                    .transpose()?,
                before_seq: None,
                limit: args.limit,
            };
            let entries = ctx.backend()?.audit_entries(&filter)?;
            if args.json {
                let stdout = io::stdout();
                let mut out = stdout.lock();
                return stdout_result(
                    entries
                        .iter()
                        .try_for_each(|e| writeln!(out, "{}", entry_json(e))),
                );
            }
            let mut table = Table::new(&[
                "SEQ", "TIME", "ACTOR", "ACTION", "SECRET", "VERSION", "OUTCOME",
            ]);
            for e in &entries {
                table.row(vec![
                    e.seq.to_string(),
                    rfc3339(e.at_ms, false),
                    match e.pid {
                        Some(pid) => format!("{} ({pid})", e.actor),
                        None => e.actor.clone(),
                    },
                    e.action.clone(),
                    e.secret.clone().unwrap_or_else(|| "-".into()),
                    e.version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    e.outcome.clone(),
                ]);
            }
            table.print(false);
            Ok(())
        }
    }
}

fn token_command(ctx: &Context, command: TokenCommand) -> Result<(), VaultError> {
    let mut vault = ctx.open()?;
    match command {
        TokenCommand::Create { name, scopes, ttl } => {
            let (row, token) = vault.create_token(&name, &scopes, ttl)?;
            if !ctx.quiet {
                eprintln!(
                    "created token {} ({}) with scopes {}{}; it is shown once:",
                    row.id,
                    row.name,
                    row.scopes.join(" "),
                    row.expires_at_ms
                        .map(|t| format!(", expiring {}", rfc3339(t, false)))
                        .unwrap_or_default()
                );
            }
            let stdout = io::stdout();
            let mut out = stdout.lock();
            stdout_result(
                out.write_all(token.expose_secret().as_bytes())
                    .and_then(|_| out.write_all(b"\n")),
            )
        }
        TokenCommand::List { json } => {
            let tokens = vault.tokens()?;
            let now = ctx.clock.now_ms();
            let rows: Vec<serde_json::Value> = tokens
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "id": t.id, "name": t.name, "scopes": t.scopes,
                        "created_at": rfc3339(t.created_at_ms, true),
                        "expires_at": t.expires_at_ms.map(|x| rfc3339(x, true)),
                        "revoked_at": t.revoked_at_ms.map(|x| rfc3339(x, true)),
                        "last_used_at": t.last_used_at_ms.map(|x| rfc3339(x, true)),
                        "state": if t.revoked_at_ms.is_some() { "revoked" }
                                 else if t.expires_at_ms.is_some_and(|x| x <= now) { "expired" }
                                 else { "active" },
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
                return Ok(());
            }
            let mut table = Table::new(&["ID", "NAME", "STATE", "SCOPES", "LAST USED"]);
            for (t, r) in tokens.iter().zip(&rows) {
                table.row(vec![
                    t.id.clone(),
                    t.name.clone(),
                    r["state"].as_str().unwrap_or("").into(),
                    t.scopes.join(" "),
                    t.last_used_at_ms
                        .map(|x| age(now, x))
                        .unwrap_or_else(|| "never".into()),
                ]);
            }
            table.print(false);
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            let changed = vault.revoke_token(&id)?;
            ctx.say(if changed {
                format!("revoked {id}")
            } else {
                format!("{id} was already revoked")
            })
        }
    }
}

/// `--since`: a date, an RFC 3339 time, or an age such as `7d`.
fn parse_since(text: &str, now_ms: i64) -> Result<i64, VaultError> {
    secret_core::audit::parse_since(text, now_ms).ok_or_else(|| {
        VaultError::Usage(format!(
            "--since {text:?}: expected {}",
            secret_core::audit::SINCE_FORMS
        ))
    })
}

/// A plain aligned table for terminals.
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn print(&self, skip_header: bool) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  "));
                }
            }
            s.trim_end().to_string()
        };
        let stdout = io::stdout();
        let mut out = stdout.lock();
        if !skip_header {
            let _ = writeln!(out, "{}", line(&self.header));
        }
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn since_accepts_dates_times_and_ages() {
        assert_eq!(parse_since("2026-11-01", NOW).unwrap(), 1_793_491_200_000);
        assert_eq!(
            parse_since("2026-11-01T00:00:01Z", NOW).unwrap(),
            1_793_491_201_000
        );
        let week = parse_since("7d", NOW).unwrap();
        assert_eq!(week, NOW - 7 * 86_400_000);
        assert!(parse_since("last tuesday", NOW).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
