//! The scheduler inside `secret serve`: every tick (with jitter, so a fleet does not
//! rotate in lockstep) it takes or keeps the scheduler lease and, only while it holds
//! it, runs one rotation pass — interrupted and requested rotations resumed, ended
//! graces revoked, due secrets rotated (a bounded number per pass). Several `serve`
//! instances on one vault: exactly one leads; the others wait and take over.
//!
//! **Leadership** is a lease row in the vault (`locks`, name `scheduler`) with a short
//! TTL (one tick) and a fencing token (its `epoch`, one more with every new holder).
//! The leader renews it from a task of its own every third of the TTL, whatever its
//! pass is doing. A follower takes it when its holder is seen dead on this machine, or
//! when it has not changed for a whole TTL by the follower's own clock (so no clock of
//! another machine is compared with ours): within two ticks of a leader's death. The
//! takeover drops the old leader's per-secret locks and bumps the epoch in one
//! transaction; every rotation step of a leader checks in its own transaction that the
//! lease still names it at its epoch, so a deposed leader (partitioned, paused) fails
//! at its next step, and its heartbeat, finding the lease gone, stops its pass.
//!
//! It also keeps the due-time, age and overdue metrics current, and — while it leads,
//! every `drift_every` — checks that the targets hold what the vault says
//! (`secret_drift{target,variable}`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::metrics::{DriftSample, Metrics, SecretLabel};

use crate::passes::PassLog;
use crate::service::RotateRequest;
use secret_core::error::VaultError;
use secret_core::policy::PolicySet;
use secret_core::vault::{Leadership, Liveness, Vault};
use secret_rotation::drift::{Drift, State};
use secret_rotation::{Due, Engine, EngineOptions, Request, Trigger};

/// How the scheduler paces itself.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    pub tick: Duration,
    /// Up to this much (and at most a tenth of the tick) is added to each wait, at
    /// random.
    pub jitter: Duration,
    /// At most this many new rotations start in one pass; the rest wait a tick.
    pub max_new_rotations: usize,
    /// The scheduler lease lasts this long unless renewed; its holder renews it every
    /// third of it, and another instance takes it once it has seen it unrenewed this
    /// long. One tick: a dead leader is replaced within two ticks.
    pub lease_ttl: Duration,
    /// Time between drift checks (at a tick, by the leader); `None`: none.
    pub drift_every: Option<Duration>,
    /// How the scheduler's engine polls, retries and times out (its trigger is always
    /// `scheduler`).
    pub engine: EngineOptions,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(30),
            jitter: Duration::from_secs(5),
            max_new_rotations: 4,
            lease_ttl: Duration::from_secs(30),
            drift_every: Some(Duration::from_secs(10 * 60)),
            engine: EngineOptions::default(),
        }
    }
}

/// The name of the scheduler's lease in the vault's `locks`.
pub const LEASE: &str = "scheduler";

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let r = secret_core::crypto::random_array::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    Duration::from_millis(r % (max.as_millis() as u64 + 1))
}

/// What a follower has seen of the leader's lease, to tell a dead leader from a live
/// one without comparing clocks: a lease whose row has not changed for a whole TTL
/// (by this instance's clock) has not been renewed, so its holder is gone (or cut off,
/// or paused: it is fenced off either way).
#[derive(Default)]
struct Observer {
    seen: Option<(String, i64)>,
    since: i64,
}

impl Observer {
    fn free(&mut self, holder: &str, expires_at_ms: i64, now: i64, ttl_ms: i64) -> bool {
        if secret_rotation::engine::holder_liveness(holder) == Liveness::Dead {
            return true;
        }
        let record = (holder.to_string(), expires_at_ms);
        if self.seen.as_ref() != Some(&record) {
            self.seen = Some(record);
            self.since = now;
            return false;
        }
        now - self.since >= ttl_ms
    }
}

