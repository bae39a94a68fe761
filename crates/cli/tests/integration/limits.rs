//! What an anonymous client can cost `secret serve`: connections that send nothing or
//! half a header are closed, connections past the cap close the longest-idle one (so a
//! health check and an authorised read are still answered), hyper's own refusals carry
//! the JSON error shape, and thousands of anonymous requests grow the vault by a bounded
//! amount.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::serve::{free_port, wait_status};
use crate::util::TestEnv;

/// The bound this test states: 10,000 anonymous requests (from one address and from
/// 5,000 forwarded ones) add at most this many bytes to the vault file.
pub const ANONYMOUS_GROWTH_BOUND: u64 = 64 * 1024;

struct Served {
    child: Child,
    base: String,
    addr: String,
    rt: tokio::runtime::Runtime,
}

impl Served {
    fn start(env: &TestEnv, extra: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--listen", &addr, "--no-scheduler"];
        args.extend_from_slice(extra);
        let child = env
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://{addr}");
        wait_status(&rt, &format!("{base}/readyz"), 200);
        Served {
            child,
            base,
            addr,
            rt,
        }
    }

    /// SIGTERM, and the exit code.
    fn stop(mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server closed `stream` within `within` (EOF or reset on read).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// One raw HTTP/1.1 request on a new connection; the status and the body.
fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

fn token(env: &TestEnv, scopes: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", "t"];
    for s in scopes {
        args.push("--scope");
        args.push(s);
    }
    let out = env.run(&args).ok().stdout;
    out.split_whitespace()
        .find(|w| w.starts_with("secret_"))
        .unwrap_or_else(|| panic!("no token in {out}"))
        .to_string()
}

#[test]
fn half_sent_headers_and_idle_sockets_are_closed_and_the_cap_keeps_health_answering() {
    let env = TestEnv::init();
    env.set("API_KEY", "limits-value-1");
    let reader = token(&env, &["secrets:read:*"]);
    let served = Served::start(
        &env,
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "2s",
            "--max-connections",
            "40",
        ],
    );

    // Half a header: closed by the header-read timeout, not left open for minutes.
    let mut half = TcpStream::connect(&served.addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut half, Duration::from_secs(10)));
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "closed by the timeout, not at once"
    );

    // A socket that sends nothing: closed by the idle timeout.
    let mut silent = TcpStream::connect(&served.addr).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)));

    // Over the cap: 200 idle sockets against a cap of 40. A health check and an
    // authorised read on new connections are still answered, and the longest-idle
    // sockets are the ones closed.
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&served.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (health, read) = served.rt.block_on(async {
        let health = client
            .get(format!("{}/healthz", served.base))
            .send()
            .await
            .unwrap();
        let read = client
            .get(format!("{}/v1/secrets/API_KEY", served.base))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        (health.status().as_u16(), read.text().await.unwrap())
    });
    assert_eq!(health, 200);
    assert!(read.contains("limits-value-1"), "{read}");
    let closed = idle
        .iter_mut()
        .take(150)
        .map(|s| closed_within(s, Duration::from_millis(300)))
        .filter(|c| *c)
        .count();
    assert!(
        closed >= 140,
        "the oldest idle sockets make room: {closed} of the first 150 closed"
    );
    drop(idle);
    assert_eq!(served.stop(), Some(0));
}

#[test]
fn a_body_sent_too_slowly_gets_408_and_the_connection_closes() {
    let env = TestEnv::init();
    let writer = token(&env, &["secrets:write:*"]);
    let served = Served::start(&env, &["--request-timeout", "1s"]);
    let mut slow = TcpStream::connect(&served.addr).unwrap();
    // The head promises 100 bytes of body; 10 arrive, then nothing.
    slow.write_all(
        format!(
            "PUT /v1/secrets/SLOW HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {writer}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"value\":"
        )
        .as_bytes(),
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert_eq!(env.run(&["get", "SLOW"]).code, 3, "nothing was written");
    assert_eq!(served.stop(), Some(0));
}

#[test]
fn uris_too_long_get_414_with_the_json_error_shape() {
    let env = TestEnv::init();
    let served = Served::start(&env, &[]);
    // Past our own limit (8 KiB), and past hyper's (64 KiB), which answers by itself.
    for len in [9 * 1024, 70 * 1024] {
        let request = format!(
            "GET /v1/secrets/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "A".repeat(len)
        );
        let (status, body) = raw(&served.addr, request.as_bytes());
        assert_eq!(status, 414, "{len}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{len}: {e}: {body:?}"));
        assert_eq!(json["error"]["code"], "uri_too_long", "{len}");
        assert!(!body.contains("AAAA"), "the URI is not echoed");
    }
    // A malformed request line gets JSON too.
    let (status, body) = raw(&served.addr, b"GET /\x01 HTTP/1.1\r\n\r\n");
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "bad_request");
    assert_eq!(served.stop(), Some(0));
}

