//! `secret-demo`: everything on loopback, nothing left behind.
//!
//! A binary of its own (`cargo run --release -p secret-demo`), so that the stand-ins
//! it runs never ship in `secret`. It drives the same crates a deployment does: the
//! vault (`secret-core`), `secret serve` (`secret-server`) with its scheduler, and the
//! CLI's own views (`secret_cli::run`, given an explicit `Environment`).
//!
//! A throwaway vault and identity in a temp dir; the stand-ins for Railway, OpenAI and
//! LaunchDarkly on `127.0.0.1`; policies that rotate JWT_SECRET, OPENAI_API_KEY and
//! LAUNCHDARKLY_SDK_KEY every few seconds into two Railway services; `secret serve`
//! (API and scheduler) running for a while, with the worker service's first deploy
//! made to crash so one rotation rolls back. Then it prints the rotations, the
//! variables the Railway stand-in holds (values shortened), the API's view, and the
//! audit trail with its verification; and last, a value pasted into Railway behind the
//! vault's back, found by `secret drift` and put back by `secret drift --fix`.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use zeroize::Zeroizing;

use secret_cli::{Cli, Environment, Tuning};
use secret_core::audit::Actor;
use secret_core::clock::Clock;
use secret_core::error::VaultError;
use secret_core::model::SecretValue;
use secret_core::rotation_state::RunOutcome;
use secret_core::vault::{InitOptions, SetOptions, Vault};
use secret_rotation::http::RetryPolicy;
use secret_rotation::EngineOptions;
use secret_server::scheduler::SchedulerOptions;
use secret_standins::{
    DeployOutcome, LaunchDarklyConfig, LaunchDarklyStandIn, OpenAiConfig, OpenAiStandIn,
    ProjectToken, RailwayConfig, RailwayStandIn, ServiceRef,
};

const PROJECT: &str = "demo-project";
const ENVIRONMENT: &str = "production";
const API_SERVICE: &str = "planning-engine";
const WORKER_SERVICE: &str = "worker";

fn io(e: impl std::fmt::Display) -> VaultError {
    VaultError::Io(format!("demo: {e}"))
}

fn value(text: &str) -> Result<SecretValue, secret_core::model::InputError> {
    SecretValue::from_bytes(Zeroizing::new(text.as_bytes().to_vec()), false)
}

/// Shows the start and the length of a value, never all of it.
fn shorten(v: &str) -> String {
    let head: String = v.chars().take(8).collect();
    format!("{head}… ({} chars)", v.chars().count())
}

fn section(title: &str) {
    println!("\n\u{2500}\u{2500} {title} \u{2500}\u{2500}");
}

/// The demo's only option.
#[derive(clap::Parser)]
#[command(
    name = "secret-demo",
    about = "A throwaway vault, local stand-ins for Railway, OpenAI and LaunchDarkly, and \
             `secret serve` rotating every kind of secret on a short schedule."
)]
struct Args {
    /// How long the server runs before the demo prints what happened.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    run_for: Duration,
}

fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    match run(args.run_for) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(err.exit_code())
        }
    }
}

/// Rotations in the demo poll and retry every 50 ms instead of every few seconds.
fn quick() -> Tuning {
    Tuning {
        poll_interval: Some(Duration::from_millis(50)),
        retry_base: Some(Duration::from_millis(50)),
        http_timeout: None,
    }
}

