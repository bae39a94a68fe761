//! The vault through its CLI: round trips, versions and labels, compare-and-set,
//! refusals of bad input (with the documented exit code and nothing written), and
//! what is and is not on disk.

use std::os::unix::fs::PermissionsExt;

use crate::util::{contains, read_or_empty, TestEnv, BIN};

const DATA_TABLES: &[&str] = &["vault", "keyring", "secrets", "versions"];

#[test]
fn init_creates_a_private_vault_and_an_age_identity() {
    let env = TestEnv::new();
    let run = env.run(&["init"]).ok();
    assert!(run.stdout.contains("created vault"), "{}", run.stdout);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.vault), 0o600);
    assert_eq!(mode(env.vault.parent().unwrap()), 0o700);
    assert_eq!(mode(&env.identity), 0o600);
    assert_eq!(mode(env.identity.parent().unwrap()), 0o700);
    let identity = std::fs::read_to_string(&env.identity).unwrap();
    assert!(identity.contains("# public key: age1"));
    assert!(identity.lines().any(|l| l.starts_with("AGE-SECRET-KEY-1")));
    // A second init refuses and leaves the vault alone.
    let before = std::fs::read(&env.vault).unwrap();
    env.run(&["init"]).code(4).stderr_has("already exists");
    assert_eq!(std::fs::read(&env.vault).unwrap(), before);
}

#[test]
fn set_get_round_trips_and_get_prints_no_newline_on_a_pipe() {
    let env = TestEnv::init();
    env.run_with(&["set", "DB_PASSWORD"], b"hunter2\n").ok();
    let run = env.run(&["get", "DB_PASSWORD"]).ok();
    assert_eq!(run.raw_stdout, b"hunter2");
    // --raw keeps stdin byte for byte; values may hold newlines and any UTF-8.
    let pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n";
    env.run_with(&["set", "PEM", "--raw"], pem.as_bytes()).ok();
    assert_eq!(env.get("PEM"), pem);
    env.run_with(&["set", "UNICODE"], "päss wörd ✓".as_bytes())
        .ok();
    assert_eq!(env.get("UNICODE"), "päss wörd ✓");
    env.run_with(&["set", "EMPTY", "--allow-empty"], b"").ok();
    assert_eq!(env.get("EMPTY"), "");
}

#[test]
fn versions_labels_previous_and_json() {
    let env = TestEnv::init();
    env.set("API_KEY", "one");
    env.set("API_KEY", "two");
    env.set("API_KEY", "three");
    assert_eq!(env.get("API_KEY"), "three");
    assert_eq!(
        env.run(&["get", "API_KEY", "--previous"]).ok().stdout,
        "two"
    );
    assert_eq!(
        env.run(&["get", "API_KEY", "--version", "1"]).ok().stdout,
        "one"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["get", "API_KEY", "--json"]).ok().stdout).unwrap();
    assert_eq!(json["name"], "API_KEY");
    assert_eq!(json["version"], 3);
    assert_eq!(json["value"], "three");

    let history: serde_json::Value =
        serde_json::from_str(&env.run(&["history", "API_KEY", "--json"]).ok().stdout).unwrap();
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[2]["labels"], serde_json::json!(["current"]));
    assert_eq!(versions[1]["labels"], serde_json::json!(["previous"]));
    assert_eq!(versions[0]["labels"], serde_json::json!([]));
    let table = env.run(&["history", "API_KEY"]).ok().stdout;
    assert!(
        table.contains("current") && table.contains("previous"),
        "{table}"
    );
    assert!(
        !table.contains("three") && !table.contains("two"),
        "history shows no values"
    );
}

#[test]
fn list_shows_names_and_versions_never_values() {
    let env = TestEnv::init();
    env.set("A_SECRET", "value-of-a");
    env.run_with(
        &["set", "B_SECRET", "--description", "the b one"],
        b"value-of-b",
    )
    .ok();
    env.set("B_SECRET", "value-of-b2");
    let table = env.run(&["list"]).ok().stdout;
    assert!(
        table.contains("A_SECRET") && table.contains("B_SECRET") && table.contains("the b one")
    );
    assert!(!table.contains("value-of"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["list", "--json"]).ok().stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["name"], "B_SECRET");
    assert_eq!(rows[1]["version"], 2);
    assert!(!json.to_string().contains("value-of"));
}

