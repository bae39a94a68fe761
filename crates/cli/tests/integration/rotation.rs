//! Rotation end to end: the real `secret` binary against the stand-ins for Railway,
//! OpenAI and LaunchDarkly, which run in this test process (so they survive a child
//! that is SIGKILLed mid-rotation) and record what they received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use secret_standins::{
    DeployOutcome, Fault, LaunchDarklyConfig, LaunchDarklyStandIn, OpenAiConfig, OpenAiStandIn,
    ProjectToken, RailwayConfig, RailwayStandIn, ServiceRef,
};

use crate::util::{Run, TestEnv};

pub(crate) const PROJECT: &str = "proj-1";
pub(crate) const ENVIRONMENT: &str = "env-1";
pub(crate) const SERVICE: &str = "svc-1";
const RAILWAY_TOKEN: &str = "railway-project-token-test";
const OPENAI_ADMIN: &str = "sk-admin-test-key";
const OPENAI_PROJECT: &str = "proj_test";
const LD_TOKEN: &str = "api-ld-test-token";
const LD_PROJECT: &str = "planning-engine";
const LD_ENV: &str = "production";

pub struct World {
    /// Runs the stand-ins on its worker threads while the test blocks on a child.
    _rt: tokio::runtime::Runtime,
    pub railway: RailwayStandIn,
    pub openai: OpenAiStandIn,
    pub ld: LaunchDarklyStandIn,
    pub env: TestEnv,
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

impl World {
    /// The version of `secret` that carries `label`, from `history --json`.
    pub fn version_labelled(&self, secret: &str, label: &str) -> Option<u64> {
        let history: serde_json::Value =
            serde_json::from_str(&self.env.run(&["history", secret, "--json"]).ok().stdout)
                .unwrap();
        history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| {
                v["labels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == label))
            })
            .map(|v| v["version"].as_u64().unwrap())
    }

    /// The value labelled pending, if the run has minted one.
    pub fn pending_value(&self, secret: &str) -> Option<String> {
        self.version_labelled(secret, "pending").map(|n| {
            self.env
                .run(&["get", secret, "--version", &n.to_string()])
                .ok()
                .stdout
        })
    }

    /// Stand-ins, a vault holding the credentials and a current value for each of the
    /// three secrets (as a team would import them), and policies pointing at the stand-ins.
    pub fn new(grace: &str) -> Self {
        Self::with_deploy_timeout(grace, "20s")
    }

    /// As [`World::new`], with the Railway target's `deploy_timeout`.
    pub fn with_deploy_timeout(grace: &str, deploy_timeout: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let railway = rt
            .block_on(RailwayStandIn::start(
                loopback(),
                RailwayConfig {
                    project_tokens: vec![ProjectToken {
                        token: RAILWAY_TOKEN.into(),
                        project_id: PROJECT.into(),
                        environment_id: ENVIRONMENT.into(),
                    }],
                    account_tokens: vec![],
                    services: vec![ServiceRef {
                        project_id: PROJECT.into(),
                        environment_id: ENVIRONMENT.into(),
                        service_id: SERVICE.into(),
                    }],
                    polls_per_step: 1,
                },
            ))
            .unwrap();
        let openai = rt
            .block_on(OpenAiStandIn::start(
                loopback(),
                OpenAiConfig {
                    admin_keys: vec![OPENAI_ADMIN.into()],
                    projects: vec![OPENAI_PROJECT.into()],
                    archived_projects: vec![],
                    new_key_warmup: 1,
                },
            ))
            .unwrap();
        let ld = rt
            .block_on(LaunchDarklyStandIn::start(
                loopback(),
                LaunchDarklyConfig {
                    access_tokens: vec![LD_TOKEN.into()],
                    environments: vec![(LD_PROJECT.into(), LD_ENV.into())],
                },
            ))
            .unwrap();
        let mut env = TestEnv::init();
        let policies = env.path("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("rotation.toml"),
            format!(
                r#"
[targets.api]
kind = "railway"
project_id = "{PROJECT}"
environment_id = "{ENVIRONMENT}"
service_id = "{SERVICE}"
token = "RAILWAY_TOKEN"
token_kind = "project"
redeploy = true
health_url = "{health}"
endpoint = "{endpoint}"
deploy_timeout = "{deploy_timeout}"

[secrets.JWT_SECRET]
generator = "jwt-hmac"
algorithm = "HS256"
every = "7d"
grace = "{grace}"
push = ["api"]
previous_as = "JWT_SECRET_PREVIOUS"

[secrets.OPENAI_API_KEY]
generator = "openai"
every = "30d"
grace = "{grace}"
push = ["api"]
[secrets.OPENAI_API_KEY.openai]
project_id = "{OPENAI_PROJECT}"
admin_key = "OPENAI_ADMIN_KEY"
base_url = "{openai}"

[secrets.LAUNCHDARKLY_SDK_KEY]
generator = "launchdarkly-sdk"
every = "90d"
grace = "{grace}"
push = ["api"]
[secrets.LAUNCHDARKLY_SDK_KEY.launchdarkly]
project_key = "{LD_PROJECT}"
environment_key = "{LD_ENV}"
access_token = "LAUNCHDARKLY_API_TOKEN"
base_url = "{ld}"

[secrets.OPENAI_ADMIN_KEY]
generator = "manual"
max_age = "180d"

[secrets.RAILWAY_TOKEN]
generator = "manual"
max_age = "180d"

[secrets.LAUNCHDARKLY_API_TOKEN]
generator = "manual"
max_age = "180d"
"#,
                health = railway.health_url(SERVICE),
                endpoint = railway.endpoint(),
                openai = openai.base_url(),
                ld = ld.base_url(),
            ),
        )
        .unwrap();
        env.env
            .push(("SECRET_POLICIES".into(), policies.to_str().unwrap().into()));
        env.env
            .push(("SECRET_POLL_INTERVAL_MS".into(), "20".into()));
        env.env.push(("SECRET_RETRY_BASE_MS".into(), "20".into()));
        env.env
            .push(("SECRET_HTTP_TIMEOUT_MS".into(), "3000".into()));
        env.set("RAILWAY_TOKEN", RAILWAY_TOKEN);
        env.set("OPENAI_ADMIN_KEY", OPENAI_ADMIN);
        env.set("LAUNCHDARKLY_API_TOKEN", LD_TOKEN);
        env.set("JWT_SECRET", "jwt-initial-by-hand");
        env.set("OPENAI_API_KEY", "sk-initial-by-hand");
        let ld_key = ld.environment(LD_PROJECT, LD_ENV).unwrap().api_key;
        env.set("LAUNCHDARKLY_SDK_KEY", &ld_key);
        World {
            _rt: rt,
            railway,
            openai,
            ld,
            env,
        }
    }

