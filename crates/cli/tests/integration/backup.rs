//! `secret backup` and `secret restore`: the backup is a plain age file that `age -d`
//! opens into a vault; a restore proves a backup before it touches anything, refuses
//! damaged and foreign files with the vault left byte for byte as it was, and keeps a
//! replaced vault aside.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::util::{fill_value, have, TestEnv};

fn age_available() -> bool {
    if have("age") && have("age-keygen") {
        return true;
    }
    eprintln!("SKIPPED: the `age` CLI is not installed (apt-get install age); .ci/run installs it");
    false
}

fn digest(path: &Path) -> String {
    secret_core::crypto::sha256_hex(&std::fs::read(path).unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Files beside the vault other than the vault itself and its WAL (restore's scratch
/// folders and kept-aside copies).
fn strays(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.vault.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !["vault.db", "vault.db-wal", "vault.db-shm"].contains(&n.as_str()))
        .collect()
}

fn recipient_of(env: &TestEnv) -> String {
    env.sql("SELECT recipients FROM keyring WHERE kind = 'recipients'")
}

fn remove_vault(env: &TestEnv) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.vault.display()));
    }
}

#[test]
fn age_d_opens_a_backup_into_a_vault_that_works() {
    if !age_available() {
        return;
    }
    let env = TestEnv::init();
    env.set("DATABASE_URL", "postgres://db/prod");
    env.set("API_KEY", "k-1");
    env.set("API_KEY", "k-2");
    let file = env.path("backups/vault.age");
    let run = env.run(&["backup", file.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("backed up 2 secrets (3 versions)"),
        "{}",
        run.stdout
    );
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let sealed = std::fs::read(&file).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    // Nothing readable inside without the key: not even the names.
    assert!(!crate::util::contains(&sealed, b"DATABASE_URL"));

    let opened = env.path("opened.db");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&env.identity)
        .arg("-o")
        .arg(&opened)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&opened)
        .unwrap()
        .starts_with(b"SQLite format 3\0"));
    let other = opened.to_str().unwrap();
    let got = env
        .run(&["--vault", other, "get", "API_KEY", "--previous"])
        .ok();
    assert_eq!(got.stdout, "k-1");
    env.run(&["--vault", other, "audit", "verify"]).ok();
    // The backup holds its own audit entry.
    let entries = env.audit(&["--action", "backup"]);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["details"]["to"], file.to_str().unwrap());
    assert_eq!(entries[0]["details"]["encrypted_to"], "recipients");
    let inside = env
        .run(&["--vault", other, "audit", "--action", "backup", "--json"])
        .ok();
    assert_eq!(inside.stdout.lines().count(), 1);

    // An existing file is replaced only with --force.
    env.run(&["backup", file.to_str().unwrap()])
        .code(4)
        .stderr_has("--force");
    assert_eq!(std::fs::read(&file).unwrap(), sealed);
    env.run(&["backup", "--force", file.to_str().unwrap()]).ok();
}

