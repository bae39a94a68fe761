//! The tamper-evident audit log: entry types, the canonical encoding that is MACed,
//! the chain, the sealed head, and verification.
//!
//! # The chain
//! Entry `n` carries `mac_n = HMAC(audit_key, "secret/audit/v1" || mac_{n-1} || enc(entry_n))`
//! (`mac_0` is 32 zero bytes), where `enc` is a length-prefixed encoding of every field
//! (sequence number, time, actor, pid, action, secret, version, outcome, request id,
//! details). The audit key is derived from the vault key with HKDF under its own
//! label, so editing, deleting, inserting or reordering an entry breaks every MAC
//! from that point on, and forging a consistent chain needs the vault key.
//!
//! # The head
//! Deleting the *newest* entries leaves a valid but shorter chain. To catch that, the
//! store keeps a head row — the last sequence number and MAC — sealed with a second
//! MAC under the audit key. Truncating the table means forging that seal. Someone who
//! can restore an entire older copy of the file can roll both back together; that is
//! what `secret audit verify --expect-head SEQ:MAC` against a head noted elsewhere
//! catches.
//!
//! # Rekey
//! Everything here takes the audit key as an argument. When `rekey` replaces the vault
//! key, entries written before it stay verifiable only with the old audit key, so
//! rekey keeps the retired audit key sealed under the new vault key (one per key
//! epoch; see [`EpochKeys`]). The rekey's own entry is the last one MACed under the
//! old key, and its details name the epoch that follows (`{"epoch": N, ...}`): the
//! verifier switches keys right after it. The switch is inside the chain, so it cannot
//! be moved or forged without the old key, and a log that ends in an earlier epoch
//! than the vault's is caught at the end.
//!
//! Never a value in here: where a value must be identifiable, `fingerprint` gives a
//! keyed, truncated HMAC of it.

use std::collections::BTreeMap;

use crate::crypto::{hex, unhex, MacKey};

const CHAIN_LABEL: &[u8] = b"secret/audit/v1";
const HEAD_LABEL: &[u8] = b"secret/audit-head/v1";
const MAC_LEN: usize = 32;

/// The action of the entry that ends a key epoch.
pub const REKEY_ACTION: &str = "rekey";

/// The audit keys of every key epoch: the one in force and the retired ones.
/// Epoch 1 is the key made at `init`; each rekey starts the next.
pub struct EpochKeys<'k> {
    current_epoch: u64,
    current: &'k MacKey,
    retired: BTreeMap<u64, MacKey>,
}

impl<'k> EpochKeys<'k> {
    /// A vault that was never rekeyed.
    pub fn single(current: &'k MacKey) -> Self {
        Self::new(1, current, BTreeMap::new())
    }

    pub fn new(current_epoch: u64, current: &'k MacKey, retired: BTreeMap<u64, MacKey>) -> Self {
        Self {
            current_epoch,
            current,
            retired,
        }
    }

    fn key(&self, epoch: u64) -> Option<&MacKey> {
        if epoch == self.current_epoch {
            Some(self.current)
        } else {
            self.retired.get(&epoch)
        }
    }
}

/// The epoch a rekey entry starts, from its details.
fn epoch_started_by(entry: &Entry) -> Option<Option<u64>> {
    if entry.action != REKEY_ACTION || entry.outcome != "ok" {
        return None;
    }
    let details: serde_json::Value = serde_json::from_str(&entry.details).ok()?;
    Some(details.get("epoch").and_then(|e| e.as_u64()))
}

/// One entry of the chain, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: i64,
    /// `user:NAME` (CLI), `token:ID` (API) or `scheduler`.
    pub actor: String,
    pub pid: Option<u32>,
    pub action: String,
    pub secret: Option<String>,
    pub version: Option<u64>,
    /// `ok`, or the error code of a refusal (`not_found`, `conflict`, ...).
    pub outcome: String,
    pub request_id: String,
    /// A JSON object; never a value.
    pub details: String,
    pub mac: Vec<u8>,
}

