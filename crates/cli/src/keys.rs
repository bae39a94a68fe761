//! The keys-and-recovery commands: `backup`, `restore`, `recipients`, `passphrase`,
//! `rekey`. Each opens the vault (or, for `restore`, hands the unlocker to the vault's
//! restore) and reports what changed and what it means: who could still have the old
//! key, what a rekey did to API tokens, where a replaced vault was kept.
//!
//! The rekey progress bar is drawn here, on a terminal only; the vault reports
//! progress through a callback.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use secret_core::error::VaultError;
use secret_core::vault::{
    BackupEncryption, BackupTarget, DatabaseTarget, RekeyOptions, RestoreOptions, RestoreTarget,
    Vault,
};
use secret_store_postgres::PgStore;

use crate::{ask_passphrase, Context, VaultAt};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (`-`: stdout).
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Encrypt to the vault's passphrase instead of its recipients (the default when
    /// it has no recipients).
    #[arg(long)]
    pub passphrase: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file made by `secret backup`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Restore even a backup older than the vault (later changes are lost), or over a
    /// vault that cannot be read. The replaced vault is kept aside either way.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    /// The age recipients the vault key is wrapped to, and whether a passphrase opens it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Wrap the vault key to one more age recipient (age1...).
    Add {
        #[arg(value_name = "AGE_RECIPIENT")]
        recipient: String,
    },
    /// Re-wrap the vault key without this recipient (then consider `secret rekey`).
    Remove {
        #[arg(value_name = "AGE_RECIPIENT")]
        recipient: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Add a passphrase copy of the vault key (SECRET_PASSPHRASE, else asked twice).
    Add,
    /// Remove the passphrase copy (then consider `secret rekey`).
    Remove,
}

/// Printed after anything that takes a way to unlock away.
const KNEW_THE_KEY: &str = "could unwrap the vault key until now, so it may have kept a copy of \
     the key, and it can still open every backup and copy of the vault file made before now. \
     Run `secret rekey` to replace the key.";

pub(crate) fn backup(ctx: &Context, args: BackupArgs) -> Result<(), VaultError> {
    let to_stdout = args.file == "-";
    if to_stdout && io::stdout().is_terminal() {
        return Err(VaultError::Usage(
            "refusing to write a binary backup to a terminal: redirect stdout, or give a FILE"
                .into(),
        ));
    }
    let mut vault = ctx.open()?;
    let info = vault.keyring_info()?;
    let encryption = if args.passphrase || info.recipients.is_empty() {
        if !info.passphrase {
            return Err(VaultError::Usage(
                "the vault has no passphrase copy of its key to encrypt a backup to; \
                 drop --passphrase to encrypt to its recipients"
                    .into(),
            ));
        }
        BackupEncryption::Passphrase {
            passphrase: ask_passphrase(ctx.env.passphrase.clone(), false)
                .map_err(VaultError::Locked)?,
            scrypt_log_n: ctx.env.scrypt_log_n,
        }
    } else {
        BackupEncryption::Recipients
    };
    let path = PathBuf::from(&args.file);
    let report = if to_stdout {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        vault.backup(BackupTarget::Writer(&mut out), encryption)?
    } else {
        vault.backup(
            BackupTarget::File {
                path: &path,
                overwrite: args.force,
            },
            encryption,
        )?
    };
    if ctx.quiet {
        return Ok(());
    }
    let shown = if to_stdout {
        "stdout".to_string()
    } else {
        path.display().to_string()
    };
    let lines = [
        format!(
            "backed up {} secrets ({} versions) to {shown}: {} bytes, age-encrypted to {}",
            report.secrets,
            report.versions,
            report.bytes,
            if report.passphrase {
                "the vault's passphrase".to_string()
            } else {
                format!("{} recipient(s)", report.recipients.len())
            }
        ),
        format!("it holds the audit log up to entry {}", report.head),
        if report.passphrase {
            "open it with `secret restore FILE`, or `age -d FILE > vault.db` and the passphrase"
                .to_string()
        } else {
            "open it with `secret restore FILE`, or `age -d -i IDENTITY_FILE FILE > vault.db`"
                .to_string()
        },
    ];
    // With the backup on stdout, the report goes to stderr.
    for line in lines {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(())
}

pub(crate) fn restore(ctx: &Context, args: RestoreArgs) -> Result<(), VaultError> {
    ctx.local_only()?;
    let bytes = std::fs::read(&args.file).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            VaultError::NotFound(format!("no backup at {}", args.file.display()))
        }
        _ => VaultError::Io(format!("cannot read {}: {e}", args.file.display())),
    })?;
    let backup_folder = match args.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let target = match &ctx.vault {
        VaultAt::File(path) => RestoreTarget::File(path),
        VaultAt::Postgres(url) => {
            // A database with no vault yet is restored into (as a missing file is).
            let current = match PgStore::open(url) {
                Ok(store) => Some(store),
                Err(VaultError::NoVault(_)) => None,
                Err(e) => return Err(e),
            };
            RestoreTarget::Database(DatabaseTarget {
                current,
                blank: Box::new(move || PgStore::blank(url)),
                folder: &backup_folder,
                location: ctx.vault.shown(),
            })
        }
    };
    let report = Vault::restore(
        target,
        &bytes,
        ctx.unlocker()?,
        RestoreOptions {
            force: args.force,
            source: args.file.display().to_string(),
        },
        ctx.actor.clone(),
        ctx.clock.clone(),
    )?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    ctx.say(format!(
        "restored {} from {}: {} secrets, {} versions; every ciphertext opens and the audit \
         chain verifies up to {} (key epoch {})",
        ctx.vault.shown(),
        args.file.display(),
        report.secrets,
        report.versions,
        report.backup_head,
        report.epoch
    ))?;
    if let Some(aside) = &report.kept_aside {
        let what = match &ctx.vault {
            VaultAt::File(_) => "a plain copy of the vault file",
            VaultAt::Postgres(_) => {
                "a SQLite vault file of the rows the database held: `secret --vault FILE` opens it"
            }
        };
        ctx.say(format!(
            "the vault it replaced is kept at {} ({what}: as sensitive as the vault; delete it \
             once you no longer need it)",
            aside.display()
        ))?;
    }
    Ok(())
}