    pub fn rotate(&self, args: &[&str]) -> Run {
        let mut all = vec!["rotate"];
        all.extend_from_slice(args);
        self.env.run(&all)
    }

    pub fn spawn_rotate(&self, args: &[&str]) -> Child {
        let mut all = vec!["rotate"];
        all.extend_from_slice(args);
        self.env
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Starts `secret rotate SECRET` and returns once it is held at its push: the
    /// Railway upsert hangs until the faults are cleared or the process is killed.
    pub fn spawn_rotate_held_at_push(&self, secret: &str) -> Child {
        self.railway
            .faults()
            .inject("variableCollectionUpsert", Fault::Hang);
        let child = self.spawn_rotate(&[secret]);
        self.wait_for(
            || self.railway.journal_count("variableCollectionUpsert"),
            1,
            "the push",
        );
        child
    }

    /// Waits until the named stand-in has received `n` calls of `operation`.
    pub fn wait_for(&self, count: impl Fn() -> usize, n: usize, what: &str) {
        let start = Instant::now();
        while count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn railway_vars(&self) -> BTreeMap<String, String> {
        self.railway.variables(PROJECT, ENVIRONMENT, SERVICE)
    }

    pub fn current(&self, name: &str) -> String {
        self.env.get(name)
    }

    /// What must hold after any rotation, finished or rolled back.
    pub fn assert_consistent(&self) {
        let vars = self.railway_vars();
        for name in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
            match vars.get(name) {
                Some(v) => assert_eq!(
                    v,
                    &self.current(name),
                    "Railway's {name} differs from the vault's current value"
                ),
                // A secret never pushed is absent; one that was pushed must be there.
                None => {
                    assert!(
                        !self
                            .railway
                            .received()
                            .iter()
                            .any(|r| r.operation == "variableCollectionUpsert"
                                && r.body.contains(name)),
                        "{name} was pushed but is missing at Railway"
                    )
                }
            }
        }
        // During grace the previous JWT value is there too, and only then.
        let in_grace = self
            .rotations()
            .iter()
            .any(|r| r["secret"] == "JWT_SECRET" && r["state"] == "grace");
        if let Some(prev) = vars.get("JWT_SECRET_PREVIOUS") {
            assert!(in_grace, "JWT_SECRET_PREVIOUS outside grace");
            assert_eq!(
                prev,
                &self
                    .env
                    .run(&["get", "JWT_SECRET", "--previous"])
                    .ok()
                    .stdout
            );
        } else {
            assert!(!in_grace, "JWT_SECRET_PREVIOUS missing during grace");
        }
        // No credential is live at OpenAI that the vault does not know about.
        let known: Vec<String> = self.known_values("OPENAI_API_KEY");
        for key in self.openai.live_keys() {
            assert!(
                known.contains(&key),
                "a live OpenAI key is unknown to the vault"
            );
        }
        // LaunchDarkly's primary key is one the vault holds.
        let ld_key = self.ld.environment(LD_PROJECT, LD_ENV).unwrap().api_key;
        assert!(
            self.known_values("LAUNCHDARKLY_SDK_KEY").contains(&ld_key),
            "LaunchDarkly's key is unknown to the vault"
        );
        self.env.run(&["audit", "verify"]).ok();
    }

    /// Every readable version of a secret.
    pub fn known_values(&self, name: &str) -> Vec<String> {
        let history: serde_json::Value =
            serde_json::from_str(&self.env.run(&["history", name, "--json"]).ok().stdout).unwrap();
        history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["destroyed"] == false)
            .map(|v| {
                let n = v["version"].as_u64().unwrap().to_string();
                self.env.run(&["get", name, "--version", &n]).ok().stdout
            })
            .collect()
    }

    pub fn rotations(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(
            &self.env.run(&["rotations", "--json"]).ok().stdout,
        )
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
    }
}

#[test]
fn rotate_all_three_secrets_end_to_end_with_one_upsert_and_one_deploy() {
    let w = World::new("1h");
    let old_jwt = w.current("JWT_SECRET");
    let old_ld = w.current("LAUNCHDARKLY_SDK_KEY");
    let run = w
        .rotate(&["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"])
        .ok();
    assert!(run.stdout.contains("finished"), "{}", run.stdout);

    // Every new value is current in the vault and is what Railway now holds.
    let vars = w.railway_vars();
    for name in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
        assert_eq!(vars.get(name), Some(&w.current(name)), "{name}");
    }
    assert_ne!(w.current("JWT_SECRET"), old_jwt);
    assert_eq!(vars.get("JWT_SECRET_PREVIOUS"), Some(&old_jwt));
    assert_eq!(
        w.env.run(&["get", "JWT_SECRET", "--previous"]).ok().stdout,
        old_jwt
    );

