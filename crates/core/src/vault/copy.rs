//! `secret store copy`: the whole vault into another store — a SQLite file, a
//! PostgreSQL database — with everything in it, proven on the far side before the
//! copy counts.
//!
//! 1. **One snapshot.** Everything is read in one read transaction of the source, so
//!    writers running meanwhile (a `serve`, other commands) neither wait nor tear it.
//! 2. **The source is proven first**, in that snapshot: its audit chain verifies in
//!    every key epoch, every metadata MAC (labels, versions, tokens, census) holds,
//!    every ciphertext opens. A source changed without the key is refused (exit 7)
//!    before the destination is touched.
//! 3. **Rows, as they are** ([`crate::store::image`]): ciphertexts, MACs, wrapped keys,
//!    retired audit keys, rotations and their steps, tokens, leases, unkeyed events and
//!    the audit log with its sealed head, byte for byte. Nothing is re-encrypted: the
//!    copy has the vault's id and key, and the same identities open it.
//! 4. **One transaction on the far side**, begun only on a location that holds nothing
//!    (PostgreSQL: the schema is made inside it; a file: the vault is built in memory
//!    and written through an exclusive temporary file renamed into place, never over
//!    an existing name). Inside it, before commit, the rows are read back through the
//!    destination's own backend: the same digest as the rows read, the key check, the
//!    whole chain (which must hold the source's head), every MAC, every ciphertext.
//!    Then the destination's chain gets one `store.copied` entry (from where, which
//!    head), and it commits. A crash leaves nothing or everything.
//! 5. **Then the source's log** gets `store.copy` (to where — never a password — and
//!    how many rows). A refused copy is recorded there with its error code.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::keys::{epoch_after, open_every_ciphertext, verify_chain_in};
use super::metadata::check_everything;
use super::{append, Vault, VaultError};
use crate::action::Action;
use crate::audit::{self, ExpectedHead};
use crate::crypto::KeyCheck;
use crate::private_file::{self, PrivateFileError};
use crate::store::{image, recognise, Store, StoreError};

/// Where a copy goes.
pub enum CopyTarget<'a> {
    /// A new SQLite vault file; anything at the path is refused.
    File(&'a Path),
    /// Another backend's store, connected but not prepared (the PostgreSQL store's
    /// `PgStore::blank`): the copy begins with [`Store::write_blank`].
    Store(Store),
}

/// What a copy did.
#[derive(Debug)]
pub struct CopyReport {
    /// The destination, for messages: a path, or a URL without its password.
    pub to: String,
    /// Rows copied per table.
    pub tables: BTreeMap<&'static str, u64>,
    pub rows: u64,
    pub secrets: u64,
    /// Versions that hold a ciphertext (each opened on both sides).
    pub versions: u64,
    pub tokens: u64,
    /// Audit entries verified on the far side (the copied log).
    pub entries: u64,
    /// The key epoch in force (1 + the retired ones, whose audit keys came along).
    pub epoch: u64,
    /// The source's head the copy holds, `SEQ:MAC`.
    pub copied_head: String,
    /// The destination's head after its `store.copied` entry.
    pub destination_head: String,
    /// What went wrong after the destination was committed (the source's entry).
    pub warnings: Vec<String>,
}

/// What the source's snapshot proved.
struct Proven {
    secrets: u64,
    tokens: u64,
    versions: u64,
    epoch: u64,
    head: audit::Head,
}

/// What the far side proved, inside its transaction.
struct Written {
    copied: image::RowCounts,
    entries: u64,
    head: audit::Head,
    /// The digest of the destination as committed (with its `store.copied` entry).
    final_digest: image::RowCounts,
}

/// What is at `path` already, for the refusal.
fn occupant_of(path: &Path) -> Option<String> {
    let wal = {
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        std::path::PathBuf::from(name)
    };
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => Some("a folder".into()),
        Ok(meta) if meta.file_type().is_symlink() => Some("a symbolic link".into()),
        Ok(_) => Some(match recognise(path) {
            Ok(()) => "a vault".into(),
            Err(_) => "a file that is not a vault".into(),
        }),
        Err(_) if wal.symlink_metadata().is_ok() => {
            Some(format!("no file, but a leftover {}", wal.display()))
        }
        Err(_) => None,
    }
}

fn far_side_broken(to: &str, what: String) -> VaultError {
    VaultError::Integrity(format!(
        "the copy at {to} does not prove out ({what}); it was rolled back and nothing was \
         written there"
    ))
}

