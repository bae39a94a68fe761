//! Fills a vault with SECRETS × VERSIONS values for `scripts/bench.sh`, through the
//! vault's batch path (a thousand writes per fsynced transaction, as `serve` commits
//! API writes): one `secret set` process per value would take minutes for 100,000.
//!
//! ```sh
//! SECRET_VAULT=v.db SECRET_IDENTITY_FILE=id.txt cargo run --release --example fill -- 1000 100
//! ```
//! Secrets are `BENCH_0`...; every value is 48 random-looking characters.

use std::process::ExitCode;

use secrecy::SecretString;
use secret_core::audit::Actor;
use secret_core::crypto::{self, Charset, Identities};
use secret_core::model::SecretValue;
use secret_core::vault::{ApiCall, Op, Unlocker, Vault};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fill: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [secrets, versions] = args[..] else {
        return Err(
            "usage: fill SECRETS VERSIONS (with SECRET_VAULT and SECRET_IDENTITY_FILE)".into(),
        );
    };
    let vault_path = std::env::var("SECRET_VAULT")?;
    let identity = std::fs::read_to_string(std::env::var("SECRET_IDENTITY_FILE")?)?;
    let unlocker = Unlocker {
        identities: Some(Identities::parse(&SecretString::from(identity))?),
        passphrase: None,
        identity_hint: String::new(),
    };
    let actor = Actor {
        name: "user:bench-fill".into(),
        pid: Some(std::process::id()),
        request_id: "fill".into(),
    };
    let mut vault = Vault::open(vault_path.as_ref(), unlocker, actor)?;
    let (row, token) = vault.create_token("bench-fill", &["admin".to_string()], None)?;
    let mut calls = Vec::with_capacity(1000);
    let mut flush = |calls: &mut Vec<ApiCall>| -> Result<(), Box<dyn std::error::Error>> {
        for reply in vault.serve_batch(calls) {
            reply?;
        }
        calls.clear();
        Ok(())
    };
    for _ in 0..versions {
        for s in 0..secrets {
            let value = crypto::generate_value(Charset::Alnum, 48)?;
            calls.push(ApiCall {
                token: Some(token.clone()),
                remote: "bench".into(),
                request_id: "fill".into(),
                op: Op::Write {
                    name: format!("BENCH_{s}"),
                    value: SecretValue::from_secret_string(value),
                    if_version: None,
                    description: None,
                    generated: false,
                },
            });
            if calls.len() == 1000 {
                flush(&mut calls)?;
            }
        }
    }
    flush(&mut calls)?;
    vault.revoke_token(&row.id)?;
    Ok(())
}
