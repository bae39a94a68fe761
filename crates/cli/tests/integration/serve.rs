//! `secret serve` as a process: waiting for its vault on a fresh volume, then serving.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::TestEnv;

/// A `secret serve` child on a free loopback port, ready (`/readyz` answers 200), its
/// stderr in `serve.log` in the test's folder; SIGTERM and waited for when dropped.
/// `global` come before `serve` (`--policies DIR`), `args` after it.
pub(crate) struct Served {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    pub port: u16,
    pub rt: tokio::runtime::Runtime,
}

impl Served {
    pub(crate) fn start(env: &TestEnv, global: &[&str], args: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut argv: Vec<&str> = global.to_vec();
        argv.extend(["serve", "--listen", &listen]);
        argv.extend_from_slice(args);
        let log = std::fs::File::create(env.path("serve.log")).unwrap();
        let child = env
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = format!("http://{listen}");
        wait_status(&rt, &format!("{addr}/readyz"), 200);
        Served {
            child,
            addr,
            port,
            rt,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn status(rt: &tokio::runtime::Runtime, url: &str) -> Option<u16> {
    rt.block_on(async { reqwest::get(url).await.ok().map(|r| r.status().as_u16()) })
}

pub(crate) fn wait_status(rt: &tokio::runtime::Runtime, url: &str, want: u16) {
    let start = Instant::now();
    while status(rt, url) != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{url} never answered {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_without_a_vault_is_healthy_but_not_ready_until_one_appears() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = TestEnv::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = env
        .command(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-scheduler",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_status(&rt, &format!("{base}/healthz"), 200);
    assert_eq!(status(&rt, &format!("{base}/readyz")), Some(503));
    assert_eq!(status(&rt, &format!("{base}/v1/secrets")), Some(503));
    // The vault is put in place (here: made there); serve picks it up and is ready.
    env.run(&["init"]).ok();
    wait_status(&rt, &format!("{base}/readyz"), 200);
    assert_eq!(
        status(&rt, &format!("{base}/v1/secrets")),
        Some(401),
        "the real API now"
    );
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let out = serve.wait().unwrap();
    assert_eq!(out.code(), Some(0));
    let _ = serve.stderr.take();
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn serve_backs_up_on_a_schedule_keeps_the_newest_and_exports_the_last_success() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = TestEnv::init();
    env.set("KEPT", "in-every-backup");
    env.run(&["serve", "--backup-dir", "b", "--backup-every", "0s"])
        .code(2)
        .stderr_has("--backup-every");
    env.run(&["serve", "--backup-keep", "3"]).code(2);
    let dir = env.path("backups");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = env
        .command(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-scheduler",
            "--backup-dir",
            dir.to_str().unwrap(),
            "--backup-every",
            "1s",
            "--backup-keep",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_status(&rt, &format!("{base}/healthz"), 200);
    let scrape = || {
        rt.block_on(async {
            reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    let start = Instant::now();
    let text = loop {
        let text = scrape();
        if metric(&text, "secret_backups_total{outcome=\"ok\"}").unwrap_or(0.0) >= 3.0 {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no 3 backups:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&text, "secret_backup_interval_seconds"), Some(1.0));
    let last = metric(&text, "secret_backup_last_success_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 30.0, "last success {last}, now {now}");
    assert_eq!(
        metric(&text, "secret_backups_total{outcome=\"failed\"}"),
        Some(0.0)
    );
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert_eq!(serve.wait().unwrap().code(), Some(0));
    let _ = serve.stderr.take();

    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "--backup-keep 2: {files:?}");
    use std::os::unix::fs::PermissionsExt;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("secret-backup-") && name.ends_with(".age"),
            "{name}"
        );
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let restored = env.path("restored/vault.db");
    let r = restored.to_str().unwrap();
    env.run(&["--vault", r, "restore", files[1].to_str().unwrap()])
        .ok();
    env.run(&["--vault", r, "audit", "verify"]).ok();
    assert_eq!(
        env.run(&["--vault", r, "get", "KEPT"]).ok().stdout,
        "in-every-backup"
    );
    let backups = env.audit(&["--action", "backup"]);
    assert!(backups.len() >= 3);
    assert!(backups.iter().all(|e| e["actor"] == "serve:backup"));
}

#[test]
fn after_a_rekey_a_running_serve_stops_serving_and_old_tokens_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = TestEnv::init();
    env.set("K", "value");
    let old_token = env
        .run(&["token", "create", "-q", "--name", "old", "--scope", "admin"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let get = |base: &str, token: &str| {
        rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{base}/v1/secrets/K"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let start_serve = || {
        let port = free_port();
        let child = env
            .command(&[
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--no-scheduler",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_status(&rt, &format!("{base}/readyz"), 200);
        (child, base)
    };
    let (mut stale, base) = start_serve();
    assert_eq!(get(&base, &old_token), 200);

    let run = env.run(&["rekey"]).ok();
    assert!(run.stdout.contains("revoked 1 API token"), "{}", run.stdout);
    // The serve that unlocked before the rekey holds the old key: it answers nothing
    // and writes nothing, and says it is not ready (once the last success it reuses,
    // for at most a second, has expired).
    assert_eq!(get(&base, &old_token), 503);
    wait_status(&rt, &format!("{base}/readyz"), 503);
    let entries = env.audit(&[]);
    let rekey_at = entries.iter().position(|e| e["action"] == "rekey").unwrap();
    assert!(
        entries[rekey_at..]
            .iter()
            .all(|e| e["details"]["via"] != "api"),
        "the stale serve wrote after the rekey"
    );
    env.run(&["audit", "verify"]).ok();
    unsafe { libc::kill(stale.id() as i32, libc::SIGTERM) };
    stale.wait().unwrap();

    // Restarted, it serves again; the old token is refused, a new one works.
    let (mut fresh, base) = start_serve();
    assert_eq!(get(&base, &old_token), 401);
    let new_token = env
        .run(&["token", "create", "-q", "--name", "new", "--scope", "admin"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(get(&base, &new_token), 200);
    unsafe { libc::kill(fresh.id() as i32, libc::SIGTERM) };
    fresh.wait().unwrap();
    env.run(&["audit", "verify"]).ok();
}

// `secret serve` on PostgreSQL too: the vault opened inside the server's runtime.
crate::on_both_stores! {
    after_a_rekey_a_running_serve_stops_serving_and_old_tokens_are_refused,
}
