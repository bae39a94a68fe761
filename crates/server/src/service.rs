//! The vault behind `secret serve`: one thread owns the vault connection, and every
//! API request queues to it. The thread takes whatever has queued (up to a limit) as
//! one batch and hands it to [`Vault::serve_batch`], which carries the whole batch out
//! in one fsynced transaction — group commit. Async handlers await their answer on a
//! oneshot channel and never block the runtime on SQLite.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use secret_core::error::VaultError;
use secret_core::vault::{ApiCall, CallError, Reply, Vault};

/// Largest batch one commit carries.
const MAX_BATCH: usize = 256;

enum Job {
    Call(ApiCall, oneshot::Sender<Result<Reply, CallError>>),
    Run(Box<dyn FnOnce(&mut Vault) + Send>),
}

/// A cheap, cloneable handle to the vault thread.
#[derive(Clone)]
pub struct VaultService {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for VaultService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultService")
    }
}

fn gone() -> VaultError {
    VaultError::Io("the vault thread has stopped".into())
}

impl VaultService {
    /// Starts the vault thread. It ends when every handle is dropped.
    pub fn start(vault: Vault) -> (Self, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        let handle = std::thread::Builder::new()
            .name("vault".into())
            .spawn(move || {
                let mut vault = vault;
                while let Some(first) = rx.blocking_recv() {
                    let mut calls = Vec::new();
                    let mut replies = Vec::new();
                    let mut next = Some(first);
                    while let Some(job) = next.take() {
                        match job {
                            Job::Call(call, reply) => {
                                calls.push(call);
                                replies.push(reply);
                            }
                            Job::Run(f) => {
                                // Keep order: flush the calls queued before it first.
                                flush(&mut vault, &mut calls, &mut replies);
                                f(&mut vault);
                            }
                        }
                        if calls.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    flush(&mut vault, &mut calls, &mut replies);
                }
            })
            .unwrap_or_else(|e| {
                // Spawning a thread fails only when the system is out of resources;
                // the handle then answers every call with an error.
                eprintln!("error: cannot start the vault thread: {e}");
                std::thread::spawn(|| {})
            });
        (Self { jobs: tx }, handle)
    }

    /// Carries out one API call (batched with whatever else is waiting).
    pub async fn call(&self, call: ApiCall) -> Result<Reply, CallError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Call(call, tx))
            .await
            .map_err(|_| CallError::Vault(gone()))?;
        rx.await.map_err(|_| CallError::Vault(gone()))?
    }

    /// Runs `f` on the vault thread and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vault) -> T + Send + 'static,
    ) -> Result<T, VaultError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Run(Box::new(move |vault| {
            let _ = tx.send(f(vault));
        }));
        self.jobs.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

fn flush(
    vault: &mut Vault,
    calls: &mut Vec<ApiCall>,
    replies: &mut Vec<oneshot::Sender<Result<Reply, CallError>>>,
) {
    if calls.is_empty() {
        return;
    }
    let answers = vault.serve_batch(calls);
    calls.clear();
    for (reply, answer) in replies.drain(..).zip(answers) {
        let _ = reply.send(answer);
    }
}

/// Shared state of the server: the vault thread and the metrics.
#[derive(Clone, Debug)]
pub struct ServeState {
    pub vault: VaultService,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What the scheduler's passes did, for `GET /v1/rotations/{id}`.
    pub passes: Arc<crate::passes::PassLog>,
    /// Rotation requests for the scheduler (`POST /v1/secrets/{name}/rotate`).
    pub rotate: mpsc::Sender<RotateRequest>,
    /// The policies the server runs with (for `/v1/secrets/{name}/rotate` checks).
    pub policies: Arc<secret_core::policy::PolicySet>,
    /// Take the client address from `X-Forwarded-For` (one trusted proxy in front, as on
    /// Railway) for the audit log and the failed-auth brake.
    pub trust_forwarded_for: bool,
    /// The vault's clock, for what the API reads the time for (`?since=7d`).
    pub clock: secret_core::clock::Clock,
    /// Requests answered without a valid token, counted until the next flush.
    pub tally: Arc<crate::api::tally::Tally>,
}

/// A rotation the API accepted, for the scheduler to start now.
#[derive(Clone, Debug)]
pub struct RotateRequest {
    pub secret: String,
    pub rotation_id: String,
}
