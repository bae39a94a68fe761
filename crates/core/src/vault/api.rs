//! The vault's side of `secret serve`: tokens, and API calls authenticated,
//! authorised, carried out and audited — many calls per transaction.
//!
//! `serve_batch` runs every call of a batch inside one write transaction, each in a
//! savepoint of its own (a failed call is undone alone and audited with its error
//! code), appends one audit entry per call, and commits once, fsynced. Values leave
//! only after that commit: a read is durable in the audit log before it is answered,
//! yet a hundred concurrent reads cost one fsync, not a hundred (group commit).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::bulk::{current_names, reveal_each};
use super::metadata::{self, checked_secret, checked_token, reseal_token};
use super::{append, delete_in, history_in, read_in, write_in, Done, Keys, Vault};
use crate::action::Action;
use crate::audit::{Actor, AuditFilter, Entry};
use crate::crypto;
use crate::error::VaultError;
use crate::model::{
    InputError, Label, Revealed, SecretMeta, SecretName, SecretValue, VersionMeta, VersionNumber,
    VersionSelector,
};
use crate::rotation_state::{RunState, Step, StepStatus, Trigger};
use crate::scope::{allows, Need, Scope};
use crate::store::{Durability, RotationRow, SecretRow, StepRow, TokenRow, Tx};

/// Token text: `secret_<id>.<secret>`; only a keyed hash of `<secret>` is stored.
const TOKEN_PREFIX: &str = "secret_";

/// One API request, as the vault sees it.
pub struct ApiCall {
    /// The bearer token, if one was sent.
    pub token: Option<SecretString>,
    /// The client's address, for the audit log.
    pub remote: String,
    pub request_id: String,
    pub op: Op,
}

impl std::fmt::Debug for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCall")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("remote", &self.remote)
            .field("request_id", &self.request_id)
            .field("op", &self.op)
            .finish()
    }
}

/// What the request asks for.
#[derive(Debug)]
pub enum Op {
    ListSecrets {
        /// Soft-deleted secrets too.
        include_deleted: bool,
    },
    /// One value: a version number, a label, or (neither) the current version.
    Read {
        name: String,
        version: Option<u64>,
        label: Option<Label>,
    },
    Write {
        name: String,
        value: Result<SecretValue, InputError>,
        if_version: Option<u64>,
        /// Replaces the secret's description.
        description: Option<String>,
        /// The server generated the value (recorded in the audit details).
        generated: bool,
    },
    Versions {
        name: String,
    },
    /// Soft delete (`undelete` on the vault's host restores it).
    Delete {
        name: String,
    },
    /// The current values of several secrets in one call, one audited `get` each:
    /// the ones named (every one must be readable with the token's scopes), or every
    /// live secret the token may read.
    Export {
        only: Option<Vec<String>>,
        /// `export` or `run`, recorded with each read.
        purpose: String,
    },
    /// Authorise and record a rotation request; the caller starts it. `rotatable` is the
    /// caller's policy check, refused (and audited) only after auth and scope.
    Rotate {
        name: String,
        rotation_id: String,
        /// The generator of the secret's policy, or why it cannot be rotated.
        rotatable: Result<String, VaultError>,
    },
    Rotations {
        id: Option<String>,
        secret: Option<String>,
        limit: u64,
    },
    Audit {
        filter: AuditFilter,
    },
    /// A request the HTTP layer refused before it reached the vault (malformed JSON,
    /// a body over the limit, an unknown route): recorded, so that every request is.
    Refused {
        route: String,
        status: u16,
        code: &'static str,
    },
    /// Requests the HTTP layer answered without a token (public reads, refusals before
    /// the vault), counted over an interval and recorded as one entry, so that an
    /// anonymous client cannot make the log grow by one entry per request. `details`
    /// is the server's bounded summary (routes, statuses, addresses, counts).
    Tally {
        details: serde_json::Value,
    },
}

