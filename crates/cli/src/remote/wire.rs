//! The JSON `secret serve` answers with, and its conversion into the domain types a
//! local vault returns (times back to unix milliseconds, texts back to enums, hex back
//! to bytes). A field this `secret` cannot read is an error naming what it expected,
//! never a guess.

use secrecy::SecretString;
use serde::Deserialize;

use secret_core::model::{Label, Revealed, SecretName, SecretValue, VersionNumber};
use secret_core::vault::{RotationRow, StepRow};
use secret_rotation::{Outcome, PassResult};

/// `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: ErrorDetail,
}

#[derive(Deserialize)]
pub(super) struct ErrorDetail {
    pub(super) code: String,
    pub(super) message: String,
}

#[derive(Deserialize)]
pub(super) struct ValueIn {
    pub(super) name: String,
    pub(super) version: u64,
    pub(super) created_at: String,
    pub(super) value: SecretString,
}

#[derive(Deserialize)]
pub(super) struct WrittenIn {
    pub(super) version: u64,
}

#[derive(Deserialize)]
pub(super) struct DeletedIn {
    pub(super) changed: bool,
}

#[derive(Deserialize)]
pub(super) struct ListIn {
    pub(super) secrets: Vec<SummaryIn>,
}

#[derive(Deserialize)]
pub(super) struct SummaryIn {
    pub(super) name: String,
    pub(super) version: Option<u64>,
    pub(super) latest_version: u64,
    pub(super) pending_version: Option<u64>,
    pub(super) previous_version: Option<u64>,
    pub(super) versions: u64,
    pub(super) description: Option<String>,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) deleted_at: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct VersionsIn {
    pub(super) name: String,
    pub(super) deleted_at: Option<String>,
    pub(super) description: Option<String>,
    pub(super) versions: Vec<VersionIn>,
}

#[derive(Deserialize)]
pub(super) struct VersionIn {
    pub(super) version: u64,
    pub(super) labels: Vec<String>,
    pub(super) created_at: String,
    pub(super) destroyed_at: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ExportIn {
    pub(super) secrets: Vec<ValueIn>,
    pub(super) omitted: Option<usize>,
}

#[derive(Deserialize)]
pub(super) struct AuditIn {
    pub(super) entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
pub(super) struct EntryIn {
    pub(super) seq: u64,
    pub(super) time: String,
    pub(super) actor: String,
    pub(super) pid: Option<u32>,
    pub(super) action: String,
    pub(super) secret: Option<String>,
    pub(super) version: Option<u64>,
    pub(super) outcome: String,
    pub(super) request_id: String,
    pub(super) details: serde_json::Value,
    pub(super) mac: String,
}

#[derive(Deserialize)]
pub(super) struct RotationsIn {
    pub(super) rotations: Vec<RunIn>,
}

#[derive(Deserialize)]
pub(super) struct RunIn {
    pub(super) id: String,
    pub(super) secret: String,
    pub(super) generator: String,
    pub(super) trigger: String,
    pub(super) state: String,
    pub(super) outcome: Option<String>,
    pub(super) old_version: Option<u64>,
    pub(super) new_version: Option<u64>,
    pub(super) started_at: String,
    pub(super) finished_at: Option<String>,
    pub(super) revoke_after: Option<String>,
    pub(super) revoked_at: Option<String>,
    pub(super) error: Option<String>,
    pub(super) deployments: serde_json::Value,
    pub(super) steps: Vec<StepIn>,
    /// Only on `GET /v1/rotations/{id}`.
    #[serde(default)]
    pub(super) pass: Option<Vec<Outcome>>,
}

#[derive(Deserialize)]
pub(super) struct StepIn {
    pub(super) seq: u64,
    pub(super) step: String,
    pub(super) status: String,
    pub(super) at: String,
    pub(super) detail: serde_json::Value,
}

#[derive(Deserialize)]
pub(super) struct QueuedIn {
    pub(super) rotation: String,
}

/// The time an answer shows, back in unix milliseconds.
pub(super) fn ms(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339(text).map_err(|_| format!("a time {text:?}"))?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("a time before 1970: {text:?}"))?;
    i64::try_from(since.as_millis()).map_err(|_| format!("a time too far ahead: {text:?}"))
}

pub(super) fn ms_opt(text: &Option<String>) -> Result<Option<i64>, String> {
    text.as_deref().map(ms).transpose()
}

pub(super) fn label_text(text: &str) -> Result<&'static str, String> {
    [Label::Current, Label::Pending, Label::Previous]
        .into_iter()
        .map(Label::as_str)
        .find(|l| *l == text)
        .ok_or_else(|| format!("a label {text:?}"))
}

