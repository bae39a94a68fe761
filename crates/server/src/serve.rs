//! `secret serve`: the HTTP API and the rotation scheduler in one process, until
//! SIGTERM or SIGINT.
//!
//! The API talks to the vault through the vault thread (`service`); the scheduler runs
//! on a thread of its own with its own vault connection and runtime, so a rotation
//! waiting on a deploy never slows a read. On a signal the listener stops taking
//! requests and drains, and the scheduler stops after its current pass (or, if that
//! takes longer than the grace period, the process exits anyway: every step is
//! persisted, so the next start resumes what was interrupted).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::backup::{self, BackupOptions};
use crate::connections::{self, ConnectionLimits};
use crate::metrics::Metrics;
use crate::scheduler::{self, SchedulerOptions};
use crate::service::{ServeState, VaultService};
use secret_core::error::VaultError;
use secret_core::policy::PolicySet;
use secret_core::vault::Vault;

/// How `serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `None` serves the API only.
    pub scheduler: Option<SchedulerOptions>,
    /// On shutdown, how long to wait for a rotation pass in progress.
    pub shutdown_grace: Duration,
    /// Client addresses from `X-Forwarded-For` (one trusted proxy in front).
    pub trust_forwarded_for: bool,
    /// `None`: no scheduled backups.
    pub backup: Option<BackupOptions>,
    /// The connection cap and timeouts.
    pub limits: ConnectionLimits,
    /// This instance's id, in `/readyz`, `/metrics` and the scheduler's log lines.
    pub instance: String,
}

/// Serves on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    vault: Vault,
    policies: PolicySet,
    options: ServeOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), VaultError> {
    let ServeOptions {
        scheduler: scheduler_options,
        shutdown_grace,
        trust_forwarded_for,
        backup: backup_options,
        limits,
        instance,
    } = options;
    let policies = Arc::new(policies);
    let metrics = Arc::new(Metrics::for_instance(&instance));
    let backup_task = match backup_options {
        Some(options) => {
            let mut backup_vault = vault.another_connection()?;
            backup::check(&mut backup_vault, &options)?;
            backup_vault.set_actor(secret_core::audit::Actor {
                name: "serve:backup".into(),
                pid: Some(std::process::id()),
                request_id: secret_core::crypto::hex(&secret_core::crypto::random_array::<8>()?),
            });
            Some(tokio::spawn(backup::run(
                backup_vault,
                options,
                metrics.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let passes = Arc::new(crate::passes::PassLog::default());
    let (rotate_tx, rotate_rx) = mpsc::channel(256);
    let scheduler_thread = match scheduler_options {
        Some(options) => {
            let mut engine_vault = vault.another_connection()?;
            engine_vault.set_actor(secret_core::audit::Actor {
                name: "scheduler".into(),
                pid: Some(std::process::id()),
                request_id: secret_core::crypto::hex(&secret_core::crypto::random_array::<8>()?),
            });
            let mut engine = scheduler::engine(engine_vault, &policies, &options)?;
            let (policies, metrics, passes, shutdown) = (
                policies.clone(),
                metrics.clone(),
                passes.clone(),
                shutdown.clone(),
            );
            let thread = std::thread::Builder::new()
                .name("scheduler".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(rt) => {
                            let result = rt.block_on(scheduler::run(
                                &mut engine,
                                policies,
                                metrics,
                                passes,
                                options,
                                rotate_rx,
                                shutdown,
                            ));
                            if let Err(e) = result {
                                eprintln!("error: the scheduler stopped: {e}");
                            }
                        }
                        Err(e) => eprintln!("error: cannot start the scheduler's runtime: {e}"),
                    }
                })
                .map_err(|e| VaultError::Io(format!("cannot start the scheduler: {e}")))?;
            Some(thread)
        }
        None => {
            drop(rotate_rx);
            None
        }
    };
    // The audit chain is checked once at start; its status is a metric.
    let chain_ok = match vault.another_connection() {
        Ok(mut v) => v.audit_verify(None).is_ok(),
        Err(_) => false,
    };
    metrics.audit_chain_ok.set(i64::from(chain_ok));
    let clock = vault.clock();
    let (service, vault_thread) = VaultService::start(vault);
    let state = ServeState {
        clock,
        vault: service,
        metrics,
        passes,
        rotate: rotate_tx,
        policies,
        trust_forwarded_for,
        tally: Default::default(),
    };
    let app = crate::api::app(state.clone());
    // Anonymous requests are recorded as one tally entry per interval.
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::api::tally::FLUSH_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = crate::api::flush_tally(&state).await {
                    eprintln!("error: api: cannot record the tally of anonymous requests: {e}");
                }
            }
        })
    };
    // Raised here as well as by `run_until_signal`: idempotent, and tests call `serve`.
    let fd_limit = connections::raise_fd_limit();
    connections::run(listener, app, limits, fd_limit, shutdown.clone()).await;
    flusher.abort();
    if let Err(e) = crate::api::flush_tally(&state).await {
        eprintln!("error: api: cannot record the tally of anonymous requests: {e}");
    }
    if let Some(thread) = scheduler_thread {
        let deadline = std::time::Instant::now() + shutdown_grace;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !thread.is_finished() {
            eprintln!(
                "the scheduler is still in a pass; leaving it to be resumed at the next start"
            );
        }
    }
    if let Some(task) = backup_task {
        // A backup in progress finishes (its file appears whole or not at all).
        let _ = tokio::time::timeout(shutdown_grace, task).await;
    }
    drop(vault_thread);
    Ok(())
}

