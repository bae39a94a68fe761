//! The API's request decoding, through the extractors its routes use: the JSON body of
//! `PUT /v1/secrets/{name}` (with several content types) and the query strings of the
//! value, rotations and audit routes. Every refusal is a 4xx in the JSON error shape,
//! and never quotes the request: each `@` in the input is replaced by a sentinel before
//! decoding, and the sentinel must not come back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secret_server::api::fuzzing::{queries, write_body, Decoded};

const SENTINEL: &str = "sk-Sentinel-9731";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fn check(decoded: &Decoded) {
    let Decoded::Refused { status, body } = decoded else {
        return;
    };
    assert!((400..500).contains(status), "status {status}");
    let shown = String::from_utf8_lossy(body);
    assert!(!shown.contains(SENTINEL), "the refusal quotes the request: {shown}");
    let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON error body");
    assert!(v["error"]["code"].is_string(), "{shown}");
    assert!(v["error"]["message"].is_string(), "{shown}");
}

const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/json; charset=utf-8",
    "application/merge-patch+json",
    "text/plain",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut body = Vec::with_capacity(rest.len() + 64);
    for &b in rest {
        if b == b'@' {
            body.extend_from_slice(SENTINEL.as_bytes());
        } else {
            body.push(b);
        }
    }
    let content_type = CONTENT_TYPES[pick as usize % CONTENT_TYPES.len()];
    let rt = runtime();
    check(&rt.block_on(write_body(content_type, body.clone())));
    if let Ok(text) = std::str::from_utf8(&body) {
        for decoded in rt.block_on(queries(text)) {
            check(&decoded);
        }
    }
});
