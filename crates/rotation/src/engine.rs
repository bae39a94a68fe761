//! One rotation pass: select what to do (named secrets, or everything due), take a
//! lock per secret, then run the rotations through their steps in phases so that
//! rotations sharing a target share its one upsert and its one deploy:
//!
//! 1. revokes whose grace has ended (and, before a new rotation of a secret, the
//!    previous rotation's provider revoke, early; its `previous_as` variable is then
//!    replaced by the new rotation's own push, not by a push of its own);
//! 2. `create` for every new or interrupted rotation;
//! 3. `push`, one delivery and one deploy per target;
//! 4. `verify`: each deployment watched once, then each provider's check;
//! 5. `finish` for the ones that passed, `rollback` for the ones that did not.
//!
//! Every change of a run's state goes through [`machine::next`], and the vault records
//! each step (and its audit entry) before the next one starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

use super::{next_due, Due};
use crate::http::{ErrorKind, ExternalError, RetryPolicy};
use crate::machine::{self, Effect, Event};
use crate::providers::{self, Minted, Provider, RotationCtx};
use crate::targets::{self, DeploymentId, Variables};
use secret_core::crypto;
use secret_core::error::{exit, VaultError};
use secret_core::model::{Label, SecretValue, VersionSelector};
use secret_core::policy::{Generator, PolicySet, SecretPolicy};
use secret_core::rotation_state::{RunOutcome, RunState, Trigger};
use secret_core::store::StoreError;
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
    /// What starts the rotations of this engine.
    pub trigger: Trigger,
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
            trigger: Trigger::Manual,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassResult {
    Finished,
    RolledBack,
    /// Failed before anything needed undoing.
    Failed,
    /// Its grace ended and the old credential is retired.
    Revoked,
    RevokeFailed,
    /// Another process holds the secret's lock.
    RunningElsewhere,
    /// Could not begin (no policy credential, no value to restore...).
    NotStarted,
    /// Open, and could not be resumed.
    Stuck,
    /// Open in this state; the next pass resumes it.
    Stopped(RunState),
}

impl PassResult {
    /// The exit code of `secret rotate` for this result; a report exits with the most
    /// serious of its results. This `match` is the one place that decides it.
    pub fn exit_code(self) -> u8 {
        match self {
            PassResult::Finished | PassResult::Revoked => exit::OK,
            PassResult::RevokeFailed => exit::OTHER,
            PassResult::RunningElsewhere => exit::CONFLICT,
            PassResult::RolledBack
            | PassResult::Failed
            | PassResult::NotStarted
            | PassResult::Stuck
            | PassResult::Stopped(_) => exit::ROTATION_FAILED,
        }
    }

    /// How serious an exit code is, to pick the one a report exits with.
    fn rank(code: u8) -> u8 {
        match code {
            exit::ROTATION_FAILED => 3,
            exit::CONFLICT => 2,
            exit::OK => 0,
            _ => 1,
        }
    }

    /// The label of `secret_rotations_total{outcome}`: runs that ended, or that need
    /// a person. Revokes that worked and locks held elsewhere are not runs.
    pub fn metric_outcome(self) -> Option<&'static str> {
        match self {
            PassResult::Finished => Some("finished"),
            PassResult::RolledBack => Some("rolled_back"),
            PassResult::Failed => Some("failed"),
            PassResult::RevokeFailed => Some("revoke_failed"),
            PassResult::NotStarted | PassResult::Stuck | PassResult::Stopped(_) => Some("stuck"),
            PassResult::Revoked | PassResult::RunningElsewhere => None,
        }
    }

    /// Whether the run needs nobody's attention.
    pub fn is_success(self) -> bool {
        matches!(self, PassResult::Finished | PassResult::Revoked)
    }

    fn of_run(row: &RotationRow) -> Self {
        match row.outcome {
            Some(RunOutcome::Finished) => PassResult::Finished,
            Some(RunOutcome::RolledBack) => PassResult::RolledBack,
            Some(RunOutcome::Failed) => PassResult::Failed,
            None => PassResult::Stopped(row.state),
        }
    }
}

impl fmt::Display for PassResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PassResult::Finished => "finished",
            PassResult::RolledBack => "rolled_back",
            PassResult::Failed => "failed",
            PassResult::Revoked => "revoked",
            PassResult::RevokeFailed => "revoke_failed",
            PassResult::RunningElsewhere => "running_elsewhere",
            PassResult::NotStarted => "not_started",
            PassResult::Stuck => "stuck",
            PassResult::Stopped(state) => return write!(f, "stopped_in_{state}"),
        };
        f.write_str(text)
    }
}

impl serde::Serialize for PassResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for PassResult {
    type Err = String;

    /// The text [`fmt::Display`] writes, back (a report read from the API).
    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "finished" => PassResult::Finished,
            "rolled_back" => PassResult::RolledBack,
            "failed" => PassResult::Failed,
            "revoked" => PassResult::Revoked,
            "revoke_failed" => PassResult::RevokeFailed,
            "running_elsewhere" => PassResult::RunningElsewhere,
            "not_started" => PassResult::NotStarted,
            "stuck" => PassResult::Stuck,
            other => {
                let state = other
                    .strip_prefix("stopped_in_")
                    .and_then(|s| s.parse::<RunState>().ok())
                    .ok_or_else(|| format!("{other:?} is not a known rotation result"))?;
                PassResult::Stopped(state)
            }
        })
    }
}

