//! The fault matrix: every failure the stand-ins can produce, crossed with every call a
//! rotation makes, for every provider — generated, not hand-picked.
//!
//! For each provider, a clean rotation is run first and the stand-ins' journals give
//! the calls it made, in order (Railway's upsert, deploy, deployment polls and health
//! check; OpenAI's create and verify; LaunchDarkly's reads and reset). Each call (its
//! first and second occurrence, when a step makes it more than once) is then crossed
//! with each HTTP fault, and each provider with each failure of the deploy itself. A
//! cell is a fresh world: the fault is queued, `secret rotate NAME` runs (exit 0 or 6,
//! nothing else), the fault is lifted, and `secret rotate --due` resumes whatever is
//! still open, as `serve` would on its next tick.
//!
//! What "ends" means: the run's outcome is `finished` (the new value is current and is
//! what Railway holds), `rolled_back` (the old value is current and back at Railway, the
//! new credential revoked), or `failed` before anything changed (the create step was
//! refused: no pending version, nothing pushed). A LaunchDarkly reset cannot be undone
//! (the old key is already expiring), so a LaunchDarkly run that fails after its reset
//! holds forward and ends `finished` once the fault is gone. In every cell the
//! rotation invariants of `World::assert_consistent` hold, and the extra providers'
//! Railway variables equal the vault's current values.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use secret_standins::{DeployOutcome, Fault};

use crate::rotation::World;

/// (secret, generator) for every provider the engine has.
pub const PROVIDERS: [(&str, &str); 5] = [
    ("JWT_SECRET", "jwt-hmac"),
    ("JWT_SIGNING_KEY", "jwt-ed25519"),
    ("SESSION_TOKEN", "random"),
    ("OPENAI_API_KEY", "openai"),
    ("LAUNCHDARKLY_SDK_KEY", "launchdarkly-sdk"),
];

/// Every HTTP failure a stand-in can produce for one call.
pub fn http_faults() -> Vec<(&'static str, Fault)> {
    vec![
        ("401", Fault::status(401)),
        ("403 JSON", Fault::status(403)),
        ("403 HTML", Fault::Html403),
        ("404", Fault::status(404)),
        ("409", Fault::status(409)),
        ("429 Retry-After", Fault::rate_limited(1)),
        ("429 bare", Fault::status(429)),
        ("500", Fault::status(500)),
        ("502", Fault::status(502)),
        // No answer within the client's timeout (and nothing done).
        ("timeout", Fault::Hang),
        // The answer comes after the client's timeout (400 ms), and the service acted.
        (
            "slow answer, acted",
            Fault::Delay(Duration::from_millis(900)),
        ),
        ("refused connection", Fault::Refuse),
        ("malformed JSON", Fault::MalformedJson),
        ("lost response after acting", Fault::LoseResponse),
    ]
}

/// Failures of the deployment and the service, for every provider.
const TARGET_FAULTS: [&str; 4] = [
    "deploy FAILED",
    "deploy CRASHED",
    "deploy never finishing",
    "health URL failing",
];

const SERVICE: &str = "svc-1";

/// The rotation world plus an Ed25519 signing key and a random token, both pushed to
/// Railway; short deploy and HTTP timeouts so hanging cells end quickly.
pub fn matrix_world() -> World {
    matrix_world_with_grace("1h")
}

/// [`matrix_world`] with every rotated secret's `grace` (the extra ones' too).
pub fn matrix_world_with_grace(grace: &str) -> World {
    let mut w = World::with_deploy_timeout(grace, "2s");
    std::fs::write(
        w.env.path("policies").join("more.toml"),
        format!(
            "[secrets.JWT_SIGNING_KEY]\ngenerator = \"jwt-ed25519\"\nevery = \"7d\"\ngrace = \"{grace}\"\npush = [\"api\"]\n\n\
             [secrets.SESSION_TOKEN]\ngenerator = \"random\"\nlength = 40\nevery = \"7d\"\ngrace = \"{grace}\"\npush = [\"api\"]\n"
        ),
    )
    .unwrap();
    w.env.set(
        "JWT_SIGNING_KEY",
        "-----BEGIN PRIVATE KEY-----\nset-by-hand\n-----END PRIVATE KEY-----\n",
    );
    w.env.set("SESSION_TOKEN", "session-token-set-by-hand");
    w.env
        .env
        .push(("SECRET_HTTP_TIMEOUT_MS".into(), "400".into()));
    w
}

