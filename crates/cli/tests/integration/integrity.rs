//! What someone with write access to the vault file (and without the vault key) can
//! do, done with the sqlite3 CLI, and what `secret` makes of it: erasing or
//! truncating the audit log, moving labels and version counters, flipping deleted and
//! destroyed flags, removing rows, escalating a token — each is exit 7 at the next
//! command, naming what was changed, with no value printed and nothing written.
//! And files that are not vaults are refused before anything writes to them.

use std::path::Path;

use crate::util::TestEnv;

/// A vault with secret A at versions 1..=3 (current 3, previous 2) and secret B.
fn three_versions() -> TestEnv {
    let env = TestEnv::init();
    for v in ["a-one", "a-two", "a-three"] {
        env.set("A", v);
    }
    env.set("B", "b-one");
    env
}

fn audit_rows(env: &TestEnv) -> String {
    env.sql("SELECT count(*) || ':' || max(seq) FROM audit_log")
}

// --- hole 1: the audit log cannot be erased, truncated or restarted ------------------

#[test]
fn an_erased_audit_log_is_exit_7_at_the_next_command_and_no_new_chain_starts() {
    let env = three_versions();
    env.sql("DELETE FROM audit_log; DELETE FROM audit_head;");
    let run = env
        .run(&["get", "A"])
        .code(7)
        .stderr_has("sealed head is missing");
    assert!(run.stdout.is_empty(), "a value left: {run:?}");
    env.run_with(&["set", "A"], b"new").code(7);
    env.run(&["list"]).code(7);
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sealed head record is missing");
    // Nothing was appended: the vault did not start a fresh chain at seq 1.
    assert_eq!(env.sql("SELECT count(*) FROM audit_log"), "0");
    assert_eq!(env.sql("SELECT count(*) FROM audit_head"), "0");
    assert_eq!(
        env.sql("SELECT max(version) FROM versions WHERE name='A'"),
        "3"
    );
}

#[test]
fn a_deleted_head_alone_is_exit_7() {
    let env = three_versions();
    env.sql("DELETE FROM audit_head");
    let before = audit_rows(&env);
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("sealed head is missing");
    assert_eq!(audit_rows(&env), before);
}

#[test]
fn deleting_the_oldest_entries_is_exit_7_at_the_next_command() {
    let env = three_versions();
    env.sql("DELETE FROM audit_log WHERE seq <= 3");
    let before = audit_rows(&env);
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("entries 1 to 3 of the audit log were deleted");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 1");
    assert_eq!(audit_rows(&env), before);
}

#[test]
fn deleting_every_entry_but_keeping_the_head_is_exit_7() {
    let env = three_versions();
    env.sql("DELETE FROM audit_log");
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("every entry of the audit log was deleted");
}

#[test]
fn truncating_the_newest_entries_is_exit_7_at_the_next_command() {
    let env = three_versions();
    let last: u64 = env.sql("SELECT max(seq) FROM audit_log").parse().unwrap();
    env.sql(&format!("DELETE FROM audit_log WHERE seq > {}", last - 2));
    env.run(&["history", "A"])
        .code(7)
        .stderr_has("newest entries deleted");
}

#[test]
fn renumbering_the_log_is_exit_7_at_the_next_command() {
    let env = three_versions();
    env.sql("UPDATE audit_log SET seq = seq + 100");
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("entries 1 to 100");
    let env = three_versions();
    // Shifting down by one (the first entry dropped) leaves the head's entry elsewhere.
    env.sql("DELETE FROM audit_log WHERE seq = 1; UPDATE audit_log SET seq = seq - 1");
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("newest entries deleted");
}

#[test]
fn an_entry_replaced_at_the_head_is_exit_7() {
    let env = three_versions();
    env.sql(
        "UPDATE audit_log SET mac = (SELECT mac FROM audit_log WHERE seq = 1) \
         WHERE seq = (SELECT max(seq) FROM audit_log)",
    );
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("entry at the sealed head was replaced");
}

