//! The PostgreSQL store against a real server (`SECRET_TEST_DATABASE_URL`), each test
//! in a schema of its own that its guard drops. Without the variable each test says it
//! is skipped and passes.

use std::sync::{Arc, Barrier};

use secret_core::audit::{Actor, AuditFilter};
use secret_core::clock::Clock;
use secret_core::crypto::Identities;
use secret_core::error::VaultError;
use secret_core::model::{Label, SecretValue, VersionSelector};
use secret_core::store::{Store, StoreError};
use secret_core::vault::{InitOptions, SetOptions, Unlocker, Vault};
use secret_store_postgres::testing::TestSchema;
use secret_store_postgres::{PgStore, SCHEMA_VERSION};

const IDENTITY: &str = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

fn identities() -> Identities {
    Identities::parse(&secrecy::SecretString::from(IDENTITY.to_string())).unwrap()
}

fn actor(name: &str) -> Actor {
    Actor {
        name: format!("user:{name}"),
        pid: Some(std::process::id()),
        request_id: name.into(),
    }
}

fn init(schema: &TestSchema) -> Vault {
    let recipient = identities().recipients().into_iter().next().unwrap();
    Vault::init_in(
        || PgStore::create(&schema.url),
        InitOptions {
            recipients: vec![recipient],
            passphrase: None,
            scrypt_log_n: None,
        },
        actor("init"),
        Clock::System,
    )
    .unwrap()
}

fn open(schema: &TestSchema, who: &str) -> Vault {
    let store = PgStore::open(&schema.url).unwrap();
    Vault::open_in(
        store,
        Unlocker {
            identities: Some(identities()),
            passphrase: None,
            identity_hint: String::new(),
        },
        actor(who),
        Clock::System,
    )
    .unwrap()
}

fn value(text: &str) -> Result<SecretValue, secret_core::model::InputError> {
    SecretValue::from_bytes(zeroize::Zeroizing::new(text.as_bytes().to_vec()), false)
}

macro_rules! schema_or_skip {
    ($test:expr) => {
        match TestSchema::create($test) {
            Some(schema) => schema,
            None => return,
        }
    };
}

#[test]
fn a_vault_lives_in_a_schema_and_reads_back_what_it_stored() {
    let schema = schema_or_skip!("a_vault_lives_in_a_schema_and_reads_back_what_it_stored");
    let mut vault = init(&schema);
    vault
        .set("API_KEY", value("v1"), &SetOptions::default())
        .unwrap();
    vault
        .set("API_KEY", value("v2"), &SetOptions::default())
        .unwrap();
    drop(vault);
    let mut vault = open(&schema, "reader");
    let got = vault
        .get("API_KEY", VersionSelector::Label(Label::Previous))
        .unwrap();
    assert_eq!(got.value.expose(), "v1");
    assert_eq!(vault.audit_verify(None).unwrap().verified, 4);
    // The marker records the schema version; nothing of the value is in the rows.
    assert_eq!(
        schema
            .query("SELECT application_id, schema_version FROM secret_vault_meta")
            .unwrap(),
        format!("1396920916|{SCHEMA_VERSION}")
    );
    let dump = schema
        .query("SELECT encode(ciphertext, 'escape') FROM versions")
        .unwrap();
    assert!(!dump.contains("v1") && !dump.contains("v2"), "{dump}");
}

#[test]
fn init_on_a_vault_is_a_conflict_and_a_foreign_schema_is_refused_untouched() {
    let schema =
        schema_or_skip!("init_on_a_vault_is_a_conflict_and_a_foreign_schema_is_refused_untouched");
    drop(init(&schema));
    let err = PgStore::create(&schema.url).unwrap_err();
    assert!(matches!(err, VaultError::VaultExists(_)), "{err}");
    assert_eq!(err.exit_code(), 4);

    let foreign = schema_or_skip!("foreign");
    foreign
        .sql("CREATE TABLE customers (id int); INSERT INTO customers VALUES (7)")
        .unwrap();
    for result in [PgStore::create(&foreign.url), PgStore::open(&foreign.url)] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, VaultError::Store(StoreError::NotAVault { reason, .. }) if reason.contains("customers")),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);
    }
    // Nothing was written: still one table, one row.
    assert_eq!(
        foreign
            .query("SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = current_schema()")
            .unwrap(),
        "customers"
    );

    let empty = schema_or_skip!("empty");
    let err = PgStore::open(&empty.url).unwrap_err();
    assert!(matches!(err, VaultError::NoVault(_)), "{err}");
    assert!(err.to_string().contains("secret init"), "{err}");
}

