//! `TestEnv`: a temp dir with a vault path, a clean environment, and helpers to run
//! the binary and to look inside the SQLite file the way an attacker would.
//!
//! A test runs on either store. `on_both_stores!` instantiates tests a second time
//! (in a module `on_postgres`) with `TestEnv` on PostgreSQL: each such env gets a
//! schema of its own in `SECRET_TEST_DATABASE_URL`'s database, `secret` is pointed at
//! it through `SECRET_VAULT`, and the schema is dropped with the env. Without the
//! variable those tests say they are skipped and pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_secret");

pub use secret_store_postgres::testing::TestSchema;

/// Which store the `TestEnv`s of this test thread use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Sqlite) };
}

/// Runs `body` with every `TestEnv` it makes on PostgreSQL; without a test server,
/// says so and returns.
pub fn on_postgres(test: &str, body: fn()) {
    if secret_store_postgres::testing::test_database_url(test).is_none() {
        return;
    }
    BACKEND.with(|b| b.set(Backend::Postgres));
    body();
}

/// Instantiates the named tests (plain `fn()` tests of the calling module) a second
/// time on PostgreSQL, as `<module>::on_postgres::<name>`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    $crate::util::on_postgres(stringify!($name), super::$name)
                }
            )*
        }
    };
}

pub struct TestEnv {
    /// The schema of a PostgreSQL env (dropped with it); `None` on SQLite.
    pub pg: Option<TestSchema>,
    pub dir: tempfile::TempDir,
    pub vault: PathBuf,
    pub identity: PathBuf,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stdout: out.stdout,
        }
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success:\n{self:#?}");
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit {code}:\n{self:#?}");
        self
    }

    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{self:#?}"
        );
        self
    }
}