/// Renews the lease while this instance leads (`leading` holds its epoch), every third
/// of the TTL, on a connection of its own so a pass waiting on a deploy does not let it
/// lapse. Finding it taken: leadership is lost, `deposed` stops the pass.
async fn heartbeat(
    mut vault: Vault,
    holder: String,
    ttl: Duration,
    leading: Arc<watch::Sender<Option<u64>>>,
    deposed: Arc<watch::Sender<bool>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(epoch) = *leading.borrow() else {
            continue;
        };
        match vault.renew_lease(LEASE, &holder, epoch, ttl.as_millis() as i64) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!(
                    "scheduler: instance {} lost the scheduler lease (epoch {epoch}) to another \
                     instance; its pass stops at the next step",
                    metrics.instance
                );
                leading.send_replace(None);
                deposed.send_replace(true);
                metrics.scheduler_leader.set(0);
            }
            // Cut off from the vault: every write fails too; the lease lapses and
            // another instance takes over, fencing this one off.
            Err(e) => eprintln!("scheduler: cannot renew the scheduler lease ({e})"),
        }
    }
}

/// Stops the heartbeat with the scheduler, however the scheduler ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs until `shutdown` turns true. The current pass finishes its step; anything left
/// is resumable by the next start (or the next leader).
pub async fn run(
    engine: &mut Engine,
    policies: Arc<PolicySet>,
    metrics: Arc<Metrics>,
    passes: Arc<PassLog>,
    options: SchedulerOptions,
    mut requests: mpsc::Receiver<RotateRequest>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), VaultError> {
    for name in policies.secrets.keys() {
        metrics.know_secret(name);
    }
    let holder = engine.holder().to_string();
    let ttl_ms = options.lease_ttl.as_millis() as i64;
    let leading = Arc::new(watch::channel(None::<u64>).0);
    let (deposed_tx, deposed_rx) = watch::channel(false);
    let deposed = Arc::new(deposed_tx);
    engine.stop_on(shutdown.clone());
    engine.stop_on(deposed_rx);
    let _beat = AbortOnDrop(tokio::spawn(heartbeat(
        engine.vault().another_connection()?,
        holder.clone(),
        options.lease_ttl,
        leading.clone(),
        deposed.clone(),
        metrics.clone(),
        shutdown.clone(),
    )));
    let drift = match options.drift_every {
        Some(every) => Some((Drift::new((*policies).clone(), &options.engine)?, every)),
        None => None,
    };
    let mut observer = Observer::default();
    let mut next_drift = i64::MIN;
    let mut first = true;
    loop {
        let mut asked: Vec<RotateRequest> = Vec::new();
        if !first {
            let wait = options.tick + jitter(options.jitter.min(options.tick / 10));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(req) = requests.recv() => asked.push(req),
                _ = shutdown.changed() => {}
            }
        }
        first = false;
        if *shutdown.borrow() {
            break;
        }
        while let Ok(req) = requests.try_recv() {
            asked.push(req);
        }
        let now = engine.vault().now();
        let taken = engine
            .vault()
            .take_lease(LEASE, &holder, ttl_ms, |h, expires| {
                observer.free(h, expires, now, ttl_ms)
            });
        let leader = match taken {
            Ok(Ok(Leadership {
                epoch,
                took_over_from,
            })) => {
                if *leading.borrow() != Some(epoch) {
                    let from = match &took_over_from {
                        Some(h) => format!(", taken over from {h}"),
                        None => String::new(),
                    };
                    eprintln!(
                        "scheduler: instance {} leads (epoch {epoch}{from})",
                        metrics.instance
                    );
                }
                engine.vault().fence_with(Some((LEASE, epoch)));
                leading.send_replace(Some(epoch));
                deposed.send_replace(false);
                metrics.scheduler_epoch.set(epoch as i64);
                true
            }
            Ok(Err(_held)) => false,
            Err(e) => {
                eprintln!("scheduler: cannot check the lease ({e}); trying again next tick");
                false
            }
        };
        if !leader {
            engine.vault().fence_with(None);
            leading.send_replace(None);
        }
        metrics.scheduler_leader.set(i64::from(leader));
        if leader {
            // Requested rotations are rows in the vault (state `requested`): asked
            // here, they run now; asked of another instance, this pass resumes them
            // with the rest, since only the leader rotates.
            let names: Vec<String> = asked.iter().map(|r| r.secret.clone()).collect();
            if !names.is_empty() {
                match engine.run(Request::Names(names)).await {
                    Ok(report) => {
                        record(&metrics, &report);
                        passes.record(&asked, &report);
                    }
                    Err(e) => eprintln!("scheduler: requested rotation: {e}"),
                }
            }
            match engine.run(Request::Due).await {
                Ok(report) => {
                    record(&metrics, &report);
                    passes.record(&[], &report);
                }
                // One bad pass (a busy store, say) is not the end of the scheduler.
                Err(e) => eprintln!("scheduler: pass failed ({e}); trying again next tick"),
            }
            metrics
                .scheduler_last_run
                .set(engine.vault().now() as f64 / 1000.0);
        }
        let leader = leading.borrow().is_some();
        match &drift {
            Some((drift, every)) if leader && engine.vault().now() >= next_drift => {
                if let Err(e) = check_drift(drift, engine, &metrics).await {
                    eprintln!("scheduler: drift check failed ({e}); trying again next time");
                }
                next_drift = engine.vault().now() + every.as_millis() as i64;
            }
            // Another instance checks (and exports) while it leads.
            _ if !leader => metrics.drift_stopped(),
            _ => {}
        }
        if let Err(e) = update_gauges(engine, &policies, &metrics) {
            eprintln!("scheduler: cannot update the gauges: {e}");
        }
    }
    leading.send_replace(None);
    let _ = engine.vault().release_lease(LEASE, &holder);
    metrics.scheduler_leader.set(0);
    Ok(())
}

