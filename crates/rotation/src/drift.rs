//! Drift: whether each target still holds what the vault says it should — someone
//! pasted a variable by hand, a push half-failed, a value was set in the vault and never
//! pushed — and `--fix`, which pushes the vault's values back.
//!
//! For every secret with a policy and every target in its `push` list:
//!
//! - the variable named like the secret holds the vault's current version;
//! - with `previous_as`, during grace (an open run in state `grace`) that variable holds
//!   the version the run replaced, and outside grace it is absent.
//!
//! Values are compared by keyed fingerprint only ([`secret_core::audit::Fingerprinter`],
//! the one `set` records in the audit log): a value read from a target is fingerprinted
//! at once and dropped, so no value is printed, logged, audited or kept. A fingerprint
//! that matches an older version says the target is behind (the vault changed since its
//! last push); one that matches no version says the value was changed at the target.
//! A secret whose rotation is pushing, verifying or rolling back is not compared: its
//! targets are expected to move under it.
//!
//! [`Drift::check`] records one `drift.check` audit entry with what it found;
//! [`Drift::fix`] takes each secret's rotation lock (so no rotation runs alongside it),
//! re-reads what the vault expects, then per target makes one delivery (Railway: one
//! `variableCollectionUpsert` with `skipDeploys`, and a `variableDelete` per variable
//! that must go) and one deploy, and records one `drift.fix` entry per secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{holder_id, holder_liveness, EngineOptions, LOCK_TTL_MS};
use crate::http::ExternalError;
use crate::targets::{self, Connection, Live, Variables};
use secret_core::action::Action;
use secret_core::crypto;
use secret_core::error::{exit, VaultError};
use secret_core::model::{VersionNumber, VersionSelector};
use secret_core::policy::PolicySet;
use secret_core::rotation_state::RunState;
use secret_core::vault::{SecretPrints, Vault};

/// What a drift check found for one variable at one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// It holds what the vault says.
    Ok,
    /// It holds another value.
    Differs,
    /// It does not hold the variable (or the vault holds no value for it).
    Missing,
    /// It holds a variable that should be absent (`previous_as` outside grace).
    Unexpected,
    /// It holds the variable, sealed: it cannot be read back to compare.
    Sealed,
    /// The secret is being rotated: not compared until that ends.
    Rotating,
    /// The target could not be read.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Differs => "differs",
            State::Missing => "missing",
            State::Unexpected => "unexpected",
            State::Sealed => "sealed",
            State::Rotating => "rotating",
            State::Error => "error",
        }
    }

    /// Whether this is drift: the target and the vault disagree (exit 8, metric 1).
    pub fn is_drift(self) -> bool {
        matches!(self, State::Differs | State::Missing | State::Unexpected)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side moved, when the fingerprints tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Changed {
    /// The target holds a value that is no version in the vault.
    Target,
    /// The vault moved on (or lacks the value) and the target was not pushed.
    Vault,
}

/// What the vault says one variable at one target should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// The secret's current version; `None`: the vault holds no current value.
    Current(Option<u64>),
    /// During grace: the version the grace run replaced, under `previous_as`.
    Previous(u64),
    /// Outside grace, `previous_as` is not set.
    Absent,
    /// A rotation is under way: not compared.
    Rotating { run: String, state: RunState },
}

impl Expect {
    fn label(&self) -> &'static str {
        match self {
            Expect::Current(_) | Expect::Rotating { .. } => "current",
            Expect::Previous(_) => "previous",
            Expect::Absent => "absent",
        }
    }

    fn version(&self) -> Option<u64> {
        match self {
            Expect::Current(v) => *v,
            Expect::Previous(v) => Some(*v),
            Expect::Absent | Expect::Rotating { .. } => None,
        }
    }
}

/// One variable the vault has an opinion about.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    target: String,
    variable: String,
    secret: String,
    expect: Expect,
}

/// What a target holds under one name, as a fingerprint (the value itself is gone).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    Print(String),
    Sealed,
}

/// One variable at one target. Never a value.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub target: String,
    pub variable: String,
    pub secret: String,
    pub state: State,
    /// What the vault expects there: `current`, `previous` or `absent`.
    pub expected: &'static str,
    /// The vault version that should be there.
    pub vault_version: Option<u64>,
    /// The vault version the target holds, when it holds one.
    pub target_version: Option<u64>,
    /// Which side moved, when known.
    pub changed: Option<Changed>,
    pub note: String,
    /// The keyed fingerprint of a value the vault never had (audit log only).
    #[serde(skip)]
    foreign: Option<String>,
    #[serde(skip)]
    expect: Expect,
}