/// What the vault answers.
#[derive(Debug)]
pub enum Reply {
    Secrets(Vec<SecretMeta>),
    Value(Revealed),
    Written(VersionNumber),
    Versions(SecretRow, Vec<VersionMeta>),
    /// Whether the delete changed anything (false: it was deleted already).
    Deleted(bool),
    /// Values sorted by name, and — for a token that may list names — how many live
    /// secrets it may not read and were left out.
    Exported {
        values: Vec<Revealed>,
        omitted: Option<usize>,
    },
    RotateAccepted {
        rotation_id: String,
    },
    Rotations(Vec<(RotationRow, Vec<StepRow>)>),
    Audit(Vec<Entry>),
    Recorded,
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No token, or an unknown, malformed, expired or revoked one (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid token without the scope (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl From<crate::store::StoreError> for CallError {
    fn from(e: crate::store::StoreError) -> Self {
        CallError::Vault(e.into())
    }
}

impl CallError {
    fn code(&self) -> &'static str {
        match self {
            CallError::Unauthorized(_) => "unauthorized",
            CallError::Forbidden(_) => "forbidden",
            CallError::Vault(e) => e.code(),
        }
    }
}

/// A token that authenticated.
struct Caller {
    id: String,
    scopes: Vec<Scope>,
}

fn parse_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 32)
        .then_some((id, secret))
}

fn authenticate(
    tx: &Tx<'_>,
    keys: &Keys,
    token: Option<&SecretString>,
    now: i64,
) -> Result<Caller, CallError> {
    let token = token
        .ok_or_else(|| CallError::Unauthorized("send Authorization: Bearer <token>".into()))?;
    let (id, secret) = parse_token(token.expose_secret())
        .ok_or_else(|| CallError::Unauthorized("the token is malformed".into()))?;
    let id = format!("tok_{id}");
    // A row whose scopes, expiry or revocation were edited without the key fails here.
    let row = checked_token(tx, keys, &id)?
        .ok_or_else(|| CallError::Unauthorized("unknown token".into()))?;
    // Constant-time: HMAC verification of the presented secret against the stored hash.
    if !keys.token.verify(secret.as_bytes(), &row.hash) {
        return Err(CallError::Unauthorized("unknown token".into()));
    }
    if row.revoked_at_ms.is_some() {
        return Err(CallError::Unauthorized(format!("token {id} was revoked")));
    }
    if row.expires_at_ms.is_some_and(|t| t <= now) {
        return Err(CallError::Unauthorized(format!("token {id} has expired")));
    }
    tx.touch_token(&id, now)?;
    let scopes = row.scopes.iter().filter_map(|s| s.parse().ok()).collect();
    Ok(Caller { id, scopes })
}

/// The id of a token whose secret verifies, whatever its state (for the audit actor).
fn verified_id(
    tx: &Tx<'_>,
    keys: &Keys,
    token: Option<&SecretString>,
) -> Result<Option<String>, VaultError> {
    let Some((id, secret)) = token.and_then(|t| parse_token(t.expose_secret())) else {
        return Ok(None);
    };
    let id = format!("tok_{id}");
    Ok(tx
        .token(&id)?
        .filter(|row| keys.token.verify(secret.as_bytes(), &row.hash))
        .map(|_| id))
}

fn require(caller: &Caller, need: Need<'_>, what: &str) -> Result<(), CallError> {
    if allows(&caller.scopes, need) {
        Ok(())
    } else {
        Err(CallError::Forbidden(format!(
            "token {} lacks the scope for {what}",
            caller.id
        )))
    }
}

/// The audit action and secret a call is recorded under.
fn action_of(op: &Op) -> (Action, Option<&str>) {
    match op {
        Op::ListSecrets { .. } => (Action::List, None),
        Op::Read { name, .. } => (Action::Get, Some(name)),
        Op::Write { name, .. } => (Action::Set, Some(name)),
        Op::Versions { name } => (Action::History, Some(name)),
        Op::Delete { name } => (Action::Delete, Some(name)),
        Op::Export { .. } => (Action::Export, None),
        Op::Rotate { name, .. } => (Action::Rotate(Step::Request), Some(name)),
        Op::Rotations { secret, .. } => (Action::RotationsRead, secret.as_deref()),
        Op::Audit { .. } => (Action::AuditRead, None),
        Op::Refused { .. } | Op::Tally { .. } => (Action::ApiRefused, None),
    }
}