#[test]
fn a_head_copied_from_another_vault_is_exit_7() {
    let env = three_versions();
    let other = three_versions();
    let head = other.sql("SELECT seq || '|' || hex(mac) || '|' || hex(seal) FROM audit_head");
    let parts: Vec<&str> = head.split('|').collect();
    env.sql(&format!(
        "UPDATE audit_head SET seq = {}, mac = X'{}', seal = X'{}'",
        parts[0], parts[1], parts[2]
    ));
    env.run(&["get", "A"])
        .code(7)
        .stderr_has("sealed head was altered");
}

// --- hole 2: the metadata that picks a ciphertext is bound to the vault key --------

/// Runs `sql` on a fresh vault, then `args`: exit 7 naming `names`, no value printed,
/// and the data tables exactly as the tampering left them.
#[track_caller]
fn tampered(sql: &str, args: &[&str], stdin: &[u8], names: &str) {
    let env = three_versions();
    env.sql(sql);
    let before = env.dump(&["secrets", "versions", "tokens"]);
    let run = env.run_with(args, stdin).code(7).stderr_has(names);
    for value in ["a-one", "a-two", "a-three", "b-one"] {
        assert!(!run.stdout.contains(value), "{sql}: {value} printed");
        assert!(!run.stderr.contains(value), "{sql}: {value} printed");
    }
    assert_eq!(
        env.dump(&["secrets", "versions", "tokens"]),
        before,
        "{sql}: the refused command wrote"
    );
    // The full check names it too.
    env.run(&["audit", "verify"]).code(7).stderr_has(names);
}

#[test]
fn a_moved_current_label_is_exit_7_naming_the_secret() {
    tampered(
        "UPDATE secrets SET current_version = 1 WHERE name = 'A'",
        &["get", "A"],
        b"",
        "metadata of A",
    );
}

#[test]
fn a_moved_previous_or_pending_label_is_exit_7() {
    tampered(
        "UPDATE secrets SET previous_version = 1 WHERE name = 'A'",
        &["get", "A", "--previous"],
        b"",
        "metadata of A",
    );
    tampered(
        "UPDATE secrets SET pending_version = 1 WHERE name = 'A'",
        &["get", "A"],
        b"",
        "metadata of A",
    );
    tampered(
        "UPDATE secrets SET current_version = NULL WHERE name = 'A'",
        &["history", "A"],
        b"",
        "metadata of A",
    );
}

#[test]
fn a_lowered_version_counter_cannot_make_set_reuse_a_number() {
    tampered(
        "DELETE FROM versions WHERE name = 'A' AND version = 3; \
         UPDATE secrets SET latest_version = 2, current_version = 2, previous_version = 1 \
         WHERE name = 'A'",
        &["set", "A"],
        b"reused",
        "metadata of A",
    );
    tampered(
        "UPDATE secrets SET latest_version = 2 WHERE name = 'A'",
        &["set", "A"],
        b"reused",
        "metadata of A",
    );
}

#[test]
fn a_flipped_deleted_flag_is_exit_7_either_way() {
    tampered(
        "UPDATE secrets SET deleted_at = 1 WHERE name = 'A'",
        &["get", "A"],
        b"",
        "metadata of A",
    );
    let env = three_versions();
    env.run(&["delete", "A"]).ok();
    env.sql("UPDATE secrets SET deleted_at = NULL WHERE name = 'A'");
    env.run(&["get", "A"]).code(7).stderr_has("metadata of A");
    env.run(&["undelete", "A"])
        .code(7)
        .stderr_has("metadata of A");
}

#[test]
fn a_destroyed_flag_or_a_wiped_ciphertext_is_exit_7() {
    tampered(
        "UPDATE versions SET nonce = NULL, ciphertext = NULL, destroyed_at = 5 \
         WHERE name = 'A' AND version = 3",
        &["get", "A"],
        b"",
        "metadata of A",
    );
    tampered(
        "UPDATE versions SET destroyed_at = 5 WHERE name = 'A' AND version = 2",
        &["get", "A", "--previous"],
        b"",
        "metadata of A",
    );
    tampered(
        "UPDATE versions SET ciphertext = NULL WHERE name = 'A' AND version = 1",
        &["get", "A", "--version", "1"],
        b"",
        "metadata of A",
    );
    // Un-destroying is impossible (the bytes are gone), and clearing the mark is caught.
    let env = three_versions();
    env.run(&["destroy", "A", "--version", "1"]).ok();
    env.sql("UPDATE versions SET destroyed_at = NULL WHERE name = 'A' AND version = 1");
    env.run(&["get", "A", "--version", "1"])
        .code(7)
        .stderr_has("metadata of A");
}