pub(crate) fn recipients(ctx: &Context, command: RecipientsCommand) -> Result<(), VaultError> {
    let mut vault = ctx.open()?;
    match command {
        RecipientsCommand::List { json } => {
            let info = vault.recipients()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "recipients": info.recipients,
                        "passphrase": info.passphrase,
                        "epoch": info.epoch,
                    })
                );
                return Ok(());
            }
            for r in &info.recipients {
                println!("{r}");
            }
            if !ctx.quiet {
                println!("passphrase: {}", if info.passphrase { "yes" } else { "no" });
                println!("key epoch: {}", info.epoch);
            }
            Ok(())
        }
        RecipientsCommand::Add { recipient } => {
            if vault.add_recipient(&recipient)? {
                let count = vault.keyring_info()?.recipients.len();
                ctx.say(format!(
                    "added recipient {}: the vault key is wrapped to {count} recipient(s)",
                    recipient.trim()
                ))
            } else {
                ctx.say(format!("{} is already a recipient", recipient.trim()))
            }
        }
        RecipientsCommand::Remove { recipient } => {
            vault.remove_recipient(&recipient)?;
            let recipient = recipient.trim();
            ctx.say(format!("removed recipient {recipient}"))?;
            eprintln!("warning: whoever holds the identity of {recipient} {KNEW_THE_KEY}");
            let own = ctx
                .identities()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.recipients().iter().any(|r| r == recipient));
            if own {
                eprintln!(
                    "note: that is the recipient of the identity you used: it no longer opens \
                     this vault"
                );
            }
            Ok(())
        }
    }
}

pub(crate) fn passphrase(ctx: &Context, command: PassphraseCommand) -> Result<(), VaultError> {
    let mut vault = ctx.open()?;
    match command {
        PassphraseCommand::Add => {
            if vault.keyring_info()?.passphrase {
                // Checked again when it is written; this spares asking twice for nothing.
                return Err(VaultError::Conflict(
                    "the vault already has a passphrase; to change it, `secret passphrase \
                     remove` it and add the new one"
                        .into(),
                ));
            }
            let passphrase =
                ask_passphrase(ctx.env.passphrase.clone(), true).map_err(VaultError::Usage)?;
            vault.add_passphrase(&passphrase, ctx.env.scrypt_log_n)?;
            ctx.say("added a passphrase: it unlocks the vault too (scrypt)".into())
        }
        PassphraseCommand::Remove => {
            vault.remove_passphrase()?;
            ctx.say("removed the passphrase".into())?;
            eprintln!("warning: whoever knows the passphrase {KNEW_THE_KEY}");
            Ok(())
        }
    }
}

pub(crate) fn rekey(ctx: &Context) -> Result<(), VaultError> {
    let mut vault = ctx.open()?;
    let passphrase = if vault.keyring_info()?.passphrase {
        Some(ask_passphrase(ctx.env.passphrase.clone(), false).map_err(VaultError::Locked)?)
    } else {
        None
    };
    let bar = if io::stderr().is_terminal() && !ctx.quiet {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "re-encrypting {bar:40} {pos}/{len} versions ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = vault.rekey(
        RekeyOptions {
            passphrase,
            scrypt_log_n: ctx.env.scrypt_log_n,
        },
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    let report = report?;
    ctx.say(format!(
        "rekeyed: a new vault key (key epoch {}) is in force; {} versions re-encrypted; the \
         old key's audit key is kept sealed, so `secret audit verify` covers both",
        report.epoch, report.versions
    ))?;
    if report.tokens_revoked > 0 {
        ctx.say(format!(
            "revoked {} API token(s): their hashes were keyed by the old vault key, so whoever \
             may hold that key could forge one; create new ones with `secret token create`",
            report.tokens_revoked
        ))?;
    }
    ctx.say(
        "backups made before now still open, with the old key: make a new one (`secret backup \
         FILE`); restart a running `secret serve` (it holds the old key and now refuses to write)"
            .into(),
    )
}