/// A watch that turns true on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        eprintln!("stopping: no new requests or rotations; finishing the current step");
        let _ = tx.send(true);
    });
    rx
}

/// Where `secret serve` listens and what it serves, as the binary resolved it.
pub struct ServeCommand {
    /// Address to listen on (`host:port`).
    pub listen: String,
    /// The vault file; until it exists, only `/healthz` answers. `None` when the vault
    /// is not a file (PostgreSQL): `open` then connects at once.
    pub vault_path: Option<std::path::PathBuf>,
    pub options: ServeOptions,
}

/// `secret serve`: runs until SIGTERM or SIGINT on a runtime of its own. `open`
/// unlocks the vault once its file exists (a fresh volume may not have it yet).
pub fn run_until_signal(
    command: ServeCommand,
    policies: PolicySet,
    open: impl FnOnce() -> Result<Vault, VaultError>,
) -> Result<(), VaultError> {
    let ServeCommand {
        listen,
        vault_path,
        options,
    } = command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| VaultError::Io(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let shutdown = shutdown_on_signals();
        if let Some(vault_path) = vault_path.filter(|p| !p.exists()) {
            // First deploy on a fresh volume: stay up (healthy, not ready) until the
            // vault file is put in place, then serve it.
            if !wait_for_vault(&listen, &vault_path, shutdown.clone()).await? {
                return Ok(());
            }
        }
        let vault = open()?;
        let listener = TcpListener::bind(&listen)
            .await
            .map_err(|e| VaultError::Io(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| VaultError::Io(e.to_string()))?;
        eprintln!("secret serve: listening on http://{addr}");
        serve(listener, vault, policies, options, shutdown).await
    })
}

/// Serves `/healthz` (200) and 503 for everything else until `path` exists. Returns
/// false when a signal came first.
async fn wait_for_vault(
    listen: &str,
    path: &std::path::Path,
    mut shutdown: watch::Receiver<bool>,
) -> Result<bool, VaultError> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| VaultError::Io(format!("cannot listen on {listen}: {e}")))?;
    eprintln!(
        "secret serve: no vault at {} yet; answering /healthz and waiting for it (create it \
         with `secret init` or copy one there)",
        path.display()
    );
    let message = format!("no vault at {} yet", path.display());
    let app = axum::Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .fallback(move || {
            let message = message.clone();
            async move {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({ "error": { "code": "unavailable", "message": message } })),
                )
            }
        });
    let (found_tx, mut found_rx) = watch::channel(false);
    let watched = path.to_path_buf();
    let mut stop = shutdown.clone();
    let poll = tokio::spawn(async move {
        loop {
            if watched.exists() {
                let _ = found_tx.send(true);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => return,
            }
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = found_rx.changed() => {}
            _ = shutdown.changed() => {}
        }
        let _ = stop_tx.send(true);
    });
    let limits = ConnectionLimits::default();
    connections::run(
        listener,
        app,
        limits,
        connections::raise_fd_limit(),
        stop_rx,
    )
    .await;
    poll.abort();
    Ok(path.exists())
}
