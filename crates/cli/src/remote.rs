//! Remote mode: with `SECRET_ADDR` (or `--addr`) set, the commands that read and change
//! secrets talk to a `secret serve` API instead of a vault file. [`Client`] turns each
//! call into one HTTP request (an audit query may take several pages, a rotation is a
//! request and then polls) and the answer back into the domain types the local vault
//! returns (`Revealed`, `SecretMeta`, `VersionMeta`, audit `Entry`, rotation rows and
//! steps, `RunReport`), so that [`crate::backend`] hands the commands the same values
//! either way and the rendering, shared, cannot differ.
//!
//! Statuses become the errors a local vault would raise, decided in one place
//! ([`Client::status_error`]): 404 not found, 409 conflict, 400/413/422 usage; 401 and
//! 403 are exit 5 (locked: no valid credential, or one without the scope, which the
//! message names). Transport failures (no answer, a certificate not trusted) are exit 1
//! with what to do.
//!
//! Nothing here runs in local mode: the runtime, the HTTP client and its TLS roots are
//! built by [`Client::connect`] only. The token is a `SecretString`, sent only in the
//! `Authorization` header (marked sensitive); response bodies that may hold values are
//! read into zeroizing buffers (best effort: the HTTP stack's own buffers are not
//! ours). Environment variables come from [`Environment`]: the client reads none
//! itself (no proxy from the environment either).