#[test]
fn generate_uses_length_and_charset() {
    let env = TestEnv::init();
    env.run(&[
        "set",
        "TOKEN",
        "--generate",
        "--length",
        "48",
        "--charset",
        "hex",
    ])
    .ok();
    let value = env.get("TOKEN");
    assert_eq!(value.len(), 48);
    assert!(
        value
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{value}"
    );
    env.run(&["set", "T2", "--generate", "--charset", "base64url"])
        .ok();
    let v2 = env.get("T2");
    assert_eq!(v2.len(), 32);
    assert!(v2
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    env.run(&["set", "T3", "--generate"]).ok();
    assert!(env.get("T3").chars().all(|c| c.is_ascii_alphanumeric()));
    env.run(&["set", "T4", "--length", "10"]).code(2);
    env.run(&["set", "T4", "--generate", "--length", "0"])
        .code(2);
}

#[test]
fn compare_and_set_creates_only_once_and_checks_the_current_version() {
    let env = TestEnv::init();
    env.run_with(&["set", "K", "--if-version", "0"], b"first")
        .ok();
    env.run_with(&["set", "K", "--if-version", "0"], b"again")
        .code(4)
        .stderr_has("K is at version 1, not 0");
    env.run_with(&["set", "K", "--if-version", "1"], b"second")
        .ok();
    env.run_with(&["set", "K", "--if-version", "1"], b"stale")
        .code(4);
    assert_eq!(env.get("K"), "second");
    env.run_with(&["set", "NEW", "--if-version", "3"], b"x")
        .code(4)
        .stderr_has("does not exist");
    env.run(&["get", "NEW"]).code(3);
}

#[test]
fn concurrent_compare_and_set_has_exactly_one_winner() {
    let env = TestEnv::init();
    for v in ["v1", "v2", "v3"] {
        env.set("RACE", v);
    }
    for round in 0..3 {
        let expected = (3 + round).to_string();
        let spawn = |value: &str| {
            let mut child = env
                .command(&["set", "RACE", "--if-version", &expected])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(value.as_bytes())
                .unwrap();
            child
        };
        let a = spawn("from-a");
        let b = spawn("from-b");
        let mut codes = vec![
            a.wait_with_output().unwrap().status.code(),
            b.wait_with_output().unwrap().status.code(),
        ];
        codes.sort();
        assert_eq!(codes, vec![Some(0), Some(4)], "round {round}");
        let history: serde_json::Value =
            serde_json::from_str(&env.run(&["history", "RACE", "--json"]).ok().stdout).unwrap();
        assert_eq!(
            history["versions"].as_array().unwrap().len(),
            4 + round as usize
        );
    }
}

#[test]
fn delete_hides_undelete_restores_destroy_wipes_one_version() {
    let env = TestEnv::init();
    env.set("GONE", "old-value");
    env.set("GONE", "new-value");
    env.run(&["delete", "GONE"]).ok();
    env.run(&["get", "GONE"])
        .code(3)
        .stderr_has("secret undelete GONE");
    assert!(!env.run(&["list"]).ok().stdout.contains("GONE"));
    assert!(env.run(&["list", "--all"]).ok().stdout.contains("deleted"));
    env.run_with(&["set", "GONE"], b"x")
        .code(4)
        .stderr_has("undelete");
    env.run(&["undelete", "GONE"]).ok();
    assert_eq!(env.get("GONE"), "new-value");

    let ciphertext =
        env.sql("SELECT hex(ciphertext) FROM versions WHERE name='GONE' AND version=1");
    let bytes: Vec<u8> = (0..ciphertext.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&ciphertext[i..i + 2], 16).unwrap())
        .collect();
    env.run(&["destroy", "GONE", "--version", "1"]).ok();
    env.run(&["get", "GONE", "--version", "1"])
        .code(3)
        .stderr_has("destroyed");
    assert_eq!(env.get("GONE"), "new-value");
    let history = env.run(&["history", "GONE"]).ok().stdout;
    assert!(history.contains("destroyed"), "{history}");
    // The ciphertext is gone from the file and from the WAL, not just unlinked.
    let mut on_disk = read_or_empty(&env.vault);
    on_disk.extend(read_or_empty(&env.vault.with_extension("db-wal")));
    assert!(
        !contains(&on_disk, &bytes),
        "destroyed ciphertext still on disk"
    );
    env.run(&["destroy", "GONE", "--version", "9"]).code(3);
}

