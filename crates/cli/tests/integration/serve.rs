//! `secret serve` as a process: waiting for its vault on a fresh volume, then serving.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::TestEnv;

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
