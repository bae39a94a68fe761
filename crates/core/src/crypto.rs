//! Every cryptographic operation of the vault, and the only module that imports
//! `age` or `ring`. The rest of the crate sees `wrap`/`unwrap`, `seal`/`open`,
//! keyed MACs and random values.
//!
//! # The envelope
//! A random 256-bit *vault key* is stored only wrapped: as an age file encrypted to
//! the vault's X25519 recipients, and/or as an age file encrypted to a passphrase
//! (scrypt). Every other key is derived from the vault key with HKDF-SHA256 under
//! its own label, salted with the vault id.
//!
//! # Values
//! Each version of a value is sealed with AES-256-GCM under a key derived for that
//! exact (vault id, name, version). The associated data binds the same triple, so a
//! ciphertext copied onto another row, secret or vault does not open.
//!
//! # Why nonces cannot repeat
//! GCM breaks if one key ever seals two messages under one nonce. Here every
//! (name, version) pair is written once: versions only count up and are never reused,
//! so each derived key seals one plaintext in the normal course. The one way a
//! (name, version) key can seal twice is a lost compare-and-set race (two writers
//! both seal version N; one commit wins, the loser's ciphertext is discarded). To
//! cover that and any future path we did not foresee, the 96-bit nonce is also
//! drawn fresh from the system RNG for every seal: a repeat would need two random
//! 96-bit nonces to collide under one per-version key, which for the handful of
//! seals a key ever sees is a chance of about 2^-96. `rekey` derives from a new
//! vault key, so its seals are under different keys altogether.
//!
//! # Key epochs
//! `rekey` replaces the vault key. The audit MAC key of each retired key (its
//! *epoch*) is kept, sealed with AES-256-GCM under a key derived from the key in
//! force, so entries MACed before the rekey still verify; nothing else of an old key
//! survives it.
//!
//! # Backups
//! A backup is a standard age file (X25519 recipients, or one scrypt passphrase) whose
//! plaintext is the vault's SQLite file, so the plain `age -d` opens it.

use std::fmt;
use std::io::{Read, Write};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Errors carry no detail that could serve as an oracle, and never key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no identity matches its recipients")]
    NoMatchingIdentity,
    #[error("the passphrase is wrong")]
    WrongPassphrase,
    #[error("the wrapped vault key is malformed")]
    MalformedWrappedKey,
    #[error("decryption failed")]
    DecryptionFailed,
    #[error("invalid age recipient {0:?}: expected an X25519 recipient (age1...)")]
    InvalidRecipient(String),
    #[error("{0}")]
    InvalidIdentity(String),
    #[error("the system random number generator failed")]
    Rng,
    #[error("key derivation failed")]
    KeyDerivation,
    #[error("age: {0}")]
    Age(String),
    /// An age file that is truncated, altered, or not an age file at all.
    #[error("truncated, altered, or not an age file at all")]
    NotIntact,
}

const KEY_LEN: usize = 32;
/// Length of the random vault id.
pub const VAULT_ID_LEN: usize = 16;
const NONCE_LEN: usize = aead::NONCE_LEN;

fn rng() -> SystemRandom {
    SystemRandom::new()
}

/// Fills a fresh array from the system RNG.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    rng().fill(&mut out).map_err(|_| CryptoError::Rng)?;
    Ok(out)
}

/// Lowercase hex of bytes (for ids and MACs, never for key material).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Parses lowercase or uppercase hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The vault key. Zeroized on drop; no `Debug` that could show it.
pub struct VaultKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey([redacted])")
    }
}

/// The associated data of a sealed value: which vault, secret and version it belongs to.
pub struct ValueSlot<'a> {
    pub vault_id: &'a [u8],
    pub name: &'a str,
    pub version: u64,
}

impl ValueSlot<'_> {
    fn encode(&self, label: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.name.len());
        out.extend_from_slice(label);
        out.extend_from_slice(&(self.vault_id.len() as u32).to_be_bytes());
        out.extend_from_slice(self.vault_id);
        out.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// A sealed value as stored: a nonce and the AES-256-GCM ciphertext with its tag.
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// An HMAC-SHA256 key derived from the vault key for one purpose.
#[derive(Clone)]
pub struct MacKey(hmac::Key);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey([redacted])")
    }
}

impl MacKey {
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.0, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time check of a tag over `data`.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, data, tag).is_ok()
    }
}