#[test]
fn plaintext_never_reaches_the_database_or_its_wal() {
    let env = TestEnv::init();
    // Hold a read transaction open so the WAL cannot be checkpointed away between
    // commands: every write of the test stays in it to be grepped.
    let holder = rusqlite::Connection::open(&env.vault).unwrap();
    holder.execute_batch("BEGIN").unwrap();
    holder
        .query_row("SELECT count(*) FROM secrets", [], |_| Ok(()))
        .unwrap();
    let values = [
        "plaintext-alpha-9f3a",
        "plaintext-beta-77c1",
        "plaintext-gamma-0b2e",
    ];
    for (i, v) in values.iter().enumerate() {
        env.set(&format!("S{i}"), v);
        env.set(&format!("S{i}"), &format!("{v}-second"));
    }
    for (i, v) in values.iter().enumerate() {
        assert_eq!(env.get(&format!("S{i}")), format!("{v}-second"));
    }
    let wal = env.vault.with_file_name("vault.db-wal");
    let wal_bytes = read_or_empty(&wal);
    assert!(
        !wal_bytes.is_empty(),
        "the WAL should hold the writes while a reader is open"
    );
    drop(holder);
    let db_bytes = read_or_empty(&env.vault);
    for v in values {
        assert!(!contains(&wal_bytes, v.as_bytes()), "{v} in the WAL");
        assert!(!contains(&db_bytes, v.as_bytes()), "{v} in the database");
    }
}

#[test]
fn bad_names_values_and_versions_are_refused_and_write_nothing() {
    let env = TestEnv::init();
    env.set("KEEP", "kept");
    let before = env.dump(DATA_TABLES);

    env.run_with(&["set", "1BAD"], b"x")
        .code(2)
        .stderr_has("[A-Za-z_][A-Za-z0-9_]*");
    env.run_with(&["set", "has-dash"], b"x")
        .code(2)
        .stderr_has("character 4");
    let long = "A".repeat(256);
    env.run_with(&["set", &long], b"x")
        .code(2)
        .stderr_has("256 bytes");
    env.run_with(&["set", "BIG"], &vec![b'a'; 64 * 1024 + 1])
        .code(2)
        .stderr_has("64 KiB");
    env.run_with(&["set", "BIN"], &[0x61, 0xff, 0xfe])
        .code(2)
        .stderr_has("not valid UTF-8");
    env.run_with(&["set", "NONE"], b"")
        .code(2)
        .stderr_has("--allow-empty");
    env.run_with(&["set", "NONE"], b"\n")
        .code(2)
        .stderr_has("empty");
    env.run_with(&["set", "KEEP", "--if-version", "7"], b"x")
        .code(4)
        .stderr_has("version check failed");
    env.run(&["get", "KEEP", "--version", "5"])
        .code(3)
        .stderr_has("no version 5");
    env.run(&["get", "MISSING"])
        .code(3)
        .stderr_has("no secret named MISSING");
    env.run(&["get", "KEEP", "--previous"])
        .code(3)
        .stderr_has("no previous version");
    env.run(&["history", "MISSING"]).code(3);
    env.run(&["delete", "MISSING"]).code(3);

    assert_eq!(
        env.dump(DATA_TABLES),
        before,
        "a refused command changed the vault"
    );
    // Exactly 64 KiB is allowed.
    env.run_with(&["set", "BIG"], &vec![b'a'; 64 * 1024]).ok();
}

#[test]
fn a_missing_vault_says_how_to_create_one() {
    let env = TestEnv::new();
    env.run(&["get", "X"]).code(1).stderr_has("secret init");
    env.run(&["list"]).code(1).stderr_has("no vault at");
    assert!(!env.vault.exists(), "reading must not create a vault");
}

#[test]
fn wrong_identity_is_refused_and_changes_no_data() {
    let env = TestEnv::init();
    env.set("S", "value");
    let before = env.dump(&[
        "vault",
        "keyring",
        "secrets",
        "versions",
        "audit_log",
        "audit_head",
    ]);
    let other = env.path("other.txt");
    std::fs::write(&other, include_str!("../fixtures/other-identity.txt")).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = env
        .run(&["--identity", other.to_str().unwrap(), "get", "S"])
        .code(5)
        .stderr_has("cannot unlock vault: no identity matches its recipients");
    assert!(run.stdout.is_empty());
    let mut env_text = TestEnv::new();
    env_text.vault = env.vault.clone();
    env_text
        .env
        .push(("SECRET_VAULT".into(), env.vault_location()));
    env_text.env.push((
        "SECRET_IDENTITY".into(),
        include_str!("../fixtures/other-identity.txt").into(),
    ));
    env_text.run(&["set", "S"]).code(5);
    // The data and the chain are untouched; the attempts wait, unchained, for the
    // next unlock (see the audit tests).
    assert_eq!(
        env.dump(&[
            "vault",
            "keyring",
            "secrets",
            "versions",
            "audit_log",
            "audit_head"
        ]),
        before
    );
    assert_eq!(env.sql("SELECT count(*) FROM audit_unkeyed"), "2");
}

