//! Remote mode: the same commands against a `secret serve` give what they give on a
//! vault file — the same stdout, stderr and exit codes — plus what only remote mode
//! has: tokens (401/403 → exit 5), token files, https with a private CA, and a clear
//! refusal of the commands that need the vault file itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use regex::Regex;

use crate::serve::{free_port, Served};
use crate::util::{Run, TestEnv};

const POLICIES: &str = r#"
[secrets.SESSION_KEY]
generator = "random"
every = "30d"
grace = "1h"

[secrets.SIGNING_KEY]
generator = "jwt-ed25519"
every = "30d"
grace = "1h"

# A target no push reaches: a rotation of PUSHED_KEY rolls back, and cannot even
# put the old value back, so it stays open (exit 6 both times).
[targets.unwritable]
kind = "dotenv"
path = "/nonexistent-secret-test-dir/app.env"

[secrets.PUSHED_KEY]
generator = "random"
every = "30d"
push = ["unwritable"]

[secrets.LEGACY_PASSWORD]
generator = "manual"
max_age = "90d"
"#;

/// A vault with a few secrets, the policies above and an admin token.
struct Setup {
    local: TestEnv,
    policies: PathBuf,
    admin: String,
}

/// `secret serve` on a vault, with the scheduler (a tick far away: only requested
/// rotations run).
fn serve_with(env: &TestEnv, policies: &Path) -> Served {
    Served::start(
        env,
        &["--policies", policies.to_str().unwrap()],
        &["--tick", "1h"],
    )
}

fn token(env: &TestEnv, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    for s in scopes {
        args.extend_from_slice(&["--scope", s]);
    }
    env.run(&args).ok().stdout.trim().to_string()
}

fn setup() -> Setup {
    let local = TestEnv::init();
    let policies = local.path("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("p.toml"), POLICIES).unwrap();
    local.set("API_KEY", "api-v1");
    local.set("API_KEY", "api-v2 with 'quotes' and $dollar");
    local
        .run_with(
            &["set", "DATABASE_URL", "--description", "primary db"],
            b"postgres://db/app",
        )
        .ok();
    local.set("OLD_TOKEN", "old");
    local.set("SESSION_KEY", "session-v1");
    local.set("LEGACY_PASSWORD", "hunter2");
    // Rotated by the script; a value now, so that the scheduler finds nothing due.
    local.set("SIGNING_KEY", "placeholder");
    local.set("PUSHED_KEY", "pushed-v1");
    let admin = token(&local, "admin", &["admin"]);
    Setup {
        local,
        policies,
        admin,
    }
}

/// A byte copy of `from`'s vault and identity: the same secrets, versions, key and
/// tokens, in a directory of its own.
fn twin(from: &TestEnv) -> TestEnv {
    let to = TestEnv::new();
    for dir in ["data", "config"] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(from.path(dir))
            .arg(to.path(dir))
            .status()
            .unwrap();
        assert!(status.success());
    }
    to
}

/// A machine with no vault, pointed at `served` with `token`.
fn client(served: &Served, token: &str) -> TestEnv {
    let mut env = TestEnv::new();
    env.env.push(("SECRET_ADDR".into(), served.addr.clone()));
    env.env.push(("SECRET_TOKEN".into(), token.into()));
    env
}

/// One step of the script: arguments, stdin, extra environment.
struct Step {
    args: &'static [&'static str],
    stdin: &'static [u8],
    env: &'static [(&'static str, &'static str)],
}

const fn step(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: b"",
        env: &[],
    }
}

const fn fed(args: &'static [&'static str], stdin: &'static [u8]) -> Step {
    Step {
        args,
        stdin,
        env: &[],
    }
}