const LABEL_VALUE: &[u8] = b"secret/v1/value";
const LABEL_AAD: &[u8] = b"secret/v1/aad";
const LABEL_KEY_CHECK: &[u8] = b"secret/v1/key-check";
const LABEL_AUDIT_MAC: &[u8] = b"secret/v1/audit-mac";
const LABEL_FINGERPRINT: &[u8] = b"secret/v1/fingerprint";
const LABEL_TOKEN: &[u8] = b"secret/v1/token-hash";
const LABEL_RETIRED: &[u8] = b"secret/v1/retired-audit-key";

/// An HKDF output length, for keys that are exported as bytes.
struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// The audit MAC key of a retired vault key (an earlier *key epoch*), kept after a
/// rekey so that the entries MACed under it still verify. Zeroized on drop.
pub struct RetiredAuditKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for RetiredAuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetiredAuditKey([redacted])")
    }
}

impl RetiredAuditKey {
    /// The MAC key that checks that epoch's entries.
    pub fn mac_key(&self) -> MacKey {
        MacKey(hmac::Key::new(hmac::HMAC_SHA256, self.bytes.as_ref()))
    }
}

const LABEL_METADATA: &[u8] = b"secret/v1/metadata-mac";
/// Appended to the vault id in the key check of a vault whose metadata carries MACs:
/// the check then also says that a missing MAC is tampering, and only the key can
/// turn that back.
const KEY_CHECK_SEALED: &[u8] = b"/metadata-sealed";

/// What a stored key check says about an unwrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key belongs to this vault, and every piece of its metadata carries a MAC.
    Sealed,
    /// The key belongs to this vault, made before metadata MACs: they are computed
    /// at this unlock.
    Legacy,
    /// The key is not this vault's (its keyring was replaced).
    Mismatch,
}

