//! `import`, `export`, `run`, `completions` and `man` as a user meets them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::util::{contains, have, read_or_empty, TestEnv};

/// Values that trip parsers up: quotes of every kind, `$` and `${}`, `#`, `=`,
/// backslashes, spaces at either end, unicode, line breaks, tabs.
const NASTY: &[&str] = &[
    "plain-value-1",
    "with spaces inside",
    "  spaces at both ends  ",
    "it's a single quote",
    "say \"double\" quotes",
    "both ' and \" quotes",
    "a # not a comment",
    "#starts-with-hash",
    "k=v=w",
    "$HOME and $PATH",
    "${HOME} braces",
    "${UNCLOSED",
    "back\\slash",
    "two\\\\backslashes",
    "ends with backslash\\",
    "\\n is not a newline",
    "line one\nline two",
    "windows\r\nline",
    "tab\there",
    "ünïcödé ✓ 🚀 日本語",
    "`backticks` and $(subshell)",
    "'fully single quoted'",
    "\"fully double quoted\"",
    "trailing newline\n",
    "=",
    "\"",
    "'",
    "\\",
    "\\x5c literal",
    "it's \\x5c and \"q\"",
];

fn name(i: usize) -> String {
    format!("NASTY_{i:02}")
}

fn nasty_vault() -> TestEnv {
    let env = TestEnv::init();
    for (i, v) in NASTY.iter().enumerate() {
        env.run_with(&["set", &name(i), "--raw"], v.as_bytes()).ok();
    }
    env
}

#[test]
fn every_nasty_value_round_trips_through_export_and_import_byte_for_byte() {
    let env = nasty_vault();
    for format in ["dotenv", "json"] {
        let file = env.path(&format!("out.{format}"));
        env.run(&[
            "export",
            "--format",
            format,
            "--output",
            file.to_str().unwrap(),
        ])
        .ok();
        let other = TestEnv::init();
        let run = other.run(&["import", file.to_str().unwrap(), "--format", format]);
        assert_eq!(run.code, 0, "{run:#?}");
        for (i, v) in NASTY.iter().enumerate() {
            let got = other.run(&["get", &name(i)]).ok().raw_stdout;
            assert_eq!(got, v.as_bytes(), "{format}: {}", name(i));
        }
    }
}

/// Reads `file` with python-dotenv (`dotenv_values`, default interpolation) as JSON.
fn python_dotenv(file: &std::path::Path) -> Option<serde_json::Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom dotenv import dotenv_values\nprint(json.dumps(dotenv_values(sys.argv[1])))",
        ])
        .arg(file)
        .env_remove("HOME")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Reads `file` with the npm `dotenv` package (`dotenv.parse`) as JSON.
fn npm_dotenv(file: &std::path::Path) -> Option<serde_json::Value> {
    let out = Command::new("node")
        .args([
            "-e",
            "const fs = require('fs'); const d = require('dotenv'); process.stdout.write(JSON.stringify(d.parse(fs.readFileSync(process.argv[1]))))",
        ])
        .arg(file)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn the_dotenv_export_reads_back_exactly_in_python_dotenv_and_npm_dotenv_or_says_which_not() {
    let env = nasty_vault();
    let file = env.path("out.env");
    let run = env
        .run(&["export", "--output", file.to_str().unwrap()])
        .ok();
    let warned: Vec<String> = (0..NASTY.len())
        .map(name)
        .filter(|n| run.stderr.contains(&format!("warning: {n}:")))
        .collect();
    // Values no common quoting carries are named; the rest are not.
    for must_warn in [
        "both ' and \" quotes",
        "${HOME} braces",
        "two\\\\backslashes",
    ] {
        let i = NASTY.iter().position(|v| *v == must_warn).unwrap();
        assert!(
            warned.contains(&name(i)),
            "{must_warn:?} not warned: {}",
            run.stderr
        );
    }
    assert!(
        warned.len() < NASTY.len() / 3,
        "too few portable: {warned:?}"
    );
    let mut checked = 0;
    for (reader, parsed) in [
        ("python-dotenv", python_dotenv(&file)),
        ("npm dotenv", npm_dotenv(&file)),
    ] {
        let Some(parsed) = parsed else {
            eprintln!(
                "skipping the {reader} check: not installed (.ci/run installs it: pip install \
                 python-dotenv; npm install dotenv with NODE_PATH set)"
            );
            continue;
        };
        checked += 1;
        for (i, v) in NASTY.iter().enumerate() {
            if warned.contains(&name(i)) {
                continue;
            }
            assert_eq!(
                parsed[name(i)].as_str(),
                Some(*v),
                "{reader} misreads {} ({v:?})",
                name(i)
            );
        }
    }
    if std::env::var_os("SECRET_TEST_REQUIRE_DOTENV_PEERS").is_some() {
        assert_eq!(checked, 2, "CI must check both peer parsers");
    }
}

#[test]
fn shell_export_is_safe_to_eval_in_bash_and_sh() {
    let env = nasty_vault();
    let script = env
        .run(&["export", "--format", "shell", "--force"])
        .ok()
        .stdout;
    for shell in ["sh", "bash"] {
        if !have(shell) {
            eprintln!("skipping {shell}: not installed");
            continue;
        }
        for (i, v) in NASTY.iter().enumerate() {
            let out = Command::new(shell)
                .arg("-c")
                .arg(format!("{script}\nprintf %s \"${}\"", name(i)))
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}");
            assert_eq!(out.stdout, v.as_bytes(), "{shell} {}", name(i));
        }
    }
}

