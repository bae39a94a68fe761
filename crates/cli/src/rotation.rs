//! The rotation commands: `rotate`, `rotations`, `plan`, `policy check`. They load the
//! policies, open the vault, and hand both to the rotation engine; output is a table
//! on a terminal or JSON with `--json`. In remote mode `rotate NAME...` asks the
//! server's scheduler instead and prints the report it returns, through the same
//! printing; `rotations` reads through the backend.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{Context, RotateArgs, Table};
use secret_core::action::Action;
use secret_core::error::VaultError;
use secret_core::policy::{self, PolicySet};
use secret_core::render::{age, rfc3339};
use secret_rotation::{self, Due, Engine, EngineOptions, Request, RunState, Trigger};

/// Loads and validates the policies; problems are a usage error listing each one.
pub(crate) fn load_policies(dir: &Path) -> Result<PolicySet, VaultError> {
    match policy::load_dir(dir) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            Ok(set)
        }
        Err(report) => Err(VaultError::Usage(format!(
            "the policies in {} have problems (`secret policy check` lists them):\n{report}",
            dir.display()
        ))),
    }
}

/// Engine settings: defaults tuned by the environment, progress on a terminal.
pub(crate) fn engine_options(ctx: &Context, trigger: Trigger) -> EngineOptions {
    let mut options = EngineOptions {
        progress: std::io::stderr().is_terminal(),
        trigger,
        ..EngineOptions::default()
    };
    let tuning = &ctx.env.tuning;
    if let Some(poll) = tuning.poll_interval {
        options.poll_interval = poll;
    }
    if let Some(base) = tuning.retry_base {
        options.retry.base = base;
    }
    if let Some(timeout) = tuning.http_timeout {
        options.http_timeout = timeout;
    }
    options
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, VaultError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VaultError::Io(format!("cannot start the async runtime: {e}")))
}

pub(super) fn rotate(ctx: &Context, args: RotateArgs) -> Result<(), VaultError> {
    // A name that is not one is refused before anything looks it up (or sends it).
    for name in &args.names {
        secret_core::model::SecretName::new(name)?;
    }
    if let Some(client) = ctx.remote_client()? {
        if args.due {
            return Err(VaultError::Usage(
                "rotate --due is the server's own work in remote mode (its scheduler runs what \
                 is due at every tick): name the secrets to rotate now"
                    .into(),
            ));
        }
        if args.dry_run {
            return Err(VaultError::Usage(
                "rotate --dry-run reads the policies and the vault together, which only the \
                 server's host has: run it there (`secret plan` shows the same steps)"
                    .into(),
            ));
        }
        let report = client.rotate(&args.names)?;
        return print_report(ctx, &report, args.json);
    }
    let policies = load_policies(&ctx.policies_dir)?;
    let request = if args.due {
        Request::Due
    } else {
        Request::Names(args.names.clone())
    };
    let trigger = if args.due {
        Trigger::Due
    } else {
        Trigger::Manual
    };
    let vault = ctx.open()?;
    let mut engine = Engine::new(vault, policies.clone(), engine_options(ctx, trigger))?;
    if args.dry_run {
        return dry_run(ctx, &mut engine, &policies, &request, args.json);
    }
    let report = runtime()?.block_on(engine.run(request))?;
    print_report(ctx, &report, args.json)
}

/// What `secret rotate` prints for a pass, and the exit code it ends with.
fn print_report(
    ctx: &Context,
    report: &secret_rotation::RunReport,
    json_out: bool,
) -> Result<(), VaultError> {
    if json_out {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| VaultError::Io(e.to_string()))?
        );
    } else if !ctx.quiet || report.exit_code() != 0 {
        if report.outcomes.is_empty() {
            println!("nothing to rotate");
        }
        for o in &report.outcomes {
            let versions = match (o.old_version, o.new_version) {
                (Some(a), Some(b)) => format!(" (version {a} → {b})"),
                (None, Some(b)) => format!(" (version {b})"),
                _ => String::new(),
            };
            let id = o
                .rotation
                .as_deref()
                .map(|i| format!(" {i}"))
                .unwrap_or_default();
            println!(
                "{}{id}: {}{versions}",
                o.secret,
                o.result.to_string().replace('_', " ")
            );
            if let Some(e) = &o.error {
                println!("  {e}");
            }
        }
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(VaultError::Rotation {
            code,
            summary: summary(report),
        }),
    }
}

fn summary(report: &secret_rotation::RunReport) -> String {
    let failed: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| !o.result.is_success())
        .map(|o| format!("{} {}", o.secret, o.result.to_string().replace('_', " ")))
        .collect();
    format!(
        "rotation did not complete: {}; `secret rotations` shows the steps",
        failed.join(", ")
    )
}

