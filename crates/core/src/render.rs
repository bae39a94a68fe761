//! Presentation shared by the CLI and the API, so that `secret audit --json` and
//! `GET /v1/audit`, or `secret rotations --json` and `GET /v1/rotations`, cannot drift
//! apart: times as RFC 3339, ages, one audit entry as JSON, one rotation run as JSON.
//!
//! Only formatting lives here: no I/O, no decisions. With the `openapi` feature the
//! rotation body also describes itself to utoipa for the API's OpenAPI document.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::audit::Entry;
use crate::crypto;
use crate::rotation_state::{RunOutcome, RunState, Step, StepStatus, Trigger};
use crate::store::{RotationRow, StepRow};

/// The last instant RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// UTC time as RFC 3339, with milliseconds or to the second. Times past year 9999 (a
/// token made with an enormous `--ttl`, a row edited by hand) print as its last
/// instant: the formatter refuses them, and a refusal here used to be a panic.
pub fn rfc3339(ms: i64, millis: bool) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST_RFC3339_MS) as u64);
    if millis {
        humantime::format_rfc3339_millis(time).to_string()
    } else {
        humantime::format_rfc3339_seconds(time).to_string()
    }
}

/// "3d ago", "5m ago".
pub fn age(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms.saturating_sub(then_ms).max(0) / 1000) as u64;
    let (n, unit) = match secs {
        0..=59 => (secs, "s"),
        60..=3599 => (secs / 60, "m"),
        3600..=86_399 => (secs / 3600, "h"),
        _ => (secs / 86_400, "d"),
    };
    format!("{n}{unit} ago")
}

/// One audit entry as a JSON object (what `--json`, `export` and `/v1/audit` give).
pub fn entry_json(e: &Entry) -> serde_json::Value {
    let details: serde_json::Value =
        serde_json::from_str(&e.details).unwrap_or(serde_json::Value::String(e.details.clone()));
    serde_json::json!({
        "seq": e.seq,
        "time": rfc3339(e.at_ms, true),
        "actor": e.actor,
        "pid": e.pid,
        "action": e.action,
        "secret": e.secret,
        "version": e.version,
        "outcome": e.outcome,
        "request_id": e.request_id,
        "details": details,
        "mac": crypto::hex(&e.mac),
    })
}

/// One rotation run, as `secret rotations --json` and `/v1/rotations` give it.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotationBody {
    pub id: String,
    pub secret: String,
    pub generator: String,
    pub trigger: Trigger,
    pub state: RunState,
    pub outcome: Option<RunOutcome>,
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub revoke_after: Option<String>,
    pub revoked_at: Option<String>,
    pub error: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub deployments: serde_json::Value,
    pub steps: Vec<StepBody>,
}

/// One persisted step of a run.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepBody {
    pub seq: u64,
    pub step: Step,
    pub status: StepStatus,
    pub at: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// One run as JSON: the same shape for the API and `secret rotations --json`.
pub fn rotation_body(r: RotationRow, steps: Vec<StepRow>) -> RotationBody {
    RotationBody {
        started_at: rfc3339(r.started_at_ms, true),
        finished_at: r.finished_at_ms.map(|t| rfc3339(t, true)),
        revoke_after: r.revoke_after_ms.map(|t| rfc3339(t, true)),
        revoked_at: r.revoked_at_ms.map(|t| rfc3339(t, true)),
        deployments: serde_json::from_str(&r.deployments).unwrap_or_default(),
        steps: steps
            .into_iter()
            .map(|s| StepBody {
                seq: s.seq,
                at: rfc3339(s.at_ms, true),
                detail: serde_json::from_str(&s.detail).unwrap_or_default(),
                step: s.step,
                status: s.status,
            })
            .collect(),
        id: r.id,
        secret: r.secret,
        generator: r.generator,
        trigger: r.trigger,
        state: r.state,
        outcome: r.outcome,
        old_version: r.old_version,
        new_version: r.new_version,
        error: r.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500, true), "1970-01-01T00:00:01.500Z");
        assert_eq!(rfc3339(-5, false), "1970-01-01T00:00:00Z");
        // Found by the audit_entries fuzz target: past year 9999 this panicked.
        assert_eq!(rfc3339(i64::MAX, true), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(LAST_RFC3339_MS + 1, false), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(10_000, 5_000), "5s ago");
        assert_eq!(age(3_600_000, 0), "1h ago");
        assert_eq!(age(0, 10_000), "0s ago");
        assert_eq!(age(86_400_000 * 3, 0), "3d ago");
        assert_eq!(age(i64::MAX, i64::MIN), "106751991167d ago");
        assert_eq!(age(i64::MIN, i64::MAX), "0s ago");
    }
}
