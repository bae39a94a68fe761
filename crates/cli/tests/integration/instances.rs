//! Several `secret serve` instances on one PostgreSQL vault (real processes, real
//! PostgreSQL, the stand-ins in this test process): exactly one leads the scheduler;
//! a leader SIGKILLed inside a rotation step is replaced within two ticks and its
//! rotation resumed once, never run twice; a paused leader is fenced off (its late
//! write refused); and writers through both APIs and the CLI at once keep one audit
//! chain and gapless versions, with exactly one winner per contested `if_version`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use secret_standins::Fault;

use crate::rotation::World;
use crate::serve::free_port;
use crate::util::{on_postgres, KillOnDrop, TestEnv};

/// Scheduler tick of the instances under test.
const TICK: Duration = Duration::from_secs(1);

/// One `secret serve` process, its stderr in `serve-<id>.log`.
struct Instance {
    id: String,
    child: KillOnDrop,
    addr: String,
}

impl Instance {
    fn start(env: &TestEnv, id: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "serve",
            "--listen",
            &listen,
            "--tick",
            "1s",
            "--instance-id",
            id,
        ];
        args.extend_from_slice(extra);
        let log = std::fs::File::create(env.path(&format!("serve-{id}.log"))).unwrap();
        let child = env
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let instance = Instance {
            id: id.to_string(),
            child: KillOnDrop::new(child),
            addr: format!("http://{listen}"),
        };
        let start = Instant::now();
        while instance.ready().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{id} never ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        instance
    }

    fn pid(&self) -> i64 {
        i64::from(self.child.id())
    }

    /// `/readyz`'s body when it answers 200.
    fn ready(&self) -> Option<serde_json::Value> {
        let out = http(|c| c.get(format!("{}/readyz", self.addr)));
        (out.0 == 200).then(|| serde_json::from_str(&out.1).unwrap())
    }

    fn leads(&self) -> bool {
        self.ready().is_some_and(|b| b["leader"] == true)
    }

    fn metrics(&self) -> String {
        http(|c| c.get(format!("{}/metrics", self.addr))).1
    }

    fn log(&self, env: &TestEnv) -> String {
        std::fs::read_to_string(env.path(&format!("serve-{}.log", self.id))).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

/// One HTTP request on a runtime of its own; (status, body). Status 0: no answer.
fn http(req: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        match req(&client).timeout(Duration::from_secs(20)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    })
}

fn admin_token(env: &TestEnv) -> String {
    env.run(&["token", "create", "-q", "--name", "ha", "--scope", "admin"])
        .ok()
        .stdout
        .trim()
        .to_string()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn last_seq(env: &TestEnv) -> u64 {
    env.audit(&[])
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0)
}

