//! The crash matrix: `secret rotate` SIGKILLed at every persisted step boundary, for
//! every provider, then `secret rotate --due` as the next start would run it.
//!
//! Every step is persisted before the next outbound call, so "killed while call *i* is
//! in flight" is "killed at the boundary after the step before call *i*". A clean run
//! of each scenario gives the calls, from the stand-ins' journals; then for each call
//! (each occurrence, up to three) a fresh world has the stand-in hold that call open
//! (`Fault::Hang`), the rotation is killed as soon as the call arrives, and the
//! boundary reached is read back from `secret rotations --json` (the run's last step).
//! No hook in the shipped binary: the kill point is chosen from outside.
//!
//! Scenarios: **forward** (a rotation that succeeds: intent, create, deploying, push,
//! verify, up to finish), **rollback** (the deploy crashes; killed during the restore:
//! rollback started, the old value pushed and redeployed, the new credential revoked)
//! and **revoke** (after grace: the old credential or `previous_as` retired).
//!
//! After the resume: the run has ended (finished, rolled back, or failed before any
//! change), the pending value minted before the kill was not lost (a finished run made
//! it current; a LaunchDarkly reset is never repeated), no live credential is unknown
//! to the vault, and Railway holds the vault's current values (`World::assert_consistent`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use secret_standins::{DeployOutcome, Fault};

use crate::fault_matrix::{matrix_world_with_grace, StandIn, PROVIDERS};
use crate::rotation::World;

const SERVICE: &str = "svc-1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Forward,
    Rollback,
    Revoke,
}

impl Scenario {
    fn grace(self) -> &'static str {
        match self {
            Scenario::Revoke => "1s",
            _ => "1h",
        }
    }

    /// Sets the world up; returns the `secret rotate` arguments of the run to kill.
    fn prepare<'a>(self, w: &World, secret: &'a str) -> Vec<&'a str> {
        match self {
            Scenario::Forward => vec![secret],
            Scenario::Rollback => {
                w.railway
                    .set_next_deploy_outcome(SERVICE, DeployOutcome::Crashed);
                vec![secret]
            }
            Scenario::Revoke => {
                // The first rotation replaces a value set by hand (nothing to revoke at
                // the provider); the second one's previous value is a credential the
                // provider minted, so its revoke calls out.
                w.rotate(&[secret]).ok();
                std::thread::sleep(Duration::from_millis(1_200));
                w.rotate(&["--due"]).ok();
                w.rotate(&[secret]).ok();
                // Past the one-second grace: the next pass revokes.
                std::thread::sleep(Duration::from_millis(1_200));
                vec!["--due"]
            }
        }
    }
}

/// (stand-in, operation, how many calls of it the stand-in had received before).
type KillPoint = (StandIn, String, usize);

fn journal(w: &World) -> Vec<(StandIn, String)> {
    let mut all = Vec::new();
    for (standin, received) in [
        (StandIn::Railway, w.railway.received()),
        (StandIn::OpenAi, w.openai.received()),
        (StandIn::LaunchDarkly, w.ld.received()),
    ] {
        all.extend(received.into_iter().map(|r| (r.at, standin, r.operation)));
    }
    // Stand-ins are separate servers: their arrival times give one order.
    all.sort_by_key(|(at, ..)| *at);
    all.into_iter().map(|(_, s, op)| (s, op)).collect()
}

fn count(w: &World, standin: StandIn, operation: &str) -> usize {
    match standin {
        StandIn::Railway => w.railway.journal_count(operation),
        StandIn::OpenAi => w.openai.journal_count(operation),
        StandIn::LaunchDarkly => w.ld.journal_count(operation),
    }
}

/// The calls of a clean run of `scenario` (after its set-up), as kill points.
fn kill_points(secret: &str, scenario: Scenario) -> Vec<KillPoint> {
    let w = matrix_world_with_grace(scenario.grace());
    let args = scenario.prepare(&w, secret);
    let before = journal(&w);
    let mut seen_before = BTreeMap::<(StandIn, String), usize>::new();
    for call in &before {
        *seen_before.entry(call.clone()).or_default() += 1;
    }
    let mut all = vec!["rotate"];
    all.extend(args);
    w.env.run(&all);
    let after = journal(&w);
    let mut seen = BTreeMap::<(StandIn, String), usize>::new();
    let mut points = Vec::new();
    let mut restore_started = false;
    let mut upserts = 0;
    for call in after {
        let n = seen.entry(call.clone()).or_default();
        *n += 1;
        let already = seen_before.get(&call).copied().unwrap_or(0);
        if *n <= already {
            continue;
        }
        if call.1 == "variableCollectionUpsert" {
            upserts += 1;
            // The rollback scenario's calls start at the restore's push.
            restore_started |= upserts == 2;
        }
        if scenario == Scenario::Rollback && !restore_started {
            continue;
        }
        let occurrence = *n - already;
        if occurrence <= 3 {
            points.push((call.0, call.1.clone(), *n - 1));
        }
    }
    points
}

/// The run's last recorded step, as "step status".
fn boundary(w: &World, secret: &str) -> String {
    let run = w
        .rotations()
        .into_iter()
        .find(|r| r["secret"] == secret)
        .unwrap();
    let steps = run["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    format!(
        "{} {}",
        last["step"].as_str().unwrap(),
        last["status"].as_str().unwrap()
    )
}

