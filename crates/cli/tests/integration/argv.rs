//! A value typed into argv by mistake is never repeated: not by clap's parse errors,
//! not by the commands that take names. Every subcommand is walked from the clap
//! definition itself, so a new one is covered without touching this file.

use std::any::TypeId;
use std::path::PathBuf;

use clap::CommandFactory;

use crate::util::TestEnv;

const SENTINEL: &str = "sk-live-ArgvSentinel7f3a";

/// Every subcommand path (`["audit", "verify"]`, ...) with its clap command.
fn subcommands() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            out.push((p.clone(), sub.clone()));
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(&secret_cli::Cli::command(), Vec::new(), &mut out);
    out
}

/// A valid value for an argument, so that only the sentinel is wrong.
fn valid_value(arg: &clap::Arg) -> String {
    if let Some(v) = arg.get_possible_values().first() {
        return v.get_name().to_string();
    }
    match arg.get_id().as_str() {
        "version" | "if_version" | "length" | "limit" => "1".into(),
        "tick" | "shutdown_grace" | "ttl" => "1s".into(),
        "scopes" => "admin".into(),
        _ => "A".into(),
    }
}

/// The command line of a subcommand with every required argument filled in.
fn base(path: &[String], cmd: &clap::Command) -> Vec<String> {
    let mut args: Vec<String> = path.to_vec();
    for arg in cmd.get_arguments() {
        if !arg.is_required_set() || arg.is_global_set() {
            continue;
        }
        if arg.is_positional() {
            args.push(valid_value(arg));
        } else if let Some(long) = arg.get_long() {
            args.push(format!("--{long}"));
            args.push(valid_value(arg));
        }
    }
    // `rotate` needs names or --due (an argument group).
    if path == ["rotate"] {
        args.push("A".into());
    }
    args
}

/// Whether an option's value is parsed into something other than free text.
fn typed(arg: &clap::Arg) -> bool {
    let id = arg.get_value_parser().type_id();
    arg.get_action().takes_values()
        && id != TypeId::of::<String>()
        && id != TypeId::of::<PathBuf>()
        && id != TypeId::of::<std::ffi::OsString>()
}

#[track_caller]
fn not_echoed(env: &TestEnv, args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = env.run(&refs);
    assert!(
        !run.stderr.contains("ArgvSentinel") && !run.stdout.contains("ArgvSentinel"),
        "{args:?} repeated the argument:\n{run:#?}"
    );
    assert_eq!(run.code, 2, "{args:?}:\n{run:#?}");
}

