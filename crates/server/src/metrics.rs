//! Prometheus metrics of `secret serve` (text format at `/metrics`). Every name starts
//! with `secret_`; `deploy/` (dashboard and alert rules) uses exactly these names, and a
//! test checks that it does. Labels carry secret names and routes, never values.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub secret: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabel {
    pub secret: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DriftLabels {
    pub target: String,
    pub variable: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

/// One variable of a drift check, as the metrics see it.
pub struct DriftSample<'a> {
    pub target: &'a str,
    pub variable: &'a str,
    /// `Some(true)`: it drifted; `Some(false)`: it matches (or cannot be judged);
    /// `None`: its target could not be read.
    pub drifted: Option<bool>,
}

/// The outcomes a rotation counter is created for up front, so a first failure shows
/// as an increase from 0.
pub const OUTCOMES: [&str; 5] = [
    "finished",
    "rolled_back",
    "failed",
    "stuck",
    "revoke_failed",
];

fn duration_histogram() -> Histogram {
    // 1 s … about 4.5 h: a rotation waits for deploys.
    Histogram::new(
        [
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 16384.0,
        ]
        .into_iter(),
    )
}

/// Everything `/metrics` exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub rotations: Family<RotationLabels, Counter>,
    pub rotation_duration: Family<SecretLabel, Histogram, fn() -> Histogram>,
    pub seconds_until_due: Family<SecretLabel, Gauge<f64, AtomicU64>>,
    pub version_age: Family<SecretLabel, Gauge<f64, AtomicU64>>,
    pub overdue: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub audit_chain_ok: Gauge,
    pub scheduler_last_run: Gauge<f64, AtomicU64>,
    /// 1 while this instance leads the scheduler (labelled with `instance_id`).
    pub scheduler_leader: Gauge,
    /// The fencing token of the scheduler lease this instance last took (0: never).
    pub scheduler_epoch: Gauge,
    /// This instance's id (`--instance-id`), the `instance_id` label of the two above.
    pub instance: String,
    /// When `--backup-dir` last got a backup (unix seconds; 0 before the first).
    pub backup_last_success: Gauge<f64, AtomicU64>,
    /// `--backup-every` in seconds; 0 when serve takes no backups.
    pub backup_interval: Gauge<f64, AtomicU64>,
    pub backups: Family<OutcomeLabel, Counter>,
    pub drift: Family<DriftLabels, Gauge>,
    pub drift_check_failed: Family<TargetLabel, Gauge>,
    pub drift_last_check: Gauge<f64, AtomicU64>,
    /// The series the last drift check set, so the next one can retire the rest.
    drift_series: Mutex<(BTreeSet<DriftLabels>, BTreeSet<TargetLabel>)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics of an instance named `local` (tests, a single instance).
    pub fn new() -> Self {
        Self::for_instance("local")
    }

    /// The metrics of the instance `instance` (`secret serve --instance-id`).
    pub fn for_instance(instance: &str) -> Self {
        let m = Self {
            registry: Mutex::new(Registry::default()),
            rotations: Family::default(),
            rotation_duration: Family::new_with_constructor(duration_histogram),
            seconds_until_due: Family::default(),
            version_age: Family::default(),
            overdue: Gauge::default(),
            requests: Family::default(),
            audit_chain_ok: Gauge::default(),
            scheduler_last_run: Gauge::default(),
            scheduler_leader: Gauge::default(),
            scheduler_epoch: Gauge::default(),
            instance: instance.to_string(),
            backup_last_success: Gauge::default(),
            backup_interval: Gauge::default(),
            backups: Family::default(),
            drift: Family::default(),
            drift_check_failed: Family::default(),
            drift_last_check: Gauge::default(),
            drift_series: Mutex::new((BTreeSet::new(), BTreeSet::new())),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            // prometheus-client appends `_total` to counters itself.
            r.register(
                "secret_rotations",
                "Rotations by secret and outcome",
                m.rotations.clone(),
            );
            r.register(
                "secret_rotation_duration_seconds",
                "Time from a rotation's start to its end",
                m.rotation_duration.clone(),
            );
            r.register(
                "secret_seconds_until_due",
                "Seconds until each secret is due (negative: overdue)",
                m.seconds_until_due.clone(),
            );
            r.register(
                "secret_current_version_age_seconds",
                "Age of each secret's current version",
                m.version_age.clone(),
            );
            r.register(
                "secret_overdue_secrets",
                "Secrets past their schedule or max_age",
                m.overdue.clone(),
            );
            r.register(
                "secret_api_requests",
                "API requests by route and status",
                m.requests.clone(),
            );
            r.register(
                "secret_audit_chain_ok",
                "1 when the audit chain verified, 0 when broken",
                m.audit_chain_ok.clone(),
            );
            r.register(
                "secret_scheduler_last_run_timestamp_seconds",
                "When the scheduler last ran (unix seconds)",
                m.scheduler_last_run.clone(),
            );
            // `instance_id`, not `instance`: Prometheus sets `instance` to the
            // scrape target itself (and would rename ours to `exported_instance`).
            let this = r.sub_registry_with_label((
                std::borrow::Cow::Borrowed("instance_id"),
                std::borrow::Cow::Owned(instance.to_string()),
            ));
            this.register(
                "secret_scheduler_leader",
                "1 when this instance holds the scheduler lease (runs the rotations)",
                m.scheduler_leader.clone(),
            );
            this.register(
                "secret_scheduler_epoch",
                "The fencing token (epoch) of the scheduler lease this instance last took",
                m.scheduler_epoch.clone(),
            );
            r.register(
                "secret_backup_last_success_timestamp_seconds",
                "When the last scheduled backup was written (unix seconds; 0: none yet)",
                m.backup_last_success.clone(),
            );
            r.register(
                "secret_backup_interval_seconds",
                "The scheduled backup period (0: serve takes no backups)",
                m.backup_interval.clone(),
            );
            r.register(
                "secret_backups",
                "Scheduled backups by outcome",
                m.backups.clone(),
            );
            r.register(
                "secret_drift",
                "1 when a target's variable differs from the vault, is missing or should be absent",
                m.drift.clone(),
            );
            r.register(
                "secret_drift_check_failed",
                "1 when the last drift check could not read the target",
                m.drift_check_failed.clone(),
            );
            r.register(
                "secret_drift_last_check_timestamp_seconds",
                "When the last drift check ran (unix seconds)",
                m.drift_last_check.clone(),
            );
        }
        for outcome in ["ok", "failed"] {
            let _ = m.backups.get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            });
        }
        m
    }

    /// Creates a secret's rotation counters at zero.
    pub fn know_secret(&self, secret: &str) {
        for outcome in OUTCOMES {
            let _ = self.rotations.get_or_create(&RotationLabels {
                secret: secret.into(),
                outcome: outcome.into(),
            });
        }
    }

    pub fn rotation_ended(&self, secret: &str, outcome: &str, seconds: f64) {
        self.rotations
            .get_or_create(&RotationLabels {
                secret: secret.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.rotation_duration
            .get_or_create(&SecretLabel {
                secret: secret.into(),
            })
            .observe(seconds);
    }

    pub fn backup_ended(&self, outcome: &str) {
        self.backups
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.into(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Replaces the drift series with one check's: each sample is set first, then the
    /// series the previous check set and this one did not are removed (a scrape never
    /// sees a series vanish and come back). A target that could not be read has
    /// `secret_drift_check_failed` 1 and no `secret_drift` series.
    pub fn drift_checked<'a>(
        &self,
        samples: impl IntoIterator<Item = DriftSample<'a>>,
        at_seconds: f64,
    ) {
        let mut variables = BTreeSet::new();
        let mut targets = BTreeSet::new();
        let mut failed = BTreeSet::new();
        for s in samples {
            let target = TargetLabel {
                target: s.target.to_string(),
            };
            match s.drifted {
                Some(drifted) => {
                    let labels = DriftLabels {
                        target: s.target.to_string(),
                        variable: s.variable.to_string(),
                    };
                    self.drift.get_or_create(&labels).set(i64::from(drifted));
                    variables.insert(labels);
                }
                None => {
                    failed.insert(target.clone());
                }
            }
            targets.insert(target);
        }
        for target in &targets {
            self.drift_check_failed
                .get_or_create(target)
                .set(i64::from(failed.contains(target)));
        }
        self.drift_last_check.set(at_seconds);
        self.retire_drift(variables, targets);
    }

    /// Drops every drift series (this process no longer checks: another one leads).
    pub fn drift_stopped(&self) {
        self.retire_drift(BTreeSet::new(), BTreeSet::new());
    }

    fn retire_drift(&self, variables: BTreeSet<DriftLabels>, targets: BTreeSet<TargetLabel>) {
        let mut series = self.drift_series.lock().unwrap_or_else(|e| e.into_inner());
        for old in series.0.difference(&variables) {
            self.drift.remove(old);
        }
        for old in series.1.difference(&targets) {
            self.drift_check_failed.remove(old);
        }
        *series = (variables, targets);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exported_names_are_the_ones_deploy_uses() {
        let m = Metrics::new();
        m.know_secret("JWT_SECRET");
        m.rotation_ended("JWT_SECRET", "finished", 3.0);
        m.request("/v1/secrets/{name}", 200);
        m.seconds_until_due
            .get_or_create(&SecretLabel {
                secret: "JWT_SECRET".into(),
            })
            .set(-5.0);
        m.version_age
            .get_or_create(&SecretLabel {
                secret: "JWT_SECRET".into(),
            })
            .set(60.0);
        m.drift_checked(
            [DriftSample {
                target: "api",
                variable: "JWT_SECRET",
                drifted: Some(true),
            }],
            1.0,
        );
        let text = m.render();
        let exported: std::collections::BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
            .collect();
        for name in [
            "secret_rotations_total",
            "secret_rotation_duration_seconds_bucket",
            "secret_seconds_until_due",
            "secret_current_version_age_seconds",
            "secret_overdue_secrets",
            "secret_api_requests_total",
            "secret_audit_chain_ok",
            "secret_scheduler_last_run_timestamp_seconds",
            "secret_scheduler_leader",
            "secret_scheduler_epoch",
            "secret_backup_last_success_timestamp_seconds",
            "secret_backup_interval_seconds",
            "secret_backups_total",
            "secret_drift",
            "secret_drift_check_failed",
            "secret_drift_last_check_timestamp_seconds",
        ] {
            assert!(exported.contains(name), "{name} missing from:\n{text}");
        }
        // Every secret_* name that deploy/ mentions is exported.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        for file in [
            "deploy/prometheus/alerts.yml",
            "deploy/grafana/secret-dashboard.json",
        ] {
            let body = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            let mut rest = body.as_str();
            while let Some(i) = rest.find("secret_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                let is_metric = exported.iter().any(|e| e == name || e.starts_with(base));
                let preceded_by_word = i > 0 && rest.as_bytes()[i - 1].is_ascii_alphanumeric();
                if !preceded_by_word && name.len() > "secret_".len() && name.contains('_') {
                    assert!(is_metric, "{file} uses {name}, which is not exported");
                }
                rest = &tail[end..];
            }
        }
        assert!(!text.contains("value"), "labels never carry values");
    }

    #[test]
    fn drift_series_follow_the_last_check_and_vanish_when_another_process_checks() {
        let m = Metrics::new();
        let sample = |variable, drifted| DriftSample {
            target: "api",
            variable,
            drifted,
        };
        m.drift_checked(
            [
                sample("JWT_SECRET", Some(true)),
                sample("JWT_SECRET_PREVIOUS", Some(false)),
            ],
            10.0,
        );
        let text = m.render();
        assert!(
            text.contains("secret_drift{target=\"api\",variable=\"JWT_SECRET\"} 1"),
            "{text}"
        );
        assert!(text.contains("secret_drift{target=\"api\",variable=\"JWT_SECRET_PREVIOUS\"} 0"));
        assert!(text.contains("secret_drift_check_failed{target=\"api\"} 0"));
        assert!(text.contains("secret_drift_last_check_timestamp_seconds 10"));

        // Fixed, and the previous variable is no longer checked: its series goes.
        m.drift_checked([sample("JWT_SECRET", Some(false))], 20.0);
        let text = m.render();
        assert!(
            text.contains("secret_drift{target=\"api\",variable=\"JWT_SECRET\"} 0"),
            "{text}"
        );
        assert!(!text.contains("JWT_SECRET_PREVIOUS"), "{text}");

        // The target cannot be read: no verdict on its variables, the check failed.
        m.drift_checked([sample("JWT_SECRET", None)], 30.0);
        let text = m.render();
        assert!(!text.contains("secret_drift{"), "{text}");
        assert!(
            text.contains("secret_drift_check_failed{target=\"api\"} 1"),
            "{text}"
        );

        m.drift_stopped();
        let text = m.render();
        assert!(
            !text.contains("secret_drift{") && !text.contains("secret_drift_check_failed{"),
            "{text}"
        );
    }
}