    // Three rotations sharing one service: one upsert, one deploy.
    assert_eq!(
        w.railway
            .received()
            .iter()
            .filter(|r| r.operation == "variableCollectionUpsert")
            .count(),
        1
    );
    let deployments = w.railway.deployments();
    assert_eq!(deployments.len(), 1);
    assert_eq!(
        deployments[0].variables.get("OPENAI_API_KEY"),
        Some(&w.current("OPENAI_API_KEY"))
    );
    for r in w
        .railway
        .received()
        .iter()
        .filter(|r| r.path == "/graphql/v2")
    {
        assert_eq!(r.header("project-access-token"), Some(RAILWAY_TOKEN));
        assert!(r.header("authorization").is_none());
        assert!(!r.body.contains("\"replace\":true"));
    }

    // OpenAI: the new key is a live service-account key named after the rotation.
    let new_openai = w.current("OPENAI_API_KEY");
    assert!(w.openai.is_key_live(&new_openai));
    let rotations = w.rotations();
    let openai_run = rotations
        .iter()
        .find(|r| r["secret"] == "OPENAI_API_KEY")
        .unwrap();
    let accounts = w.openai.service_accounts(OPENAI_PROJECT);
    assert_eq!(accounts.len(), 1);
    assert_eq!(
        accounts[0].name,
        format!("secret-rotation-{}", openai_run["id"].as_str().unwrap())
    );

    // LaunchDarkly: reset once, with an expiry in milliseconds; the old key lives on.
    assert_eq!(w.ld.reset_count(LD_PROJECT, LD_ENV), 1);
    let reset =
        w.ld.received()
            .into_iter()
            .find(|r| r.operation == "reset_sdk_key")
            .unwrap();
    assert_eq!(reset.header("authorization"), Some(LD_TOKEN));
    assert_eq!(reset.header("ld-api-version"), Some("20240415"));
    let expiry: i64 = reset
        .query
        .unwrap()
        .trim_start_matches("expiry=")
        .parse()
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (expiry - now_ms - 3_600_000).abs() < 120_000,
        "expiry is now + grace in ms"
    );
    assert!(w.ld.sdk_key_valid(&old_ld, now_ms));

    for r in &rotations {
        assert_eq!(r["outcome"], "finished", "{r}");
        // LaunchDarkly retires the old key itself (the expiry); the others wait to revoke.
        let expected = if r["secret"] == "LAUNCHDARKLY_SDK_KEY" {
            "done"
        } else {
            "grace"
        };
        assert_eq!(r["state"], expected, "{r}");
        let steps: Vec<&str> = r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert!(
            steps.starts_with(&[
                "start",
                "intent",
                "create",
                "deploying",
                "push",
                "verify",
                "finish"
            ]),
            "{steps:?}"
        );
    }
    let audit = w.env.audit(&["--action", "rotate"]);
    assert!(audit
        .iter()
        .any(|e| e["action"] == "rotate.finish" && e["secret"] == "OPENAI_API_KEY"));
    w.assert_consistent();
    // Nothing is due any more.
    let again = w.rotate(&["--due"]).ok();
    assert!(
        again.stdout.contains("nothing to rotate"),
        "{}",
        again.stdout
    );
}

#[test]
fn rotation_rolls_back_when_the_deploy_crashes() {
    let w = World::new("1h");
    let old = w.current("OPENAI_API_KEY");
    w.railway
        .set_next_deploy_outcome(SERVICE, DeployOutcome::Crashed);
    let run = w.rotate(&["OPENAI_API_KEY"]).code(6);
    assert!(run.stdout.contains("rolled back"), "{}", run.stdout);
    assert!(run.stdout.contains("CRASHED"), "{}", run.stdout);
    // The old value is current, back at Railway, and redeployed.
    assert_eq!(w.current("OPENAI_API_KEY"), old);
    assert_eq!(w.railway_vars().get("OPENAI_API_KEY"), Some(&old));
    let deployments = w.railway.deployments();
    assert_eq!(deployments.len(), 2, "the rollback redeploys");
    assert_eq!(deployments[1].variables.get("OPENAI_API_KEY"), Some(&old));
    // The new credential was revoked: its service account is gone.
    assert!(w.openai.service_accounts(OPENAI_PROJECT).is_empty());
    assert!(w.openai.live_keys().is_empty());
    let r = &w.rotations()[0];
    assert_eq!(r["outcome"], "rolled_back");
    assert!(r["error"].as_str().unwrap().contains("CRASHED"));
    let history = w
        .env
        .run(&["history", "OPENAI_API_KEY", "--json"])
        .ok()
        .stdout;
    assert!(
        !history.contains("pending"),
        "the pending label is dropped: {history}"
    );
    w.assert_consistent();
}

