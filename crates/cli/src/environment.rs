//! Everything the `secret` command takes from the process environment beyond its
//! flags, read once by `main` and passed down as a value. Nothing below the binary
//! reads an environment variable; the demo (and any embedding) builds its own
//! [`Environment`] instead of calling `set_var`.
//!
//! `SECRET_VAULT`, `SECRET_IDENTITY_FILE` and `SECRET_POLICIES` are read by clap as
//! the defaults of their flags. The remote-mode variables (`SECRET_ADDR`,
//! `SECRET_TOKEN`, `SECRET_TOKEN_FILE`, `SECRET_CA_FILE`) are read here: the token is a
//! secret and never a flag, and the others sit beside it.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// The environment as the CLI sees it.
#[derive(Default)]
pub struct Environment {
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `XDG_DATA_HOME` (the default vault lives under it).
    pub xdg_data_home: Option<PathBuf>,
    /// `XDG_CONFIG_HOME` (the default identity lives under it).
    pub xdg_config_home: Option<PathBuf>,
    /// `USER`, else `LOGNAME`: who the audit log names.
    pub user: Option<String>,
    /// `SECRET_IDENTITY`: the `AGE-SECRET-KEY-1...` text itself.
    pub identity_text: Option<SecretString>,
    /// `SECRET_PASSPHRASE`.
    pub passphrase: Option<SecretString>,
    /// `SECRET_SCRYPT_LOG_N`: the scrypt work factor of a new passphrase copy.
    pub scrypt_log_n: Option<u8>,
    /// `SECRET_ADDR`: the `secret serve` to talk to instead of a vault file (remote mode).
    pub addr: Option<String>,
    /// `SECRET_TOKEN`: the API token for remote mode.
    pub token: Option<SecretString>,
    /// `SECRET_TOKEN_FILE`: a file holding that token.
    pub token_file: Option<PathBuf>,
    /// `SECRET_CA_FILE`: PEM certificates of a private CA that signed the server's.
    pub ca_file: Option<PathBuf>,
    /// How long rotations wait and retry (shortened by tests and the demo).
    pub tuning: Tuning,
    /// `RAILWAY_REPLICA_ID`: on Railway, the replica this process is (the default
    /// `secret serve --instance-id`).
    pub railway_replica_id: Option<String>,
}

/// `SECRET_POLL_INTERVAL_MS`, `SECRET_RETRY_BASE_MS`, `SECRET_HTTP_TIMEOUT_MS`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tuning {
    pub poll_interval: Option<Duration>,
    pub retry_base: Option<Duration>,
    pub http_timeout: Option<Duration>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("home", &self.home)
            .field("user", &self.user)
            .field(
                "identity_text",
                &self.identity_text.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("token_file", &self.token_file)
            .field("ca_file", &self.ca_file)
            .field("tuning", &self.tuning)
            .field("railway_replica_id", &self.railway_replica_id)
            .finish_non_exhaustive()
    }
}

impl Environment {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let text = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let path = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let ms = |var: &str| {
            text(var)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        Self {
            home: path("HOME"),
            xdg_data_home: path("XDG_DATA_HOME"),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            user: text("USER").or_else(|| text("LOGNAME")),
            identity_text: std::env::var("SECRET_IDENTITY")
                .ok()
                .map(SecretString::from),
            passphrase: std::env::var("SECRET_PASSPHRASE")
                .ok()
                .map(SecretString::from),
            scrypt_log_n: text("SECRET_SCRYPT_LOG_N").and_then(|v| v.parse().ok()),
            addr: text("SECRET_ADDR"),
            token: text("SECRET_TOKEN").map(SecretString::from),
            token_file: path("SECRET_TOKEN_FILE"),
            ca_file: path("SECRET_CA_FILE"),
            tuning: Tuning {
                poll_interval: ms("SECRET_POLL_INTERVAL_MS"),
                retry_base: ms("SECRET_RETRY_BASE_MS"),
                http_timeout: ms("SECRET_HTTP_TIMEOUT_MS"),
            },
            railway_replica_id: text("RAILWAY_REPLICA_ID"),
        }
    }

    /// The default id of a `secret serve` instance: Railway's replica id when set,
    /// else `hostname:pid`.
    pub fn default_instance_id(&self) -> String {
        if let Some(replica) = &self.railway_replica_id {
            return replica.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", std::process::id())
    }

    /// Whether the environment a `secret run` child inherits already has `name`. Read
    /// from the process itself when asked: only `run` needs it.
    pub fn inherited_has(&self, name: &str) -> bool {
        std::env::var_os(name).is_some()
    }

    fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| PathBuf::from("/"))
    }

    /// `$XDG_DATA_HOME/secret/vault.db`.
    pub fn default_vault_path(&self) -> PathBuf {
        self.xdg_data_home
            .clone()
            .unwrap_or_else(|| self.home().join(".local/share"))
            .join("secret/vault.db")
    }

    /// `$XDG_CONFIG_HOME/secret/identity.txt`.
    pub fn default_identity_path(&self) -> PathBuf {
        self.xdg_config_home
            .clone()
            .unwrap_or_else(|| self.home().join(".config"))
            .join("secret/identity.txt")
    }
}
