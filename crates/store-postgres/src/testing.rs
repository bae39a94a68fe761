//! For tests (this crate's and the CLI's): a schema of its own per test in the
//! database `SECRET_TEST_DATABASE_URL` names, dropped when the guard is dropped — at
//! the end of the test, or while a failed assertion unwinds. Not used by `secret`.

use std::io::Write;

/// The variable that names the test server.
pub const TEST_DATABASE_URL: &str = "SECRET_TEST_DATABASE_URL";

/// The test server's URL, or `None` after saying (on the terminal, past the test
/// harness's capture) that the PostgreSQL test `test` is skipped.
pub fn test_database_url(test: &str) -> Option<String> {
    match std::env::var(TEST_DATABASE_URL) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Written to the process's stderr directly: `eprintln!` output of a passing
            // test is captured and never shown, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {TEST_DATABASE_URL} is not set (PostgreSQL tests): {test}"
            );
            None
        }
    }
}

/// A schema that exists while this guard lives.
pub struct TestSchema {
    admin_url: String,
    pub name: String,
    /// The vault URL that selects the schema (`options=-csearch_path=...`).
    pub url: String,
}

/// Runs `f` with a fresh connection on a thread of its own (the caller may be inside
/// an async runtime, where the sync client panics).
fn on_thread(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .map_err(|e| format!("cannot connect to {}: {e}", crate::redact(&url)))?;
        client.batch_execute(&sql).map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the setup thread panicked".to_string())?
}

impl TestSchema {
    /// Creates `secret_test_<random>` in the test database; `None` (and a skip line)
    /// when `SECRET_TEST_DATABASE_URL` is not set.
    #[allow(clippy::panic)]
    pub fn create(test: &str) -> Option<Self> {
        let admin_url = test_database_url(test)?;
        let mut random = [0u8; 8];
        let _ = secret_core::crypto::random_array::<8>().map(|r| random = r);
        let name = format!("secret_test_{}", secret_core::crypto::hex(&random));
        if let Err(e) = on_thread(&admin_url, format!("CREATE SCHEMA {name}")) {
            // A test that cannot get its schema cannot run: fail it, saying why.
            panic!("cannot create a test schema: {e}");
        }
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-csearch_path%3D{name}");
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// Runs SQL in the schema, as someone with database access would.
    pub fn sql(&self, sql: &str) -> Result<(), String> {
        on_thread(
            &self.admin_url,
            format!("SET search_path TO {}; {sql}", self.name),
        )
    }

    /// Runs a query in the schema and returns its rows as text (`psql -At` style: `|`
    /// between columns, one line per row).
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let url = self.admin_url.clone();
        let sql = format!("SET search_path TO {}; {sql}", self.name);
        std::thread::spawn(move || {
            let mut client =
                postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
            let messages = client.simple_query(&sql).map_err(|e| e.to_string())?;
            let mut lines = Vec::new();
            for m in messages {
                if let postgres::SimpleQueryMessage::Row(row) = m {
                    let cols: Vec<&str> =
                        (0..row.len()).map(|i| row.get(i).unwrap_or("")).collect();
                    lines.push(cols.join("|"));
                }
            }
            Ok(lines.join("\n"))
        })
        .join()
        .map_err(|_| "the query thread panicked".to_string())?
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Err(e) = on_thread(
            &self.admin_url,
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        ) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: cannot drop test schema {}: {e}",
                self.name
            );
        }
    }
}