#[test]
fn no_identity_anywhere_says_where_to_put_one() {
    let env = TestEnv::init();
    std::fs::remove_file(&env.identity).unwrap();
    env.run(&["list"])
        .code(5)
        .stderr_has("SECRET_IDENTITY_FILE");
}

#[test]
fn identity_from_env_text_and_env_file_unlock() {
    let env = TestEnv::init();
    env.set("S", "v");
    let text = std::fs::read_to_string(&env.identity).unwrap();
    let moved = env.path("moved-identity.txt");
    std::fs::rename(&env.identity, &moved).unwrap();
    let mut by_file = TestEnv::new();
    by_file
        .env
        .push(("SECRET_VAULT".into(), env.vault_location()));
    by_file.env.push((
        "SECRET_IDENTITY_FILE".into(),
        moved.to_str().unwrap().into(),
    ));
    assert_eq!(by_file.run(&["get", "S"]).ok().stdout, "v");
    let mut by_text = TestEnv::new();
    by_text
        .env
        .push(("SECRET_VAULT".into(), env.vault_location()));
    by_text.env.push(("SECRET_IDENTITY".into(), text));
    assert_eq!(by_text.run(&["get", "S"]).ok().stdout, "v");
}

#[test]
fn loose_identity_permissions_warn_but_work() {
    let env = TestEnv::init();
    env.set("S", "v");
    std::fs::set_permissions(&env.identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = env
        .run(&["get", "S"])
        .ok()
        .stderr_has("readable by others")
        .stderr_has("chmod 600");
    assert_eq!(run.stdout, "v");
}

#[test]
fn a_vault_from_a_newer_schema_is_refused_untouched() {
    let env = TestEnv::init();
    env.set("S", "v");
    env.sql("PRAGMA user_version = 42");
    let before = std::fs::read(&env.vault).unwrap();
    env.run(&["get", "S"])
        .code(1)
        .stderr_has("schema version 42")
        .stderr_has("upgrade secret");
    assert_eq!(std::fs::read(&env.vault).unwrap(), before);
}

#[test]
fn a_flipped_ciphertext_byte_is_an_integrity_failure() {
    let env = TestEnv::init();
    env.set("TAMPERED", "secret-value-1");
    // Flip the low bit of the first ciphertext byte.
    let hex = env.sql("SELECT hex(ciphertext) FROM versions WHERE name='TAMPERED'");
    let mut bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    bytes[0] ^= 0x01;
    let flipped: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    env.sql(&format!(
        "UPDATE versions SET ciphertext = X'{flipped}' WHERE name='TAMPERED'"
    ));
    let run = env
        .run(&["get", "TAMPERED"])
        .code(7)
        .stderr_has("version 1 of TAMPERED");
    assert!(run.stdout.is_empty());
    assert!(!run.stderr.contains("secret-value"));
}

#[test]
fn a_ciphertext_moved_to_another_row_is_an_integrity_failure() {
    let env = TestEnv::init();
    env.set("FROM", "value-from");
    env.set("TO", "value-to");
    env.sql(
        "UPDATE versions SET nonce = (SELECT nonce FROM versions WHERE name='FROM'), \
         ciphertext = (SELECT ciphertext FROM versions WHERE name='FROM') WHERE name='TO'",
    );
    let run = env
        .run(&["get", "TO"])
        .code(7)
        .stderr_has("version 1 of TO");
    assert!(!run.stdout.contains("value-from"));
    assert_eq!(env.get("FROM"), "value-from");
    // And onto another version of the same secret.
    env.set("FROM", "value-from-2");
    env.sql(
        "UPDATE versions SET nonce = (SELECT nonce FROM versions WHERE name='FROM' AND version=1), \
         ciphertext = (SELECT ciphertext FROM versions WHERE name='FROM' AND version=1) \
         WHERE name='FROM' AND version=2",
    );
    env.run(&["get", "FROM"])
        .code(7)
        .stderr_has("version 2 of FROM");
}

#[test]
fn a_replaced_keyring_is_caught_by_the_key_check() {
    let victim = TestEnv::init();
    victim.set("S", "v");
    let attacker = TestEnv::init();
    let wrapped = attacker.sql("SELECT hex(wrapped_key) FROM keyring");
    let recipients = attacker.sql("SELECT recipients FROM keyring");
    victim.sql(&format!(
        "UPDATE keyring SET wrapped_key = X'{wrapped}', recipients = '{recipients}'"
    ));
    let mut as_attacker = TestEnv::new();
    as_attacker
        .env
        .push(("SECRET_VAULT".into(), victim.vault_location()));
    as_attacker.env.push((
        "SECRET_IDENTITY_FILE".into(),
        attacker.identity.to_str().unwrap().into(),
    ));
    as_attacker
        .run(&["get", "S"])
        .code(7)
        .stderr_has("does not belong to this vault");
}

#[test]
fn passphrase_vaults_unlock_with_the_passphrase_only() {
    let mut env = TestEnv::new();
    env.env.push(("SECRET_SCRYPT_LOG_N".into(), "10".into()));
    env.env
        .push(("SECRET_PASSPHRASE".into(), "correct horse battery".into()));
    let run = env.run(&["init", "--passphrase"]).ok();
    assert!(!run.stdout.contains("created identity"), "{}", run.stdout);
    assert!(!env.identity.exists());
    env.set("P", "passphrase-protected");
    assert_eq!(env.get("P"), "passphrase-protected");
    env.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    env.env.push(("SECRET_PASSPHRASE".into(), "wrong".into()));
    env.run(&["get", "P"])
        .code(5)
        .stderr_has("cannot unlock vault: the passphrase is wrong");
    env.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    // No terminal and no SECRET_PASSPHRASE: a clear refusal, not a hang.
    env.run(&["get", "P"])
        .code(5)
        .stderr_has("SECRET_PASSPHRASE");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "3  not found",
        "4  conflict",
        "5  vault locked",
        "6  rotation failed",
        "7  integrity",
    ] {
        assert!(text.contains(line), "{line} missing from --help");
    }
    let bad = std::process::Command::new(BIN)
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn after_a_change_the_database_file_alone_holds_it() {
    let env = TestEnv::init();
    env.set("COPY_ME", "copied-value");
    env.get("COPY_ME");
    // A copy of the file alone (as `cp` or a volume upload makes) has every change.
    let copy = env.path("copy.db");
    std::fs::copy(&env.vault, &copy).unwrap();
    let run = env
        .run(&["--vault", copy.to_str().unwrap(), "get", "COPY_ME"])
        .ok();
    assert_eq!(run.stdout, "copied-value");
}

#[test]
fn reads_leave_a_bounded_wal_and_a_change_empties_it() {
    let env = TestEnv::init();
    env.set("READ_ME", "read-value");
    let wal = env.vault.with_file_name("vault.db-wal");
    // Each read commits its audit entry (a few WAL frames) without folding it into the
    // file; a read that finds more than 64 frames checkpoints on close.
    let frame = 4096 + 24;
    let mut largest = 0;
    for _ in 0..60 {
        assert_eq!(env.get("READ_ME"), "read-value");
        largest = largest.max(read_or_empty(&wal).len());
    }
    assert!(
        largest > 0,
        "reads should leave their audit entries in the WAL"
    );
    assert!(
        largest <= 32 + (64 + 8) * frame,
        "the WAL grew to {largest} bytes over 60 reads"
    );
    env.set("READ_ME", "changed-value");
    assert_eq!(
        read_or_empty(&wal).len(),
        0,
        "a change folds the WAL on close"
    );
    env.run(&["audit", "verify"]).ok();
}

// The same tests on PostgreSQL (see `util::on_both_stores!`).
crate::on_both_stores! {
    set_get_round_trips_and_get_prints_no_newline_on_a_pipe,
    versions_labels_previous_and_json,
    list_shows_names_and_versions_never_values,
    generate_uses_length_and_charset,
    compare_and_set_creates_only_once_and_checks_the_current_version,
    concurrent_compare_and_set_has_exactly_one_winner,
    bad_names_values_and_versions_are_refused_and_write_nothing,
    wrong_identity_is_refused_and_changes_no_data,
    no_identity_anywhere_says_where_to_put_one,
    loose_identity_permissions_warn_but_work,
    a_ciphertext_moved_to_another_row_is_an_integrity_failure,
    passphrase_vaults_unlock_with_the_passphrase_only,
    a_missing_vault_says_how_to_create_one,
    delete_hides_undelete_restores_destroy_wipes_one_version,
    identity_from_env_text_and_env_file_unlock,
    a_replaced_keyring_is_caught_by_the_key_check,
    a_flipped_ciphertext_byte_is_an_integrity_failure,
}
