//! A `postgres://` or `postgresql://` URL: parsed, checked, and told apart from a path.
//!
//! TLS (rustls, the public web roots plus `sslrootcert=FILE` when given):
//!
//! | `sslmode` | host on this machine (localhost, 127.0.0.0/8, ::1, a socket) | another host |
//! |---|---|---|
//! | absent, `prefer`, `allow` | plain | TLS, certificate and host name verified |
//! | `disable` | plain | plain |
//! | `require`, `verify-ca`, `verify-full` | TLS, verified | TLS, verified |
//!
//! `require` verifies the certificate too (stricter than libpq, which does not): a
//! server with a private CA needs `sslrootcert=FILE`. The password (in the URL or in a
//! `password=` parameter) never appears in a message: [`PgLocation::display`] drops it.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use secret_core::store::StoreError;

/// How long connecting may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `text` is meant as a PostgreSQL URL rather than a path: it starts with
/// `postgres:` or `postgresql:` (any case). Such a value is never a file name.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.get(..11).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgres:") || lower.starts_with("postgresql:")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tls {
    Plain,
    Verified { root_cert: Option<PathBuf> },
}

/// A parsed vault URL.
#[derive(Clone)]
pub struct PgLocation {
    pub(crate) config: postgres::Config,
    pub(crate) tls: Tls,
    display: String,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgLocation({}, {:?})", self.display, self.tls)
    }
}

fn bad(display: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::BadLocation(format!(
        "the vault URL {display} is not a usable PostgreSQL URL: {what}; the form is \
         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require|verify-full]"
    ))
}

impl PgLocation {
    /// Parses a vault URL. Errors are [`StoreError::BadLocation`] (exit 2) and never
    /// repeat the password.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let display = redact(url);
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err(bad(
                &display,
                "it must start with postgres:// or postgresql://",
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut sslmode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => sslmode = Some(value.to_ascii_lowercase()),
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value))),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config =
            postgres::Config::from_str(&rest).map_err(|e| bad(&display, error_chain(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(bad(&display, "it names no host"));
        }
        if config.get_user().is_none() {
            return Err(bad(&display, "it names no user"));
        }
        let local = config.get_hosts().iter().all(|h| match h {
            Host::Tcp(name) => {
                let name = name.trim_start_matches('[').trim_end_matches(']');
                name.eq_ignore_ascii_case("localhost")
                    || name == "::1"
                    || name
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        });
        let tls = match sslmode.as_deref() {
            None | Some("prefer") | Some("allow") if local => Tls::Plain,
            None | Some("prefer") | Some("allow") => Tls::Verified { root_cert },
            Some("disable") => Tls::Plain,
            Some("require") | Some("verify-ca") | Some("verify-full") => {
                Tls::Verified { root_cert }
            }
            Some(other) => {
                return Err(bad(
                    &display,
                    format!(
                        "sslmode={other} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    ),
                ))
            }
        };
        config.ssl_mode(match tls {
            Tls::Plain => SslMode::Disable,
            Tls::Verified { .. } => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("secret");
        Ok(Self {
            config,
            tls,
            display,
        })
    }

    /// The URL without its password, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unreachable {
            location: self.display.clone(),
            reason: format!(
                "{reason}; check that the server runs and that the URL's host, port, user \
                 and database are right"
            ),
        }
    }

    /// Connects (from a thread that is not inside an async runtime: see `worker`).
    pub(crate) fn connect(&self) -> Result<postgres::Client, StoreError> {
        let connected = match &self.tls {
            Tls::Plain => self.config.connect(postgres::NoTls),
            Tls::Verified { root_cert } => {
                let tls = tls_config(root_cert.as_ref()).map_err(|e| self.unreachable(e))?;
                self.config
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
            }
        };
        connected.map_err(|e| self.unreachable(error_chain(&e)))
    }
}

/// An error and its sources, as one line (the postgres crate keeps the OS error below).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn tls_config(root_cert: Option<&PathBuf>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_cert {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("sslrootcert {} is not PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `%XX` escapes decoded (a path in a query parameter).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with any password removed: from the user part (`user:pw@`) and from a
/// `password=` query parameter.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        // Not URL-shaped: show no more than its scheme, which may be all that is safe.
        None => return format!("{}:...", url.split(':').next().unwrap_or("")),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{hosts}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        for url in [
            "postgres://u@h/db",
            "postgresql://h",
            "POSTGRES://x",
            "postgres:oops",
        ] {
            assert!(is_postgres_url(url), "{url}");
        }
        for path in [
            "vault.db",
            "/data/postgres/vault.db",
            "./postgres:x",
            "pg://h",
        ] {
            assert!(!is_postgres_url(path), "{path}");
        }
    }

    #[test]
    fn sslmode_decides_tls_and_localhost_defaults_to_plain() {
        let tls = |url: &str| PgLocation::parse(url).unwrap().tls;
        assert_eq!(tls("postgres://u@127.0.0.1/db"), Tls::Plain);
        assert_eq!(tls("postgres://u@localhost:5432/db"), Tls::Plain);
        assert_eq!(tls("postgres://u@[::1]:5432/db"), Tls::Plain);
        assert_eq!(
            tls("postgres://u@db.example.com/db"),
            Tls::Verified { root_cert: None }
        );
        assert_eq!(
            tls("postgres://u@db.example.com/db?sslmode=disable"),
            Tls::Plain
        );
        assert_eq!(
            tls("postgres://u@127.0.0.1/db?sslmode=require"),
            Tls::Verified { root_cert: None }
        );
        assert_eq!(
            tls("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca%20x.pem"),
            Tls::Verified {
                root_cert: Some(PathBuf::from("/etc/ca x.pem"))
            }
        );
    }

    #[test]
    fn bad_urls_are_usage_errors_that_never_repeat_the_password() {
        for url in [
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "postgres://u:hunter2@h/db?frobnicate=1",
            "postgres:u:hunter2@h/db",
            "postgres://:hunter2@/db",
        ] {
            let err = PgLocation::parse(url).unwrap_err();
            assert!(err.is_usage(), "{url}: {err}");
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("postgres://USER"), "{text}");
        }
    }

    #[test]
    fn the_display_form_drops_passwords() {
        assert_eq!(
            redact("postgres://alice:s3cret@db:5432/vault?password=x&sslmode=require"),
            "postgres://alice@db:5432/vault?sslmode=require"
        );
        assert_eq!(redact("postgres://db/vault"), "postgres://db/vault");
    }
}