pub(super) fn revealed(v: ValueIn) -> Result<Revealed, String> {
    let name = SecretName::new(&v.name).map_err(|_| "a secret name".to_string())?;
    let version = VersionNumber::new(v.version).ok_or("a version number")?;
    let created_at_ms = ms(&v.created_at)?;
    let value = SecretValue::from_secret_string(v.value).map_err(|_| "a value".to_string())?;
    Ok(Revealed {
        name,
        version,
        created_at_ms,
        value,
    })
}

/// A run as the local vault gives it, with the outcomes of the pass that ran it.
pub(super) struct Run {
    pub(super) row: RotationRow,
    pub(super) steps: Vec<StepRow>,
    pub(super) pass: Option<Vec<Outcome>>,
}

pub(super) fn run_row(r: RunIn) -> Result<Run, String> {
    let parse = |what: &str, e: secret_core::rotation_state::UnknownText| format!("{what}: {e}");
    let steps = r
        .steps
        .into_iter()
        .map(|s| {
            Ok(StepRow {
                seq: s.seq,
                step: s.step.parse().map_err(|e| parse("a step", e))?,
                status: s.status.parse().map_err(|e| parse("a step status", e))?,
                at_ms: ms(&s.at)?,
                detail: s.detail.to_string(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let started_at_ms = ms(&r.started_at)?;
    let row = RotationRow {
        trigger: r.trigger.parse().map_err(|e| parse("a trigger", e))?,
        state: r.state.parse().map_err(|e| parse("a state", e))?,
        outcome: r
            .outcome
            .map(|o| o.parse())
            .transpose()
            .map_err(|e| parse("an outcome", e))?,
        started_at_ms,
        // Not in the API (and shown by nothing): the newest step's time stands in.
        updated_at_ms: steps.iter().map(|s| s.at_ms).max().unwrap_or(started_at_ms),
        finished_at_ms: ms_opt(&r.finished_at)?,
        revoke_after_ms: ms_opt(&r.revoke_after)?,
        revoked_at_ms: ms_opt(&r.revoked_at)?,
        // Provider handles stay on the server.
        provider_state: "{}".into(),
        deployments: r.deployments.to_string(),
        id: r.id,
        secret: r.secret,
        generator: r.generator,
        old_version: r.old_version,
        new_version: r.new_version,
        error: r.error,
    };
    Ok(Run {
        row,
        steps,
        pass: r.pass,
    })
}

/// The run's own outcome, from its row (for a run whose pass this server no longer
/// remembers).
pub(super) fn outcome_of_row(row: &RotationRow) -> Outcome {
    use secret_core::rotation_state::RunOutcome;
    Outcome {
        secret: row.secret.clone(),
        rotation: Some(row.id.clone()),
        result: match row.outcome {
            Some(RunOutcome::Finished) => PassResult::Finished,
            Some(RunOutcome::RolledBack) => PassResult::RolledBack,
            Some(RunOutcome::Failed) => PassResult::Failed,
            None => PassResult::Stopped(row.state),
        },
        old_version: row.old_version,
        new_version: row.new_version,
        error: row.error.clone(),
        duration_ms: row.finished_at_ms.unwrap_or(row.updated_at_ms) - row.started_at_ms,
    }
}
