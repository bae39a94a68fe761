//! What only a PostgreSQL vault has: the URL in `SECRET_VAULT`, its errors, and several
//! writers (processes and threads) appending to one vault at once. The tests shared
//! with SQLite run on both through `on_both_stores!` in their own files.

use std::sync::{Arc, Barrier};

use secret_core::model::{Label, SecretValue, VersionSelector};
use secret_core::vault::SetOptions;

use crate::util::{on_postgres, open_at, TestEnv};

/// A URL is never taken for a path: a malformed one is exit 2 and an unreachable
/// server exit 1, and neither leaves a `postgres:` folder, a vault or an identity.
#[test]
fn a_postgres_url_is_never_a_folder_and_its_errors_are_clear() {
    let env = TestEnv::new();
    let cases = [
        (
            "postgres://postgres:hunter2@127.0.0.1:notaport/test",
            2,
            "not a usable PostgreSQL URL",
        ),
        (
            "postgresql://postgres@127.0.0.1:1/test",
            1,
            "cannot connect to the vault at postgresql://postgres@127.0.0.1:1/test",
        ),
        (
            "postgres:hunter2@127.0.0.1/test",
            2,
            "must start with postgres://",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/test?sslmode=sometimes",
            2,
            "sslmode=sometimes",
        ),
    ];
    for (url, code, says) in cases {
        for args in [&["--vault", url, "init"][..], &["--vault", url, "list"][..]] {
            let run = env.run(args).code(code).stderr_has(says);
            assert!(!run.stderr.contains("hunter2"), "{run:#?}");
        }
        let mut by_env = TestEnv::new();
        by_env.env.push(("SECRET_VAULT".into(), url.into()));
        by_env.run(&["init"]).code(code).stderr_has(says);
        for dir in [env.dir.path(), by_env.dir.path()] {
            let names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| !n.starts_with("postgres")),
                "{url}: {names:?}"
            );
            assert!(!dir.join("config/secret/identity.txt").exists(), "{url}");
            assert!(!dir.join("data").exists(), "{url}");
        }
    }
}

/// Backup, restore and scheduled backups are SQLite files: refused on PostgreSQL with
/// what to do instead (exit 2), before anything is written.
#[test]
fn backup_and_restore_are_refused_on_postgres_with_what_to_do() {
    on_postgres(
        "backup_and_restore_are_refused_on_postgres_with_what_to_do",
        || {
            let env = TestEnv::init();
            env.set("A", "alpha");
            env.run(&["backup", "b.age"]).code(2).stderr_has("pg_dump");
            assert!(!env.path("b.age").exists());
            std::fs::write(env.path("old.age"), b"whatever").unwrap();
            env.run(&["restore", "old.age"])
                .code(2)
                .stderr_has("pg_dump");
            env.run(&["serve", "--backup-dir", "backups"])
                .code(2)
                .stderr_has("pg_dump");
            assert_eq!(env.get("A"), "alpha");
            env.run(&["audit", "verify"]).ok();
        },
    );
}

/// Several `secret set`/`get` processes and in-process writers append to one
/// PostgreSQL vault at once: one chain, no gap or fork, and exactly one entry per
/// operation.
#[test]
fn concurrent_processes_and_threads_keep_one_audit_chain() {
    on_postgres(
        "concurrent_processes_and_threads_keep_one_audit_chain",
        || {
            let env = TestEnv::init();
            const PROCESSES: usize = 4;
            const THREADS: usize = 3;
            const EACH: usize = 6;
            let before: u64 = env.sql("SELECT max(seq) FROM audit_log").parse().unwrap();
            let barrier = Arc::new(Barrier::new(PROCESSES + THREADS));
            std::thread::scope(|scope| {
                for p in 0..PROCESSES {
                    let (env, barrier) = (&env, barrier.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        for i in 0..EACH {
                            env.set(&format!("P_{}", i % 2), &format!("process {p} write {i}"));
                            env.get(&format!("P_{}", i % 2));
                        }
                    });
                }
                for t in 0..THREADS {
                    let barrier = barrier.clone();
                    let location = env.vault_location();
                    let identity = env.identity.clone();
                    scope.spawn(move || {
                        let mut vault = open_at(&location, &identity);
                        barrier.wait();
                        for i in 0..EACH {
                            let value =
                                zeroize::Zeroizing::new(format!("thread {t} {i}").into_bytes());
                            vault
                                .set(
                                    "T",
                                    SecretValue::from_bytes(value, false),
                                    &SetOptions::default(),
                                )
                                .unwrap();
                            vault
                                .get("T", VersionSelector::Label(Label::Current))
                                .unwrap();
                        }
                    });
                }
            });
            // Each process command is one entry; each in-process op one entry.
            let operations = (PROCESSES + THREADS) * EACH * 2;
            let run = env.run(&["audit", "verify"]).ok();
            let expected = before as usize + operations;
            assert!(
                run.stdout.contains(&format!("{expected} entries verified")),
                "{run:#?}"
            );
            assert_eq!(
                env.sql("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM audit_log"),
                format!("{0}|{0}|1|{0}", expected + 1)
            );
            // Versions: none lost, none doubled.
            assert_eq!(
                env.sql("SELECT count(*) FROM versions WHERE name = 'T'"),
                (THREADS * EACH).to_string()
            );
            assert_eq!(
                env.sql("SELECT count(*) FROM versions WHERE name LIKE 'P\\_%'"),
                (PROCESSES * EACH).to_string()
            );
        },
    );
}