/// Size of the vault file once `serve` has stopped and its WAL is checkpointed into
/// it (the WAL is a bounded ring, reused after each checkpoint; the file is what grows).
fn vault_bytes(env: &TestEnv) -> u64 {
    env.sql("PRAGMA wal_checkpoint(TRUNCATE);");
    std::fs::metadata(&env.vault).unwrap().len()
}

#[test]
fn ten_thousand_anonymous_requests_grow_the_vault_by_a_bounded_amount() {
    let env = TestEnv::init();
    env.set("API_KEY", "anonymous-growth-value");
    // A first serve and stop, so the measured run starts from a settled file.
    Served::start(&env, &[]).stop();
    let last_seq = |entries: &[serde_json::Value]| {
        entries
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0)
    };
    let seq_before = last_seq(&env.audit(&["--limit", "100000"]));
    let before = vault_bytes(&env);
    let served = Served::start(&env, &["--trust-forwarded-for"]);
    let base = served.base.clone();
    let forged = format!("secret_0123456789abcdef.{}", "g".repeat(43));
    let statuses = served.rt.block_on(async {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for worker in 0..8u32 {
            let client = client.clone();
            let base = base.clone();
            let forged = forged.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = std::collections::BTreeMap::<u16, u32>::new();
                for i in 0..1_250u32 {
                    let n = worker * 1_250 + i;
                    // Half from one address, half from 5,000 forwarded ones.
                    let from = if n % 2 == 0 {
                        "127.0.0.1".to_string()
                    } else {
                        format!("198.51.{}.{}", (n / 256) % 256, n % 256)
                    };
                    let request = match n % 8 {
                        0 => client.get(format!("{base}/v1/jwks/API_KEY")),
                        1 => client.get(format!("{base}/v1/jwks/NO_SUCH_{n}")),
                        2 => client.get(format!("{base}/v1/secrets")),
                        3 => client
                            .get(format!("{base}/v1/secrets/API_KEY"))
                            .bearer_auth(&forged),
                        4 => client
                            .get(format!("{base}/v1/secrets/API_KEY"))
                            .header("authorization", "Bearer not-a-token"),
                        5 => client.get(format!("{base}/v1/no-such-route/{n}")),
                        6 => client.delete(format!("{base}/v1/secrets/API_KEY")),
                        _ => client
                            .put(format!("{base}/v1/secrets/API_KEY"))
                            .header("content-type", "application/json")
                            .body("{not json"),
                    };
                    let answer = request
                        .header("x-forwarded-for", from)
                        .send()
                        .await
                        .unwrap();
                    *seen.entry(answer.status().as_u16()).or_default() += 1;
                }
                seen
            }));
        }
        let mut all = std::collections::BTreeMap::<u16, u32>::new();
        for t in tasks {
            for (k, v) in t.await.unwrap() {
                *all.entry(k).or_default() += v;
            }
        }
        all
    });
    assert_eq!(statuses.values().sum::<u32>(), 10_000);
    assert!(
        statuses.keys().all(|s| (400..500).contains(s)),
        "anonymous requests are refused, never a 5xx or a success: {statuses:?}"
    );
    assert_eq!(served.stop(), Some(0));
    let after = vault_bytes(&env);
    let entries: Vec<serde_json::Value> = env
        .audit(&["--limit", "100000"])
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > seq_before)
        .collect();
    let added = entries.len();
    let grown = after.saturating_sub(before);
    eprintln!(
        "10,000 anonymous requests: vault {before} -> {after} bytes (+{grown}), {added} audit entries; statuses {statuses:?}"
    );
    assert!(
        grown <= ANONYMOUS_GROWTH_BOUND,
        "the vault grew by {grown} bytes ({added} entries)"
    );
    // Every request is accounted for: one by one (failed authentications the vault
    // checked, at most the brakes' worth) or in the tally.
    let tallied: u64 = entries
        .iter()
        .filter(|e| e["outcome"] == "tally")
        .map(|e| e["details"]["requests"].as_u64().unwrap())
        .sum();
    let one_by_one = entries
        .iter()
        .filter(|e| e["action"] == "api.refused" || e["outcome"] == "unauthorized")
        .filter(|e| e["outcome"] != "tally")
        .count() as u64;
    assert_eq!(
        tallied + one_by_one,
        10_000,
        "{tallied} tallied + {one_by_one}"
    );
    assert!(one_by_one <= 200, "{one_by_one} recorded one by one");
    assert!(!std::fs::read(&env.vault)
        .map(|b| crate::util::contains(&b, b"anonymous-growth-value"))
        .unwrap());
}