#[test]
fn no_parse_error_of_any_subcommand_repeats_the_argument() {
    let env = TestEnv::init();
    env.set("A", "a");
    let mut checked = 0;
    for (path, cmd) in subcommands() {
        // `run`'s words after its options are the command to run, whatever they are:
        // checked on its own below.
        if cmd.get_arguments().any(|a| a.is_trailing_var_arg_set()) {
            continue;
        }
        let base = base(&path, &cmd);
        // An optional path (`policy check [DIR]`) takes the extra word as a path, and
        // saying which path could not be read is right; every other extra word is
        // refused, names included (they are validated before anything repeats them).
        let free_path = cmd.get_arguments().any(|a| {
            a.is_positional()
                && !a.is_required_set()
                && a.get_value_parser().type_id() == TypeId::of::<PathBuf>()
        });
        let mut variants: Vec<Vec<String>> = Vec::new();
        if !free_path {
            // An extra word, as in `secret set API_KEY sk-live-...`, and after `--`.
            variants.push([base.clone(), vec![SENTINEL.into()]].concat());
            variants.push([base.clone(), vec!["--".into(), SENTINEL.into()]].concat());
        }
        variants.extend([
            // As an option's name, with and without a value.
            [base.clone(), vec![format!("--{SENTINEL}")]].concat(),
            [base.clone(), vec![format!("--{SENTINEL}=x")]].concat(),
            [base.clone(), vec![format!("-{SENTINEL}")]].concat(),
        ]);
        // As the value of every option whose value is parsed (a number, a duration, a
        // choice, a head): the parser refuses it.
        for arg in cmd
            .get_arguments()
            .filter(|a| typed(a) && !a.is_positional())
        {
            let long = arg.get_long().unwrap();
            variants.push([base.clone(), vec![format!("--{long}"), SENTINEL.into()]].concat());
            variants.push([base.clone(), vec![format!("--{long}={SENTINEL}")]].concat());
        }
        for args in variants {
            not_echoed(&env, &args);
            checked += 1;
        }
    }
    // `run`: a value given where a name goes (`--only`) is refused without repeating it.
    for args in [
        vec!["run", "--only", SENTINEL, "--", "true"],
        vec!["run", "--only", &format!("A,{SENTINEL}"), "--", "true"],
        vec!["run", &format!("--{SENTINEL}"), "--", "true"],
    ] {
        not_echoed(
            &env,
            &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        checked += 1;
    }
    // As the subcommand itself, and in front of one.
    not_echoed(&env, &[SENTINEL.to_string()]);
    not_echoed(&env, &["--quiet".into(), SENTINEL.into(), "get".into()]);
    checked += 2;
    eprintln!("argv walk: {checked} command lines, none repeated the argument");
    assert!(checked > 100, "only {checked} command lines were checked");
}

#[test]
fn set_with_a_value_in_argv_says_to_use_stdin_and_writes_nothing() {
    let env = TestEnv::init();
    env.set("API_KEY", "old");
    let before = env.dump(&["secrets", "versions"]);
    let run = env
        .run(&["set", "API_KEY", SENTINEL])
        .code(2)
        .stderr_has("not repeated here")
        .stderr_has("printf %s \"$VALUE\" | secret set NAME");
    assert!(!run.stderr.contains(SENTINEL));
    env.run(&["set", "API_KEY", "--", SENTINEL]).code(2);
    assert_eq!(env.dump(&["secrets", "versions"]), before);
    assert!(!env.sql("SELECT * FROM audit_log").contains("ArgvSentinel"));
}

#[test]
fn names_that_are_not_names_are_refused_without_being_repeated_or_recorded() {
    let env = TestEnv::init();
    env.set("A", "a");
    for args in [
        vec!["get", SENTINEL],
        vec!["history", SENTINEL],
        vec!["delete", SENTINEL],
        vec!["rotate", SENTINEL],
        vec!["rotate", "A", SENTINEL, "--dry-run"],
        vec!["rotations", SENTINEL],
        vec!["audit", "--secret", SENTINEL],
        vec!["token", "revoke", SENTINEL],
    ] {
        let run = env.run(&args).code(2);
        assert!(
            !run.stderr.contains("ArgvSentinel") && !run.stdout.contains("ArgvSentinel"),
            "{args:?}: {run:#?}"
        );
    }
    assert!(!env.sql("SELECT * FROM audit_log").contains("ArgvSentinel"));
}

#[test]
fn an_overflowing_version_says_what_is_allowed() {
    let env = TestEnv::init();
    env.set("A", "a");
    for n in [
        "99999999999999999999",
        "18446744073709551615",
        "9223372036854775808",
        "0",
        "-1",
    ] {
        let flag = format!("--version={n}");
        env.run(&["get", "A", &flag])
            .code(2)
            .stderr_has("a version number from 1 to 9223372036854775807");
        env.run(&["destroy", "A", &flag])
            .code(2)
            .stderr_has("from 1 to 9223372036854775807");
    }
    env.run_with(&["set", "A", "--if-version", "9223372036854775808"], b"x")
        .code(2)
        .stderr_has("from 0 (create only) to 9223372036854775807");
    // The largest allowed one is a normal "not found".
    env.run(&["get", "A", "--version", "9223372036854775807"])
        .code(3)
        .stderr_has("no version 9223372036854775807");
}

#[test]
fn help_and_version_still_print_on_stdout_with_exit_0() {
    let env = TestEnv::new();
    let run = env.run(&["--help"]).ok();
    assert!(run.stdout.contains("Usage: secret"));
    let run = env.run(&["set", "--help"]).ok();
    assert!(run.stdout.contains("never from argv"));
    let run = env.run(&["--version"]).ok();
    assert!(run.stdout.starts_with("secret "));
    env.run(&["get"]).code(2).stderr_has("<NAME>");
}