/// What both modes must do alike, in order: reads, writes, refusals, rotations.
const SCRIPT: &[Step] = &[
    step(&["list"]),
    step(&["list", "--json"]),
    step(&["get", "API_KEY"]),
    step(&["get", "API_KEY", "--previous"]),
    step(&["get", "API_KEY", "--version", "1", "--json"]),
    step(&["get", "API_KEY", "--version", "9"]),
    step(&["get", "NOPE"]),
    step(&["get", "sk-live-not-a-name"]),
    step(&["get", "DATABASE_URL", "--previous"]),
    fed(&["set", "API_KEY"], b"api-v3\n"),
    fed(&["set", "API_KEY", "--if-version", "1"], b"lost race"),
    fed(&["set", "NEW_KEY", "--if-version", "0"], b"fresh"),
    fed(&["set", "NEW_KEY", "--if-version", "0"], b"fresh again"),
    fed(&["set", "bad-name"], b"value"),
    fed(&["set", "EMPTY"], b""),
    fed(&["set", "EMPTY", "--allow-empty"], b""),
    step(&[
        "set",
        "GENERATED",
        "--generate",
        "--length",
        "24",
        "--charset",
        "hex",
        "--description",
        "made by the vault",
    ]),
    step(&["history", "API_KEY"]),
    step(&["history", "API_KEY", "--json"]),
    step(&["history", "NOPE"]),
    step(&["delete", "OLD_TOKEN"]),
    step(&["delete", "OLD_TOKEN"]),
    step(&["delete", "NOPE"]),
    step(&["get", "OLD_TOKEN"]),
    fed(&["set", "OLD_TOKEN"], b"new"),
    step(&["history", "OLD_TOKEN"]),
    step(&["history", "OLD_TOKEN", "--json"]),
    step(&["list", "--all"]),
    step(&["list", "--all", "--json"]),
    step(&["-q", "list"]),
    step(&["export", "--only", "API_KEY,DATABASE_URL"]),
    step(&["export", "--format", "json", "--only", "EMPTY,API_KEY"]),
    step(&["export", "--format", "shell", "--only", "API_KEY"]),
    step(&["export", "--only", "API_KEY,NOPE"]),
    step(&["export", "--only", "API_KEY,OLD_TOKEN"]),
    step(&[
        "run",
        "--only",
        "API_KEY,DATABASE_URL",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$API_KEY\" \"$DATABASE_URL\"",
    ]),
    step(&[
        "run",
        "--only",
        "API_KEY",
        "--prefix",
        "APP_",
        "--",
        "sh",
        "-c",
        "echo \"$APP_API_KEY\"; exit 7",
    ]),
    Step {
        args: &["run", "--only", "API_KEY", "--", "true"],
        stdin: b"",
        env: &[("API_KEY", "already here")],
    },
    step(&["run", "--only", "API_KEY", "--", "/nonexistent/command"]),
    step(&["rotate", "SESSION_KEY"]),
    step(&["rotate", "SESSION_KEY", "--json"]),
    step(&["rotate", "SIGNING_KEY"]),
    // Still in its grace: the old run is revoked early, then the new one runs.
    step(&["rotate", "SIGNING_KEY"]),
    step(&["rotate", "SIGNING_KEY", "--json"]),
    step(&["rotate", "PUSHED_KEY"]),
    // Open in its rollback: asked again, the same run goes on (and stops again).
    step(&["rotate", "PUSHED_KEY", "--json"]),
    step(&["rotations", "PUSHED_KEY"]),
    step(&["get", "PUSHED_KEY"]),
    step(&["rotate", "LEGACY_PASSWORD"]),
    step(&["rotate", "API_KEY"]),
    step(&["rotate", "not-a-name"]),
    step(&["get", "SESSION_KEY", "--version", "1"]),
    step(&["history", "SESSION_KEY"]),
];