/// Which stand-in a call went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StandIn {
    Railway,
    OpenAi,
    LaunchDarkly,
}

/// One call of a clean rotation: the stand-in, the operation, and which occurrence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub standin: StandIn,
    pub operation: String,
    pub occurrence: usize,
}

/// The calls a clean rotation of `secret` makes (first and second occurrence of each
/// operation), from the stand-ins' journals.
pub fn calls_of(secret: &str) -> Vec<Call> {
    let w = matrix_world();
    w.railway.journal().clear();
    w.openai.journal().clear();
    w.ld.journal().clear();
    w.rotate(&[secret]).ok();
    let mut calls = Vec::new();
    for (standin, received) in [
        (StandIn::Railway, w.railway.received()),
        (StandIn::OpenAi, w.openai.received()),
        (StandIn::LaunchDarkly, w.ld.received()),
    ] {
        let mut seen = BTreeMap::<String, usize>::new();
        for r in received {
            let n = seen.entry(r.operation.clone()).or_default();
            if *n < 2 {
                calls.push(Call {
                    standin,
                    operation: r.operation.clone(),
                    occurrence: *n,
                });
            }
            *n += 1;
        }
    }
    calls
}

/// What a cell does to the world.
#[derive(Clone, Debug)]
pub enum Injection {
    Http(Call, Fault),
    Target(&'static str),
}

/// How a cell ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    Finished,
    RolledBack,
    FailedBeforeAnyChange,
}

fn open_runs(w: &World, secret: &str) -> usize {
    w.rotations()
        .iter()
        .filter(|r| r["secret"] == secret && r["outcome"].is_null())
        .count()
}

/// Runs one cell and checks it; panics with what went wrong.
pub fn run_cell(secret: &str, injection: &Injection) -> Ending {
    let w = matrix_world();
    let before = w.current(secret);
    match injection {
        Injection::Http(call, fault) => {
            let faults = match call.standin {
                StandIn::Railway => w.railway.faults(),
                StandIn::OpenAi => w.openai.faults(),
                StandIn::LaunchDarkly => w.ld.faults(),
            };
            for _ in 0..call.occurrence {
                faults.inject(&call.operation, Fault::Delay(Duration::ZERO));
            }
            faults.inject(&call.operation, fault.clone());
        }
        Injection::Target("deploy FAILED") => w
            .railway
            .set_next_deploy_outcome(SERVICE, DeployOutcome::Failed),
        Injection::Target("deploy CRASHED") => w
            .railway
            .set_next_deploy_outcome(SERVICE, DeployOutcome::Crashed),
        Injection::Target("deploy never finishing") => w
            .railway
            .set_next_deploy_outcome(SERVICE, DeployOutcome::Hang),
        Injection::Target(_) => w.railway.set_health(SERVICE, Some(503)),
    }
    let first = w.rotate(&[secret]);
    assert!(
        first.code == 0 || first.code == 6,
        "the first run exits 0 or 6: {first:#?}"
    );
    // The cell tested what it says: the fault was met.
    match injection {
        Injection::Http(call, _) => {
            let faults = match call.standin {
                StandIn::Railway => w.railway.faults(),
                StandIn::OpenAi => w.openai.faults(),
                StandIn::LaunchDarkly => w.ld.faults(),
            };
            assert_eq!(
                faults.pending(&call.operation),
                0,
                "the fault was never met"
            );
        }
        Injection::Target("health URL failing") => {
            assert!(
                w.railway.journal_count("health") > 0,
                "no health check was made"
            )
        }
        Injection::Target(_) => assert!(!w.railway.deployments().is_empty(), "nothing deployed"),
    }
    // The fault is gone, as it would be by the next tick.
    w.railway.faults().clear();
    w.openai.faults().clear();
    w.ld.faults().clear();
    w.railway
        .set_next_deploy_outcome(SERVICE, DeployOutcome::Success);
    w.railway.set_health(SERVICE, None);
    for _ in 0..3 {
        if open_runs(&w, secret) == 0 {
            break;
        }
        let again = w.rotate(&["--due"]);
        assert!(
            again.code == 0 || again.code == 6,
            "a resume exits 0 or 6: {again:#?}"
        );
    }
    assert_eq!(
        open_runs(&w, secret),
        0,
        "the run ended: {:#?}",
        w.rotations()
    );
    let run = w
        .rotations()
        .into_iter()
        .find(|r| r["secret"] == secret)
        .unwrap();
    let now = w.current(secret);
    let vars = w.railway_vars();
    let ending = match run["outcome"].as_str().unwrap() {
        "finished" => {
            assert_ne!(now, before, "finished: a new value is current");
            assert_eq!(vars.get(secret), Some(&now), "finished: Railway holds it");
            Ending::Finished
        }
        "rolled_back" => {
            assert_eq!(now, before, "rolled back: the old value is current");
            if let Some(v) = vars.get(secret) {
                assert_eq!(v, &before, "rolled back: Railway holds the old value");
            }
            Ending::RolledBack
        }
        "failed" => {
            assert_eq!(now, before, "failed: nothing changed");
            let history = w.env.run(&["history", secret, "--json"]).ok().stdout;
            assert!(
                !history.contains("pending"),
                "failed: no pending version: {history}"
            );
            Ending::FailedBeforeAnyChange
        }
        other => panic!("outcome {other}: {run}"),
    };
    // The providers World does not know: Railway holds the vault's current value, or
    // never got the variable.
    for extra in ["JWT_SIGNING_KEY", "SESSION_TOKEN"] {
        if let Some(v) = vars.get(extra) {
            assert_eq!(v, &w.current(extra), "{extra} at Railway");
        }
    }
    w.assert_consistent();
    ending
}