impl<'de> serde::Deserialize<'de> for PassResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How one secret's rotation (or revoke) ended in this pass.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub secret: String,
    pub rotation: Option<String>,
    pub result: PassResult,
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub error: Option<String>,
    /// From the rotation's start to now.
    pub duration_ms: i64,
}

impl Outcome {
    fn failed(secret: &str, rotation: Option<String>, result: PassResult, error: String) -> Self {
        Self {
            secret: secret.to_string(),
            rotation,
            result,
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
    /// The most serious exit code among the results (see [`PassResult::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        self.outcomes
            .iter()
            .map(|o| o.result.exit_code())
            .max_by_key(|code| PassResult::rank(*code))
            .unwrap_or(exit::OK)
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
    /// The previous rotation of this secret, still in grace, whose `previous_as`
    /// variable this run's push replaces: it is closed once that push is done.
    supersedes: Option<RotationRow>,
}

/// What a pass found to do, under the locks it took.
#[derive(Default)]
struct Selection {
    /// Runs in grace whose revoke is due (or asked for early by a new rotation).
    revokes: Vec<RotationRow>,
    /// Interrupted or requested runs.
    resumes: Vec<RotationRow>,
    /// Secrets to start a new rotation of.
    fresh: Vec<SecretPolicy>,
}

pub struct Engine {
    vault: Vault,
    policies: PolicySet,
    options: EngineOptions,
    http: reqwest::Client,
    holder: String,
    held: Vec<String>,
    fingerprint: secret_core::audit::Fingerprinter,
    /// Any of these turns true when the process is stopping (or, in `serve`, has lost
    /// the scheduler lease): no new rotation starts, no next phase.
    stop: Vec<tokio::sync::watch::Receiver<bool>>,
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
pub(crate) fn holder_id(nonce: &str) -> String {
    let pid = std::process::id();
    let start = process_start(pid)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "?".into());
    format!("{}:{pid}:{start}:{nonce}", boot_id())
}

/// The policy that rotates `name`, or why `secret rotate NAME` (and the API's rotate
/// route, which answers with the same words) refuses: no policy (not found), or a
/// manual secret (usage).
pub fn rotatable<'p>(policies: &'p PolicySet, name: &str) -> Result<&'p SecretPolicy, VaultError> {
    let policy = policies.secrets.get(name).ok_or_else(|| {
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

pub(crate) const LOCK_TTL_MS: i64 = 15 * 60 * 1000;

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

/// A record the diagram does not allow is a corrupt record: stop, do not guess.
fn illegal(e: machine::Illegal) -> VaultError {
    VaultError::Store(StoreError::Corrupt {
        table: "rotations",
        reason: e.to_string(),
    })
}

/// The variables a run sets at one target while it rolls forward: the new value, and
/// with `previous_as` the value it replaces.
fn forward_vars(
    secret: &str,
    minted: Option<&SecretValue>,
    previous_as: Option<&str>,
    current: Option<&SecretValue>,
) -> Variables {
    let mut vars = Variables::new();
    vars.insert(secret.to_string(), minted.cloned());
    if let (Some(prev), Some(current)) = (previous_as, current) {
        vars.insert(prev.to_string(), Some(current.clone()));
    }
    vars
}

/// The variables a rollback sets at one target: the old value back, and `previous_as`
/// removed (the old value is current again, nothing precedes it). `None` when there is
/// no old value to put back.
fn rollback_vars(
    secret: &str,
    current: Option<&SecretValue>,
    previous_as: Option<&str>,
) -> Option<Variables> {
    let current = current?;
    let mut vars = Variables::new();
    vars.insert(secret.to_string(), Some(current.clone()));
    if let Some(prev) = previous_as {
        vars.insert(prev.to_string(), None);
    }
    Some(vars)
}

/// One run as the push planner sees it.
struct PushPlan<'a> {
    ready: bool,
    targets: &'a [String],
    deployments: Value,
}

/// Which runs go to which target in this pass: every run in `push` that has not
/// failed, at each of its targets that has no deployment recorded yet. Runs are
/// given by index; a target's runs share its one delivery and deploy.
fn plan_push(runs: &[PushPlan<'_>]) -> BTreeMap<String, Vec<usize>> {
    let mut by_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| r.ready) {
        for t in run.targets {
            if run.deployments.get(t).is_none() {
                by_target.entry(t.clone()).or_default().push(i);
            }
        }
    }
    by_target
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
            stop: Vec::new(),
        })
    }

    /// Stop between steps once `stop` turns true (SIGTERM in `serve`): what has started
    /// is left resumable, nothing new starts.
    /// Several signals may be given; any one stops the pass.
    pub fn stop_on(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.stop.push(stop);
    }

    fn stopping(&self) -> bool {
        self.stop.iter().any(|s| *s.borrow())
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
        rotatable(&self.policies, name).cloned()
    }

    async fn pass(&mut self, request: Request) -> Result<RunReport, VaultError> {
        let mut report = RunReport::default();
        let wanted = self.wanted(&request)?;
        let candidates = self.candidates(wanted.as_ref())?;
        let candidates = self.take_locks(candidates, &mut report)?;
        let Selection {
            revokes,
            resumes,
            mut fresh,
        } = self.select(&candidates, wanted.is_some())?;

        let (blocked, superseded) = self.revoke_all(revokes, &fresh, &mut report).await?;
        fresh.retain(|p| !blocked.contains(p.name.as_str()));
        if self.stopping() {
            fresh.clear();
        }
        if let Some(max) = self.options.max_new_rotations {
            // Bounded work per pass; the rest are still due at the next one.
            fresh.truncate(max);
        }
        let mut runs = self.open_runs(resumes, fresh, superseded, &mut report)?;
        self.drive(&mut runs).await?;
        for run in runs {
            report.outcomes.push(Outcome {
                secret: run.row.secret.clone(),
                rotation: Some(run.row.id.clone()),
                result: PassResult::of_run(&run.row),
                old_version: run.row.old_version,
                new_version: run.row.new_version,
                error: run.row.error.clone(),
                duration_ms: self.vault.now() - run.row.started_at_ms,
            });
        }
        Ok(report)
    }

    /// The secrets a request names (each must have a rotating policy); `None` for
    /// everything due.
    fn wanted(&self, request: &Request) -> Result<Option<BTreeSet<String>>, VaultError> {
        match request {
            Request::Names(names) => {
                for n in names {
                    self.policy(n)?;
                }
                // A set: `secret rotate X X` is one rotation of X.
                Ok(Some(names.iter().cloned().collect()))
            }
            Request::Due => Ok(None),
        }
    }

    /// Which secrets this pass may touch: the ones named, or every secret with an open
    /// run or a due schedule.
    fn candidates(
        &mut self,
        wanted: Option<&BTreeSet<String>>,
    ) -> Result<BTreeSet<String>, VaultError> {
        if let Some(w) = wanted {
            return Ok(w.clone());
        }
        let now = self.vault.now();
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
        Ok(c)
    }

    /// Takes each candidate's lock; one held elsewhere is an outcome of its own.
    fn take_locks(
        &mut self,
        candidates: BTreeSet<String>,
        report: &mut RunReport,
    ) -> Result<BTreeSet<String>, VaultError> {
        let mut locked = BTreeSet::new();
        for secret in candidates {
            if self.lock(&secret)? {
                locked.insert(secret);
            } else {
                let error =
                    format!("another process is rotating {secret}; try again when it is done");
                report.outcomes.push(Outcome::failed(
                    &secret,
                    None,
                    PassResult::RunningElsewhere,
                    error,
                ));
            }
        }
        Ok(locked)
    }

    /// The rows, read again under the locks (another process may have moved them).
    fn select(
        &mut self,
        candidates: &BTreeSet<String>,
        named: bool,
    ) -> Result<Selection, VaultError> {
        let now = self.vault.now();
        let mut selection = Selection::default();
        let open = self.vault.open_rotations()?;
        for row in open.into_iter().filter(|r| candidates.contains(&r.secret)) {
            if row.state == RunState::Grace {
                let ended = row.revoke_after_ms.is_some_and(|t| t <= now);
                if ended || named {
                    selection.revokes.push(row);
                }
            } else {
                selection.resumes.push(row);
            }
        }
        for secret in candidates {
            if selection.resumes.iter().any(|r| &r.secret == secret) {
                continue;
            }
            let Some(policy) = self.policies.secrets.get(secret).cloned() else {
                continue;
            };
            if policy.generator == Generator::Manual {
                continue;
            }
            if named || self.due(&policy)?.is_due(now) {
                selection.fresh.push(policy);
            }
        }
        Ok(selection)
    }

    /// Revokes first. A new rotation of a secret still in grace revokes the old
    /// credential at its provider early, and does not start unless that worked;
    /// with `previous_as`, the old run stays in grace until the new run's push has
    /// replaced that variable (returned as superseded, by secret). Returns the secrets
    /// whose new rotation must not start, and the superseded runs.
    async fn revoke_all(
        &mut self,
        revokes: Vec<RotationRow>,
        fresh: &[SecretPolicy],
        report: &mut RunReport,
    ) -> Result<(BTreeSet<String>, BTreeMap<String, RotationRow>), VaultError> {
        let now = self.vault.now();
        let mut blocked = BTreeSet::new();
        let mut superseded = BTreeMap::new();
        for row in revokes {
            let secret = row.secret.clone();
            let ended = row.revoke_after_ms.is_some_and(|t| t <= now);
            let early = !ended && fresh.iter().any(|p| p.name.as_str() == secret);
            let replaced = early
                && self
                    .policies
                    .secrets
                    .get(&secret)
                    .is_some_and(|p| p.previous_as.is_some());
            if replaced {
                match self.revoke_at_provider(&row).await {
                    Ok(()) => {
                        superseded.insert(secret, row);
                    }
                    Err(e) => {
                        blocked.insert(secret.clone());
                        report.outcomes.push(Outcome::failed(
                            &secret,
                            Some(row.id.clone()),
                            PassResult::RevokeFailed,
                            e.to_string(),
                        ));
                    }
                }
                continue;
            }
            let outcome = match self.revoke(row).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::failed(&secret, None, PassResult::RevokeFailed, e.to_string()),
            };
            if outcome.result != PassResult::Revoked {
                blocked.insert(secret);
            }
            report.outcomes.push(outcome);
        }
        Ok((blocked, superseded))
    }

    /// The runs of this pass: interrupted ones resumed, new ones started. One secret's
    /// problem (a missing credential, a policy turned manual) is its own outcome, not
    /// the end of the pass.
    fn open_runs(
        &mut self,
        resumes: Vec<RotationRow>,
        fresh: Vec<SecretPolicy>,
        mut superseded: BTreeMap<String, RotationRow>,
        report: &mut RunReport,
    ) -> Result<Vec<Run>, VaultError> {
        let mut runs = Vec::new();
        for row in resumes {
            let (secret, id) = (row.secret.clone(), row.id.clone());
            match self.resume(row) {
                Ok(Some(run)) => runs.push(run),
                Ok(None) => {}
                Err(e) => report.outcomes.push(Outcome::failed(
                    &secret,
                    Some(id),
                    PassResult::Stuck,
                    e.to_string(),
                )),
            }
        }
        for policy in fresh {
            let secret = policy.name.to_string();
            match self.start(policy) {
                Ok(mut run) => {
                    run.supersedes = superseded.remove(&secret);
                    runs.push(run);
                }
                Err(e) => report.outcomes.push(Outcome::failed(
                    &secret,
                    None,
                    PassResult::NotStarted,
                    e.to_string(),
                )),
            }
        }
        Ok(runs)
    }

    /// Takes the runs through create, push, verify, finish, and rollback for the ones
    /// that failed. Stopping: every run is recorded as far as it got; the next start
    /// resumes it.
    async fn drive(&mut self, runs: &mut [Run]) -> Result<(), VaultError> {
        for run in runs.iter_mut().filter(|r| r.row.state == RunState::Create) {
            self.create(run).await?;
        }
        let fresh_deploys = if self.stopping() {
            BTreeMap::new()
        } else {
            self.push(runs).await?
        };
        if !self.stopping() {
            self.verify(runs, &fresh_deploys).await?;
        }
        for run in runs.iter_mut() {
            if run.failure.is_none() && run.row.state == RunState::Finish {
                self.finish(run)?;
            }
        }
        self.hold_forward(runs)?;
        self.rollback(runs).await
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
            Some(_) if values && row.state == RunState::Create => {
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
            supersedes: None,
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
            self.options.trigger,
            RunState::Create,
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
        let mut row = row;
        let Some(policy) = self.policies.secrets.get(&row.secret).cloned() else {
            row.error = Some("its policy no longer exists; finish or roll back by hand".into());
            let detail = json!({ "code": "no_policy" });
            self.advance_row(&mut row, Event::PolicyGone, detail, None, None)?;
            return Ok(None);
        };
        if row.state == RunState::Requested {
            // Asked for through the API: it starts now, from the value current now.
            let state = self.vault.secret_state(&row.secret)?;
            let current = state.as_ref().and_then(|s| s.current_version);
            if current.is_none() && !policy.push.is_empty() {
                row.error = Some(format!(
                    "{} has no current value to restore if the rotation fails",
                    row.secret
                ));
                let detail = json!({ "code": "no_value" });
                self.advance_row(&mut row, Event::NothingToRestore, detail, None, None)?;
                return Ok(None);
            }
            row.old_version = current;
            let detail = json!({ "trigger": row.trigger, "generator": row.generator, "old_version": current });
            self.advance_row(&mut row, Event::Start, detail, None, None)?;
        }
        self.note(format!(
            "{}: resuming rotation {} at {}",
            row.secret, row.id, row.state
        ));
        let mut run = self.load(row, policy, true)?;
        if matches!(
            run.row.state,
            RunState::Push | RunState::Verify | RunState::Finish | RunState::Rollback
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

    /// Moves `row` by `event` (see [`machine::next`]) and records the step, its effect
    /// and its audit entry in one transaction. `minted` and `max_versions` serve the
    /// effects that need them (staging the new value, promoting it).
    fn advance_row(
        &mut self,
        row: &mut RotationRow,
        event: Event,
        detail: Value,
        minted: Option<&Minted>,
        max_versions: Option<u32>,
    ) -> Result<(), VaultError> {
        let t = machine::next(row.state, event).map_err(illegal)?;
        let effect = match t.effect {
            Effect::None => StepEffect::None,
            Effect::StagePending => {
                let minted = minted.ok_or_else(|| {
                    VaultError::Io(format!("rotation {}: nothing minted to stage", row.id))
                })?;
                StepEffect::StagePending {
                    value: minted.value.clone(),
                    meta: minted.handle.clone(),
                }
            }
            Effect::Promote => StepEffect::Promote { max_versions },
            Effect::DiscardPending => StepEffect::DiscardPending,
            Effect::RedoPush => {
                // The next pass pushes and deploys again: the failed deployment is
                // not watched twice.
                row.deployments = "{}".into();
                StepEffect::None
            }
        };
        row.state = t.state;
        if let Some(outcome) = t.outcome {
            row.outcome = Some(outcome);
            row.finished_at_ms = Some(self.vault.now());
        }
        self.vault
            .rotation_step(row, t.step, t.status, detail, effect)
    }

    /// [`Engine::advance_row`] for a run of this pass.
    fn advance(&mut self, run: &mut Run, event: Event, detail: Value) -> Result<(), VaultError> {
        let max_versions = run.policy.max_versions;
        self.advance_row(
            &mut run.row,
            event,
            detail,
            run.minted.as_ref(),
            max_versions,
        )
    }

    /// A mint that failed before anything needs undoing: the rotation ends `failed`.
    fn fail(&mut self, run: &mut Run, err: &ExternalError) -> Result<(), VaultError> {
        run.row.error = Some(format!("create: {err}"));
        self.note(format!("{}: create failed: {err}", run.row.secret));
        let detail = json!({ "code": err.code(), "error": err.to_string() });
        self.advance(run, Event::CreateFailed, detail)
    }

    /// A step could not complete and must not be undone blindly: the rotation stays
    /// open in its state, with the error recorded, for the next pass to resume.
    fn stay(&mut self, run: &mut Run, event: Event, err: &ExternalError) -> Result<(), VaultError> {
        let step = run.row.state;
        run.row.error = Some(format!("{step}: {err}"));
        self.note(format!(
            "{}: {step} did not complete: {err}; the next pass resumes it",
            run.row.secret
        ));
        let detail = json!({ "code": err.code(), "error": err.to_string() });
        self.advance(run, event, detail)
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
                let err = ExternalError {
                    message: format!(
                        "{} (the reset cannot be undone: the new key stays pending and the old \
                         one works only until its expiry; fix the cause and run `secret rotate --due`)",
                        err.message
                    ),
                    ..err
                };
                self.stay(run, Event::Failed { can_undo: false }, &err)?;
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
                Err(e) => return self.stay(run, Event::Interrupted, &e),
            }
        } else {
            match run.provider.intent(&self.ctx(run)).await {
                Ok(mut intent) => {
                    intent["intent_recorded"] = json!(true);
                    run.row.provider_state = intent.to_string();
                    self.advance(run, Event::IntentRecorded, intent)?;
                }
                Err(e) => return self.fail(run, &e),
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
                    return self.stay(run, Event::Interrupted, &e)
                }
                Err(e) => return self.fail(run, &e),
            },
        };
        let detail = json!({ "handle": minted.handle, "recovered": resumed });
        run.minted = Some(minted);
        self.advance(run, Event::Minted, detail)?;
        self.note(format!(
            "{}: minted version {}",
            run.row.secret,
            run.row.new_version.unwrap_or(0)
        ));
        Ok(())
    }

    fn build_target(
        &mut self,
        name: &str,
        purpose: &str,
    ) -> Result<Box<dyn targets::Target>, ExternalError> {
        let connection = targets::Connection {
            http: self.http.clone(),
            retry: self.options.retry.clone(),
            poll_interval: self.options.poll_interval,
        };
        targets::open(&mut self.vault, &self.policies, name, purpose, &connection)
    }

    /// Push: one delivery and one deploy per target, shared by every run that needs it.
    /// Returns the deployment each target got in this pass.
    async fn push(
        &mut self,
        runs: &mut [Run],
    ) -> Result<BTreeMap<String, Option<String>>, VaultError> {
        for run in runs
            .iter_mut()
            .filter(|r| r.row.state == RunState::Push && r.minted.is_none())
        {
            // Never push an absent value: that would delete the variable.
            run.failure = Some(ExternalError::permanent(
                "vault",
                "the pending value is missing",
            ));
        }
        let plans: Vec<PushPlan<'_>> = runs
            .iter()
            .map(|r| PushPlan {
                ready: r.row.state == RunState::Push && r.failure.is_none(),
                targets: &r.policy.push,
                deployments: parse_json(&r.row.deployments),
            })
            .collect();
        let by_target = plan_push(&plans);
        let mut fresh_deploys = BTreeMap::new();
        for (target_name, members) in by_target {
            // A run that already failed at another target is not pushed further.
            let members: Vec<usize> = members
                .into_iter()
                .filter(|&i| runs[i].failure.is_none())
                .collect();
            if members.is_empty() {
                continue;
            }
            match self.push_target(runs, &target_name, &members).await? {
                Ok(deployment) => {
                    fresh_deploys.insert(
                        target_name.clone(),
                        deployment.as_ref().map(|d| d.0.clone()),
                    );
                    self.record_push(runs, &target_name, &members, deployment.as_ref())?;
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
            if run.row.state == RunState::Push
                && run.failure.is_none()
                && run.policy.push.is_empty()
            {
                self.advance(run, Event::Pushed { all: true }, json!({ "targets": [] }))?;
                self.close_superseded(run)?;
            }
        }
        Ok(fresh_deploys)
    }

    /// Delivers every member's variables to one target and deploys it. The newest
    /// deployment before ours is recorded before the deploy call, so that a pass
    /// resumed after a crash can tell whether that call took effect.
    async fn push_target(
        &mut self,
        runs: &mut [Run],
        target_name: &str,
        members: &[usize],
    ) -> Result<Result<Option<DeploymentId>, ExternalError>, VaultError> {
        let ids: Vec<String> = members.iter().map(|&i| runs[i].row.id.clone()).collect();
        let mut vars = Variables::new();
        for &i in members {
            let run = &runs[i];
            vars.extend(forward_vars(
                &run.row.secret,
                run.minted.as_ref().map(|m| &m.value),
                run.policy.previous_as.as_ref().map(|p| p.as_str()),
                run.current.as_ref(),
            ));
        }
        let marker = format!("{target_name}#before");
        let recorded: Option<Option<DeploymentId>> = members.iter().find_map(|&i| {
            parse_json(&runs[i].row.deployments)
                .get(&marker)
                .map(|v| v.as_str().map(|s| DeploymentId(s.to_string())))
        });
        let target = match self.build_target(target_name, &format!("rotation {}", ids.join(","))) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        self.note(format!(
            "push {} to {}",
            vars.keys().cloned().collect::<Vec<_>>().join(", "),
            target.describe()
        ));
        if let Err(e) = target.deliver(&vars).await {
            return Ok(Err(e));
        }
        let before = match recorded {
            Some(before) => before,
            None => match target.latest_deployment().await {
                Ok(before) => before,
                Err(e) => return Ok(Err(e)),
            },
        };
        for &i in members {
            let run = &mut runs[i];
            record_deployment(&mut run.row, &marker, before.as_ref());
            let detail = json!({ "target": target_name, "latest_before": before.as_ref().map(|d| d.0.clone()) });
            self.advance(run, Event::Deploying, detail)?;
        }
        Ok(target.deploy(before.as_ref()).await)
    }

    /// Records a target's deployment in each member run; a run pushed everywhere
    /// moves on to verify.
    fn record_push(
        &mut self,
        runs: &mut [Run],
        target_name: &str,
        members: &[usize],
        deployment: Option<&DeploymentId>,
    ) -> Result<(), VaultError> {
        let ids: Vec<String> = members.iter().map(|&i| runs[i].row.id.clone()).collect();
        let mut variables = Vec::new();
        for &i in members {
            let run = &runs[i];
            variables.push(run.row.secret.clone());
            if let (Some(prev), Some(_)) = (&run.policy.previous_as, &run.current) {
                variables.push(prev.to_string());
            }
        }
        variables.sort();
        for &i in members {
            let run = &mut runs[i];
            let deployments = record_deployment(&mut run.row, target_name, deployment);
            let all = run.policy.push.iter().all(|t| deployments.get(t).is_some());
            let detail = json!({
                "target": target_name,
                "deployment": deployment.map(|d| d.0.clone()),
                "variables": variables,
                "shared_with": ids,
            });
            self.advance(run, Event::Pushed { all }, detail)?;
            if all {
                self.close_superseded(run)?;
            }
        }
        Ok(())
    }

    /// The previous run of this secret, kept in grace while this run replaced its
    /// `previous_as` variable, is done: nothing of it is left at the targets.
    fn close_superseded(&mut self, run: &mut Run) -> Result<(), VaultError> {
        let Some(mut old) = run.supersedes.take() else {
            return Ok(());
        };
        old.revoked_at_ms = Some(self.vault.now());
        let detail = json!({ "superseded_by": run.row.id });
        self.advance_row(&mut old, Event::Superseded, detail, None, None)?;
        self.note(format!(
            "{}: rotation {} closed; {} took over its grace",
            old.secret, old.id, run.row.id
        ));
        Ok(())
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
            if run.row.state != RunState::Verify || run.failure.is_some() {
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
            if run.row.state != RunState::Verify || run.failure.is_some() {
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
                Ok(()) => self.advance(run, Event::Verified, json!({}))?,
                Err(e) => run.failure = Some(e),
            }
        }
        Ok(())
    }

    /// Pending becomes current. A run whose old credential stays valid (an OpenAI
    /// key, an Ed25519 public key in the JWKS, a `previous_as` variable) keeps it
    /// through its grace; otherwise it is done.
    fn finish(&mut self, run: &mut Run) -> Result<(), VaultError> {
        let grace = (run.provider.has_grace() || run.policy.previous_as.is_some())
            && run.row.old_version.is_some();
        if grace {
            run.row.revoke_after_ms = Some(self.vault.now() + run.policy.grace.as_millis() as i64);
        }
        let detail = json!({ "revoke_after_ms": run.row.revoke_after_ms });
        self.advance(run, Event::Promoted { grace }, detail)?;
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
            .filter(|&i| runs[i].failure.is_some() || runs[i].row.state == RunState::Rollback)
            .filter(|&i| runs[i].row.outcome.is_none())
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        for &i in &failed {
            self.begin_rollback(&mut runs[i])?;
        }
        let mut problems = self.restore_targets(runs, &failed).await;
        for &i in &failed {
            let notes = problems.remove(&i).unwrap_or_default();
            self.end_rollback(&mut runs[i], notes).await?;
        }
        Ok(())
    }

    fn begin_rollback(&mut self, run: &mut Run) -> Result<(), VaultError> {
        let reason = run
            .failure
            .as_ref()
            .map(|e| e.to_string())
            .or_else(|| run.row.error.clone())
            .unwrap_or_else(|| "interrupted rollback".into());
        run.row.error = Some(reason.clone());
        self.note(format!("{}: rolling back: {reason}", run.row.secret));
        let code = run
            .failure
            .as_ref()
            .map(|e| e.code())
            .unwrap_or("interrupted");
        self.advance(
            run,
            Event::RollbackStarted,
            json!({ "code": code, "error": reason }),
        )
    }

    /// Puts the old values back at every target of the failed runs: a delivery may
    /// have landed even where its step was never recorded (the process died, or the
    /// deploy after it failed). Returns what went wrong, by run.
    async fn restore_targets(
        &mut self,
        runs: &[Run],
        failed: &[usize],
    ) -> BTreeMap<usize, Vec<String>> {
        let mut by_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in failed {
            for t in &runs[i].policy.push {
                by_target.entry(t.clone()).or_default().push(i);
            }
        }
        let mut problems: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (target_name, members) in by_target {
            let mut vars = Variables::new();
            for &i in &members {
                let run = &runs[i];
                let previous_as = run.policy.previous_as.as_ref().map(|p| p.as_str());
                // `start` refuses a first rotation with targets, so there is an old value.
                match rollback_vars(&run.row.secret, run.current.as_ref(), previous_as) {
                    Some(v) => vars.extend(v),
                    None => problems
                        .entry(i)
                        .or_default()
                        .push(format!("no previous value to restore at {target_name}")),
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
        problems
    }

    /// Closes a rollback whose targets are restored (the new credential revoked where
    /// that is safe), or keeps it open when a target is not.
    async fn end_rollback(
        &mut self,
        run: &mut Run,
        mut notes: Vec<String>,
    ) -> Result<(), VaultError> {
        if !notes.is_empty() {
            // The old value is not back everywhere: revoking the new credential now
            // could cut off a target still using it. Stay in rollback and retry.
            let err = ExternalError::transient("rollback", notes.join("; "));
            return self.stay(run, Event::Interrupted, &err);
        }
        let discard = run.provider.can_discard();
        if discard {
            if let Some(minted) = &run.minted {
                if let Err(e) = run.provider.revoke(&self.ctx(run), &minted.handle).await {
                    notes.push(format!("revoking the new credential: {e}"));
                }
            }
        } else {
            notes.push(
                "the provider cannot undo the new credential: it is kept as the pending version and \
                 the next rotation reuses it"
                    .into(),
            );
        }
        if !notes.is_empty() {
            let base = run.row.error.clone().unwrap_or_default();
            run.row.error = Some(format!("{base}; {}", notes.join("; ")));
        }
        self.advance(
            run,
            Event::RolledBack { discard },
            json!({ "notes": notes }),
        )?;
        // The old value is current again at every target and `previous_as` is gone:
        // the grace this run took over has nothing left to retire.
        self.close_superseded(run)
    }

    /// The provider's revoke of a run's old credential, alone (no target is touched).
    async fn revoke_at_provider(&mut self, row: &RotationRow) -> Result<(), VaultError> {
        let Some(policy) = self.policies.secrets.get(&row.secret).cloned() else {
            return Err(VaultError::NotFound("its policy no longer exists".into()));
        };
        let run = self.load(row.clone(), policy, false)?;
        let handle = match row.old_version {
            Some(v) => self.vault.version_meta(&row.secret, v)?,
            None => json!({}),
        };
        run.provider
            .revoke(&self.ctx(&run), &handle)
            .await
            .map_err(|e| VaultError::Io(e.to_string()))
    }

    /// After grace: the provider revokes the old credential; `previous_as` is removed.
    async fn revoke(&mut self, mut row: RotationRow) -> Result<Outcome, VaultError> {
        let mut outcome = Outcome {
            secret: row.secret.clone(),
            rotation: Some(row.id.clone()),
            result: PassResult::Revoked,
            old_version: row.old_version,
            new_version: row.new_version,
            error: None,
            duration_ms: 0,
        };
        let Some(policy) = self.policies.secrets.get(&row.secret).cloned() else {
            outcome.result = PassResult::RevokeFailed;
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
                result = self.remove_previous(prev.as_str(), &policy.push).await;
            }
        }
        match result {
            Ok(()) => {
                row.revoked_at_ms = Some(self.vault.now());
                self.advance_row(
                    &mut row,
                    Event::Revoked,
                    json!({ "handle": handle }),
                    None,
                    None,
                )?;
                self.note(format!(
                    "{}: old version {} revoked",
                    row.secret,
                    row.old_version.unwrap_or(0)
                ));
            }
            Err(e) => {
                let detail = json!({ "code": e.code(), "error": e.to_string() });
                self.advance_row(&mut row, Event::RevokeFailed, detail, None, None)?;
                outcome.result = PassResult::RevokeFailed;
                outcome.error = Some(e.to_string());
            }
        }
        Ok(outcome)
    }

    /// Removes `previous_as` from every target, with a deploy each.
    async fn remove_previous(
        &mut self,
        prev: &str,
        targets: &[String],
    ) -> Result<(), ExternalError> {
        for target_name in targets {
            let mut vars = Variables::new();
            vars.insert(prev.to_string(), None);
            let target = self.build_target(target_name, "revoke")?;
            target.deliver(&vars).await?;
            let before = target.latest_deployment().await?;
            let deployment = target.deploy(before.as_ref()).await?;
            target.wait_healthy(deployment.as_ref(), &|_| {}).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn value(text: &str) -> SecretValue {
        SecretValue::from_bytes(Zeroizing::new(text.as_bytes().to_vec()), false).unwrap()
    }

    fn row() -> RotationRow {
        RotationRow::begun(
            "rot_1".into(),
            "API_KEY".into(),
            "random".into(),
            Trigger::Manual,
            RunState::Push,
            Some(1),
            0,
        )
    }

    fn outcome(result: PassResult) -> Outcome {
        Outcome::failed("S", None, result, String::new())
    }

    #[test]
    fn each_result_has_its_documented_exit_code() {
        let cases = [
            (PassResult::Finished, 0),
            (PassResult::Revoked, 0),
            (PassResult::RevokeFailed, 1),
            (PassResult::RunningElsewhere, 4),
            (PassResult::RolledBack, 6),
            (PassResult::Failed, 6),
            (PassResult::NotStarted, 6),
            (PassResult::Stuck, 6),
            (PassResult::Stopped(RunState::Push), 6),
        ];
        for (result, code) in cases {
            assert_eq!(result.exit_code(), code, "{result}");
        }
    }

    #[test]
    fn a_report_exits_with_its_most_serious_result() {
        let report = |results: &[PassResult]| RunReport {
            outcomes: results.iter().map(|r| outcome(*r)).collect(),
        };
        assert_eq!(report(&[]).exit_code(), 0);
        assert_eq!(
            report(&[PassResult::Finished, PassResult::RevokeFailed]).exit_code(),
            1
        );
        assert_eq!(
            report(&[PassResult::RevokeFailed, PassResult::RunningElsewhere]).exit_code(),
            4
        );
        assert_eq!(
            report(&[
                PassResult::RunningElsewhere,
                PassResult::Stopped(RunState::Verify),
                PassResult::Finished
            ])
            .exit_code(),
            6
        );
    }

    #[test]
    fn results_read_as_their_documented_texts() {
        assert_eq!(
            PassResult::Stopped(RunState::Rollback).to_string(),
            "stopped_in_rollback"
        );
        assert_eq!(
            serde_json::to_value(PassResult::RunningElsewhere).unwrap(),
            json!("running_elsewhere")
        );
        let mut r = row();
        assert_eq!(PassResult::of_run(&r), PassResult::Stopped(RunState::Push));
        r.outcome = Some(RunOutcome::RolledBack);
        assert_eq!(PassResult::of_run(&r), PassResult::RolledBack);
    }

    #[test]
    fn stuck_runs_count_as_stuck_and_revokes_that_worked_are_not_runs() {
        assert_eq!(
            PassResult::Stopped(RunState::Create).metric_outcome(),
            Some("stuck")
        );
        assert_eq!(PassResult::Revoked.metric_outcome(), None);
        assert_eq!(PassResult::RunningElsewhere.metric_outcome(), None);
        assert_eq!(PassResult::RolledBack.metric_outcome(), Some("rolled_back"));
    }

    #[test]
    fn deployments_are_recorded_by_target_and_marker() {
        let mut r = row();
        record_deployment(&mut r, "api#before", None);
        let all = record_deployment(&mut r, "api", Some(&DeploymentId("d-1".into())));
        assert_eq!(all, json!({ "api#before": null, "api": "d-1" }));
        assert_eq!(parse_json(&r.deployments), all);
    }

    #[test]
    fn forward_sets_the_new_value_and_previous_as_the_old_one() {
        let (new, old) = (value("new"), value("old"));
        let vars = forward_vars("JWT", Some(&new), Some("JWT_PREVIOUS"), Some(&old));
        assert_eq!(vars.len(), 2);
        assert_eq!(vars["JWT"].as_ref().unwrap().expose(), "new");
        assert_eq!(vars["JWT_PREVIOUS"].as_ref().unwrap().expose(), "old");
        // A first rotation has no old value: no previous_as.
        assert_eq!(
            forward_vars("JWT", Some(&new), Some("JWT_PREVIOUS"), None).len(),
            1
        );
    }

    #[test]
    fn rollback_restores_the_old_value_and_removes_previous_as() {
        let old = value("old");
        let vars = rollback_vars("JWT", Some(&old), Some("JWT_PREVIOUS")).unwrap();
        assert_eq!(vars["JWT"].as_ref().unwrap().expose(), "old");
        assert!(vars["JWT_PREVIOUS"].is_none(), "removed, not set");
        assert!(rollback_vars("JWT", None, None).is_none());
    }

    #[test]
    fn the_push_plan_shares_targets_and_skips_what_is_done_or_failed() {
        let api_worker = ["api".to_string(), "worker".to_string()];
        let api = ["api".to_string()];
        let plans = [
            PushPlan {
                ready: true,
                targets: &api_worker,
                deployments: json!({ "worker": "d-9" }),
            },
            PushPlan {
                ready: true,
                targets: &api,
                deployments: json!({}),
            },
            PushPlan {
                ready: false,
                targets: &api_worker,
                deployments: json!({}),
            },
        ];
        let plan = plan_push(&plans);
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert_eq!(plan["api"], [0, 1]);
    }

    #[test]
    fn holders_of_another_boot_or_a_malformed_id_cannot_be_checked() {
        assert_eq!(holder_liveness("nonsense"), Liveness::Unknown);
        assert_eq!(holder_liveness("other-boot:1:1:abcd"), Liveness::Unknown);
        let me = holder_id("n");
        assert_eq!(holder_liveness(&me), Liveness::Alive, "{me}");
    }

    #[test]
    fn pass_results_read_back_from_their_text() {
        let all = [
            PassResult::Finished,
            PassResult::RolledBack,
            PassResult::Failed,
            PassResult::Revoked,
            PassResult::RevokeFailed,
            PassResult::RunningElsewhere,
            PassResult::NotStarted,
            PassResult::Stuck,
            PassResult::Stopped(RunState::Push),
            PassResult::Stopped(RunState::Rollback),
        ];
        for result in all {
            assert_eq!(result.to_string().parse::<PassResult>(), Ok(result));
        }
        assert!("stopped_in_nowhere".parse::<PassResult>().is_err());
        assert!("finishd".parse::<PassResult>().is_err());
    }
}
