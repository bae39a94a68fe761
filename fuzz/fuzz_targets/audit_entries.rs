//! The audit chain's decoders and encoders on arbitrary entries: `--expect-head` text
//! round-trips, `--since` never panics, the canonical encoding is injective (two
//! entries that differ never encode alike, so no edit can keep a MAC), a chain linked
//! from arbitrary entries verifies, and changing any one field of any one entry, or
//! dropping or swapping entries, is caught. Entries render as JSON lines.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use secret_core::audit::{
    canonical, format_head, link, parse_since, EpochKeys, Entry, ExpectedHead, Head, Verifier,
};
use secret_core::crypto::{MacKey, VaultKey};
use secret_core::render::entry_json;

#[derive(Arbitrary, Debug, Clone, PartialEq)]
struct Raw {
    seq: u64,
    at_ms: i64,
    actor: String,
    pid: Option<u32>,
    action: String,
    secret: Option<String>,
    version: Option<u64>,
    outcome: String,
    request_id: String,
    details: String,
}

impl Raw {
    fn entry(&self) -> Entry {
        Entry {
            seq: self.seq,
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            pid: self.pid,
            action: self.action.clone(),
            secret: self.secret.clone(),
            version: self.version,
            outcome: self.outcome.clone(),
            request_id: self.request_id.clone(),
            details: self.details.clone(),
            mac: Vec::new(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    head_text: String,
    since: String,
    now_ms: i64,
    a: Raw,
    b: Raw,
    chain: Vec<Raw>,
    /// Which entry to edit and how.
    edit_at: u8,
    edit: u8,
}

fn key() -> &'static MacKey {
    static KEY: OnceLock<MacKey> = OnceLock::new();
    KEY.get_or_init(|| {
        VaultKey::generate()
            .and_then(|k| k.audit_key(&[7; 16]))
            .expect("a key")
    })
}

fn verify(entries: &[Entry], head: Option<&Head>) -> bool {
    let mut v = Verifier::new(EpochKeys::single(key()), None);
    entries.iter().all(|e| v.feed(e).is_ok()) && v.finish(head).is_ok()
}

fuzz_target!(|input: Input| {
    if let Ok(head) = input.head_text.parse::<ExpectedHead>() {
        let printed = format_head(head.seq, &head.mac);
        assert_eq!(printed.parse::<ExpectedHead>(), Ok(head));
    }
    let _ = parse_since(&input.since, input.now_ms);

    if input.a != input.b {
        assert_ne!(canonical(&input.a.entry()), canonical(&input.b.entry()));
    }

    let mut entries: Vec<Entry> = Vec::new();
    let mut head: Option<Head> = None;
    for raw in input.chain.iter().take(16) {
        let mut e = raw.entry();
        head = Some(link(key(), head.as_ref(), &mut e));
        entries.push(e);
    }
    for e in &entries {
        let line = entry_json(e).to_string();
        let _: serde_json::Value = serde_json::from_str(&line).expect("an entry renders as JSON");
    }
    let Some(head) = head else {
        // An empty log has no head: never "verified".
        assert!(!verify(&[], None));
        return;
    };
    assert!(verify(&entries, Some(&head)), "a linked chain must verify");

    let i = input.edit_at as usize % entries.len();
    let mut edited = entries.clone();
    let e = &mut edited[i];
    match input.edit % 8 {
        0 => e.at_ms = e.at_ms.wrapping_add(1),
        1 => e.actor.push('x'),
        2 => e.pid = if e.pid.is_some() { None } else { Some(0) },
        3 => e.action.push('x'),
        4 => e.secret = if e.secret.is_some() { None } else { Some(String::new()) },
        5 => e.version = if e.version.is_some() { None } else { Some(0) },
        6 => e.outcome.push('x'),
        _ => e.details.push(' '),
    }
    assert!(!verify(&edited, Some(&head)), "an edit went unnoticed");

    let mut dropped = entries.clone();
    dropped.remove(i);
    assert!(!verify(&dropped, Some(&head)), "a deletion went unnoticed");
    if entries.len() > 1 {
        let mut swapped = entries.clone();
        let j = (i + 1) % entries.len();
        swapped.swap(i, j);
        let (si, sj) = (swapped[i].seq, swapped[j].seq);
        swapped[i].seq = sj;
        swapped[j].seq = si;
        assert!(!verify(&swapped, Some(&head)), "a reordering went unnoticed");
    }
});
