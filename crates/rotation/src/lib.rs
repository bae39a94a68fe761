//! `secret-rotation`: the persisted state machine that mints a new credential, pushes
//! it to every target that uses it, proves it works, and only then retires the old
//! one — or rolls back and says why.
//!
//! # Layout
//!
//! ```text
//!  engine (one pass: select, lock, create, push, verify, finish | rollback, revoke)
//!    ├─► machine (the pure transition function: state + event → state, step, effect)
//!    ├─► providers/* (mint, verify, revoke: random, jwt-hmac, jwt-ed25519, openai,
//!    │                launchdarkly) ─┐
//!    ├─► targets/* (deliver, deploy, wait, read back: railway, dotenv) ─┴─► http (the
//!    │                                   one outbound client: errors, Retry-After, backoff)
//!    └─► secret_core::vault (records every step with its audit entry)
//!  drift (targets read back and compared with the vault by fingerprint; --fix) ─► targets
//! ```
//!
//! - [`engine::Engine`] runs a pass; [`machine::next`] is the only way a run changes
//!   state (its diagram is in that module and in the README).
//! - [`providers`] and [`targets`] are one small trait each, one file per kind; they
//!   never touch the vault, and take their time, HTTP client and base URL from the
//!   engine, so tests point them at stand-ins on loopback.
//! - [`drift`] reads what each target holds ([`targets::Target::live`]) and compares it
//!   with the vault by keyed fingerprint, never by value; `--fix` pushes the vault's
//!   values back under the rotation locks.
//! - [`http`] classifies failures (transient: retried with backoff; permanent: the
//!   step fails at once) and reads the services' rate-limit headers.
//! - This file holds scheduling ([`next_due`], [`Due`]) and [`describe`], the words
//!   `secret plan` and `--dry-run` print.
//!
//! Every step is a row in the store, recorded with its audit entry in one transaction
//! (the new value is stored as the `pending` version in the transaction that records
//! `create`), so a process killed at any point leaves a state the next
//! `secret rotate --due` (or `secret serve`) resumes or rolls back — never repeats
//! blindly. Rotations in one pass that share a target share its upsert and its deploy.
//!
//! Depends on `secret-core` only; nothing here knows of HTTP servers or the CLI.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod drift;
pub mod engine;
pub mod http;
pub mod machine;
pub mod providers;
pub mod targets;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use secret_core::policy::{Generator, PolicySet, SecretPolicy, TargetPolicy};
use secret_core::rotation_state::RunOutcome;
use secret_core::vault::{RotationRow, SecretRow};

pub use engine::{rotatable, Engine, EngineOptions, Outcome, PassResult, Request, RunReport};
pub use secret_core::rotation_state::{RunState, Step, StepStatus, Trigger};

/// A failed rotation is retried by `--due` and the scheduler no sooner than this.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// When a secret is next due, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Never rotated here and no value yet, or the schedule says now.
    Now,
    At(i64),
    /// A manual secret: not rotated; overdue once its current value is older than max_age.
    Manual {
        overdue_at: Option<i64>,
    },
}