impl Finding {
    fn new(w: &Wanted, state: State, note: impl Into<String>) -> Self {
        Self {
            target: w.target.clone(),
            variable: w.variable.clone(),
            secret: w.secret.clone(),
            state,
            expected: w.expect.label(),
            vault_version: w.expect.version(),
            target_version: None,
            changed: None,
            note: note.into(),
            foreign: None,
            expect: w.expect.clone(),
        }
    }

    /// What the audit log keeps of it: names, states, versions; never a value.
    fn audit(&self) -> Value {
        let mut v = json!({
            "target": self.target,
            "variable": self.variable,
            "secret": self.secret,
            "state": self.state,
            "vault_version": self.vault_version,
            "target_version": self.target_version,
            "changed": self.changed,
        });
        if let Some(fp) = &self.foreign {
            v["fingerprint"] = json!(fp);
        }
        v
    }
}

/// Everything one check found, by target then variable.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn drifted(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.state.is_drift())
    }

    /// 8 when anything drifted, else 1 when a target could not be read, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.drifted().next().is_some() {
            exit::DRIFT
        } else if self.findings.iter().any(|f| f.state == State::Error) {
            exit::OTHER
        } else {
            exit::OK
        }
    }

    /// One line naming what drifted (or could not be read), for the error message.
    pub fn summary(&self) -> String {
        let name = |f: &Finding| format!("{} at {} {}", f.variable, f.target, f.state);
        let drifted: Vec<String> = self.drifted().map(name).collect();
        if !drifted.is_empty() {
            return format!(
                "drift found: {}; `secret drift --fix` pushes the vault's values",
                drifted.join(", ")
            );
        }
        let errors: BTreeSet<&str> = self
            .findings
            .iter()
            .filter(|f| f.state == State::Error)
            .map(|f| f.target.as_str())
            .collect();
        let errors: Vec<&str> = errors.into_iter().collect();
        format!("could not read target(s) {}", errors.join(", "))
    }
}

/// What a fix did at one target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Fix {
    pub target: String,
    /// Variables set, with the vault version each now holds.
    pub set: BTreeMap<String, u64>,
    /// Variables removed.
    pub removed: Vec<String>,
    pub deployment: Option<String>,
    /// Why the target could not be fixed (nothing more was tried there).
    pub error: Option<String>,
    /// Variables left as they were, and why.
    pub skipped: BTreeMap<String, String>,
}

/// Checks and fixes drift for one set of policies.
pub struct Drift {
    policies: PolicySet,
    connection: Connection,
    progress: bool,
}

impl Drift {
    /// `options` gives the HTTP timeout, retries and deploy polling (the same knobs as
    /// the rotation engine's).
    pub fn new(policies: PolicySet, options: &EngineOptions) -> Result<Self, VaultError> {
        let http = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .user_agent(concat!("secret/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| VaultError::Io(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            policies,
            connection: Connection {
                http,
                retry: options.retry.clone(),
                poll_interval: options.poll_interval,
            },
            progress: options.progress,
        })
    }

    fn note(&self, line: String) {
        if self.progress {
            eprintln!("{line}");
        }
    }

