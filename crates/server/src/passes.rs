//! What the scheduler's passes did, by rotation id: the outcomes `secret rotate NAME`
//! prints. A rotation the API accepted (`POST /v1/secrets/{name}/rotate`) runs in the
//! scheduler's next pass; `GET /v1/rotations/{id}` shows that pass's outcomes for its
//! secret once the pass has ended, so that `secret rotate` in remote mode waits for the
//! same moment and prints the same lines as a local `secret rotate`: the run itself,
//! and, before it, the early revoke of a previous run still in grace.
//!
//! Kept in memory, for the most recent [`KEEP`] rotation ids: it is the answer to a
//! client polling right now, not a record (the audit log and the rotation rows are).
//! A server restarted in between has forgotten it; the rotation row still tells how
//! the run ended.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::service::RotateRequest;
use secret_rotation::{Outcome, RunReport};

/// Rotation ids remembered.
pub const KEEP: usize = 1024;

/// Outcomes of recent passes, by rotation id.
#[derive(Debug, Default)]
pub struct PassLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_rotation: HashMap<String, Vec<Outcome>>,
    /// Oldest first, for eviction.
    order: VecDeque<String>,
}

impl PassLog {
    /// Records a pass: each requested rotation id, and each run the pass reported, gets
    /// the pass's outcomes for its secret, in the pass's order.
    pub fn record(&self, requested: &[RotateRequest], report: &RunReport) {
        let of_secret = |secret: &str| -> Vec<Outcome> {
            report
                .outcomes
                .iter()
                .filter(|o| o.secret == secret)
                .cloned()
                .collect()
        };
        let mut entries: Vec<(String, Vec<Outcome>)> = requested
            .iter()
            .map(|r| (r.rotation_id.clone(), of_secret(&r.secret)))
            .collect();
        for o in &report.outcomes {
            if let Some(id) = &o.rotation {
                if !entries.iter().any(|(known, _)| known == id) {
                    entries.push((id.clone(), of_secret(&o.secret)));
                }
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (id, outcomes) in entries {
            if outcomes.is_empty() {
                continue;
            }
            if inner.by_rotation.insert(id.clone(), outcomes).is_none() {
                inner.order.push_back(id);
            }
        }
        while inner.order.len() > KEEP {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_rotation.remove(&oldest);
            }
        }
    }

    /// The outcomes of the pass that last ran `rotation_id`, if this process ran it.
    pub fn get(&self, rotation_id: &str) -> Option<Vec<Outcome>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_rotation.get(rotation_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_rotation::PassResult;

    fn outcome(secret: &str, id: &str, result: PassResult) -> Outcome {
        Outcome {
            secret: secret.into(),
            rotation: Some(id.into()),
            result,
            old_version: Some(1),
            new_version: Some(2),
            error: None,
            duration_ms: 5,
        }
    }

    #[test]
    fn a_request_gets_every_outcome_of_its_secret_in_pass_order() {
        let log = PassLog::default();
        let report = RunReport {
            outcomes: vec![
                outcome("A", "rot_old", PassResult::Revoked),
                outcome("B", "rot_b", PassResult::Finished),
                outcome("A", "rot_a", PassResult::Finished),
            ],
        };
        let asked = [RotateRequest {
            secret: "A".into(),
            rotation_id: "rot_a".into(),
        }];
        log.record(&asked, &report);
        let a = log.get("rot_a").unwrap();
        let ids: Vec<_> = a.iter().map(|o| o.rotation.clone().unwrap()).collect();
        assert_eq!(ids, ["rot_old", "rot_a"]);
        assert_eq!(log.get("rot_b").unwrap().len(), 1, "runs not asked for too");
        assert!(log.get("rot_unknown").is_none());
    }

    #[test]
    fn only_the_newest_ids_are_kept() {
        let log = PassLog::default();
        for i in 0..KEEP + 10 {
            let id = format!("rot_{i}");
            let report = RunReport {
                outcomes: vec![outcome("A", &id, PassResult::Finished)],
            };
            log.record(&[], &report);
        }
        assert!(log.get("rot_0").is_none());
        assert!(log.get(&format!("rot_{}", KEEP + 9)).is_some());
        assert_eq!(log.inner.lock().unwrap().by_rotation.len(), KEEP);
    }
}