#[test]
fn a_failed_health_check_rolls_back_and_a_failed_restore_is_retried() {
    let w = World::new("1h");
    let old = w.current("JWT_SECRET");
    // Unhealthy throughout: the new value fails verify, and the restore's own health
    // check fails too, so the rollback cannot be confirmed and stays open.
    w.railway.set_health(SERVICE, Some(503));
    w.rotate(&["JWT_SECRET"]).code(6);
    assert_eq!(w.current("JWT_SECRET"), old);
    assert_eq!(w.railway_vars().get("JWT_SECRET"), Some(&old));
    assert!(!w.railway_vars().contains_key("JWT_SECRET_PREVIOUS"));
    let r = &w.rotations()[0];
    assert_eq!(r["state"], "rollback", "{r}");
    assert_eq!(r["outcome"], serde_json::Value::Null);
    assert!(r["error"].as_str().unwrap().contains("503"), "{r}");
    // The service recovers: the next pass finishes the rollback.
    w.railway.set_health(SERVICE, None);
    w.rotate(&["--due"]).code(6);
    let r = &w.rotations()[0];
    assert_eq!(r["outcome"], "rolled_back", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("503"),
        "the original cause is kept: {r}"
    );
    w.assert_consistent();
}

#[test]
fn a_failed_restore_never_revokes_the_new_openai_key() {
    let w = World::new("1h");
    w.railway.set_health(SERVICE, Some(503));
    w.rotate(&["OPENAI_API_KEY"]).code(6);
    // Railway may still run with the new key: it must stay live until the restore is done.
    assert_eq!(w.openai.live_keys().len(), 1);
    w.railway.set_health(SERVICE, None);
    w.rotate(&["--due"]).code(6);
    assert!(
        w.openai.live_keys().is_empty(),
        "revoked once the old key is back"
    );
    w.assert_consistent();
}

#[test]
fn a_launchdarkly_rotation_that_cannot_deploy_holds_forward_instead_of_rolling_back() {
    let w = World::new("1h");
    let old = w.current("LAUNCHDARKLY_SDK_KEY");
    w.railway
        .set_next_deploy_outcome(SERVICE, DeployOutcome::Crashed);
    let run = w.rotate(&["LAUNCHDARKLY_SDK_KEY"]).code(6);
    assert!(run.stdout.contains("cannot be undone"), "{}", run.stdout);
    let r = &w.rotations()[0];
    assert_eq!(r["outcome"], serde_json::Value::Null, "still open: {r}");
    // The old key was not pushed back (it is expiring); the new key is pending.
    assert_eq!(w.current("LAUNCHDARKLY_SDK_KEY"), old);
    let pending = w
        .env
        .run(&["history", "LAUNCHDARKLY_SDK_KEY", "--json"])
        .ok()
        .stdout;
    assert!(pending.contains("pending"), "{pending}");
    // The deploy works next time: the same reset's key goes live, no second reset.
    w.rotate(&["--due"]).ok();
    assert_eq!(w.ld.reset_count(LD_PROJECT, LD_ENV), 1);
    assert_eq!(
        w.current("LAUNCHDARKLY_SDK_KEY"),
        w.ld.environment(LD_PROJECT, LD_ENV).unwrap().api_key
    );
    w.assert_consistent();
}

#[test]
fn a_first_rotation_without_the_targets_current_value_is_refused() {
    let w = World::new("1h");
    w.env.run(&["delete", "JWT_SECRET"]).ok();
    let run = w.rotate(&["JWT_SECRET"]).code(6);
    assert!(run.stdout.contains("import the value"), "{}", run.stdout);
    assert!(w.railway.received().is_empty());
}

#[test]
fn setting_a_value_during_a_rotation_is_refused() {
    let w = World::new("1h");
    let mut child = w.spawn_rotate_held_at_push("JWT_SECRET");
    w.env
        .run_with(&["set", "JWT_SECRET"], b"by-hand")
        .code(4)
        .stderr_has("in progress");
    child.kill().unwrap();
    child.wait().unwrap();
    w.railway.faults().clear();
    w.rotate(&["--due"]).ok();
    w.assert_consistent();
}

#[test]
fn rate_limits_are_waited_out_and_the_rotation_succeeds() {
    let w = World::new("1h");
    w.railway
        .faults()
        .inject("variableCollectionUpsert", Fault::rate_limited(1));
    w.ld.faults()
        .inject("reset_sdk_key", Fault::rate_limited(1));
    let started = Instant::now();
    w.rotate(&["JWT_SECRET", "LAUNCHDARKLY_SDK_KEY"]).ok();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(
        w.railway
            .received()
            .iter()
            .filter(|r| r.operation == "variableCollectionUpsert")
            .count(),
        2
    );
    assert_eq!(w.ld.reset_count(LD_PROJECT, LD_ENV), 1);
    w.assert_consistent();
}

#[test]
fn a_cloudflare_403_from_railway_is_retried_as_throttling() {
    let w = World::new("1h");
    w.railway
        .faults()
        .inject("variableCollectionUpsert", Fault::Html403);
    w.rotate(&["JWT_SECRET"]).ok();
    assert_eq!(
        w.railway.journal_count("variableCollectionUpsert"),
        2,
        "retried once"
    );
    w.assert_consistent();
}

#[test]
fn a_rejected_admin_key_fails_at_once_without_retrying() {
    let w = World::new("1h");
    w.env.set("OPENAI_ADMIN_KEY", "sk-admin-wrong");
    let run = w.rotate(&["OPENAI_API_KEY"]).code(6);
    assert!(run.stdout.contains("401"), "{}", run.stdout);
    assert_eq!(
        w.openai
            .received()
            .iter()
            .filter(|r| r.operation == "create_service_account")
            .count(),
        1
    );
    assert_eq!(w.rotations()[0]["outcome"], "failed");
    assert_eq!(w.current("OPENAI_API_KEY"), "sk-initial-by-hand");
    assert!(w.railway.received().is_empty(), "nothing was pushed");
}