/// One drift check by the scheduler's connection, its findings into the metrics.
async fn check_drift(
    drift: &Drift,
    engine: &mut Engine,
    metrics: &Metrics,
) -> Result<(), VaultError> {
    let report = drift.check(engine.vault()).await?;
    let samples = report.findings.iter().map(|f| DriftSample {
        target: &f.target,
        variable: &f.variable,
        drifted: (f.state != State::Error).then(|| f.state.is_drift()),
    });
    metrics.drift_checked(samples, engine.vault().now() as f64 / 1000.0);
    Ok(())
}

/// Counts every run's result. Anything that needs a person (`failed`, `rolled_back`, a
/// run that could not go on, a revoke that failed) is an outcome the alerts watch.
fn record(metrics: &Metrics, report: &secret_rotation::RunReport) {
    for o in &report.outcomes {
        let Some(outcome) = o.result.metric_outcome() else {
            continue;
        };
        metrics.rotation_ended(&o.secret, outcome, o.duration_ms as f64 / 1000.0);
    }
}

/// Seconds until due, current version age, and the overdue count, per secret.
fn update_gauges(
    engine: &mut Engine,
    policies: &PolicySet,
    metrics: &Metrics,
) -> Result<(), VaultError> {
    let now = engine.vault().now();
    let mut overdue = 0;
    for (name, policy) in &policies.secrets {
        let label = SecretLabel {
            secret: name.clone(),
        };
        let due = engine.due(policy)?;
        let seconds = match &due {
            Due::Now => 0.0,
            Due::At(t) => (*t - now) as f64 / 1000.0,
            Due::Manual {
                overdue_at: Some(t),
            } => (*t - now) as f64 / 1000.0,
            Due::Manual { overdue_at: None } => 0.0,
        };
        metrics.seconds_until_due.get_or_create(&label).set(seconds);
        let is_overdue = due.is_overdue(now);
        if is_overdue {
            overdue += 1;
        }
        if let Some(created) = engine.current_created(name)? {
            metrics
                .version_age
                .get_or_create(&label)
                .set((now - created) as f64 / 1000.0);
        }
    }
    metrics.overdue.set(overdue);
    Ok(())
}

