//! Scheduled backups inside `secret serve` (`--backup-dir DIR --backup-every 24h
//! --backup-keep N`): every period, an age-encrypted snapshot of the vault is written
//! to `DIR/secret-backup-<UTC time>.age` (exactly what `secret backup` writes, audited
//! the same way, actor `serve:backup`), and only the newest N are kept.
//!
//! The first backup is due one period after the newest one already in the folder (at
//! once if there is none), so a restarting service neither skips nor piles up
//! backups. `secret_backup_last_success_timestamp_seconds` starts from that newest file
//! and `secret_backup_interval_seconds` carries the period, so an alert can fire when
//! the last success is older than two periods. The work runs on a blocking thread with
//! a vault connection of its own: snapshots never hold up the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::watch;

use crate::metrics::Metrics;
use secret_core::error::VaultError;
use secret_core::render::rfc3339;
use secret_core::vault::{BackupEncryption, BackupTarget, Vault};

const PREFIX: &str = "secret-backup-";
const SUFFIX: &str = ".age";

/// After a failed backup, the next try comes this soon (or after one period, if shorter).
const RETRY: Duration = Duration::from_secs(10 * 60);

/// How `serve` backs the vault up.
#[derive(Clone)]
pub struct BackupOptions {
    pub dir: PathBuf,
    pub every: Duration,
    /// How many backups to keep (at least 1).
    pub keep: usize,
    /// The vault's passphrase, for a vault without recipients (its backups are
    /// encrypted to the passphrase).
    pub passphrase: Option<SecretString>,
    pub scrypt_log_n: Option<u8>,
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("dir", &self.dir)
            .field("every", &self.every)
            .field("keep", &self.keep)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// `secret-backup-20261126T101500.123Z.age` for a time in unix milliseconds.
pub fn file_name(now_ms: i64) -> String {
    let stamp: String = rfc3339(now_ms, true)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{PREFIX}{stamp}{SUFFIX}")
}

/// The time in a backup's file name, in unix milliseconds.
fn time_of(name: &str) -> Option<i64> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    // 20261126T101500.123Z → 2026-11-26T10:15:00.123Z
    let (date, time) = stamp.split_once('T')?;
    if date.len() != 8 || time.len() < 7 {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}",
        date.get(0..4)?,
        date.get(4..6)?,
        date.get(6..8)?,
        time.get(0..2)?,
        time.get(2..4)?,
        time.get(4..)?
    );
    let at = humantime::parse_rfc3339(&text).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// The backups in `dir`, oldest first.
fn backups_in(dir: &Path) -> Vec<(i64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(i64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            time_of(&name).map(|t| (t, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes all but the newest `keep` backups; returns how many went.
fn prune(dir: &Path, keep: usize) -> usize {
    let found = backups_in(dir);
    let excess = found.len().saturating_sub(keep.max(1));
    found
        .iter()
        .take(excess)
        .filter(|(_, path)| std::fs::remove_file(path).is_ok())
        .count()
}

/// Checks at start that backups can be encrypted: a vault without recipients needs
/// its passphrase.
pub fn check(vault: &mut Vault, options: &BackupOptions) -> Result<(), VaultError> {
    let info = vault.keyring_info()?;
    if info.recipients.is_empty() && options.passphrase.is_none() {
        return Err(VaultError::Usage(
            "--backup-dir: the vault has no recipients, only a passphrase: set \
             SECRET_PASSPHRASE so that serve can encrypt its backups to it"
                .into(),
        ));
    }
    Ok(())
}

/// Takes one backup into `options.dir`; returns its path.
pub fn backup_once(vault: &mut Vault, options: &BackupOptions) -> Result<PathBuf, VaultError> {
    let path = options.dir.join(file_name(vault.now()));
    let encryption = if vault.keyring_info()?.recipients.is_empty() {
        match &options.passphrase {
            Some(passphrase) => BackupEncryption::Passphrase {
                passphrase: passphrase.clone(),
                scrypt_log_n: options.scrypt_log_n,
            },
            None => {
                return Err(VaultError::Usage(
                    "the vault has no recipients and serve has no passphrase to encrypt to".into(),
                ))
            }
        }
    } else {
        BackupEncryption::Recipients
    };
    vault.backup(
        BackupTarget::File {
            path: &path,
            overwrite: false,
        },
        encryption,
    )?;
    Ok(path)
}

/// Backs up every period until `shutdown` turns true.
pub async fn run(
    vault: Vault,
    options: BackupOptions,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    metrics.backup_interval.set(options.every.as_secs_f64());
    let newest = backups_in(&options.dir).last().map(|(t, _)| *t);
    let mut wait = Duration::ZERO;
    if let Some(at) = newest {
        metrics.backup_last_success.set(at as f64 / 1000.0);
        let due = at.saturating_add(options.every.as_millis() as i64);
        wait = Duration::from_millis(due.saturating_sub(vault.now()).max(0) as u64);
    }
    let mut vault = Some(vault);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let Some(mut v) = vault.take() else { break };
        let opts = options.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = backup_once(&mut v, &opts);
            let now = v.now();
            (v, result, now)
        })
        .await;
        let Ok((v, result, now)) = done else {
            eprintln!("backup: the backup thread failed; scheduled backups stop");
            metrics.backup_ended("failed");
            break;
        };
        vault = Some(v);
        match result {
            Ok(path) => {
                metrics.backup_last_success.set(now as f64 / 1000.0);
                metrics.backup_ended("ok");
                let pruned = prune(&options.dir, options.keep);
                eprintln!(
                    "backup: wrote {}{}",
                    path.display(),
                    if pruned > 0 {
                        format!(" (removed {pruned} older)")
                    } else {
                        String::new()
                    }
                );
                wait = options.every;
            }
            Err(e) => {
                eprintln!(
                    "backup: failed ({e}); trying again in {:?}",
                    RETRY.min(options.every)
                );
                metrics.backup_ended("failed");
                wait = RETRY.min(options.every);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_their_time_and_sort_by_it() {
        let t = 1_796_000_000_123;
        let name = file_name(t);
        assert!(
            name.starts_with("secret-backup-2026") && name.ends_with(".age"),
            "{name}"
        );
        assert_eq!(time_of(&name), Some(t));
        assert!(file_name(t) < file_name(t + 1));
        assert_eq!(time_of("secret-backup-nonsense.age"), None);
        assert_eq!(time_of("vault.db"), None);
    }

    #[test]
    fn prune_keeps_the_newest_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for t in [3, 1, 2, 4] {
            std::fs::write(dir.path().join(file_name(1_796_000_000_000 + t)), b"x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"keep me").unwrap();
        assert_eq!(prune(dir.path(), 2), 2);
        let left: Vec<i64> = backups_in(dir.path()).iter().map(|(t, _)| *t).collect();
        assert_eq!(left, [1_796_000_000_003, 1_796_000_000_004]);
        assert!(dir.path().join("notes.txt").exists());
    }
}