#[test]
fn a_removed_or_renumbered_version_row_is_exit_7() {
    tampered(
        "DELETE FROM versions WHERE name = 'A' AND version = 1",
        &["history", "A"],
        b"",
        "metadata of A",
    );
    tampered(
        "UPDATE versions SET version = 4 WHERE name = 'A' AND version = 1",
        &["get", "A"],
        b"",
        "metadata of A",
    );
    tampered(
        "UPDATE versions SET created_at = 0 WHERE name = 'A' AND version = 3",
        &["get", "A", "--json"],
        b"",
        "metadata of A",
    );
}

#[test]
fn a_changed_provider_handle_is_exit_7() {
    // The JWKS publishes public keys from this column: a planted key must not be served.
    tampered(
        r#"UPDATE versions SET meta = '{"jwk":{"kty":"OKP","x":"planted"}}' WHERE name = 'A' AND version = 3"#,
        &["get", "A"],
        b"",
        "metadata of A",
    );
}

#[test]
fn a_missing_or_borrowed_mac_is_exit_7() {
    tampered(
        "UPDATE secrets SET mac = NULL WHERE name = 'A'",
        &["get", "A"],
        b"",
        "metadata of A (its labels, versions or deleted and destroyed flags) has lost its MAC",
    );
    tampered(
        "UPDATE secrets SET mac = (SELECT mac FROM secrets WHERE name = 'B') WHERE name = 'A'",
        &["get", "A"],
        b"",
        "metadata of A",
    );
}

#[test]
fn a_secret_removed_whole_is_exit_7_not_not_found() {
    tampered(
        "DELETE FROM versions WHERE name = 'A'; DELETE FROM secrets WHERE name = 'A'",
        &["get", "A"],
        b"",
        "a secret was removed or added",
    );
    // Creating it afresh (version 1 again) is refused the same way.
    tampered(
        "DELETE FROM versions WHERE name = 'A'; DELETE FROM secrets WHERE name = 'A'",
        &["set", "A", "--if-version", "0"],
        b"again",
        "a secret was removed or added",
    );
    tampered(
        "DELETE FROM versions WHERE name = 'A'; DELETE FROM secrets WHERE name = 'A'",
        &["list"],
        b"",
        "a secret was removed or added",
    );
}

#[test]
fn a_secret_inserted_without_the_key_is_exit_7() {
    tampered(
        "INSERT INTO secrets (name, created_at, updated_at, latest_version, current_version) \
         SELECT 'C', created_at, updated_at, latest_version, current_version FROM secrets WHERE name = 'B'",
        &["list"],
        b"",
        "a secret was removed or added",
    );
}

#[test]
fn an_edited_token_is_exit_7_and_a_revoked_one_stays_revoked() {
    let env = three_versions();
    let created = env
        .run(&[
            "token",
            "create",
            "--name",
            "reader",
            "--scope",
            "secrets:read:B",
        ])
        .ok();
    let id = created
        .stderr
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    env.run(&["token", "list"]).ok();
    env.sql(&format!(
        "UPDATE tokens SET scopes = '[\"admin\"]' WHERE id = '{id}'"
    ));
    env.run(&["token", "list"])
        .code(7)
        .stderr_has(&format!("token {id}"));
    env.run(&["audit", "verify"]).code(7).stderr_has(&id);

    let env = three_versions();
    let created = env
        .run(&["token", "create", "--name", "old", "--scope", "admin"])
        .ok();
    let id = created
        .stderr
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    env.run(&["token", "revoke", &id]).ok();
    env.sql(&format!(
        "UPDATE tokens SET revoked_at = NULL WHERE id = '{id}'"
    ));
    env.run(&["token", "list"]).code(7).stderr_has(&id);
}