/// Opens the scheduler's own engine over its own vault connection.
pub fn engine(
    vault: Vault,
    policies: &PolicySet,
    options: &SchedulerOptions,
) -> Result<Engine, VaultError> {
    let engine_options = EngineOptions {
        max_new_rotations: Some(options.max_new_rotations),
        trigger: Trigger::Scheduler,
        ..options.engine.clone()
    };
    Engine::new(vault, policies.clone(), engine_options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::model::SecretValue;
    use secret_core::rotation_state::{RunOutcome, RunState};
    use secret_core::vault::{InitOptions, SetOptions};
    use std::path::Path;

    const MIN: Duration = Duration::from_secs(60);

    struct Setup {
        _dir: tempfile::TempDir,
        vault: Vault,
        policies: Arc<PolicySet>,
        env_file: std::path::PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("app.env");
        let identity = secret_core::crypto::generate_identity("t");
        let actor = secret_core::audit::Actor {
            name: "user:test".into(),
            pid: None,
            request_id: "t".into(),
        };
        let mut vault = Vault::init(
            &dir.path().join("v.db"),
            InitOptions {
                recipients: vec![identity.recipient],
                passphrase: None,
                scrypt_log_n: None,
            },
            actor,
        )
        .unwrap();
        vault.set_clock(crate::clock::tokio_clock());
        let policies = secret_core::policy::parse_str(
            Path::new("t.toml"),
            &format!(
                r#"
                [targets.local]
                kind = "dotenv"
                path = "{}"

                [secrets.JWT_SECRET]
                generator = "jwt-hmac"
                every = "1h"
                grace = "10m"
                push = ["local"]
                previous_as = "JWT_SECRET_PREVIOUS"

                [secrets.ADMIN_KEY]
                generator = "manual"
                max_age = "2h"
                "#,
                env_file.display()
            ),
        )
        .unwrap();
        for (name, v) in [("JWT_SECRET", "initial"), ("ADMIN_KEY", "admin")] {
            let value =
                SecretValue::from_bytes(zeroize::Zeroizing::new(v.as_bytes().to_vec()), false);
            vault.set(name, value, &SetOptions::default()).unwrap();
        }
        Setup {
            _dir: dir,
            vault,
            policies: Arc::new(policies),
            env_file,
        }
    }

    fn options() -> SchedulerOptions {
        SchedulerOptions {
            tick: Duration::from_secs(30),
            jitter: Duration::ZERO,
            ..Default::default()
        }
    }

    /// Starts a scheduler on its own connection; returns its stop switch and metrics.
    /// Starts a scheduler on its own connection; returns its stop switch and metrics.
    fn start(
        s: &Setup,
    ) -> (
        watch::Sender<bool>,
        Arc<Metrics>,
        tokio::task::JoinHandle<()>,
    ) {
        // No API here: the request channel closes at once, which the scheduler ignores.
        let (stop, metrics, task, _requests) = start_with_requests(s);
        (stop, metrics, task)
    }

    type Started = (
        watch::Sender<bool>,
        Arc<Metrics>,
        tokio::task::JoinHandle<()>,
        mpsc::Sender<RotateRequest>,
    );

    fn start_with_requests(s: &Setup) -> Started {
        let vault = s.vault.another_connection().unwrap();
        let mut engine = engine(vault, &s.policies, &options()).unwrap();
        let (stop, stopped) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(8);
        let (policies, m) = (s.policies.clone(), metrics.clone());
        let task = tokio::task::spawn_local(async move {
            let passes = Arc::new(PassLog::default());
            run(&mut engine, policies, m, passes, options(), rx, stopped)
                .await
                .unwrap();
        });
        (stop, metrics, task, tx)
    }

    fn rotations(s: &mut Setup) -> Vec<secret_core::vault::RotationRow> {
        s.vault.rotations(Some("JWT_SECRET"), 100).unwrap()
    }

    fn env_file(s: &Setup) -> String {
        std::fs::read_to_string(&s.env_file).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn rotates_when_due_revokes_at_grace_end_and_catches_up_once() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut s = setup();
                let (stop, metrics, task) = start(&s);
                tokio::time::sleep(59 * MIN).await;
                assert!(rotations(&mut s).is_empty(), "not due before an hour");

                tokio::time::sleep(2 * MIN).await;
                let runs = rotations(&mut s);
                assert_eq!(runs.len(), 1, "due after an hour: one rotation");
                assert_eq!(runs[0].outcome, Some(RunOutcome::Finished));
                assert_eq!(runs[0].state, RunState::Grace);
                assert!(
                    env_file(&s).contains("JWT_SECRET_PREVIOUS=\"initial\""),
                    "{}",
                    env_file(&s)
                );

                tokio::time::sleep(11 * MIN).await;
                let runs = rotations(&mut s);
                assert_eq!(runs[0].state, RunState::Done, "revoked when grace ended");
                assert!(!env_file(&s).contains("JWT_SECRET_PREVIOUS"));
                assert_eq!(metrics.scheduler_leader.get(), 1);

                // Downtime: five periods pass with no scheduler running.
                stop.send(true).unwrap();
                task.await.unwrap();
                tokio::time::sleep(5 * 60 * MIN).await;
                let (stop, metrics, task) = start(&s);
                tokio::time::sleep(MIN).await;
                let runs = rotations(&mut s);
                assert_eq!(
                    runs.len(),
                    2,
                    "an overdue secret rotates once, not once per missed period"
                );
                // The manual secret is past its max_age (2 h) by now.
                assert!(metrics.overdue.get() >= 1);
                assert!(metrics
                    .render()
                    .contains("secret_seconds_until_due{secret=\"ADMIN_KEY\"}"));
                stop.send(true).unwrap();
                task.await.unwrap();
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_checks_drift_every_period_and_exports_it() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let s = setup();
                let (stop_a, metrics_a, task_a) = start(&s);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (stop_b, metrics_b, task_b) = start(&s);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let line = |var: &str, v: u8| {
                    format!("secret_drift{{target=\"local\",variable=\"{var}\"}} {v}")
                };
                // No file yet: the variable is missing, previous_as rightly absent.
                let text = metrics_a.render();
                assert!(text.contains(&line("JWT_SECRET", 1)), "{text}");
                assert!(text.contains(&line("JWT_SECRET_PREVIOUS", 0)), "{text}");
                assert!(
                    !metrics_b.render().contains("secret_drift{"),
                    "only the lease holder checks and exports drift"
                );

                std::fs::write(&s.env_file, "JWT_SECRET=initial\n").unwrap();
                tokio::time::sleep(5 * MIN).await;
                assert!(
                    metrics_a.render().contains(&line("JWT_SECRET", 1)),
                    "not yet due"
                );
                tokio::time::sleep(6 * MIN).await;
                let text = metrics_a.render();
                assert!(text.contains(&line("JWT_SECRET", 0)), "{text}");
                assert!(text.contains("secret_drift_check_failed{target=\"local\"} 0"));
                for (stop, task) in [(stop_a, task_a), (stop_b, task_b)] {
                    stop.send(true).unwrap();
                    task.await.unwrap();
                }
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn two_schedulers_share_one_lease() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut s = setup();
                let (stop_a, metrics_a, task_a) = start(&s);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (stop_b, metrics_b, task_b) = start(&s);
                tokio::time::sleep(61 * MIN).await;
                assert_eq!(
                    rotations(&mut s).len(),
                    1,
                    "one rotation, not one per scheduler"
                );
                assert_eq!(
                    metrics_a.scheduler_leader.get() + metrics_b.scheduler_leader.get(),
                    1
                );
                assert_eq!(metrics_a.scheduler_leader.get(), 1, "the first one leads");
                // The leader stops: the other takes the lease over at its next tick.
                stop_a.send(true).unwrap();
                task_a.await.unwrap();
                tokio::time::sleep(MIN).await;
                assert_eq!(metrics_b.scheduler_leader.get(), 1);
                stop_b.send(true).unwrap();
                task_b.await.unwrap();
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_requested_of_a_follower_is_run_by_the_leader_only() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut s = setup();
                let (stop_a, metrics_a, task_a) = start(&s);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (stop_b, metrics_b, task_b, requests_b) = start_with_requests(&s);
                tokio::time::sleep(Duration::from_secs(1)).await;
                assert_eq!(
                    (
                        metrics_a.scheduler_leader.get(),
                        metrics_b.scheduler_leader.get()
                    ),
                    (1, 0)
                );
                // The API records the request as a rotation row, then wakes its scheduler.
                let (_row, token) = s
                    .vault
                    .create_token("t", &["admin".to_string()], None)
                    .unwrap();
                let replies = s.vault.serve_batch(&[secret_core::vault::ApiCall {
                    token: Some(token),
                    remote: "test".into(),
                    request_id: "r".into(),
                    op: secret_core::vault::Op::Rotate {
                        name: "JWT_SECRET".into(),
                        rotation_id: "rot_requested01".into(),
                        rotatable: Ok("jwt-hmac".into()),
                    },
                }]);
                assert!(replies[0].is_ok());
                requests_b
                    .send(RotateRequest {
                        secret: "JWT_SECRET".into(),
                        rotation_id: "rot_requested01".into(),
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                let runs = rotations(&mut s);
                assert_eq!(runs.len(), 1);
                assert_eq!(
                    runs[0].state,
                    RunState::Requested,
                    "the follower does not rotate"
                );
                // The leader's next tick resumes it.
                tokio::time::sleep(Duration::from_secs(30)).await;
                let runs = rotations(&mut s);
                assert_eq!(runs.len(), 1);
                assert_eq!(runs[0].id, "rot_requested01", "the id the API promised");
                assert_eq!(runs[0].outcome, Some(RunOutcome::Finished));
                let steps = s.vault.rotation_steps("rot_requested01").unwrap();
                assert!(steps.len() > 2, "{steps:?}");
                for (stop, task) in [(stop_a, task_a), (stop_b, task_b)] {
                    stop.send(true).unwrap();
                    task.await.unwrap();
                }
            })
            .await;
    }

    /// A leader that stops renewing (dead on another machine, cut off, paused) is
    /// replaced within two ticks, judged by the follower's own clock.
    #[tokio::test(start_paused = true)]
    async fn a_leader_that_stops_renewing_is_replaced_within_two_ticks() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let s = setup();
                let (stop_a, metrics_a, task_a) = start(&s);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (stop_b, metrics_b, task_b) = start(&s);
                // Followers see the lease renewed at every tick: no takeover.
                tokio::time::sleep(10 * MIN).await;
                assert_eq!(metrics_a.scheduler_leader.get(), 1);
                assert_eq!(metrics_b.scheduler_leader.get(), 0);
                assert_eq!(metrics_a.scheduler_epoch.get(), 1);
                // A's process vanishes without a word: no release, no more renewals.
                task_a.abort();
                let _ = task_a.await;
                drop(stop_a);
                let died = tokio::time::Instant::now();
                while metrics_b.scheduler_leader.get() == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    assert!(
                        died.elapsed() <= 2 * options().tick,
                        "no takeover in 2 ticks"
                    );
                }
                assert_eq!(metrics_b.scheduler_epoch.get(), 2, "a new epoch");
                stop_b.send(true).unwrap();
                task_b.await.unwrap();
            })
            .await;
    }

    /// Once another instance has taken the lease, the deposed leader's next rotation
    /// write is refused in its own transaction: nothing of it reaches the vault.
    #[tokio::test(start_paused = true)]
    async fn a_deposed_leader_cannot_write_a_rotation_step() {
        let mut s = setup();
        let vault = s.vault.another_connection().unwrap();
        let mut old = engine(vault, &s.policies, &options()).unwrap();
        let holder = old.holder().to_string();
        let took = old
            .vault()
            .take_lease(LEASE, &holder, 30_000, |_, _| false)
            .unwrap()
            .unwrap();
        assert_eq!(took.epoch, 1);
        old.vault().fence_with(Some((LEASE, took.epoch)));
        // Another instance judges it gone and takes over.
        let mut other = s.vault.another_connection().unwrap();
        let new = other
            .take_lease(LEASE, "other-instance", 30_000, |h, _| h == holder)
            .unwrap()
            .unwrap();
        assert_eq!(new.epoch, 2);
        assert_eq!(new.took_over_from.as_deref(), Some(holder.as_str()));
        let report = old
            .run(Request::Names(vec!["JWT_SECRET".into()]))
            .await
            .unwrap();
        assert_eq!(report.outcomes.len(), 1);
        let error = report.outcomes[0].error.clone().unwrap_or_default();
        assert!(error.contains("no longer holds"), "{error}");
        assert!(rotations(&mut s).is_empty(), "no rotation was recorded");
        // And the old holder cannot renew what it lost.
        assert!(!old
            .vault()
            .renew_lease(LEASE, &holder, took.epoch, 30_000)
            .unwrap());
        assert_eq!(
            other.lease(LEASE).unwrap().map(|(h, _, e)| (h, e)),
            Some(("other-instance".to_string(), 2))
        );
    }
}