/// What differs between two vaults that did the same things at different instants:
/// times, ages and random rotation ids. Nothing else is rewritten.
fn instants(text: &str) -> String {
    let time = Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z").unwrap();
    let age = Regex::new(r"\d+[smhd] ago").unwrap();
    let rotation = Regex::new(r"rot_[0-9a-f]{12}").unwrap();
    let duration = Regex::new(r#""duration_ms":\d+"#).unwrap();
    let text = time.replace_all(text, "<TIME>");
    let text = age.replace_all(&text, "<AGE>");
    let text = rotation.replace_all(&text, "<ROTATION>");
    duration
        .replace_all(&text, "\"duration_ms\":<MS>")
        .into_owned()
}

fn run_step(env: &TestEnv, step: &Step) -> Run {
    let mut cmd = env.command(step.args);
    for (k, v) in step.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(step.stdin);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

#[test]
fn the_same_script_gives_the_same_output_against_a_file_and_against_serve() {
    let s = setup();
    // Two byte-identical vaults: one used as a file, one through `secret serve`.
    let served_env = twin(&s.local);
    let served = serve_with(&served_env, &s.policies);
    let remote = client(&served, &s.admin);
    let mut local = s.local;
    local.env.push((
        "SECRET_POLICIES".into(),
        s.policies.to_str().unwrap().into(),
    ));

    let mut codes = Vec::new();
    for step in SCRIPT {
        let l = run_step(&local, step);
        let r = run_step(&remote, step);
        let what = step.args.join(" ");
        assert_eq!(
            (l.code, instants(&l.stdout), instants(&l.stderr)),
            (r.code, instants(&r.stdout), instants(&r.stderr)),
            "`secret {what}`: local (left) and remote (right) differ\nlocal: {l:#?}\nremote: {r:#?}"
        );

        codes.push((what, l.code));
    }
    // The script covers what it claims: successes and each refusal's exit code.
    let code_of = |what: &str| {
        codes
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, c)| *c)
            .unwrap()
    };
    assert_eq!(code_of("get NOPE"), 3);
    assert_eq!(code_of("get sk-live-not-a-name"), 2);
    assert_eq!(code_of("set API_KEY --if-version 1"), 4);
    assert_eq!(code_of("set EMPTY"), 2);
    assert_eq!(code_of("export --only API_KEY,NOPE"), 3);
    assert_eq!(code_of("rotate LEGACY_PASSWORD"), 2);
    assert_eq!(code_of("rotate API_KEY"), 3);
    assert_eq!(code_of("rotate SESSION_KEY"), 0);
    assert_eq!(code_of("rotate PUSHED_KEY"), 6);
    assert_eq!(code_of("rotate PUSHED_KEY --json"), 6);
    assert_eq!(code_of("run --only API_KEY -- true"), 2);
    assert_eq!(code_of("run --only API_KEY -- /nonexistent/command"), 127);
    assert!(codes.iter().any(|(w, c)| w.contains("exit 7") && *c == 7));
    let second = run_step(&local, &step(&["rotations", "SIGNING_KEY", "--json"]));
    let runs: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 3);
    assert!(
        runs[1]["revoked_at"].is_string(),
        "the script did rotate a secret still in grace: {runs:#}"
    );

    // The served vault, read both ways: the same bytes, times and ids included (only
    // a table's ages, counted from each process's own now, may tick in between).
    let mut on_file = TestEnv::new();
    on_file.env.push((
        "SECRET_VAULT".into(),
        served_env.vault.to_str().unwrap().into(),
    ));
    on_file.env.push((
        "SECRET_IDENTITY_FILE".into(),
        served_env.identity.to_str().unwrap().into(),
    ));
    let age = Regex::new(r"\d+[smhd] ago").unwrap();
    for args in [
        &["list", "--all", "--json"][..],
        &["list", "--all"],
        &["get", "SESSION_KEY", "--json"],
        &["get", "API_KEY", "--previous", "--json"],
        &["history", "SESSION_KEY", "--json"],
        &["history", "OLD_TOKEN"],
        &["export", "--format", "json"],
        &["export", "--format", "shell"],
        &["rotations"],
        &["rotations", "--json"],
        &["rotations", "SESSION_KEY", "--json", "--limit", "1"],
        &["audit", "--secret", "API_KEY"],
        &["audit", "--secret", "SESSION_KEY", "--json"],
        &["audit", "--action", "delete", "--json", "--limit", "2"],
        &[
            "audit", "--actor", "tester", "--action", "set", "--since", "1h", "--json",
        ],
    ] {
        let step = Step {
            args: Box::leak(args.to_vec().into_boxed_slice()),
            stdin: b"",
            env: &[],
        };
        let l = run_step(&on_file, &step);
        let r = run_step(&remote, &step);
        let what = args.join(" ");
        assert_eq!(l.code, 0, "`secret {what}` on the file: {l:#?}");
        let (l_out, r_out) = (
            age.replace_all(&l.stdout, "<AGE>"),
            age.replace_all(&r.stdout, "<AGE>"),
        );
        assert_eq!(
            (l.code, l_out, &l.stderr),
            (r.code, r_out, &r.stderr),
            "`secret {what}` on the same vault: file (left) and server (right) differ"
        );
    }
    // The remote reads were the server's: audited under the token, never a value.
    let reads = on_file.audit(&["--action", "export"]);
    assert!(!reads.is_empty());
    assert!(reads
        .iter()
        .all(|e| e["actor"].as_str().unwrap().starts_with("token:tok_")));
    let log = std::fs::read_to_string(served_env.path("serve.log")).unwrap();
    assert!(
        !log.contains("api-v3") && !log.contains("postgres://"),
        "{log}"
    );
}