use std::fs;
use std::io::{self, IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use self::wire::{
    label_text, ms, ms_opt, outcome_of_row, revealed, run_row, AuditIn, DeletedIn, ErrorBody,
    ExportIn, ListIn, QueuedIn, RotationsIn, Run, RunIn, ValueIn, VersionsIn, WrittenIn,
};
use crate::Environment;
use secret_core::audit::{AuditFilter, Entry};
use secret_core::error::VaultError;
use secret_core::model::{
    InputError, Label, Revealed, SecretMeta, SecretName, SecretValue, VersionMeta, VersionNumber,
    VersionSelector,
};
use secret_core::render::rfc3339;
use secret_core::rotation_state::RunState;
use secret_core::vault::{RotationRow, StepRow};
use secret_rotation::{Outcome, RunReport};

mod wire;

/// The most entries one audit request asks for (the API's own cap).
const AUDIT_PAGE: u64 = 10_000;
/// The largest answer read: an export of many large values fits.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;
/// The longest a token file may be.
const MAX_TOKEN_FILE: u64 = 4096;

/// Remote mode as the flags and the environment ask for it; nothing is read or
/// connected until [`Client::connect`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    addr: String,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

impl Settings {
    /// Remote mode is on when `--addr` or `SECRET_ADDR` names a server.
    pub(crate) fn resolve(
        addr: Option<&str>,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        env: &Environment,
    ) -> Option<Self> {
        let addr = addr
            .map(str::to_string)
            .or_else(|| env.addr.clone())
            .filter(|a| !a.trim().is_empty())?;
        Some(Self {
            addr,
            token_file: token_file
                .map(Path::to_path_buf)
                .or_else(|| env.token_file.clone()),
            ca_file: ca_file
                .map(Path::to_path_buf)
                .or_else(|| env.ca_file.clone()),
        })
    }
}

/// A connection to one `secret serve`.
pub(crate) struct Client {
    /// The API's base, ending in `/`.
    base: Url,
    /// `scheme://host:port`, for messages.
    shown: String,
    http: reqwest::Client,
    token: SecretString,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.shown)
            .field("token", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Parses `SECRET_ADDR`: `http(s)://host[:port][/prefix]`, nothing else.
fn base_url(addr: &str) -> Result<Url, VaultError> {
    let bad = |why: &str| {
        VaultError::Usage(format!(
            "SECRET_ADDR (or --addr) must be the URL of a `secret serve`, such as \
             https://vault.internal:8200 or http://127.0.0.1:8200: {why}"
        ))
    };
    let mut url = Url::parse(addr.trim()).map_err(|_| bad("this is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// are spoken"));
    }
    if url.host_str().is_none() {
        return Err(bad("it names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "it carries a user name or password; the token goes in SECRET_TOKEN",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a query or a fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether `url` points at this machine (plain http is then not on a network).
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token: `--token-file`, else `SECRET_TOKEN_FILE`, else `SECRET_TOKEN`.
fn token(settings: &Settings, env: &Environment) -> Result<SecretString, VaultError> {
    if let Some(path) = &settings.token_file {
        return token_from_file(path);
    }
    match &env.token {
        Some(t) if !t.expose_secret().trim().is_empty() => {
            Ok(SecretString::from(t.expose_secret().trim().to_string()))
        }
        _ => Err(VaultError::Locked(
            "remote mode needs an API token: set SECRET_TOKEN or SECRET_TOKEN_FILE, or pass \
             --token-file FILE (`secret token create` on the server's host makes one)"
                .into(),
        )),
    }
}

/// A token file: its first line. One readable by others still works, with a warning
/// (as identity files do).
fn token_from_file(path: &Path) -> Result<SecretString, VaultError> {
    let unreadable = |e: io::Error| {
        VaultError::Locked(format!("cannot read token file {}: {e}", path.display()))
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "warning: token file {} is readable by others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let mut text = Zeroizing::new(String::new());
    fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE).read_to_string(&mut text))
        .map_err(unreadable)?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(VaultError::Locked(format!(
            "token file {} is empty: put the token `secret token create` printed in it",
            path.display()
        )));
    }
    Ok(SecretString::from(token.to_string()))
}

/// The certificates of `--ca-file` / `SECRET_CA_FILE`.
fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, VaultError> {
    let pem = fs::read(path)
        .map_err(|e| VaultError::Usage(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
        VaultError::Usage(format!(
            "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(VaultError::Usage(format!(
            "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// What `PUT /v1/secrets/{name}` takes.
#[derive(Serialize)]
struct WriteOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generate: Option<GenerateOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    allow_empty: bool,
}

#[derive(Serialize)]
struct GenerateOut {
    length: u32,
    charset: &'static str,
}

/// A new value for `set`: given (from stdin, already checked), or generated where the
/// vault is (for a server: by the server, so it never crosses the network).
pub(crate) enum NewValue {
    Given {
        value: Result<SecretValue, InputError>,
        allow_empty: bool,
    },
    Generate {
        charset: secret_core::crypto::Charset,
        length: u32,
    },
}

/// A name the server may put in a path: checked here, so that a mistyped value never
/// travels in a URL (and the refusal reads as a local one does).
fn name(raw: &str) -> Result<SecretName, VaultError> {
    Ok(SecretName::new(raw)?)
}

impl Client {
    /// Resolves the token and the CA file, and builds the HTTP client and its runtime.
    pub(crate) fn connect(settings: &Settings, env: &Environment) -> Result<Self, VaultError> {
        let base = base_url(&settings.addr)?;
        let shown = match base.port() {
            Some(port) => format!(
                "{}://{}:{port}",
                base.scheme(),
                base.host_str().unwrap_or("")
            ),
            None => format!("{}://{}", base.scheme(), base.host_str().unwrap_or("")),
        };
        if base.scheme() == "http" && !is_loopback(&base) {
            eprintln!(
                "warning: {shown} is plain http to another machine: the token and the values \
                 cross the network unencrypted; use https://"
            );
        }
        let token = token(settings, env)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("secret/", env!("CARGO_PKG_VERSION")))
            .timeout(env.tuning.http_timeout.unwrap_or(Duration::from_secs(30)))
            .connect_timeout(Duration::from_secs(10))
            // A redirect could carry the token elsewhere; proxies come from no
            // environment variable behind our back.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(path) = &settings.ca_file {
            for cert in ca_certificates(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| VaultError::Io(format!("cannot set up the HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| VaultError::Io(format!("cannot start the async runtime: {e}")))?;
        Ok(Self {
            base,
            shown,
            http,
            token,
            runtime,
        })
    }

    /// One request; the body of a 2xx answer, else the error it means.
    fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| VaultError::Io(format!("cannot build the URL of {path}: {e}")))?;
        self.runtime.block_on(async {
            let mut request = self
                .http
                .request(method, url)
                .bearer_auth(self.token.expose_secret());
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(reqwest::Body::from(bytes::Bytes::from_owner(body)));
            }
            let mut response = request.send().await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            let expected = response.content_length().unwrap_or(0) as usize;
            let mut buffer = Zeroizing::new(Vec::with_capacity(expected.min(MAX_RESPONSE)));
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.transport_error(&e))?
            {
                if buffer.len() + chunk.len() > MAX_RESPONSE {
                    return Err(VaultError::Io(format!(
                        "the answer of {} is larger than {} MiB",
                        self.shown,
                        MAX_RESPONSE / 1024 / 1024
                    )));
                }
                if buffer.capacity() < buffer.len() + chunk.len() {
                    // Grow by hand: the old buffer is wiped, never left behind.
                    let mut bigger = Zeroizing::new(Vec::with_capacity(
                        (buffer.len() + chunk.len()).max(2 * buffer.capacity()),
                    ));
                    bigger.extend_from_slice(&buffer);
                    buffer = bigger;
                }
                buffer.extend_from_slice(&chunk);
            }
            if status.is_success() {
                Ok(buffer)
            } else {
                Err(self.status_error(status, &buffer))
            }
        })
    }

    fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<T, VaultError> {
        let bytes = self.call(method, path, query, body)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            self.garbled(&format!(
                "{path}: not the JSON expected at line {} column {}",
                e.line(),
                e.column()
            ))
        })
    }

    /// An answer this client cannot read (another version of `secret` on the server?).
    fn garbled(&self, what: &str) -> VaultError {
        VaultError::Io(format!(
            "the server at {} sent an answer this `secret` cannot read ({what}); is it the \
             same version?",
            self.shown
        ))
    }

    /// The error a status means: the one place that decides it.
    fn status_error(&self, status: StatusCode, body: &[u8]) -> VaultError {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (String::new(), format!("HTTP {status}")),
        };
        let at = &self.shown;
        match status.as_u16() {
            401 => VaultError::Locked(format!(
                "the server at {at} did not accept the API token ({message}); check \
                 SECRET_TOKEN, SECRET_TOKEN_FILE or --token-file"
            )),
            403 => VaultError::Locked(format!(
                "the API token may not do this: {message}; ask for a token with that scope \
                 (`secret token create --scope ...` on the server's host)"
            )),
            404 if message.starts_with("no such route") => VaultError::Io(format!(
                "the server at {at} does not offer this (it answered: {message}); it may run an \
                 older `secret`"
            )),
            404 => VaultError::NotFound(message),
            // A manual secret: the request was fine, the policy refuses it; `secret
            // rotate` says so with exit 2 on a local vault too.
            409 if code == "not_rotatable" => VaultError::Usage(message),
            409 => VaultError::Conflict(message),
            400 | 413 | 422 => VaultError::Usage(message),
            429 => VaultError::Io(format!("the server at {at} refuses for now: {message}")),
            503 => VaultError::Io(format!("the server at {at} is not available: {message}")),
            _ if code == "internal" => {
                VaultError::Io(format!("the server at {at} failed ({message})"))
            }
            _ => VaultError::Io(format!("the server at {at} answered {status}: {message}")),
        }
    }

    /// No answer: what went wrong, and what to do.
    fn transport_error(&self, e: &reqwest::Error) -> VaultError {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        let at = &self.shown;
        if chain.contains("certificate") || chain.contains("UnknownIssuer") {
            return VaultError::Io(format!(
                "TLS: the certificate of {at} is not trusted ({}); if a private CA signed \
                 it, pass --ca-file FILE or set SECRET_CA_FILE to that CA's PEM certificate",
                chain.rsplit(": ").next().unwrap_or(&chain)
            ));
        }
        if e.is_timeout() {
            return VaultError::Io(format!(
                "the server at {at} did not answer in time (SECRET_HTTP_TIMEOUT_MS sets the limit)"
            ));
        }
        if e.is_connect() {
            return VaultError::Io(format!(
                "cannot reach the server at {at}: {}; is `secret serve` running there, and is \
                 SECRET_ADDR right?",
                chain.rsplit(": ").next().unwrap_or(&chain)
            ));
        }
        VaultError::Io(format!("the request to {at} failed: {chain}"))
    }

    pub(crate) fn get(
        &self,
        raw_name: &str,
        selector: VersionSelector,
    ) -> Result<Revealed, VaultError> {
        let name = name(raw_name)?;
        let query = match selector {
            VersionSelector::Number(n) => vec![("version", n.get().to_string())],
            VersionSelector::Label(Label::Current) => Vec::new(),
            VersionSelector::Label(label) => vec![("label", label.as_str().to_string())],
        };
        let body: ValueIn =
            self.call_json(Method::GET, &format!("v1/secrets/{name}"), &query, None)?;
        revealed(body).map_err(|what| self.garbled(&what))
    }

    pub(crate) fn set(
        &self,
        raw_name: &str,
        value: NewValue,
        if_version: Option<u64>,
        description: Option<&str>,
    ) -> Result<VersionNumber, VaultError> {
        let name = name(raw_name)?;
        let mut buffer = Zeroizing::new(Vec::new());
        let body = match &value {
            NewValue::Given { value, allow_empty } => {
                let value = value.as_ref().map_err(|e| VaultError::Input(e.clone()))?;
                // Room for the worst case of JSON escaping: no reallocation, no copy left.
                buffer.reserve(6 * value.len() + 512);
                WriteOut {
                    value: Some(value.expose()),
                    generate: None,
                    if_version,
                    description,
                    allow_empty: *allow_empty,
                }
            }
            NewValue::Generate { charset, length } => WriteOut {
                value: None,
                generate: Some(GenerateOut {
                    length: *length,
                    charset: match charset {
                        secret_core::crypto::Charset::Alnum => "alnum",
                        secret_core::crypto::Charset::Hex => "hex",
                        secret_core::crypto::Charset::Base64Url => "base64url",
                    },
                }),
                if_version,
                description,
                allow_empty: false,
            },
        };
        serde_json::to_writer(&mut *buffer, &body)
            .map_err(|e| VaultError::Io(format!("cannot encode the request: {e}")))?;
        drop(value);
        let written: WrittenIn = self.call_json(
            Method::PUT,
            &format!("v1/secrets/{name}"),
            &[],
            Some(buffer),
        )?;
        VersionNumber::new(written.version).ok_or_else(|| self.garbled("a version number"))
    }

    pub(crate) fn list(&self, all: bool) -> Result<Vec<SecretMeta>, VaultError> {
        let query = if all {
            vec![("all", "true".to_string())]
        } else {
            Vec::new()
        };
        let body: ListIn = self.call_json(Method::GET, "v1/secrets", &query, None)?;
        body.secrets
            .into_iter()
            .map(|s| {
                Ok(SecretMeta {
                    created_at_ms: ms(&s.created_at)?,
                    updated_at_ms: ms(&s.updated_at)?,
                    deleted_at_ms: ms_opt(&s.deleted_at)?,
                    name: s.name,
                    description: s.description,
                    latest_version: s.latest_version,
                    current_version: s.version,
                    pending_version: s.pending_version,
                    previous_version: s.previous_version,
                    live_versions: s.versions,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(|what| self.garbled(&what))
    }

    pub(crate) fn history(&self, raw_name: &str) -> Result<crate::backend::History, VaultError> {
        let name = name(raw_name)?;
        let body: VersionsIn = self.call_json(
            Method::GET,
            &format!("v1/secrets/{name}/versions"),
            &[],
            None,
        )?;
        let convert = || -> Result<crate::backend::History, String> {
            Ok(crate::backend::History {
                deleted_at_ms: ms_opt(&body.deleted_at)?,
                versions: body
                    .versions
                    .iter()
                    .map(|v| {
                        Ok(VersionMeta {
                            version: v.version,
                            created_at_ms: ms(&v.created_at)?,
                            destroyed_at_ms: ms_opt(&v.destroyed_at)?,
                            labels: v
                                .labels
                                .iter()
                                .map(|l| label_text(l))
                                .collect::<Result<_, _>>()?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
                name: body.name.clone(),
                description: body.description.clone(),
            })
        };
        convert().map_err(|what| self.garbled(&what))
    }

    pub(crate) fn delete(&self, raw_name: &str) -> Result<bool, VaultError> {
        let name = name(raw_name)?;
        let body: DeletedIn =
            self.call_json(Method::DELETE, &format!("v1/secrets/{name}"), &[], None)?;
        Ok(body.changed)
    }

    /// Current values, one audited read each on the server. Without `only`, what the
    /// token may not read is left out, and said so on stderr when the server tells.
    pub(crate) fn reveal_current(
        &self,
        only: Option<&[SecretName]>,
        purpose: &str,
    ) -> Result<Vec<Revealed>, VaultError> {
        let body = serde_json::json!({
            "only": only.map(|names| names.iter().map(SecretName::as_str).collect::<Vec<_>>()),
            "purpose": purpose,
        });
        let bytes = Zeroizing::new(body.to_string().into_bytes());
        let answer: ExportIn = self.call_json(Method::POST, "v1/export", &[], Some(bytes))?;
        if let Some(n @ 1..) = answer.omitted {
            eprintln!(
                "warning: {n} secret{} this token may not read {} left out",
                if n == 1 { "" } else { "s" },
                if n == 1 { "was" } else { "were" }
            );
        }
        answer
            .secrets
            .into_iter()
            .map(revealed)
            .collect::<Result<_, String>>()
            .map_err(|what| self.garbled(&what))
    }

    /// Audit entries as a local query returns them (oldest first; the newest `limit`,
    /// or all), read page by page.
    pub(crate) fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<Entry>, VaultError> {
        let mut base = Vec::new();
        if let Some(s) = &filter.secret {
            base.push(("secret", s.clone()));
        }
        if let Some(a) = &filter.action {
            base.push(("action", a.clone()));
        }
        if let Some(a) = &filter.actor {
            base.push(("actor", a.clone()));
        }
        if let Some(t) = filter.since_ms {
            // The instant this process computed, so both ends agree on it.
            base.push(("since", rfc3339(t, true)));
        }
        let mut pages: Vec<Vec<Entry>> = Vec::new();
        let mut remaining = filter.limit;
        let mut before = filter.before_seq;
        loop {
            let page_size = remaining.map_or(AUDIT_PAGE, |r| r.min(AUDIT_PAGE));
            if page_size == 0 {
                break;
            }
            let mut query = base.clone();
            query.push(("limit", page_size.to_string()));
            if let Some(b) = before {
                query.push(("before", b.to_string()));
            }
            let body: AuditIn = self.call_json(Method::GET, "v1/audit", &query, None)?;
            let entries = body
                .entries
                .into_iter()
                .map(|e| {
                    Ok(Entry {
                        seq: e.seq,
                        at_ms: ms(&e.time)?,
                        actor: e.actor,
                        pid: e.pid,
                        action: e.action,
                        secret: e.secret,
                        version: e.version,
                        outcome: e.outcome,
                        request_id: e.request_id,
                        details: e.details.to_string(),
                        mac: secret_core::crypto::unhex(&e.mac).ok_or("a MAC")?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(|what| self.garbled(&what))?;
            let full = entries.len() as u64 == page_size;
            before = entries.first().map(|e| e.seq);
            remaining = remaining.map(|r| r - entries.len() as u64);
            pages.push(entries);
            if !full || before.is_none() {
                break;
            }
        }
        Ok(pages.into_iter().rev().flatten().collect())
    }

    pub(crate) fn rotations(
        &self,
        secret: Option<&str>,
        limit: u64,
    ) -> Result<Vec<(RotationRow, Vec<StepRow>)>, VaultError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = secret {
            query.push(("secret", name(s)?.to_string()));
        }
        let body: RotationsIn = self.call_json(Method::GET, "v1/rotations", &query, None)?;
        body.rotations
            .into_iter()
            .map(|r| run_row(r).map(|run| (run.row, run.steps)))
            .collect::<Result<_, String>>()
            .map_err(|what| self.garbled(&what))
    }

    /// `secret rotate NAME...` on the server: each secret's rotation is requested (the
    /// server's scheduler runs it at once), then followed until the pass that ran it
    /// has ended. The report holds what a local `secret rotate` reports: each pass's
    /// outcomes for its secret, revokes first.
    pub(crate) fn rotate(&self, names: &[String]) -> Result<RunReport, VaultError> {
        let mut wanted: Vec<SecretName> =
            names.iter().map(|n| name(n)).collect::<Result<_, _>>()?;
        wanted.sort();
        wanted.dedup();
        let mut ids = Vec::new();
        for secret in &wanted {
            let queued: QueuedIn = self.call_json(
                Method::POST,
                &format!("v1/secrets/{secret}/rotate"),
                &[],
                None,
            )?;
            let well_formed = queued.rotation.starts_with("rot_")
                && queued.rotation[4..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric());
            if !well_formed {
                return Err(self.garbled("a rotation id"));
            }
            ids.push(queued.rotation);
        }
        let mut revokes = Vec::new();
        let mut runs = Vec::new();
        for id in &ids {
            for outcome in self.follow(id)? {
                if outcome.rotation.as_deref() == Some(id.as_str()) {
                    runs.push(outcome);
                } else {
                    revokes.push(outcome);
                }
            }
        }
        revokes.extend(runs);
        Ok(RunReport { outcomes: revokes })
    }

    /// Polls one rotation until the pass that ran it has ended (or, for a server that
    /// no longer remembers the pass, until the run has an outcome).
    fn follow(&self, id: &str) -> Result<Vec<Outcome>, VaultError> {
        let mut wait = Duration::from_millis(50);
        let mut said = None;
        loop {
            let run: RunIn =
                self.call_json(Method::GET, &format!("v1/rotations/{id}"), &[], None)?;
            let Run { row, pass, .. } = run_row(run).map_err(|what| self.garbled(&what))?;
            if let Some(outcomes) = pass {
                return Ok(outcomes);
            }
            if row.outcome.is_some() && row.state != RunState::Requested {
                return Ok(vec![outcome_of_row(&row)]);
            }
            if io::stderr().is_terminal() && said != Some(row.state) {
                eprintln!("{}: rotation {id} at {}", row.secret, row.state);
                said = Some(row.state);
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_http_urls_and_nothing_else() {
        assert_eq!(
            base_url("https://vault.internal:8200").unwrap().as_str(),
            "https://vault.internal:8200/"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8200/secret")
                .unwrap()
                .join("v1/secrets")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8200/secret/v1/secrets",
            "a path prefix (behind a reverse proxy) is kept"
        );
        for bad in [
            "vault.internal:8200",
            "ftp://vault",
            "https://user:pw@vault",
            "https://vault/?x=1",
            "not a url",
        ] {
            let err = base_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for (addr, local) in [
            ("http://127.0.0.1:8200", true),
            ("http://localhost:8200", true),
            ("http://[::1]:8200", true),
            ("http://10.0.0.5:8200", false),
            ("http://vault:8200", false),
        ] {
            assert_eq!(is_loopback(&base_url(addr).unwrap()), local, "{addr}");
        }
    }

    #[test]
    fn times_read_back_to_the_millisecond() {
        for t in [0, 1_500, 1_800_000_000_123] {
            assert_eq!(ms(&rfc3339(t, true)), Ok(t));
        }
        assert!(ms("yesterday").is_err());
    }

    #[test]
    fn debug_of_a_client_hides_the_token() {
        let env = Environment {
            token: Some(SecretString::from(
                "secret_0123456789abcdef.TOPSECRET".to_string(),
            )),
            ..Environment::default()
        };
        let settings = Settings::resolve(Some("http://127.0.0.1:1"), None, None, &env).unwrap();
        let client = Client::connect(&settings, &env).unwrap();
        let shown = format!("{client:?} {env:?}");
        assert!(!shown.contains("TOPSECRET"), "{shown}");
    }
}
