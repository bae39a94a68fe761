//! Every SQL statement of the PostgreSQL store: [`StoreTx`] for [`PgStore`]. Each
//! statement crosses to the connection's thread with owned parameters (see `worker`)
//! and is prepared once per connection. The statements mirror the SQLite store's,
//! with `$n` parameters, BIGINT times and versions, and BYTEA blobs.

use postgres::Row;
use secret_core::audit::{AuditFilter, Entry, Head, UnkeyedEvent};
use secret_core::model::{SecretMeta, VersionNumber};
use secret_core::rotation_state::{RunOutcome, Step, StepStatus, UnknownText};
use secret_core::store::image::{RowImage, TableSpec};
use secret_core::store::{
    AuditBounds, KeyringKind, KeyringRow, Mac, RetiredKeyRow, RotationRow, SealedVersion,
    SecretRow, StepRow, StoreError, StoreTx, TokenRow, VaultRow, VersionFacts, VersionRow,
};

use crate::worker::p;
use crate::PgStore;

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::Database(format!("column {index}: {e}")))
}

fn get_u64(row: &Row, index: usize) -> Result<u64, StoreError> {
    Ok(get::<i64>(row, index)? as u64)
}

fn get_opt_u64(row: &Row, index: usize) -> Result<Option<u64>, StoreError> {
    Ok(get::<Option<i64>>(row, index)?.map(|v| v as u64))
}