/// The newest entry's sequence number and MAC, sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub mac: Vec<u8>,
    pub seal: Vec<u8>,
}

/// An event recorded before the vault key was available (a failed unlock). It joins
/// the chain at the next successful unlock.
#[derive(Clone, Debug)]
pub struct UnkeyedEvent {
    pub at_ms: i64,
    pub actor: String,
    pub pid: Option<u32>,
    pub action: String,
    pub outcome: String,
    pub request_id: String,
    pub details: String,
}

/// Who is acting: stamped on every entry a process writes.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub pid: Option<u32>,
    pub request_id: String,
}

/// What `secret audit` selects.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub secret: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since_ms: Option<i64>,
    /// Only entries older than this sequence number: the next page back, for a reader
    /// that gets at most so many entries per query (the API).
    pub before_seq: Option<u64>,
    pub limit: Option<u64>,
}

/// A head noted elsewhere: `SEQ:MAC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedHead {
    pub seq: u64,
    pub mac: Vec<u8>,
}

impl std::str::FromStr for ExpectedHead {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The text is not repeated: whatever was pasted here may be something else.
        let bad = || "expected SEQ:MAC as printed by `secret audit verify`".to_string();
        let (seq, mac) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq = seq.parse::<u64>().map_err(|_| bad())?;
        let mac = unhex(mac).filter(|m| m.len() == MAC_LEN).ok_or_else(bad)?;
        Ok(Self { seq, mac })
    }
}

/// What `--since` and `?since=` accept, for error messages.
pub const SINCE_FORMS: &str =
    "a date (2026-11-01), an RFC 3339 time (2026-11-01T12:00:00Z) or an age (7d, 12h)";

/// The start of an audit query window: a date (midnight UTC), an RFC 3339 time, or an
/// age before `now_ms`. `None` when `text` is none of these.
pub fn parse_since(text: &str, now_ms: i64) -> Option<i64> {
    if let Ok(age) = humantime::parse_duration(text) {
        return Some(now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    let time = humantime::parse_rfc3339_weak(&full).ok()?;
    let ms = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// Renders a head as `SEQ:MAC` (MAC in lowercase hex).
pub fn format_head(seq: u64, mac: &[u8]) -> String {
    format!("{seq}:{}", hex(mac))
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

fn put_opt(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(f) => {
            out.push(1);
            put(out, f);
        }
    }
}

/// The canonical encoding of an entry (every field but its MAC).
pub fn canonical(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + entry.details.len());
    out.extend_from_slice(&entry.seq.to_be_bytes());
    out.extend_from_slice(&entry.at_ms.to_be_bytes());
    put(&mut out, entry.actor.as_bytes());
    put_opt(
        &mut out,
        entry
            .pid
            .map(|p| p.to_be_bytes())
            .as_ref()
            .map(|b| b.as_slice()),
    );
    put(&mut out, entry.action.as_bytes());
    put_opt(&mut out, entry.secret.as_deref().map(str::as_bytes));
    put_opt(
        &mut out,
        entry
            .version
            .map(|v| v.to_be_bytes())
            .as_ref()
            .map(|b| b.as_slice()),
    );
    put(&mut out, entry.outcome.as_bytes());
    put(&mut out, entry.request_id.as_bytes());
    put(&mut out, entry.details.as_bytes());
    out
}

/// The MAC of `entry` chained to the previous entry's MAC.
pub fn chain_mac(key: &MacKey, prev_mac: &[u8], entry: &Entry) -> [u8; MAC_LEN] {
    key.sign(&chain_input(prev_mac, entry))
}

fn chain_input(prev_mac: &[u8], entry: &Entry) -> Vec<u8> {
    let mut data = Vec::with_capacity(CHAIN_LABEL.len() + MAC_LEN + 256);
    data.extend_from_slice(CHAIN_LABEL);
    put(&mut data, prev_mac);
    data.extend_from_slice(&canonical(entry));
    data
}

fn head_input(seq: u64, mac: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(HEAD_LABEL.len() + 8 + MAC_LEN);
    data.extend_from_slice(HEAD_LABEL);
    data.extend_from_slice(&seq.to_be_bytes());
    put(&mut data, mac);
    data
}

/// Seals a head so it cannot be moved without the audit key.
pub fn seal_head(key: &MacKey, seq: u64, mac: &[u8]) -> Head {
    Head {
        seq,
        mac: mac.to_vec(),
        seal: key.sign(&head_input(seq, mac)).to_vec(),
    }
}

/// Whether a head's seal is this key's over its sequence number and MAC.
pub fn head_is_sealed(key: &MacKey, head: &Head) -> bool {
    key.verify(&head_input(head.seq, &head.mac), &head.seal)
}

/// Fills in `entry.seq` and `entry.mac` to follow `head`, and returns the new head.
pub fn link(key: &MacKey, head: Option<&Head>, entry: &mut Entry) -> Head {
    let (seq, prev) = match head {
        Some(h) => (h.seq + 1, h.mac.clone()),
        None => (1, vec![0u8; MAC_LEN]),
    };
    entry.seq = seq;
    entry.mac = chain_mac(key, &prev, entry).to_vec();
    seal_head(key, seq, &entry.mac)
}

/// Computes keyed fingerprints; cheap to clone and hand to providers.
#[derive(Clone, Debug)]
pub struct Fingerprinter(std::sync::Arc<MacKey>);

impl Fingerprinter {
    pub fn new(key: MacKey) -> Self {
        Self(std::sync::Arc::new(key))
    }

    pub fn of(&self, value: &[u8]) -> String {
        fingerprint(&self.0, value)
    }
}

/// A keyed fingerprint of a value: identifies it across entries without revealing it.
pub fn fingerprint(key: &MacKey, value: &[u8]) -> String {
    hex(&key.sign(value)[..12])
}

/// Where and why verification failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub seq: u64,
    pub reason: String,
}

/// Checks the chain entry by entry, in sequence order, switching keys at each rekey.
pub struct Verifier<'k> {
    keys: EpochKeys<'k>,
    epoch: u64,
    next_seq: u64,
    prev_mac: Vec<u8>,
    expect: Option<ExpectedHead>,
    expect_seen: bool,
}

