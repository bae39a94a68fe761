//! The connection's own thread. The synchronous `postgres::Client` drives its socket
//! with a tokio runtime of its own and panics when it is called from inside another
//! runtime's context — and the vault is called from async code (`secret rotate`'s
//! engine, `secret serve`'s start-up and backup task). So the client lives on a plain
//! thread that no runtime ever enters, and every call is sent to it over a channel
//! and waited for. A caller on an async runtime then only blocks on a channel, as it
//! already blocks on a SQLite call.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use postgres::types::ToSql;
use postgres::{Row, Statement};
use secret_core::store::StoreError;

use crate::location::{error_chain, PgLocation};

/// One query parameter, owned, so it can cross to the connection's thread.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// A parameter from any owned value.
pub(crate) fn p<T: ToSql + Sync + Send + 'static>(value: T) -> Param {
    Box::new(value)
}

/// The client and what the thread keeps beside it.
pub(crate) struct Conn {
    location: Arc<PgLocation>,
    client: postgres::Client,
    statements: HashMap<&'static str, Statement>,
    /// A statement of the open transaction failed: PostgreSQL has aborted it, and its
    /// COMMIT would quietly roll back; `commit` reports it instead.
    pub(crate) failed: bool,
}

pub(crate) fn pg_error(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    match e.code() {
        Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => StoreError::Busy,
        _ => StoreError::Database(error_chain(&e)),
    }
}

impl Conn {
    /// Reconnects a client whose connection was closed (a server restart), between
    /// transactions only.
    pub(crate) fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.client = self.location.connect()?;
            self.statements.clear();
        }
        Ok(())
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql).map_err(|e| {
            self.failed = true;
            pg_error(e)
        })?;
        self.statements.insert(sql, stmt.clone());
        Ok(stmt)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[Param],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref() as _).collect();
        self.client.query(&stmt, &refs).map_err(|e| {
            self.failed = true;
            pg_error(e)
        })
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[Param],
    ) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref() as _).collect();
        self.client.execute(&stmt, &refs).map_err(|e| {
            self.failed = true;
            pg_error(e)
        })
    }

    /// A statement built at run time (the whole-vault copy's, per table): prepared
    /// for this call only.
    pub(crate) fn query_text(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<Row>, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| b.as_ref() as _).collect();
        self.client.query(sql, &refs).map_err(|e| {
            self.failed = true;
            pg_error(e)
        })
    }

    /// Several statements, no parameters, one round trip.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client.batch_execute(sql).map_err(|e| {
            self.failed = true;
            pg_error(e)
        })
    }
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// The handle to the connection's thread. Dropping it ends the thread (and closes
/// the connection).
pub(crate) struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

fn gone() -> StoreError {
    StoreError::Database("the PostgreSQL connection's thread has stopped".into())
}

impl Worker {
    /// Starts the thread and connects on it.
    pub(crate) fn start(location: Arc<PgLocation>) -> Result<Self, StoreError> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let thread = std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let client = match location.connect() {
                    Ok(client) => {
                        let _ = ready_tx.send(Ok(()));
                        client
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut conn = Conn {
                    location,
                    client,
                    statements: HashMap::new(),
                    failed: false,
                };
                while let Ok(job) = inbox.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start a thread: {e}")))?;
        ready_rx.recv().map_err(|_| gone())??;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(Box::new(move |conn: &mut Conn| {
            let _ = tx.send(f(conn));
        }))
        .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    pub(crate) fn rows(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>, StoreError> {
        self.call(move |c| c.query(sql, &params))
    }

    pub(crate) fn exec(&self, sql: &'static str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.call(move |c| c.execute(sql, &params))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
