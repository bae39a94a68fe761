//! Property tests of versions, labels and compare-and-set: random sequences of `set`
//! (with right, stale and create-only `--if-version`), rotation-like label moves
//! (stage pending, promote with pruning, discard), delete, undelete and destroy, run
//! against a real vault and against a small model of the rules in DESIGN.md. After
//! every operation the vault must agree with the model, and these must hold:
//!
//! - each label sits on at most one version, and on a version that exists;
//! - version numbers only count up and are never reused, even after pruning;
//! - `latest_version` is the highest version ever written;
//! - a compare-and-set succeeds exactly when its expected version is the current one;
//! - every read returns the value written for that version, and nothing reads as
//!   tampered: the metadata MACs and the audit chain verify at the end.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::{InitOptions, SetOptions, StepEffect, Unlocker, Vault};
use crate::audit::Actor;
use crate::crypto::{generate_identity, Identities};
use crate::error::VaultError;
use crate::model::{Label, SecretValue, VersionNumber, VersionSelector};
use crate::rotation_state::{RunOutcome, RunState, Step, StepStatus, Trigger};
use crate::store::RotationRow;

const NAMES: [&str; 2] = ["A", "B"];

#[derive(Clone, Debug)]
enum Cas {
    None,
    /// The model's current version: must succeed.
    Current,
    /// Off by this much from the current version: must fail.
    Stale(u64),
    /// 0, create only.
    Create,
}

#[derive(Clone, Debug)]
enum Op {
    Set {
        name: usize,
        cas: Cas,
    },
    Stage {
        name: usize,
    },
    Promote {
        name: usize,
        keep: Option<u32>,
    },
    Discard {
        name: usize,
    },
    Delete {
        name: usize,
    },
    Undelete {
        name: usize,
    },
    /// Destroys the version at this position of the model's live versions.
    Destroy {
        name: usize,
        pick: usize,
    },
}

fn ops() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let cas = prop_oneof![
        Just(Cas::None),
        Just(Cas::Current),
        (1u64..3).prop_map(Cas::Stale),
        Just(Cas::Create),
    ];
    prop_oneof![
        4 => (name.clone(), cas).prop_map(|(name, cas)| Op::Set { name, cas }),
        2 => name.clone().prop_map(|name| Op::Stage { name }),
        2 => (name.clone(), proptest::option::of(2u32..4)).prop_map(|(name, keep)| Op::Promote { name, keep }),
        1 => name.clone().prop_map(|name| Op::Discard { name }),
        1 => name.clone().prop_map(|name| Op::Delete { name }),
        1 => name.clone().prop_map(|name| Op::Undelete { name }),
        1 => (name, 0usize..4).prop_map(|(name, pick)| Op::Destroy { name, pick }),
    ]
}

/// What DESIGN.md says one secret should look like.
#[derive(Clone, Debug, Default)]
struct Model {
    exists: bool,
    /// Version → its value; `None` once destroyed. Pruned versions are gone.
    versions: BTreeMap<u64, Option<String>>,
    latest: u64,
    current: Option<u64>,
    previous: Option<u64>,
    pending: Option<u64>,
    deleted: bool,
    /// The open rotation that staged `pending`.
    rotation: Option<RotationRow>,
}

struct Harness {
    vault: Vault,
    models: Vec<Model>,
    counter: u64,
    /// Highest version number ever written, per secret.
    highest: Vec<u64>,
}