fn dry_run(
    ctx: &Context,
    engine: &mut Engine,
    policies: &PolicySet,
    request: &Request,
    json_out: bool,
) -> Result<(), VaultError> {
    let now = ctx.clock.now_ms();
    let open = engine.vault().open_rotations()?;
    let mut items = Vec::new();
    let names: Vec<String> = match request {
        Request::Names(n) => n.clone(),
        Request::Due => policies.secrets.keys().cloned().collect(),
    };
    for name in names {
        let Some(policy) = policies.secrets.get(&name) else {
            return Err(VaultError::NotFound(format!(
                "no policy for {name} in {}",
                ctx.policies_dir.display()
            )));
        };
        if matches!(request, Request::Names(_)) && policy.generator == policy::Generator::Manual {
            return Err(VaultError::Usage(format!(
                "{name} is a manual secret: it is not rotated here"
            )));
        }
        let due = engine.due(policy)?;
        let resuming = open
            .iter()
            .find(|r| r.secret == name && r.state != RunState::Grace);
        let revoking = open.iter().find(|r| {
            r.secret == name
                && r.state == RunState::Grace
                && r.revoke_after_ms.is_some_and(|t| t <= now)
        });
        let selected = match request {
            Request::Names(_) => true,
            Request::Due => due.is_due(now) || resuming.is_some() || revoking.is_some(),
        };
        if !selected {
            continue;
        }
        let has_current = engine
            .vault()
            .secret_state(&name)?
            .is_some_and(|s| s.current_version.is_some());
        let mut steps = Vec::new();
        if let Some(r) = revoking {
            steps.push(format!(
                "finish rotation {}: revoke version {} now (grace ended)",
                r.id,
                r.old_version.unwrap_or(0)
            ));
        }
        if let Some(r) = resuming {
            steps.push(format!(
                "resume rotation {} from its {} step",
                r.id, r.state
            ));
        }
        if resuming.is_none() && (matches!(request, Request::Names(_)) || due.is_due(now)) {
            steps.extend(secret_rotation::describe(policy, policies, has_current));
        }
        items.push(json!({ "secret": name, "generator": policy.generator.name(), "steps": steps }));
    }
    engine.vault().record(
        Action::RotateDryRun,
        None,
        json!({ "secrets": items.iter().map(|i| i["secret"].clone()).collect::<Vec<_>>() }),
    )?;
    if json_out {
        println!("{}", serde_json::Value::Array(items));
        return Ok(());
    }
    if items.is_empty() {
        println!("nothing is due");
    }
    for item in &items {
        println!(
            "{} ({}), would:",
            item["secret"].as_str().unwrap_or(""),
            item["generator"].as_str().unwrap_or("")
        );
        for step in item["steps"].as_array().into_iter().flatten() {
            println!("  - {}", step.as_str().unwrap_or(""));
        }
    }
    println!("(dry run: nothing was contacted or changed)");
    Ok(())
}

pub(super) fn rotations(
    ctx: &Context,
    name: Option<String>,
    json_out: bool,
    limit: u64,
) -> Result<(), VaultError> {
    if let Some(name) = &name {
        secret_core::model::SecretName::new(name)?;
    }
    let runs = ctx.backend()?.rotations(name.as_deref(), limit, json_out)?;
    if json_out {
        let out: Vec<_> = runs
            .into_iter()
            .map(|(r, steps)| secret_core::render::rotation_body(r, steps))
            .collect();
        println!(
            "{}",
            serde_json::to_string(&out).map_err(|e| VaultError::Io(e.to_string()))?
        );
        return Ok(());
    }
    let now = ctx.clock.now_ms();
    let mut table = Table::new(&[
        "ID", "SECRET", "STARTED", "STATE", "OUTCOME", "VERSIONS", "NOTE",
    ]);
    for (r, _) in &runs {
        let note = match (&r.error, r.state, r.revoke_after_ms) {
            (Some(e), _, _) => e.chars().take(100).collect(),
            (None, RunState::Grace, Some(t)) => {
                format!("revokes the old version at {}", rfc3339(t, false))
            }
            _ => String::new(),
        };
        table.row(vec![
            r.id.clone(),
            r.secret.clone(),
            age(now, r.started_at_ms),
            r.state.to_string(),
            r.outcome
                .map_or_else(|| "running".to_string(), |o| o.to_string()),
            match (r.old_version, r.new_version) {
                (Some(a), Some(b)) => format!("{a} → {b}"),
                (None, Some(b)) => format!("→ {b}"),
                (Some(a), None) => format!("{a} → ?"),
                (None, None) => "-".into(),
            },
            note,
        ]);
    }
    table.print(false);
    Ok(())
}