#[test]
fn a_lost_vault_comes_back_from_a_backup_on_stdout() {
    let env = TestEnv::init();
    env.fill(10, 3);
    let run = env.run(&["backup", "-"]).ok();
    assert!(run.raw_stdout.starts_with(b"age-encryption.org/v1\n"));
    assert!(
        run.stderr
            .contains("backed up 10 secrets (30 versions) to stdout"),
        "{}",
        run.stderr
    );
    let file = env.path("stdout.age");
    std::fs::write(&file, &run.raw_stdout).unwrap();

    remove_vault(&env);
    env.run(&["get", "FILL_1"]).code(1);
    let run = env.run(&["restore", file.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("10 secrets, 30 versions"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("kept at"),
        "nothing to keep aside: {}",
        run.stdout
    );
    assert_eq!(mode(&env.vault), 0o600);
    env.check_filled(10, 3);
    env.run(&["audit", "verify"]).ok();
    let restore = env.audit(&["--action", "restore"]);
    assert_eq!(restore.len(), 1);
    assert_eq!(restore[0]["details"]["from"], file.to_str().unwrap());
    assert!(strays(&env).is_empty(), "{:?}", strays(&env));
}

#[test]
fn restore_refuses_damaged_and_foreign_backups_and_leaves_the_vault_untouched() {
    let env = TestEnv::init();
    env.fill(5, 2);
    let good = env.path("good.age");
    env.run(&["backup", good.to_str().unwrap()]).ok();
    env.set("AFTER", "the backup");
    let bytes = std::fs::read(&good).unwrap();
    let before = digest(&env.vault);
    let try_restore = |name: &str, content: &[u8], code: i32, says: &str| {
        let path = env.path(name);
        std::fs::write(&path, content).unwrap();
        env.run(&["restore", "--force", path.to_str().unwrap()])
            .code(code)
            .stderr_has(says);
        assert_eq!(digest(&env.vault), before, "{name} changed the vault");
        assert!(strays(&env).is_empty(), "{name} left {:?}", strays(&env));
    };

    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    try_restore("flipped.age", &flipped, 7, "not an intact vault backup");
    try_restore(
        "short.age",
        &bytes[..bytes.len() - 1],
        7,
        "not an intact vault backup",
    );
    try_restore(
        "half.age",
        &bytes[..bytes.len() / 2],
        7,
        "not an intact vault backup",
    );
    try_restore("header.age", &bytes[..40], 7, "not an intact vault backup");
    try_restore(
        "plain.txt",
        b"DATABASE_URL=postgres://x\n",
        7,
        "not an intact vault backup",
    );
    try_restore(
        "missing-header-mac.age",
        &bytes[1..],
        7,
        "not an intact vault backup",
    );
    env.run(&["restore", env.path("nope.age").to_str().unwrap()])
        .code(3)
        .stderr_has("no backup at");

    // Another vault's backup, encrypted to the same identity.
    let second = env.path("second/vault.db");
    env.run(&["--vault", second.to_str().unwrap(), "init"]).ok();
    let foreign = env.path("foreign.age");
    env.run(&[
        "--vault",
        second.to_str().unwrap(),
        "backup",
        foreign.to_str().unwrap(),
    ])
    .ok();
    try_restore(
        "foreign-copy.age",
        &std::fs::read(&foreign).unwrap(),
        7,
        "a backup of another vault",
    );

    if age_available() {
        // An age file to the right identity that is not a vault.
        let plain = env.path("not-a-vault.txt");
        std::fs::write(&plain, "just some text").unwrap();
        let sealed = env.path("not-a-vault.age");
        let out = Command::new("age")
            .args(["-r", &recipient_of(&env), "-o"])
            .arg(&sealed)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(out.status.success());
        try_restore(
            "not-a-vault-copy.age",
            &std::fs::read(&sealed).unwrap(),
            7,
            "not to a vault file",
        );
        // A backup for someone else: no identity given opens it (exit 5).
        let other_key = env.path("someone-else.txt");
        assert!(Command::new("age-keygen")
            .arg("-o")
            .arg(&other_key)
            .output()
            .unwrap()
            .status
            .success());
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(&other_key)
            .output()
            .unwrap();
        let someone = String::from_utf8(out.stdout).unwrap();
        let theirs = env.path("theirs.age");
        let out = Command::new("age")
            .args(["-r", someone.trim(), "-o"])
            .arg(&theirs)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(out.status.success());
        try_restore(
            "theirs-copy.age",
            &std::fs::read(&theirs).unwrap(),
            5,
            "no identity given opens",
        );
    }
    assert_eq!(env.get("AFTER"), "the backup");
}

/// Decrypts a backup with the age CLI, lets `edit` change the vault inside with
/// sqlite3, and encrypts it again to the same recipient: a well-formed age file whose
/// vault was tampered with.
fn tampered_inside(env: &TestEnv, backup: &Path, edit: &str) -> Vec<u8> {
    let inner = env.path("inner.db");
    let _ = std::fs::remove_file(&inner);
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&env.identity)
        .arg("-o")
        .arg(&inner)
        .arg(backup)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("sqlite3")
        .arg(&inner)
        .arg(edit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("age")
        .args(["-r", &recipient_of(env)])
        .arg(&inner)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn restore_proves_the_vault_inside_the_backup_before_using_it() {
    if !age_available() {
        return;
    }
    let env = TestEnv::init();
    env.fill(3, 2);
    let good = env.path("good.age");
    env.run(&["backup", good.to_str().unwrap()]).ok();
    let before = digest(&env.vault);
    for (edit, says) in [
        (
            "UPDATE versions SET ciphertext = randomblob(length(ciphertext)) \
             WHERE name = 'FILL_2' AND version = 1",
            "version 1 of FILL_2 does not decrypt",
        ),
        (
            "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 2",
            "audit chain is broken at sequence 2",
        ),
        (
            "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
            "audit chain",
        ),
        (
            "UPDATE vault SET key_check = randomblob(32)",
            "does not belong to this vault",
        ),
    ] {
        let file = env.path("tampered.age");
        std::fs::write(&file, tampered_inside(&env, &good, edit)).unwrap();
        env.run(&["restore", "--force", file.to_str().unwrap()])
            .code(7)
            .stderr_has(says)
            .stderr_has("nothing was changed");
        assert_eq!(digest(&env.vault), before, "{edit}");
        assert!(strays(&env).is_empty(), "{:?}", strays(&env));
    }
    env.check_filled(3, 2);
}

#[test]
fn an_older_backup_needs_force_and_the_replaced_vault_is_kept_aside() {
    let env = TestEnv::init();
    env.set("KEY", "old");
    let old = env.path("old.age");
    env.run(&["backup", old.to_str().unwrap()]).ok();
    // Restoring a backup of the current state needs no force.
    env.run(&["restore", old.to_str().unwrap()]).ok();
    let aside_first: Vec<_> = strays(&env);
    assert_eq!(aside_first.len(), 1, "{aside_first:?}");
    env.set("KEY", "new");
    env.set("ONLY_LATER", "x");
    let before = digest(&env.vault);
    env.run(&["restore", old.to_str().unwrap()])
        .code(4)
        .stderr_has("would be lost")
        .stderr_has("--force");
    assert_eq!(digest(&env.vault), before);
    assert_eq!(strays(&env), aside_first);

    let run = env.run(&["restore", "--force", old.to_str().unwrap()]).ok();
    assert!(
        run.stderr
            .contains("warning: the backup ends at audit entry"),
        "{}",
        run.stderr
    );
    let aside = run
        .stdout
        .split("kept at ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap()
        .to_string();
    assert!(aside.contains("vault.db.before-restore-"), "{aside}");
    assert_eq!(mode(Path::new(&aside)), 0o600);
    assert_eq!(env.get("KEY"), "old");
    env.run(&["get", "ONLY_LATER"]).code(3);
    env.run(&["audit", "verify"]).ok();
    // The vault it replaced is intact beside it.
    assert_eq!(
        env.run(&["--vault", &aside, "get", "KEY"]).ok().stdout,
        "new"
    );
    env.run(&["--vault", &aside, "audit", "verify"]).ok();
}

#[test]
fn a_backup_taken_while_others_write_restores_to_a_consistent_vault() {
    let env = TestEnv::init();
    env.fill(50, 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Another process writing (`secret set`), and a batch writer in this process.
    let writer = {
        let (vault, stop) = (env.vault.clone(), stop.clone());
        let mut cmd_env = TestEnv::new();
        cmd_env
            .env
            .push(("SECRET_VAULT".into(), vault.to_str().unwrap().into()));
        cmd_env.env.push((
            "SECRET_IDENTITY_FILE".into(),
            env.identity.to_str().unwrap().into(),
        ));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                cmd_env
                    .run_with(&["set", "BUSY"], format!("busy-{n}").as_bytes())
                    .ok();
                n += 1;
            }
            n
        })
    };
    let batcher = {
        let (vault, identity, stop) = (env.vault.clone(), env.identity.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut v = crate::util::open_in_process(&vault, &identity);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let value = secret_core::model::SecretValue::from_bytes(
                    zeroize::Zeroizing::new(format!("batch-{n}").into_bytes()),
                    false,
                );
                v.set(&format!("BATCH_{}", n % 20), value, &Default::default())
                    .unwrap();
                n += 1;
                // A breath between transactions: SQLite's lock is not fair, and a loop
                // that takes it back at once can starve the backup's own audited write
                // (what this test checks is the backup's consistency, not fairness).
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            n
        })
    };
    let mut backups = Vec::new();
    for i in 0..4 {
        let file = env.path(&format!("live-{i}.age"));
        env.run(&["backup", file.to_str().unwrap()]).ok();
        backups.push(file);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sets = writer.join().unwrap();
    let batched = batcher.join().unwrap();
    assert!(
        sets > 0 && batched > 0,
        "the writers ran: {sets}, {batched}"
    );
    for (i, file) in backups.iter().enumerate() {
        let target = env.path(&format!("restored-{i}/vault.db"));
        let t = target.to_str().unwrap();
        env.run(&["--vault", t, "restore", file.to_str().unwrap()])
            .ok();
        env.run(&["--vault", t, "audit", "verify"]).ok();
        let got = env.run(&["--vault", t, "get", "FILL_49"]).ok().stdout;
        assert_eq!(got, fill_value(49, 2));
        let list = env.run(&["--vault", t, "list", "--json"]).ok().stdout;
        let secrets: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
        for s in secrets {
            let name = s["name"].as_str().unwrap();
            env.run(&["--vault", t, "get", name]).ok();
        }
    }
}

#[test]
fn a_passphrase_vault_backs_up_to_its_passphrase() {
    let mut env = TestEnv::new();
    env.env.push(("SECRET_SCRYPT_LOG_N".into(), "10".into()));
    env.env
        .push(("SECRET_PASSPHRASE".into(), "staple horse".into()));
    env.run(&["init", "--passphrase"]).ok();
    env.set("P", "from-passphrase-vault");
    let file = env.path("p.age");
    let run = env.run(&["backup", file.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("the vault's passphrase"),
        "{}",
        run.stdout
    );
    let sealed = std::fs::read(&file).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    remove_vault(&env);
    env.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    env.env.push(("SECRET_PASSPHRASE".into(), "not it".into()));
    env.run(&["restore", file.to_str().unwrap()])
        .code(5)
        .stderr_has("passphrase does not open");
    assert!(!env.vault.exists());
    env.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    env.env
        .push(("SECRET_PASSPHRASE".into(), "staple horse".into()));
    env.run(&["restore", file.to_str().unwrap()]).ok();
    assert_eq!(env.get("P"), "from-passphrase-vault");

    // With recipients too, the backup goes to the recipients unless --passphrase.
    let mut both = TestEnv::init();
    both.env = env.env.clone();
    both.run(&["passphrase", "add"]).ok();
    let to_recipients = both.path("r.age");
    both.run(&["backup", to_recipients.to_str().unwrap()]).ok();
    assert!(std::fs::read(&to_recipients)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n-> X25519 "));
    let to_pass = both.path("p.age");
    both.run(&["backup", "--passphrase", to_pass.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&to_pass)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n-> scrypt "));
    both.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    both.env.push(("SECRET_PASSPHRASE".into(), "not it".into()));
    both.run(&[
        "backup",
        "--passphrase",
        both.path("x.age").to_str().unwrap(),
    ])
    .code(5)
    .stderr_has("not the vault's");
    assert!(!both.path("x.age").exists());
}

#[test]
fn after_a_rekey_old_backups_restore_with_the_old_key_and_new_ones_verify_both_epochs() {
    let env = TestEnv::init();
    env.fill(5, 2);
    let before = env.path("before.age");
    env.run(&["backup", before.to_str().unwrap()]).ok();
    env.run(&["rekey"]).ok();
    env.set("AFTER_REKEY", "yes");
    let after = env.path("after.age");
    env.run(&["backup", after.to_str().unwrap()]).ok();

    // The newer backup, restored elsewhere, verifies entries from both epochs.
    let elsewhere = env.path("elsewhere/vault.db");
    let e = elsewhere.to_str().unwrap();
    let run = env
        .run(&["--vault", e, "restore", after.to_str().unwrap()])
        .ok();
    assert!(run.stdout.contains("key epoch 2"), "{}", run.stdout);
    env.run(&["--vault", e, "audit", "verify"]).ok();
    assert_eq!(
        env.run(&["--vault", e, "get", "AFTER_REKEY"]).ok().stdout,
        "yes"
    );

    // The old one restores with the old key, which it puts back in force.
    let run = env
        .run(&["restore", "--force", before.to_str().unwrap()])
        .ok();
    assert!(run.stderr.contains("from key epoch 1"), "{}", run.stderr);
    env.check_filled(5, 2);
    env.run(&["get", "AFTER_REKEY"]).code(3);
    env.run(&["audit", "verify"]).ok();
    assert!(env.audit(&["--action", "rekey"]).is_empty());
}

#[test]
fn a_corrupted_vault_is_replaced_only_with_force_and_kept_aside() {
    let env = TestEnv::init();
    env.set("SURVIVES", "in the backup");
    let file = env.path("b.age");
    env.run(&["backup", file.to_str().unwrap()]).ok();
    remove_vault(&env);
    let garbage = b"this file was a vault once; a bad disk wrote over it............".repeat(64);
    std::fs::write(&env.vault, &garbage).unwrap();
    env.run(&["get", "SURVIVES"]).code(1);
    env.run(&["restore", file.to_str().unwrap()])
        .code(4)
        .stderr_has("cannot be read")
        .stderr_has("--force");
    assert_eq!(std::fs::read(&env.vault).unwrap(), garbage);
    let run = env
        .run(&["restore", "--force", file.to_str().unwrap()])
        .ok();
    assert!(run.stderr.contains("could not be read"), "{}", run.stderr);
    assert_eq!(env.get("SURVIVES"), "in the backup");
    env.run(&["audit", "verify"]).ok();
    let aside: Vec<_> = strays(&env);
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read(env.vault.with_file_name(&aside[0])).unwrap();
    assert_eq!(kept, garbage);
}