impl<'k> Verifier<'k> {
    pub fn new(keys: EpochKeys<'k>, expect: Option<ExpectedHead>) -> Self {
        Self {
            keys,
            epoch: 1,
            next_seq: 1,
            prev_mac: vec![0u8; MAC_LEN],
            expect,
            expect_seen: false,
        }
    }

    /// Feeds the next entry (the store yields them ordered by `seq`).
    pub fn feed(&mut self, entry: &Entry) -> Result<(), Break> {
        if entry.seq != self.next_seq {
            let reason = if entry.seq > self.next_seq {
                format!(
                    "entry {} is missing (the next entry present is {})",
                    self.next_seq, entry.seq
                )
            } else {
                format!("entry {} is out of order", entry.seq)
            };
            return Err(Break {
                seq: self.next_seq,
                reason,
            });
        }
        let Some(key) = self.keys.key(self.epoch) else {
            return Err(Break {
                seq: entry.seq,
                reason: format!(
                    "the audit key of key epoch {} is missing (its retired key was deleted)",
                    self.epoch
                ),
            });
        };
        if !key.verify(&chain_input(&self.prev_mac, entry), &entry.mac) {
            return Err(Break {
                seq: entry.seq,
                reason: "its MAC does not match its contents and the entry before it (edited, inserted or reordered)".into(),
            });
        }
        if let Some(started) = epoch_started_by(entry) {
            match started {
                Some(next) if next == self.epoch + 1 => self.epoch = next,
                _ => {
                    return Err(Break {
                        seq: entry.seq,
                        reason: format!(
                            "this rekey entry does not start key epoch {}",
                            self.epoch + 1
                        ),
                    })
                }
            }
        }
        if let Some(expect) = &self.expect {
            if expect.seq == entry.seq {
                if expect.mac != entry.mac {
                    return Err(Break {
                        seq: entry.seq,
                        reason: "its MAC differs from the expected head noted earlier (the log was rewritten)".into(),
                    });
                }
                self.expect_seen = true;
            }
        }
        self.prev_mac = entry.mac.clone();
        self.next_seq += 1;
        Ok(())
    }