#[test]
fn a_lost_launchdarkly_reset_response_is_not_reset_again() {
    let w = World::new("1h");
    w.ld.faults().inject("reset_sdk_key", Fault::LoseResponse);
    w.rotate(&["LAUNCHDARKLY_SDK_KEY"]).ok();
    assert_eq!(w.ld.reset_count(LD_PROJECT, LD_ENV), 1, "no double reset");
    let key = w.ld.environment(LD_PROJECT, LD_ENV).unwrap().api_key;
    assert_eq!(w.current("LAUNCHDARKLY_SDK_KEY"), key);
    w.assert_consistent();
}

#[test]
fn a_lost_openai_create_response_leaves_no_orphan() {
    let w = World::new("1h");
    w.openai
        .faults()
        .inject("create_service_account", Fault::LoseResponse);
    w.rotate(&["OPENAI_API_KEY"]).ok();
    // The first account (whose key nobody saw) was deleted before the second was made.
    assert_eq!(w.openai.service_accounts(OPENAI_PROJECT).len(), 1);
    assert_eq!(w.openai.live_keys(), vec![w.current("OPENAI_API_KEY")]);
    w.assert_consistent();
}

/// The runs of one secret, oldest first.
fn runs_of(w: &World, secret: &str) -> Vec<serde_json::Value> {
    let mut runs: Vec<_> = w
        .rotations()
        .into_iter()
        .filter(|r| r["secret"] == secret)
        .collect();
    runs.reverse();
    runs
}

#[test]
fn a_second_jwt_rotation_during_grace_replaces_previous_as_in_one_push_and_one_deploy() {
    let w = World::new("1h");
    let v1 = w.current("JWT_SECRET");
    w.rotate(&["JWT_SECRET"]).ok();
    let v2 = w.current("JWT_SECRET");
    assert_eq!(w.railway_vars().get("JWT_SECRET_PREVIOUS"), Some(&v1));
    let upserts = w.railway.journal_count("variableCollectionUpsert");
    let deploys = w.railway.journal_count("serviceInstanceDeployV2");

    // Still in grace: the second rotation takes the first one's place.
    let run = w.rotate(&["JWT_SECRET"]).ok();
    assert!(
        !run.stdout.contains("revoke"),
        "no separate revoke: {}",
        run.stdout
    );
    assert_eq!(
        w.railway.journal_count("variableCollectionUpsert"),
        upserts + 1,
        "one upsert replaces JWT_SECRET and JWT_SECRET_PREVIOUS together"
    );
    assert_eq!(
        w.railway.journal_count("serviceInstanceDeployV2"),
        deploys + 1,
        "one deploy"
    );
    let v3 = w.current("JWT_SECRET");
    let vars = w.railway_vars();
    assert_eq!(vars.get("JWT_SECRET"), Some(&v3));
    assert_eq!(
        vars.get("JWT_SECRET_PREVIOUS"),
        Some(&v2),
        "v1 is gone everywhere"
    );
    assert!(!vars.values().any(|v| v == &v1));

    let runs = runs_of(&w, "JWT_SECRET");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["state"], "done", "the first run's grace is over");
    let last_step = runs[0]["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last_step["step"], "revoke");
    assert_eq!(last_step["detail"]["superseded_by"], runs[1]["id"]);
    assert_eq!(runs[1]["state"], "grace");
    w.assert_consistent();
}

#[test]
fn a_second_jwt_rotation_during_grace_whose_deploy_crashes_rolls_back_with_exit_6() {
    let w = World::new("1h");
    w.rotate(&["JWT_SECRET"]).ok();
    let v2 = w.current("JWT_SECRET");
    w.railway
        .set_next_deploy_outcome(SERVICE, DeployOutcome::Crashed);
    let run = w.rotate(&["JWT_SECRET"]).code(6);
    assert!(run.stdout.contains("rolled back"), "{}", run.stdout);
    // The value current before is back, and previous_as is gone with the rollback
    // (it held the value the first rotation retired).
    assert_eq!(w.current("JWT_SECRET"), v2);
    let vars = w.railway_vars();
    assert_eq!(vars.get("JWT_SECRET"), Some(&v2));
    assert!(!vars.contains_key("JWT_SECRET_PREVIOUS"), "{vars:?}");
    let runs = runs_of(&w, "JWT_SECRET");
    assert_eq!(runs[0]["state"], "done");
    assert_eq!(runs[1]["outcome"], "rolled_back");
    w.assert_consistent();
}

#[test]
fn a_second_jwt_rotation_that_cannot_reach_railway_leaves_the_first_grace_in_force() {
    let w = World::new("1h");
    let v1 = w.current("JWT_SECRET");
    w.rotate(&["JWT_SECRET"]).ok();
    // The Railway token is gone: the new run cannot be pushed, so it must not close
    // the first run's grace (JWT_SECRET_PREVIOUS still holds v1 at Railway).
    w.env.run(&["delete", "RAILWAY_TOKEN"]).ok();
    w.rotate(&["JWT_SECRET"]).code(6);
    w.env.run(&["undelete", "RAILWAY_TOKEN"]).ok();
    let runs = runs_of(&w, "JWT_SECRET");
    assert_eq!(runs[0]["state"], "grace", "{runs:#?}");
    assert_eq!(w.railway_vars().get("JWT_SECRET_PREVIOUS"), Some(&v1));
    w.assert_consistent();
}