#[test]
fn a_missing_or_refused_token_is_exit_5_and_changes_nothing() {
    let s = setup();
    let served = serve_with(&s.local, &s.policies);
    let narrow = token(&s.local, "narrow", &["secrets:read:DATABASE_*"]);
    let lister = token(
        &s.local,
        "lister",
        &["secrets:read:DATABASE_*", "secrets:list"],
    );
    let writer = token(&s.local, "writer", &["secrets:write:*", "secrets:read:*"]);
    let revoked = token(&s.local, "revoked", &["admin"]);
    let revoked_id = format!(
        "tok_{}",
        &revoked["secret_".len()..revoked.find('.').unwrap()]
    );
    s.local.run(&["token", "revoke", &revoked_id]).ok();

    let mut nobody = client(&served, "");
    nobody.env.retain(|(k, _)| k != "SECRET_TOKEN");
    nobody
        .run(&["get", "API_KEY"])
        .code(5)
        .stderr_has("remote mode needs an API token: set SECRET_TOKEN");
    client(
        &served,
        "secret_0123456789abcdef.this-is-not-a-real-token-of-this-vault",
    )
    .run(&["get", "API_KEY"])
    .code(5)
    .stderr_has("did not accept the API token (unknown token)");
    client(&served, &revoked)
        .run(&["list"])
        .code(5)
        .stderr_has(&format!("token {revoked_id} was revoked"));
    let denied = client(&served, &narrow).run(&["get", "API_KEY"]).code(5);
    assert!(
        denied
            .stderr
            .contains("the API token may not do this: token tok_")
            && denied
                .stderr
                .contains("lacks the scope for secrets:read:API_KEY"),
        "{denied:#?}"
    );
    assert!(denied.stdout.is_empty());
    client(&served, &writer)
        .run(&["delete", "API_KEY"])
        .code(5)
        .stderr_has("lacks the scope for secrets:delete:API_KEY");
    client(&served, &narrow)
        .run(&["export", "--only", "API_KEY"])
        .code(5)
        .stderr_has("secrets:read:API_KEY");
    // Nothing was deleted or read.
    assert_eq!(s.local.get("API_KEY"), "api-v2 with 'quotes' and $dollar");
    let reads: Vec<_> = s
        .local
        .audit(&["--secret", "API_KEY", "--action", "get"])
        .into_iter()
        .filter(|e| e["actor"].as_str().unwrap().starts_with("token:"))
        .collect();
    assert_eq!(reads.len(), 1, "only the refused get: {reads:#?}");
    assert_eq!(reads[0]["outcome"], "forbidden");

    // Export without --only: what the token reads; the rest is left out, said so
    // only to a token that may list names.
    let narrow_export = client(&served, &narrow)
        .run(&["export", "--format", "json"])
        .ok();
    assert_eq!(
        narrow_export.stdout,
        "{\"DATABASE_URL\":\"postgres://db/app\"}\n"
    );
    assert_eq!(narrow_export.stderr, "");
    let listed = client(&served, &lister)
        .run(&["export", "--format", "json"])
        .ok();
    assert_eq!(listed.stdout, narrow_export.stdout);
    // API_KEY, LEGACY_PASSWORD, OLD_TOKEN, PUSHED_KEY, SESSION_KEY, SIGNING_KEY.
    assert_eq!(
        listed.stderr,
        "warning: 6 secrets this token may not read were left out\n"
    );
}

#[test]
fn a_token_file_is_read_and_one_readable_by_others_warns() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup();
    let served = serve_with(&s.local, &s.policies);
    let mut remote = client(&served, "ignored: the file wins");
    let file = remote.path("token");
    std::fs::write(&file, format!("{}\n", s.admin)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = remote
        .run(&["--token-file", file.to_str().unwrap(), "get", "API_KEY"])
        .ok();
    assert_eq!(private.stdout, "api-v2 with 'quotes' and $dollar");
    assert_eq!(private.stderr, "");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    remote
        .env
        .push(("SECRET_TOKEN_FILE".into(), file.to_str().unwrap().into()));
    let open = remote.run(&["get", "API_KEY"]).ok();
    assert_eq!(open.stdout, "api-v2 with 'quotes' and $dollar");
    assert_eq!(
        open.stderr,
        format!(
            "warning: token file {0} is readable by others (mode 0644); run `chmod 600 {0}`\n",
            file.display()
        )
    );
    std::fs::write(&file, "\n").unwrap();
    remote.run(&["list"]).code(5).stderr_has("is empty");
    let missing = remote.path("no-such-token");
    remote
        .run(&["--token-file", missing.to_str().unwrap(), "list"])
        .code(5)
        .stderr_has("cannot read token file");
}