fn big(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn opt_big(v: Option<u64>) -> Option<i64> {
    v.map(big)
}

fn text_enum<T: std::str::FromStr<Err = UnknownText>>(
    row: &Row,
    index: usize,
    table: &'static str,
) -> Result<T, StoreError> {
    let text: String = get(row, index)?;
    text.parse().map_err(|e: UnknownText| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

fn secret_row(r: &Row) -> Result<SecretRow, StoreError> {
    Ok(SecretRow {
        name: get(r, 0)?,
        description: get(r, 1)?,
        created_at_ms: get(r, 2)?,
        updated_at_ms: get(r, 3)?,
        deleted_at_ms: get(r, 4)?,
        latest_version: get_u64(r, 5)?,
        current_version: get_opt_u64(r, 6)?,
        pending_version: get_opt_u64(r, 7)?,
        previous_version: get_opt_u64(r, 8)?,
    })
}

fn entry_row(r: &Row) -> Result<Entry, StoreError> {
    Ok(Entry {
        seq: get_u64(r, 0)?,
        at_ms: get(r, 1)?,
        actor: get(r, 2)?,
        pid: get::<Option<i64>>(r, 3)?.map(|p| p as u32),
        action: get(r, 4)?,
        secret: get(r, 5)?,
        version: get_opt_u64(r, 6)?,
        outcome: get(r, 7)?,
        request_id: get(r, 8)?,
        details: get(r, 9)?,
        mac: get(r, 10)?,
    })
}

fn rotation_row(r: &Row) -> Result<RotationRow, StoreError> {
    let outcome: Option<String> = get(r, 5)?;
    Ok(RotationRow {
        id: get(r, 0)?,
        secret: get(r, 1)?,
        generator: get(r, 2)?,
        trigger: text_enum(r, 3, "rotations")?,
        state: text_enum(r, 4, "rotations")?,
        outcome: match outcome {
            Some(text) => Some(text.parse().map_err(|e: UnknownText| StoreError::Corrupt {
                table: "rotations",
                reason: e.to_string(),
            })?),
            None => None,
        },
        old_version: get_opt_u64(r, 6)?,
        new_version: get_opt_u64(r, 7)?,
        started_at_ms: get(r, 8)?,
        updated_at_ms: get(r, 9)?,
        finished_at_ms: get(r, 10)?,
        revoke_after_ms: get(r, 11)?,
        revoked_at_ms: get(r, 12)?,
        error: get(r, 13)?,
        provider_state: get(r, 14)?,
        deployments: get(r, 15)?,
    })
}

fn token_row(r: &Row) -> Result<TokenRow, StoreError> {
    let scopes: String = get(r, 3)?;
    Ok(TokenRow {
        id: get(r, 0)?,
        name: get(r, 1)?,
        hash: get(r, 2)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at_ms: get(r, 4)?,
        expires_at_ms: get(r, 5)?,
        revoked_at_ms: get(r, 6)?,
        last_used_at_ms: get(r, 7)?,
    })
}

fn all<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

fn first<T>(
    rows: Vec<Row>,
    f: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    rows.first().map(f).transpose()
}

macro_rules! secret_columns {
    () => {
        "name, description, created_at, updated_at, deleted_at, latest_version, \
         current_version, pending_version, previous_version"
    };
}
macro_rules! rotation_columns {
    () => {
        "id, secret, generator, trigger, state, outcome, old_version, new_version, \
         started_at, updated_at, finished_at, revoke_after, revoked_at, error, \
         provider_state, deployments"
    };
}
macro_rules! token_columns {
    () => {
        "id, name, hash, scopes, created_at, expires_at, revoked_at, last_used_at"
    };
}
macro_rules! entry_columns {
    () => {
        "seq, at_ms, actor, pid, action, secret, version, outcome, request_id, details, mac"
    };
}

const PUT_HEAD: &str = "INSERT INTO audit_head (id, seq, mac, seal) VALUES (1, $1, $2, $3)
     ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, mac = EXCLUDED.mac, seal = EXCLUDED.seal";

impl StoreTx for PgStore {
    fn vault_row(&self) -> Result<Option<VaultRow>, StoreError> {
        let rows = self.worker.rows(
            "SELECT vault_id, key_check, created_at FROM vault WHERE id = 1",
            vec![],
        )?;
        first(rows, |r| {
            Ok(VaultRow {
                vault_id: get(r, 0)?,
                key_check: get(r, 1)?,
                created_at_ms: get(r, 2)?,
            })
        })
    }

    fn insert_vault_row(&self, row: &VaultRow) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO vault (id, vault_id, key_check, created_at) VALUES (1, $1, $2, $3)",
            vec![
                p(row.vault_id.clone()),
                p(row.key_check.clone()),
                p(row.created_at_ms),
            ],
        )?;
        Ok(())
    }

    fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self
            .worker
            .rows("SELECT key_check FROM vault WHERE id = 1", vec![])?;
        first(rows, |r| get(r, 0))
    }

    fn set_key_check(&self, key_check: &[u8]) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE vault SET key_check = $1 WHERE id = 1",
            vec![p(key_check.to_vec())],
        )?;
        Ok(())
    }

    fn delete_keyring(&self, kind: KeyringKind) -> Result<(), StoreError> {
        self.worker.exec(
            "DELETE FROM keyring WHERE kind = $1",
            vec![p(kind_text(kind).to_string())],
        )?;
        Ok(())
    }

    fn retired_keys(&self) -> Result<Vec<RetiredKeyRow>, StoreError> {
        let rows = self.worker.rows(
            "SELECT epoch, retired_at, retired_seq, nonce, audit_key FROM retired_keys ORDER BY epoch",
            vec![],
        )?;
        all(rows, |r| {
            Ok(RetiredKeyRow {
                epoch: get_u64(r, 0)?,
                retired_at_ms: get(r, 1)?,
                retired_seq: get_u64(r, 2)?,
                nonce: get(r, 3)?,
                sealed_key: get(r, 4)?,
            })
        })
    }

    fn put_retired_key(&self, row: &RetiredKeyRow) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO retired_keys (epoch, retired_at, retired_seq, nonce, audit_key)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (epoch) DO UPDATE SET nonce = EXCLUDED.nonce, audit_key = EXCLUDED.audit_key",
            vec![
                p(big(row.epoch)),
                p(row.retired_at_ms),
                p(big(row.retired_seq)),
                p(row.nonce.clone()),
                p(row.sealed_key.clone()),
            ],
        )?;
        Ok(())
    }

    fn keyring(&self) -> Result<Vec<KeyringRow>, StoreError> {
        let rows = self.worker.rows(
            "SELECT kind, recipients, wrapped_key FROM keyring ORDER BY kind",
            vec![],
        )?;
        all(rows, |r| {
            let kind: String = get(r, 0)?;
            let kind = match kind.as_str() {
                "recipients" => KeyringKind::Recipients,
                "passphrase" => KeyringKind::Passphrase,
                other => {
                    return Err(StoreError::Corrupt {
                        table: "keyring",
                        reason: format!("unknown kind {other:?}"),
                    })
                }
            };
            let recipients: String = get(r, 1)?;
            Ok(KeyringRow {
                kind,
                recipients: recipients
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                wrapped_key: get(r, 2)?,
            })
        })
    }

    fn census(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self
            .worker
            .rows("SELECT census FROM vault WHERE id = 1", vec![])?;
        Ok(first(rows, |r| get::<Option<Vec<u8>>>(r, 0))?.flatten())
    }

    fn set_census(&self, mac: &[u8]) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE vault SET census = $1 WHERE id = 1",
            vec![p(mac.to_vec())],
        )?;
        Ok(())
    }

    fn count_secrets(&self) -> Result<u64, StoreError> {
        let rows = self.worker.rows("SELECT count(*) FROM secrets", vec![])?;
        Ok(first(rows, |r| get_u64(r, 0))?.unwrap_or(0))
    }

    fn secret_names(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.worker.rows(
            "SELECT name FROM secrets ORDER BY name COLLATE \"C\"",
            vec![],
        )?;
        all(rows, |r| get(r, 0))
    }

    fn put_keyring(&self, row: &KeyringRow, now_ms: i64) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO keyring (kind, recipients, wrapped_key, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind) DO UPDATE SET recipients = EXCLUDED.recipients,
               wrapped_key = EXCLUDED.wrapped_key, updated_at = EXCLUDED.updated_at",
            vec![
                p(kind_text(row.kind).to_string()),
                p(row.recipients.join("\n")),
                p(row.wrapped_key.clone()),
                p(now_ms),
            ],
        )?;
        Ok(())
    }

    fn secret(&self, name: &str) -> Result<Option<SecretRow>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                secret_columns!(),
                " FROM secrets WHERE name = $1"
            ),
            vec![p(name.to_string())],
        )?;
        first(rows, secret_row)
    }

    fn secret_with_mac(&self, name: &str) -> Result<Option<(SecretRow, Option<Mac>)>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                secret_columns!(),
                ", mac FROM secrets WHERE name = $1"
            ),
            vec![p(name.to_string())],
        )?;
        first(rows, |r| Ok((secret_row(r)?, get(r, 9)?)))
    }

    fn set_secret_mac(&self, name: &str, mac: &[u8]) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE secrets SET mac = $2 WHERE name = $1",
            vec![p(name.to_string()), p(mac.to_vec())],
        )?;
        Ok(())
    }

    fn version_facts(&self, name: &str) -> Result<Vec<VersionFacts>, StoreError> {
        let rows = self.worker.rows(
            "SELECT version, created_at, destroyed_at,
                    nonce IS NOT NULL AND ciphertext IS NOT NULL, meta
             FROM versions WHERE name = $1 ORDER BY version",
            vec![p(name.to_string())],
        )?;
        all(rows, |r| {
            Ok(VersionFacts {
                version: get_u64(r, 0)?,
                created_at_ms: get(r, 1)?,
                destroyed_at_ms: get(r, 2)?,
                sealed: get(r, 3)?,
                meta: get(r, 4)?,
            })
        })
    }

    fn save_secret(&self, row: &SecretRow) -> Result<(), StoreError> {
        self.worker.exec(
            concat!(
                "INSERT INTO secrets (",
                secret_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
                   updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
                   latest_version = EXCLUDED.latest_version, current_version = EXCLUDED.current_version,
                   pending_version = EXCLUDED.pending_version, previous_version = EXCLUDED.previous_version"
            ),
            vec![
                p(row.name.clone()),
                p(row.description.clone()),
                p(row.created_at_ms),
                p(row.updated_at_ms),
                p(row.deleted_at_ms),
                p(big(row.latest_version)),
                p(opt_big(row.current_version)),
                p(opt_big(row.pending_version)),
                p(opt_big(row.previous_version)),
            ],
        )?;
        Ok(())
    }

    fn version(
        &self,
        name: &str,
        version: VersionNumber,
    ) -> Result<Option<VersionRow>, StoreError> {
        let rows = self.worker.rows(
            "SELECT version, created_at, nonce, ciphertext, destroyed_at, meta
             FROM versions WHERE name = $1 AND version = $2",
            vec![p(name.to_string()), p(big(version.get()))],
        )?;
        first(rows, |r| {
            Ok(VersionRow {
                version: get_u64(r, 0)?,
                created_at_ms: get(r, 1)?,
                nonce: get(r, 2)?,
                ciphertext: get(r, 3)?,
                destroyed_at_ms: get(r, 4)?,
                meta: get(r, 5)?,
            })
        })
    }

    fn insert_version(
        &self,
        name: &str,
        version: VersionNumber,
        now_ms: i64,
        nonce: &[u8],
        ciphertext: &[u8],
        meta: &str,
    ) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO versions (name, version, created_at, nonce, ciphertext, meta)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                p(name.to_string()),
                p(big(version.get())),
                p(now_ms),
                p(nonce.to_vec()),
                p(ciphertext.to_vec()),
                p(meta.to_string()),
            ],
        )?;
        Ok(())
    }

    fn destroy_version(
        &self,
        name: &str,
        version: VersionNumber,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE versions SET nonce = NULL, ciphertext = NULL, destroyed_at = $3
             WHERE name = $1 AND version = $2",
            vec![p(name.to_string()), p(big(version.get())), p(now_ms)],
        )?;
        Ok(())
    }

    fn count_sealed_versions(&self) -> Result<u64, StoreError> {
        let rows = self.worker.rows(
            "SELECT count(*) FROM versions WHERE ciphertext IS NOT NULL",
            vec![],
        )?;
        Ok(first(rows, |r| get_u64(r, 0))?.unwrap_or(0))
    }

    fn sealed_versions_after(
        &self,
        after: Option<(&str, u64)>,
        limit: u64,
    ) -> Result<Vec<SealedVersion>, StoreError> {
        let (name, version) = match after {
            Some((n, v)) => (Some(n.to_string()), big(v)),
            None => (None, 0),
        };
        let rows = self.worker.rows(
            "SELECT name, version, nonce, ciphertext FROM versions
             WHERE ciphertext IS NOT NULL AND nonce IS NOT NULL
               AND ($1::text IS NULL OR (name COLLATE \"C\", version) > ($1::text COLLATE \"C\", $2::bigint))
             ORDER BY name COLLATE \"C\", version LIMIT $3",
            vec![p(name), p(version), p(big(limit))],
        )?;
        all(rows, |r| {
            Ok(SealedVersion {
                name: get(r, 0)?,
                version: get_u64(r, 1)?,
                nonce: get(r, 2)?,
                ciphertext: get(r, 3)?,
            })
        })
    }

    fn reseal_version(
        &self,
        name: &str,
        version: u64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), StoreError> {
        let n = self.worker.exec(
            "UPDATE versions SET nonce = $3, ciphertext = $4
             WHERE name = $1 AND version = $2 AND ciphertext IS NOT NULL",
            vec![
                p(name.to_string()),
                p(big(version)),
                p(nonce.to_vec()),
                p(ciphertext.to_vec()),
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Corrupt {
                table: "versions",
                reason: format!("version {version} of {name} vanished while it was re-encrypted"),
            });
        }
        Ok(())
    }

    fn versions_of(&self, name: &str) -> Result<Vec<VersionRow>, StoreError> {
        let rows = self.worker.rows(
            "SELECT version, created_at, destroyed_at, meta FROM versions WHERE name = $1 ORDER BY version",
            vec![p(name.to_string())],
        )?;
        all(rows, |r| {
            Ok(VersionRow {
                version: get_u64(r, 0)?,
                created_at_ms: get(r, 1)?,
                nonce: None,
                ciphertext: None,
                destroyed_at_ms: get(r, 2)?,
                meta: get(r, 3)?,
            })
        })
    }

    fn list_secrets(&self, include_deleted: bool) -> Result<Vec<SecretMeta>, StoreError> {
        let rows = self.worker.rows(
            "SELECT s.name, s.description, s.created_at, s.updated_at, s.deleted_at,
                    s.latest_version, s.current_version, s.pending_version, s.previous_version,
                    (SELECT count(*) FROM versions v WHERE v.name = s.name AND v.destroyed_at IS NULL)
             FROM secrets s WHERE $1::boolean OR s.deleted_at IS NULL ORDER BY s.name COLLATE \"C\"",
            vec![p(include_deleted)],
        )?;
        all(rows, |r| {
            let row = secret_row(r)?;
            Ok(SecretMeta {
                name: row.name,
                description: row.description,
                created_at_ms: row.created_at_ms,
                updated_at_ms: row.updated_at_ms,
                deleted_at_ms: row.deleted_at_ms,
                latest_version: row.latest_version,
                current_version: row.current_version,
                pending_version: row.pending_version,
                previous_version: row.previous_version,
                live_versions: get_u64(r, 9)?,
            })
        })
    }

    fn save_rotation(&self, row: &RotationRow) -> Result<(), StoreError> {
        self.worker.exec(
            concat!(
                "INSERT INTO rotations (",
                rotation_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, outcome = EXCLUDED.outcome,
                   old_version = EXCLUDED.old_version, new_version = EXCLUDED.new_version,
                   updated_at = EXCLUDED.updated_at, finished_at = EXCLUDED.finished_at,
                   revoke_after = EXCLUDED.revoke_after, revoked_at = EXCLUDED.revoked_at,
                   error = EXCLUDED.error, provider_state = EXCLUDED.provider_state,
                   deployments = EXCLUDED.deployments"
            ),
            vec![
                p(row.id.clone()),
                p(row.secret.clone()),
                p(row.generator.clone()),
                p(row.trigger.as_str().to_string()),
                p(row.state.as_str().to_string()),
                p(row.outcome.map(|o| RunOutcome::as_str(o).to_string())),
                p(opt_big(row.old_version)),
                p(opt_big(row.new_version)),
                p(row.started_at_ms),
                p(row.updated_at_ms),
                p(row.finished_at_ms),
                p(row.revoke_after_ms),
                p(row.revoked_at_ms),
                p(row.error.clone()),
                p(row.provider_state.clone()),
                p(row.deployments.clone()),
            ],
        )?;
        Ok(())
    }

    fn rotation(&self, id: &str) -> Result<Option<RotationRow>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                rotation_columns!(),
                " FROM rotations WHERE id = $1"
            ),
            vec![p(id.to_string())],
        )?;
        first(rows, rotation_row)
    }

    fn rotations(&self, secret: Option<&str>, limit: u64) -> Result<Vec<RotationRow>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                rotation_columns!(),
                " FROM rotations WHERE ($1::text IS NULL OR secret = $1::text)
                 ORDER BY started_at DESC, id COLLATE \"C\" DESC LIMIT $2"
            ),
            vec![p(secret.map(str::to_string)), p(big(limit))],
        )?;
        all(rows, rotation_row)
    }

    fn open_rotations(&self) -> Result<Vec<RotationRow>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                rotation_columns!(),
                " FROM rotations WHERE state NOT IN ('done', 'rolled_back', 'failed')
                 ORDER BY started_at, id COLLATE \"C\""
            ),
            vec![],
        )?;
        all(rows, rotation_row)
    }

    fn rotation_in_progress(&self, secret: &str) -> Result<Option<String>, StoreError> {
        let rows = self.worker.rows(
            "SELECT id FROM rotations WHERE secret = $1
             AND state NOT IN ('done', 'rolled_back', 'failed', 'grace') LIMIT 1",
            vec![p(secret.to_string())],
        )?;
        first(rows, |r| get(r, 0))
    }

    fn insert_step(
        &self,
        rotation_id: &str,
        step: Step,
        status: StepStatus,
        at_ms: i64,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO rotation_steps (rotation_id, seq, step, status, at_ms, detail)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM rotation_steps WHERE rotation_id = $1),
                     $2, $3, $4, $5)",
            vec![
                p(rotation_id.to_string()),
                p(step.as_str().to_string()),
                p(status.as_str().to_string()),
                p(at_ms),
                p(detail.to_string()),
            ],
        )?;
        Ok(())
    }

    fn steps(&self, rotation_id: &str) -> Result<Vec<StepRow>, StoreError> {
        let rows = self.worker.rows(
            "SELECT seq, step, status, at_ms, detail FROM rotation_steps
             WHERE rotation_id = $1 ORDER BY seq",
            vec![p(rotation_id.to_string())],
        )?;
        all(rows, |r| {
            Ok(StepRow {
                seq: get_u64(r, 0)?,
                step: text_enum(r, 1, "rotation_steps")?,
                status: text_enum(r, 2, "rotation_steps")?,
                at_ms: get(r, 3)?,
                detail: get(r, 4)?,
            })
        })
    }

    fn savepoint(&self) -> Result<(), StoreError> {
        self.worker.call(|c| c.batch("SAVEPOINT op"))
    }

    fn release(&self) -> Result<(), StoreError> {
        self.worker.call(|c| c.batch("RELEASE SAVEPOINT op"))
    }

    fn rollback_to_savepoint(&self) -> Result<(), StoreError> {
        self.worker.call(|c| {
            // What failed since the savepoint is undone with it: the transaction can go on.
            c.failed = false;
            c.batch("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
        })
    }

    fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError> {
        self.worker.exec(
            concat!(
                "INSERT INTO tokens (",
                token_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            vec![
                p(row.id.clone()),
                p(row.name.clone()),
                p(row.hash.clone()),
                p(serde_json::to_string(&row.scopes).unwrap_or_else(|_| "[]".into())),
                p(row.created_at_ms),
                p(row.expires_at_ms),
                p(row.revoked_at_ms),
                p(row.last_used_at_ms),
            ],
        )?;
        Ok(())
    }

    fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let rows = self.worker.rows(
            concat!("SELECT ", token_columns!(), " FROM tokens WHERE id = $1"),
            vec![p(id.to_string())],
        )?;
        first(rows, token_row)
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens ORDER BY created_at, id COLLATE \"C\""
            ),
            vec![],
        )?;
        all(rows, token_row)
    }

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self.worker.exec(
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            vec![p(id.to_string()), p(now_ms)],
        )?;
        Ok(n > 0)
    }

    fn revoke_all_tokens(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.worker.exec(
            "UPDATE tokens SET revoked_at = $1 WHERE revoked_at IS NULL",
            vec![p(now_ms)],
        )
    }

    fn token_mac(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self.worker.rows(
            "SELECT mac FROM tokens WHERE id = $1",
            vec![p(id.to_string())],
        )?;
        Ok(first(rows, |r| get::<Option<Vec<u8>>>(r, 0))?.flatten())
    }

    fn set_token_mac(&self, id: &str, mac: &[u8]) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE tokens SET mac = $2 WHERE id = $1",
            vec![p(id.to_string()), p(mac.to_vec())],
        )?;
        Ok(())
    }

    fn touch_token(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE tokens SET last_used_at = $2 WHERE id = $1",
            vec![p(id.to_string()), p(now_ms)],
        )?;
        Ok(())
    }

    fn lock(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let rows = self.worker.rows(
            "SELECT holder, expires_at FROM locks WHERE name = $1",
            vec![p(name.to_string())],
        )?;
        first(rows, |r| Ok((get(r, 0)?, get(r, 1)?)))
    }

    fn put_lock(&self, name: &str, holder: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO locks (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at",
            vec![p(name.to_string()), p(holder.to_string()), p(expires_at_ms)],
        )?;
        Ok(())
    }

    fn delete_lock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.worker.exec(
            "DELETE FROM locks WHERE name = $1 AND holder = $2",
            vec![p(name.to_string()), p(holder.to_string())],
        )?;
        Ok(())
    }

    fn lock_epoch(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let rows = self.worker.rows(
            "SELECT epoch FROM locks WHERE name = $1",
            vec![p(name.to_string())],
        )?;
        first(rows, |r| get_u64(r, 0))
    }

    fn set_lock_epoch(&self, name: &str, epoch: u64) -> Result<(), StoreError> {
        self.worker.exec(
            "UPDATE locks SET epoch = $2 WHERE name = $1",
            vec![p(name.to_string()), p(epoch as i64)],
        )?;
        Ok(())
    }

    fn delete_locks_held_by(&self, holder: &str) -> Result<u64, StoreError> {
        self.worker.exec(
            "DELETE FROM locks WHERE holder = $1",
            vec![p(holder.to_string())],
        )
    }

    fn audit_head(&self) -> Result<Option<Head>, StoreError> {
        let rows = self
            .worker
            .rows("SELECT seq, mac, seal FROM audit_head WHERE id = 1", vec![])?;
        first(rows, |r| {
            Ok(Head {
                seq: get_u64(r, 0)?,
                mac: get(r, 1)?,
                seal: get(r, 2)?,
            })
        })
    }

    fn audit_bounds(&self, seq: u64) -> Result<AuditBounds, StoreError> {
        let rows = self.worker.rows(
            "SELECT (SELECT min(seq) FROM audit_log), (SELECT max(seq) FROM audit_log),
                    (SELECT mac FROM audit_log WHERE seq = $1)",
            vec![p(big(seq))],
        )?;
        Ok(first(rows, |r| {
            Ok(AuditBounds {
                first: get_opt_u64(r, 0)?,
                last: get_opt_u64(r, 1)?,
                mac_at: get(r, 2)?,
            })
        })?
        .unwrap_or(AuditBounds {
            first: None,
            last: None,
            mac_at: None,
        }))
    }

    fn append_audit(&self, entry: &Entry, head: &Head) -> Result<(), StoreError> {
        let params = vec![
            p(big(entry.seq)),
            p(entry.at_ms),
            p(entry.actor.clone()),
            p(entry.pid.map(i64::from)),
            p(entry.action.clone()),
            p(entry.secret.clone()),
            p(opt_big(entry.version)),
            p(entry.outcome.clone()),
            p(entry.request_id.clone()),
            p(entry.details.clone()),
            p(entry.mac.clone()),
        ];
        let head_params = vec![p(big(head.seq)), p(head.mac.clone()), p(head.seal.clone())];
        // One round trip for both statements.
        self.worker.call(move |c| {
            c.execute(
                concat!(
                    "INSERT INTO audit_log (",
                    entry_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &params,
            )?;
            c.execute(PUT_HEAD, &head_params)?;
            Ok(())
        })
    }

    fn set_audit_head(&self, head: &Head) -> Result<(), StoreError> {
        self.worker.exec(
            PUT_HEAD,
            vec![p(big(head.seq)), p(head.mac.clone()), p(head.seal.clone())],
        )?;
        Ok(())
    }

    fn audit_entry(&self, seq: u64) -> Result<Option<Entry>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM audit_log WHERE seq = $1"
            ),
            vec![p(big(seq))],
        )?;
        first(rows, entry_row)
    }

    fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<Entry>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT * FROM (
                   SELECT ",
                entry_columns!(),
                " FROM audit_log
                   WHERE ($1::text IS NULL OR secret = $1::text)
                     AND ($2::text IS NULL OR action = $2::text OR action LIKE $2::text || '.%')
                     AND ($3::text IS NULL OR actor = $3::text OR actor = 'user:' || $3::text
                          OR actor = 'token:' || $3::text)
                     AND ($4::bigint IS NULL OR at_ms >= $4::bigint)
                     AND ($6::bigint IS NULL OR seq < $6::bigint)
                   ORDER BY seq DESC LIMIT $5::bigint) AS newest
                 ORDER BY seq"
            ),
            vec![
                p(filter.secret.clone()),
                p(filter.action.clone()),
                p(filter.actor.clone()),
                p(filter.since_ms),
                p(opt_big(filter.limit)),
                p(opt_big(filter.before_seq)),
            ],
        )?;
        all(rows, entry_row)
    }

    fn insert_unkeyed(&self, event: &UnkeyedEvent) -> Result<(), StoreError> {
        self.worker.exec(
            "INSERT INTO audit_unkeyed (at_ms, actor, pid, action, outcome, request_id, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                p(event.at_ms),
                p(event.actor.clone()),
                p(event.pid.map(i64::from)),
                p(event.action.clone()),
                p(event.outcome.clone()),
                p(event.request_id.clone()),
                p(event.details.clone()),
            ],
        )?;
        Ok(())
    }

    fn has_unkeyed(&self) -> Result<bool, StoreError> {
        let rows = self
            .worker
            .rows("SELECT EXISTS (SELECT 1 FROM audit_unkeyed)", vec![])?;
        Ok(first(rows, |r| get(r, 0))?.unwrap_or(false))
    }

    fn take_unkeyed(&self) -> Result<Vec<UnkeyedEvent>, StoreError> {
        let rows = self.worker.call(|c| {
            let rows = c.query(
                "SELECT at_ms, actor, pid, action, outcome, request_id, details
                 FROM audit_unkeyed ORDER BY id",
                &[],
            )?;
            c.execute("DELETE FROM audit_unkeyed", &[])?;
            Ok(rows)
        })?;
        all(rows, |r| {
            Ok(UnkeyedEvent {
                at_ms: get(r, 0)?,
                actor: get(r, 1)?,
                pid: get::<Option<i64>>(r, 2)?.map(|p| p as u32),
                action: get(r, 3)?,
                outcome: get(r, 4)?,
                request_id: get(r, 5)?,
                details: get(r, 6)?,
            })
        })
    }

    fn audit_page(&self, after: u64, limit: u64) -> Result<Vec<Entry>, StoreError> {
        let rows = self.worker.rows(
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            vec![p(big(after)), p(big(limit))],
        )?;
        all(rows, entry_row)
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError> {
        self.worker.exec(
            "DELETE FROM versions WHERE name = $1 AND version = $2",
            vec![p(name.to_string()), p(big(version))],
        )?;
        Ok(())
    }

    fn count_rows(&self, table: &'static TableSpec) -> Result<u64, StoreError> {
        crate::image::count_rows(self, table)
    }

    fn scan_rows(
        &self,
        table: &'static TableSpec,
        sink: &mut dyn FnMut(&[RowImage]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        crate::image::scan_rows(self, table, sink)
    }

    fn insert_rows(&self, table: &'static TableSpec, rows: &[RowImage]) -> Result<(), StoreError> {
        crate::image::insert_rows(self, table, rows)
    }

    fn clear_rows(&self, table: &'static TableSpec) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {}", table.name);
        self.worker.call(move |c| c.batch(&sql))
    }
}

fn kind_text(kind: KeyringKind) -> &'static str {
    match kind {
        KeyringKind::Recipients => "recipients",
        KeyringKind::Passphrase => "passphrase",
    }
}