impl VaultKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng().fill(bytes.as_mut()).map_err(|_| CryptoError::Rng)?;
        Ok(Self { bytes })
    }

    /// A copy for a second connection of the same process (zeroized on drop too).
    pub fn try_clone(&self) -> Result<Self, CryptoError> {
        Self::from_slice(self.bytes.as_ref())
    }

    fn from_slice(raw: &[u8]) -> Result<Self, CryptoError> {
        if raw.len() != KEY_LEN {
            return Err(CryptoError::MalformedWrappedKey);
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(raw);
        Ok(Self { bytes })
    }

    fn prk(&self, vault_id: &[u8]) -> hkdf::Prk {
        hkdf::Salt::new(hkdf::HKDF_SHA256, vault_id).extract(self.bytes.as_ref())
    }

    fn mac_key(&self, vault_id: &[u8], label: &[u8]) -> Result<MacKey, CryptoError> {
        let info = [label];
        let prk = self.prk(vault_id);
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(MacKey(hmac::Key::from(okm)))
    }

    /// A tag that proves an unwrapped key is this vault's key, and that the vault's
    /// metadata carries MACs (stored at init, or when a vault gets its MACs).
    pub fn key_check(&self, vault_id: &[u8]) -> Result<[u8; 32], CryptoError> {
        let key = self.mac_key(vault_id, LABEL_KEY_CHECK)?;
        Ok(key.sign(&[vault_id, KEY_CHECK_SEALED].concat()))
    }

    /// The key check of a vault made before metadata MACs.
    pub fn legacy_key_check(&self, vault_id: &[u8]) -> Result<[u8; 32], CryptoError> {
        Ok(self.mac_key(vault_id, LABEL_KEY_CHECK)?.sign(vault_id))
    }

    /// Constant-time comparison against the stored key check.
    pub fn check(&self, vault_id: &[u8], stored: &[u8]) -> Result<KeyCheck, CryptoError> {
        let key = self.mac_key(vault_id, LABEL_KEY_CHECK)?;
        Ok(
            if key.verify(&[vault_id, KEY_CHECK_SEALED].concat(), stored) {
                KeyCheck::Sealed
            } else if key.verify(vault_id, stored) {
                KeyCheck::Legacy
            } else {
                KeyCheck::Mismatch
            },
        )
    }

    /// The key of the MACs over metadata: secrets' labels and versions, tokens, the
    /// number of secrets.
    pub fn metadata_key(&self, vault_id: &[u8]) -> Result<MacKey, CryptoError> {
        self.mac_key(vault_id, LABEL_METADATA)
    }

    /// The key that chains audit entries.
    pub fn audit_key(&self, vault_id: &[u8]) -> Result<MacKey, CryptoError> {
        self.mac_key(vault_id, LABEL_AUDIT_MAC)
    }

    /// This key's audit MAC key as bytes, to be sealed under the next key when a rekey
    /// retires this one. The same key as [`VaultKey::audit_key`].
    pub fn retire_audit_key(&self, vault_id: &[u8]) -> Result<RetiredAuditKey, CryptoError> {
        let info = [LABEL_AUDIT_MAC];
        let prk = self.prk(vault_id);
        let okm = prk
            .expand(&info, OkmLen(KEY_LEN))
            .map_err(|_| CryptoError::KeyDerivation)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        okm.fill(bytes.as_mut())
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(RetiredAuditKey { bytes })
    }

    fn retired_slot(vault_id: &[u8], epoch: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(LABEL_RETIRED.len() + 4 + vault_id.len() + 8);
        out.extend_from_slice(LABEL_RETIRED);
        out.extend_from_slice(&(vault_id.len() as u32).to_be_bytes());
        out.extend_from_slice(vault_id);
        out.extend_from_slice(&epoch.to_be_bytes());
        out
    }

    fn retired_key(&self, vault_id: &[u8]) -> Result<aead::LessSafeKey, CryptoError> {
        let info = [LABEL_RETIRED];
        let prk = self.prk(vault_id);
        let okm = prk
            .expand(&info, &aead::AES_256_GCM)
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
    }

    /// Seals the retired audit key of `epoch` under this (newer) key. The associated
    /// data binds the vault id and the epoch, so a sealed key moved to another epoch or
    /// vault does not open.
    pub fn seal_retired(
        &self,
        vault_id: &[u8],
        epoch: u64,
        retired: &RetiredAuditKey,
    ) -> Result<Sealed, CryptoError> {
        let key = self.retired_key(vault_id)?;
        let nonce_bytes: [u8; NONCE_LEN] = random_array()?;
        let nonce = aead::Nonce::assume_unique_for_key(nonce_bytes);
        let mut buffer = retired.bytes.to_vec();
        let aad = aead::Aad::from(Self::retired_slot(vault_id, epoch));
        key.seal_in_place_append_tag(nonce, aad, &mut buffer)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(Sealed {
            nonce: nonce_bytes.to_vec(),
            ciphertext: buffer,
        })
    }

    /// Opens a retired audit key sealed by [`VaultKey::seal_retired`].
    pub fn open_retired(
        &self,
        vault_id: &[u8],
        epoch: u64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<RetiredAuditKey, CryptoError> {
        let key = self.retired_key(vault_id)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let aad = aead::Aad::from(Self::retired_slot(vault_id, epoch));
        let plain = key
            .open_in_place(nonce, aad, buffer.as_mut_slice())
            .map_err(|_| CryptoError::DecryptionFailed)?;
        if plain.len() != KEY_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(plain);
        Ok(RetiredAuditKey { bytes })
    }

    /// The key that hashes API tokens before they are stored.
    pub fn token_key(&self, vault_id: &[u8]) -> Result<MacKey, CryptoError> {
        self.mac_key(vault_id, LABEL_TOKEN)
    }

    /// The key for value fingerprints in the audit log.
    pub fn fingerprint_key(&self, vault_id: &[u8]) -> Result<MacKey, CryptoError> {
        self.mac_key(vault_id, LABEL_FINGERPRINT)
    }

    fn value_key(&self, slot: &ValueSlot<'_>) -> Result<aead::LessSafeKey, CryptoError> {
        let info = slot.encode(LABEL_VALUE);
        let parts = [info.as_slice()];
        let prk = self.prk(slot.vault_id);
        let okm = prk
            .expand(&parts, &aead::AES_256_GCM)
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
    }

    /// Seals one version of a value.
    pub fn seal(&self, slot: &ValueSlot<'_>, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let key = self.value_key(slot)?;
        let nonce_bytes: [u8; NONCE_LEN] = random_array()?;
        let nonce = aead::Nonce::assume_unique_for_key(nonce_bytes);
        let mut buffer = plaintext.to_vec();
        key.seal_in_place_append_tag(nonce, aead::Aad::from(slot.encode(LABEL_AAD)), &mut buffer)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(Sealed {
            nonce: nonce_bytes.to_vec(),
            ciphertext: buffer,
        })
    }

    /// Opens one version of a value. Any change to the nonce, the ciphertext or the
    /// slot it is opened for fails with `DecryptionFailed`.
    pub fn open(
        &self,
        slot: &ValueSlot<'_>,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key = self.value_key(slot)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let len = key
            .open_in_place(
                nonce,
                aead::Aad::from(slot.encode(LABEL_AAD)),
                buffer.as_mut_slice(),
            )
            .map_err(|_| CryptoError::DecryptionFailed)?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Wraps the key to a set of X25519 recipients as one age file.
    pub fn wrap_to_recipients(&self, recipients: &[String]) -> Result<Vec<u8>, CryptoError> {
        let parsed = recipients
            .iter()
            .map(|r| parse_recipient(r))
            .collect::<Result<Vec<_>, _>>()?;
        let encryptor =
            age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| CryptoError::Age(e.to_string()))?;
        self.write_age(encryptor)
    }

    /// Wraps the key to a passphrase (scrypt). `log_n` overrides age's calibrated work factor.
    pub fn wrap_to_passphrase(
        &self,
        passphrase: &SecretString,
        log_n: Option<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
        if let Some(n) = log_n.filter(|n| (1..64).contains(n)) {
            recipient.set_work_factor(n);
        }
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
            .map_err(|e| CryptoError::Age(e.to_string()))?;
        self.write_age(encryptor)
    }

    fn write_age(&self, encryptor: age::Encryptor) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        let mut writer = encryptor
            .wrap_output(&mut out)
            .map_err(|e| CryptoError::Age(e.to_string()))?;
        writer
            .write_all(self.bytes.as_ref())
            .map_err(|e| CryptoError::Age(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| CryptoError::Age(e.to_string()))?;
        Ok(out)
    }

    /// Unwraps with any of the given identities.
    pub fn unwrap_with_identities(
        wrapped: &[u8],
        identities: &Identities,
    ) -> Result<Self, CryptoError> {
        let decryptor =
            age::Decryptor::new_buffered(wrapped).map_err(|_| CryptoError::MalformedWrappedKey)?;
        if decryptor.is_scrypt() {
            return Err(CryptoError::MalformedWrappedKey);
        }
        let reader = decryptor
            .decrypt(
                identities
                    .identities
                    .iter()
                    .map(|i| i.as_ref() as &dyn age::Identity),
            )
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => CryptoError::NoMatchingIdentity,
                _ => CryptoError::MalformedWrappedKey,
            })?;
        Self::read_key(reader)
    }

    /// Unwraps with a passphrase.
    pub fn unwrap_with_passphrase(
        wrapped: &[u8],
        passphrase: &SecretString,
    ) -> Result<Self, CryptoError> {
        let decryptor =
            age::Decryptor::new_buffered(wrapped).map_err(|_| CryptoError::MalformedWrappedKey)?;
        if !decryptor.is_scrypt() {
            return Err(CryptoError::MalformedWrappedKey);
        }
        let mut identity = age::scrypt::Identity::new(passphrase.clone());
        identity.set_max_work_factor(30);
        let reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                    CryptoError::WrongPassphrase
                }
                _ => CryptoError::MalformedWrappedKey,
            })?;
        Self::read_key(reader)
    }

    fn read_key(mut reader: impl Read) -> Result<Self, CryptoError> {
        let mut raw = Zeroizing::new(Vec::with_capacity(KEY_LEN));
        reader
            .by_ref()
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(|_| CryptoError::MalformedWrappedKey)?;
        Self::from_slice(&raw)
    }
}

fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, CryptoError> {
    text.trim()
        .parse::<age::x25519::Recipient>()
        .map_err(|_| CryptoError::InvalidRecipient(text.to_string()))
}

/// Checks that a string is an age X25519 recipient, returning its canonical form.
pub fn canonical_recipient(text: &str) -> Result<String, CryptoError> {
    parse_recipient(text).map(|r| r.to_string())
}

/// Whom an age file (a backup) is encrypted to.
pub enum AgeTo<'a> {
    /// X25519 recipients (`age1...`); any one of their identities opens the file.
    Recipients(&'a [String]),
    /// One passphrase (scrypt); `log_n` overrides age's calibrated work factor.
    Passphrase {
        passphrase: &'a SecretString,
        log_n: Option<u8>,
    },
}

/// What opens an age file.
pub enum AgeKey<'a> {
    Identities(&'a Identities),
    Passphrase(&'a SecretString),
}

/// Encrypts `plaintext` as one standard age file (what `age -e` writes) into `out`.
pub fn age_encrypt(to: AgeTo<'_>, plaintext: &[u8], out: impl Write) -> Result<(), CryptoError> {
    let encryptor = match to {
        AgeTo::Recipients(recipients) => {
            if recipients.is_empty() {
                return Err(CryptoError::Age("no recipients to encrypt to".into()));
            }
            let parsed = recipients
                .iter()
                .map(|r| parse_recipient(r))
                .collect::<Result<Vec<_>, _>>()?;
            age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| CryptoError::Age(e.to_string()))?
        }
        AgeTo::Passphrase { passphrase, log_n } => {
            let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
            if let Some(n) = log_n.filter(|n| (1..64).contains(n)) {
                recipient.set_work_factor(n);
            }
            age::Encryptor::with_recipients(std::iter::once(&recipient as _))
                .map_err(|e| CryptoError::Age(e.to_string()))?
        }
    };
    let mut writer = encryptor
        .wrap_output(out)
        .map_err(|e| CryptoError::Age(e.to_string()))?;
    writer
        .write_all(plaintext)
        .map_err(|e| CryptoError::Age(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| CryptoError::Age(e.to_string()))?;
    Ok(())
}

/// Whether an age file is encrypted to a passphrase (else to recipients).
/// `NotIntact` when it is not an age file at all.
pub fn age_needs_passphrase(file: &[u8]) -> Result<bool, CryptoError> {
    let decryptor = age::Decryptor::new_buffered(file).map_err(|_| CryptoError::NotIntact)?;
    Ok(decryptor.is_scrypt())
}

/// Decrypts a whole age file. A key that does not open it is `NoMatchingIdentity` or
/// `WrongPassphrase`; a file that is truncated, altered or not age is `NotIntact`.
pub fn age_decrypt(file: &[u8], key: AgeKey<'_>) -> Result<Vec<u8>, CryptoError> {
    let decryptor = age::Decryptor::new_buffered(file).map_err(|_| CryptoError::NotIntact)?;
    let reader = match key {
        AgeKey::Identities(identities) => {
            if decryptor.is_scrypt() {
                return Err(CryptoError::NoMatchingIdentity);
            }
            decryptor
                .decrypt(
                    identities
                        .identities
                        .iter()
                        .map(|i| i.as_ref() as &dyn age::Identity),
                )
                .map_err(|e| match e {
                    age::DecryptError::NoMatchingKeys => CryptoError::NoMatchingIdentity,
                    _ => CryptoError::NotIntact,
                })?
        }
        AgeKey::Passphrase(passphrase) => {
            if !decryptor.is_scrypt() {
                return Err(CryptoError::WrongPassphrase);
            }
            let mut identity = age::scrypt::Identity::new(passphrase.clone());
            identity.set_max_work_factor(30);
            decryptor
                .decrypt(std::iter::once(&identity as &dyn age::Identity))
                .map_err(|e| match e {
                    age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                        CryptoError::WrongPassphrase
                    }
                    _ => CryptoError::NotIntact,
                })?
        }
    };
    let mut plaintext = Vec::with_capacity(file.len());
    let mut reader = reader;
    reader
        .read_to_end(&mut plaintext)
        .map_err(|_| CryptoError::NotIntact)?;
    Ok(plaintext)
}