/// Runs `cells` on `threads` threads; returns the endings and the failures.
pub fn run_all(
    secret: &str,
    cells: &[(String, Injection)],
    threads: usize,
) -> (BTreeMap<Ending, usize>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let endings = Mutex::new(BTreeMap::<Ending, usize>::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((label, injection)) = cells.get(i) else {
                    break;
                };
                match std::panic::catch_unwind(AssertUnwindSafe(|| run_cell(secret, injection))) {
                    Ok(ending) => *endings.lock().unwrap().entry(ending).or_default() += 1,
                    Err(e) => {
                        let why = crate::util::panic_message(&*e);
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{secret} × {label}: {why}"));
                    }
                }
            });
        }
    });
    (
        endings.into_inner().unwrap(),
        failures.into_inner().unwrap(),
    )
}

/// The cells of one provider: its calls × the HTTP faults, and the target faults.
pub fn cells_of(secret: &str) -> Vec<(String, Injection)> {
    let mut cells = Vec::new();
    for call in calls_of(secret) {
        for (label, fault) in http_faults() {
            cells.push((
                format!(
                    "{label} on {:?} {} #{}",
                    call.standin,
                    call.operation,
                    call.occurrence + 1
                ),
                Injection::Http(call.clone(), fault),
            ));
        }
    }
    for t in TARGET_FAULTS {
        cells.push((t.to_string(), Injection::Target(t)));
    }
    cells
}

fn matrix(secret: &str) {
    assert!(PROVIDERS.iter().any(|(s, _)| *s == secret), "{secret}");
    let cells = cells_of(secret);
    // A clean rotation calls Railway's upsert, deploy, deployment and health at least,
    // so a provider never has fewer cells than that crossing.
    assert!(
        cells.len() >= 4 * http_faults().len() + TARGET_FAULTS.len(),
        "{secret}: only {} cells",
        cells.len()
    );
    let (endings, failures) = run_all(secret, &cells, 2);
    eprintln!(
        "fault matrix {secret}: {} cells, endings {endings:?}",
        cells.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n{}",
        failures.len(),
        cells.len(),
        failures.join("\n---\n")
    );
    assert_eq!(endings.values().sum::<usize>(), cells.len());
}

#[test]
fn fault_matrix_jwt_hmac() {
    matrix("JWT_SECRET");
}

#[test]
fn fault_matrix_jwt_ed25519() {
    matrix("JWT_SIGNING_KEY");
}

#[test]
fn fault_matrix_random() {
    matrix("SESSION_TOKEN");
}

#[test]
fn fault_matrix_openai() {
    matrix("OPENAI_API_KEY");
}

#[test]
fn fault_matrix_launchdarkly() {
    matrix("LAUNCHDARKLY_SDK_KEY");
}
