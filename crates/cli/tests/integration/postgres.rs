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

/// Scheduled backups run on PostgreSQL too (`serve --backup-dir`): the first is due
/// at once, and it is an age file `secret restore` takes.
#[test]
fn serve_backs_up_a_postgres_vault() {
    on_postgres("serve_backs_up_a_postgres_vault", || {
        let env = TestEnv::init();
        env.set("A", "alpha");
        let serve = crate::util::KillOnDrop::new(
            env.command(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-scheduler",
                "--backup-dir",
                "backups",
                "--backup-every",
                "1h",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let backup = loop {
            let found = std::fs::read_dir(env.path("backups"))
                .ok()
                .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
                .filter(|p| p.extension().is_some_and(|x| x == "age"));
            if let Some(path) = found {
                break path;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no backup within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        drop(serve);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut restored = TestEnv::new();
        restored.pg = None;
        std::fs::create_dir_all(restored.identity.parent().unwrap()).unwrap();
        std::fs::copy(&env.identity, &restored.identity).unwrap();
        restored.run(&["restore", backup.to_str().unwrap()]).ok();
        assert_eq!(restored.get("A"), "alpha");
    });
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