pub(super) fn plan(ctx: &Context, json_out: bool) -> Result<(), VaultError> {
    ctx.local_only()?;
    let policies = load_policies(&ctx.policies_dir)?;
    let vault = ctx.open()?;
    let mut engine = Engine::new(
        vault,
        policies.clone(),
        engine_options(ctx, Trigger::Manual),
    )?;
    let now = ctx.clock.now_ms();
    let open = engine.vault().open_rotations()?;
    let mut rows = Vec::new();
    for (name, policy) in &policies.secrets {
        let due = engine.due(policy)?;
        let has_current = engine
            .vault()
            .secret_state(name)?
            .is_some_and(|s| s.current_version.is_some());
        let overdue = due.is_overdue(now);
        let when = match &due {
            Due::Now => "now".to_string(),
            Due::At(t) if overdue => format!("OVERDUE since {}", rfc3339(*t, false)),
            Due::At(t) if *t <= now => format!("now (due {})", rfc3339(*t, false)),
            Due::At(t) => rfc3339(*t, false),
            Due::Manual {
                overdue_at: Some(t),
            } if overdue => {
                format!("OVERDUE since {} (manual)", rfc3339(*t, false))
            }
            Due::Manual {
                overdue_at: Some(t),
            } => format!("manual; overdue at {}", rfc3339(*t, false)),
            Due::Manual { overdue_at: None } => "manual; no value yet".to_string(),
        };
        let pending: Vec<String> = open
            .iter()
            .filter(|r| &r.secret == name)
            .map(|r| match (r.state.as_str(), r.revoke_after_ms) {
                ("grace", Some(t)) => format!(
                    "rotation {} revokes version {} at {}",
                    r.id,
                    r.old_version.unwrap_or(0),
                    rfc3339(t, false)
                ),
                (state, _) => format!(
                    "rotation {} interrupted at {state}: `secret rotate --due` resumes it",
                    r.id
                ),
            })
            .collect();
        let provider = secret_rotation::providers::build(&policy.generator);
        rows.push(json!({
            "secret": name,
            "generator": policy.generator.name(),
            "schedule": policy.schedule.as_ref().map(|s| s.describe()),
            "next": when,
            "overdue": overdue,
            "push": policy.push,
            "open": pending,
            "caution": provider.and_then(|p| p.caution()),
            "steps": if policy.schedule.is_some() { secret_rotation::describe(policy, &policies, has_current) } else { Vec::new() },
        }));
    }
    engine
        .vault()
        .record(Action::Plan, None, json!({ "secrets": rows.len() }))?;
    if json_out {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    let mut table = Table::new(&["SECRET", "GENERATOR", "SCHEDULE", "NEXT", "PUSH"]);
    for r in &rows {
        table.row(vec![
            r["secret"].as_str().unwrap_or("").into(),
            r["generator"].as_str().unwrap_or("").into(),
            r["schedule"].as_str().unwrap_or("-").into(),
            r["next"].as_str().unwrap_or("").into(),
            r["push"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ]);
    }
    table.print(false);
    for r in &rows {
        let steps = r["steps"].as_array().cloned().unwrap_or_default();
        let open = r["open"].as_array().cloned().unwrap_or_default();
        if steps.is_empty() && open.is_empty() && r["caution"].is_null() {
            continue;
        }
        println!("\n{}:", r["secret"].as_str().unwrap_or(""));
        for line in open.iter().chain(steps.iter()) {
            println!("  - {}", line.as_str().unwrap_or(""));
        }
        if let Some(c) = r["caution"].as_str() {
            println!("  ! {c}");
        }
    }
    Ok(())
}

pub(super) fn policy_check(ctx: &Context, dir: Option<PathBuf>) -> Result<(), VaultError> {
    let dir = dir.unwrap_or_else(|| ctx.policies_dir.clone());
    let (set, mut report) = match policy::load_dir(&dir) {
        Ok(set) => {
            let report = policy::PolicyReport {
                errors: Vec::new(),
                warnings: set.warnings.clone(),
            };
            (Some(set), report)
        }
        Err(report) => (None, report),
    };
    // Credentials must exist in the vault, when there is a vault to ask.
    let mut checked_vault = false;
    if let Some(set) = &set {
        let opened = match ctx.vault_may_exist().then(|| ctx.open()) {
            // An empty database holds no vault yet, as a missing file does not.
            Some(Err(VaultError::NoVault(_))) | None => None,
            Some(other) => Some(other?),
        };
        if let Some(mut vault) = opened {
            checked_vault = true;
            for r in set.credential_refs() {
                let defined = set.secrets.contains_key(&r.secret);
                let stored = vault
                    .secret_state(&r.secret)?
                    .is_some_and(|s| s.current_version.is_some() && s.deleted_at_ms.is_none());
                if !stored {
                    let problem = r.problem(format!(
                        "{} is not in the vault{}: `secret set {}`",
                        r.secret,
                        if defined {
                            " yet (its policy exists)"
                        } else {
                            ""
                        },
                        r.secret
                    ));
                    report.errors.push(problem);
                }
            }
            vault.record(
                Action::PolicyCheck,
                None,
                json!({ "errors": report.errors.len(), "warnings": report.warnings.len() }),
            )?;
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if !report.errors.is_empty() {
        return Err(VaultError::Usage(format!(
            "{} problem(s) in {}",
            report.errors.len(),
            dir.display()
        )));
    }
    let set = set.unwrap_or_default();
    ctx.say(format!(
        "{}: {} secrets, {} targets, no problems{}",
        dir.display(),
        set.secrets.len(),
        set.targets.len(),
        if checked_vault {
            "; credentials present in the vault"
        } else {
            " (no vault to check credentials against)"
        }
    ))
}
