//! One rotation pass: select what to do (named secrets, or everything due), take a
//! lock per secret, then run the rotations through their steps in phases so that
//! rotations sharing a target share its one upsert and its one deploy:
//!
//! 1. revokes whose grace has ended (and, before a new rotation of a secret, the
//!    previous rotation's revoke, early);
//! 2. `create` for every new or interrupted rotation;
//! 3. `push`, one delivery and one deploy per target;
//! 4. `verify`: each deployment watched once, then each provider's check;
//! 5. `finish` for the ones that passed, `rollback` for the ones that did not.
//!
//! The vault records each step (and its audit entry) before the next one starts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::{next_due, Due};
use crate::http::{ErrorKind, ExternalError, RetryPolicy};
use crate::providers::{self, Minted, Provider, RotationCtx};
use crate::targets::{self, DeploymentId, Variables};
use secret_core::crypto;
use secret_core::error::{exit, VaultError};
use secret_core::model::{Label, SecretValue, VersionSelector};
use secret_core::policy::{Generator, PolicySet, SecretPolicy};
use secret_core::vault::{Liveness, RotationRow, StepEffect, Vault};

/// How the engine behaves; defaults suit production.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Show progress (a terminal is attached).
    pub progress: bool,
    pub retry: RetryPolicy,
    /// Between polls of a deployment's status.
    pub poll_interval: Duration,
    /// Per HTTP request.
    pub http_timeout: Duration,
    /// How a rotation was started: `manual`, `due` or `scheduler`.
    pub trigger: &'static str,
    /// At most this many new rotations start in one pass (the rest wait for the next).
    pub max_new_rotations: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            progress: false,
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_secs(3),
            http_timeout: Duration::from_secs(30),
            trigger: "manual",
            max_new_rotations: None,
        }
    }
}

/// What to rotate.
#[derive(Clone, Debug)]
pub enum Request {
    /// These secrets, now (resuming an interrupted rotation of one if there is one).
    Names(Vec<String>),
    /// Everything due: interrupted rotations, ended graces, secrets past their schedule.
    Due,
}

/// How one secret's rotation (or revoke) ended in this pass.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub secret: String,
    pub rotation: Option<String>,
    /// `finished`, `rolled_back`, `failed`, `revoked`, `revoke_failed`, `running_elsewhere`,
    /// `not_started`, `stuck`, or `stopped_in_<state>` (open; the next pass resumes it).
    pub result: String,
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub error: Option<String>,
    /// From the rotation's start to now.
    pub duration_ms: i64,
}

