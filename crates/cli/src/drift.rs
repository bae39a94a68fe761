//! `secret drift [--json] [--fix]`: whether every target holds what the vault says it
//! should, compared by keyed fingerprint (never by value, and no value is printed).
//! Exit 0 when all match, 8 when any variable differs, is missing or is set where it
//! should not be, 1 when a target could not be read. `--fix` pushes the vault's values
//! where they drifted (one upsert and one deploy per service), then checks again; the
//! exit code is that of the second check, or 1 if it found nothing but a fix failed
//! (a deploy that crashed carries the right variables, yet nothing runs them).
//!
//! The comparison itself is `secret_rotation::drift`; this file only renders it.

use serde::Serialize;

use crate::rotation::{engine_options, load_policies, runtime};
use crate::{Context, DriftArgs, Table};
use secret_core::error::{exit, VaultError};
use secret_rotation::drift::{Drift, Fix, Report, State};
use secret_rotation::Trigger;

pub(crate) fn drift(ctx: &Context, args: DriftArgs) -> Result<(), VaultError> {
    let policies = load_policies(&ctx.policies_dir)?;
    let drift = Drift::new(policies, &engine_options(ctx, Trigger::Manual))?;
    let mut vault = ctx.open()?;
    let rt = runtime()?;
    let found = rt.block_on(drift.check(&mut vault))?;
    if !args.fix || found.drifted().next().is_none() {
        if args.json {
            print_json(&found)?;
        } else {
            table(ctx, &found);
        }
        return outcome(&found);
    }
    let fixes = rt.block_on(drift.fix(&mut vault, &found))?;
    let after = rt.block_on(drift.check(&mut vault))?;
    if args.json {
        print_json(&FixOutput {
            found: &found,
            fixed: &fixes,
            after: &after,
        })?;
    } else {
        table(ctx, &found);
        println!();
        for fix in &fixes {
            for line in fix_lines(fix) {
                println!("{line}");
            }
        }
        println!();
        println!("after the fix:");
        table(ctx, &after);
    }
    let failed: Vec<String> = fixes
        .iter()
        .filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.target)))
        .collect();
    match outcome(&after) {
        // The variables may match now while the deploy that carries them failed.
        Ok(()) if !failed.is_empty() => Err(VaultError::Io(format!(
            "the fix did not complete at {}",
            failed.join("; ")
        ))),
        other => other,
    }
}

/// `--fix --json`: both checks and what was done between them.
#[derive(Serialize)]
struct FixOutput<'a> {
    found: &'a Report,
    fixed: &'a [Fix],
    after: &'a Report,
}

fn print_json(value: &impl Serialize) -> Result<(), VaultError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| VaultError::Io(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// TARGET, VARIABLE, STATE, NOTE; with `-q` only what is not `ok`.
fn table(ctx: &Context, report: &Report) {
    let rows: Vec<_> = report
        .findings
        .iter()
        .filter(|f| !ctx.quiet || f.state != State::Ok)
        .collect();
    if report.findings.is_empty() {
        if !ctx.quiet {
            println!("no secret is pushed to a target: nothing to compare");
        }
        return;
    }
    if rows.is_empty() {
        return;
    }
    let mut t = Table::new(&["TARGET", "VARIABLE", "STATE", "NOTE"]);
    for f in rows {
        t.row(vec![
            f.target.clone(),
            f.variable.clone(),
            f.state.to_string(),
            f.note.clone(),
        ]);
    }
    t.print(false);
}

/// What a fix did at one target, in words.
fn fix_lines(fix: &Fix) -> Vec<String> {
    let mut lines = Vec::new();
    let mut done: Vec<String> = fix
        .set
        .iter()
        .map(|(name, version)| format!("set {name} (version {version})"))
        .collect();
    done.extend(fix.removed.iter().map(|name| format!("removed {name}")));
    if !done.is_empty() {
        let deployment = fix
            .deployment
            .as_deref()
            .map(|d| format!("; deployment {d}"))
            .unwrap_or_default();
        lines.push(format!(
            "fixed {}: {}{deployment}",
            fix.target,
            done.join(", ")
        ));
    }
    if let Some(e) = &fix.error {
        lines.push(format!("could not fix {}: {e}", fix.target));
    }
    for (name, why) in &fix.skipped {
        lines.push(format!("left {name} at {} as it is: {why}", fix.target));
    }
    lines
}

fn outcome(report: &Report) -> Result<(), VaultError> {
    match report.exit_code() {
        exit::OK => Ok(()),
        exit::DRIFT => Err(VaultError::Drift(report.summary())),
        _ => Err(VaultError::Io(report.summary())),
    }
}