#[test]
fn revoke_after_grace_deletes_the_old_account_and_the_previous_variable() {
    let w = World::new("1s");
    w.rotate(&["OPENAI_API_KEY", "JWT_SECRET"]).ok();
    let first = w.current("OPENAI_API_KEY");
    // A second rotation: the first rotation's key becomes the old one.
    std::thread::sleep(Duration::from_millis(1100));
    w.rotate(&["--due"]).ok(); // revokes the hand-set key (nothing to delete) and JWT_SECRET_PREVIOUS
    assert!(!w.railway_vars().contains_key("JWT_SECRET_PREVIOUS"));
    w.rotate(&["OPENAI_API_KEY"]).ok();
    assert!(w.openai.is_key_live(&first), "still live during grace");
    std::thread::sleep(Duration::from_millis(1100));
    let run = w.rotate(&["--due"]).ok();
    assert!(run.stdout.contains("revoked"), "{}", run.stdout);
    assert!(
        !w.openai.is_key_live(&first),
        "the old service account is deleted after grace"
    );
    assert_eq!(w.openai.live_keys(), vec![w.current("OPENAI_API_KEY")]);
    let r = &w.rotations()[0];
    assert_eq!(r["state"], "done");
    w.assert_consistent();
}

#[test]
fn dry_run_and_plan_contact_nothing_and_say_what_will_happen() {
    let w = World::new("1h");
    let run = w
        .rotate(&["OPENAI_API_KEY", "JWT_SECRET", "--dry-run"])
        .ok();
    assert!(run.stdout.contains("service account"), "{}", run.stdout);
    assert!(run.stdout.contains("JWT_SECRET_PREVIOUS"), "{}", run.stdout);
    assert!(
        run.stdout.contains("one variableCollectionUpsert"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("delete the old key's service account"),
        "{}",
        run.stdout
    );
    let plan = w.env.run(&["plan"]).ok().stdout;
    for name in [
        "JWT_SECRET",
        "OPENAI_API_KEY",
        "LAUNCHDARKLY_SDK_KEY",
        "OPENAI_ADMIN_KEY",
    ] {
        assert!(plan.contains(name), "{plan}");
    }
    assert!(w.railway.received().is_empty());
    assert!(w.openai.received().is_empty());
    assert!(w.ld.received().is_empty());
    assert!(w.rotations().is_empty());
}

#[test]
fn two_processes_never_rotate_one_secret_at_once() {
    let w = World::new("1h");
    let mut first = w.spawn_rotate_held_at_push("JWT_SECRET");
    let calls_before = w.railway.received().len();
    let second = w.rotate(&["JWT_SECRET"]).code(4);
    assert!(
        second.stdout.contains("running elsewhere"),
        "{}",
        second.stdout
    );
    assert_eq!(
        w.railway.received().len(),
        calls_before,
        "the second process touched nothing"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Its holder is dead: the next pass takes over and finishes.
    w.rotate(&["--due"]).ok();
    w.assert_consistent();
}

/// Kills a rotation (SIGKILL) while the stand-in holds the call named `hang_on` (after
/// letting `before` calls of it through), then resumes with `secret rotate --due`, and
/// checks the invariants. Returns the world for further checks.
fn crash_and_resume(secret: &str, standin: &str, hang_on: &str, before: usize) -> World {
    let w = World::new("1h");
    let old = w.current(secret);
    {
        let (count, faults): (Box<dyn Fn() -> usize + '_>, _) = match standin {
            "railway" => (
                Box::new(|| w.railway.journal_count(hang_on)),
                w.railway.faults(),
            ),
            "openai" => (
                Box::new(|| w.openai.journal_count(hang_on)),
                w.openai.faults(),
            ),
            _ => (Box::new(|| w.ld.journal_count(hang_on)), w.ld.faults()),
        };
        for _ in 0..before {
            faults.inject(hang_on, Fault::Delay(Duration::ZERO));
        }
        faults.inject(hang_on, Fault::Hang);
        let mut child = w.spawn_rotate(&[secret]);
        w.wait_for(&count, before + 1, hang_on);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        faults.clear();
    }
    let resumed = w.rotate(&["--due"]);
    assert!(resumed.code == 0 || resumed.code == 6, "{resumed:#?}");
    let r = w
        .rotations()
        .into_iter()
        .find(|r| r["secret"] == secret)
        .unwrap();
    assert!(
        r["outcome"] == "finished" || r["outcome"] == "rolled_back",
        "{secret}: the interrupted rotation did not end: {r}"
    );
    if r["outcome"] == "finished" {
        assert_ne!(
            w.current(secret),
            old,
            "{secret}: the pending value was promoted"
        );
        assert_eq!(w.railway_vars().get(secret), Some(&w.current(secret)));
    } else {
        assert_eq!(w.current(secret), old);
    }
    w.assert_consistent();
    w
}

#[test]
fn crash_after_create_before_push_resumes_for_every_provider() {
    for secret in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
        let w = crash_and_resume(secret, "railway", "variableCollectionUpsert", 0);
        assert_eq!(
            w.rotations()[0]["outcome"],
            "finished",
            "{secret}: nothing failed, so it finishes"
        );
    }
}

#[test]
fn crash_while_watching_the_deploy_resumes_without_a_second_deploy() {
    for secret in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
        let w = crash_and_resume(secret, "railway", "deployment", 1);
        assert_eq!(
            w.railway.deployments().len(),
            1,
            "{secret}: the persisted deployment is watched, not redone"
        );
        assert_eq!(w.rotations()[0]["outcome"], "finished");
    }
}