    /// Ends verification against the stored head. Returns the number of entries checked.
    pub fn finish(self, head: Option<&Head>) -> Result<u64, Break> {
        let last = self.next_seq - 1;
        if let Some(expect) = &self.expect {
            if !self.expect_seen {
                return Err(Break {
                    seq: last + 1,
                    reason: format!(
                        "the log ends at {last} but the expected head noted earlier is at {} (entries were deleted)",
                        expect.seq
                    ),
                });
            }
        }
        let Some(head) = head else {
            return Err(Break {
                seq: last + 1,
                reason: "the sealed head record is missing".into(),
            });
        };
        if self.epoch != self.keys.current_epoch {
            return Err(Break {
                seq: last + 1,
                reason: format!(
                    "the log ends in key epoch {} but the vault is at epoch {} (entries from a rekey on were deleted)",
                    self.epoch, self.keys.current_epoch
                ),
            });
        }
        if !head_is_sealed(self.keys.current, head) {
            return Err(Break {
                seq: last + 1,
                reason: "the sealed head record was altered".into(),
            });
        }
        if head.seq > last {
            return Err(Break {
                seq: last + 1,
                reason: format!(
                    "the log ends at {last} but its sealed head is at {} (newest entries deleted)",
                    head.seq
                ),
            });
        }
        if head.seq < last || head.mac != self.prev_mac {
            return Err(Break {
                seq: head.seq + 1,
                reason: "entries after the sealed head were added without the audit key".into(),
            });
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::VaultKey;

    fn key() -> MacKey {
        VaultKey::generate().unwrap().audit_key(&[1; 16]).unwrap()
    }

    fn entry(action: &str) -> Entry {
        Entry {
            seq: 0,
            at_ms: 1_700_000_000_000,
            actor: "user:alice".into(),
            pid: Some(42),
            action: action.into(),
            secret: Some("JWT_SECRET".into()),
            version: Some(3),
            outcome: "ok".into(),
            request_id: "r1".into(),
            details: "{}".into(),
            mac: vec![],
        }
    }

    fn chain(key: &MacKey, n: usize) -> (Vec<Entry>, Head) {
        let mut head: Option<Head> = None;
        let mut out = vec![];
        for i in 0..n {
            let mut e = entry(&format!("a{i}"));
            head = Some(link(key, head.as_ref(), &mut e));
            out.push(e);
        }
        (out, head.unwrap())
    }

    fn verify(
        key: &MacKey,
        entries: &[Entry],
        head: &Head,
        expect: Option<ExpectedHead>,
    ) -> Result<u64, Break> {
        let mut v = Verifier::new(EpochKeys::single(key), expect);
        for e in entries {
            v.feed(e)?;
        }
        v.finish(Some(head))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let k = key();
        let (entries, head) = chain(&k, 5);
        assert_eq!(verify(&k, &entries, &head, None), Ok(5));
        let expect = ExpectedHead {
            seq: 3,
            mac: entries[2].mac.clone(),
        };
        assert_eq!(verify(&k, &entries, &head, Some(expect)), Ok(5));
    }

    #[test]
    fn each_kind_of_tampering_names_the_first_bad_entry() {
        let k = key();
        let (entries, head) = chain(&k, 5);

        let mut edited = entries.clone();
        edited[2].outcome = "not_found".into();
        assert_eq!(verify(&k, &edited, &head, None).unwrap_err().seq, 3);

        let mut deleted = entries.clone();
        deleted.remove(1);
        assert_eq!(verify(&k, &deleted, &head, None).unwrap_err().seq, 2);

        let mut swapped = entries.clone();
        swapped.swap(1, 2);
        let (a, b) = (swapped[1].seq, swapped[2].seq);
        swapped[1].seq = b;
        swapped[2].seq = a;
        assert_eq!(verify(&k, &swapped, &head, None).unwrap_err().seq, 2);

        let truncated = &entries[..3];
        assert_eq!(verify(&k, truncated, &head, None).unwrap_err().seq, 4);

        let forged_head = Head {
            seq: 3,
            mac: entries[2].mac.clone(),
            seal: head.seal.clone(),
        };
        assert_eq!(
            verify(&k, truncated, &forged_head, None).unwrap_err().seq,
            4
        );

        let honest_old_head = seal_head(&k, 3, &entries[2].mac);
        let expect = ExpectedHead {
            seq: 5,
            mac: entries[4].mac.clone(),
        };
        assert_eq!(
            verify(&k, truncated, &honest_old_head, Some(expect))
                .unwrap_err()
                .seq,
            4
        );

        let other = key();
        assert_eq!(verify(&other, &entries, &head, None).unwrap_err().seq, 1);
    }

    #[test]
    fn a_chain_verifies_across_rekeys_and_catches_a_moved_or_dropped_switch() {
        let k1 = key();
        let k2 = key();
        let k3 = key();
        let mut head: Option<Head> = None;
        let mut entries = vec![];
        let mut push = |key: &MacKey, action: &str, details: &str, head: &mut Option<Head>| {
            let mut e = entry(action);
            e.details = details.into();
            *head = Some(link(key, head.as_ref(), &mut e));
            entries.push(e);
        };
        push(&k1, "set", "{}", &mut head);
        push(&k1, REKEY_ACTION, r#"{"epoch":2}"#, &mut head);
        push(&k2, "get", "{}", &mut head);
        push(&k2, REKEY_ACTION, r#"{"epoch":3}"#, &mut head);
        push(&k3, "get", "{}", &mut head);
        let last = head.unwrap();
        let head = seal_head(&k3, last.seq, &last.mac);
        let retired = || BTreeMap::from([(1, k1.clone()), (2, k2.clone())]);
        let run = |entries: &[Entry], keys: EpochKeys<'_>, head: &Head| {
            let mut v = Verifier::new(keys, None);
            for e in entries {
                v.feed(e)?;
            }
            v.finish(Some(head))
        };
        assert_eq!(
            run(&entries, EpochKeys::new(3, &k3, retired()), &head),
            Ok(5)
        );
        // A retired key that is gone breaks verification where its epoch begins.
        let only_two = BTreeMap::from([(1, k1.clone())]);
        let err = run(&entries, EpochKeys::new(3, &k3, only_two), &head).unwrap_err();
        assert_eq!(err.seq, 3);
        // Cutting the log before the last rekey, with a head sealed back then, is caught.
        let old_head = seal_head(&k2, 3, &entries[2].mac);
        let err = run(&entries[..3], EpochKeys::new(3, &k3, retired()), &old_head).unwrap_err();
        assert!(err.reason.contains("epoch 2"), "{}", err.reason);
        // An edited rekey entry (its epoch changed) fails its own MAC.
        let mut edited = entries.clone();
        edited[1].details = r#"{"epoch":3}"#.into();
        let err = run(&edited, EpochKeys::new(3, &k3, retired()), &head).unwrap_err();
        assert_eq!(err.seq, 2);
    }

    #[test]
    fn expected_heads_parse_strictly() {
        let mac = "ab".repeat(32);
        assert_eq!(
            format!("7:{mac}").parse::<ExpectedHead>(),
            Ok(ExpectedHead {
                seq: 7,
                mac: vec![0xab; 32]
            })
        );
        assert!("7".parse::<ExpectedHead>().is_err());
        assert!("x:ab".parse::<ExpectedHead>().is_err());
        assert!("7:abcd".parse::<ExpectedHead>().is_err());
    }

    #[test]
    fn fingerprints_are_keyed_and_short() {
        let k1 = key();
        let k2 = key();
        assert_eq!(fingerprint(&k1, b"v"), fingerprint(&k1, b"v"));
        assert_ne!(fingerprint(&k1, b"v"), fingerprint(&k2, b"v"));
        assert_eq!(fingerprint(&k1, b"v").len(), 24);
    }
}
