//! Domain types shared by every layer: validated names, version numbers and the
//! value wrapper that keeps plaintext out of `Debug`, logs and errors.
//!
//! Nothing here touches SQL, crypto or I/O.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Largest value accepted by default: 64 KiB.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Longest secret name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Bad input from a user: what is wrong and what is allowed. Never carries a value.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error(
        "invalid secret name: {0}; names look like environment variables: \
         [A-Za-z_][A-Za-z0-9_]*, at most 255 bytes"
    )]
    Name(String),
    #[error("value is larger than {limit} bytes (64 KiB); store large files elsewhere and keep a reference here")]
    TooLarge { limit: usize },
    #[error(
        "value is not valid UTF-8 (first bad byte at offset {offset}); base64-encode binary values"
    )]
    NotUtf8 { offset: usize },
    #[error("the value is empty: pipe it on stdin (printf %s VALUE | secret set NAME), use --generate, or pass --allow-empty")]
    Empty,
    #[error("{0}")]
    Other(String),
}

/// A secret's name: `[A-Za-z_][A-Za-z0-9_]*`, 1..=255 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    /// Validates a name. The error never echoes the input: a mistyped command can
    /// put a value where a name belongs.
    pub fn new(raw: &str) -> Result<Self, InputError> {
        if raw.is_empty() {
            return Err(InputError::Name("the name is empty".into()));
        }
        if raw.len() > MAX_NAME_BYTES {
            return Err(InputError::Name(format!(
                "the name is {} bytes long",
                raw.len()
            )));
        }
        for (i, c) in raw.chars().enumerate() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
            if !ok {
                let what = if i == 0 && c.is_ascii_digit() {
                    "it starts with a digit".to_string()
                } else {
                    format!("character {} is not allowed", i + 1)
                };
                return Err(InputError::Name(what));
            }
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretName({})", self.0)
    }
}

/// A version number: counts up from 1, never reused within a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionNumber(u64);

impl VersionNumber {
    pub const FIRST: VersionNumber = VersionNumber(1);

    pub fn new(n: u64) -> Option<Self> {
        (n >= 1 && n <= i64::MAX as u64).then_some(Self(n))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for VersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A secret value: UTF-8, at most [`MAX_VALUE_BYTES`]. Zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct SecretValue(SecretString);

impl SecretValue {
    /// Validates raw bytes (from stdin, a provider, an HTTP body) as a value.
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>, allow_empty: bool) -> Result<Self, InputError> {
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(InputError::TooLarge {
                limit: MAX_VALUE_BYTES,
            });
        }
        if bytes.is_empty() && !allow_empty {
            return Err(InputError::Empty);
        }
        match std::str::from_utf8(&bytes) {
            Ok(text) => Ok(Self(SecretString::from(text.to_string()))),
            Err(e) => Err(InputError::NotUtf8 {
                offset: e.valid_up_to(),
            }),
        }
    }

    /// Wraps a value that is valid by construction (generated, or decrypted from the vault).
    pub fn from_secret_string(value: SecretString) -> Result<Self, InputError> {
        let len = value.expose_secret().len();
        if len > MAX_VALUE_BYTES {
            return Err(InputError::TooLarge {
                limit: MAX_VALUE_BYTES,
            });
        }
        Ok(Self(value))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

/// The three labels a version can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    Current,
    Pending,
    Previous,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Current => "current",
            Label::Pending => "pending",
            Label::Previous => "previous",
        }
    }
}

/// Which version of a secret a read wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSelector {
    Label(Label),
    Number(VersionNumber),
}

/// Metadata of one secret, never its value.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SecretMeta {
    pub name: String,
    pub description: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub deleted_at_ms: Option<i64>,
    pub latest_version: u64,
    pub current_version: Option<u64>,
    pub pending_version: Option<u64>,
    pub previous_version: Option<u64>,
    pub live_versions: u64,
}

/// Metadata of one version, never its value.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VersionMeta {
    pub version: u64,
    pub created_at_ms: i64,
    pub destroyed_at_ms: Option<i64>,
    pub labels: Vec<&'static str>,
}

/// A value read from the vault together with where it came from.
pub struct Revealed {
    pub name: SecretName,
    pub version: VersionNumber,
    pub created_at_ms: i64,
    pub value: SecretValue,
}

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revealed")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_environment_variable_pattern() {
        for ok in ["A", "_", "JWT_SECRET", "a1", "_9"] {
            assert!(SecretName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä", "a.b", "sk-live-123"] {
            assert!(SecretName::new(bad).is_err(), "{bad}");
        }
        assert!(SecretName::new(&"A".repeat(255)).is_ok());
        assert!(SecretName::new(&"A".repeat(256)).is_err());
    }

    #[test]
    fn name_errors_do_not_echo_the_input() {
        let err = SecretName::new("sk-live-abcdef").unwrap_err().to_string();
        assert!(!err.contains("sk-live"), "{err}");
        assert!(err.contains("[A-Za-z_][A-Za-z0-9_]*"), "{err}");
    }

    #[test]
    fn values_are_checked_for_size_utf8_and_emptiness() {
        let ok = SecretValue::from_bytes(Zeroizing::new(b"hello".to_vec()), false);
        assert_eq!(ok.map(|v| v.len()), Ok(5));
        let big = vec![b'a'; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            SecretValue::from_bytes(Zeroizing::new(big), false),
            Err(InputError::TooLarge { .. })
        ));
        assert!(
            SecretValue::from_bytes(Zeroizing::new(vec![b'a'; MAX_VALUE_BYTES]), false).is_ok()
        );
        assert_eq!(
            SecretValue::from_bytes(Zeroizing::new(vec![b'a', 0xff]), false).map(|_| ()),
            Err(InputError::NotUtf8 { offset: 1 })
        );
        assert_eq!(
            SecretValue::from_bytes(Zeroizing::new(vec![]), false).map(|_| ()),
            Err(InputError::Empty)
        );
        assert!(SecretValue::from_bytes(Zeroizing::new(vec![]), true).is_ok());
    }

    #[test]
    fn debug_of_value_types_never_shows_the_value() {
        let value =
            SecretValue::from_bytes(Zeroizing::new(b"hunter2-plaintext".to_vec()), false).unwrap();
        let revealed = Revealed {
            name: SecretName::new("X").unwrap(),
            version: VersionNumber::FIRST,
            created_at_ms: 0,
            value: value.clone(),
        };
        for shown in [
            format!("{value:?}"),
            format!("{revealed:?}"),
            format!("{revealed:#?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
