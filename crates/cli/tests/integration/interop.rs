//! Interoperability with the real `age` CLI, both ways. `.ci/run` installs `age`, so
//! CI never skips; elsewhere a missing `age` skips with a printed reason.

use std::process::Command;

use crate::util::{have, TestEnv};

fn age_available() -> bool {
    if have("age") && have("age-keygen") {
        return true;
    }
    eprintln!("SKIPPED: the `age` CLI is not installed (apt-get install age); .ci/run installs it");
    false
}

#[test]
fn an_age_keygen_identity_unlocks_a_vault_made_for_its_recipient() {
    if !age_available() {
        return;
    }
    let env = TestEnv::new();
    let key = env.path("age-keygen.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&key)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let run = env.run(&["init", "--recipient", &recipient]).ok();
    assert!(run.stdout.contains(&recipient));
    assert!(
        !env.identity.exists(),
        "no identity is made when a recipient is given"
    );
    let key_arg = key.to_str().unwrap();
    env.run_with(
        &["--identity", key_arg, "set", "INTEROP"],
        b"from-age-keygen",
    )
    .ok();
    assert_eq!(
        env.run(&["--identity", key_arg, "get", "INTEROP"])
            .ok()
            .stdout,
        "from-age-keygen"
    );
    env.run(&["get", "INTEROP"]).code(5);
}

#[test]
fn the_identity_made_by_init_decrypts_with_the_age_cli() {
    if !age_available() {
        return;
    }
    let env = TestEnv::init();
    let identity = std::fs::read_to_string(&env.identity).unwrap();
    let recipient = identity
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    let plain = env.path("plain.txt");
    let sealed = env.path("sealed.age");
    std::fs::write(&plain, "message for the vault owner").unwrap();
    let enc = Command::new("age")
        .arg("-r")
        .arg(&recipient)
        .arg("-o")
        .arg(&sealed)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let dec = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&env.identity)
        .arg(&sealed)
        .output()
        .unwrap();
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert_eq!(dec.stdout, b"message for the vault owner");
    // And `age -y`-style derivation agrees with the recipient the vault was made for.
    let vault_recipients = env.sql("SELECT recipients FROM keyring WHERE kind = 'recipients'");
    assert_eq!(vault_recipients, recipient);
}