#[test]
fn every_write_path_keeps_the_metadata_verifiable() {
    let env = three_versions();
    env.run(&["delete", "B"]).ok();
    env.run(&["undelete", "B"]).ok();
    env.run(&["destroy", "A", "--version", "1"]).ok();
    env.run_with(&["set", "A", "--if-version", "3"], b"a-four")
        .ok();
    env.run_with(&["set", "NEW", "--if-version", "0"], b"n")
        .ok();
    env.run(&["set", "GEN", "--generate"]).ok();
    let created = env
        .run(&["token", "create", "--name", "t", "--scope", "admin"])
        .ok();
    let id = created
        .stderr
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    env.run(&["token", "revoke", &id]).ok();
    let verified = env.run(&["audit", "verify"]).ok().stdout;
    assert!(
        verified.contains("metadata intact: 4 secrets, 1 tokens"),
        "{verified}"
    );
    assert_eq!(env.get("A"), "a-four");
}

/// The write paths that came after the MACs: import, rekey (every MAC renewed under the
/// new key) and restore (the backup's MACs proven before it replaces the vault).
#[test]
fn import_rekey_and_restore_keep_the_metadata_verifiable_under_the_key_in_force() {
    let env = three_versions();
    std::fs::write(env.path("in.env"), "IMP=one\nA=a-imported\n").unwrap();
    env.run(&["import", "in.env", "--overwrite"]).ok();
    env.run(&["token", "create", "--name", "t", "--scope", "admin"])
        .ok();
    env.run(&["backup", "b.age"]).ok();
    env.run(&["rekey"]).ok();
    let verified = env.run(&["audit", "verify"]).ok().stdout;
    assert!(
        verified.contains("metadata intact: 3 secrets, 1 tokens"),
        "{verified}"
    );
    assert_eq!(env.get("A"), "a-imported");
    // The MACs are the new key's: a label moved now is still caught.
    env.sql("UPDATE secrets SET current_version = 1 WHERE name = 'A'");
    env.run(&["get", "A"]).code(7).stderr_has("metadata of A");
    // A rekey does not bless a change made without the key: refused, nothing rewritten.
    let wrapped = env.sql("SELECT hex(wrapped_key) FROM keyring");
    env.run(&["rekey"]).code(7).stderr_has("metadata of A");
    assert_eq!(env.sql("SELECT hex(wrapped_key) FROM keyring"), wrapped);
    // Restore proves the backup's MACs, then the restored vault verifies and reads.
    env.run(&["restore", "b.age", "--force"]).ok();
    env.run(&["audit", "verify"]).ok();
    assert_eq!(env.get("A"), "a-imported");
}

/// A backup whose metadata was changed without the key is refused by restore's proof,
/// and the vault it would replace is left as it was.
#[test]
fn restore_refuses_a_backup_with_tampered_metadata() {
    let env = three_versions();
    let other = TestEnv::new();
    // A copy of the vault, tampered, then backed up with the same key by the copy.
    std::fs::create_dir_all(other.path("data/secret")).unwrap();
    std::fs::copy(&env.vault, other.path("copy.db")).unwrap();
    let copy = other.path("copy.db");
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch("UPDATE secrets SET current_version = 1 WHERE name = 'A'")
        .unwrap();
    drop(conn);
    let identity = env.identity.to_str().unwrap();
    let copy_path = copy.to_str().unwrap();
    // A backup copies the file as it is (its audited entry goes in first)...
    env.run(&[
        "--vault",
        copy_path,
        "--identity",
        identity,
        "backup",
        "t.age",
    ])
    .ok();
    // ...and restore's proof checks every MAC before anything is replaced.
    let before = std::fs::read(&env.vault).unwrap();
    env.run(&["restore", "t.age", "--force"])
        .code(7)
        .stderr_has("metadata of A");
    assert_eq!(std::fs::read(&env.vault).unwrap(), before);
    assert_eq!(env.get("A"), "a-three");
}

// --- hole 6: a file that is not a vault is refused before anything writes to it -----

/// Every file beside `path` whose name starts with its name (the WAL and shm files).
fn siblings(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let mut found: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name) && n != name)
        .collect();
    found.sort();
    found
}