    /// Reads every target and compares, then records one `drift.check` audit entry.
    pub async fn check(&self, vault: &mut Vault) -> Result<Report, VaultError> {
        let (wanted, prints) = expectations(vault, &self.policies)?;
        let fingerprint = vault.fingerprinter();
        let mut by_target: BTreeMap<&str, Vec<&Wanted>> = BTreeMap::new();
        for w in &wanted {
            by_target.entry(w.target.as_str()).or_default().push(w);
        }
        let mut findings = Vec::new();
        for (target_name, items) in by_target {
            let names: Vec<String> = items
                .iter()
                .filter(|w| !matches!(w.expect, Expect::Rotating { .. }))
                .map(|w| w.variable.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let held = if names.is_empty() {
                Ok(BTreeMap::new())
            } else {
                let live = self.read(vault, target_name, &names).await;
                live.map(|live| fingerprinted(live, &fingerprint))
            };
            for w in items {
                let finding = match (&held, &w.expect) {
                    (_, Expect::Rotating { .. }) | (Ok(_), _) => {
                        let held = held.as_ref().ok().and_then(|h| h.get(&w.variable));
                        classify(w, prints.get(&w.secret), held)
                    }
                    (Err(e), _) => Finding::new(w, State::Error, e.to_string()),
                };
                findings.push(finding);
            }
        }
        let report = Report { findings };
        record_check(vault, &report)?;
        Ok(report)
    }

    async fn read(
        &self,
        vault: &mut Vault,
        target_name: &str,
        names: &[String],
    ) -> Result<targets::LiveVariables, ExternalError> {
        let target = targets::open(
            vault,
            &self.policies,
            target_name,
            "drift check",
            &self.connection,
        )?;
        target.live(names).await
    }

    /// Pushes the vault's values where `report` found drift: per target one delivery
    /// and one deploy, under each secret's rotation lock. Returns what was done per
    /// target; run [`Drift::check`] again to see the result.
    pub async fn fix(&self, vault: &mut Vault, report: &Report) -> Result<Vec<Fix>, VaultError> {
        let secrets: BTreeSet<String> = report.drifted().map(|f| f.secret.clone()).collect();
        let nonce = crypto::hex(&crypto::random_array::<4>()?);
        let holder = holder_id(&nonce);
        let mut locked = BTreeSet::new();
        let mut busy = BTreeSet::new();
        for secret in &secrets {
            let lock = format!("rotation:{secret}");
            match vault.acquire_lock(&lock, &holder, LOCK_TTL_MS, holder_liveness)? {
                Ok(()) => {
                    locked.insert(secret.clone());
                }
                Err(_) => {
                    busy.insert(secret.clone());
                }
            }
        }
        let result = self.fix_locked(vault, report, &locked, &busy).await;
        for secret in &locked {
            let _ = vault.release_lock(&format!("rotation:{secret}"), &holder);
        }
        result
    }

    async fn fix_locked(
        &self,
        vault: &mut Vault,
        report: &Report,
        locked: &BTreeSet<String>,
        busy: &BTreeSet<String>,
    ) -> Result<Vec<Fix>, VaultError> {
        // What the vault expects now, under the locks: a rotation may have moved on
        // since the check.
        let (now, prints) = expectations(vault, &self.policies)?;
        let mut fixes: BTreeMap<String, Fix> = BTreeMap::new();
        let mut plans: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
        for f in report.drifted() {
            let fix = fixes.entry(f.target.clone()).or_insert_with(|| Fix {
                target: f.target.clone(),
                ..Fix::default()
            });
            match why_not_fix(f, locked, busy, &now, &prints) {
                Some(reason) => {
                    fix.skipped.insert(f.variable.clone(), reason.to_string());
                }
                None => plans.entry(f.target.clone()).or_default().push(f),
            }
        }
        for (target_name, findings) in plans {
            let Some(fix) = fixes.get_mut(&target_name) else {
                continue;
            };
            if let Err(e) = self.fix_target(vault, &target_name, &findings, fix).await {
                fix.error = Some(e.to_string());
            }
            record_fix(vault, fix, &findings)?;
        }
        Ok(fixes.into_values().collect())
    }

    /// One delivery and one deploy at one target, then its health check.
    async fn fix_target(
        &self,
        vault: &mut Vault,
        target_name: &str,
        findings: &[&Finding],
        fix: &mut Fix,
    ) -> Result<(), FixError> {
        let mut vars = Variables::new();
        let mut versions = BTreeMap::new();
        for f in findings {
            match &f.expect {
                Expect::Current(Some(v)) | Expect::Previous(v) => {
                    let number = VersionNumber::new(*v).ok_or_else(|| {
                        FixError::Vault(VaultError::NotFound(format!(
                            "{} has no version {v}",
                            f.secret
                        )))
                    })?;
                    let value = vault
                        .reveal(&f.secret, VersionSelector::Number(number), "drift fix")?
                        .value;
                    vars.insert(f.variable.clone(), Some(value));
                    versions.insert(f.variable.clone(), *v);
                }
                Expect::Absent => {
                    vars.insert(f.variable.clone(), None);
                }
                Expect::Current(None) | Expect::Rotating { .. } => {}
            }
        }
        if vars.is_empty() {
            return Ok(());
        }
        let target = targets::open(
            vault,
            &self.policies,
            target_name,
            "drift fix",
            &self.connection,
        )?;
        self.note(format!(
            "fix {}: push {}",
            target.describe(),
            vars.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        // The newest deployment before the delivery: a delete redeploys on its own at
        // Railway, and then that deployment is the one deploy of this fix.
        let before = target.latest_deployment().await?;
        target.deliver(&vars).await?;
        fix.set = versions;
        fix.removed = vars
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let deployment = target.deploy(before.as_ref()).await?;
        fix.deployment = deployment.as_ref().map(|d| d.0.clone());
        let progress = |line: String| self.note(line);
        target.wait_healthy(deployment.as_ref(), &progress).await?;
        Ok(())
    }
}

/// What a target holds, as fingerprints: each value is fingerprinted and dropped
/// (wiped) here, and goes no further.
fn fingerprinted(
    live: targets::LiveVariables,
    fingerprint: &secret_core::audit::Fingerprinter,
) -> BTreeMap<String, Held> {
    live.into_iter()
        .map(|(name, v)| {
            let held = match v {
                Live::Value(value) => Held::Print(fingerprint.of(value.expose_secret().as_bytes())),
                Live::Sealed => Held::Sealed,
            };
            (name, held)
        })
        .collect()
}

/// One `drift.check` entry: how much was checked and every finding that is not `ok`.
fn record_check(vault: &mut Vault, report: &Report) -> Result<(), VaultError> {
    let findings: Vec<Value> = report
        .findings
        .iter()
        .filter(|f| f.state != State::Ok)
        .map(Finding::audit)
        .collect();
    vault.record(
        Action::DriftCheck,
        None,
        json!({
            "checked": report.findings.len(),
            "drift": report.drifted().count(),
            "findings": findings,
        }),
    )
}

/// Why a drifted variable is left as it is, if it is.
fn why_not_fix(
    f: &Finding,
    locked: &BTreeSet<String>,
    busy: &BTreeSet<String>,
    now: &[Wanted],
    prints: &BTreeMap<String, SecretPrints>,
) -> Option<&'static str> {
    let expected_now = now
        .iter()
        .find(|w| w.target == f.target && w.variable == f.variable)
        .map(|w| &w.expect);
    let readable = match f.expect {
        Expect::Current(Some(v)) | Expect::Previous(v) => prints
            .get(&f.secret)
            .is_some_and(|p| p.of_version(v).is_some()),
        _ => true,
    };
    if busy.contains(&f.secret) {
        Some("another process is rotating it; run `secret drift` once it is done")
    } else if !locked.contains(&f.secret) {
        Some("its rotation lock was not taken")
    } else if expected_now != Some(&f.expect) {
        Some("the vault changed since the check (a rotation moved on); run `secret drift` again")
    } else if f.expect == Expect::Current(None) {
        Some("the vault holds no value to push")
    } else if !readable {
        Some("the vault's version was destroyed: nothing to push")
    } else {
        None
    }
}

/// One `drift.fix` entry per secret fixed at a target: what was set to which version,
/// what was removed, the deployment, and `ok` or `failed`.
fn record_fix(vault: &mut Vault, fix: &Fix, findings: &[&Finding]) -> Result<(), VaultError> {
    let mut by_secret: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in findings {
        by_secret
            .entry(f.secret.as_str())
            .or_default()
            .push(f.variable.as_str());
    }
    for (secret, variables) in by_secret {
        let set: BTreeMap<&str, u64> = variables
            .iter()
            .filter_map(|v| fix.set.get(*v).map(|version| (*v, *version)))
            .collect();
        let removed: Vec<&str> = variables
            .iter()
            .copied()
            .filter(|v| fix.removed.iter().any(|r| r == v))
            .collect();
        let outcome = if fix.error.is_some() { "failed" } else { "ok" };
        vault.record_outcome(
            Action::DriftFix,
            Some(secret),
            outcome,
            json!({
                "target": fix.target,
                "set": set,
                "removed": removed,
                "deployment": fix.deployment,
                "error": fix.error,
            }),
        )?;
    }
    Ok(())
}

/// Why a fix at one target stopped.
#[derive(Debug, thiserror::Error)]
enum FixError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Target(#[from] ExternalError),
}

/// What every target should hold, from the policies and the vault's records, with
/// the fingerprints of each secret's versions.
fn expectations(
    vault: &mut Vault,
    policies: &PolicySet,
) -> Result<(Vec<Wanted>, BTreeMap<String, SecretPrints>), VaultError> {
    let open = vault.open_rotations()?;
    let mut wanted = Vec::new();
    let mut prints = BTreeMap::new();
    for (name, policy) in policies.secrets.iter().filter(|(_, p)| !p.push.is_empty()) {
        let found = vault.fingerprints(name)?;
        let runs: Vec<_> = open.iter().filter(|r| &r.secret == name).collect();
        // Push, verify, finish and rollback move the targets; before push nothing did.
        let moving = runs.iter().find(|r| {
            !matches!(
                r.state,
                RunState::Grace | RunState::Requested | RunState::Create
            )
        });
        let grace = runs
            .iter()
            .find(|r| r.state == RunState::Grace)
            .and_then(|r| r.old_version);
        let current = found
            .as_ref()
            .filter(|p| p.row.deleted_at_ms.is_none())
            .and_then(|p| p.row.current_version);
        for target in &policy.push {
            let mut add = |variable: &str, expect: Expect| {
                wanted.push(Wanted {
                    target: target.clone(),
                    variable: variable.to_string(),
                    secret: name.clone(),
                    expect,
                })
            };
            let rotating = moving.map(|r| Expect::Rotating {
                run: r.id.clone(),
                state: r.state,
            });
            add(name, rotating.clone().unwrap_or(Expect::Current(current)));
            if let Some(previous_as) = &policy.previous_as {
                let expect = match (rotating, grace) {
                    (Some(r), _) => r,
                    (None, Some(old)) => Expect::Previous(old),
                    (None, None) => Expect::Absent,
                };
                add(previous_as.as_str(), expect);
            }
        }
        if let Some(p) = found {
            prints.insert(name.clone(), p);
        }
    }
    Ok((wanted, prints))
}

/// Compares what a target holds under one variable with what the vault expects.
fn classify(w: &Wanted, prints: Option<&SecretPrints>, held: Option<&Held>) -> Finding {
    let held_version = |fp: &str| prints.and_then(|p| p.version_of(fp));
    match &w.expect {
        Expect::Rotating { run, state } => Finding::new(
            w,
            State::Rotating,
            format!("rotation {run} is in {state}: compared once it ends"),
        ),
        Expect::Current(None) => {
            let why = match prints {
                None => format!(
                    "{} is not in the vault: `secret set {}`",
                    w.secret, w.secret
                ),
                Some(p) if p.row.deleted_at_ms.is_some() => format!(
                    "{} is deleted in the vault: `secret undelete {}`",
                    w.secret, w.secret
                ),
                Some(_) => format!("the vault holds no current value of {}", w.secret),
            };
            let mut f = Finding::new(w, State::Missing, why);
            f.changed = Some(Changed::Vault);
            if let Some(Held::Print(fp)) = held {
                f.target_version = held_version(fp);
            }
            f
        }
        Expect::Current(Some(want)) | Expect::Previous(want) => {
            let what = w.expect.label();
            match held {
                None => Finding::new(
                    w,
                    State::Missing,
                    format!("not set at the target; the vault's {what} is version {want}"),
                ),
                Some(Held::Sealed) => Finding::new(
                    w,
                    State::Sealed,
                    "sealed at the target: it cannot be read back to compare",
                ),
                Some(Held::Print(fp)) => match held_version(fp) {
                    Some(v) if v == *want => Finding::new(w, State::Ok, format!("version {v}")),
                    // Nothing to compare with: the target may hold the destroyed value.
                    None if prints.is_some_and(|p| p.of_version(*want).is_none()) => Finding::new(
                        w,
                        State::Differs,
                        format!(
                            "the vault's {what} version {want} was destroyed: it cannot be \
                                 compared, nor pushed"
                        ),
                    ),
                    Some(v) => {
                        let mut f = Finding::new(w, State::Differs, "");
                        f.target_version = Some(v);
                        if v < *want {
                            f.changed = Some(Changed::Vault);
                            f.note = format!(
                                "target behind: holds version {v}, the vault's {what} is {want}"
                            );
                        } else {
                            f.note = format!(
                                "holds version {v}, newer than the vault's {what} {want} \
                                 (a rotation rolled back while the target kept it?)"
                            );
                        }
                        f
                    }
                    None => {
                        let mut f = Finding::new(
                            w,
                            State::Differs,
                            format!(
                                "changed at the target: it holds a value that is no version \
                                 in the vault (the vault's {what} is version {want})"
                            ),
                        );
                        f.changed = Some(Changed::Target);
                        f.foreign = Some(fp.clone());
                        f
                    }
                },
            }
        }
        Expect::Absent => match held {
            None => Finding::new(w, State::Ok, "absent outside grace"),
            Some(Held::Sealed) => Finding::new(
                w,
                State::Unexpected,
                "set (sealed) outside grace: it should be absent",
            ),
            Some(Held::Print(fp)) => match held_version(fp) {
                Some(v) => {
                    let mut f = Finding::new(
                        w,
                        State::Unexpected,
                        format!("set outside grace (holds version {v}): it should be absent"),
                    );
                    f.target_version = Some(v);
                    f
                }
                None => {
                    let mut f = Finding::new(
                        w,
                        State::Unexpected,
                        "set outside grace, to a value that is no version in the vault: it \
                         should be absent",
                    );
                    f.changed = Some(Changed::Target);
                    f.foreign = Some(fp.clone());
                    f
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::vault::{SecretRow, VersionPrint};

    fn prints(current: Option<u64>, versions: &[(u64, &str)]) -> SecretPrints {
        SecretPrints {
            row: SecretRow {
                name: "JWT".into(),
                description: None,
                created_at_ms: 0,
                updated_at_ms: 0,
                deleted_at_ms: None,
                latest_version: versions.last().map(|v| v.0).unwrap_or(0),
                current_version: current,
                pending_version: None,
                previous_version: None,
            },
            versions: versions
                .iter()
                .map(|(v, fp)| VersionPrint {
                    version: *v,
                    fingerprint: fp.to_string(),
                })
                .collect(),
        }
    }

    fn wanted(variable: &str, expect: Expect) -> Wanted {
        Wanted {
            target: "api".into(),
            variable: variable.into(),
            secret: "JWT".into(),
            expect,
        }
    }

    fn print(fp: &str) -> Held {
        Held::Print(fp.into())
    }

    #[test]
    fn the_current_value_is_ok_and_anything_else_says_which_side_moved() {
        let p = prints(Some(3), &[(1, "f1"), (2, "f2"), (3, "f3")]);
        let w = wanted("JWT", Expect::Current(Some(3)));
        let ok = classify(&w, Some(&p), Some(&print("f3")));
        assert_eq!((ok.state, ok.changed), (State::Ok, None));

        let behind = classify(&w, Some(&p), Some(&print("f2")));
        assert_eq!(behind.state, State::Differs);
        assert_eq!(behind.target_version, Some(2));
        assert_eq!(behind.changed, Some(Changed::Vault));
        assert!(behind.note.starts_with("target behind"), "{}", behind.note);

        let pasted = classify(&w, Some(&p), Some(&print("other")));
        assert_eq!(pasted.state, State::Differs);
        assert_eq!(pasted.changed, Some(Changed::Target));
        assert_eq!(pasted.target_version, None);
        assert!(pasted.note.starts_with("changed at the target"));
        assert_eq!(pasted.audit()["fingerprint"], "other");

        let missing = classify(&w, Some(&p), None);
        assert_eq!(missing.state, State::Missing);
        let sealed = classify(&w, Some(&p), Some(&Held::Sealed));
        assert_eq!(sealed.state, State::Sealed);
        assert!(!sealed.state.is_drift(), "a sealed value cannot be judged");

        // The expected version was destroyed: no claim about who changed what.
        let p = prints(Some(3), &[(2, "f2")]);
        let gone = classify(&w, Some(&p), Some(&print("f3")));
        assert_eq!((gone.state, gone.changed), (State::Differs, None));
        assert!(gone.note.contains("was destroyed"), "{}", gone.note);

        // The target holds a version newer than current (a rollback that left it).
        let p = prints(Some(2), &[(1, "f1"), (2, "f2"), (3, "f3")]);
        let ahead = classify(
            &wanted("JWT", Expect::Current(Some(2))),
            Some(&p),
            Some(&print("f3")),
        );
        assert_eq!(
            (ahead.state, ahead.target_version),
            (State::Differs, Some(3))
        );
        assert_eq!(ahead.changed, None);
    }

    #[test]
    fn previous_as_holds_the_replaced_version_in_grace_and_is_absent_after() {
        let p = prints(Some(3), &[(2, "f2"), (3, "f3")]);
        let grace = wanted("JWT_PREVIOUS", Expect::Previous(2));
        assert_eq!(
            classify(&grace, Some(&p), Some(&print("f2"))).state,
            State::Ok
        );
        let wrong = classify(&grace, Some(&p), Some(&print("f3")));
        assert_eq!(
            (wrong.state, wrong.target_version),
            (State::Differs, Some(3))
        );
        assert_eq!(wrong.expected, "previous");
        assert_eq!(classify(&grace, Some(&p), None).state, State::Missing);

        let after = wanted("JWT_PREVIOUS", Expect::Absent);
        assert_eq!(classify(&after, Some(&p), None).state, State::Ok);
        let left = classify(&after, Some(&p), Some(&print("f2")));
        assert_eq!(
            (left.state, left.target_version),
            (State::Unexpected, Some(2))
        );
        let foreign = classify(&after, Some(&p), Some(&print("zz")));
        assert_eq!(
            (foreign.state, foreign.changed),
            (State::Unexpected, Some(Changed::Target))
        );
        assert_eq!(
            classify(&after, Some(&p), Some(&Held::Sealed)).state,
            State::Unexpected
        );
    }

    #[test]
    fn a_secret_the_vault_lacks_is_missing_on_the_vault_side() {
        let w = wanted("JWT", Expect::Current(None));
        let none = classify(&w, None, Some(&print("x")));
        assert_eq!(
            (none.state, none.changed),
            (State::Missing, Some(Changed::Vault))
        );
        assert!(none.note.contains("`secret set JWT`"), "{}", none.note);
        let mut deleted = prints(Some(1), &[]);
        deleted.row.deleted_at_ms = Some(1);
        let f = classify(&w, Some(&deleted), None);
        assert!(f.note.contains("undelete"), "{}", f.note);
    }

    #[test]
    fn a_rotation_under_way_is_not_compared() {
        let w = wanted(
            "JWT",
            Expect::Rotating {
                run: "rot_1".into(),
                state: RunState::Push,
            },
        );
        let f = classify(&w, None, Some(&print("anything")));
        assert_eq!(f.state, State::Rotating);
        assert!(!f.state.is_drift());
        assert!(f.note.contains("rot_1 is in push"), "{}", f.note);
    }

    #[test]
    fn a_report_exits_8_on_drift_then_1_on_an_unreadable_target() {
        let w = wanted("JWT", Expect::Current(Some(1)));
        let report = |states: &[State]| Report {
            findings: states.iter().map(|s| Finding::new(&w, *s, "")).collect(),
        };
        assert_eq!(report(&[]).exit_code(), 0);
        assert_eq!(
            report(&[State::Ok, State::Sealed, State::Rotating]).exit_code(),
            0
        );
        assert_eq!(report(&[State::Ok, State::Error]).exit_code(), 1);
        for drift in [State::Differs, State::Missing, State::Unexpected] {
            assert_eq!(report(&[State::Error, drift]).exit_code(), 8, "{drift}");
        }
        let r = report(&[State::Ok, State::Differs]);
        assert_eq!(
            r.summary(),
            "drift found: JWT at api differs; `secret drift --fix` pushes the vault's values"
        );
    }

    #[test]
    fn json_and_audit_carry_names_and_versions_only() {
        let p = prints(Some(2), &[(1, "f1"), (2, "f2")]);
        let f = classify(
            &wanted("JWT", Expect::Current(Some(2))),
            Some(&p),
            Some(&print("f1")),
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            json!({
                "target": "api", "variable": "JWT", "secret": "JWT", "state": "differs",
                "expected": "current", "vault_version": 2, "target_version": 1,
                "changed": "vault",
                "note": "target behind: holds version 1, the vault's current is 2",
            })
        );
        assert!(
            f.audit().get("fingerprint").is_none(),
            "a known version needs none"
        );
    }
}