fn run(run_for: Duration) -> Result<(), VaultError> {
    let dir = tempfile::Builder::new()
        .prefix("secret-demo-")
        .tempdir()
        .map_err(io)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    let result = runtime.block_on(demo(dir.path(), run_for));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn demo(dir: &Path, run_for: Duration) -> Result<(), VaultError> {
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().map_err(io)?;
    let services = [API_SERVICE, WORKER_SERVICE].map(|s| ServiceRef {
        project_id: PROJECT.into(),
        environment_id: ENVIRONMENT.into(),
        service_id: s.into(),
    });
    let railway = RailwayStandIn::start(
        loopback,
        RailwayConfig {
            project_tokens: vec![ProjectToken {
                token: "demo-railway-project-token".into(),
                project_id: PROJECT.into(),
                environment_id: ENVIRONMENT.into(),
            }],
            services: services.to_vec(),
            ..Default::default()
        },
    )
    .await
    .map_err(io)?;
    let openai = OpenAiStandIn::start(
        loopback,
        OpenAiConfig {
            admin_keys: vec!["sk-admin-demo".into()],
            projects: vec!["proj_demo".into()],
            archived_projects: vec![],
            new_key_warmup: 1,
        },
    )
    .await
    .map_err(io)?;
    let ld = LaunchDarklyStandIn::start(
        loopback,
        LaunchDarklyConfig {
            access_tokens: vec!["api-demo-token".into()],
            environments: vec![("planning-engine".into(), "production".into())],
        },
    )
    .await
    .map_err(io)?;
    println!(
        "stand-ins: railway {}  openai {}  launchdarkly {}",
        railway.endpoint(),
        openai.base_url(),
        ld.base_url()
    );

    // A throwaway vault with the credentials and today's hand-pasted values.
    let vault_path = dir.join("vault.db");
    let identity = secret_core::crypto::generate_identity(&secret_core::render::rfc3339(
        Clock::System.now_ms(),
        false,
    ));
    let identity_path = dir.join("identity.txt");
    secret_core::private_file::write(
        &identity_path,
        identity.file_text.expose_secret().as_bytes(),
        false,
    )
    .map_err(io)?;
    let actor = Actor {
        name: "user:demo".into(),
        pid: Some(std::process::id()),
        request_id: "demo".into(),
    };
    let mut vault = Vault::init(
        &vault_path,
        InitOptions {
            recipients: vec![identity.recipient.clone()],
            passphrase: None,
            scrypt_log_n: None,
        },
        actor,
    )?;
    let ld_key = ld
        .environment("planning-engine", "production")
        .map(|e| e.api_key)
        .unwrap_or_default();
    let seeds = [
        ("RAILWAY_TOKEN", "demo-railway-project-token".to_string()),
        ("OPENAI_ADMIN_KEY", "sk-admin-demo".to_string()),
        ("LAUNCHDARKLY_API_TOKEN", "api-demo-token".to_string()),
        ("JWT_SECRET", "jwt-pasted-by-hand-long-ago".to_string()),
        ("OPENAI_API_KEY", "sk-pasted-by-hand".to_string()),
        ("LAUNCHDARKLY_SDK_KEY", ld_key.clone()),
        (
            "WORKER_SESSION_KEY",
            "worker-session-key-by-hand".to_string(),
        ),
    ];
    for (name, v) in &seeds {
        vault.set(name, value(v), &SetOptions::default())?;
    }
    for (service, name, v) in [
        (API_SERVICE, "JWT_SECRET", "jwt-pasted-by-hand-long-ago"),
        (API_SERVICE, "LAUNCHDARKLY_SDK_KEY", ld_key.as_str()),
        (API_SERVICE, "OPENAI_API_KEY", "sk-pasted-by-hand"),
        (
            WORKER_SERVICE,
            "WORKER_SESSION_KEY",
            "worker-session-key-by-hand",
        ),
    ] {
        railway
            .set_variable(PROJECT, ENVIRONMENT, service, name, v)
            .map_err(io)?;
    }
    let (_row, admin_token) = vault.create_token("demo-admin", &["admin".to_string()], None)?;

    let policies_dir = dir.join("policies");
    std::fs::create_dir_all(&policies_dir).map_err(io)?;
    let target = |name: &str, service: &str| {
        format!(
            "[targets.{name}]\nkind = \"railway\"\nproject_id = \"{PROJECT}\"\nenvironment_id = \"{ENVIRONMENT}\"\n\
             service_id = \"{service}\"\ntoken = \"RAILWAY_TOKEN\"\ntoken_kind = \"project\"\nredeploy = true\n\
             health_url = \"{}\"\nendpoint = \"{}\"\ndeploy_timeout = \"20s\"\n\n",
            railway.health_url(service),
            railway.endpoint()
        )
    };
    let policy = format!(
        "{}{}\
[secrets.JWT_SECRET]\ngenerator = \"jwt-hmac\"\nalgorithm = \"HS256\"\nevery = \"8s\"\ngrace = \"4s\"\npush = [\"api\"]\nprevious_as = \"JWT_SECRET_PREVIOUS\"\n\n\
[secrets.LAUNCHDARKLY_SDK_KEY]\ngenerator = \"launchdarkly-sdk\"\nevery = \"12s\"\ngrace = \"6s\"\npush = [\"api\"]\n\
[secrets.LAUNCHDARKLY_SDK_KEY.launchdarkly]\nproject_key = \"planning-engine\"\nenvironment_key = \"production\"\naccess_token = \"LAUNCHDARKLY_API_TOKEN\"\nbase_url = \"{ld}\"\n\n\
[secrets.WORKER_SESSION_KEY]\ngenerator = \"random\"\nlength = 48\nevery = \"6s\"\ngrace = \"3s\"\npush = [\"worker\"]\n\n\
[secrets.OPENAI_API_KEY]\ngenerator = \"openai\"\nevery = \"10s\"\ngrace = \"5s\"\npush = [\"api\"]\n\
[secrets.OPENAI_API_KEY.openai]\nproject_id = \"proj_demo\"\nadmin_key = \"OPENAI_ADMIN_KEY\"\nbase_url = \"{oa}\"\n\n\
[secrets.OPENAI_ADMIN_KEY]\ngenerator = \"manual\"\nmax_age = \"180d\"\n\n\
[secrets.RAILWAY_TOKEN]\ngenerator = \"manual\"\nmax_age = \"180d\"\n\n\
[secrets.LAUNCHDARKLY_API_TOKEN]\ngenerator = \"manual\"\nmax_age = \"180d\"\n",
        target("api", API_SERVICE),
        target("worker", WORKER_SERVICE),
        ld = ld.base_url(),
        oa = openai.base_url(),
    );
    std::fs::write(policies_dir.join("demo.toml"), policy).map_err(io)?;
    let policies = secret_core::policy::load_dir(&policies_dir).map_err(|r| io(r.to_string()))?;
    // One rotation must fail: the worker's next deploy crashes, so WORKER_SESSION_KEY
    // rolls back (and, having failed, waits an hour before its next try).
    railway.set_next_deploy_outcome(WORKER_SERVICE, DeployOutcome::Crashed);

    let listener = TcpListener::bind(loopback).await.map_err(io)?;
    let api = format!("http://{}", listener.local_addr().map_err(io)?);
    println!(
        "secret serve: {api} (API and scheduler), running for {}",
        humantime::format_duration(run_for)
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let tuning = quick();
    let options = SchedulerOptions {
        tick: Duration::from_millis(500),
        jitter: Duration::from_millis(100),
        engine: EngineOptions {
            poll_interval: tuning.poll_interval.unwrap_or(Duration::from_millis(50)),
            retry: RetryPolicy {
                base: tuning.retry_base.unwrap_or(Duration::from_millis(50)),
                ..RetryPolicy::default()
            },
            ..EngineOptions::default()
        },
        ..Default::default()
    };
    let serve_options = secret_server::serve::ServeOptions {
        scheduler: Some(options),
        shutdown_grace: Duration::from_secs(20),
        trust_forwarded_for: false,
        backup: None,
        limits: Default::default(),
        instance: "demo".into(),
    };
    let server = tokio::spawn(secret_server::serve::serve(
        listener,
        vault,
        policies,
        serve_options,
        stop_rx,
    ));
    tokio::time::sleep(run_for).await;

    // Read through the API as a deploy script would, with the admin token.
    let http = reqwest::Client::new();
    let read = http
        .get(format!("{api}/v1/secrets/JWT_SECRET"))
        .bearer_auth(admin_token.expose_secret())
        .send()
        .await
        .map_err(io)?;
    let status = read.status();
    let body: serde_json::Value = read.json().await.unwrap_or_default();
    let _ = stop_tx.send(true);
    server.await.map_err(io)??;

    section("GET /v1/secrets/JWT_SECRET (admin token)");
    println!(
        "HTTP {status}: version {} value {}",
        body["version"],
        shorten(body["value"].as_str().unwrap_or_default())
    );

    section("Railway variables held by the stand-in");
    for service in [API_SERVICE, WORKER_SERVICE] {
        println!("{service}:");
        for (k, v) in railway.variables(PROJECT, ENVIRONMENT, service) {
            println!("  {k} = {}", shorten(&v));
        }
    }
    println!("deployments: {}", railway.deployments().len());

    // The CLI's own views of the same vault.
    let (vault_arg, identity_arg, policies_arg) = (
        vault_path.display().to_string(),
        identity_path.display().to_string(),
        policies_dir.display().to_string(),
    );
    let cli = |args: &[&str]| {
        let located = [
            "--vault",
            vault_arg.as_str(),
            "--identity",
            identity_arg.as_str(),
            "--policies",
            policies_arg.as_str(),
        ];
        let argv = std::iter::once("secret")
            .chain(located)
            .chain(args.iter().copied());
        let env = Environment {
            user: Some("demo".into()),
            tuning: quick(),
            ..Environment::default()
        };
        secret_cli::run(<Cli as clap::Parser>::parse_from(argv), env)
    };
    section("secret rotations");
    cli(&["rotations", "--limit", "20"])?;
    section("secret audit (rotation steps)");
    cli(&["audit", "--action", "rotate", "--limit", "25"])?;
    section("secret audit verify");
    cli(&["audit", "verify"])?;

    // Someone pastes a value into the worker's variables in Railway's dashboard. (The
    // worker's key rolled back and waits an hour before its next try: nothing rotates
    // it under the check.)
    railway
        .set_variable(
            PROJECT,
            ENVIRONMENT,
            WORKER_SERVICE,
            "WORKER_SESSION_KEY",
            "pasted-in-the-dashboard",
        )
        .map_err(io)?;
    section("secret drift (after a value was pasted in Railway's dashboard)");
    // `secret drift` runs its own runtime, as the binary does: off this one's worker.
    let found = match tokio::task::block_in_place(|| cli(&["drift"])) {
        Err(e) if e.exit_code() == secret_core::error::exit::DRIFT => {
            println!("exit 8: {e}");
            true
        }
        Err(e) => return Err(e),
        Ok(()) => false,
    };
    section("secret drift --fix");
    if let Err(e) = tokio::task::block_in_place(|| cli(&["drift", "--fix"])) {
        println!("exit {}: {e}", e.exit_code());
    }

    // What the demo promised: each kind rotated, one rollback.
    let mut check = Vault::open(
        &vault_path,
        secret_core::vault::Unlocker {
            identities: Some(secret_core::crypto::Identities::parse(&identity.file_text)?),
            passphrase: None,
            identity_hint: String::new(),
        },
        Actor {
            name: "user:demo".into(),
            pid: None,
            request_id: "demo-check".into(),
        },
    )?;
    let runs = check.rotations(None, 200)?;
    let finished = |s: &str| {
        runs.iter()
            .any(|r| r.secret == s && r.outcome == Some(RunOutcome::Finished))
    };
    let rolled_back = runs
        .iter()
        .any(|r| r.outcome == Some(RunOutcome::RolledBack));
    let worker_key = check
        .reveal(
            "WORKER_SESSION_KEY",
            secret_core::model::VersionSelector::Label(secret_core::model::Label::Current),
            "demo: compare with Railway",
        )?
        .value;
    let fixed = railway
        .variables(PROJECT, ENVIRONMENT, WORKER_SERVICE)
        .get("WORKER_SESSION_KEY")
        .is_some_and(|v| v == worker_key.expose());
    section("result");
    let ok = finished("JWT_SECRET")
        && finished("LAUNCHDARKLY_SDK_KEY")
        && finished("OPENAI_API_KEY")
        && rolled_back
        && found
        && fixed;
    println!(
        "JWT_SECRET rotated: {}  LAUNCHDARKLY_SDK_KEY rotated: {}  OPENAI_API_KEY rotated: {}  a rollback: {}  drift found and fixed: {}",
        finished("JWT_SECRET"),
        finished("LAUNCHDARKLY_SDK_KEY"),
        finished("OPENAI_API_KEY"),
        rolled_back,
        found && fixed
    );
    if ok {
        println!("demo complete (its vault and stand-ins are gone with it)");
        Ok(())
    } else {
        Err(VaultError::Io(
            "the demo did not see every kind of rotation (or drift fixed); rerun with --run-for 40s"
                .into(),
        ))
    }
}