/// Runs every kind of command against `path`: each refuses (not exit 0), and the file's
/// bytes and its neighbours are as before.
#[track_caller]
fn refused_untouched(env: &TestEnv, path: &Path, reason: &str) {
    let before = std::fs::read(path).unwrap();
    let neighbours = siblings(path);
    let vault = path.to_str().unwrap();
    for args in [
        vec!["get", "A"],
        vec!["list"],
        vec!["audit", "verify"],
        vec!["history", "A"],
        vec!["token", "list"],
    ] {
        let mut all = vec!["--vault", vault];
        all.extend(args.iter());
        env.run(&all)
            .code(1)
            .stderr_has("is not a secret vault")
            .stderr_has(reason);
    }
    env.run_with(&["--vault", vault, "set", "A"], b"v")
        .code(1)
        .stderr_has(reason);
    env.run(&["--vault", vault, "init"]).code(4);
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "{reason}: bytes changed"
    );
    assert_eq!(
        siblings(path),
        neighbours,
        "{reason}: WAL or shm files appeared"
    );
}

#[test]
fn an_empty_file_is_not_a_vault_and_stays_empty() {
    let env = TestEnv::init();
    let path = env.path("empty.db");
    std::fs::write(&path, b"").unwrap();
    refused_untouched(&env, &path, "the file is empty");
}

#[test]
fn a_text_file_is_not_a_vault_and_stays_as_it_was() {
    let env = TestEnv::init();
    let path = env.path("notes.txt");
    std::fs::write(&path, "remember the milk\n".repeat(20)).unwrap();
    refused_untouched(&env, &path, "not an SQLite database");
    let short = env.path("short.bin");
    std::fs::write(&short, b"SQLite format 3\0 but cut short").unwrap();
    refused_untouched(&env, &short, "not an SQLite database");
}

#[test]
fn another_applications_sqlite_file_is_not_switched_to_wal_or_migrated() {
    let env = TestEnv::init();
    // Rollback journal, no application id: the usual case.
    let plain = env.path("app.db");
    let conn = rusqlite::Connection::open(&plain).unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('hello');")
        .unwrap();
    drop(conn);
    refused_untouched(&env, &plain, "another application");
    let conn = rusqlite::Connection::open(&plain).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "switched to WAL");
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "gained tables");
    drop(conn);

    // Its own application id, with a user_version that looks like ours.
    let tagged = env.path("tagged.db");
    let conn = rusqlite::Connection::open(&tagged).unwrap();
    conn.execute_batch(
        "PRAGMA application_id = 1234; PRAGMA user_version = 3; CREATE TABLE t (x);",
    )
    .unwrap();
    drop(conn);
    refused_untouched(&env, &tagged, "application id 0x000004d2");

    // Already in WAL mode (a file of an application that uses WAL too).
    let wal = env.path("walapp.db");
    let conn = rusqlite::Connection::open(&wal).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    refused_untouched(&env, &wal, "another application");

    // An empty SQLite database (a schema of nothing).
    let blank = env.path("blank.db");
    let conn = rusqlite::Connection::open(&blank).unwrap();
    conn.execute_batch("PRAGMA user_version = 1; VACUUM;")
        .unwrap();
    drop(conn);
    refused_untouched(&env, &blank, "no vault schema");
}

#[test]
fn a_vault_carries_the_application_id_from_init() {
    let env = TestEnv::init();
    assert_eq!(env.sql("PRAGMA application_id"), "1396920916"); // "SCRT"
                                                                // `file` and friends can tell it apart: the id sits at byte 68 of the header.
    let header = std::fs::read(&env.vault).unwrap();
    assert_eq!(&header[68..72], b"SCRT");
}

// --- hole 5: files are written through an exclusive temporary file ------------------