#[test]
fn an_import_with_one_bad_line_imports_nothing_and_says_which_line() {
    let env = TestEnv::init();
    let file = env.path("bad.env");
    std::fs::write(
        &file,
        "A=first-value\nB='second-value'\nC='never-closed-sentinel\n",
    )
    .unwrap();
    let run = env.run(&["import", file.to_str().unwrap()]).code(2);
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    assert!(run.stderr.contains("never closed"), "{}", run.stderr);
    assert!(!run.stderr.contains("sentinel") && !run.stderr.contains("first-value"));
    assert!(env.run(&["list", "--json"]).ok().stdout.contains("[]"));
    let audit = env.audit(&["--action", "set"]);
    assert!(audit.is_empty(), "nothing was set: {audit:?}");
    assert!(
        env.audit(&["--action", "import"]).is_empty(),
        "refused before the vault opened"
    );
    assert!(!contains(&read_or_empty(&env.vault), b"first-value"));
}

#[test]
fn existing_names_are_a_conflict_unless_overwrite_and_each_import_is_an_audited_set() {
    let env = TestEnv::init();
    env.set("B", "old-b");
    let file = env.path("in.env");
    std::fs::write(&file, "A=new-a\nB=new-b\nC=new-c\n").unwrap();
    let run = env.run(&["import", file.to_str().unwrap()]).code(4);
    assert!(
        run.stderr.contains("already in the vault: B"),
        "{}",
        run.stderr
    );
    assert_eq!(env.get("B"), "old-b");
    assert!(env.run(&["get", "A"]).code == 3, "nothing imported");

    let run = env
        .run(&["import", file.to_str().unwrap(), "--dry-run", "--overwrite"])
        .ok();
    assert!(run.stdout.contains("would add A"), "{}", run.stdout);
    assert!(run.stdout.contains("would replace B"), "{}", run.stdout);
    assert!(env.run(&["get", "A"]).code == 3, "a dry run writes nothing");

    let run = env
        .run(&["import", file.to_str().unwrap(), "--overwrite"])
        .ok();
    assert!(
        run.stdout
            .contains("imported 3 secrets (2 new, 1 replaced)"),
        "{}",
        run.stdout
    );
    assert_eq!(env.get("B"), "new-b");
    let sets: Vec<_> = env
        .audit(&["--action", "set"])
        .into_iter()
        .filter(|e| e["details"]["via"] == "import")
        .collect();
    assert_eq!(sets.len(), 3, "{sets:?}");
    assert!(sets.iter().all(|e| e["outcome"] == "ok"));
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn import_reads_stdin_and_json_and_refuses_broken_json_without_echoing_values() {
    let env = TestEnv::init();
    env.run_with(&["import", "-"], b"export FROM_STDIN='x y'\n")
        .ok();
    assert_eq!(env.get("FROM_STDIN"), "x y");
    env.run_with(
        &["import", "-", "--format", "json"],
        br#"{"J1": "json-value", "J2": "two\nlines"}"#,
    )
    .ok();
    assert_eq!(env.get("J2"), "two\nlines");
    for bad in [
        r#"{"J3": "sentinel-secret""#,
        r#"{"J3": 42}"#,
        r#"["sentinel-secret"]"#,
        r#"{"bad name": "sentinel-secret"}"#,
    ] {
        let run = env
            .run_with(&["import", "-", "--format", "json"], bad.as_bytes())
            .code(2);
        assert!(!run.stderr.contains("sentinel"), "{}", run.stderr);
    }
    assert!(env.run(&["get", "J3"]).code == 3);
}

#[test]
fn export_writes_a_private_file_atomically_and_never_follows_a_planted_link() {
    let env = TestEnv::init();
    env.set("A", "value-a");
    let victim = env.path("victim.txt");
    std::fs::write(&victim, "do not touch").unwrap();
    let out = env.path("export.env");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    env.run(&["export", "--output", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced, not followed"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "A='value-a'\n");
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".secret-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn export_to_a_terminal_asks_for_force_and_reads_are_audited_one_per_secret() {
    let env = TestEnv::init();
    env.set("A", "value-a");
    env.set("B", "value-b");
    if have("script") {
        // `script` gives the command a terminal for stdout.
        let out = Command::new("script")
            .args(["-qec"])
            .arg(format!("{} export", crate::util::BIN))
            .arg("/dev/null")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SECRET_VAULT", &env.vault)
            .env("SECRET_IDENTITY_FILE", &env.identity)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--force"), "{text}");
        assert!(!text.contains("value-a"), "{text}");
        assert_eq!(out.status.code(), Some(2));
    } else {
        eprintln!("skipping the terminal check: `script` (util-linux) is not installed");
    }
    let run = env.run(&["export", "--only", "B"]).ok();
    assert_eq!(run.stdout, "B='value-b'\n");
    let reads = env.audit(&["--action", "get"]);
    let exported: Vec<_> = reads
        .iter()
        .filter(|e| e["details"]["purpose"] == "export")
        .collect();
    assert_eq!(exported.len(), 1, "{reads:?}");
    assert_eq!(exported[0]["secret"], "B");
    env.run(&["export", "--only", "B,NOPE"]).code(3);
}

#[test]
fn run_passes_values_and_the_exit_code_and_refuses_to_shadow() {
    let env = TestEnv::init();
    env.set("API_KEY", "sk-run-value");
    env.set("OTHER", "other-value");
    let run = env.run(&["run", "--", "sh", "-c", "printf %s \"$API_KEY\"; exit 7"]);
    assert_eq!(run.code, 7, "{run:#?}");
    assert_eq!(run.stdout, "sk-run-value");
    let reads: Vec<_> = env
        .audit(&["--action", "get"])
        .into_iter()
        .filter(|e| e["details"]["purpose"] == "run")
        .collect();
    assert_eq!(reads.len(), 2, "audited before the exec");

    // A name the environment has already: refused, naming it; nothing runs.
    let marker = env.path("ran");
    let mut cmd = env.command(&["run", "--", "touch", marker.to_str().unwrap()]);
    let out = cmd.env("API_KEY", "from-the-shell").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has API_KEY"));
    assert!(!marker.exists());
    let mut cmd = env.command(&[
        "run",
        "--override",
        "--",
        "sh",
        "-c",
        "printf %s \"$API_KEY\"",
    ]);
    let out = cmd.env("API_KEY", "from-the-shell").output().unwrap();
    assert_eq!(out.stdout, b"sk-run-value");

    let run = env
        .run(&[
            "run",
            "--only",
            "OTHER",
            "--prefix",
            "APP_",
            "--",
            "sh",
            "-c",
            "printf %s \"$APP_OTHER:${API_KEY:-unset}\"",
        ])
        .ok();
    assert_eq!(run.stdout, "other-value:unset");
    let run = env.run(&["run", "--", "no-such-command-here"]);
    assert_eq!(run.code, 127);
    assert!(run.stderr.contains("cannot run no-such-command-here"));
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_definitions() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]).ok().stdout;
        assert!(out.contains("import") && out.contains("rotate"), "{shell}");
    }
    let man = env.run(&["man"]).ok().stdout;
    assert!(
        man.starts_with(".ie") || man.contains(".TH secret 1"),
        "{man}"
    );
    assert!(man.contains("export"));
}