impl TestEnv {
    /// A temp dir, no vault yet. HOME and the XDG dirs point inside it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("data/secret/vault.db");
        let identity = dir.path().join("config/secret/identity.txt");
        let pg = match BACKEND.with(|b| b.get()) {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let schema =
                    TestSchema::create("TestEnv").expect("on_postgres checked the test server");
                // SQLite's hex(), for the tests that read blobs as someone with access would.
                schema
                    .sql(
                        "CREATE FUNCTION hex(bytea) RETURNS text LANGUAGE sql IMMUTABLE \
                          AS $$ SELECT upper(encode($1, 'hex')) $$",
                    )
                    .unwrap();
                Some(schema)
            }
        };
        Self {
            pg,
            dir,
            vault,
            identity,
            env: Vec::new(),
        }
    }

    /// A vault made by `secret init` with a new identity at the XDG default.
    pub fn init() -> Self {
        let env = Self::new();
        env.run(&["init"]).ok();
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "tester")
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .current_dir(self.dir.path())
            .args(args);
        if let Some(schema) = &self.pg {
            cmd.env("SECRET_VAULT", &schema.url);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs with empty stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, b"")
    }

    /// Runs with `stdin` piped in.
    pub fn run_with(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A refused command may exit before reading stdin: ignore a broken pipe.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        Run::from(child.wait_with_output().unwrap())
    }

    pub fn set(&self, name: &str, value: &str) -> Run {
        self.run_with(&["set", name], value.as_bytes()).ok()
    }

    pub fn get(&self, name: &str) -> String {
        self.run(&["get", name]).ok().stdout
    }

    /// The vault's location as `SECRET_VAULT` takes it: the file, or the schema's URL.
    pub fn vault_location(&self) -> String {
        match &self.pg {
            Some(schema) => schema.url.clone(),
            None => self.vault.to_str().unwrap().to_string(),
        }
    }

    /// Runs SQL on the vault as someone with access to the store would: the sqlite3
    /// CLI on the file, or a connection to the PostgreSQL schema (rows as `a|b` lines).
    pub fn sql(&self, sql: &str) -> String {
        if let Some(schema) = &self.pg {
            // SQLite's blob literals and hex() in PostgreSQL's words.
            let blob = regex::Regex::new(r"X'([0-9A-Fa-f]*)'").unwrap();
            let sql = blob.replace_all(sql, r"'\x$1'::bytea");
            return schema
                .query(&sql)
                .unwrap_or_else(|e| panic!("SQL {sql}: {e}"))
                .trim()
                .to_string();
        }
        let out = Command::new("sqlite3")
            .arg(&self.vault)
            .arg(sql)
            .output()
            .expect("sqlite3 CLI");
        assert!(
            out.status.success(),
            "sqlite3 {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A stable dump of the given tables.
    pub fn dump(&self, tables: &[&str]) -> String {
        tables
            .iter()
            .map(|t| {
                format!(
                    "{t}:\n{}",
                    self.sql(&format!("SELECT * FROM {t} ORDER BY 1, 2"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `audit --json` parsed.
    pub fn audit(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["audit", "--json"];
        all.extend_from_slice(args);
        self.run(&all)
            .ok()
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Whether `haystack` contains `needle` anywhere.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads a file, or nothing if it does not exist.
pub fn read_or_empty(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Whether a command exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The identity file of a vault made by `TestEnv::init`, parsed.
fn identities_of(path: &Path) -> secret_core::crypto::Identities {
    let text = std::fs::read_to_string(path).unwrap();
    secret_core::crypto::Identities::parse(&secrecy::SecretString::from(text)).unwrap()
}

/// Opens the vault in this test process, as the tests' own instrument (like `sql`):
/// filling a vault through a `secret set` process per value would take minutes.
pub fn open_in_process(vault: &Path, identity: &Path) -> secret_core::vault::Vault {
    open_at(&vault.to_string_lossy(), identity)
}

/// [`open_in_process`] for a vault file or a `postgres://` URL.
pub fn open_at(vault: &str, identity: &Path) -> secret_core::vault::Vault {
    use secret_core::vault::{Unlocker, Vault};
    let actor = secret_core::audit::Actor {
        name: "user:test-harness".into(),
        pid: Some(std::process::id()),
        request_id: "harness".into(),
    };
    let unlocker = Unlocker {
        identities: Some(identities_of(identity)),
        passphrase: None,
        identity_hint: String::new(),
    };
    if secret_store_postgres::is_postgres_url(vault) {
        let store = secret_store_postgres::PgStore::open(vault).unwrap();
        return Vault::open_in(store, unlocker, actor, secret_core::clock::Clock::System).unwrap();
    }
    Vault::open(Path::new(vault), unlocker, actor).unwrap()
}

/// The value `fill` gives version `v` of secret `s`.
pub fn fill_value(s: usize, v: usize) -> String {
    format!("fill-value-{s}-{v}")
}

impl TestEnv {
    /// Writes `secrets` secrets (`FILL_0`...) with `versions` versions each, a thousand
    /// writes per transaction through the vault's batch path (what `serve` uses).
    pub fn fill(&self, secrets: usize, versions: usize) {
        use secret_core::model::SecretValue;
        use secret_core::vault::{ApiCall, Op};
        let mut vault = open_at(&self.vault_location(), &self.identity);
        let (row, token) = vault
            .create_token("fill", &["admin".to_string()], None)
            .unwrap();
        let mut calls = Vec::new();
        let mut flush = |calls: &mut Vec<ApiCall>| {
            for reply in vault.serve_batch(calls) {
                reply.unwrap();
            }
            calls.clear();
        };
        for v in 1..=versions {
            for s in 0..secrets {
                let value = zeroize::Zeroizing::new(fill_value(s, v).into_bytes());
                calls.push(ApiCall {
                    token: Some(token.clone()),
                    remote: "test".into(),
                    request_id: "fill".into(),
                    op: Op::Write {
                        name: format!("FILL_{s}"),
                        value: SecretValue::from_bytes(value, false),
                        if_version: None,
                        description: None,
                        generated: false,
                    },
                });
                if calls.len() == 1000 {
                    flush(&mut calls);
                }
            }
        }
        flush(&mut calls);
        vault.revoke_token(&row.id).unwrap();
    }

    /// Reads every version `fill` wrote and checks its value.
    pub fn check_filled(&self, secrets: usize, versions: usize) {
        use secret_core::model::{VersionNumber, VersionSelector};
        let mut vault = open_at(&self.vault_location(), &self.identity);
        for s in 0..secrets {
            for v in 1..=versions {
                let got = vault
                    .get(
                        &format!("FILL_{s}"),
                        VersionSelector::Number(VersionNumber::new(v as u64).unwrap()),
                    )
                    .unwrap_or_else(|e| panic!("FILL_{s} version {v}: {e}"));
                assert_eq!(got.value.expose(), fill_value(s, v));
            }
        }
    }
}

/// A child process killed when the test ends, even by a failed assertion (a `secret
/// serve` left running would outlive its temp dir).
pub struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// The child, to wait for it normally.
    pub fn into_inner(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a caught panic said (its `String` or `&str` payload), for a matrix's report.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
