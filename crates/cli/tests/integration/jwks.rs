//! Key rollover of a `jwt-ed25519` secret as a verifier sees it: a real JWT library
//! (`jsonwebtoken`) checks tokens against the JWKS that `secret serve` publishes.
//!
//! The order verifiers need: the new public key is published from `create` on, before
//! anything signs with it; the old one stays for `grace` after the new one is current,
//! so tokens signed a moment before the rotation keep verifying; then it is retired.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::rotation::World;
use crate::serve::Served;

const KEY: &str = "JWT_SIGNING_KEY";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The JWKS `serve` publishes for the key.
fn published(served: &Served) -> JwkSet {
    let url = format!("{}/v1/jwks/{KEY}", served.addr);
    served.rt.block_on(async {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.json::<JwkSet>().await.unwrap()
    })
}

fn serve(w: &World) -> Served {
    Served::start(&w.env, &[], &["--no-scheduler"])
}

/// A world whose policies also rotate an Ed25519 signing key pushed to Railway.
fn world(grace: &str) -> World {
    let w = World::new("1h");
    std::fs::write(
        w.env.path("policies").join("jwks.toml"),
        format!(
            "[secrets.{KEY}]\ngenerator = \"jwt-ed25519\"\nevery = \"7d\"\ngrace = \"{grace}\"\npush = [\"api\"]\n"
        ),
    )
    .unwrap();
    // The key the service uses today, set by hand (it has no published public key).
    w.env.set(
        KEY,
        "-----BEGIN PRIVATE KEY-----\nset-by-hand\n-----END PRIVATE KEY-----\n",
    );
    w
}

fn version_of(w: &World, label: &str) -> String {
    w.version_labelled(KEY, label)
        .unwrap_or_else(|| panic!("{KEY} has no {label} version"))
        .to_string()
}

/// A token signed with version `version` of the key, naming its key id.
fn sign(w: &World, version: &str, jwks_kid: &str) -> String {
    let pem = w.env.run(&["get", KEY, "--version", version]).ok().stdout;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(jwks_kid.to_string());
    let claims = Claims {
        sub: format!("signed-with-v{version}"),
        exp: 4_000_000_000,
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Verifies as a service would: the key named by the token's `kid`, from the JWKS.
fn verifies(jwks: &JwkSet, token: &str) -> bool {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let Some(jwk) = jwks.find(&kid) else {
        return false;
    };
    let key = DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<Claims>(token, &key, &Validation::new(Algorithm::EdDSA)).is_ok()
}

fn kids(jwks: &JwkSet) -> Vec<String> {
    jwks.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

#[test]
fn the_jwks_publishes_the_pending_key_before_anything_signs_with_it() {
    let w = world("1h");
    let served = serve(&w);
    // The rotation stops after create, before any service has the new key.
    let mut child = w.spawn_rotate_held_at_push(KEY);
    child.kill().unwrap();
    child.wait().unwrap();
    let jwks = published(&served);
    assert_eq!(jwks.keys.len(), 1, "{:?}", kids(&jwks));
    let pending = version_of(&w, "pending");
    let token = sign(&w, &pending, &kids(&jwks)[0]);
    assert!(verifies(&jwks, &token), "the pending key verifies already");
    // Resumed, it finishes; the key it published is the current one.
    w.rotate(&["--due"]).ok();
    assert_eq!(version_of(&w, "current"), pending);
    assert!(verifies(&published(&served), &token));
}

#[test]
fn tokens_signed_before_a_rotation_verify_through_grace_and_not_after() {
    let w = world("2s");
    let served = serve(&w);
    w.rotate(&[KEY]).ok();
    let jwks = published(&served);
    let v2 = version_of(&w, "current");
    let before = sign(&w, &v2, &kids(&jwks)[0]);
    assert!(verifies(&jwks, &before));

    // The next rotation: the key that signed `before` is now the previous one.
    w.rotate(&[KEY]).ok();
    let jwks = published(&served);
    assert_eq!(
        jwks.keys.len(),
        2,
        "current and previous: {:?}",
        kids(&jwks)
    );
    let v3 = version_of(&w, "current");
    assert_ne!(v3, v2);
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let new_kid = kids(&jwks).into_iter().find(|k| *k != old_kid).unwrap();
    let after = sign(&w, &v3, &new_kid);
    assert!(
        verifies(&jwks, &before),
        "signed a moment before: still valid in grace"
    );
    assert!(verifies(&jwks, &after));
    let runs = w.rotations();
    assert_eq!(runs[0]["secret"], KEY);
    assert_eq!(runs[0]["state"], "grace", "{:#?}", runs[0]);

    // Grace ends: the old key is retired, and with it every token it signed.
    std::thread::sleep(Duration::from_millis(2100));
    let run = w.rotate(&["--due"]).ok();
    assert!(run.stdout.contains("revoked"), "{}", run.stdout);
    let jwks = published(&served);
    assert_eq!(jwks.keys.len(), 1, "{:?}", kids(&jwks));
    assert!(
        !verifies(&jwks, &before),
        "the old key is gone from the JWKS"
    );
    assert!(verifies(&jwks, &after));
}