#[test]
fn migrations_apply_from_every_earlier_version_and_concurrently_once() {
    let schema =
        schema_or_skip!("migrations_apply_from_every_earlier_version_and_concurrently_once");
    // Several processes' worth of connections opening an empty schema at once: the
    // advisory lock lets one migrate, the others find it done.
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::create(&url).map(drop)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(
        schema
            .query("SELECT schema_version FROM secret_vault_meta")
            .unwrap(),
        SCHEMA_VERSION.to_string()
    );
    // A vault left at each earlier version is brought up to date on open.
    for start in 1..SCHEMA_VERSION {
        let old = schema_or_skip!("migrations_from");
        let store = PgStore::create(&old.url).unwrap();
        drop(store);
        // Roll the schema back by hand to what version `start` had.
        let undo = [
            "ALTER TABLE locks DROP COLUMN epoch;",
            "ALTER TABLE secrets DROP COLUMN mac; ALTER TABLE tokens DROP COLUMN mac; ALTER TABLE vault DROP COLUMN census;",
            "DROP TABLE retired_keys;",
            "ALTER TABLE rotations DROP CONSTRAINT rotations_trigger, DROP CONSTRAINT rotations_state, DROP CONSTRAINT rotations_outcome; ALTER TABLE rotation_steps DROP CONSTRAINT rotation_steps_step, DROP CONSTRAINT rotation_steps_status;",
            "DROP TABLE tokens;",
            "DROP TABLE rotation_steps; DROP TABLE rotations; DROP TABLE locks; ALTER TABLE versions DROP COLUMN meta;",
        ];
        for sql in undo.iter().take((SCHEMA_VERSION - start) as usize) {
            old.sql(sql).unwrap();
        }
        old.sql(&format!(
            "UPDATE secret_vault_meta SET schema_version = {start}"
        ))
        .unwrap();
        drop(PgStore::open(&old.url).unwrap());
        assert_eq!(
            old.query("SELECT schema_version FROM secret_vault_meta")
                .unwrap(),
            SCHEMA_VERSION.to_string(),
            "from {start}"
        );
        assert_eq!(
            old.query("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'secrets' AND column_name = 'mac'").unwrap(),
            "1"
        );
    }
    // A newer schema is refused.
    schema
        .sql("UPDATE secret_vault_meta SET schema_version = 99")
        .unwrap();
    let err = PgStore::open(&schema.url).unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::Store(StoreError::NewerSchema { found: 99, .. })
        ),
        "{err}"
    );
}

#[test]
fn the_rotation_checks_hold_on_postgres() {
    let schema = schema_or_skip!("the_rotation_checks_hold_on_postgres");
    drop(PgStore::create(&schema.url).unwrap());
    schema
        .sql("INSERT INTO rotations (id, secret, generator, trigger, state, started_at, updated_at) VALUES ('r', 'S', 'random', 'api', 'grace', 1, 2)")
        .unwrap();
    for (column, bad) in [("state", "running"), ("trigger", "cron"), ("outcome", "ok")] {
        let err = schema
            .sql(&format!("UPDATE rotations SET {column} = '{bad}'"))
            .unwrap_err();
        assert!(err.contains("check constraint"), "{column}: {err}");
    }
}

