//! `secret drift` as a user meets it: a variable changed behind our back at the Railway
//! stand-in (or a `.env` file edited by hand) is found — exit 8, naming the target and
//! the variable, never a value — and `--fix` puts the vault's value back with one upsert
//! and one deploy; `secret serve` exports the same finding in `/metrics`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use secret_standins::{DeployOutcome, Fault};

use crate::rotation::{World, ENVIRONMENT, PROJECT, SERVICE};
use crate::serve::free_port;
use crate::util::{contains, read_or_empty, Run, TestEnv};

const PASTED: &str = "sk-pasted-by-hand-0123456789";

/// The findings of `secret drift --json`, by variable.
fn findings(run: &Run) -> std::collections::BTreeMap<String, Value> {
    let all: Value = serde_json::from_str(&run.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .map(|f| (f["variable"].as_str().unwrap().to_string(), f.clone()))
        .collect()
}

/// The line of the human table for `variable`.
fn row<'a>(run: &'a Run, variable: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(variable))
        .unwrap_or_else(|| panic!("no row for {variable}:\n{}", run.stdout))
}

/// No value — the vault's or the one pasted at the target — in what a run printed.
#[track_caller]
fn assert_no_values(run: &Run, values: &[String]) {
    for v in values {
        assert!(
            !run.stdout.contains(v.as_str()) && !run.stderr.contains(v.as_str()),
            "a value was printed:\n{run:#?}"
        );
    }
}

fn vault_values(w: &World) -> Vec<String> {
    ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"]
        .iter()
        .flat_map(|n| w.known_values(n))
        .chain([PASTED.to_string()])
        .collect()
}

fn drift(w: &World, args: &[&str]) -> Run {
    let mut all = vec!["drift"];
    all.extend_from_slice(args);
    w.env.run(&all)
}

/// Everything in the vault pushed where the policies say, as a team would start.
fn seeded() -> World {
    let w = World::new("1h");
    let first = drift(&w, &[]).code(8);
    for name in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
        assert!(row(&first, name).contains("missing"), "{}", first.stdout);
    }
    drift(&w, &["--fix"]).ok();
    w.railway.journal().clear();
    w
}

#[test]
fn a_variable_changed_at_railway_is_drift_and_fix_puts_it_back_with_one_upsert_and_one_deploy() {
    let w = seeded();
    let seeded_deploys = w.railway.deployments().len();
    let clean = drift(&w, &[]).ok();
    for name in ["JWT_SECRET", "OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"] {
        assert!(row(&clean, name).contains(" ok "), "{}", clean.stdout);
    }
    assert!(row(&clean, "JWT_SECRET_PREVIOUS").contains("absent outside grace"));

    // Someone pastes a key into Railway's dashboard: no deploy, nothing told us.
    w.railway
        .set_variable(PROJECT, ENVIRONMENT, SERVICE, "OPENAI_API_KEY", PASTED)
        .unwrap();
    let values = vault_values(&w);
    let found = drift(&w, &[]).code(8);
    let line = row(&found, "OPENAI_API_KEY");
    assert!(line.starts_with("api "), "{line}");
    assert!(
        line.contains("differs") && line.contains("changed at the target"),
        "{line}"
    );
    assert!(row(&found, "JWT_SECRET").contains(" ok "));
    let found = found.stderr_has("drift found: OPENAI_API_KEY at api differs");
    assert_no_values(&found, &values);

    let json = drift(&w, &["--json"]).code(8);
    assert_no_values(&json, &values);
    let by_name = findings(&json);
    let openai = &by_name["OPENAI_API_KEY"];
    assert_eq!(openai["target"], "api");
    assert_eq!(openai["state"], "differs");
    assert_eq!(openai["changed"], "target");
    assert_eq!(openai["expected"], "current");
    assert_eq!(openai["vault_version"], 1);
    assert_eq!(openai["target_version"], Value::Null);
    assert_eq!(by_name["JWT_SECRET"]["state"], "ok");
    assert_eq!(
        w.railway.journal_count("variableCollectionUpsert"),
        0,
        "a check writes nothing"
    );
    assert_eq!(
        w.railway.deployments().len(),
        seeded_deploys,
        "a check deploys nothing"
    );

    let fixed = drift(&w, &["--fix"]).ok();
    assert_no_values(&fixed, &values);
    assert!(
        fixed
            .stdout
            .contains("fixed api: set OPENAI_API_KEY (version 1); deployment "),
        "{}",
        fixed.stdout
    );
    let after = fixed.stdout.split("after the fix:").nth(1).unwrap();
    assert!(
        !after.contains("differs") && !after.contains("missing"),
        "{after}"
    );
    assert_eq!(w.railway.journal_count("variableCollectionUpsert"), 1);
    assert_eq!(w.railway.journal_count("serviceInstanceDeployV2"), 1);
    assert_eq!(w.railway.journal_count("variableDelete"), 0);
    let upsert = w
        .railway
        .received()
        .into_iter()
        .find(|r| r.operation == "variableCollectionUpsert")
        .unwrap();
    assert!(
        upsert.body.contains("\"skipDeploys\":true"),
        "{}",
        upsert.body
    );
    assert!(
        !upsert.body.contains("JWT_SECRET") && !upsert.body.contains("LAUNCHDARKLY"),
        "only what drifted is pushed"
    );
    let deployments = w.railway.deployments();
    assert_eq!(deployments.len(), seeded_deploys + 1);
    let current = w.current("OPENAI_API_KEY");
    assert_eq!(
        deployments.last().unwrap().variables["OPENAI_API_KEY"],
        current
    );
    assert_eq!(w.railway_vars()["OPENAI_API_KEY"], current);
    drift(&w, &[]).ok();

    // The log says what was checked and fixed, and holds no value.
    let checks = w.env.audit(&["--action", "drift.check"]);
    assert!(checks.len() >= 4, "{checks:?}");
    let fixes = w
        .env
        .audit(&["--action", "drift.fix", "--secret", "OPENAI_API_KEY"]);
    let last = fixes.last().unwrap();
    assert_eq!(last["outcome"], "ok");
    let details = last["details"].to_string();
    assert!(
        details.contains("\"target\":\"api\"") && details.contains("OPENAI_API_KEY"),
        "{details}"
    );
    let audit = w.env.run(&["audit", "--json"]).ok();
    assert_no_values(&audit, &values);
    assert!(!contains(&read_or_empty(&w.env.vault), PASTED.as_bytes()));
    w.env.run(&["audit", "verify"]).ok();
}