impl Vault {
    /// Refuses a file destination that is taken (what [`Vault::copy_to`] checks
    /// first), for callers that want to say so before unlocking anything.
    pub fn check_copy_file(path: &Path) -> Result<(), VaultError> {
        match occupant_of(path) {
            Some(holds) => Err(StoreError::NotEmpty {
                location: path.display().to_string(),
                holds,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Copies the whole vault into `target` (see the module doc). `progress(rows
    /// copied, rows in all)` follows the rows.
    pub fn copy_to(
        &mut self,
        target: CopyTarget<'_>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CopyReport, VaultError> {
        match self.copy_inner(target, progress) {
            Ok(mut report) => {
                let details = json!({
                    "to": report.to,
                    "rows": report.rows,
                    "tables": report.tables,
                    "secrets": report.secrets,
                    "versions": report.versions,
                    "copied_head": report.copied_head,
                    "destination_head": report.destination_head,
                });
                if let Err(e) = self.record(Action::StoreCopy, None, details) {
                    report.warnings.push(format!(
                        "the copy is complete, but this vault's audit log could not record it: {e}"
                    ));
                }
                Ok(report)
            }
            Err(e) => {
                self.record_refusal(Action::StoreCopy, None, &e);
                Err(e)
            }
        }
    }

    fn copy_inner(
        &mut self,
        target: CopyTarget<'_>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CopyReport, VaultError> {
        let (mut dest, file) = match target {
            CopyTarget::File(path) => {
                Self::check_copy_file(path)?;
                (Store::in_memory()?, Some(path))
            }
            CopyTarget::Store(store) => (store, None),
        };
        let to = match file {
            Some(path) => path.display().to_string(),
            None => dest.location(),
        };
        let from = self.store.location();
        if file.is_none() && to == from {
            return Err(VaultError::Usage(format!(
                "{to} is the vault being copied; give another destination"
            )));
        }
        let keys = &self.keys;
        let actor = &self.actor;
        let clock = &self.clock;
        let (proven, written) = self.store.read(|src| {
            // The source, as of this snapshot.
            keys.ensure_in_force(src)?;
            let entries = verify_chain_in(src, keys, None)?;
            let (secrets, tokens) = check_everything(src, keys)?;
            let versions = open_every_ciphertext(src, keys)?;
            let head = src.audit_head()?.ok_or_else(|| VaultError::AuditBroken {
                seq: entries + 1,
                reason: "the sealed head record is missing".into(),
            })?;
            let proven = Proven {
                secrets,
                tokens,
                versions,
                epoch: epoch_after(&src.retired_keys()?),
                head,
            };
            let total = image::count_rows(src)?;
            progress(0, total);
            let written = dest.write_blank(|dst| {
                let copied = image::copy_rows(src, dst, &mut |done| progress(done, total))?;
                // The far side, read back through its own backend.
                let back = image::digest_rows(dst)?;
                if back != copied {
                    return Err(far_side_broken(
                        &to,
                        "the rows read back differ from the rows written".into(),
                    ));
                }
                let row = dst
                    .vault_row()?
                    .ok_or_else(|| far_side_broken(&to, "it has no vault row".into()))?;
                if row.vault_id != keys.vault_id
                    || keys.key.check(&row.vault_id, &row.key_check)? != KeyCheck::Sealed
                {
                    return Err(far_side_broken(
                        &to,
                        "its key check does not match the vault key".into(),
                    ));
                }
                let expect = ExpectedHead {
                    seq: proven.head.seq,
                    mac: proven.head.mac.clone(),
                };
                let entries = verify_chain_in(dst, keys, Some(expect))?;
                let (secrets, tokens) = check_everything(dst, keys)?;
                let versions = open_every_ciphertext(dst, keys)?;
                if (secrets, tokens, versions) != (proven.secrets, proven.tokens, proven.versions) {
                    return Err(far_side_broken(
                        &to,
                        format!(
                            "it holds {secrets} secrets, {tokens} tokens and {versions} sealed \
                             versions, the source {}, {} and {}",
                            proven.secrets, proven.tokens, proven.versions
                        ),
                    ));
                }
                let head = append(
                    dst,
                    keys,
                    actor,
                    clock.now_ms(),
                    Action::StoreCopied.as_str(),
                    None,
                    None,
                    "ok",
                    &json!({
                        "from": from,
                        "rows": copied.total(),
                        "copied_head": audit::format_head(proven.head.seq, &proven.head.mac),
                    }),
                )?;
                let final_digest = image::digest_rows(dst)?;
                Ok::<_, VaultError>(Written {
                    copied,
                    entries,
                    head,
                    final_digest,
                })
            })?;
            Ok::<_, VaultError>((proven, written))
        })?;
        // Committed: the file is written (never over anything), then read back whole.
        let mut warnings = Vec::new();
        let reread = match file {
            Some(path) => {
                let bytes = dest.snapshot()?;
                drop(dest);
                private_file::write(path, &bytes, false).map_err(|e| match e {
                    PrivateFileError::Exists(p) => VaultError::Store(StoreError::NotEmpty {
                        location: p.display().to_string(),
                        holds: "a file that appeared while copying".into(),
                    }),
                    other => VaultError::Io(other.to_string()),
                })?;
                Store::open(path)?.read(|tx| image::digest_rows(tx))
            }
            None => dest.read(|tx| image::digest_rows(tx)),
        };
        match reread {
            Ok(digest) if digest == written.final_digest => {}
            Ok(_) => warnings.push(format!(
                "{to} changed between the copy's commit and the check after it (another \
                 process wrote to it): run `secret --vault {to} audit verify`"
            )),
            Err(e) => warnings.push(format!("{to} could not be read back after the copy: {e}")),
        }
        Ok(CopyReport {
            to,
            rows: written.copied.total(),
            tables: written.copied.tables,
            secrets: proven.secrets,
            versions: proven.versions,
            tokens: proven.tokens,
            entries: written.entries,
            epoch: proven.epoch,
            copied_head: audit::format_head(proven.head.seq, &proven.head.mac),
            destination_head: audit::format_head(written.head.seq, &written.head.mac),
            warnings,
        })
    }
}