#[test]
fn crash_during_the_health_check_resumes_for_every_provider() {
    for secret in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
        let w = crash_and_resume(secret, "railway", "health", 0);
        assert_eq!(w.rotations()[0]["outcome"], "finished", "{secret}");
    }
}

#[test]
fn crash_during_provider_verify_resumes() {
    crash_and_resume("OPENAI_API_KEY", "openai", "list_models", 0);
    // intent read, create's read, reset, then verify's read hangs.
    crash_and_resume("LAUNCHDARKLY_SDK_KEY", "launchdarkly", "get_environment", 2);
}

#[test]
fn crash_after_a_lost_openai_create_finds_and_deletes_the_orphan_on_resume() {
    let w = World::new("1h");
    w.openai
        .faults()
        .inject("create_service_account", Fault::LoseResponse);
    // The retry first lists accounts to delete orphans: hang there and kill.
    w.openai
        .faults()
        .inject("list_service_accounts", Fault::Hang);
    let mut child = w.spawn_rotate(&["OPENAI_API_KEY"]);
    w.wait_for(
        || w.openai.journal_count("list_service_accounts"),
        1,
        "the orphan search",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        w.openai.service_accounts(OPENAI_PROJECT).len(),
        1,
        "an orphan exists"
    );
    w.openai.faults().clear();
    w.rotate(&["--due"]).ok();
    let accounts = w.openai.service_accounts(OPENAI_PROJECT);
    assert_eq!(
        accounts.len(),
        1,
        "the orphan was deleted, one live account remains"
    );
    assert_eq!(w.openai.live_keys(), vec![w.current("OPENAI_API_KEY")]);
    w.assert_consistent();
}