#[test]
fn commands_that_need_the_vault_file_are_refused_in_remote_mode() {
    let s = setup();
    let served = serve_with(&s.local, &s.policies);
    let remote = client(&served, &s.admin);
    std::fs::write(remote.path(".env"), "A=1\n").unwrap();
    for args in [
        &["init"][..],
        &["undelete", "API_KEY"],
        &["destroy", "API_KEY", "--version", "1"],
        &["import", ".env"],
        &["token", "list"],
        &["audit", "verify"],
        &["plan"],
    ] {
        remote
            .run(args)
            .code(2)
            .stderr_has("this command works on a vault file only, and remote mode is on");
    }
    assert!(!remote.vault.exists(), "init made no vault");
    assert!(!remote.identity.exists(), "nor an identity");
    remote
        .run(&["rotate", "--due"])
        .code(2)
        .stderr_has("rotate --due is the server's own work in remote mode");
    remote
        .run(&["rotate", "--dry-run", "SESSION_KEY"])
        .code(2)
        .stderr_has("rotate --dry-run reads the policies and the vault together");
    assert_eq!(
        s.local.run(&["rotations", "--json"]).ok().stdout,
        "[]\n",
        "nothing rotated"
    );
}

#[test]
fn a_bad_address_or_a_server_that_is_not_there_is_a_clear_error() {
    let mut env = TestEnv::new();
    env.env.push(("SECRET_TOKEN".into(), "t".into()));
    env.env
        .push(("SECRET_ADDR".into(), "vault.internal:8200".into()));
    env.run(&["list"])
        .code(2)
        .stderr_has("SECRET_ADDR (or --addr) must be the URL of a `secret serve`");
    let port = free_port();
    env.run(&["--addr", &format!("http://127.0.0.1:{port}"), "list"])
        .code(1)
        .stderr_has(&format!(
            "cannot reach the server at http://127.0.0.1:{port}"
        ));
}

/// A TLS front for `secret serve` (which speaks plain http): a private CA, a
/// certificate for `localhost` signed by it, and a proxy that forwards each
/// connection, as a TLS-terminating proxy in front of serve would.
struct TlsFront {
    port: u16,
    ca_pem: String,
    _rt: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(upstream: u16) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "secret test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        TlsFront {
            port,
            ca_pem: ca_cert.pem(),
            _rt: rt,
        }
    }
}

#[test]
fn https_works_with_a_private_ca_and_an_untrusted_certificate_is_refused() {
    let s = setup();
    let served = serve_with(&s.local, &s.policies);
    let front = TlsFront::start(served.port);
    let mut remote = client(&served, &s.admin);
    remote.env.retain(|(k, _)| k != "SECRET_ADDR");
    let addr = format!("https://localhost:{}", front.port);
    remote.env.push(("SECRET_ADDR".into(), addr.clone()));
    let ca = remote.path("ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();

    let untrusted = remote.run(&["get", "API_KEY"]).code(1);
    assert!(
        untrusted.stderr.starts_with(&format!(
            "error: TLS: the certificate of {addr} is not trusted ("
        )) && untrusted
            .stderr
            .contains("pass --ca-file FILE or set SECRET_CA_FILE"),
        "{untrusted:#?}"
    );
    assert!(untrusted.stdout.is_empty());

    let by_flag = remote
        .run(&["--ca-file", ca.to_str().unwrap(), "get", "API_KEY"])
        .ok();
    assert_eq!(by_flag.stdout, "api-v2 with 'quotes' and $dollar");
    remote
        .env
        .push(("SECRET_CA_FILE".into(), ca.to_str().unwrap().into()));
    let via_env = remote.run(&["export", "--only", "DATABASE_URL"]).ok();
    assert_eq!(via_env.stdout, "DATABASE_URL='postgres://db/app'\n");
    printf_set(&remote, "OVER_TLS", "sent over https");
    assert_eq!(s.local.get("OVER_TLS"), "sent over https");

    std::fs::write(&ca, "not a certificate").unwrap();
    remote
        .run(&["list"])
        .code(2)
        .stderr_has("holds no PEM certificate");
}

fn printf_set(env: &TestEnv, name: &str, value: &str) {
    let out = env.run_with(&["set", name], value.as_bytes()).ok();
    assert_eq!(out.stdout, format!("{name}: version 1 is current\n"));
}
