//! A bounded record of what clients without a valid token cost: public JWKS reads,
//! requests without a token, and requests refused before they reached the vault.
//!
//! Writing one audit entry per such request let anyone on the network grow the vault
//! without limit (and, since reads fail closed on a full disk, stop every read). These
//! requests are counted here instead, by route template, status and client address,
//! and written as **one** `api.refused` entry (outcome `tally`) per [`FLUSH_EVERY`], and
//! at shutdown. The map holds at most [`MAX_KEYS`] keys; requests past that are counted
//! in `others`. So one tally entry is at most a few KiB whatever the request count,
//! and an anonymous client adds at most one entry per interval.
//!
//! Requests that carry a token the server has seen authenticate recently are still
//! recorded one by one (see [`Proven`]): they name an actor.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// How often a non-empty tally is written to the audit log.
pub const FLUSH_EVERY: Duration = Duration::from_secs(60);
/// Distinct (route, status, address) keys one tally entry lists at most.
pub const MAX_KEYS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    route: String,
    status: u16,
    remote: String,
}

#[derive(Debug, Default)]
struct Counts {
    by_key: BTreeMap<Key, u64>,
    others: u64,
    total: u64,
    first_ms: Option<i64>,
}

/// Counts since the last flush.
#[derive(Debug, Default)]
pub struct Tally {
    // A std Mutex: held for a map update, never across an await.
    counts: Mutex<Counts>,
}

impl Tally {
    /// Counts one request answered at `now_ms`. `route` is a route template (never a
    /// raw path: it could hold a value).
    pub fn add(&self, route: &str, status: u16, remote: &str, now_ms: i64) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_add(1);
        c.first_ms.get_or_insert(now_ms);
        let key = Key {
            route: route.to_string(),
            status,
            remote: remote.to_string(),
        };
        if let Some(n) = c.by_key.get_mut(&key) {
            *n = n.saturating_add(1);
        } else if c.by_key.len() < MAX_KEYS {
            c.by_key.insert(key, 1);
        } else {
            c.others = c.others.saturating_add(1);
        }
    }

    /// The details of one tally entry, emptying the tally; `None` when nothing was
    /// counted.
    pub fn take(&self, now_ms: i64) -> Option<serde_json::Value> {
        let c = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        if c.total == 0 {
            return None;
        }
        let by: Vec<serde_json::Value> = c
            .by_key
            .into_iter()
            .map(|(k, n)| {
                json!({ "route": k.route, "status": k.status, "remote": k.remote, "count": n })
            })
            .collect();
        Some(json!({
            "requests": c.total,
            "since_ms": c.first_ms.unwrap_or(now_ms),
            "until_ms": now_ms,
            "by": by,
            "others": c.others,
        }))
    }
}

/// Tokens that authenticated recently, as keyed hashes (never the tokens). A request
/// with one of these is recorded by name; the global brake lets it through.
#[derive(Debug, Default)]
pub struct Proven {
    keys: std::collections::hash_map::RandomState,
    seen: Mutex<HashMap<u64, Instant>>,
}

/// Tokens remembered at most, and for how long.
const MAX_PROVEN: usize = 4_096;
const PROVEN_FOR: Duration = Duration::from_secs(600);

impl Proven {
    fn hash(&self, token: &SecretString) -> u64 {
        self.keys.hash_one(token.expose_secret())
    }

    pub fn remember(&self, token: &SecretString, now: Instant) {
        let key = self.hash(token);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_PROVEN && !seen.contains_key(&key) {
            seen.retain(|_, at| now.saturating_duration_since(*at) < PROVEN_FOR);
            if seen.len() >= MAX_PROVEN {
                seen.clear();
            }
        }
        seen.insert(key, now);
    }

    pub fn forget(&self, token: &SecretString) {
        let key = self.hash(token);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    pub fn knows(&self, token: Option<&SecretString>, now: Instant) -> bool {
        let Some(token) = token else {
            return false;
        };
        let key = self.hash(token);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < PROVEN_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_is_bounded_whatever_the_request_count() {
        let tally = Tally::default();
        assert!(tally.take(0).is_none(), "nothing counted, nothing written");
        for i in 0..100_000u32 {
            tally.add("/v1/jwks/{name}", 404, &format!("2001:db8::{i:x}"), 1);
        }
        let details = tally.take(2).unwrap();
        assert_eq!(details["requests"], 100_000);
        assert_eq!(details["by"].as_array().unwrap().len(), MAX_KEYS);
        assert_eq!(details["others"], 100_000 - MAX_KEYS as u64);
        assert!(
            details.to_string().len() < 8 * 1024,
            "{}",
            details.to_string().len()
        );
        assert!(tally.take(3).is_none(), "taking empties it");
    }

    #[test]
    fn the_same_client_on_the_same_route_is_one_key() {
        let tally = Tally::default();
        for _ in 0..10_000 {
            tally.add("/v1/secrets", 401, "127.0.0.1", 5);
        }
        let details = tally.take(6).unwrap();
        assert_eq!(
            details["by"],
            json!([{ "route": "/v1/secrets", "status": 401, "remote": "127.0.0.1", "count": 10_000 }])
        );
        assert_eq!(details["others"], 0);
    }

    #[test]
    fn proven_tokens_are_remembered_by_hash_and_forgotten_on_failure() {
        let proven = Proven::default();
        let token = SecretString::from("secret_0123456789abcdef.".to_string() + &"a".repeat(43));
        let other = SecretString::from("secret_0123456789abcdef.".to_string() + &"b".repeat(43));
        let now = Instant::now();
        assert!(!proven.knows(Some(&token), now));
        proven.remember(&token, now);
        assert!(proven.knows(Some(&token), now));
        assert!(!proven.knows(Some(&other), now), "same id, other secret");
        assert!(!proven.knows(None, now));
        assert!(!proven.knows(Some(&token), now + PROVEN_FOR));
        proven.forget(&token);
        assert!(!proven.knows(Some(&token), now));
    }
}
