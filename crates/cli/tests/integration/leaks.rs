//! The leak scan: every command, and every API route through `secret serve`, run with
//! sentinel values — stored, read, rotated, refused, typed in the wrong place — and then
//! every place a value could end up searched for every sentinel (raw and as hex):
//! stdout and stderr of each command, the server's output and every response body,
//! `/metrics`, the audit log as `audit --json` and as an export, the SQLite database
//! file, its WAL (kept from being checkpointed by an open reader) and its shm.
//!
//! A value may appear only where it was asked for: `get` of that value, the API's read
//! of it, the token printed once at creation, and the `.env` a rotation writes. Those
//! outputs must hold their value, and nothing else is allowed in them either.

use std::process::Stdio;

use crate::serve::{free_port, wait_status};
use crate::util::{contains, read_or_empty, KillOnDrop, Run, TestEnv};

struct Scan {
    /// Label and the bytes that must not appear.
    needles: Vec<(String, Vec<u8>)>,
    /// Every place searched, with what it held (searched once all needles are known).
    places: Vec<(String, Vec<u8>)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Scan {
    fn secret(&mut self, label: &str, value: &str) {
        self.needles.push((label.into(), value.as_bytes().to_vec()));
        self.needles
            .push((format!("{label} (hex)"), hex(value.as_bytes()).into_bytes()));
    }

    fn place(&mut self, place: impl Into<String>, bytes: &[u8]) {
        self.places.push((place.into(), bytes.to_vec()));
    }

    fn run(&mut self, what: &str, run: &Run) {
        self.place(format!("stdout of {what}"), &run.raw_stdout);
        self.place(format!("stderr of {what}"), run.stderr.as_bytes());
    }

    /// An output that must hold `value`: it does, and without it holds no other value.
    fn legit(&mut self, place: &str, bytes: &[u8], value: &str) {
        assert!(
            contains(bytes, value.as_bytes()),
            "{place} lacks the value it was asked for"
        );
        let text = String::from_utf8_lossy(bytes).replace(value, "");
        self.place(format!("{place} (without its own value)"), text.as_bytes());
    }

    /// An output that must hold each of `values`, and no other value.
    fn legit_all(&mut self, place: &str, bytes: &[u8], values: &[&str]) {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        for value in values {
            assert!(
                text.contains(value),
                "{place} lacks a value it was asked for"
            );
            text = text.replace(value, "");
        }
        self.place(format!("{place} (without its own values)"), text.as_bytes());
    }

    fn finish(self) -> usize {
        let mut hits = Vec::new();
        for (place, bytes) in &self.places {
            for (label, needle) in &self.needles {
                if contains(bytes, needle) {
                    hits.push(format!("{label} in {place}"));
                }
            }
        }
        assert!(hits.is_empty(), "values leaked:\n{}", hits.join("\n"));
        self.places.len()
    }
}

/// A distinct value per use; the dashes make it an invalid name, as a value typed in
/// the wrong place usually is.
fn sentinel(i: usize) -> String {
    format!("leak-sentinel-{i}-{}", std::process::id())
}

struct Api {
    rt: tokio::runtime::Runtime,
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// Status and body of a request; `token` goes in `Authorization: Bearer`.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Vec<u8>) {
        self.rt.block_on(async {
            let url = format!("{}{path}", self.base);
            let mut req = self.client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &url,
            );
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap().to_vec())
        })
    }
}