#[test]
fn audit_export_does_not_follow_a_symlink_planted_at_its_temporary_name() {
    let env = three_versions();
    let victim = env.path("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let export = env.path("audit.jsonl");
    // Where the export used to write with create+truncate, and a few more guesses.
    for planted in ["audit.tmp-secret", "audit.jsonl.tmp", ".secret-tmp"] {
        std::os::unix::fs::symlink(&victim, env.path(planted)).unwrap();
    }
    env.run(&["audit", "export", export.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&export).unwrap();
    assert!(meta.file_type().is_file(), "the export is a regular file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(text.lines().count() >= 5 && text.contains("\"action\":\"set\""));
}

#[test]
fn audit_export_replaces_a_symlink_at_its_destination_instead_of_writing_through() {
    let env = three_versions();
    let victim = env.path("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let export = env.path("shared-audit.jsonl");
    std::os::unix::fs::symlink(&victim, &export).unwrap();
    env.run(&["audit", "export", export.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(&export)
        .unwrap()
        .file_type()
        .is_file());
    // Nothing else was left in the folder.
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn init_never_writes_a_new_identity_through_a_dangling_symlink() {
    let env = TestEnv::new();
    let target = env.path("elsewhere/identity-here");
    std::fs::create_dir_all(env.identity.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &env.identity).unwrap();
    env.run(&["init"]).code(1).stderr_has("already exists");
    assert!(!target.exists(), "the identity went through the symlink");
    assert!(!env.vault.exists(), "a vault without its identity was made");
}

// --- times no calendar can print (found by the audit_entries fuzz target) ------------

#[test]
fn times_past_year_9999_print_instead_of_panicking() {
    let env = three_versions();
    // A token that never expires in practice, made through the CLI.
    env.run(&[
        "token",
        "create",
        "--name",
        "forever",
        "--scope",
        "admin",
        "--ttl",
        "100000000y",
    ])
    .ok()
    .stderr_has("expiring 9999-12-31T23:59:59Z");
    let run = env.run(&["token", "list", "--json"]).ok();
    assert!(run.stdout.contains("9999-12-31T23:59:59.999Z"), "{run:?}");
    // An audit entry's time edited to the largest integer: the log still prints (a
    // read does not verify the whole chain), and verification names the edit.
    env.sql("UPDATE audit_log SET at_ms = 9223372036854775807 WHERE seq = 2");
    let run = env.run(&["audit", "--json"]).ok();
    assert!(run.stdout.contains("\"time\":\"9999-12-31T23:59:59.999Z\""));
    env.run(&["audit"]).ok();
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 2");
    let env = three_versions();
    env.sql("UPDATE secrets SET updated_at = -9223372036854775808 WHERE name = 'B'");
    env.run(&["list"]).code(7).stderr_has("metadata of B");
}

// --- the same through the API ---------------------------------------------------------

#[test]
fn the_api_refuses_tampered_metadata_and_an_erased_log_without_sending_a_value() {
    use crate::serve::{free_port, wait_status};
    let env = three_versions();
    let token = env
        .run(&["token", "create", "--name", "api", "--scope", "admin"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let port = free_port();
    let _serve = crate::util::KillOnDrop::new(
        env.command(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-scheduler",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_status(&rt, &format!("{base}/readyz"), 200);
    let get = |path: &str| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    assert_eq!(get("/v1/secrets/A").0, 200);
    // serve opened a second connection at start (its audit check). Recognising the
    // file then must not have dropped the locks SQLite holds: if it had, this sqlite3
    // would think itself alone, checkpoint, and delete the WAL and shm under serve.
    env.sql("SELECT count(*) FROM secrets");
    for suffix in ["-wal", "-shm"] {
        let mut name = env.vault.as_os_str().to_owned();
        name.push(suffix);
        assert!(
            std::path::PathBuf::from(name).exists(),
            "vault.db{suffix} was deleted while serve had it open"
        );
    }
    env.sql("UPDATE secrets SET current_version = 1 WHERE name = 'A'");
    let (status, body) = get("/v1/secrets/A");
    assert_eq!(status, 500, "{body}");
    assert!(
        !body.contains("a-one") && !body.contains("a-three"),
        "{body}"
    );
    let (status, body) = get("/v1/secrets/A/versions");
    assert_eq!(status, 500, "{body}");
    // B is untouched and still served.
    let (status, body) = get("/v1/secrets/B");
    assert_eq!(status, 200);
    assert!(body.contains("b-one"));
    // An erased log stops every request, reads included.
    env.sql("DELETE FROM audit_log; DELETE FROM audit_head;");
    let (status, body) = get("/v1/secrets/B");
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("b-one"));
    assert_eq!(env.sql("SELECT count(*) FROM audit_log"), "0");
}
