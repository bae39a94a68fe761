//! `secret store copy --to PATH|URL`: SQLite → PostgreSQL → SQLite keeps everything
//! (values of every version, history, rotations, tokens, the audit log across key
//! epochs, the ciphertexts byte for byte); a destination that holds anything, a
//! tampered source, and the source itself are refused with nothing written; a copy
//! taken while writers run is one consistent, verifiable snapshot; a password in the
//! URL is never shown. Backups and restores of PostgreSQL vaults go through the same
//! copy. Tests that need PostgreSQL say `skipped: ...` without
//! `SECRET_TEST_DATABASE_URL`.

use std::path::Path;

use serde_json::Value;

use crate::util::{open_at, Run, TestEnv, TestSchema};

/// A password the test server (trust auth) ignores, so that it can be looked for.
const PASSWORD: &str = "hunter2-copy-pw";

/// The schema's URL with a password in it.
fn with_password(schema: &TestSchema) -> String {
    schema.url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

/// A SQLite env (whatever store the test thread's `TestEnv`s use).
fn sqlite_env() -> TestEnv {
    let mut env = TestEnv::new();
    env.pg = None;
    env
}

/// What a user sees of a vault: every secret's history, every version's value (or its
/// exit code), rotations with steps, tokens. Read with `--vault at`.
fn view(env: &TestEnv, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    let list = env.run(&["--vault", at, "list", "--all", "--json"]).ok();
    let secrets: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    out.push(list.stdout.clone());
    for s in &secrets {
        let name = s["name"].as_str().unwrap();
        let history = env.run(&["--vault", at, "history", name, "--json"]).ok();
        out.push(history.stdout.clone());
        let latest = s["latest_version"].as_u64().unwrap();
        for v in 1..=latest {
            let got = env.run(&["--vault", at, "get", name, "--version", &v.to_string()]);
            out.push(format!("{name} v{v}: exit {} {:?}", got.code, got.stdout));
        }
    }
    out.push(env.run(&["--vault", at, "rotations", "--json"]).ok().stdout);
    out.push(
        env.run(&["--vault", at, "token", "list", "--json"])
            .ok()
            .stdout,
    );
    out
}

fn audit(env: &TestEnv, at: &str) -> Vec<Value> {
    env.run(&["--vault", at, "audit", "--json"])
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(env: &TestEnv, at: &str) -> Run {
    env.run(&["--vault", at, "audit", "verify"]).ok()
}

/// The sealed rows as hex (ciphertexts, wrapped keys, retired audit keys, secrets'
/// MACs), and the audit MACs in order, for a byte-for-byte comparison.
fn sealed_rows_sqlite(path: &Path) -> (String, String) {
    let sql = |q: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(path)
            .arg(q)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    (
        sql(
            "SELECT name, version, lower(hex(nonce)), lower(hex(ciphertext)) FROM versions \
             ORDER BY 1, 2; SELECT kind, lower(hex(wrapped_key)) FROM keyring ORDER BY 1; \
             SELECT epoch, lower(hex(audit_key)) FROM retired_keys ORDER BY 1; \
             SELECT name, lower(hex(mac)) FROM secrets ORDER BY 1;",
        ),
        sql("SELECT lower(hex(mac)) FROM audit_log ORDER BY seq"),
    )
}

fn sealed_rows_pg(schema: &TestSchema) -> (String, String) {
    (
        schema
            .query(
                "SELECT name, version, encode(nonce, 'hex'), encode(ciphertext, 'hex') \
                 FROM versions ORDER BY 1, 2; \
                 SELECT kind, encode(wrapped_key, 'hex') FROM keyring ORDER BY 1; \
                 SELECT epoch, encode(audit_key, 'hex') FROM retired_keys ORDER BY 1; \
                 SELECT name, encode(mac, 'hex') FROM secrets ORDER BY 1;",
            )
            .unwrap(),
        schema
            .query("SELECT encode(mac, 'hex') FROM audit_log ORDER BY seq")
            .unwrap(),
    )
}

/// A vault with a bit of everything: versions, a destroyed version, a deleted secret,
/// a description, a rotation (with a dotenv target), tokens (one revoked by a rekey),
/// two key epochs.
fn everything(env: &TestEnv) {
    env.run(&["init"]).ok();
    env.set("A", "alpha-1");
    env.set("A", "alpha-2");
    env.run_with(&["set", "A", "--description", "the A"], b"alpha-3")
        .ok();
    env.set("B", "beta");
    env.set("GONE", "soon deleted");
    env.run(&["delete", "GONE"]).ok();
    env.run(&["destroy", "A", "--version", "1"]).ok();
    env.run(&["token", "create", "--name", "before", "--scope", "admin"])
        .ok();
    env.run(&["rekey"]).ok();
    env.run(&[
        "token",
        "create",
        "--name",
        "after",
        "--scope",
        "secrets:list",
    ])
    .ok();
    std::fs::create_dir_all(env.path("policies")).unwrap();
    std::fs::write(
        env.path("policies/p.toml"),
        "[targets.local]\nkind = \"dotenv\"\npath = \"app.env\"\n\n\
         [secrets.ROTATED]\ngenerator = \"random\"\nevery = \"30d\"\ngrace = \"1d\"\n\
         push = [\"local\"]\n",
    )
    .unwrap();
    env.set("ROTATED", "first");
    env.run(&["rotate", "ROTATED"]).ok();
    env.run(&["get", "B"]).ok();
}

/// SQLite → PostgreSQL → SQLite: what a user sees is the same on all three, the
/// ciphertexts and MACs are the same bytes, each log is the one before it plus the
/// copy's own entry, and `audit verify` passes everywhere (two key epochs).
#[test]
fn a_round_trip_through_postgres_keeps_everything() {
    let Some(schema) = TestSchema::create("a_round_trip_through_postgres_keeps_everything") else {
        return;
    };
    let env = sqlite_env();
    everything(&env);
    let file = env.vault_location();
    let url = with_password(&schema);
    let before = view(&env, &file);
    let sealed_before = sealed_rows_sqlite(&env.vault);

    let run = env.run(&["store", "copy", "--to", &url]).ok();
    assert!(run.stdout.contains("2 key epoch(s)"), "{run:#?}");
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let sealed_after = sealed_rows_pg(&schema);
    assert_eq!(sealed_after.0, sealed_before.0);
    // The copied log, then the copy's own entry.
    assert!(sealed_after.1.starts_with(&sealed_before.1));
    assert_eq!(
        sealed_after.1.lines().count(),
        sealed_before.1.lines().count() + 1
    );
    assert_eq!(view(&env, &url), before);
    verify(&env, &url);
    verify(&env, &file);

    let back = env.path("back/vault.db");
    let back_text = back.to_str().unwrap().to_string();
    let run = env
        .run(&["--vault", &url, "store", "copy", "--to", &back_text])
        .ok();
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    assert_eq!(view(&env, &back_text), before);
    verify(&env, &back_text);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&back).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Each log: the one it was copied from, up to the copied head, then store.copied.
    let (src, pg, sq) = (
        audit(&env, &file),
        audit(&env, &url),
        audit(&env, &back_text),
    );
    let copied_at = |log: &[Value]| {
        log.iter()
            .position(|e| e["action"] == "store.copied")
            .unwrap()
    };
    let n = copied_at(&pg);
    assert_eq!(src[..n], pg[..n]);
    assert_eq!(src[n]["action"], "store.copy");
    assert_eq!(pg[n]["action"], "store.copied");
    let m = sq.len()
        - sq.iter()
            .rev()
            .position(|e| e["action"] == "store.copied")
            .unwrap()
        - 1;
    assert_eq!(pg[..m], sq[..m]);
    let pg_copy = pg.iter().find(|e| e["action"] == "store.copy").unwrap();
    assert_eq!(pg_copy["details"]["to"], back_text.as_str());
    for log in [&src, &pg, &sq] {
        let text = serde_json::to_string(log).unwrap();
        assert!(!text.contains(PASSWORD), "a password in the audit log");
        assert!(
            !text.contains("alpha-2") && !text.contains("beta"),
            "a value in the log"
        );
    }
    assert!(src[n]["details"]["rows"].as_u64().unwrap() > 20);
}

/// A destination holding anything — a vault, another application's tables, a file —
/// and the source itself are refused before anything is written, on either side.
#[test]
fn a_destination_that_is_not_empty_is_refused_and_left_alone() {
    let env = sqlite_env();
    env.run(&["init"]).ok();
    env.set("A", "alpha");
    let entries = || env.sql("SELECT count(*) FROM audit_log");
    let before = entries();
    let source_bytes = std::fs::read(&env.vault).unwrap();

    // Files: a vault, something else, a folder, the source itself.
    let other = TestEnv::new();
    let mut other = other;
    other.pg = None;
    other.run(&["init"]).ok();
    let other_vault = other.vault.to_str().unwrap().to_string();
    let other_bytes = std::fs::read(&other.vault).unwrap();
    std::fs::write(env.path("notes.txt"), b"not a vault").unwrap();
    std::fs::create_dir_all(env.path("folder")).unwrap();
    for (to, says) in [
        (other_vault.as_str(), "holds a vault"),
        ("notes.txt", "a file that is not a vault"),
        ("folder", "a folder"),
    ] {
        env.run(&["store", "copy", "--to", to])
            .code(4)
            .stderr_has(says)
            .stderr_has("nothing was written");
    }
    assert_eq!(std::fs::read(&other.vault).unwrap(), other_bytes);
    assert_eq!(
        std::fs::read(env.path("notes.txt")).unwrap(),
        b"not a vault"
    );
    let source = env.vault_location();
    env.run(&["store", "copy", "--to", &source])
        .code(2)
        .stderr_has("is the vault being copied");
    assert_eq!(entries(), before, "a refused copy wrote to the source");
    assert_eq!(std::fs::read(&env.vault).unwrap(), source_bytes);

    // Databases: a vault, another application's tables, the source itself.
    let Some(taken) = TestSchema::create("a_destination_that_is_not_empty_is_refused") else {
        return;
    };
    env.run(&["--vault", &taken.url, "init"]).ok();
    let taken_rows = taken
        .query("SELECT seq, encode(mac, 'hex') FROM audit_log")
        .unwrap();
    let foreign = TestSchema::create("foreign").unwrap();
    foreign
        .sql("CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1)")
        .unwrap();
    for (schema, says) in [(&taken, "holds a vault"), (&foreign, "invoices")] {
        let run = env
            .run(&["store", "copy", "--to", &with_password(schema)])
            .code(4)
            .stderr_has(says);
        assert!(!run.stderr.contains(PASSWORD), "{run:#?}");
    }
    assert_eq!(
        taken
            .query("SELECT seq, encode(mac, 'hex') FROM audit_log")
            .unwrap(),
        taken_rows
    );
    assert_eq!(
        foreign
            .query(
                "SELECT string_agg(table_name, ',') FROM information_schema.tables \
                 WHERE table_schema = current_schema()"
            )
            .unwrap(),
        "invoices"
    );
    env.run(&["--vault", &taken.url, "store", "copy", "--to", &taken.url])
        .code(2)
        .stderr_has("is the vault being copied");
    assert_eq!(entries(), before);
}

/// Metadata changed without the key: the copy is refused with exit 7 before the
/// destination is touched (no file, no table).
#[test]
fn a_tampered_source_is_refused_and_nothing_is_written() {
    let env = sqlite_env();
    env.run(&["init"]).ok();
    env.set("A", "one");
    env.set("A", "two");
    env.sql("UPDATE secrets SET current_version = 1 WHERE name = 'A'");
    env.run(&["store", "copy", "--to", "copy.db"])
        .code(7)
        .stderr_has("metadata of A");
    assert!(!env.path("copy.db").exists());
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("secret-") || n.starts_with("copy"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let Some(schema) = TestSchema::create("a_tampered_source_is_refused") else {
        return;
    };
    env.run(&["store", "copy", "--to", &schema.url])
        .code(7)
        .stderr_has("metadata of A");
    assert_eq!(
        schema
            .query(
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema()"
            )
            .unwrap(),
        "0"
    );
}

/// Writers keep writing while a copy of a few thousand secrets runs: the copy is
/// one snapshot — its chain verifies, its head is an entry of the source's chain,
/// and every value it holds is the source's.
#[test]
fn a_copy_taken_while_writers_run_is_one_consistent_snapshot() {
    let env = sqlite_env();
    env.run(&["init"]).ok();
    env.fill(1500, 2);
    let schema = TestSchema::create("a_copy_taken_while_writers_run");
    let to = match &schema {
        Some(schema) => schema.url.clone(),
        None => env.path("copy.db").to_str().unwrap().to_string(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let copied = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut vault = open_at(&env.vault_location(), &env.identity);
            let mut writes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let value = zeroize::Zeroizing::new(format!("during {writes}").into_bytes());
                vault
                    .set(
                        &format!("FILL_{}", writes % 40),
                        secret_core::model::SecretValue::from_bytes(value, false),
                        &Default::default(),
                    )
                    .unwrap();
                writes += 1;
            }
            writes
        });
        let run = env.run(&["store", "copy", "--to", &to]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writer.join().unwrap();
        (run, writes)
    });
    let (run, writes) = copied;
    run.ok();
    assert!(writes > 0, "no write ran during the copy");
    verify(&env, &to);
    // The copy's last entry before its own is one of the source's, byte for byte.
    let dest = audit(&env, &to);
    let src = audit(&env, &env.vault_location());
    let n = dest.len()
        - 1
        - dest
            .iter()
            .rev()
            .position(|e| e["action"] == "store.copied")
            .unwrap();
    assert_eq!(dest[..n], src[..n]);
    // Every value in the copy is the source's at that point of its log.
    let mut copy = open_at(&to, &env.identity);
    let mut source = open_at(&env.vault_location(), &env.identity);
    for s in 0..40 {
        let name = format!("FILL_{s}");
        let (_, versions) = copy.history(&name).unwrap();
        for v in versions {
            let number = secret_core::model::VersionNumber::new(v.version).unwrap();
            let selector = secret_core::model::VersionSelector::Number(number);
            assert_eq!(
                copy.get(&name, selector).unwrap().value.expose(),
                source.get(&name, selector).unwrap().value.expose()
            );
        }
    }
}