fn to_utc(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// The next due time of `policy`, from the vault's view of the secret and its last
/// rotations (newest first). Time is passed in, so `plan`, `rotate --due` and the
/// scheduler agree.
pub fn next_due(
    policy: &SecretPolicy,
    state: Option<&SecretRow>,
    recent: &[RotationRow],
    current_created_ms: Option<i64>,
) -> Due {
    let Some(schedule) = &policy.schedule else {
        let overdue_at = match (policy.max_age, current_created_ms) {
            (Some(max_age), Some(created)) => Some(created + max_age.as_millis() as i64),
            _ => None,
        };
        return Due::Manual { overdue_at };
    };
    // The last time the value changed for good: a finished rotation, else when the
    // current version was written (a value set by hand counts as fresh).
    let last_finished = recent
        .iter()
        .filter(|r| r.outcome == Some(RunOutcome::Finished))
        .filter_map(|r| r.finished_at_ms)
        .max();
    let last = match (last_finished, current_created_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let Some(last) = last.filter(|_| state.is_some_and(|s| s.current_version.is_some())) else {
        return Due::Now;
    };
    let scheduled = to_utc(last)
        .and_then(|t| schedule.next_due(t))
        .map(|t| t.timestamp_millis())
        .unwrap_or(last);
    // A rotation that failed is not retried in a tight loop.
    let backoff = recent
        .iter()
        .filter(|r| matches!(r.outcome, Some(RunOutcome::RolledBack | RunOutcome::Failed)))
        .map(|r| r.started_at_ms + RETRY_AFTER_FAILURE.as_millis() as i64)
        .filter(|t| *t > last)
        .max();
    Due::At(backoff.map_or(scheduled, |b| b.max(scheduled)))
}

/// How long past due a scheduled secret may be before it counts as overdue: a pass or
/// two of slack.
pub const OVERDUE_SLACK_MS: i64 = 60_000;

impl Due {
    /// Overdue: a manual secret past `max_age` (or with no value), or a scheduled one
    /// past due by more than [`OVERDUE_SLACK_MS`]. `secret plan`, the scheduler's
    /// metrics and its alerts all use this.
    pub fn is_overdue(&self, now_ms: i64) -> bool {
        match self {
            Due::Manual { overdue_at } => overdue_at.is_none_or(|t| t <= now_ms),
            Due::At(t) => *t + OVERDUE_SLACK_MS < now_ms,
            Due::Now => false,
        }
    }

    pub fn is_due(&self, now_ms: i64) -> bool {
        match self {
            Due::Now => true,
            Due::At(t) => *t <= now_ms,
            Due::Manual { .. } => false,
        }
    }
}

/// What a rotation of `policy` will do, in words: minted what, pushed where, revoked
/// when. Used by `secret plan` and `secret rotate --dry-run`; contacts nothing.
pub fn describe(policy: &SecretPolicy, policies: &PolicySet, has_current: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mint = match &policy.generator {
        Generator::Random { length, charset } => format!("a random {length}-character {} value", charset.as_str()),
        Generator::JwtHmac { algorithm } => {
            format!("a {}-byte {} signing key (base64url)", algorithm.key_bytes(), algorithm.as_str())
        }
        Generator::JwtEd25519 => "an Ed25519 key pair (private key PKCS#8 PEM; public key kept for the JWKS)".into(),
        Generator::OpenAi(s) => format!(
            "a new OpenAI service account `secret-rotation-<id>` in project {} and its key (admin key from {})",
            s.project_id, s.admin_key
        ),
        Generator::LaunchDarklySdk(s) => format!(
            "a new LaunchDarkly SDK key for {}/{} by reset, the old key expiring after grace (token from {})",
            s.project_key, s.environment_key, s.access_token
        ),
        Generator::LaunchDarklyMobile(s) => format!(
            "a new LaunchDarkly mobile key for {}/{} by reset (token from {})",
            s.project_key, s.environment_key, s.access_token
        ),
        Generator::Manual => "nothing: manual secrets are set by a person".into(),
    };
    lines.push(format!("mint {mint}"));
    for target_name in &policy.push {
        let mut vars = vec![policy.name.to_string()];
        if let (Some(prev), true) = (&policy.previous_as, has_current) {
            vars.push(format!("{prev} (= the old value, during grace)"));
        }
        let place = match policies.targets.get(target_name) {
            Some(TargetPolicy::Railway(r)) => {
                let mut s = format!(
                    "railway {} (service {}): one variableCollectionUpsert with skipDeploys",
                    r.name, r.service_id
                );
                if r.redeploy {
                    s.push_str(&format!(
                        ", then one deploy, waiting up to {} for SUCCESS",
                        humantime::format_duration(r.deploy_timeout)
                    ));
                }
                if let Some(h) = &r.health_url {
                    s.push_str(&format!(", then {h} must answer 2xx"));
                }
                s
            }
            Some(TargetPolicy::Dotenv(d)) => format!("dotenv file {}", d.path.display()),
            None => format!("{target_name} (undefined target)"),
        };
        lines.push(format!("push {} to {place}", vars.join(" and ")));
    }
    let verify = match &policy.generator {
        Generator::OpenAi(_) => "verify GET /v1/models with the new key",
        Generator::LaunchDarklySdk(_) | Generator::LaunchDarklyMobile(_) => {
            "verify the environment reports the new key"
        }
        _ => "verify the new value's format",
    };
    lines.push(verify.to_string());
    let grace = humantime::format_duration(policy.grace).to_string();
    let revoke = match &policy.generator {
        Generator::OpenAi(_) => {
            format!("after grace ({grace}): delete the old key's service account")
        }
        Generator::LaunchDarklySdk(_) => {
            format!("after grace ({grace}): LaunchDarkly retires the old key itself (expiry)")
        }
        Generator::LaunchDarklyMobile(_) => {
            "the old mobile key dies at once (LaunchDarkly keeps no overlap)".into()
        }
        Generator::JwtEd25519 => {
            format!("after grace ({grace}): the old public key leaves the JWKS (the new one is published from create on)")
        }
        _ => format!("after grace ({grace}): nothing to revoke at a provider"),
    };
    lines.push(revoke);
    if let Some(prev) = &policy.previous_as {
        lines.push(format!("after grace: remove {prev} from the targets"));
    }
    lines.push(
        "on failure: push the old value back, redeploy, revoke the new credential, exit 6".into(),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::policy::parse_str;
    use std::path::Path;

    fn policy() -> SecretPolicy {
        let set = parse_str(
            Path::new("t.toml"),
            r#"
            [secrets.K]
            generator = "random"
            every = "1d"
            "#,
        )
        .unwrap();
        set.secrets["K"].clone()
    }

    fn row(current: bool) -> SecretRow {
        SecretRow {
            name: "K".into(),
            description: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            deleted_at_ms: None,
            latest_version: 1,
            current_version: current.then_some(1),
            pending_version: None,
            previous_version: None,
        }
    }

    fn rotation(outcome: RunOutcome, started: i64, finished: Option<i64>) -> RotationRow {
        RotationRow {
            id: "r".into(),
            secret: "K".into(),
            generator: "random".into(),
            trigger: Trigger::Due,
            state: RunState::Done,
            outcome: Some(outcome),
            old_version: None,
            new_version: None,
            started_at_ms: started,
            updated_at_ms: started,
            finished_at_ms: finished,
            revoke_after_ms: None,
            revoked_at_ms: None,
            error: None,
            provider_state: "{}".into(),
            deployments: "{}".into(),
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_secret_without_a_value_is_due_now() {
        assert_eq!(next_due(&policy(), None, &[], None), Due::Now);
        assert_eq!(next_due(&policy(), Some(&row(false)), &[], None), Due::Now);
    }

    #[test]
    fn due_is_one_period_after_the_last_change() {
        let due = next_due(&policy(), Some(&row(true)), &[], Some(10 * DAY));
        assert_eq!(due, Due::At(11 * DAY));
        let recent = [rotation(RunOutcome::Finished, 12 * DAY, Some(12 * DAY + 5))];
        assert_eq!(
            next_due(&policy(), Some(&row(true)), &recent, Some(10 * DAY)),
            Due::At(13 * DAY + 5)
        );
    }

    #[test]
    fn an_overdue_secret_is_due_once_not_once_per_missed_period() {
        let due = next_due(&policy(), Some(&row(true)), &[], Some(0));
        assert!(due.is_due(30 * DAY));
        assert_eq!(due, Due::At(DAY));
    }

    #[test]
    fn a_failed_rotation_backs_off() {
        let recent = [rotation(RunOutcome::RolledBack, 5 * DAY, None)];
        let due = next_due(&policy(), Some(&row(true)), &recent, Some(0));
        assert_eq!(
            due,
            Due::At(5 * DAY + RETRY_AFTER_FAILURE.as_millis() as i64)
        );
    }
}