/// Identities parsed from an age identity file (or the `SECRET_IDENTITY` text).
pub struct Identities {
    identities: Vec<Box<dyn age::Identity>>,
    text: SecretString,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identities({} identities, [redacted])",
            self.identities.len()
        )
    }
}

impl Identities {
    /// Parses the text of a standard age identity file (comments allowed).
    pub fn parse(text: &SecretString) -> Result<Self, CryptoError> {
        let file = age::IdentityFile::from_buffer(text.expose_secret().as_bytes())
            .map_err(|e| CryptoError::InvalidIdentity(e.to_string()))?;
        let identities = file
            .into_identities()
            .map_err(|e| CryptoError::InvalidIdentity(e.to_string()))?;
        if identities.is_empty() {
            return Err(CryptoError::InvalidIdentity(
                "the identity file holds no identity".into(),
            ));
        }
        Ok(Self {
            identities,
            text: text.clone(),
        })
    }

    /// The public recipients of the X25519 identities. Computed on demand: unlocking
    /// does not need them, and each costs a scalar multiplication.
    pub fn recipients(&self) -> Vec<String> {
        self.text
            .expose_secret()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.parse::<age::x25519::Identity>().ok())
            .map(|identity| identity.to_public().to_string())
            .collect()
    }
}

/// A newly generated X25519 identity, as the text of an age identity file.
pub struct GeneratedIdentity {
    pub file_text: SecretString,
    pub recipient: String,
}