fn value(text: &str) -> SecretValue {
    SecretValue::from_bytes(zeroize::Zeroizing::new(text.as_bytes().to_vec()), false)
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Harness {
    fn new(dir: &std::path::Path) -> Self {
        let identity = generate_identity("2026-01-01T00:00:00Z");
        let actor = Actor {
            name: "user:prop".into(),
            pid: None,
            request_id: "p".into(),
        };
        let path = dir.join("v.db");
        drop(
            Vault::init(
                &path,
                InitOptions {
                    recipients: vec![identity.recipient.clone()],
                    passphrase: None,
                    scrypt_log_n: None,
                },
                actor.clone(),
            )
            .unwrap(),
        );
        let vault = Vault::open(
            &path,
            Unlocker {
                identities: Some(Identities::parse(&identity.file_text).unwrap()),
                passphrase: None,
                identity_hint: String::new(),
            },
            actor,
        )
        .unwrap();
        Self {
            vault,
            models: vec![Model::default(); NAMES.len()],
            counter: 0,
            highest: vec![0; NAMES.len()],
        }
    }

    fn fresh(&mut self) -> String {
        self.counter += 1;
        format!("value-{}", self.counter)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Set { name, cas } => self.set(*name, cas),
            Op::Stage { name } => self.stage(*name),
            Op::Promote { name, keep } => self.promote(*name, *keep),
            Op::Discard { name } => self.discard(*name),
            Op::Delete { name } => {
                let m = &mut self.models[*name];
                let result = self.vault.delete(NAMES[*name]);
                if !m.exists {
                    prop_assert!(matches!(result, Err(VaultError::NotFound(_))), "{result:?}");
                } else {
                    prop_assert_eq!(
                        result.map_err(|e| TestCaseError::fail(e.to_string()))?,
                        !m.deleted
                    );
                    m.deleted = true;
                }
                Ok(())
            }
            Op::Undelete { name } => {
                let m = &mut self.models[*name];
                let result = self.vault.undelete(NAMES[*name]);
                if !m.exists {
                    prop_assert!(matches!(result, Err(VaultError::NotFound(_))), "{result:?}");
                } else {
                    prop_assert_eq!(
                        result.map_err(|e| TestCaseError::fail(e.to_string()))?,
                        m.deleted
                    );
                    m.deleted = false;
                }
                Ok(())
            }
            Op::Destroy { name, pick } => {
                let m = &mut self.models[*name];
                let Some(&version) = m.versions.keys().nth(*pick) else {
                    return Ok(());
                };
                let number = VersionNumber::new(version).unwrap_or(VersionNumber::FIRST);
                let changed = self
                    .vault
                    .destroy(NAMES[*name], number)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(changed, m.versions[&version].is_some());
                m.versions.insert(version, None);
                Ok(())
            }
        }
    }

    fn set(&mut self, i: usize, cas: &Cas) -> Result<(), TestCaseError> {
        let text = self.fresh();
        let m = self.models[i].clone();
        let current = m.current.unwrap_or(0);
        let if_version = match cas {
            Cas::None => None,
            Cas::Current => Some(current),
            Cas::Stale(off) => Some(current + off),
            Cas::Create => Some(0),
        };
        let options = SetOptions {
            if_version,
            ..SetOptions::default()
        };
        let result = self.vault.set(NAMES[i], Ok(value(&text)), &options);
        let rotating = m.rotation.is_some();
        // 0 matches a secret with no current version (absent, or only pending so far).
        let cas_ok = if_version.is_none_or(|v| v == current);
        let should = !m.deleted && !rotating && cas_ok;
        if !should {
            prop_assert!(
                matches!(result, Err(VaultError::Conflict(_))),
                "set {:?} on {:?} should conflict: {:?}",
                cas,
                m,
                result
            );
            return Ok(());
        }
        let version = result
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .get();
        prop_assert_eq!(version, m.latest + 1, "versions count up by one");
        prop_assert!(version > self.highest[i], "a version number was reused");
        self.highest[i] = version;
        let m = &mut self.models[i];
        m.exists = true;
        m.versions.insert(version, Some(text));
        m.latest = version;
        m.previous = m.current;
        m.current = Some(version);
        Ok(())
    }

    fn stage(&mut self, i: usize) -> Result<(), TestCaseError> {
        let m = self.models[i].clone();
        if m.deleted || m.rotation.is_some() {
            return Ok(());
        }
        self.counter += 1;
        let mut row = RotationRow::begun(
            format!("rot_{}", self.counter),
            NAMES[i].into(),
            "random".into(),
            Trigger::Manual,
            RunState::Create,
            m.current,
            self.vault.now(),
        );
        self.vault
            .begin_rotation(&row, json!({}))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = self.fresh();
        self.vault
            .rotation_step(
                &mut row,
                Step::Create,
                StepStatus::Ok,
                json!({}),
                StepEffect::StagePending {
                    value: value(&text),
                    meta: json!({ "handle": self.counter }),
                },
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let version = row.new_version.unwrap_or(0);
        prop_assert_eq!(version, m.latest + 1);
        prop_assert!(version > self.highest[i]);
        self.highest[i] = version;
        let m = &mut self.models[i];
        m.exists = true;
        m.versions.insert(version, Some(text));
        m.latest = version;
        m.pending = Some(version);
        m.rotation = Some(row);
        Ok(())
    }

    fn promote(&mut self, i: usize, keep: Option<u32>) -> Result<(), TestCaseError> {
        let Some(mut row) = self.models[i].rotation.clone() else {
            return Ok(());
        };
        row.state = RunState::Done;
        row.outcome = Some(RunOutcome::Finished);
        self.vault
            .rotation_step(
                &mut row,
                Step::Finish,
                StepStatus::Ok,
                json!({}),
                StepEffect::Promote { max_versions: keep },
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = &mut self.models[i];
        m.previous = m.current;
        m.current = m.pending.take();
        m.rotation = None;
        if let Some(keep) = keep {
            let labelled = [m.current, m.previous];
            let excess = m.versions.len().saturating_sub(keep as usize);
            let doomed: Vec<u64> = m
                .versions
                .keys()
                .copied()
                .filter(|v| !labelled.contains(&Some(*v)))
                .take(excess)
                .collect();
            for v in doomed {
                m.versions.remove(&v);
            }
        }
        Ok(())
    }

    fn discard(&mut self, i: usize) -> Result<(), TestCaseError> {
        let Some(mut row) = self.models[i].rotation.clone() else {
            return Ok(());
        };
        row.state = RunState::RolledBack;
        row.outcome = Some(RunOutcome::RolledBack);
        self.vault
            .rotation_step(
                &mut row,
                Step::Rollback,
                StepStatus::Ok,
                json!({}),
                StepEffect::DiscardPending,
            )
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let m = &mut self.models[i];
        m.pending = None;
        m.rotation = None;
        Ok(())
    }

    /// The vault agrees with the model, and the invariants hold.
    fn check(&mut self) -> Result<(), TestCaseError> {
        for (i, name) in NAMES.iter().enumerate() {
            let m = self.models[i].clone();
            let state = self
                .vault
                .secret_state(name)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Some(row) = state else {
                prop_assert!(!m.exists);
                continue;
            };
            prop_assert_eq!(row.latest_version, m.latest);
            prop_assert_eq!(row.latest_version, self.highest[i]);
            prop_assert_eq!(
                (
                    row.current_version,
                    row.previous_version,
                    row.pending_version
                ),
                (m.current, m.previous, m.pending)
            );
            prop_assert_eq!(row.deleted_at_ms.is_some(), m.deleted);
            if m.deleted {
                continue;
            }
            let (_, versions) = self
                .vault
                .history(name)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
            prop_assert_eq!(&numbers, &m.versions.keys().copied().collect::<Vec<_>>());
            for label in ["current", "previous", "pending"] {
                let on: Vec<u64> = versions
                    .iter()
                    .filter(|v| v.labels.contains(&label))
                    .map(|v| v.version)
                    .collect();
                prop_assert!(on.len() <= 1, "{} on {:?}", label, on);
            }
            for label in [
                row.current_version,
                row.previous_version,
                row.pending_version,
            ]
            .into_iter()
            .flatten()
            {
                prop_assert!(
                    m.versions.contains_key(&label),
                    "label on missing version {}",
                    label
                );
            }
            for (label, at) in [(Label::Current, m.current), (Label::Previous, m.previous)] {
                let got = self.vault.get(name, VersionSelector::Label(label));
                match at.and_then(|v| m.versions[&v].clone().map(|t| (v, t))) {
                    Some((v, text)) => {
                        let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(got.version.get(), v);
                        prop_assert_eq!(got.value.expose(), text.as_str());
                    }
                    None => prop_assert!(
                        matches!(got, Err(VaultError::NotFound(_))),
                        "{:?}: {:?}",
                        label,
                        got
                    ),
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn labels_versions_and_compare_and_set_follow_the_rules(ops in proptest::collection::vec(ops(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness::new(dir.path());
        for op in &ops {
            h.apply(op)?;
            h.check()?;
        }
        let report = h.vault.audit_verify(None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let existing = h.models.iter().filter(|m| m.exists).count() as u64;
        prop_assert_eq!(report.secrets, existing);
    }
}