#[test]
fn a_target_behind_the_vault_and_a_sealed_variable_are_told_apart() {
    let w = seeded();
    // A new value set in the vault and never pushed: the vault moved.
    w.env.set("OPENAI_API_KEY", "sk-set-but-not-pushed");
    let run = drift(&w, &["--json"]).code(8);
    let openai = &findings(&run)["OPENAI_API_KEY"];
    assert_eq!(openai["state"], "differs");
    assert_eq!(openai["changed"], "vault");
    assert_eq!(
        (
            openai["target_version"].as_u64(),
            openai["vault_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        openai["note"],
        "target behind: holds version 1, the vault's current is 2"
    );

    // A sealed variable can never be read back: reported, not judged.
    drift(&w, &["--fix"]).ok();
    w.railway
        .seal_variable(PROJECT, ENVIRONMENT, SERVICE, "JWT_SECRET")
        .unwrap();
    let run = drift(&w, &[]).ok();
    assert!(row(&run, "JWT_SECRET").contains("sealed"), "{}", run.stdout);
}

#[test]
fn previous_as_must_hold_the_old_value_during_grace_and_be_absent_after() {
    let w = World::new("2s");
    drift(&w, &["--fix"]).ok();
    w.rotate(&["JWT_SECRET"]).ok();
    let grace = drift(&w, &["--json"]).ok();
    let prev = &findings(&grace)["JWT_SECRET_PREVIOUS"];
    assert_eq!(
        (prev["state"].as_str(), prev["expected"].as_str()),
        (Some("ok"), Some("previous"))
    );
    assert_eq!(prev["vault_version"], 1);

    // Removed during grace: missing; --fix puts the previous value back.
    assert!(w
        .railway
        .remove_variable(PROJECT, ENVIRONMENT, SERVICE, "JWT_SECRET_PREVIOUS")
        .unwrap());
    let run = drift(&w, &[]).code(8);
    assert!(
        row(&run, "JWT_SECRET_PREVIOUS").contains("missing"),
        "{}",
        run.stdout
    );
    drift(&w, &["--fix"]).ok();
    let previous = w.env.run(&["get", "JWT_SECRET", "--previous"]).ok().stdout;
    assert_eq!(w.railway_vars()["JWT_SECRET_PREVIOUS"], previous);

    // Grace ends and the revoke removes it; put back by hand, it is unexpected.
    std::thread::sleep(Duration::from_millis(2100));
    w.rotate(&["--due"]).ok();
    assert!(!w.railway_vars().contains_key("JWT_SECRET_PREVIOUS"));
    let run = drift(&w, &[]).ok();
    assert!(row(&run, "JWT_SECRET_PREVIOUS").contains("absent outside grace"));
    w.railway
        .set_variable(
            PROJECT,
            ENVIRONMENT,
            SERVICE,
            "JWT_SECRET_PREVIOUS",
            &previous,
        )
        .unwrap();
    let run = drift(&w, &["--json"]).code(8);
    let prev = &findings(&run)["JWT_SECRET_PREVIOUS"];
    assert_eq!(prev["state"], "unexpected");
    assert_eq!(prev["target_version"], 1);
    assert_eq!(prev["expected"], "absent");
    assert_no_values(&run, std::slice::from_ref(&previous));

    // The fix deletes it, and Railway's own redeploy on delete is the one deploy.
    let deploys = w.railway.deployments().len();
    w.railway.journal().clear();
    let fixed = drift(&w, &["--fix"]).ok();
    assert!(
        fixed.stdout.contains("removed JWT_SECRET_PREVIOUS"),
        "{}",
        fixed.stdout
    );
    assert_eq!(w.railway.journal_count("variableDelete"), 1);
    assert_eq!(w.railway.journal_count("variableCollectionUpsert"), 0);
    assert_eq!(w.railway.journal_count("serviceInstanceDeployV2"), 0);
    assert_eq!(w.railway.deployments().len(), deploys + 1, "one deploy");
    assert!(!w.railway_vars().contains_key("JWT_SECRET_PREVIOUS"));
    w.assert_consistent();
}

#[test]
fn a_secret_being_rotated_is_neither_judged_nor_fixed() {
    let w = seeded();
    w.railway
        .set_variable(PROJECT, ENVIRONMENT, SERVICE, "OPENAI_API_KEY", PASTED)
        .unwrap();
    let mut child = w.spawn_rotate_held_at_push("JWT_SECRET");
    let run = drift(&w, &["--json"]).code(8);
    let by_name = findings(&run);
    for name in ["JWT_SECRET", "JWT_SECRET_PREVIOUS"] {
        assert_eq!(by_name[name]["state"], "rotating", "{name}");
        assert!(by_name[name]["note"]
            .as_str()
            .unwrap()
            .contains("is in push"));
    }
    let upserts = w.railway.journal_count("variableCollectionUpsert");
    let fixed = drift(&w, &["--fix"]).ok();
    assert!(
        fixed.stdout.contains("set OPENAI_API_KEY"),
        "{}",
        fixed.stdout
    );
    let pushed: Vec<String> = w
        .railway
        .received()
        .into_iter()
        .filter(|r| r.operation == "variableCollectionUpsert")
        .skip(upserts)
        .map(|r| r.body)
        .collect();
    assert_eq!(pushed.len(), 1);
    assert!(
        !pushed[0].contains("JWT_SECRET"),
        "the rotation's variables are left alone"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A vault with one secret pushed to a dotenv file next to its policy.
fn dotenv_env() -> TestEnv {
    let mut env = TestEnv::init();
    let policies = env.path("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("local.toml"),
        "[targets.local]\nkind = \"dotenv\"\npath = \"../app.env\"\n\n\
         [secrets.SESSION_KEY]\ngenerator = \"random\"\nevery = \"30d\"\npush = [\"local\"]\n",
    )
    .unwrap();
    env.env
        .push(("SECRET_POLICIES".into(), policies.to_str().unwrap().into()));
    env.set("SESSION_KEY", "s3ss10n \"quoted\" $x #y");
    env
}

#[test]
fn a_dotenv_file_edited_by_hand_is_drift_and_fix_rewrites_only_its_line() {
    let env = dotenv_env();
    let file = env.path("app.env");
    let value = env.get("SESSION_KEY");
    let run = env.run(&["drift"]).code(8);
    assert!(
        row(&run, "SESSION_KEY").contains("missing"),
        "{}",
        run.stdout
    );
    env.run(&["drift", "--fix"]).ok();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    env.run(&["drift"]).ok();

    std::fs::write(
        &file,
        "# mine\nPORT=8080\nexport SESSION_KEY='typed-by-hand'\n",
    )
    .unwrap();
    let run = env.run(&["drift"]).code(8);
    assert!(
        row(&run, "SESSION_KEY").contains("changed at the target"),
        "{}",
        run.stdout
    );
    assert_no_values(&run, &[value.clone(), "typed-by-hand".into()]);
    let fixed = env.run(&["drift", "--fix"]).ok();
    assert!(
        fixed
            .stdout
            .contains("fixed local: set SESSION_KEY (version 1)"),
        "{}",
        fixed.stdout
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# mine\nPORT=8080\nSESSION_KEY="),
        "{text}"
    );
    assert!(!text.contains("typed-by-hand"));
    env.run(&["drift"]).ok();

    // A file that no longer parses: exit 1, the line named, nothing printed of it.
    std::fs::write(&file, "PORT=8080\nSESSION_KEY=\"never-closed-secret\n").unwrap();
    let run = env
        .run(&["drift"])
        .code(1)
        .stderr_has("could not read target(s) local");
    assert!(
        row(&run, "SESSION_KEY").contains("line 2: a quoted value is not closed"),
        "{}",
        run.stdout
    );
    assert_no_values(&run, &["never-closed-secret".into()]);
    let fixed = env.run(&["drift", "--fix"]).code(1);
    assert!(
        !fixed.stdout.contains("fixed"),
        "nothing to fix without a reading"
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("never-closed-secret"),
        "left as it was"
    );
}

#[test]
fn drift_without_policies_says_where_they_were_looked_for() {
    let env = TestEnv::init();
    env.run(&["drift"])
        .code(2)
        .stderr_has("policy directory does not exist");
}

fn scrape(rt: &tokio::runtime::Runtime, url: &str) -> String {
    rt.block_on(async {
        match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

fn wait_metric(rt: &tokio::runtime::Runtime, url: &str, line: &str) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(rt, url);
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{url} never showed {line}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_exports_drift_per_target_and_variable_in_metrics() {
    let w = seeded();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = free_port();
    let mut serve = w
        .env
        .command(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tick",
            "1s",
            "--drift-every",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let line = |variable: &str, v: u8| {
        format!("secret_drift{{target=\"api\",variable=\"{variable}\"}} {v}")
    };
    wait_metric(&rt, &metrics, &line("OPENAI_API_KEY", 0));
    w.railway
        .set_variable(PROJECT, ENVIRONMENT, SERVICE, "OPENAI_API_KEY", PASTED)
        .unwrap();
    let text = wait_metric(&rt, &metrics, &line("OPENAI_API_KEY", 1));
    assert!(text.contains(&line("JWT_SECRET", 0)), "{text}");
    assert!(
        text.contains("secret_drift_check_failed{target=\"api\"} 0"),
        "{text}"
    );
    assert!(!text.contains(PASTED));
    // Fixed from the CLI while serve runs: the next check clears it.
    drift(&w, &["--fix"]).ok();
    wait_metric(&rt, &metrics, &line("OPENAI_API_KEY", 0));
    let checks = w
        .env
        .audit(&["--action", "drift.check", "--actor", "scheduler"]);
    assert!(
        !checks.is_empty(),
        "serve's checks are audited as the scheduler's"
    );
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert_eq!(serve.wait().unwrap().code(), Some(0));
}

#[test]
fn a_destroyed_current_version_is_never_pushed() {
    let env = dotenv_env();
    env.run(&["drift", "--fix"]).ok();
    env.set("SESSION_KEY", "second-value");
    env.run(&["destroy", "SESSION_KEY", "--version", "2"]).ok();
    let run = env.run(&["drift"]).code(8);
    assert!(
        row(&run, "SESSION_KEY")
            .contains("target behind: holds version 1, the vault's current is 2"),
        "{}",
        run.stdout
    );
    let before = std::fs::read(env.path("app.env")).unwrap();
    let fixed = env.run(&["drift", "--fix"]).code(8);
    assert!(
        fixed
            .stdout
            .contains("left SESSION_KEY at local as it is: the vault's version was destroyed"),
        "{}",
        fixed.stdout
    );
    assert_eq!(
        std::fs::read(env.path("app.env")).unwrap(),
        before,
        "nothing written"
    );
}

#[test]
fn a_fix_that_railway_refuses_or_whose_deploy_crashes_is_not_success() {
    let w = seeded();
    w.railway
        .set_variable(PROJECT, ENVIRONMENT, SERVICE, "OPENAI_API_KEY", PASTED)
        .unwrap();
    w.railway
        .faults()
        .inject("variableCollectionUpsert", Fault::status(400));
    let refused = drift(&w, &["--fix"]).code(8);
    assert!(
        refused
            .stdout
            .contains("could not fix api: railway: HTTP 400"),
        "{}",
        refused.stdout
    );
    assert_eq!(
        w.railway_vars()["OPENAI_API_KEY"],
        PASTED,
        "nothing changed"
    );
    let fixes = w.env.audit(&["--action", "drift.fix"]);
    assert_eq!(fixes.last().unwrap()["outcome"], "failed");

    // The variables land, the deploy carrying them crashes: exit 1, not 0.
    w.railway
        .set_next_deploy_outcome(SERVICE, DeployOutcome::Crashed);
    let crashed = drift(&w, &["--fix"])
        .code(1)
        .stderr_has("the fix did not complete at api");
    assert!(crashed.stdout.contains("CRASHED"), "{}", crashed.stdout);
    assert_eq!(
        w.railway_vars()["OPENAI_API_KEY"],
        w.current("OPENAI_API_KEY")
    );
    drift(&w, &[]).ok();
}