/// On PostgreSQL, `backup` is a snapshot of the rows as an age-encrypted SQLite vault
/// file, and `restore` proves it and replaces the rows in one transaction, keeping the
/// replaced vault aside as a SQLite vault file; a damaged backup changes nothing.
#[test]
fn backup_and_restore_work_on_postgres() {
    let Some(schema) = TestSchema::create("backup_and_restore_work_on_postgres") else {
        return;
    };
    let env = sqlite_env();
    let url = with_password(&schema);
    env.run(&["--vault", &url, "init"]).ok();
    env.run_with(&["--vault", &url, "set", "A"], b"before").ok();
    let run = env.run(&["--vault", &url, "backup", "b.age"]).ok();
    assert!(!run.stdout.contains(PASSWORD));
    env.run_with(&["--vault", &url, "set", "A"], b"after").ok();
    env.run_with(&["--vault", &url, "set", "B"], b"later").ok();
    // A damaged backup: exit 7, nothing changed.
    let mut damaged = std::fs::read(env.path("b.age")).unwrap();
    let at = damaged.len() - 40;
    damaged[at] ^= 1;
    std::fs::write(env.path("bad.age"), &damaged).unwrap();
    let rows = || {
        schema
            .query("SELECT seq, encode(mac, 'hex') FROM audit_log ORDER BY seq")
            .unwrap()
    };
    let before = rows();
    env.run(&["--vault", &url, "restore", "bad.age"]).code(7);
    assert_eq!(rows(), before);
    // Older than the vault: exit 4 without --force.
    env.run(&["--vault", &url, "restore", "b.age"])
        .code(4)
        .stderr_has("would be lost");
    assert_eq!(rows(), before);
    let run = env
        .run(&["--vault", &url, "restore", "--force", "b.age"])
        .ok();
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let aside = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("before-restore"))
        .expect("the replaced vault is kept aside");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&aside).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let aside = aside.to_str().unwrap().to_string();
    assert_eq!(
        env.run(&["--vault", &aside, "get", "B"]).ok().stdout,
        "later"
    );
    assert_eq!(
        env.run(&["--vault", &url, "get", "A"]).ok().stdout,
        "before"
    );
    env.run(&["--vault", &url, "get", "B"]).code(3);
    verify(&env, &url);
    let log = audit(&env, &url);
    assert!(log.iter().any(|e| e["action"] == "restore"));
    assert!(!serde_json::to_string(&log).unwrap().contains(PASSWORD));

    // Into an empty schema: the vault is made there.
    let empty = TestSchema::create("restore-into-empty").unwrap();
    env.run(&["--vault", &empty.url, "restore", "b.age"]).ok();
    assert_eq!(
        env.run(&["--vault", &empty.url, "get", "A"]).ok().stdout,
        "before"
    );
    verify(&env, &empty.url);
}