impl fmt::Debug for GeneratedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedIdentity({}, [redacted])", self.recipient)
    }
}

/// Generates an identity in the same file format as `age-keygen`.
pub fn generate_identity(created_rfc3339: &str) -> GeneratedIdentity {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let file_text = SecretString::from(format!(
        "# created: {created_rfc3339}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    ));
    GeneratedIdentity {
        file_text,
        recipient,
    }
}

/// `n` random bytes from the system RNG (key material for JWT HMAC keys).
pub fn random_bytes(n: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut out = Zeroizing::new(vec![0u8; n]);
    rng()
        .fill(out.as_mut_slice())
        .map_err(|_| CryptoError::Rng)?;
    Ok(out)
}

/// A new Ed25519 key pair: the private key as PKCS#8 (DER) and the 32-byte public key.
pub fn generate_ed25519() -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
    use ring::signature::KeyPair;
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&rng()).map_err(|_| CryptoError::Rng)?;
    let der = Zeroizing::new(pkcs8.as_ref().to_vec());
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|_| CryptoError::KeyDerivation)?;
    Ok((der, pair.public_key().as_ref().to_vec()))
}

/// Lowercase hex SHA-256 (for public material: key ids, comparing a service's key
/// with one recorded before a call).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// A running SHA-256 (a store copy compares the rows it wrote with the rows read back).
pub struct RowDigest(ring::digest::Context);

impl Default for RowDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl RowDigest {
    pub fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// Character sets for generated values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    Alnum,
    Hex,
    Base64Url,
}

impl Charset {
    fn alphabet(self) -> &'static [u8] {
        match self {
            Charset::Alnum => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Charset::Hex => b"0123456789abcdef",
            Charset::Base64Url => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
        }
    }
}