#[test]
fn crash_after_a_lost_launchdarkly_reset_does_not_reset_twice_on_resume() {
    let w = World::new("1h");
    w.ld.faults().inject("reset_sdk_key", Fault::LoseResponse);
    // intent read and create's read pass; the check before a retry hangs.
    w.ld.faults()
        .inject("get_environment", Fault::Delay(Duration::ZERO));
    w.ld.faults()
        .inject("get_environment", Fault::Delay(Duration::ZERO));
    w.ld.faults().inject("get_environment", Fault::Hang);
    let mut child = w.spawn_rotate(&["LAUNCHDARKLY_SDK_KEY"]);
    w.wait_for(
        || w.ld.journal_count("get_environment"),
        3,
        "the check before a retry",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    w.ld.faults().clear();
    w.rotate(&["--due"]).ok();
    assert_eq!(w.ld.reset_count(LD_PROJECT, LD_ENV), 1, "no second reset");
    assert_eq!(
        w.current("LAUNCHDARKLY_SDK_KEY"),
        w.ld.environment(LD_PROJECT, LD_ENV).unwrap().api_key
    );
    w.assert_consistent();
}

#[test]
fn policy_check_reports_every_problem_and_missing_credentials() {
    let w = World::new("1h");
    w.env.run(&["policy", "check"]).ok();
    let bad = w.env.path("bad-policies");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("p.toml"),
        "[secrets.A]\ngenerator = \"random\"\nevry = \"1d\"\n\n[secrets.B]\ngenerator = \"openai\"\nevery = \"1d\"\npush = [\"nowhere\"]\n[secrets.B.openai]\nproject_id = \"p\"\nadmin_key = \"NOT_IN_VAULT\"\n",
    )
    .unwrap();
    let run = w
        .env
        .run(&["policy", "check", bad.to_str().unwrap()])
        .code(2);
    assert!(run.stderr.contains("evry"), "{}", run.stderr);
    assert!(run.stderr.contains("nowhere"), "{}", run.stderr);
    // A valid file whose credential is not in the vault.
    let missing = w.env.path("missing-cred");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(
        missing.join("p.toml"),
        "[secrets.B]\ngenerator = \"openai\"\nevery = \"1d\"\n[secrets.B.openai]\nproject_id = \"p\"\nadmin_key = \"NOT_IN_VAULT\"\n",
    )
    .unwrap();
    let run = w
        .env
        .run(&["policy", "check", missing.to_str().unwrap()])
        .code(2);
    assert!(
        run.stderr.contains("NOT_IN_VAULT is not in the vault"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("secrets.B.openai"), "{}", run.stderr);
}

#[test]
fn the_shipped_example_policies_parse() {
    let env = TestEnv::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
    let run = env.run(&["policy", "check", dir]).ok();
    assert!(run.stdout.contains("no problems"), "{}", run.stdout);
}

#[test]
fn sigterm_during_a_rotation_exits_cleanly_and_the_next_start_completes_it() {
    let w = World::new("1h");
    // A policy directory where JWT_SECRET is due every second.
    let fast = w.env.path("fast-policies");
    std::fs::create_dir_all(&fast).unwrap();
    let original = std::fs::read_to_string(w.env.path("policies/rotation.toml")).unwrap();
    std::fs::write(
        fast.join("rotation.toml"),
        original.replace(
            "every = \"7d\"\ngrace = \"1h\"",
            "every = \"1s\"\ngrace = \"1s\"",
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    w.railway
        .faults()
        .inject("variableCollectionUpsert", Fault::Hang);
    let serve = w
        .env
        .command(&[
            "--policies",
            fast.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tick",
            "200ms",
            "--shutdown-grace",
            "500ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.wait_for(
        || w.railway.journal_count("variableCollectionUpsert"),
        1,
        "the scheduler's push",
    );
    // SIGTERM, as Railway sends it.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let out = serve.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "serve exits 0 on SIGTERM");
    // Nothing it logged carries a value.
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("listening"), "{log}");
    for name in [
        "JWT_SECRET",
        "OPENAI_API_KEY",
        "LAUNCHDARKLY_SDK_KEY",
        "RAILWAY_TOKEN",
        "OPENAI_ADMIN_KEY",
    ] {
        for v in w.known_values(name) {
            assert!(!log.contains(&v), "a value of {name} is in serve's output");
        }
    }
    let r = w
        .rotations()
        .into_iter()
        .find(|r| r["secret"] == "JWT_SECRET")
        .unwrap();
    assert_eq!(
        r["outcome"],
        serde_json::Value::Null,
        "left open, resumable: {r}"
    );
    let id = r["id"].clone();
    w.railway.faults().clear();
    w.env
        .run(&["--policies", fast.to_str().unwrap(), "rotate", "--due"])
        .ok();
    let r = w.rotations().into_iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(r["outcome"], "finished", "{r}");
    w.assert_consistent();
}

#[test]
fn a_lost_deploy_response_is_not_deployed_twice() {
    let w = World::new("1h");
    w.railway
        .faults()
        .inject("serviceInstanceDeployV2", Fault::LoseResponse);
    w.rotate(&["JWT_SECRET"]).ok();
    assert_eq!(
        w.railway.deployments().len(),
        1,
        "the deploy that happened is watched, not repeated"
    );
    w.assert_consistent();
}

#[test]
fn a_crash_after_the_deploy_call_took_effect_does_not_deploy_again() {
    let w = World::new("1h");
    // The deploy happens but its answer is lost; the check that follows hangs; kill.
    w.railway
        .faults()
        .inject("serviceInstanceDeployV2", Fault::LoseResponse);
    w.railway
        .faults()
        .inject("serviceInstance", Fault::Delay(Duration::ZERO));
    w.railway
        .faults()
        .inject("serviceInstance", Fault::Delay(Duration::ZERO));
    w.railway.faults().inject("serviceInstance", Fault::Hang);
    let mut child = w.spawn_rotate(&["JWT_SECRET"]);
    w.wait_for(
        || w.railway.journal_count("serviceInstance"),
        3,
        "the check after the lost deploy",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(w.railway.deployments().len(), 1);
    w.railway.faults().clear();
    w.rotate(&["--due"]).ok();
    assert_eq!(
        w.railway.deployments().len(),
        1,
        "resumed without a second deploy"
    );
    assert_eq!(w.rotations()[0]["outcome"], "finished");
    w.assert_consistent();
}

#[test]
fn a_corrupt_rotation_record_stops_the_resume_instead_of_guessing() {
    let w = World::new("1h");
    let mut child = w.spawn_rotate_held_at_push("LAUNCHDARKLY_SDK_KEY");
    child.kill().unwrap();
    child.wait().unwrap();
    w.railway.faults().clear();
    // Someone edits the intent: without it a resume could not tell a reset happened.
    w.env
        .sql("UPDATE rotations SET provider_state = 'not json'");
    let run = w.rotate(&["--due"]).code(6);
    assert!(run.stdout.contains("not a JSON object"), "{}", run.stdout);
    assert_eq!(
        w.ld.reset_count(LD_PROJECT, LD_ENV),
        1,
        "no second reset on a guess"
    );
}

// The same tests on PostgreSQL (see `util::on_both_stores!`).
crate::on_both_stores! {
    rotate_all_three_secrets_end_to_end_with_one_upsert_and_one_deploy,
    rotation_rolls_back_when_the_deploy_crashes,
    a_failed_health_check_rolls_back_and_a_failed_restore_is_retried,
    a_failed_restore_never_revokes_the_new_openai_key,
    a_launchdarkly_rotation_that_cannot_deploy_holds_forward_instead_of_rolling_back,
    a_first_rotation_without_the_targets_current_value_is_refused,
    setting_a_value_during_a_rotation_is_refused,
    rate_limits_are_waited_out_and_the_rotation_succeeds,
    a_cloudflare_403_from_railway_is_retried_as_throttling,
    a_rejected_admin_key_fails_at_once_without_retrying,
    a_lost_launchdarkly_reset_response_is_not_reset_again,
    a_lost_openai_create_response_leaves_no_orphan,
    a_second_jwt_rotation_during_grace_replaces_previous_as_in_one_push_and_one_deploy,
    a_second_jwt_rotation_during_grace_whose_deploy_crashes_rolls_back_with_exit_6,
    a_second_jwt_rotation_that_cannot_reach_railway_leaves_the_first_grace_in_force,
    revoke_after_grace_deletes_the_old_account_and_the_previous_variable,
    dry_run_and_plan_contact_nothing_and_say_what_will_happen,
    two_processes_never_rotate_one_secret_at_once,
    crash_after_create_before_push_resumes_for_every_provider,
    crash_while_watching_the_deploy_resumes_without_a_second_deploy,
    crash_during_the_health_check_resumes_for_every_provider,
    crash_during_provider_verify_resumes,
    crash_after_a_lost_openai_create_finds_and_deletes_the_orphan_on_resume,
    crash_after_a_lost_launchdarkly_reset_does_not_reset_twice_on_resume,
    policy_check_reports_every_problem_and_missing_credentials,
    the_shipped_example_policies_parse,
    sigterm_during_a_rotation_exits_cleanly_and_the_next_start_completes_it,
    a_lost_deploy_response_is_not_deployed_twice,
    a_crash_after_the_deploy_call_took_effect_does_not_deploy_again,
    a_corrupt_rotation_record_stops_the_resume_instead_of_guessing,
}