/// Carries out one call inside the batch's transaction. `actor` is who the entries it
/// appends itself (an export's reads) name.
fn handle(
    tx: &Tx<'_>,
    keys: &Keys,
    now: i64,
    call: &ApiCall,
    caller: &Option<Caller>,
    actor: &Actor,
) -> Result<Done<Reply>, CallError> {
    let caller_ref = || {
        caller
            .as_ref()
            .ok_or_else(|| CallError::Unauthorized("no token".into()))
    };
    // A name that is not one is refused before anything echoes it (it may be a value
    // sent in the wrong place).
    if let (_, Some(raw)) = action_of(&call.op) {
        SecretName::new(raw).map_err(VaultError::from)?;
    }
    match &call.op {
        Op::Refused { route, status, .. } => Ok(Done::new(
            Reply::Recorded,
            None,
            json!({ "route": route, "status": status }),
        )),
        Op::Tally { details } => Ok(Done::new(Reply::Recorded, None, details.clone())),
        Op::ListSecrets { include_deleted } => {
            require(caller_ref()?, Need::List, "secrets:list")?;
            let secrets = tx.list_secrets(*include_deleted)?;
            metadata::check_listed(tx, keys, secrets.iter().map(|s| s.name.as_str()))?;
            let count = secrets.len();
            Ok(Done::new(
                Reply::Secrets(secrets),
                None,
                json!({ "count": count, "include_deleted": include_deleted }),
            ))
        }
        Op::Read {
            name,
            version,
            label,
        } => {
            require(
                caller_ref()?,
                Need::Read(name),
                &format!("secrets:read:{name}"),
            )?;
            let name = SecretName::new(name).map_err(VaultError::from)?;
            let selector = match (version, label) {
                // Both: the version, which must carry the label (checked below).
                (Some(v), Some(_)) => {
                    VersionSelector::Number(VersionNumber::new(*v).ok_or_else(|| {
                        VaultError::Usage(format!("a version is a number from 1 to {}", i64::MAX))
                    })?)
                }
                (Some(v), None) => {
                    VersionSelector::Number(VersionNumber::new(*v).ok_or_else(|| {
                        VaultError::Usage(format!("a version is a number from 1 to {}", i64::MAX))
                    })?)
                }
                (None, Some(label)) => VersionSelector::Label(*label),
                (None, None) => VersionSelector::Label(Label::Current),
            };
            if let (Some(v), Some(label)) = (version, label) {
                let row = checked_secret(tx, keys, name.as_str())?
                    .ok_or_else(|| super::not_found(&name))?;
                let labelled = match label {
                    Label::Current => row.current_version,
                    Label::Previous => row.previous_version,
                    Label::Pending => row.pending_version,
                };
                if labelled != Some(*v) {
                    return Err(VaultError::NotFound(format!(
                        "version {v} of {name} is not its {} version",
                        label.as_str()
                    ))
                    .into());
                }
            }
            let revealed = read_in(tx, keys, &name, selector)?;
            let v = revealed.version.get();
            let selector_text = match selector {
                VersionSelector::Label(l) => l.as_str(),
                VersionSelector::Number(_) => "version",
            };
            Ok(Done::new(
                Reply::Value(revealed),
                Some(v),
                json!({ "selector": selector_text }),
            ))
        }
        Op::Delete { name } => {
            require(
                caller_ref()?,
                Need::Delete(name),
                &format!("secrets:delete:{name}"),
            )?;
            let name = SecretName::new(name).map_err(VaultError::from)?;
            let (changed, version) = delete_in(tx, keys, &name, now)?;
            Ok(Done::new(
                Reply::Deleted(changed),
                version,
                json!({ "changed": changed }),
            ))
        }
        Op::Export { only, purpose } => {
            let caller = caller_ref()?;
            let names = match only {
                Some(raw) => {
                    let names = raw
                        .iter()
                        .map(|n| SecretName::new(n))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(VaultError::from)?;
                    let denied: Vec<String> = names
                        .iter()
                        .filter(|n| !allows(&caller.scopes, Need::Read(n.as_str())))
                        .map(|n| format!("secrets:read:{n}"))
                        .collect();
                    if !denied.is_empty() {
                        return Err(CallError::Forbidden(format!(
                            "token {} lacks the scope for {}",
                            caller.id,
                            denied.join(", ")
                        )));
                    }
                    current_names(tx, keys, Some(&names))?
                }
                None => {
                    let reads_any = caller
                        .scopes
                        .iter()
                        .any(|s| matches!(s, Scope::Admin | Scope::SecretsRead(_)));
                    if !reads_any {
                        return Err(CallError::Forbidden(format!(
                            "token {} lacks the scope for secrets:read:<name>",
                            caller.id
                        )));
                    }
                    current_names(tx, keys, None)?
                }
            };
            let (readable, hidden): (Vec<SecretName>, Vec<SecretName>) = names
                .into_iter()
                .partition(|n| allows(&caller.scopes, Need::Read(n.as_str())));
            // How many were left out is itself metadata: only a token that may list
            // names learns it.
            let omitted = allows(&caller.scopes, Need::List).then_some(hidden.len());
            let details = json!({
                "selector": "current",
                "purpose": purpose,
                "via": "api",
                "remote": call.remote,
            });
            let (values, _) = reveal_each(tx, keys, actor, now, &readable, &details)?;
            let count = values.len();
            Ok(Done::new(
                Reply::Exported { values, omitted },
                None,
                json!({ "purpose": purpose, "count": count, "omitted": hidden.len() }),
            ))
        }
        Op::Write {
            name,
            value,
            if_version,
            description,
            generated,
        } => {
            require(
                caller_ref()?,
                Need::Write(name),
                &format!("secrets:write:{name}"),
            )?;
            let name = SecretName::new(name).map_err(VaultError::from)?;
            let value = value.as_ref().map_err(|e| VaultError::Input(e.clone()))?;
            let options = super::SetOptions {
                if_version: *if_version,
                description: description.clone(),
                generated: *generated,
            };
            let (version, details) = write_in(tx, now, keys, &name, value, &options)?;
            Ok(Done::new(
                Reply::Written(version),
                Some(version.get()),
                details,
            ))
        }
        Op::Versions { name } => {
            require(caller_ref()?, Need::List, "secrets:list")?;
            let name = SecretName::new(name).map_err(VaultError::from)?;
            let (row, versions) = history_in(tx, keys, &name)?;
            Ok(Done::new(Reply::Versions(row, versions), None, json!({})))
        }
        Op::Rotate {
            name,
            rotation_id,
            rotatable,
        } => {
            let name = SecretName::new(name).map_err(VaultError::from)?;
            require(
                caller_ref()?,
                Need::Rotate(name.as_str()),
                &format!("rotate:{name}"),
            )?;
            // The refusal keeps its kind (no policy: not found; a manual secret: usage),
            // so the API answers with the status `secret rotate` exits with.
            let generator = match rotatable {
                Ok(g) => g.clone(),
                Err(VaultError::NotFound(m)) => return Err(VaultError::NotFound(m.clone()).into()),
                Err(VaultError::Usage(m)) => return Err(VaultError::Usage(m.clone()).into()),
                Err(other) => return Err(VaultError::Conflict(other.to_string()).into()),
            };
            if let Some(open) = tx.rotation_in_progress(name.as_str())? {
                // As `secret rotate NAME` does: an open run (requested, interrupted,
                // stopped) is the one to go on with, never a second run beside it. The
                // scheduler's pass resumes it, or finds it running elsewhere.
                return Ok(Done::new(
                    Reply::RotateAccepted {
                        rotation_id: open.clone(),
                    },
                    None,
                    json!({ "rotation": open, "resumes": true }),
                ));
            }
            let secret = checked_secret(tx, keys, name.as_str())?.ok_or_else(|| {
                VaultError::Conflict(format!("{name} has no value yet: set its first one (PUT)"))
            })?;
            // The request is a rotation row from the start: it survives a restart, a
            // second request sees it (409), and whichever process rotates picks it up.
            tx.save_rotation(&RotationRow::begun(
                rotation_id.clone(),
                name.to_string(),
                generator,
                Trigger::Api,
                RunState::Requested,
                secret.current_version,
                now,
            ))?;
            tx.insert_step(
                rotation_id,
                Step::Request,
                StepStatus::Ok,
                now,
                &json!({ "via": "api" }).to_string(),
            )?;
            Ok(Done::new(
                Reply::RotateAccepted {
                    rotation_id: rotation_id.clone(),
                },
                None,
                json!({ "rotation": rotation_id }),
            ))
        }
        Op::Rotations { id, secret, limit } => {
            let rows = match id {
                // One run: the scope is checked against its secret.
                Some(id) => {
                    let row = tx
                        .rotation(id)?
                        .ok_or_else(|| VaultError::NotFound(format!("no rotation {id}")))?;
                    require(
                        caller_ref()?,
                        Need::Rotations(Some(&row.secret)),
                        &format!("rotate:{}", row.secret),
                    )?;
                    vec![row]
                }
                None => {
                    require(
                        caller_ref()?,
                        Need::Rotations(secret.as_deref()),
                        "rotate:<name> or audit:read",
                    )?;
                    tx.rotations(secret.as_deref(), *limit)?
                }
            };
            let mut out = Vec::new();
            for row in rows {
                let steps = tx.steps(&row.id)?;
                out.push((row, steps));
            }
            Ok(Done::new(Reply::Rotations(out), None, json!({})))
        }
        Op::Audit { filter } => {
            require(caller_ref()?, Need::AuditRead, "audit:read")?;
            let entries = tx.query_audit(filter)?;
            let n = entries.len();
            Ok(Done::new(
                Reply::Audit(entries),
                None,
                json!({ "returned": n }),
            ))
        }
    }
}