/// Writers in several threads, each with its own connection, append at once: one
/// chain, no gaps or forks, every entry there.
#[test]
fn concurrent_writers_keep_one_audit_chain() {
    let schema = schema_or_skip!("concurrent_writers_keep_one_audit_chain");
    drop(init(&schema));
    const THREADS: usize = 6;
    const EACH: usize = 15;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut vault = open(&schema, &format!("w{t}"));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..EACH {
                    let name = format!("S_{}", i % 3);
                    vault
                        .set(&name, value(&format!("{t}-{i}")), &SetOptions::default())
                        .unwrap();
                    // An audited read is a write of the chain too.
                    vault
                        .get(&name, VersionSelector::Label(Label::Current))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut vault = open(&schema, "verifier");
    let report = vault.audit_verify(None).unwrap();
    // init + one unlock-free open each + 2 entries per iteration.
    assert_eq!(report.verified, 1 + (THREADS * EACH * 2) as u64);
    let seqs = schema
        .query("SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM audit_log")
        .unwrap();
    let n = 1 + THREADS * EACH * 2 + 1;
    assert_eq!(seqs, format!("{n}|1|{n}|{n}"));
    // Versions: 3 secrets, THREADS*EACH/3 versions each, none lost or doubled.
    let history = vault.history("S_0").unwrap();
    assert_eq!(history.1.len(), THREADS * EACH / 3);
    let entries = vault
        .audit_entries(
            &AuditFilter::default(),
            secret_core::action::Action::AuditRead,
        )
        .unwrap();
    assert!(entries.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

/// Compare-and-set across connections: of writers racing with the same expected
/// version, exactly one wins.
#[test]
fn compare_and_set_has_one_winner_across_connections() {
    let schema = schema_or_skip!("compare_and_set_has_one_winner_across_connections");
    let mut first = init(&schema);
    first
        .set("CAS", value("v1"), &SetOptions::default())
        .unwrap();
    drop(first);
    let barrier = Arc::new(Barrier::new(5));
    let handles: Vec<_> = (0..5)
        .map(|t| {
            let mut vault = open(&schema, &format!("cas{t}"));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                vault.set(
                    "CAS",
                    value(&format!("from {t}")),
                    &SetOptions {
                        if_version: Some(1),
                        ..Default::default()
                    },
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.exit_code(), 4, "{r}");
    }
    let mut vault = open(&schema, "check");
    assert_eq!(vault.history("CAS").unwrap().1.len(), 2);
}

/// A snapshot is the vault's rows as one SQLite vault file: opened there with the same
/// identity, it reads back what was stored and its chain verifies.
#[test]
fn a_snapshot_is_a_sqlite_vault_file_of_the_same_vault() {
    let schema = schema_or_skip!("a_snapshot_is_a_sqlite_vault_file_of_the_same_vault");
    let mut vault = init(&schema);
    vault
        .set("A", value("alpha"), &SetOptions::default())
        .unwrap();
    vault
        .set("A", value("beta"), &SetOptions::default())
        .unwrap();
    drop(vault);
    let store: Store = PgStore::open(&schema.url).unwrap();
    let image = store.snapshot().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    std::fs::write(&path, &image).unwrap();
    let unlocker = Unlocker {
        identities: Some(identities()),
        passphrase: None,
        identity_hint: String::new(),
    };
    let mut copy = Vault::open(&path, unlocker, actor("file")).unwrap();
    let got = copy
        .get(
            "A",
            VersionSelector::Number(secret_core::model::VersionNumber::new(1).unwrap()),
        )
        .unwrap();
    assert_eq!(got.value.expose(), "alpha");
    copy.audit_verify(None).unwrap();
}

/// The copy's table list names every table and column the migrations make (a column
/// added later and not listed would be silently left behind by `store copy`).
#[test]
fn the_copy_lists_every_table_and_column_of_the_postgres_schema() {
    let schema = schema_or_skip!("the_copy_lists_every_table_and_column_of_the_postgres_schema");
    drop(init(&schema));
    let listed = schema
        .query(
            "SELECT table_name, string_agg(column_name, ',' ORDER BY column_name)
             FROM information_schema.columns WHERE table_schema = current_schema()
             AND table_name <> 'secret_vault_meta' GROUP BY table_name ORDER BY table_name",
        )
        .unwrap();
    let mut expected: Vec<(String, String)> = secret_core::store::image::TABLES
        .iter()
        .map(|t| {
            let mut columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
            columns.extend(t.generated);
            columns.sort();
            (t.name.to_string(), columns.join(","))
        })
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.iter().map(|(t, c)| format!("{t}|{c}")).collect();
    assert_eq!(listed, expected.join("\n"));
}

/// A blank destination is refused when it holds anything, and is made inside the
/// copy's transaction: rolled back, the schema is as empty as before.
#[test]
fn a_blank_destination_is_refused_when_taken_and_left_empty_by_a_rollback() {
    let schema =
        schema_or_skip!("a_blank_destination_is_refused_when_taken_and_left_empty_by_a_rollback");
    let mut blank = PgStore::blank(&schema.url).unwrap();
    let err = blank
        .write_blank(|_tx| Err::<(), _>(VaultError::Usage("stop here".into())))
        .unwrap_err();
    assert!(err.to_string().contains("stop here"));
    assert_eq!(
        schema
            .query("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()")
            .unwrap(),
        "0"
    );
    drop(init(&schema));
    let err = PgStore::blank(&schema.url).unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    assert!(err.to_string().contains("holds a vault"), "{err}");
    let other = TestSchema::create("blank-foreign").unwrap();
    other.sql("CREATE TABLE invoices (id int)").unwrap();
    let err = PgStore::blank(&other.url).unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    assert!(err.to_string().contains("invoices"), "{err}");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Port 1 on this machine: nothing listens there. No test server is needed.
    let err = PgStore::open("postgres://postgres@127.0.0.1:1/test").unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to the vault at postgres://postgres@127.0.0.1:1/test"),
        "{text}"
    );
    assert!(text.contains("check that the server runs"), "{text}");
}
