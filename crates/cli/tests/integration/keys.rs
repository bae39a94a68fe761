//! Who can unlock a vault and with which key: `recipients`, `passphrase`, `rekey` —
//! including a rekey killed at every stage.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{contains, fill_value, read_or_empty, TestEnv};

const OTHER: &str = include_str!("../fixtures/other-identity.txt");
const OTHER_RECIPIENT: &str = "age1eru3rrf0qw2r9wfxy4luvq4z5xpeskaprwwfthz49w8rnm4cxe9s86c53r";

fn epoch(env: &TestEnv) -> u64 {
    let out = env.run(&["recipients", "list", "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["epoch"].as_u64().unwrap()
}

fn other_identity(env: &TestEnv) -> String {
    let path = env.path("other.txt");
    std::fs::write(&path, OTHER).unwrap();
    path.to_str().unwrap().to_string()
}

fn actions(env: &TestEnv) -> Vec<String> {
    env.audit(&[])
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_removed_recipient_cannot_unlock_and_is_told_to_rekey() {
    let env = TestEnv::init();
    let other = other_identity(&env);
    env.set("SHARED", "for-both");
    env.run(&["--identity", &other, "get", "SHARED"]).code(5);

    let run = env.run(&["recipients", "add", OTHER_RECIPIENT]).ok();
    assert!(
        run.stdout.contains("wrapped to 2 recipient(s)"),
        "{}",
        run.stdout
    );
    env.run(&["recipients", "add", OTHER_RECIPIENT])
        .ok()
        .stdout
        .contains("already a recipient")
        .then_some(())
        .unwrap();
    let list = env.run(&["recipients", "list"]).ok().stdout;
    assert!(list.contains(OTHER_RECIPIENT), "{list}");
    assert!(list.contains("passphrase: no"), "{list}");
    let out = env
        .run(&["--identity", &other, "get", "SHARED"])
        .ok()
        .stdout;
    assert_eq!(out, "for-both");

    let run = env.run(&["recipients", "remove", OTHER_RECIPIENT]).ok();
    assert!(run.stdout.contains("removed recipient"), "{}", run.stdout);
    assert!(run.stderr.contains("secret rekey"), "{}", run.stderr);
    env.run(&["--identity", &other, "get", "SHARED"])
        .code(5)
        .stderr_has("cannot unlock vault");
    // Its wrapped copy is gone from the file and its WAL, not just unlinked.
    let keyring = env.sql("SELECT recipients FROM keyring");
    assert!(!keyring.contains(OTHER_RECIPIENT), "{keyring}");
    assert_eq!(env.get("SHARED"), "for-both");
    let log = actions(&env);
    for expected in [
        "recipients.add:ok",
        "recipients.list:ok",
        "recipients.remove:ok",
    ] {
        assert!(
            log.iter().any(|a| a == expected),
            "{expected} not in {log:?}"
        );
    }
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn bad_recipients_are_refused_and_change_nothing() {
    let env = TestEnv::init();
    let keyring = env.dump(&["keyring"]);
    env.run(&["recipients", "add", "age1notarecipient"])
        .code(2)
        .stderr_has("invalid age recipient");
    env.run(&["recipients", "remove", OTHER_RECIPIENT])
        .code(3)
        .stderr_has("not a recipient of this vault");
    // A pasted secret key is refused without echoing it, and recorded nowhere.
    let secret_line = OTHER.lines().last().unwrap();
    let run = env.run(&["recipients", "add", secret_line]).code(2);
    assert!(run.stderr.contains("not a recipient"), "{}", run.stderr);
    let key_body = &secret_line["AGE-SECRET-KEY-1".len()..];
    assert!(!run.stderr.contains(key_body));
    assert!(!env.sql("SELECT * FROM audit_log").contains(key_body));
    let mut file = read_or_empty(&env.vault);
    file.extend(read_or_empty(&env.vault.with_file_name("vault.db-wal")));
    assert!(!contains(&file, key_body.as_bytes()));
    // The only recipient of a vault without a passphrase is its last way to unlock.
    let own = env.sql("SELECT recipients FROM keyring WHERE kind = 'recipients'");
    env.run(&["recipients", "remove", &own])
        .code(4)
        .stderr_has("last way to unlock");
    assert_eq!(env.dump(&["keyring"]), keyring);
    env.run(&["get", "NOTHING"]).code(3);
}

#[test]
fn passphrase_add_and_remove_keep_a_way_to_unlock() {
    let mut env = TestEnv::init();
    env.env.push(("SECRET_SCRYPT_LOG_N".into(), "10".into()));
    env.set("P", "value");
    env.env
        .push(("SECRET_PASSPHRASE".into(), "horse battery".into()));
    env.run(&["passphrase", "add"]).ok();
    env.run(&["passphrase", "add"])
        .code(4)
        .stderr_has("already has a passphrase");
    // The passphrase alone opens it now: no identity anywhere.
    let no_identity = |env: &TestEnv, args: &[&str]| {
        let out = env
            .command(args)
            .env("XDG_CONFIG_HOME", env.path("elsewhere"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    assert_eq!(no_identity(&env, &["get", "P"]), (0, "value".to_string()));
    let run = env.run(&["passphrase", "remove"]).ok();
    assert!(run.stderr.contains("secret rekey"), "{}", run.stderr);
    assert_eq!(no_identity(&env, &["get", "P"]).0, 5);
    env.run(&["passphrase", "remove"])
        .code(3)
        .stderr_has("no passphrase");
    env.run(&["audit", "verify"]).ok();

    // A passphrase-only vault keeps its passphrase.
    let mut only = TestEnv::new();
    only.env = env.env.clone();
    only.run(&["init", "--passphrase"]).ok();
    let keyring = only.dump(&["keyring"]);
    only.run(&["passphrase", "remove"])
        .code(4)
        .stderr_has("last way to unlock");
    assert_eq!(only.dump(&["keyring"]), keyring);
}

#[test]
fn rekey_reencrypts_every_version_revokes_tokens_and_keeps_the_chain_verifiable() {
    let env = TestEnv::init();
    env.fill(20, 5);
    env.set("EXTRA", "one");
    env.run(&["delete", "FILL_3"]).ok();
    env.run(&["destroy", "FILL_4", "--version", "1"]).ok();
    let token = env
        .run(&["token", "create", "--name", "ci", "--scope", "secrets:list"])
        .ok();
    assert!(!token.stdout.is_empty());
    let before_ct = env.sql("SELECT name, version, hex(ciphertext) FROM versions ORDER BY 1, 2");
    let before_check = env.sql("SELECT hex(key_check) FROM vault");
    let entries_before: u64 = env.sql("SELECT count(*) FROM audit_log").parse().unwrap();

    let run = env.run(&["rekey"]).ok();
    assert!(run.stdout.contains("key epoch 2"), "{}", run.stdout);
    assert!(
        run.stdout.contains("100 versions re-encrypted"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("revoked 1 API token"), "{}", run.stdout);
    // No progress bar in a pipe.
    assert!(!run.stderr.contains("re-encrypting"), "{}", run.stderr);

    // Every stored ciphertext changed; the destroyed one stays destroyed.
    let after_ct = env.sql("SELECT name, version, hex(ciphertext) FROM versions ORDER BY 1, 2");
    let (before, after): (Vec<_>, Vec<_>) =
        (before_ct.lines().collect(), after_ct.lines().collect());
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        if b.ends_with('|') {
            assert_eq!(b, a, "a destroyed version stays destroyed");
        } else {
            assert_ne!(b, a);
        }
    }
    assert_ne!(env.sql("SELECT hex(key_check) FROM vault"), before_check);
    env.run(&["undelete", "FILL_3"]).ok();
    assert_eq!(env.get("FILL_3"), fill_value(3, 5));
    assert_eq!(env.get("EXTRA"), "one");
    env.run(&["get", "FILL_4", "--version", "1"]).code(3);
    env.check_filled(4, 5);
    // The chain verifies across the change, entries of both epochs included.
    let verify = env.run(&["audit", "verify"]).ok().stdout;
    let verified: u64 = verify
        .split("intact: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(verified > entries_before, "{verify}");
    let rekey = env.audit(&["--action", "rekey"]);
    assert_eq!(rekey.len(), 1);
    assert_eq!(rekey[0]["details"]["epoch"], 2);
    assert_eq!(rekey[0]["details"]["tokens_revoked"], 1);
    let tokens = env.run(&["token", "list", "--json"]).ok().stdout;
    assert!(tokens.contains("\"revoked\""), "{tokens}");
    // Editing an entry of the first epoch is still caught, with the retired key.
    env.sql("UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 2");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("sequence 2");
}

#[test]
fn a_third_epoch_still_verifies_the_first_and_a_dropped_retired_key_is_caught() {
    let env = TestEnv::init();
    env.set("A", "1");
    env.run(&["rekey"]).ok();
    env.set("A", "2");
    env.run(&["rekey"]).ok();
    assert_eq!(epoch(&env), 3);
    assert_eq!(env.run(&["get", "A", "--version", "1"]).ok().stdout, "1");
    env.run(&["audit", "verify"]).ok();
    assert_eq!(
        env.sql("SELECT group_concat(epoch) FROM retired_keys"),
        "1,2"
    );
    env.sql("DELETE FROM retired_keys WHERE epoch = 1");
    env.run(&["audit", "verify"])
        .code(7)
        .stderr_has("key epoch 1");
}

#[test]
fn rekey_of_a_vault_with_a_passphrase_needs_it() {
    let mut env = TestEnv::init();
    env.env.push(("SECRET_SCRYPT_LOG_N".into(), "10".into()));
    env.set("P", "kept");
    env.env
        .push(("SECRET_PASSPHRASE".into(), "the right one".into()));
    env.run(&["passphrase", "add"]).ok();
    env.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    let check = env.sql("SELECT hex(key_check) FROM vault");
    // No terminal, no SECRET_PASSPHRASE: refused, nothing changed.
    env.run(&["rekey"]).code(5).stderr_has("SECRET_PASSPHRASE");
    env.env
        .push(("SECRET_PASSPHRASE".into(), "a wrong one".into()));
    env.run(&["rekey"])
        .code(5)
        .stderr_has("passphrase given is not the vault's");
    assert_eq!(env.sql("SELECT hex(key_check) FROM vault"), check);
    env.env.retain(|(k, _)| k != "SECRET_PASSPHRASE");
    env.env
        .push(("SECRET_PASSPHRASE".into(), "the right one".into()));
    env.run(&["rekey"]).ok();
    // Both copies hold the new key: the passphrase alone opens it.
    let out = env
        .command(&["get", "P"])
        .env("XDG_CONFIG_HOME", env.path("elsewhere"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"kept");
    assert_eq!(env.get("P"), "kept");
}

#[test]
fn rekey_waits_for_an_open_rotation() {
    let env = TestEnv::init();
    env.set("JWT_SECRET", "current");
    env.sql(
        "INSERT INTO rotations (id, secret, generator, trigger, state, started_at, updated_at)
         VALUES ('rot_open', 'JWT_SECRET', 'jwt-hmac', 'manual', 'push', 1, 1)",
    );
    let check = env.sql("SELECT hex(key_check) FROM vault");
    let versions = env.dump(&["versions"]);
    env.run(&["rekey"])
        .code(4)
        .stderr_has("rotation rot_open of JWT_SECRET is in progress");
    assert_eq!(env.sql("SELECT hex(key_check) FROM vault"), check);
    assert_eq!(env.dump(&["versions"]), versions);
    let refused = env.audit(&["--action", "rekey"]);
    assert_eq!(refused[0]["outcome"], "conflict");
}

/// SIGKILL at many moments of a rekey of 20,000 versions: after each, the vault opens
/// with exactly one key (the old or the new), verifies, and reads back.
#[test]
fn a_rekey_killed_at_any_moment_leaves_one_key_fully_in_force() {
    let env = TestEnv::init();
    let (secrets, versions) = (200, 100);
    env.fill(secrets, versions);
    let wal = env.vault.with_file_name("vault.db-wal");
    let mut e = epoch(&env);
    let (mut kept, mut switched) = (0, 0);
    let delays = [
        0, 20, 60, 120, 200, 300, 400, 500, 650, 800, 950, 1100, 1300,
    ];
    for (round, delay) in delays.into_iter().map(Some).chain([None]).enumerate() {
        let mut child = env
            .command(&["rekey"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        match delay {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            // Last round: kill while the commit is writing the WAL.
            None => {
                while std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) < 512 * 1024
                    && start.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let now = epoch(&env);
        assert!(
            now == e || now == e + 1,
            "round {round}: epoch {e} -> {now}"
        );
        if now == e {
            kept += 1;
        } else {
            switched += 1;
        }
        e = now;
        env.run(&["audit", "verify"]).ok();
        let s = round % secrets;
        assert_eq!(env.get(&format!("FILL_{s}")), fill_value(s, versions));
    }
    assert!(kept > 0, "no kill landed before a commit");
    // Whatever happened, one more rekey runs to the end, and every value reads back.
    env.run(&["rekey"]).ok();
    assert_eq!(epoch(&env), e + 1);
    env.check_filled(secrets, versions);
    env.run(&["audit", "verify"]).ok();
    eprintln!("rekeys killed: {kept} left the old key, {switched} the new one");
}

#[test]
fn rekey_shows_progress_on_a_terminal() {
    if !crate::util::have("script") {
        eprintln!("SKIPPED: `script` (util-linux) is not installed to give rekey a terminal");
        return;
    }
    let env = TestEnv::init();
    env.fill(10, 10);
    // `script` runs the command on a pseudo-terminal and copies what it draws.
    let template = env.command(&[]);
    let mut cmd = std::process::Command::new("script");
    cmd.env_clear().current_dir(env.dir.path());
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd
        .args(["-qec", &format!("{} rekey", crate::util::BIN), "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("re-encrypting"), "{shown}");
    assert!(shown.contains("/100 versions"), "{shown}");
    assert!(shown.contains("key epoch 2"), "{shown}");
}