impl Vault {
    /// Creates an API token. Returns its record and the token text, shown once.
    pub fn create_token(
        &mut self,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<(TokenRow, SecretString), VaultError> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(VaultError::Usage(
                "a token needs a --name of 1 to 100 characters".into(),
            ));
        }
        if scopes.is_empty() {
            return Err(VaultError::Usage(
                "a token needs at least one --scope".into(),
            ));
        }
        for s in scopes {
            s.parse::<Scope>().map_err(VaultError::Usage)?;
        }
        let id_hex = crypto::hex(&crypto::random_array::<8>()?);
        let secret_bytes = crypto::random_bytes(32)?;
        use base64::Engine;
        let secret = zeroize::Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes.as_slice()),
        );
        let now = self.clock.now_ms();
        let row = TokenRow {
            id: format!("tok_{id_hex}"),
            name: name.to_string(),
            hash: self.keys.token.sign(secret.as_bytes()).to_vec(),
            scopes: scopes.to_vec(),
            created_at_ms: now,
            expires_at_ms: ttl
                .map(|t| now.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))),
            revoked_at_ms: None,
            last_used_at_ms: None,
        };
        let text = SecretString::from(format!("{TOKEN_PREFIX}{id_hex}.{}", secret.as_str()));
        let details = json!({ "token": row.id, "name": row.name, "scopes": row.scopes, "expires_at_ms": row.expires_at_ms });
        self.audited(Action::TokenCreate, None, |tx, keys, _now| {
            tx.insert_token(&row)?;
            reseal_token(tx, keys, &row.id)?;
            Ok(Done::new((), None, details))
        })?;
        Ok((row, text))
    }

    /// Every token (never their secrets).
    pub fn tokens(&mut self) -> Result<Vec<TokenRow>, VaultError> {
        self.audited(Action::TokenList, None, |tx, keys, _now| {
            let tokens = metadata::checked_tokens(tx, keys)?;
            let n = tokens.len();
            Ok(Done::new(tokens, None, json!({ "count": n })))
        })
    }

    /// Revokes a token. False when it was already revoked.
    pub fn revoke_token(&mut self, id: &str) -> Result<bool, VaultError> {
        // Not a token id: refused (and audited) without repeating it, since it may be a
        // token's secret pasted in the wrong place.
        let is_id = id
            .strip_prefix("tok_")
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        self.audited(Action::TokenRevoke, None, |tx, keys, now| {
            if !is_id {
                return Err(VaultError::Usage(
                    "a token id is tok_ and 16 hex digits; `secret token list` shows them".into(),
                ));
            }
            if checked_token(tx, keys, id)?.is_none() {
                return Err(VaultError::NotFound(format!(
                    "no token {id}; `secret token list` shows them"
                )));
            }
            let changed = tx.revoke_token(id, now)?;
            if changed {
                reseal_token(tx, keys, id)?;
            }
            Ok(Done::new(
                changed,
                None,
                json!({ "token": id, "changed": changed }),
            ))
        })
    }

    /// Carries out a batch of API calls in one transaction (see the module doc).
    /// Answers come back in order; if the commit fails, every call fails and no value
    /// leaves.
    pub fn serve_batch(&mut self, calls: &[ApiCall]) -> Vec<Result<Reply, CallError>> {
        let keys = &self.keys;
        let clock = &self.clock;
        let result = self.store.write_with(Durability::Synced, |tx| {
            let mut replies = Vec::with_capacity(calls.len());
            for call in calls {
                let at = clock.now_ms();
                let (action, secret) = action_of(&call.op);
                let needs_token = !matches!(call.op, Op::Refused { .. } | Op::Tally { .. });
                let caller = if needs_token {
                    authenticate(tx, keys, call.token.as_ref(), at).map(Some)
                } else {
                    Ok(None)
                };
                // Who the entry names: the token that authenticated, else nobody (a
                // refused token's claimed id goes in the details, not the actor).
                let authenticated = match &caller {
                    Ok(Some(c)) => Some(format!("token:{}", c.id)),
                    // A refused request still names the token it carried, if it verifies.
                    Ok(None) if matches!(call.op, Op::Refused { .. }) => {
                        verified_id(tx, keys, call.token.as_ref())?.map(|id| format!("token:{id}"))
                    }
                    // A revoked or expired token whose secret still verifies is that
                    // token: the entry names it. An unverified claim does not.
                    Err(CallError::Unauthorized(_)) => {
                        verified_id(tx, keys, call.token.as_ref())?.map(|id| format!("token:{id}"))
                    }
                    _ => None,
                };
                let actor = Actor {
                    name: authenticated.clone().unwrap_or_else(|| "anonymous".into()),
                    pid: None,
                    request_id: call.request_id.clone(),
                };
                tx.savepoint()?;
                let outcome = caller.and_then(|caller| handle(tx, keys, at, call, &caller, &actor));
                let result = match outcome {
                    Ok(done) => {
                        tx.release()?;
                        Ok(done)
                    }
                    Err(e) => {
                        tx.rollback_to_savepoint()?;
                        Err(e)
                    }
                };
                let mut details = json!({ "via": "api", "remote": call.remote });
                let (outcome_code, version) = match &result {
                    Ok(done) => {
                        if let (Some(map), Some(extra)) =
                            (details.as_object_mut(), done.details.as_object())
                        {
                            map.extend(extra.clone());
                        }
                        match &call.op {
                            Op::Refused { code, .. } => (*code, None),
                            Op::Tally { .. } => ("tally", None),
                            _ => ("ok", done.version),
                        }
                    }
                    Err(e) => {
                        details["error"] = json!(e.to_string());
                        // The token id it claimed, not its actor: anyone can claim one.
                        if let (None, Some(claimed)) =
                            (&authenticated, claimed_token(call.token.as_ref()))
                        {
                            details["claimed_token"] = json!(claimed);
                        }
                        (e.code(), None)
                    }
                };
                // An invalid name is not recorded: it may be a value in the wrong place.
                let secret = secret.filter(|s| SecretName::new(s).is_ok());
                append(
                    tx,
                    keys,
                    &actor,
                    at,
                    action.as_str(),
                    secret,
                    version,
                    outcome_code,
                    &details,
                )?;
                replies.push(result.map(|done| done.value));
            }
            Ok::<_, VaultError>(replies)
        });
        match result {
            Ok(replies) => replies,
            Err(e) => {
                let message = e.to_string();
                calls
                    .iter()
                    .map(|_| Err(CallError::Vault(VaultError::AuditWrite(message.clone()))))
                    .collect()
            }
        }
    }

    /// Whether the store takes writes, under the key this process holds (for `/readyz`:
    /// a vault rekeyed or restored by another process is not ready until serve restarts).
    pub fn check_writable(&mut self) -> Result<(), VaultError> {
        let keys = &self.keys;
        self.store
            .write_with(Durability::Committed, |tx| keys.ensure_in_force(tx))
    }
}

