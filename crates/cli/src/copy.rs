//! `secret store copy --to PATH|URL`: the vault this command points at (`--vault`,
//! `SECRET_VAULT`), with everything in it, into a new SQLite file or an empty
//! PostgreSQL database or schema, proven there before it counts (see
//! `secret_core::vault::Vault::copy_to`).
//!
//! The destination is checked first — it must not be the source and must hold
//! nothing — before the source is unlocked; the progress bar is drawn here, on a
//! terminal only. URLs are shown without their password.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use secret_core::error::VaultError;
use secret_core::vault::{CopyTarget, Vault};
use secret_store_postgres::PgStore;

use crate::{Context, VaultAt};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the whole vault into a new SQLite file or an empty PostgreSQL database.
    ///
    /// Everything comes along byte for byte (values stay sealed under the same key, so
    /// the same identities open the copy): versions, labels and MACs, keyring and
    /// retired keys, rotations, tokens, leases and the audit log. The source is read in
    /// one snapshot and proven first; the copy is written in one transaction and proven
    /// there (chain, MACs, every ciphertext) before it commits. The destination must
    /// hold nothing (exit 4 otherwise).
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Where the copy goes: a new vault file, or a postgres:// URL of an empty
    /// database or schema.
    #[arg(long, value_name = "PATH|URL")]
    pub to: PathBuf,
}

/// `a/b/../vault.db` and `./a/vault.db` are one file: the folder resolved, the name kept.
fn resolved(path: &Path) -> Option<PathBuf> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(folder.canonicalize().ok()?.join(path.file_name()?))
}

fn same_place(a: &VaultAt, b: &VaultAt) -> bool {
    match (a, b) {
        (VaultAt::File(x), VaultAt::File(y)) => {
            x == y || matches!((resolved(x), resolved(y)), (Some(x), Some(y)) if x == y)
        }
        (VaultAt::Postgres(_), VaultAt::Postgres(_)) => a.shown() == b.shown(),
        _ => false,
    }
}

pub(crate) fn store(ctx: &Context, command: StoreCommand) -> Result<(), VaultError> {
    match command {
        StoreCommand::Copy(args) => copy(ctx, args),
    }
}

fn copy(ctx: &Context, args: CopyArgs) -> Result<(), VaultError> {
    ctx.local_only()?;
    let dest = VaultAt::from_arg(args.to);
    if same_place(&ctx.vault, &dest) {
        return Err(VaultError::Usage(format!(
            "{} is the vault being copied (--vault / SECRET_VAULT); give --to another file or \
             database",
            dest.shown()
        )));
    }
    // The destination first: nothing there, reachable — before unlocking the source.
    let target = match &dest {
        VaultAt::File(path) => {
            Vault::check_copy_file(path)?;
            CopyTarget::File(path)
        }
        VaultAt::Postgres(url) => CopyTarget::Store(PgStore::blank(url)?),
    };
    let mut vault = ctx.open()?;
    let bar = if io::stderr().is_terminal() && !ctx.quiet {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("copying {bar:40} {pos}/{len} rows ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = vault.copy_to(target, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let count = |table: &str| report.tables.get(table).copied().unwrap_or(0);
    ctx.say(format!(
        "copied {} to {}: {} secrets ({} sealed versions), {} tokens, {} rotations, {} audit \
         entries; {} rows in all",
        ctx.vault.shown(),
        report.to,
        report.secrets,
        report.versions,
        report.tokens,
        count("rotations"),
        count("audit_log"),
        report.rows
    ))?;
    ctx.say(format!(
        "proven there before it was committed: the same rows byte for byte, every ciphertext \
         opens, every metadata MAC holds, the audit chain verifies in all {} key epoch(s) up to \
         {}",
        report.epoch, report.copied_head
    ))?;
    ctx.say(format!(
        "the copy's log goes on with its own store.copied entry (head {}); this vault's log \
         records the copy as store.copy",
        report.destination_head
    ))?;
    ctx.say(format!(
        "use it with --vault {} (or SECRET_VAULT); both now hold the vault and its key, so stop \
         writing to this one: changes made here from now on are not in the copy",
        report.to
    ))
}