/// One cell: kill at `point`, resume, check. Returns the boundary killed at.
fn run_cell(secret: &str, scenario: Scenario, point: &KillPoint) -> String {
    let w = matrix_world_with_grace(scenario.grace());
    let args = scenario.prepare(&w, secret);
    let (standin, operation, before) = point;
    let faults = match standin {
        StandIn::Railway => w.railway.faults(),
        StandIn::OpenAi => w.openai.faults(),
        StandIn::LaunchDarkly => w.ld.faults(),
    };
    let already = count(&w, *standin, operation);
    for _ in already..*before {
        faults.inject(operation, Fault::Delay(Duration::ZERO));
    }
    faults.inject(operation, Fault::Hang);
    let old = w.current(secret);
    let ld_resets = w.ld.reset_count("planning-engine", "production");
    let mut child = w.spawn_rotate(&args);
    w.wait_for(
        || count(&w, *standin, operation),
        before + 1,
        &format!("{operation} #{}", before + 1),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    w.railway.faults().clear();
    w.openai.faults().clear();
    w.ld.faults().clear();
    w.railway
        .set_next_deploy_outcome(SERVICE, DeployOutcome::Success);
    let at = boundary(&w, secret);
    let pending = w.pending_value(secret);
    let resets_at_kill = w.ld.reset_count("planning-engine", "production");

    for _ in 0..3 {
        let open = w
            .rotations()
            .iter()
            .any(|r| r["secret"] == secret && r["outcome"].is_null());
        let due_revoke = w
            .rotations()
            .iter()
            .any(|r| r["secret"] == secret && r["state"] == "grace")
            && scenario == Scenario::Revoke;
        if !open && !due_revoke {
            break;
        }
        let resumed = w.rotate(&["--due"]);
        assert!(
            resumed.code == 0 || resumed.code == 6,
            "{secret} at {at}: the resume exits 0 or 6: {resumed:#?}"
        );
    }
    let run = w
        .rotations()
        .into_iter()
        .find(|r| r["secret"] == secret)
        .unwrap();
    let now = w.current(secret);
    match run["outcome"].as_str() {
        Some("finished") => {
            if let Some(p) = &pending {
                assert_eq!(
                    &now, p,
                    "{secret} at {at}: the pending value was promoted, not lost"
                );
            }
            if scenario == Scenario::Revoke {
                assert_eq!(run["state"], "done", "{secret} at {at}: revoked: {run}");
            }
        }
        Some("rolled_back") => assert_eq!(now, old, "{secret} at {at}: rolled back"),
        Some("failed") => {
            assert_eq!(now, old, "{secret} at {at}: failed before any change");
            assert!(
                pending.is_none(),
                "{secret} at {at}: failed with a pending value"
            );
        }
        other => panic!("{secret} at {at}: the run did not end ({other:?}): {run}"),
    }
    // One rotation, at most one reset: a reset made before the kill is never repeated.
    let resets = w.ld.reset_count("planning-engine", "production");
    assert!(
        resets <= ld_resets + 1 && resets >= resets_at_kill,
        "{secret} at {at}: {ld_resets} resets before, {resets_at_kill} at the kill, {resets} after"
    );
    w.assert_consistent();
    at
}

fn crash_matrix(secret: &str) {
    assert!(PROVIDERS.iter().any(|(s, _)| *s == secret), "{secret}");
    let mut cells = Vec::new();
    for scenario in [Scenario::Forward, Scenario::Rollback, Scenario::Revoke] {
        for point in kill_points(secret, scenario) {
            cells.push((scenario, point));
        }
    }
    let next = AtomicUsize::new(0);
    let boundaries = Mutex::new(BTreeSet::<String>::new());
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((scenario, point)) = cells.get(i) else {
                    break;
                };
                match std::panic::catch_unwind(AssertUnwindSafe(|| {
                    run_cell(secret, *scenario, point)
                })) {
                    Ok(at) => {
                        boundaries
                            .lock()
                            .unwrap()
                            .insert(format!("{scenario:?}: {at}"));
                    }
                    Err(e) => {
                        let why = crate::util::panic_message(&*e);
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{scenario:?} kill at {point:?}: {why}"));
                    }
                }
            });
        }
    });
    let boundaries = boundaries.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "crash matrix {secret}: {} cells, {} boundaries: {boundaries:?}",
        cells.len(),
        boundaries.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cells failed:\n{}",
        failures.len(),
        cells.len(),
        failures.join("\n---\n")
    );
    // Every provider is killed after create (while pushing) and while verifying.
    for want in ["Forward: create ok", "Forward: deploying ok"] {
        assert!(
            boundaries.iter().any(|b| b == want),
            "{secret}: no kill at {want}: {boundaries:?}"
        );
    }
}

#[test]
fn crash_matrix_jwt_hmac() {
    crash_matrix("JWT_SECRET");
}

#[test]
fn crash_matrix_jwt_ed25519() {
    crash_matrix("JWT_SIGNING_KEY");
}

#[test]
fn crash_matrix_random() {
    crash_matrix("SESSION_TOKEN");
}

#[test]
fn crash_matrix_openai() {
    crash_matrix("OPENAI_API_KEY");
}

#[test]
fn crash_matrix_launchdarkly() {
    crash_matrix("LAUNCHDARKLY_SDK_KEY");
}