/// The token id a refused call claimed, if its token had that shape.
fn claimed_token(token: Option<&SecretString>) -> Option<String> {
    token
        .and_then(|t| parse_token(t.expose_secret()))
        .map(|(id, _)| format!("tok_{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_own_shape() {
        let secret = "a".repeat(43);
        assert_eq!(
            parse_token(&format!("secret_0123456789abcdef.{secret}")),
            Some(("0123456789abcdef", secret.as_str()))
        );
        assert!(parse_token("Bearer x").is_none());
        assert!(parse_token(&format!("secret_0123.{secret}")).is_none());
        assert!(parse_token("secret_0123456789abcdef.short").is_none());
    }

    #[test]
    fn debug_of_a_call_hides_its_token_and_value() {
        let call = ApiCall {
            token: Some(SecretString::from(
                "secret_0123456789abcdef.topsecret-token".to_string(),
            )),
            remote: "127.0.0.1".into(),
            request_id: "r".into(),
            op: Op::Write {
                name: "X".into(),
                value: SecretValue::from_bytes(
                    zeroize::Zeroizing::new(b"the-value".to_vec()),
                    false,
                ),
                if_version: None,
                description: None,
                generated: false,
            },
        };
        let shown = format!("{call:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("the-value"),
            "{shown}"
        );
    }
}