/// Generates `length` characters uniformly from `charset` with the system RNG
/// (rejection sampling, so no character is more likely than another).
pub fn generate_value(charset: Charset, length: usize) -> Result<SecretString, CryptoError> {
    let alphabet = charset.alphabet();
    let n = alphabet.len();
    // Largest multiple of n that fits in a byte: bytes at or above it are rejected.
    let limit = 256 - (256 % n);
    let mut out = Zeroizing::new(String::with_capacity(length));
    let mut pool = Zeroizing::new([0u8; 64]);
    while out.len() < length {
        rng().fill(pool.as_mut()).map_err(|_| CryptoError::Rng)?;
        for &b in pool.iter() {
            if (b as usize) < limit && out.len() < length {
                out.push(alphabet[b as usize % n] as char);
            }
        }
    }
    Ok(SecretString::from(out.as_str().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot<'a>(vault_id: &'a [u8], name: &'a str, version: u64) -> ValueSlot<'a> {
        ValueSlot {
            vault_id,
            name,
            version,
        }
    }

    #[test]
    fn sealed_values_open_only_in_their_own_slot() {
        let key = VaultKey::generate().unwrap();
        let vid = [7u8; 16];
        let sealed = key.seal(&slot(&vid, "A", 1), b"plaintext").unwrap();
        let opened = key
            .open(&slot(&vid, "A", 1), &sealed.nonce, &sealed.ciphertext)
            .unwrap();
        assert_eq!(opened.as_slice(), b"plaintext");
        assert!(key
            .open(&slot(&vid, "A", 2), &sealed.nonce, &sealed.ciphertext)
            .is_err());
        assert!(key
            .open(&slot(&vid, "B", 1), &sealed.nonce, &sealed.ciphertext)
            .is_err());
        assert!(key
            .open(&slot(&[8u8; 16], "A", 1), &sealed.nonce, &sealed.ciphertext)
            .is_err());
        let mut flipped = sealed.ciphertext.clone();
        flipped[0] ^= 1;
        assert!(key
            .open(&slot(&vid, "A", 1), &sealed.nonce, &flipped)
            .is_err());
        let other = VaultKey::generate().unwrap();
        assert!(other
            .open(&slot(&vid, "A", 1), &sealed.nonce, &sealed.ciphertext)
            .is_err());
    }

    #[test]
    fn nonces_are_fresh_for_every_seal() {
        let key = VaultKey::generate().unwrap();
        let vid = [1u8; 16];
        let a = key.seal(&slot(&vid, "A", 1), b"x").unwrap();
        let b = key.seal(&slot(&vid, "A", 1), b"x").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn wrapped_key_unwraps_with_identity_and_passphrase() {
        let key = VaultKey::generate().unwrap();
        let vid = [3u8; 16];
        let generated = generate_identity("2026-01-01T00:00:00Z");
        let identities = Identities::parse(&generated.file_text).unwrap();
        assert_eq!(
            identities.recipients(),
            std::slice::from_ref(&generated.recipient)
        );
        let wrapped = key
            .wrap_to_recipients(std::slice::from_ref(&generated.recipient))
            .unwrap();
        let back = VaultKey::unwrap_with_identities(&wrapped, &identities).unwrap();
        assert_eq!(
            back.check(&vid, &key.key_check(&vid).unwrap()).unwrap(),
            KeyCheck::Sealed
        );

        let stranger = Identities::parse(&generate_identity("x").file_text).unwrap();
        assert!(matches!(
            VaultKey::unwrap_with_identities(&wrapped, &stranger),
            Err(CryptoError::NoMatchingIdentity)
        ));

        let pass = SecretString::from("correct horse".to_string());
        let wrapped = key.wrap_to_passphrase(&pass, Some(10)).unwrap();
        let back = VaultKey::unwrap_with_passphrase(&wrapped, &pass).unwrap();
        assert_eq!(
            back.check(&vid, &key.key_check(&vid).unwrap()).unwrap(),
            KeyCheck::Sealed
        );
        let wrong = SecretString::from("battery staple".to_string());
        assert!(matches!(
            VaultKey::unwrap_with_passphrase(&wrapped, &wrong),
            Err(CryptoError::WrongPassphrase)
        ));
    }

    #[test]
    fn the_key_check_tells_sealed_legacy_and_foreign_keys_apart() {
        let key = VaultKey::generate().unwrap();
        let vid = [4u8; 16];
        let sealed = key.key_check(&vid).unwrap();
        let legacy = key.legacy_key_check(&vid).unwrap();
        assert_ne!(sealed, legacy);
        assert_eq!(key.check(&vid, &sealed).unwrap(), KeyCheck::Sealed);
        assert_eq!(key.check(&vid, &legacy).unwrap(), KeyCheck::Legacy);
        let other = VaultKey::generate().unwrap();
        assert_eq!(other.check(&vid, &sealed).unwrap(), KeyCheck::Mismatch);
        assert_eq!(other.check(&vid, &legacy).unwrap(), KeyCheck::Mismatch);
        assert_eq!(key.check(&[5u8; 16], &sealed).unwrap(), KeyCheck::Mismatch);
    }

    #[test]
    fn derived_keys_differ_by_label() {
        let key = VaultKey::generate().unwrap();
        let vid = [9u8; 16];
        let a = key.audit_key(&vid).unwrap().sign(b"m");
        let f = key.fingerprint_key(&vid).unwrap().sign(b"m");
        let c = key.key_check(&vid).unwrap();
        let m = key.metadata_key(&vid).unwrap().sign(b"m");
        let t = key.token_key(&vid).unwrap().sign(b"m");
        let all = [a, f, c, m, t];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn generated_values_use_the_charset_and_length() {
        for (charset, alphabet) in [
            (Charset::Alnum, Charset::Alnum.alphabet()),
            (Charset::Hex, Charset::Hex.alphabet()),
            (Charset::Base64Url, Charset::Base64Url.alphabet()),
        ] {
            let v = generate_value(charset, 100).unwrap();
            assert_eq!(v.expose_secret().len(), 100);
            assert!(v.expose_secret().bytes().all(|b| alphabet.contains(&b)));
        }
        assert_ne!(
            generate_value(Charset::Alnum, 32).unwrap().expose_secret(),
            generate_value(Charset::Alnum, 32).unwrap().expose_secret()
        );
    }

    #[test]
    fn debug_of_key_types_is_redacted() {
        let key = VaultKey::generate().unwrap();
        let generated = generate_identity("x");
        let ids = Identities::parse(&generated.file_text).unwrap();
        let secret_part = generated
            .file_text
            .expose_secret()
            .lines()
            .last()
            .unwrap()
            .to_string();
        for shown in [
            format!("{key:?}"),
            format!("{ids:?}"),
            format!("{generated:?}"),
            format!("{:?}", key.audit_key(&[0; 16]).unwrap()),
        ] {
            assert!(!shown.contains(&secret_part), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
    }

    #[test]
    fn a_retired_audit_key_is_the_audit_key_and_opens_only_in_its_epoch() {
        let old = VaultKey::generate().unwrap();
        let new = VaultKey::generate().unwrap();
        let vid = [5u8; 16];
        let retired = old.retire_audit_key(&vid).unwrap();
        assert_eq!(
            retired.mac_key().sign(b"entry"),
            old.audit_key(&vid).unwrap().sign(b"entry")
        );
        let sealed = new.seal_retired(&vid, 1, &retired).unwrap();
        let back = new
            .open_retired(&vid, 1, &sealed.nonce, &sealed.ciphertext)
            .unwrap();
        assert_eq!(
            back.mac_key().sign(b"m"),
            old.audit_key(&vid).unwrap().sign(b"m")
        );
        assert!(new
            .open_retired(&vid, 2, &sealed.nonce, &sealed.ciphertext)
            .is_err());
        assert!(new
            .open_retired(&[6u8; 16], 1, &sealed.nonce, &sealed.ciphertext)
            .is_err());
        assert!(old
            .open_retired(&vid, 1, &sealed.nonce, &sealed.ciphertext)
            .is_err());
        assert!(format!("{back:?}").contains("redacted"));
    }

    #[test]
    fn age_files_open_with_the_right_key_and_refuse_damage() {
        let generated = generate_identity("x");
        let ids = Identities::parse(&generated.file_text).unwrap();
        let stranger = Identities::parse(&generate_identity("y").file_text).unwrap();
        let data = vec![42u8; 200_000];
        let mut file = Vec::new();
        age_encrypt(
            AgeTo::Recipients(std::slice::from_ref(&generated.recipient)),
            &data,
            &mut file,
        )
        .unwrap();
        assert!(file.starts_with(b"age-encryption.org/v1\n"));
        assert!(!age_needs_passphrase(&file).unwrap());
        assert_eq!(age_decrypt(&file, AgeKey::Identities(&ids)).unwrap(), data);
        assert!(matches!(
            age_decrypt(&file, AgeKey::Identities(&stranger)),
            Err(CryptoError::NoMatchingIdentity)
        ));
        let mut flipped = file.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(matches!(
            age_decrypt(&flipped, AgeKey::Identities(&ids)),
            Err(CryptoError::NotIntact)
        ));
        for cut in [file.len() - 1, file.len() - 70_000, 30] {
            assert!(matches!(
                age_decrypt(&file[..cut], AgeKey::Identities(&ids)),
                Err(CryptoError::NotIntact)
            ));
        }
        assert!(matches!(
            age_decrypt(b"SQLite format 3\0", AgeKey::Identities(&ids)),
            Err(CryptoError::NotIntact)
        ));

        let pass = SecretString::from("backup pass".to_string());
        let mut file = Vec::new();
        age_encrypt(
            AgeTo::Passphrase {
                passphrase: &pass,
                log_n: Some(10),
            },
            b"db",
            &mut file,
        )
        .unwrap();
        assert!(age_needs_passphrase(&file).unwrap());
        assert_eq!(
            age_decrypt(&file, AgeKey::Passphrase(&pass)).unwrap(),
            b"db"
        );
        let wrong = SecretString::from("nope".to_string());
        assert!(matches!(
            age_decrypt(&file, AgeKey::Passphrase(&wrong)),
            Err(CryptoError::WrongPassphrase)
        ));
        assert!(matches!(
            age_decrypt(&file, AgeKey::Identities(&ids)),
            Err(CryptoError::NoMatchingIdentity)
        ));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