impl Outcome {
    fn failed(secret: &str, rotation: Option<String>, result: &str, error: String) -> Self {
        Self {
            secret: secret.to_string(),
            rotation,
            result: result.into(),
            old_version: None,
            new_version: None,
            error: Some(error),
            duration_ms: 0,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunReport {
    pub outcomes: Vec<Outcome>,
}

impl RunReport {
    /// 6 if any rotation failed, rolled back or could not go on (it stays open for the
    /// next pass), 4 if a secret was being rotated elsewhere, 1 if a revoke failed, else 0.
    pub fn exit_code(&self) -> u8 {
        let has = |r: &str| self.outcomes.iter().any(|o| o.result == r);
        let stuck = self.outcomes.iter().any(|o| {
            o.result.starts_with("stopped_in_") || o.result == "stuck" || o.result == "not_started"
        });
        if has("rolled_back") || has("failed") || stuck {
            exit::ROTATION_FAILED
        } else if has("running_elsewhere") {
            exit::CONFLICT
        } else if has("revoke_failed") {
            exit::OTHER
        } else {
            exit::OK
        }
    }
}

/// A rotation in flight in this pass.
struct Run {
    row: RotationRow,
    policy: SecretPolicy,
    provider: Box<dyn Provider>,
    /// The value being replaced (version `row.old_version`).
    current: Option<SecretValue>,
    /// The new value, once minted (or read back as the pending version on resume).
    minted: Option<Minted>,
    /// A pending value an earlier rotation left behind (a LaunchDarkly reset that was
    /// rolled back): the provider may reuse it instead of minting again.
    leftover: Option<SecretValue>,
    credential: Option<SecretValue>,
    /// Why push or verify failed: the run is rolled back.
    failure: Option<ExternalError>,
}

pub struct Engine {
    vault: Vault,
    policies: PolicySet,
    options: EngineOptions,
    http: reqwest::Client,
    holder: String,
    held: Vec<String>,
    fingerprint: secret_core::audit::Fingerprinter,
    /// Turns true when the process is stopping: no new rotation starts, no next phase.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// This boot of this machine, to tell a dead lock holder from a live one.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-boot".into())
}

/// When process `pid` started (clock ticks since boot, `/proc/<pid>/stat` field 22): with
/// the pid it names one process, even after the pid is reused (a restarted container's
/// pid 1, say).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The lock holder id of this process: `boot:pid:start:nonce`.
fn holder_id(nonce: &str) -> String {
    let pid = std::process::id();
    let start = process_start(pid)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "?".into());
    format!("{}:{pid}:{start}:{nonce}", boot_id())
}

/// Whether a recorded holder (`boot:pid:start:nonce`) still runs. On this boot it is
/// checked by pid *and* start time, so a reused pid does not keep a dead holder's lock;
/// a holder from another boot or machine cannot be checked, and its lease decides.
pub fn holder_liveness(holder: &str) -> Liveness {
    let parts: Vec<&str> = holder.split(':').collect();
    let [boot, pid, start, _nonce] = parts[..] else {
        return Liveness::Unknown;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return Liveness::Unknown;
    };
    if boot != boot_id() || boot == "unknown-boot" {
        return Liveness::Unknown;
    }
    match (process_start(pid), start.parse::<u64>()) {
        (Some(now), Ok(then)) if now == then => Liveness::Alive,
        (Some(_), Ok(_)) => Liveness::Dead,
        (None, _) => Liveness::Dead,
        // This host's /proc did not give a start time when the lock was taken.
        (Some(_), Err(_)) => Liveness::Unknown,
    }
}

const LOCK_TTL_MS: i64 = 15 * 60 * 1000;

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// Records deployment `id` (null: the target made none) under `key` in a run's
/// deployments, and returns the updated map.
fn record_deployment(row: &mut RotationRow, key: &str, id: Option<&DeploymentId>) -> Value {
    let mut deployments = parse_json(&row.deployments);
    if let Some(map) = deployments.as_object_mut() {
        map.insert(key.to_string(), json!(id.map(|d| d.0.clone())));
    }
    row.deployments = deployments.to_string();
    deployments
}

impl Engine {
    pub fn new(
        vault: Vault,
        policies: PolicySet,
        options: EngineOptions,
    ) -> Result<Self, VaultError> {
        let http = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .user_agent(concat!("secret/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| VaultError::Io(format!("cannot build the HTTP client: {e}")))?;
        let nonce = crypto::random_array::<4>()
            .map(|b| crypto::hex(&b))
            .unwrap_or_default();
        let holder = holder_id(&nonce);
        let mut vault = vault;
        vault.hold_leases_as(&holder, LOCK_TTL_MS);
        let fingerprint = vault.fingerprinter();
        Ok(Self {
            vault,
            policies,
            options,
            http,
            holder,
            held: Vec::new(),
            fingerprint,
            stop: None,
        })
    }

    /// Stop between steps once `stop` turns true (SIGTERM in `serve`): what has started
    /// is left resumable, nothing new starts.
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.stop = Some(stop);
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// This process's lock holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// When the current version of a secret was written.
    pub fn current_created(&mut self, secret: &str) -> Result<Option<i64>, VaultError> {
        match self
            .vault
            .secret_state(secret)?
            .and_then(|s| s.current_version)
        {
            Some(v) => self.vault.version_created(secret, v),
            None => Ok(None),
        }
    }

    /// The vault, for reads after a pass.
    pub fn vault(&mut self) -> &mut Vault {
        &mut self.vault
    }

    /// A spinner on a terminal while a deploy is watched; hidden otherwise.
    fn spinner(&self) -> indicatif::ProgressBar {
        if !self.options.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("waiting for the deploy");
        bar
    }

    fn note(&self, line: String) {
        if self.options.progress {
            eprintln!("{line}");
        }
    }

    /// Runs one pass. Locks are released at the end whatever happens.
    pub async fn run(&mut self, request: Request) -> Result<RunReport, VaultError> {
        let result = self.pass(request).await;
        for name in std::mem::take(&mut self.held) {
            let _ = self.vault.release_lock(&name, &self.holder);
        }
        result
    }

    fn lock(&mut self, secret: &str) -> Result<bool, VaultError> {
        let name = format!("rotation:{secret}");
        if self.held.contains(&name) {
            return Ok(true);
        }
        match self
            .vault
            .acquire_lock(&name, &self.holder, LOCK_TTL_MS, holder_liveness)?
        {
            Ok(()) => {
                self.held.push(name);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    fn policy(&self, name: &str) -> Result<SecretPolicy, VaultError> {
        let policy = self.policies.secrets.get(name).cloned().ok_or_else(|| {
            VaultError::NotFound(format!(
                "no policy for {name}: add [secrets.{name}] to a file in the policies directory"
            ))
        })?;
        if policy.generator == Generator::Manual {
            return Err(VaultError::Usage(format!(
                "{name} is a manual secret: it is not rotated here; set a new value with `secret set {name}`"
            )));
        }
        Ok(policy)
    }

    async fn pass(&mut self, request: Request) -> Result<RunReport, VaultError> {
        let now = self.vault.now();
        let mut report = RunReport::default();
        let wanted: Option<BTreeSet<String>> = match &request {
            Request::Names(names) => {
                for n in names {
                    self.policy(n)?;
                }
                // A set: `secret rotate X X` is one rotation of X.
                Some(names.iter().cloned().collect())
            }
            Request::Due => None,
        };

        // Which secrets this pass may touch, then their locks, and only then the rows
        // (read again under the locks: another process may have moved them meanwhile).
        let mut candidates: BTreeSet<String> = match &wanted {
            Some(w) => w.clone(),
            None => {
                let mut c: BTreeSet<String> = self
                    .vault
                    .open_rotations()?
                    .into_iter()
                    .map(|r| r.secret)
                    .collect();
                let policies: Vec<SecretPolicy> = self.policies.secrets.values().cloned().collect();
                for policy in policies.iter().filter(|p| p.generator != Generator::Manual) {
                    if self.due(policy)?.is_due(now) {
                        c.insert(policy.name.to_string());
                    }
                }
                c
            }
        };
        let mut busy = BTreeSet::new();
        for secret in &candidates {
            if !self.lock(secret)? {
                busy.insert(secret.clone());
                report.outcomes.push(Outcome {
                    secret: secret.clone(),
                    rotation: None,
                    result: "running_elsewhere".into(),
                    old_version: None,
                    new_version: None,
                    error: Some(format!(
                        "another process is rotating {secret}; try again when it is done"
                    )),
                    duration_ms: 0,
                });
            }
        }
        candidates.retain(|s| !busy.contains(s));

        let open = self.vault.open_rotations()?;
        let mut revokes: Vec<RotationRow> = Vec::new();
        let mut resumes: Vec<RotationRow> = Vec::new();
        let mut fresh: Vec<SecretPolicy> = Vec::new();
        for row in open.into_iter().filter(|r| candidates.contains(&r.secret)) {
            if row.state == "grace" {
                let ended = row.revoke_after_ms.is_some_and(|t| t <= now);
                if ended || wanted.is_some() {
                    revokes.push(row);
                }
            } else {
                resumes.push(row);
            }
        }
        for secret in &candidates {
            if resumes.iter().any(|r| &r.secret == secret) {
                continue;
            }
            let Some(policy) = self.policies.secrets.get(secret).cloned() else {
                continue;
            };
            if policy.generator == Generator::Manual {
                continue;
            }
            if wanted.is_some() || self.due(&policy)?.is_due(now) {
                fresh.push(policy);
            }
        }

        // Revokes first. A new rotation of a secret still in grace revokes the old
        // credential early, and does not start unless that revoke succeeded: otherwise
        // the later revoke would remove the overlap of the new rotation.
        let mut blocked = BTreeSet::new();
        for row in revokes {
            let secret = row.secret.clone();
            let outcome = match self.revoke(row).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::failed(&secret, None, "revoke_failed", e.to_string()),
            };
            if outcome.result != "revoked" {
                blocked.insert(secret);
            }
            report.outcomes.push(outcome);
        }
        fresh.retain(|p| !blocked.contains(p.name.as_str()));
        if self.stopping() {
            fresh.clear();
        }
        if let Some(max) = self.options.max_new_rotations {
            // Bounded work per pass; the rest are still due at the next one.
            fresh.truncate(max);
        }

        // One secret's problem (a missing credential, a policy turned manual) is its
        // own outcome, not the end of the pass.
        let mut runs = Vec::new();
        for row in resumes {
            let (secret, id) = (row.secret.clone(), row.id.clone());
            match self.resume(row) {
                Ok(Some(run)) => runs.push(run),
                Ok(None) => {}
                Err(e) => {
                    report
                        .outcomes
                        .push(Outcome::failed(&secret, Some(id), "stuck", e.to_string()))
                }
            }
        }
        for policy in fresh {
            let secret = policy.name.to_string();
            match self.start(policy) {
                Ok(run) => runs.push(run),
                Err(e) => report.outcomes.push(Outcome::failed(
                    &secret,
                    None,
                    "not_started",
                    e.to_string(),
                )),
            }
        }

        for run in runs.iter_mut().filter(|r| r.row.state == "create") {
            self.create(run).await?;
        }
        // Stopping: every run is recorded as far as it got; the next start resumes it.
        let fresh_deploys = if self.stopping() {
            BTreeMap::new()
        } else {
            self.push(&mut runs).await?
        };
        if !self.stopping() {
            self.verify(&mut runs, &fresh_deploys).await?;
        }
        for run in runs.iter_mut() {
            if run.failure.is_none() && run.row.state == "finish" {
                self.finish(run).await?;
            }
        }
        self.hold_forward(&mut runs)?;
        self.rollback(&mut runs).await?;

        for run in runs {
            let result = match (run.row.outcome.as_deref(), run.row.state.as_str()) {
                (Some(o), _) => o.to_string(),
                (None, state) => format!("stopped_in_{state}"),
            };
            report.outcomes.push(Outcome {
                secret: run.row.secret.clone(),
                rotation: Some(run.row.id.clone()),
                result,
                old_version: run.row.old_version,
                new_version: run.row.new_version,
                error: run.row.error.clone(),
                duration_ms: self.vault.now() - run.row.started_at_ms,
            });
        }
        Ok(report)
    }

    /// When `policy` is next due, from the vault's records.
    pub fn due(&mut self, policy: &SecretPolicy) -> Result<Due, VaultError> {
        let state = self.vault.secret_state(policy.name.as_str())?;
        let recent = self.vault.rotations(Some(policy.name.as_str()), 20)?;
        let created = match state.as_ref().and_then(|s| s.current_version) {
            Some(v) => self.vault.version_created(policy.name.as_str(), v)?,
            None => None,
        };
        Ok(next_due(policy, state.as_ref(), &recent, created))
    }

    fn credential_name(policy: &SecretPolicy) -> Option<String> {
        match &policy.generator {
            Generator::OpenAi(s) => Some(s.admin_key.to_string()),
            Generator::LaunchDarklySdk(s) | Generator::LaunchDarklyMobile(s) => {
                Some(s.access_token.to_string())
            }
            _ => None,
        }
    }

    fn reveal(
        &mut self,
        name: &str,
        label: Label,
        purpose: &str,
    ) -> Result<Option<SecretValue>, VaultError> {
        match self
            .vault
            .reveal(name, VersionSelector::Label(label), purpose)
        {
            Ok(r) => Ok(Some(r.value)),
            Err(VaultError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Prepares a run: its provider, its credential and (unless only revoking) the values
    /// it replaces or may reuse.
    fn load(
        &mut self,
        row: RotationRow,
        policy: SecretPolicy,
        values: bool,
    ) -> Result<Run, VaultError> {
        let provider = providers::build(&policy.generator)
            .ok_or_else(|| VaultError::Usage(format!("{} is a manual secret", policy.name)))?;
        // The recorded intent and deployments decide what a resume may repeat: if they
        // do not parse, stop rather than guess (an empty intent would allow a second
        // LaunchDarkly reset).
        for (field, text) in [
            ("provider_state", &row.provider_state),
            ("deployments", &row.deployments),
        ] {
            if !serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()) {
                return Err(VaultError::Store(secret_core::store::StoreError::Corrupt {
                    table: "rotations",
                    reason: format!("{field} of rotation {} is not a JSON object", row.id),
                }));
            }
        }
        let purpose = format!("rotation {}", row.id);
        let credential = match Self::credential_name(&policy) {
            Some(name) => Some(self.reveal(&name, Label::Current, &purpose)?.ok_or_else(|| {
                VaultError::NotFound(format!(
                    "{} needs the credential {name}, which the vault does not hold: `secret set {name}`",
                    policy.name
                ))
            })?),
            None => None,
        };
        let current = match row.old_version.filter(|_| values) {
            Some(v) => self
                .vault
                .reveal(
                    &row.secret,
                    VersionSelector::Number(
                        secret_core::model::VersionNumber::new(v)
                            .ok_or_else(|| VaultError::NotFound("version 0".into()))?,
                    ),
                    &purpose,
                )
                .map(|r| Some(r.value))?,
            None => None,
        };
        let leftover = match self
            .vault
            .secret_state(&row.secret)?
            .and_then(|s| s.pending_version)
        {
            Some(_) if values && row.state == "create" => {
                self.reveal(&row.secret, Label::Pending, &purpose)?
            }
            _ => None,
        };
        Ok(Run {
            row,
            policy,
            provider,
            current,
            minted: None,
            leftover,
            credential,
            failure: None,
        })
    }

    fn start(&mut self, policy: SecretPolicy) -> Result<Run, VaultError> {
        let now = self.vault.now();
        let id = format!("rot_{}", crypto::hex(&crypto::random_array::<6>()?));
        let state = self.vault.secret_state(policy.name.as_str())?;
        let has_current = state
            .as_ref()
            .is_some_and(|s| s.current_version.is_some() && s.deleted_at_ms.is_none());
        if !has_current && !policy.push.is_empty() {
            // Without the value the targets use today, a failed rotation could not put
            // it back: the first push would overwrite it for good.
            return Err(VaultError::Usage(format!(
                "{name} has no current value in the vault: import the value its targets use now \
                 (`secret set {name}`) so that a failed rotation can restore it",
                name = policy.name
            )));
        }
        let row = RotationRow::begun(
            id,
            policy.name.to_string(),
            policy.generator.name().to_string(),
            self.options.trigger.to_string(),
            "create",
            state.as_ref().and_then(|s| s.current_version),
            now,
        );
        // Credentials first: a rotation that cannot start leaves no record to resume.
        let run = self.load(row, policy, true)?;
        self.vault.begin_rotation(
            &run.row,
            json!({ "trigger": run.row.trigger, "generator": run.row.generator, "old_version": run.row.old_version }),
        )?;
        self.note(format!(
            "{}: rotation {} started",
            run.row.secret, run.row.id
        ));
        Ok(run)
    }

    /// Picks up an interrupted rotation. A rotation whose policy is gone is marked failed.
    fn resume(&mut self, row: RotationRow) -> Result<Option<Run>, VaultError> {
        let Some(policy) = self.policies.secrets.get(&row.secret).cloned() else {
            let mut row = row;
            row.state = "failed".into();
            row.outcome = Some("failed".into());
            row.error = Some("its policy no longer exists; finish or roll back by hand".into());
            self.vault.rotation_step(
                &mut row,
                "resume",
                "failed",
                json!({ "code": "no_policy" }),
                StepEffect::None,
            )?;
            return Ok(None);
        };
        let mut row = row;
        if row.state == "requested" {
            // Asked for through the API: it starts now, from the value current now.
            let state = self.vault.secret_state(&row.secret)?;
            let current = state.as_ref().and_then(|s| s.current_version);
            if current.is_none() && !policy.push.is_empty() {
                row.state = "failed".into();
                row.outcome = Some("failed".into());
                row.error = Some(format!(
                    "{} has no current value to restore if the rotation fails",
                    row.secret
                ));
                self.vault.rotation_step(
                    &mut row,
                    "start",
                    "failed",
                    json!({ "code": "no_value" }),
                    StepEffect::None,
                )?;
                return Ok(None);
            }
            row.old_version = current;
            row.state = "create".into();
            let detail = json!({ "trigger": row.trigger, "generator": row.generator, "old_version": row.old_version });
            self.vault
                .rotation_step(&mut row, "start", "ok", detail, StepEffect::None)?;
        }
        self.note(format!(
            "{}: resuming rotation {} at {}",
            row.secret, row.id, row.state
        ));
        let mut run = self.load(row, policy, true)?;
        if matches!(
            run.row.state.as_str(),
            "push" | "verify" | "finish" | "rollback"
        ) {
            // The pending value was stored with the create step.
            let value = self.reveal(
                &run.row.secret,
                Label::Pending,
                &format!("rotation {}", run.row.id),
            )?;
            let handle = match run.row.new_version {
                Some(v) => self.vault.version_meta(&run.row.secret, v)?,
                None => json!({}),
            };
            run.minted = value.map(|value| Minted { value, handle });
        }
        Ok(Some(run))
    }

    fn ctx(&self, run: &Run) -> RotationCtx {
        RotationCtx {
            rotation_id: run.row.id.clone(),
            secret: run.row.secret.clone(),
            now_ms: self.vault.now(),
            grace: run.policy.grace,
            state: parse_json(&run.row.provider_state),
            current: run.current.clone(),
            pending: run
                .minted
                .as_ref()
                .map(|m| m.value.clone())
                .or_else(|| run.leftover.clone()),
            credential: run.credential.clone(),
            http: self.http.clone(),
            retry: self.options.retry.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// A step that failed before anything needs undoing: the rotation ends `failed`.
    fn fail(&mut self, run: &mut Run, step: &str, err: &ExternalError) -> Result<(), VaultError> {
        run.row.state = "failed".into();
        run.row.outcome = Some("failed".into());
        run.row.finished_at_ms = Some(self.vault.now());
        run.row.error = Some(format!("{step}: {err}"));
        self.note(format!("{}: {step} failed: {err}", run.row.secret));
        self.vault.rotation_step(
            &mut run.row,
            step,
            "failed",
            json!({ "code": err.code(), "error": err.to_string() }),
            StepEffect::None,
        )
    }

    /// A step could not complete and must not be undone blindly: the rotation stays
    /// open in its state, with the error recorded, for the next pass to resume.
    fn stay(&mut self, run: &mut Run, step: &str, err: &ExternalError) -> Result<(), VaultError> {
        run.row.error = Some(format!("{step}: {err}"));
        self.note(format!(
            "{}: {step} did not complete: {err}; the next pass resumes it",
            run.row.secret
        ));
        self.vault.rotation_step(
            &mut run.row,
            step,
            "retry",
            json!({ "code": err.code(), "error": err.to_string() }),
            StepEffect::None,
        )
    }

    /// Runs whose provider cannot undo the new credential (a LaunchDarkly reset) are
    /// not rolled back when push or verify fails: the old key is already expiring, so
    /// the way out is forward. They stay open, the new key pending, for the next pass.
    fn hold_forward(&mut self, runs: &mut [Run]) -> Result<(), VaultError> {
        for run in runs.iter_mut() {
            if run.provider.can_discard() || run.row.outcome.is_some() {
                continue;
            }
            if let Some(err) = run.failure.take() {
                let state = run.row.state.clone();
                // The next pass pushes and deploys again: the failed deployment is not
                // watched twice.
                run.row.state = "push".into();
                run.row.deployments = "{}".into();
                let err = ExternalError {
                    message: format!(
                        "{} (the reset cannot be undone: the new key stays pending and the old \
                         one works only until its expiry; fix the cause and run `secret rotate --due`)",
                        err.message
                    ),
                    ..err
                };
                self.stay(run, &state, &err)?;
            }
        }
        Ok(())
    }

    async fn create(&mut self, run: &mut Run) -> Result<(), VaultError> {
        let resumed = parse_json(&run.row.provider_state)
            .get("intent_recorded")
            .is_some();
        let found = if resumed {
            match run.provider.recover(&self.ctx(run)).await {
                Ok(found) => found,
                // Whether the earlier call took effect is still unknown: stay open.
                Err(e) => return self.stay(run, "create", &e),
            }
        } else {
            match run.provider.intent(&self.ctx(run)).await {
                Ok(mut intent) => {
                    intent["intent_recorded"] = json!(true);
                    run.row.provider_state = intent.to_string();
                    self.vault.rotation_step(
                        &mut run.row,
                        "intent",
                        "ok",
                        intent,
                        StepEffect::None,
                    )?;
                }
                Err(e) => return self.fail(run, "create", &e),
            }
            None
        };
        let minted = match found {
            Some(m) => m,
            None => match run.provider.create(&self.ctx(run)).await {
                Ok(m) => m,
                // The call may have minted a credential we never saw: recover it (or its
                // orphan) on the next pass rather than closing the rotation.
                Err(e) if e.maybe_applied || e.kind == ErrorKind::Transient => {
                    return self.stay(run, "create", &e)
                }
                Err(e) => return self.fail(run, "create", &e),
            },
        };
        run.row.state = "push".into();
        let detail = json!({ "handle": minted.handle, "recovered": resumed });
        self.vault.rotation_step(
            &mut run.row,
            "create",
            "ok",
            detail,
            StepEffect::StagePending {
                value: minted.value.clone(),
                meta: minted.handle.clone(),
            },
        )?;
        self.note(format!(
            "{}: minted version {}",
            run.row.secret,
            run.row.new_version.unwrap_or(0)
        ));
        run.minted = Some(minted);
        Ok(())
    }

    fn build_target(
        &mut self,
        name: &str,
        purpose: &str,
    ) -> Result<Box<dyn targets::Target>, ExternalError> {
        let policy =
            self.policies.targets.get(name).cloned().ok_or_else(|| {
                ExternalError::permanent("policy", format!("no target named {name}"))
            })?;
        let token = match &policy {
            secret_core::policy::TargetPolicy::Railway(r) => {
                let t = self
                    .reveal(r.token.as_str(), Label::Current, purpose)
                    .map_err(|e| ExternalError::permanent("vault", e.to_string()))?
                    .ok_or_else(|| {
                        ExternalError::permanent(
                            "vault",
                            format!("the Railway token {} is not in the vault", r.token),
                        )
                    })?;
                Some(t)
            }
            secret_core::policy::TargetPolicy::Dotenv(_) => None,
        };
        targets::build(
            &policy,
            token,
            self.http.clone(),
            self.options.retry.clone(),
            self.options.poll_interval,
            self.vault.clock(),
        )
        .map_err(|e| ExternalError::permanent("policy", e))
    }

    /// The variables a run sets at one target while it rolls forward.
    fn forward_vars(run: &Run) -> Variables {
        let mut vars = Variables::new();
        vars.insert(
            run.row.secret.clone(),
            run.minted.as_ref().map(|m| m.value.clone()),
        );
        if let (Some(prev), Some(current)) = (&run.policy.previous_as, &run.current) {
            vars.insert(prev.to_string(), Some(current.clone()));
        }
        vars
    }

    /// Push: one delivery and one deploy per target, shared by every run that needs it.
    /// Returns the deployment each target got in this pass.
    async fn push(
        &mut self,
        runs: &mut [Run],
    ) -> Result<BTreeMap<String, Option<String>>, VaultError> {
        let mut fresh_deploys = BTreeMap::new();
        let mut by_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for run in runs
            .iter_mut()
            .filter(|r| r.row.state == "push" && r.minted.is_none())
        {
            // Never push an absent value: that would delete the variable.
            run.failure = Some(ExternalError::permanent(
                "vault",
                "the pending value is missing",
            ));
        }
        for (i, run) in runs.iter().enumerate() {
            if run.row.state != "push" || run.failure.is_some() {
                continue;
            }
            let done = parse_json(&run.row.deployments);
            for t in &run.policy.push {
                if done.get(t).is_none() {
                    by_target.entry(t.clone()).or_default().push(i);
                }
            }
        }
        for (target_name, members) in by_target {
            // A run that already failed at another target is not pushed further.
            let members: Vec<usize> = members
                .into_iter()
                .filter(|&i| runs[i].failure.is_none())
                .collect();
            if members.is_empty() {
                continue;
            }
            let ids: Vec<String> = members.iter().map(|&i| runs[i].row.id.clone()).collect();
            let mut vars = Variables::new();
            for &i in &members {
                vars.extend(Self::forward_vars(&runs[i]));
            }
            // The newest deployment before ours is recorded before the deploy call, so
            // that a pass resumed after a crash can tell whether that call took effect.
            let marker = format!("{target_name}#before");
            let recorded: Option<Option<DeploymentId>> = members.iter().find_map(|&i| {
                parse_json(&runs[i].row.deployments)
                    .get(&marker)
                    .map(|v| v.as_str().map(|s| DeploymentId(s.to_string())))
            });
            let target = self.build_target(&target_name, &format!("rotation {}", ids.join(",")));
            let result = match target {
                Err(e) => Err(e),
                Ok(target) => {
                    self.note(format!(
                        "push {} to {}",
                        vars.keys().cloned().collect::<Vec<_>>().join(", "),
                        target.describe()
                    ));
                    match target.deliver(&vars).await {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let before = match recorded {
                                Some(before) => Ok(before),
                                None => target.latest_deployment().await,
                            };
                            match before {
                                Err(e) => Err(e),
                                Ok(before) => {
                                    for &i in &members {
                                        let run = &mut runs[i];
                                        record_deployment(&mut run.row, &marker, before.as_ref());
                                        self.vault.rotation_step(
                                            &mut run.row,
                                            "deploying",
                                            "ok",
                                            json!({ "target": target_name, "latest_before": before.as_ref().map(|d| d.0.clone()) }),
                                            StepEffect::None,
                                        )?;
                                    }
                                    target.deploy(before.as_ref()).await
                                }
                            }
                        }
                    }
                }
            };
            match result {
                Ok(deployment) => {
                    fresh_deploys.insert(
                        target_name.clone(),
                        deployment.as_ref().map(|d| d.0.clone()),
                    );
                    for &i in &members {
                        let run = &mut runs[i];
                        let deployments =
                            record_deployment(&mut run.row, &target_name, deployment.as_ref());
                        let all_pushed =
                            run.policy.push.iter().all(|t| deployments.get(t).is_some());
                        if all_pushed {
                            run.row.state = "verify".into();
                        }
                        let detail = json!({
                            "target": target_name,
                            "deployment": deployment.as_ref().map(|d| d.0.clone()),
                            "variables": vars.keys().collect::<Vec<_>>(),
                            "shared_with": ids,
                        });
                        self.vault.rotation_step(
                            &mut run.row,
                            "push",
                            "ok",
                            detail,
                            StepEffect::None,
                        )?;
                    }
                }
                Err(e) => {
                    for &i in &members {
                        runs[i].failure = Some(ExternalError {
                            message: format!("push to {target_name}: {}", e.message),
                            ..e.clone()
                        });
                    }
                }
            }
        }
        for run in runs.iter_mut() {
            if run.row.state == "push" && run.failure.is_none() && run.policy.push.is_empty() {
                run.row.state = "verify".into();
                self.vault.rotation_step(
                    &mut run.row,
                    "push",
                    "ok",
                    json!({ "targets": [] }),
                    StepEffect::None,
                )?;
            }
        }
        Ok(fresh_deploys)
    }

    /// Verify: each deployment watched once, then each provider's own check.
    /// A deployment made in this pass supersedes one recorded by an interrupted run:
    /// it carries that run's value too, and Railway retires (REMOVED) the older one.
    async fn verify(
        &mut self,
        runs: &mut [Run],
        fresh_deploys: &BTreeMap<String, Option<String>>,
    ) -> Result<(), VaultError> {
        let mut watches: BTreeMap<(String, Option<String>), Vec<usize>> = BTreeMap::new();
        for (i, run) in runs.iter().enumerate() {
            if run.row.state != "verify" || run.failure.is_some() {
                continue;
            }
            let deployments = parse_json(&run.row.deployments);
            for t in &run.policy.push {
                let id = match fresh_deploys.get(t) {
                    Some(fresh) => fresh.clone(),
                    None => deployments
                        .get(t)
                        .and_then(|d| d.as_str())
                        .map(str::to_string),
                };
                watches.entry((t.clone(), id)).or_default().push(i);
            }
        }
        for ((target_name, deployment), members) in watches {
            let spinner = self.spinner();
            let result = async {
                let target = self.build_target(&target_name, "deploy check")?;
                let show = |line: String| spinner.set_message(line);
                target
                    .wait_healthy(deployment.clone().map(DeploymentId).as_ref(), &show)
                    .await
            }
            .await;
            spinner.finish_and_clear();
            if let Err(e) = result {
                for &i in &members {
                    runs[i].failure = Some(ExternalError {
                        message: format!("{target_name}: {}", e.message),
                        ..e.clone()
                    });
                }
            }
        }
        for run in runs.iter_mut() {
            if run.row.state != "verify" || run.failure.is_some() {
                continue;
            }
            let Some(minted) = &run.minted else {
                run.failure = Some(ExternalError::permanent(
                    "vault",
                    "the pending value is missing",
                ));
                continue;
            };
            match run.provider.verify(&self.ctx(run), minted).await {
                Ok(()) => {
                    run.row.state = "finish".into();
                    self.vault.rotation_step(
                        &mut run.row,
                        "verify",
                        "ok",
                        json!({}),
                        StepEffect::None,
                    )?;
                }
                Err(e) => run.failure = Some(e),
            }
        }
        Ok(())
    }

    async fn finish(&mut self, run: &mut Run) -> Result<(), VaultError> {
        let now = self.vault.now();
        let needs_revoke = run.provider.revokes() || run.policy.previous_as.is_some();
        run.row.outcome = Some("finished".into());
        run.row.finished_at_ms = Some(now);
        if needs_revoke && run.row.old_version.is_some() {
            run.row.state = "grace".into();
            run.row.revoke_after_ms = Some(now + run.policy.grace.as_millis() as i64);
        } else {
            run.row.state = "done".into();
        }
        let detail = json!({ "revoke_after_ms": run.row.revoke_after_ms });
        self.vault.rotation_step(
            &mut run.row,
            "finish",
            "ok",
            detail,
            StepEffect::Promote {
                max_versions: run.policy.max_versions,
            },
        )?;
        self.note(format!(
            "{}: version {} is current",
            run.row.secret,
            run.row.new_version.unwrap_or(0)
        ));
        Ok(())
    }

    /// Rollback: the old value back at every target (one delivery and deploy per
    /// target), the new credential revoked where that is safe, the pending label dropped.
    async fn rollback(&mut self, runs: &mut [Run]) -> Result<(), VaultError> {
        let failed: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].failure.is_some() || runs[i].row.state == "rollback")
            .filter(|&i| runs[i].row.outcome.is_none())
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        for &i in &failed {
            let run = &mut runs[i];
            let reason = run
                .failure
                .as_ref()
                .map(|e| e.to_string())
                .or_else(|| run.row.error.clone())
                .unwrap_or_else(|| "interrupted rollback".into());
            run.row.state = "rollback".into();
            run.row.error = Some(reason.clone());
            self.note(format!("{}: rolling back: {reason}", run.row.secret));
            let code = run
                .failure
                .as_ref()
                .map(|e| e.code())
                .unwrap_or("interrupted");
            self.vault.rotation_step(
                &mut run.row,
                "rollback",
                "started",
                json!({ "code": code, "error": reason }),
                StepEffect::None,
            )?;
        }
        // Every target is restored: a delivery may have landed even where its step was
        // never recorded (the process died, or the deploy after it failed).
        let mut by_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in &failed {
            for t in &runs[i].policy.push {
                by_target.entry(t.clone()).or_default().push(i);
            }
        }
        let mut problems: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (target_name, members) in by_target {
            let mut vars = Variables::new();
            for &i in &members {
                let run = &runs[i];
                // `start` refuses a first rotation with targets, so there is an old value.
                match &run.current {
                    Some(current) => {
                        vars.insert(run.row.secret.clone(), Some(current.clone()));
                        if let Some(prev) = &run.policy.previous_as {
                            vars.insert(prev.to_string(), None);
                        }
                    }
                    None => {
                        problems
                            .entry(i)
                            .or_default()
                            .push(format!("no previous value to restore at {target_name}"));
                    }
                }
            }
            if vars.is_empty() {
                continue;
            }
            let spinner = self.spinner();
            let result = async {
                let target = self.build_target(&target_name, "rollback")?;
                target.deliver(&vars).await?;
                let before = target.latest_deployment().await?;
                let deployment = target.deploy(before.as_ref()).await?;
                let show = |line: String| spinner.set_message(format!("rollback: {line}"));
                target.wait_healthy(deployment.as_ref(), &show).await
            }
            .await;
            spinner.finish_and_clear();
            if let Err(e) = result {
                for &i in &members {
                    problems
                        .entry(i)
                        .or_default()
                        .push(format!("restoring {target_name}: {e}"));
                }
            }
        }
        for &i in &failed {
            let ctx = self.ctx(&runs[i]);
            let run = &mut runs[i];
            let mut notes = problems.remove(&i).unwrap_or_default();
            if !notes.is_empty() {
                // The old value is not back everywhere: revoking the new credential now
                // could cut off a target still using it. Stay in rollback and retry.
                let err = ExternalError::transient("rollback", notes.join("; "));
                self.stay(run, "rollback", &err)?;
                continue;
            }
            let effect = if run.provider.can_discard() {
                if let Some(minted) = &run.minted {
                    if let Err(e) = run.provider.revoke(&ctx, &minted.handle).await {
                        notes.push(format!("revoking the new credential: {e}"));
                    }
                }
                StepEffect::DiscardPending
            } else {
                notes.push(
                    "the provider cannot undo the new credential: it is kept as the pending version and \
                     the next rotation reuses it"
                        .into(),
                );
                StepEffect::None
            };
            run.row.state = "rolled_back".into();
            run.row.outcome = Some("rolled_back".into());
            run.row.finished_at_ms = Some(self.vault.now());
            if !notes.is_empty() {
                let base = run.row.error.clone().unwrap_or_default();
                run.row.error = Some(format!("{base}; {}", notes.join("; ")));
            }
            self.vault.rotation_step(
                &mut run.row,
                "rollback",
                "ok",
                json!({ "notes": notes }),
                effect,
            )?;
        }
        Ok(())
    }

    /// After grace: the provider revokes the old credential; `previous_as` is removed.
    async fn revoke(&mut self, mut row: RotationRow) -> Result<Outcome, VaultError> {
        let mut outcome = Outcome {
            secret: row.secret.clone(),
            rotation: Some(row.id.clone()),
            result: "revoked".into(),
            old_version: row.old_version,
            new_version: row.new_version,
            error: None,
            duration_ms: 0,
        };
        let Some(policy) = self.policies.secrets.get(&row.secret).cloned() else {
            outcome.result = "revoke_failed".into();
            outcome.error = Some("its policy no longer exists".into());
            return Ok(outcome);
        };
        let run = self.load(row.clone(), policy.clone(), false)?;
        let handle = match row.old_version {
            Some(v) => self.vault.version_meta(&row.secret, v)?,
            None => json!({}),
        };
        let mut result = run.provider.revoke(&self.ctx(&run), &handle).await;
        if result.is_ok() {
            if let Some(prev) = &policy.previous_as {
                for target_name in &policy.push {
                    let mut vars = Variables::new();
                    vars.insert(prev.to_string(), None);
                    let step = async {
                        let target = self.build_target(target_name, "revoke")?;
                        target.deliver(&vars).await?;
                        let before = target.latest_deployment().await?;
                        let deployment = target.deploy(before.as_ref()).await?;
                        target.wait_healthy(deployment.as_ref(), &|_| {}).await
                    }
                    .await;
                    if let Err(e) = step {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        match result {
            Ok(()) => {
                row.state = "done".into();
                row.revoked_at_ms = Some(self.vault.now());
                self.vault.rotation_step(
                    &mut row,
                    "revoke",
                    "ok",
                    json!({ "handle": handle }),
                    StepEffect::None,
                )?;
                self.note(format!(
                    "{}: old version {} revoked",
                    row.secret,
                    row.old_version.unwrap_or(0)
                ));
            }
            Err(e) => {
                self.vault.rotation_step(
                    &mut row,
                    "revoke",
                    "failed",
                    json!({ "code": e.code(), "error": e.to_string() }),
                    StepEffect::None,
                )?;
                outcome.result = "revoke_failed".into();
                outcome.error = Some(e.to_string());
            }
        }
        Ok(outcome)
    }
}