/// A copy killed (SIGKILL) at any moment leaves nothing at the destination, or the
/// whole vault, proven: never a half vault that looks valid.
#[test]
fn an_interrupted_copy_leaves_nothing_or_everything() {
    let env = sqlite_env();
    env.run(&["init"]).ok();
    env.fill(2000, 1);
    let mut destinations: Vec<(String, Option<TestSchema>)> = Vec::new();
    for (i, delay_ms) in [200u64, 1000, 3000, 10_000].iter().enumerate() {
        let schema = TestSchema::create("an_interrupted_copy_leaves_nothing_or_everything");
        let to = match &schema {
            Some(schema) => schema.url.clone(),
            None => env
                .path(&format!("copy-{i}.db"))
                .to_str()
                .unwrap()
                .to_string(),
        };
        let mut child = env
            .command(&["store", "copy", "--to", &to])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(*delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        destinations.push((to, schema));
    }
    let mut whole = 0;
    for (to, schema) in &destinations {
        let present = match schema {
            Some(schema) => {
                // The killed connection's transaction is rolled back by the server.
                std::thread::sleep(std::time::Duration::from_millis(200));
                schema
                    .query(
                        "SELECT count(*) FROM information_schema.tables \
                         WHERE table_schema = current_schema()",
                    )
                    .unwrap()
                    != "0"
            }
            None => Path::new(to).exists(),
        };
        if present {
            verify(&env, to);
            whole += 1;
        }
    }
    // The source is untouched and verifies, whatever happened to the copies.
    verify(&env, &env.vault_location());
    eprintln!(
        "interrupted copies: {whole} of {} completed",
        destinations.len()
    );
}