#[test]
fn no_value_leaks_from_any_command_route_log_or_file() {
    let env = TestEnv::init();
    let mut scan = Scan {
        needles: Vec::new(),
        places: Vec::new(),
    };
    // A reader holding its snapshot keeps every WAL frame from being checkpointed away,
    // so the WAL searched at the end holds every page any command wrote.
    let holder = rusqlite::Connection::open(&env.vault).unwrap();
    holder.execute_batch("BEGIN").unwrap();
    holder
        .query_row("SELECT count(*) FROM secrets", [], |_| Ok(()))
        .unwrap();

    let v: Vec<String> = (0..40).map(sentinel).collect();
    for (i, value) in v.iter().enumerate() {
        scan.secret(&format!("sentinel {i}"), value);
    }

    // --- stored and read ---------------------------------------------------------
    let run = env.run_with(&["set", "S1"], v[1].as_bytes()).ok();
    scan.run("set S1", &run);
    let run = env
        .run_with(
            &["set", "S1", "--description", "primary db"],
            v[2].as_bytes(),
        )
        .ok();
    scan.run("set S1 --description", &run);
    let run = env
        .run_with(&["set", "S2", "--raw"], format!("{}\n", v[3]).as_bytes())
        .ok();
    scan.run("set S2 --raw", &run);
    let run = env
        .run(&["set", "GEN", "--generate", "--length", "40"])
        .ok();
    scan.run("set --generate", &run);
    let generated = env.get("GEN");
    scan.secret("generated value", &generated);

    let run = env.run(&["get", "S1"]).ok();
    scan.legit("stdout of get S1", &run.raw_stdout, &v[2]);
    scan.place("stderr of get S1", run.stderr.as_bytes());
    let run = env.run(&["get", "S1", "--previous"]).ok();
    scan.legit("stdout of get --previous", &run.raw_stdout, &v[1]);
    scan.place("stderr of get --previous", run.stderr.as_bytes());
    let run = env.run(&["get", "S1", "--version", "1", "--json"]).ok();
    scan.legit("stdout of get --version --json", &run.raw_stdout, &v[1]);
    let run = env.run(&["get", "GEN"]).ok();
    scan.legit("stdout of get GEN", &run.raw_stdout, &generated);
    for args in [
        vec!["list"],
        vec!["list", "--json", "--all"],
        vec!["history", "S1"],
        vec!["history", "S1", "--json"],
    ] {
        let run = env.run(&args).ok();
        scan.run(&args.join(" "), &run);
    }

    // --- refused: values that must appear nowhere at all ---------------------------
    let refusals: Vec<(Vec<String>, Vec<u8>, i32)> = vec![
        (
            vec!["set".into(), "S1".into(), "--if-version".into(), "9".into()],
            v[4].clone().into_bytes(),
            4,
        ),
        (
            vec!["set".into(), "BIG".into()],
            v[5].repeat(70_000 / v[5].len() + 1).into_bytes(),
            2,
        ),
        (
            vec!["set".into(), "BIN".into()],
            [v[6].as_bytes(), &[0xff, 0xfe]].concat(),
            2,
        ),
        (vec!["set".into(), v[7].clone()], b"x".to_vec(), 2),
        (
            vec!["set".into(), "S1".into(), v[8].clone()],
            b"x".to_vec(),
            2,
        ),
        (vec!["get".into(), v[9].clone()], Vec::new(), 2),
        (
            vec!["set".into(), "S1".into(), "--".into(), v[10].clone()],
            b"x".to_vec(),
            2,
        ),
        (
            vec!["token".into(), "revoke".into(), v[11].clone()],
            Vec::new(),
            2,
        ),
        (vec!["rotate".into(), v[12].clone()], Vec::new(), 2),
        (
            vec!["audit".into(), "--secret".into(), v[13].clone()],
            Vec::new(),
            2,
        ),
        (vec!["history".into(), v[14].clone()], Vec::new(), 2),
        (
            vec!["get".into(), "S1".into(), "--version".into(), v[15].clone()],
            Vec::new(),
            2,
        ),
    ];
    for (args, stdin, code) in &refusals {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = env.run_with(&refs, stdin).code(*code);
        scan.run(&format!("refused {}", refs[0]), &run);
    }

    // --- lifecycle and tokens ------------------------------------------------------
    for args in [
        vec!["delete", "S2"],
        vec!["undelete", "S2"],
        vec!["destroy", "S1", "--version", "1"],
        vec!["token", "list"],
    ] {
        let run = env.run(&args).ok();
        scan.run(&args.join(" "), &run);
    }
    let run = env
        .run(&["token", "create", "--name", "leak", "--scope", "admin"])
        .ok();
    let token = run.stdout.trim().to_string();
    scan.secret("API token", &token);
    scan.legit("stdout of token create", &run.raw_stdout, &token);
    scan.place("stderr of token create", run.stderr.as_bytes());
    let run = env.run(&["token", "list", "--json"]).ok();
    scan.run("token list --json", &run);

    // --- rotation into a dotenv target ---------------------------------------------
    std::fs::create_dir_all(env.path("policies")).unwrap();
    std::fs::write(
        env.path("policies/leak.toml"),
        "[targets.local]\nkind = \"dotenv\"\npath = \"app.env\"\n\n\
         [secrets.ROTATED]\ngenerator = \"random\"\nevery = \"30d\"\npush = [\"local\"]\n",
    )
    .unwrap();
    let run = env.run_with(&["set", "ROTATED"], v[16].as_bytes()).ok();
    scan.run("set ROTATED", &run);
    for args in [
        vec!["policy", "check"],
        vec!["plan"],
        vec!["rotate", "ROTATED", "--dry-run"],
        vec!["rotate", "ROTATED"],
        vec!["rotations"],
        vec!["rotations", "ROTATED", "--json"],
    ] {
        let run = env.run(&args).ok();
        scan.run(&args.join(" "), &run);
    }
    let rotated = env.get("ROTATED");
    assert_ne!(rotated, v[16]);
    scan.secret("rotated value", &rotated);
    let dotenv = std::fs::read(env.path("policies/app.env")).unwrap();
    scan.legit(".env written by the rotation", &dotenv, &rotated);

    // --- the API -------------------------------------------------------------------
    let port = free_port();
    let serve = KillOnDrop::new(
        env.command(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-scheduler",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let api = Api {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    wait_status(&api.rt, &format!("{}/readyz", api.base), 200);
    let t = Some(token.as_str());
    let (status, body) = api.call("GET", "/v1/secrets/S1", t, None);
    assert_eq!(status, 200);
    scan.legit("API read of S1", &body, &v[2]);
    let (_, body) = api.call("GET", "/v1/secrets/GEN?version=1", t, None);
    scan.legit("API read of GEN", &body, &generated);
    let (status, body) = api.call(
        "PUT",
        "/v1/secrets/S3",
        t,
        Some(&format!(r#"{{"value":"{}"}}"#, v[17])),
    );
    assert_eq!(status, 200);
    scan.place("API write response", &body);
    let (_, body) = api.call("GET", "/v1/secrets/S3", t, None);
    scan.legit("API read of S3", &body, &v[17]);
    let bad_bodies = [
        (
            format!(r#"{{"value":"{}","extra":"{}"}}"#, v[18], v[19]),
            400,
        ),
        (format!(r#"{{"value":"{}""#, v[20]), 400),
        (format!(r#"{{"value":5,"if_version":"{}"}}"#, v[21]), 400),
        (format!(r#"{{"value":["{}"]}}"#, v[22]), 400),
        (format!(r#"{{"value":"{}","if_version":99}}"#, v[23]), 409),
        (format!(r#"{{"{}":"x"}}"#, v[24]), 400),
    ];
    for (body, want) in &bad_bodies {
        let (status, response) = api.call("PUT", "/v1/secrets/S3", t, Some(body));
        assert_eq!(status, *want, "{}", String::from_utf8_lossy(&response));
        scan.place(format!("API refusal {status}"), &response);
    }
    let others = [
        (
            "PUT",
            format!("/v1/secrets/{}-x", v[25]),
            t,
            Some(r#"{"value":"y"}"#.to_string()),
        ),
        ("GET", format!("/v1/secrets/{}-x", v[26]), t, None),
        ("GET", format!("/v1/secrets/S1?version={}", v[27]), t, None),
        ("GET", "/v1/secrets".to_string(), t, None),
        ("GET", "/v1/secrets/S1/versions".to_string(), t, None),
        ("POST", "/v1/secrets/ROTATED/rotate".to_string(), t, None),
        ("GET", "/v1/rotations".to_string(), t, None),
        ("GET", "/v1/audit?limit=100000".to_string(), t, None),
        ("GET", format!("/v1/audit?since={}", v[28]), t, None),
        ("GET", "/v1/jwks/S1".to_string(), None, None),
        ("GET", format!("/v1/jwks/{}", v[29]), None, None),
        ("GET", "/v1/openapi.json".to_string(), None, None),
        (
            "GET",
            "/v1/secrets/S1".to_string(),
            Some(v[30].as_str()),
            None,
        ),
        ("GET", "/v1/secrets/S1".to_string(), None, None),
        ("GET", format!("/{}", v[32]), t, None),
        ("GET", "/healthz".to_string(), None, None),
        ("GET", "/readyz".to_string(), None, None),
        ("GET", "/metrics".to_string(), None, None),
    ];
    for (method, path, token, body) in &others {
        let (status, response) = api.call(method, path, *token, body.as_deref());
        scan.place(
            format!(
                "API {method} {} -> {status}",
                path.split('?').next().unwrap_or("")
            ),
            &response,
        );
    }
    let forged = format!("secret_0123456789abcdef.{}", v[31]);
    let (status, response) = api.call("GET", "/v1/secrets", Some(&forged), None);
    assert_eq!(status, 401);
    scan.place("API 401 for a forged token", &response);
    let (_, metrics) = api.call("GET", "/metrics", None, None);
    scan.place("/metrics at the end", &metrics);
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let out = serve.into_inner().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    scan.place("stdout of serve", &out.stdout);
    scan.place("stderr of serve", &out.stderr);

    // --- the audit log, its export, and the files on disk ---------------------------
    let run = env.run(&["audit", "--json"]).ok();
    scan.run("audit --json", &run);
    let run = env.run(&["audit", "--limit", "1000"]).ok();
    scan.run("audit (table)", &run);
    let export = env.path("audit-export.jsonl");
    let run = env.run(&["audit", "export", export.to_str().unwrap()]).ok();
    scan.run("audit export", &run);
    scan.place("the audit export file", &std::fs::read(&export).unwrap());
    let run = env.run(&["audit", "verify"]).ok();
    scan.run("audit verify", &run);

    let wal = read_or_empty(&env.vault.with_file_name("vault.db-wal"));
    assert!(
        wal.len() > 100_000,
        "the WAL should hold every write ({} bytes)",
        wal.len()
    );
    scan.place("the vault's WAL", &wal);
    scan.place(
        "the vault's shm",
        &read_or_empty(&env.vault.with_file_name("vault.db-shm")),
    );
    drop(holder);
    scan.place(
        "the vault database file",
        &std::fs::read(&env.vault).unwrap(),
    );

    let places = scan.finish();
    eprintln!(
        "leak scan: {places} places searched for {} needles",
        2 * (v.len() + 4)
    );
    assert!(places >= 100, "only {places} places searched");
}

/// The commands and routes added after the first scan: import, export, run, drift,
/// backup, restore, recipients, rekey, the API's delete, export and generated writes,
/// and every daily command in remote mode (the CLI against `secret serve`).
#[test]
fn no_value_leaks_from_import_export_run_drift_keys_or_remote_mode() {
    let env = TestEnv::init();
    let mut scan = Scan {
        needles: Vec::new(),
        places: Vec::new(),
    };
    let holder = rusqlite::Connection::open(&env.vault).unwrap();
    holder.execute_batch("BEGIN").unwrap();
    holder
        .query_row("SELECT count(*) FROM secrets", [], |_| Ok(()))
        .unwrap();
    let v: Vec<String> = (100..130).map(sentinel).collect();
    for (i, value) in v.iter().enumerate() {
        scan.secret(&format!("sentinel {}", i + 100), value);
    }

    // --- import, export, run -------------------------------------------------------
    std::fs::write(
        env.path("in.env"),
        format!("IMP_A=\"{}\"\nexport IMP_B={}\n", v[0], v[1]),
    )
    .unwrap();
    let run = env.run(&["import", "in.env"]).ok();
    scan.run("import", &run);
    for (file, text) in [
        ("bad-line.env", format!("IMP_C {}\n", v[2])),
        ("bad-name.env", format!("{}=x\n", v[3])),
        ("bad.json", format!("{{\"IMP_D\": [\"{}\"]}}", v[4])),
        ("open-quote.env", format!("IMP_E=\"{}\n", v[5])),
    ] {
        std::fs::write(env.path(file), text).unwrap();
        let run = env.run(&["import", file]).code(2);
        scan.run(&format!("refused import {file}"), &run);
    }
    let run = env.run(&["import", "in.env", "--dry-run"]);
    scan.run("import --dry-run", &run);
    for format in ["dotenv", "json", "shell"] {
        let run = env.run(&["export", "--format", format]).ok();
        scan.legit_all(
            &format!("export --format {format}"),
            &run.raw_stdout,
            &[&v[0], &v[1]],
        );
        scan.place(format!("stderr of export {format}"), run.stderr.as_bytes());
    }
    let run = env.run(&["export", "-o", "out.env"]).ok();
    scan.run("export -o", &run);
    let exported = std::fs::read(env.path("out.env")).unwrap();
    scan.legit_all("the exported file", &exported, &[&v[0], &v[1]]);
    let run = env
        .run(&[
            "run",
            "--only",
            "IMP_A",
            "--",
            "sh",
            "-c",
            "printf %s \"$IMP_A\"",
        ])
        .ok();
    scan.legit("stdout of run", &run.raw_stdout, &v[0]);
    scan.place("stderr of run", run.stderr.as_bytes());
    let run = env.run(&["run", "--", "sh", "-c", "exit 3"]).code(3);
    scan.run("run (the command fails)", &run);
    for args in [
        vec![
            "run".to_string(),
            "--only".into(),
            v[6].clone(),
            "--".into(),
            "true".into(),
        ],
        // (`run -- WORD` names WORD when it cannot run it, as a shell does: that word
        // is a command, not a value's place, so it is not among these.)
        vec![
            "run".to_string(),
            format!("--{}", v[7]),
            "--".into(),
            "true".into(),
        ],
        vec!["export".to_string(), "--only".into(), v[8].clone()],
    ] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = env.run(&refs);
        assert_ne!(run.code, 0, "{refs:?}");
        scan.run(&format!("refused {}", refs[0]), &run);
    }

    // --- drift against a dotenv target --------------------------------------------
    std::fs::create_dir_all(env.path("policies")).unwrap();
    std::fs::write(
        env.path("policies/drift.toml"),
        "[targets.local]\nkind = \"dotenv\"\npath = \"app.env\"\n\n\
         [secrets.IMP_A]\ngenerator = \"random\"\nevery = \"30d\"\npush = [\"local\"]\n",
    )
    .unwrap();
    std::fs::write(
        env.path("policies/app.env"),
        format!("IMP_A=\"{}\"\n", v[9]),
    )
    .unwrap();
    for args in [vec!["drift"], vec!["drift", "--json"]] {
        let run = env.run(&args).code(8);
        scan.run(&args.join(" "), &run);
    }
    let run = env.run(&["drift", "--fix"]).ok();
    scan.run("drift --fix", &run);
    let fixed = std::fs::read(env.path("policies/app.env")).unwrap();
    scan.legit("the .env drift --fix wrote", &fixed, &v[0]);

    // --- keys and recovery ---------------------------------------------------------
    let run = env.run(&["backup", "b.age"]).ok();
    scan.run("backup", &run);
    scan.place(
        "the backup file",
        &std::fs::read(env.path("b.age")).unwrap(),
    );
    for args in [
        vec!["recipients", "list"],
        vec!["recipients", "list", "--json"],
    ] {
        let run = env.run(&args);
        scan.run(&args.join(" "), &run);
    }
    let run = env.run(&["rekey"]).ok();
    scan.run("rekey", &run);
    let run = env.run(&["restore", "b.age", "--force"]).ok();
    scan.run("restore --force", &run);
    let run = env.run(&["restore", "in.env"]);
    assert_ne!(run.code, 0);
    scan.run("refused restore of a file that is no backup", &run);

    // --- the API's newer routes, and remote mode -----------------------------------
    let run = env
        .run(&["token", "create", "--name", "leak2", "--scope", "admin"])
        .ok();
    let token = run.stdout.trim().to_string();
    scan.secret("API token", &token);
    let port = free_port();
    let serve = KillOnDrop::new(
        env.command(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-scheduler",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let api = Api {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    wait_status(&api.rt, &format!("{}/readyz", api.base), 200);
    let t = Some(token.as_str());
    let (status, body) = api.call("POST", "/v1/export", t, Some(r#"{"only":["IMP_A"]}"#));
    assert_eq!(status, 200);
    scan.legit("API export of IMP_A", &body, &v[0]);
    let (status, body) = api.call("POST", "/v1/export", t, Some(r#"{"purpose":"run"}"#));
    assert_eq!(status, 200);
    scan.legit_all("API export of everything", &body, &[&v[0], &v[1]]);
    let (status, body) = api.call(
        "PUT",
        "/v1/secrets/GEN2",
        t,
        Some(r#"{"generate":{"length":48,"charset":"base64url"}}"#),
    );
    assert_eq!(status, 200);
    scan.place("API generated write response", &body);
    let (_, body) = api.call("GET", "/v1/secrets/GEN2", t, None);
    let generated = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    scan.secret("generated value", &generated);
    scan.legit("API read of GEN2", &body, &generated);
    for (method, path, body) in [
        (
            "POST",
            "/v1/export".to_string(),
            Some(format!(r#"{{"only":["{}"]}}"#, v[10])),
        ),
        (
            "POST",
            "/v1/export".to_string(),
            Some(format!(r#"["{}"]"#, v[11])),
        ),
        (
            "POST",
            "/v1/export".to_string(),
            Some(format!(r#"{{"purpose":"{}"}}"#, v[12])),
        ),
        (
            "PUT",
            "/v1/secrets/GEN2".to_string(),
            Some(format!(r#"{{"value":"{}","generate":{{}}}}"#, v[13])),
        ),
        ("GET", format!("/v1/secrets/IMP_A?label={}", v[14]), None),
        (
            "GET",
            "/v1/secrets/IMP_A?label=previous&version=1".to_string(),
            None,
        ),
        ("DELETE", format!("/v1/secrets/{}", v[15]), None),
        ("DELETE", "/v1/secrets/IMP_B".to_string(), None),
        ("GET", format!("/v1/audit?before={}", v[16]), None),
    ] {
        let (status, response) = api.call(method, &path, t, body.as_deref());
        scan.place(
            format!(
                "API {method} {} -> {status}",
                path.split('?').next().unwrap_or("")
            ),
            &response,
        );
    }
    let token_file = env.path("token");
    std::fs::write(&token_file, &token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut remote = TestEnv::new();
    remote.env.push(("SECRET_ADDR".into(), api.base.clone()));
    remote.env.push((
        "SECRET_TOKEN_FILE".into(),
        token_file.to_str().unwrap().into(),
    ));
    let run = remote.run(&["get", "IMP_A"]).ok();
    scan.legit("stdout of remote get", &run.raw_stdout, &v[0]);
    scan.place("stderr of remote get", run.stderr.as_bytes());
    let run = remote.run_with(&["set", "REMOTE"], v[17].as_bytes()).ok();
    scan.run("remote set", &run);
    let run = remote
        .run(&["export", "--format", "json", "--only", "REMOTE"])
        .ok();
    scan.legit("stdout of remote export", &run.raw_stdout, &v[17]);
    let run = remote
        .run(&[
            "run",
            "--only",
            "REMOTE",
            "--",
            "sh",
            "-c",
            "printf %s \"$REMOTE\"",
        ])
        .ok();
    scan.legit("stdout of remote run", &run.raw_stdout, &v[17]);
    for args in [
        vec!["list"],
        vec!["history", "REMOTE"],
        vec!["audit", "--json"],
        vec!["delete", "REMOTE"],
    ] {
        let run = remote.run(&args).ok();
        scan.run(&format!("remote {}", args.join(" ")), &run);
    }
    for args in [
        vec!["get".to_string(), v[18].clone()],
        vec!["set".to_string(), "REMOTE2".into(), v[19].clone()],
        vec![
            "get".to_string(),
            "IMP_A".into(),
            "--version".into(),
            v[20].clone(),
        ],
    ] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = remote.run(&refs).code(2);
        scan.run(&format!("remote refused {}", refs[0]), &run);
    }
    std::fs::write(&token_file, format!("secret_0123456789abcdef.{}", v[21])).unwrap();
    let run = remote.run(&["get", "IMP_A"]).code(5);
    scan.run("remote get with a forged token", &run);
    let (_, metrics) = api.call("GET", "/metrics", None, None);
    scan.place("/metrics at the end", &metrics);
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let out = serve.into_inner().wait_with_output().unwrap();
    scan.place("stdout of serve", &out.stdout);
    scan.place("stderr of serve", &out.stderr);

    // --- the log and the files -----------------------------------------------------
    let run = env.run(&["audit", "--json", "--limit", "10000"]).ok();
    scan.run("audit --json", &run);
    let export = env.path("audit-export.jsonl");
    let run = env.run(&["audit", "export", export.to_str().unwrap()]).ok();
    scan.run("audit export", &run);
    scan.place("the audit export file", &std::fs::read(&export).unwrap());
    scan.place(
        "the vault's WAL",
        &read_or_empty(&env.vault.with_file_name("vault.db-wal")),
    );
    drop(holder);
    scan.place(
        "the vault database file",
        &std::fs::read(&env.vault).unwrap(),
    );
    for entry in std::fs::read_dir(env.vault.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            scan.place(
                format!("{}", path.display()),
                &std::fs::read(&path).unwrap(),
            );
        }
    }
    let places = scan.finish();
    eprintln!(
        "leak scan (daily, keys, remote): {places} places searched for {} needles",
        2 * (v.len() + 2)
    );
    assert!(places >= 80, "only {places} places searched");
}