/// Rotation steps (`rotate.*` other than the API's request) recorded after `seq`, as
/// (pid, action).
fn steps_after(env: &TestEnv, seq: u64) -> Vec<(i64, String)> {
    env.audit(&[])
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > seq)
        .filter(|e| {
            let a = e["action"].as_str().unwrap();
            a.starts_with("rotate.") && a != "rotate.request"
        })
        .map(|e| {
            (
                e["pid"].as_i64().unwrap_or(0),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn run_of(w: &World, secret: &str) -> serde_json::Value {
    w.rotations()
        .into_iter()
        .find(|r| r["secret"] == secret)
        .unwrap_or(serde_json::Value::Null)
}

/// Two instances: `a` leads (it started first), `b` follows.
fn two_instances(w: &World) -> (Instance, Instance) {
    let a = Instance::start(&w.env, "a", &[]);
    wait_until("a to lead", Duration::from_secs(10), || a.leads());
    let b = Instance::start(&w.env, "b", &[]);
    std::thread::sleep(2 * TICK);
    assert!(a.leads() && !b.leads(), "exactly one leader");
    assert!(
        b.metrics()
            .contains("secret_scheduler_leader{instance_id=\"b\"} 0"),
        "{}",
        b.metrics()
    );
    (a, b)
}

fn ask_rotation(instance: &Instance, token: &str, secret: &str) {
    let (status, body) = http(|c| {
        c.post(format!("{}/v1/secrets/{secret}/rotate", instance.addr))
            .bearer_auth(token)
    });
    assert_eq!(status, 202, "{body}");
}

/// The leader is SIGKILLed while a rotation step's call is held open at Railway (both
/// credentials minted, the push in flight). The follower takes over within two ticks,
/// resumes both rotations and finishes them with the values minted before the death:
/// one OpenAI key and one LaunchDarkly reset in all, no step written by the dead leader
/// after the kill, the targets and the vault agree, the audit chain verifies.
#[test]
fn a_leader_killed_mid_rotation_is_replaced_within_two_ticks_and_its_rotation_resumed_once() {
    on_postgres(
        "a_leader_killed_mid_rotation_is_replaced_within_two_ticks_and_its_rotation_resumed_once",
        || {
            let w = World::new("1h");
            let token = admin_token(&w.env);
            let (a, b) = two_instances(&w);
            let (minted_before, resets_before) = (
                w.openai.journal_count("create_service_account"),
                w.ld.reset_count("planning-engine", "production"),
            );
            let old_ld = w.current("LAUNCHDARKLY_SDK_KEY");
            w.railway
                .faults()
                .inject("variableCollectionUpsert", Fault::Hang);
            ask_rotation(&a, &token, "OPENAI_API_KEY");
            ask_rotation(&a, &token, "LAUNCHDARKLY_SDK_KEY");
            w.wait_for(
                || w.railway.journal_count("variableCollectionUpsert"),
                1,
                "the leader's push",
            );
            let minted_at_kill = w.openai.journal_count("create_service_account") - minted_before;
            let pending_openai = w
                .pending_value("OPENAI_API_KEY")
                .expect("minted before the kill");
            let seq_at_kill = last_seq(&w.env);
            a.signal(libc::SIGKILL);
            let killed = Instant::now();
            let took = wait_until("b to take over", 10 * TICK, || b.leads());
            eprintln!(
                "failover: b leads {:.2} s after the kill ({:.2} ticks of {} s)",
                took.as_secs_f64(),
                took.as_secs_f64() / TICK.as_secs_f64(),
                TICK.as_secs()
            );
            assert!(took <= 2 * TICK + TICK / 2, "took over after {took:?}");
            let metrics = b.metrics();
            assert!(
                metrics.contains("secret_scheduler_epoch{instance_id=\"b\"} 2"),
                "{metrics}"
            );
            wait_until("both rotations to end", Duration::from_secs(60), || {
                ["OPENAI_API_KEY", "LAUNCHDARKLY_SDK_KEY"]
                    .iter()
                    .all(|s| !run_of(&w, s)["outcome"].is_null())
            });
            eprintln!(
                "failover: rotations ended {:.2} s after the kill",
                killed.elapsed().as_secs_f64()
            );
            let openai = run_of(&w, "OPENAI_API_KEY");
            assert_eq!(openai["outcome"], "finished", "{openai}");
            assert_eq!(
                w.current("OPENAI_API_KEY"),
                pending_openai,
                "the key minted before the death is the one made current"
            );
            let ld = run_of(&w, "LAUNCHDARKLY_SDK_KEY");
            assert_eq!(ld["outcome"], "finished", "{ld}");
            assert_ne!(w.current("LAUNCHDARKLY_SDK_KEY"), old_ld);
            // What must NOT have happened: a second mint, a second reset.
            assert_eq!(minted_at_kill, 1, "the leader minted before it died");
            assert_eq!(
                w.openai.journal_count("create_service_account") - minted_before,
                1,
                "no second OpenAI key"
            );
            assert_eq!(
                w.ld.reset_count("planning-engine", "production") - resets_before,
                1,
                "no second LaunchDarkly reset"
            );
            let after = steps_after(&w.env, seq_at_kill);
            assert!(!after.is_empty());
            assert!(
                after.iter().all(|(pid, _)| *pid == b.pid()),
                "every step after the kill is b's: {after:?}"
            );
            assert!(b.log(&w.env).contains("leads (epoch 2, taken over from"));
            w.railway.faults().clear();
            w.assert_consistent();
        },
    )
}

/// A leader paused (SIGSTOP) inside a step loses the lease to the follower, which
/// finishes the rotation; resumed, the old leader's next step is refused in its own
/// transaction (the fencing token moved on), so it writes nothing more.
#[test]
fn a_paused_leader_is_fenced_off_and_its_late_write_refused() {
    on_postgres(
        "a_paused_leader_is_fenced_off_and_its_late_write_refused",
        || {
            let w = World::new("1h");
            let token = admin_token(&w.env);
            let (a, b) = two_instances(&w);
            let minted_before = w.openai.journal_count("create_service_account");
            w.railway
                .faults()
                .inject("variableCollectionUpsert", Fault::Hang);
            ask_rotation(&a, &token, "OPENAI_API_KEY");
            w.wait_for(
                || w.railway.journal_count("variableCollectionUpsert"),
                1,
                "the leader's push",
            );
            let pending_openai = w
                .pending_value("OPENAI_API_KEY")
                .expect("minted before the pause");
            a.signal(libc::SIGSTOP);
            let seq_at_pause = last_seq(&w.env);
            let took = wait_until("b to take over", 10 * TICK, || b.leads());
            eprintln!(
                "fencing: b leads {:.2} s after the pause ({:.2} ticks; the lease went unrenewed)",
                took.as_secs_f64(),
                took.as_secs_f64() / TICK.as_secs_f64()
            );
            assert!(took <= 2 * TICK + TICK / 2, "took over after {took:?}");
            wait_until("b to finish the rotation", Duration::from_secs(60), || {
                run_of(&w, "OPENAI_API_KEY")["outcome"] == "finished"
            });
            let finished = run_of(&w, "OPENAI_API_KEY");
            // The old leader wakes up; its held call is answered.
            a.signal(libc::SIGCONT);
            w.railway.faults().clear();
            wait_until("a to be refused", Duration::from_secs(20), || {
                a.log(&w.env)
                    .contains("no longer holds the scheduler lease")
            });
            std::thread::sleep(2 * TICK);
            let log = a.log(&w.env);
            assert!(log.contains("lost the scheduler lease") || log.contains("no longer holds"));
            assert!(!a.leads() && b.leads(), "one leader, b");
            let after = steps_after(&w.env, seq_at_pause);
            assert!(
                after.iter().all(|(pid, _)| *pid == b.pid()),
                "no step by the deposed leader: {after:?}"
            );
            let now = run_of(&w, "OPENAI_API_KEY");
            assert_eq!(
                (&now["outcome"], &now["state"], &now["new_version"]),
                (
                    &finished["outcome"],
                    &finished["state"],
                    &finished["new_version"]
                ),
                "the deposed leader changed nothing"
            );
            assert_eq!(w.current("OPENAI_API_KEY"), pending_openai);
            assert_eq!(
                w.openai.journal_count("create_service_account") - minted_before,
                1,
                "no second mint"
            );
            w.assert_consistent();
        },
    )
}

/// What one writer saw: successes by secret, and (secret, if_version, won) for the
/// contested writes.
#[derive(Default)]
struct Tally {
    written: BTreeMap<String, u64>,
    contested: Vec<(String, u64, bool)>,
    reads: u64,
}

/// Clients writing and reading through both instances' APIs and CLI processes writing
/// directly, at once. Afterwards: the audit chain verifies, it holds one `set` entry
/// per write that succeeded (and one `get` per read), each secret's versions are
/// gapless, and each contested `if_version` had exactly one winner.
#[test]
fn writers_through_two_instances_and_the_cli_keep_one_chain_and_gapless_versions() {
    on_postgres(
        "writers_through_two_instances_and_the_cli_keep_one_chain_and_gapless_versions",
        || {
            let env = TestEnv::init();
            let token = admin_token(&env);
            let a = Instance::start(&env, "a", &[]);
            let b = Instance::start(&env, "b", &[]);
            let addrs = [a.addr.clone(), b.addr.clone()];
            const CONTESTED: usize = 3;
            const ROUNDS: u64 = 6;
            const FREE_WRITES: u64 = 12;
            for c in 0..CONTESTED {
                env.set(&format!("RACE_{c}"), "v1");
            }
            let seq_before = last_seq(&env);
            let tally = Arc::new(Mutex::new(Tally::default()));
            let env = Arc::new(env);
            std::thread::scope(|s| {
                // Per contested secret: one client on each API and one CLI process race
                // for every version, all with the same if_version.
                for c in 0..CONTESTED {
                    let barrier = Arc::new(Barrier::new(3));
                    for who in 0..3 {
                        let (barrier, tally, env, token, addrs) = (
                            barrier.clone(),
                            tally.clone(),
                            env.clone(),
                            token.clone(),
                            addrs.clone(),
                        );
                        s.spawn(move || {
                            let name = format!("RACE_{c}");
                            for round in 1..=ROUNDS {
                                barrier.wait();
                                let value = format!("race-{c}-{round}-{who}");
                                let won = if who < 2 {
                                    let (status, body) = http(|cl| {
                                        cl.put(format!("{}/v1/secrets/{name}", addrs[who]))
                                            .bearer_auth(&token)
                                            .json(&serde_json::json!({
                                                "value": value, "if_version": round
                                            }))
                                    });
                                    assert!(status == 200 || status == 409, "{status} {body}");
                                    status == 200
                                } else {
                                    let run = env.run_with(
                                        &["set", &name, "--if-version", &round.to_string()],
                                        value.as_bytes(),
                                    );
                                    assert!(run.code == 0 || run.code == 4, "{run:#?}");
                                    run.code == 0
                                };
                                let mut t = tally.lock().unwrap();
                                t.contested.push((name.clone(), round, won));
                                if won {
                                    *t.written.entry(name.clone()).or_default() += 1;
                                }
                                drop(t);
                                barrier.wait();
                            }
                        });
                    }
                }
                // Free writers and readers on both APIs, a CLI writer beside them.
                for who in 0..3usize {
                    let (tally, env, token, addrs) =
                        (tally.clone(), env.clone(), token.clone(), addrs.clone());
                    s.spawn(move || {
                        let name = format!("FREE_{who}");
                        for i in 0..FREE_WRITES {
                            let value = format!("free-{who}-{i}");
                            if who < 2 {
                                let (status, body) = http(|cl| {
                                    cl.put(format!("{}/v1/secrets/{name}", addrs[who]))
                                        .bearer_auth(&token)
                                        .json(&serde_json::json!({ "value": value }))
                                });
                                assert_eq!(status, 200, "{body}");
                                // Read it back through the other instance.
                                let (status, body) = http(|cl| {
                                    cl.get(format!("{}/v1/secrets/{name}", addrs[1 - who]))
                                        .bearer_auth(&token)
                                });
                                assert_eq!(status, 200, "{body}");
                                let got: serde_json::Value = serde_json::from_str(&body).unwrap();
                                assert_eq!(got["value"], value.as_str(), "read your write");
                                tally.lock().unwrap().reads += 1;
                            } else {
                                env.set(&name, &value);
                            }
                            *tally
                                .lock()
                                .unwrap()
                                .written
                                .entry(name.clone())
                                .or_default() += 1;
                        }
                    });
                }
            });
            let env = Arc::try_unwrap(env).ok().unwrap();
            let tally = tally.lock().unwrap();
            // Exactly one winner per contested version.
            let mut winners: BTreeMap<(String, u64), (u32, u32)> = BTreeMap::new();
            for (name, round, won) in &tally.contested {
                let e = winners.entry((name.clone(), *round)).or_default();
                e.0 += u32::from(*won);
                e.1 += 1;
            }
            assert_eq!(winners.len(), CONTESTED * ROUNDS as usize);
            for ((name, round), (won, tried)) in &winners {
                assert_eq!(
                    (*won, *tried),
                    (1, 3),
                    "{name} if_version {round}: one winner of three"
                );
            }
            // Versions gapless, the latest one what the writes add up to.
            for (name, writes) in &tally.written {
                let history: serde_json::Value =
                    serde_json::from_str(&env.run(&["history", name, "--json"]).ok().stdout)
                        .unwrap();
                let mut numbers: Vec<u64> = history["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["version"].as_u64().unwrap())
                    .collect();
                numbers.sort();
                let initial = u64::from(name.starts_with("RACE_"));
                let expect: Vec<u64> = (1..=writes + initial).collect();
                assert_eq!(numbers, expect, "{name}: gapless");
            }
            // One audit entry per write that succeeded, one per read.
            let entries: Vec<_> = env
                .audit(&[])
                .into_iter()
                .filter(|e| e["seq"].as_u64().unwrap() > seq_before)
                .collect();
            let sets = entries
                .iter()
                .filter(|e| e["action"] == "set" && e["outcome"] == "ok")
                .count() as u64;
            let written: u64 = tally.written.values().sum();
            assert_eq!(sets, written, "one set entry per successful write");
            let reads = entries
                .iter()
                .filter(|e| e["action"] == "get" && e["outcome"] == "ok")
                .count() as u64;
            assert_eq!(reads, tally.reads, "one get entry per read");
            eprintln!(
                "concurrent writers: {written} writes in all; {} contested attempts, {} won \
                 (one per if_version); {} reads; {} audit entries",
                tally.contested.len(),
                CONTESTED as u64 * ROUNDS,
                tally.reads,
                entries.len()
            );
            env.run(&["audit", "verify"]).ok();
            drop((a, b));
        },
    )
}
