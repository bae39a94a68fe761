//! The audit log through the CLI: what gets recorded, filters, verification against
//! each kind of tampering done with the sqlite3 CLI, and failing closed.

use crate::util::{contains, read_or_empty, TestEnv};

fn actions(entries: &[serde_json::Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_command_is_logged_with_actor_action_name_version_and_outcome() {
    let env = TestEnv::init();
    env.set("JWT_SECRET", "value-one");
    env.set("JWT_SECRET", "value-two");
    env.get("JWT_SECRET");
    env.run(&["get", "JWT_SECRET", "--previous"]).ok();
    env.run(&["list"]).ok();
    env.run(&["history", "JWT_SECRET"]).ok();
    env.run(&["delete", "JWT_SECRET"]).ok();
    env.run(&["undelete", "JWT_SECRET"]).ok();
    env.run(&["destroy", "JWT_SECRET", "--version", "1"]).ok();
    let entries = env.audit(&[]);
    assert_eq!(
        actions(&entries),
        ["init", "set", "set", "get", "get", "list", "history", "delete", "undelete", "destroy"]
    );
    for e in &entries {
        assert_eq!(e["actor"], "user:tester");
        assert!(e["pid"].as_u64().unwrap() > 0);
        assert_eq!(e["outcome"], "ok");
        assert_eq!(e["request_id"].as_str().unwrap().len(), 16);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(entries[0]["secret"], serde_json::Value::Null);
    assert_eq!(entries[1]["secret"], "JWT_SECRET");
    assert_eq!(entries[2]["version"], 2);
    assert_eq!(entries[3]["version"], 2);
    assert_eq!(entries[4]["version"], 1);
    assert_eq!(entries[4]["details"]["selector"], "previous");
    assert_eq!(entries[9]["version"], 1);
    // Sets carry a keyed fingerprint of the value, never the value.
    let fp1 = entries[1]["details"]["fingerprint"].as_str().unwrap();
    let fp2 = entries[2]["details"]["fingerprint"].as_str().unwrap();
    assert_eq!(fp1.len(), 24);
    assert_ne!(fp1, fp2);
    // Reading the log is itself logged.
    let again = env.audit(&[]);
    assert_eq!(again.last().unwrap()["action"], "audit.read");
}

#[test]
fn refusals_are_logged_with_their_error_code() {
    let env = TestEnv::init();
    env.set("K", "v");
    env.run_with(&["set", "sk-live-looks-like-a-value"], b"x")
        .code(2);
    env.run_with(&["set", "K", "--if-version", "9"], b"x")
        .code(4);
    env.run(&["get", "NOPE"]).code(3);
    env.run_with(&["set", "BIG"], &vec![b'a'; 70_000]).code(2);
    let entries = env.audit(&[]);
    let refused: Vec<(String, String, serde_json::Value)> = entries
        .iter()
        .filter(|e| e["outcome"] != "ok")
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
                e["secret"].clone(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            ("set".into(), "invalid_name".into(), serde_json::Value::Null),
            ("set".into(), "conflict".into(), "K".into()),
            ("get".into(), "not_found".into(), "NOPE".into()),
            ("set".into(), "invalid_value".into(), "BIG".into()),
        ]
    );
    // The invalid name is not recorded anywhere: it may have been a value.
    assert!(!env.sql("SELECT * FROM audit_log").contains("sk-live"));
}

#[test]
fn failed_unlocks_join_the_chain_at_the_next_unlock() {
    let env = TestEnv::init();
    let other = env.path("other.txt");
    std::fs::write(&other, include_str!("../fixtures/other-identity.txt")).unwrap();
    env.run(&["--identity", other.to_str().unwrap(), "list"])
        .code(5);
    env.run(&["list"]).ok();
    let entries = env.audit(&[]);
    let unlock = entries
        .iter()
        .find(|e| e["action"] == "unlock")
        .expect("unlock entry");
    assert_eq!(unlock["outcome"], "locked");
    assert_eq!(unlock["details"]["recorded_without_key"], true);
    assert_eq!(env.sql("SELECT count(*) FROM audit_unkeyed"), "0");
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn filters_answer_who_touched_what_since_when() {
    let env = TestEnv::init();
    env.set("OPENAI_API_KEY", "sk-1");
    env.set("OTHER", "o");
    env.get("OPENAI_API_KEY");
    let mut bob = TestEnv::new();
    bob.env.push(("SECRET_VAULT".into(), env.vault_location()));
    bob.env.push((
        "SECRET_IDENTITY_FILE".into(),
        env.identity.to_str().unwrap().into(),
    ));
    let mut cmd = bob.command(&["get", "OPENAI_API_KEY"]);
    cmd.env("USER", "bob");
    assert!(cmd.output().unwrap().status.success());

    let by_secret = env.audit(&["--secret", "OPENAI_API_KEY"]);
    assert_eq!(actions(&by_secret), ["set", "get", "get"]);
    let by_bob = env.audit(&["--actor", "bob"]);
    assert_eq!(by_bob.len(), 1);
    assert_eq!(by_bob[0]["actor"], "user:bob");
    let gets = env.audit(&[
        "--action",
        "get",
        "--secret",
        "OPENAI_API_KEY",
        "--since",
        "1h",
    ]);
    assert_eq!(gets.len(), 2);
    assert!(env.audit(&["--since", "2999-01-01"]).is_empty());
    let last = env.audit(&["--limit", "2"]);
    assert_eq!(last.len(), 2);
    assert!(last[0]["seq"].as_u64() < last[1]["seq"].as_u64());
    let reads = env.audit(&["--action", "audit"]);
    assert!(reads
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("audit.")));
    env.run(&["audit", "--since", "yesterday-ish"])
        .code(2)
        .stderr_has("--since");
    let table = env
        .run(&["audit", "--secret", "OPENAI_API_KEY"])
        .ok()
        .stdout;
    assert!(
        table.contains("user:bob") && table.contains("OPENAI_API_KEY"),
        "{table}"
    );
}

#[test]
fn verify_prints_count_and_head_and_accepts_it_later() {
    let env = TestEnv::init();
    env.set("A", "1");
    let run = env.run(&["audit", "verify"]).ok();
    assert!(
        run.stdout
            .contains("audit chain intact: 2 entries verified"),
        "{}",
        run.stdout
    );
    let head = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap()
        .to_string();
    let (seq, mac) = head.split_once(':').unwrap();
    assert_eq!(seq, "3");
    assert_eq!(mac.len(), 64);
    assert!(mac
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    env.set("A", "2");
    env.run(&["audit", "verify", "--expect-head", &head]).ok();
    env.run(&["audit", "verify", "--expect-head", "3:00"])
        .code(2);
}

/// Sets up a vault with a few entries and returns it with the head noted by `verify`.
fn logged_vault() -> (TestEnv, String) {
    let env = TestEnv::init();
    for i in 0..4 {
        env.set("S", &format!("value-{i}"));
    }
    let out = env.run(&["audit", "verify"]).ok().stdout;
    let head = out
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap()
        .to_string();
    (env, head)
}

#[test]
fn editing_one_field_is_caught_at_that_entry() {
    let (env, _) = logged_vault();
    env.sql("UPDATE audit_log SET actor = 'user:someone-else' WHERE seq = 3");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("audit chain broken at sequence 3");
    let (env, _) = logged_vault();
    env.sql("UPDATE audit_log SET outcome = 'not_found' WHERE seq = 2");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 2");
}

#[test]
fn deleting_a_middle_entry_is_caught() {
    let (env, _) = logged_vault();
    env.sql("DELETE FROM audit_log WHERE seq = 3");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 3")
        .stderr_has("missing");
    // Renumbering the rest to close the gap does not help.
    env.sql("UPDATE audit_log SET seq = seq - 1 WHERE seq > 3");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 3");
}

#[test]
fn swapping_two_entries_is_caught() {
    let (env, _) = logged_vault();
    env.sql(
        "UPDATE audit_log SET seq = -1 WHERE seq = 2; \
         UPDATE audit_log SET seq = 2 WHERE seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE seq = -1;",
    );
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 2");
}

#[test]
fn deleting_the_newest_entry_is_caught_by_the_sealed_head() {
    let (env, _) = logged_vault();
    let last: u64 = env.sql("SELECT max(seq) FROM audit_log").parse().unwrap();
    env.sql(&format!("DELETE FROM audit_log WHERE seq = {last}"));
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has(&format!("sequence {last}"));
}

#[test]
fn a_rolled_back_log_is_caught_by_a_head_noted_earlier() {
    // An attacker who kept an older copy of the log and its head can put both back
    // consistently; only a head noted outside the vault catches that.
    let (env, old_head) = logged_vault();
    let old_seq: u64 = old_head.split_once(':').unwrap().0.parse().unwrap();
    let saved = env.sql("SELECT hex(mac) || '|' || hex(seal) FROM audit_head");
    env.set("S", "later");
    let out = env.run(&["audit", "verify"]).ok().stdout;
    let noted = out
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap()
        .to_string();
    let (mac, seal) = saved.split_once('|').unwrap();
    env.sql(&format!(
        "DELETE FROM audit_log WHERE seq > {old_seq}; \
         UPDATE audit_head SET seq = {old_seq}, mac = X'{mac}', seal = X'{seal}'"
    ));
    env.run(&["audit", "verify"]).ok();
    // The plain check above appended entry old_seq + 1 again; the noted head is further on.
    env.run(&["audit", "verify", "--expect-head", &noted])
        .code(7)
        .stderr_has("expected head");
}

#[test]
fn a_forged_head_without_the_key_is_caught() {
    let (env, _) = logged_vault();
    let last: u64 = env.sql("SELECT max(seq) FROM audit_log").parse().unwrap();
    env.sql(&format!(
        "DELETE FROM audit_log WHERE seq = {last}; \
         UPDATE audit_head SET seq = {prev}, mac = (SELECT mac FROM audit_log WHERE seq = {prev})",
        prev = last - 1
    ));
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("head record was altered");
}

#[test]
fn no_value_appears_in_the_audit_table_or_the_export() {
    let env = TestEnv::init();
    let values = ["audit-leak-check-1a2b", "audit-leak-check-3c4d"];
    for v in values {
        env.set("LEAK", v);
        env.get("LEAK");
    }
    env.run_with(
        &["set", "LEAK", "--if-version", "99"],
        b"audit-leak-check-refused",
    )
    .code(4);
    let export = env.path("audit.jsonl");
    env.run(&["audit", "export", export.to_str().unwrap()]).ok();
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.lines().count() >= 6);
    for line in exported.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let table = env.sql("SELECT * FROM audit_log");
    let mut db = read_or_empty(&env.vault);
    db.extend(read_or_empty(&env.vault.with_file_name("vault.db-wal")));
    for v in values.iter().chain(&["audit-leak-check-refused"]) {
        assert!(!exported.contains(v), "{v} in export");
        assert!(!table.contains(v), "{v} in audit table");
        assert!(!contains(&db, v.as_bytes()), "{v} in the file");
    }
}

#[test]
fn an_unwritable_audit_log_makes_get_fail_without_the_value() {
    let env = TestEnv::init();
    env.set("GUARDED", "must-not-be-printed");
    env.sql(
        "CREATE TRIGGER audit_read_only BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit log is read-only'); END;",
    );
    let run = env
        .run(&["get", "GUARDED"])
        .code(1)
        .stderr_has("cannot write the audit log");
    assert!(run.stdout.is_empty());
    assert!(!run.stderr.contains("must-not-be-printed"));
    // Writes fail closed too: no version without its entry.
    env.run_with(&["set", "GUARDED"], b"new").code(1);
    assert_eq!(
        env.sql("SELECT count(*) FROM versions WHERE name='GUARDED'"),
        "1"
    );
}

// The same tests on PostgreSQL (see `util::on_both_stores!`).
crate::on_both_stores! {
    every_command_is_logged_with_actor_action_name_version_and_outcome,
    refusals_are_logged_with_their_error_code,
    failed_unlocks_join_the_chain_at_the_next_unlock,
    filters_answer_who_touched_what_since_when,
    verify_prints_count_and_head_and_accepts_it_later,
    editing_one_field_is_caught_at_that_entry,
    deleting_a_middle_entry_is_caught,
    swapping_two_entries_is_caught,
    deleting_the_newest_entry_is_caught_by_the_sealed_head,
    a_rolled_back_log_is_caught_by_a_head_noted_earlier,
    a_forged_head_without_the_key_is_caught,
    no_value_appears_in_the_audit_table_or_the_export,
    // an_unwritable_audit_log_makes_get_fail_without_the_value stays SQLite-only: it
    // makes the log unwritable with a SQLite trigger (RAISE(ABORT)).
}
