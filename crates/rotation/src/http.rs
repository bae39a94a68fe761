//! Errors from the services a rotation talks to, how they are classified
//! (transient: retried with backoff; permanent: the step fails at once), and the retry
//! loop itself. Time to wait comes from the service when it says (`Retry-After` in
//! seconds, LaunchDarkly's `X-Ratelimit-Reset` in epoch milliseconds), else from
//! exponential backoff.

use std::time::Duration;

/// How a failed call should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429, 5xx, timeouts, connection errors, Railway's non-JSON 403: try again.
    Transient,
    /// 400, 401, 403 with a JSON body, 404: trying again will not help.
    Permanent,
}

/// A failed call to Railway, OpenAI or LaunchDarkly. Never carries a value.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{service}: {message}")]
pub struct ExternalError {
    pub service: &'static str,
    pub kind: ErrorKind,
    pub message: String,
    /// The service asked us to wait this long.
    pub retry_after: Option<Duration>,
    /// The request may have reached the service and taken effect (timeout, lost
    /// response): never repeat a non-idempotent call on this without checking first.
    pub maybe_applied: bool,
}

impl ExternalError {
    pub fn permanent(service: &'static str, message: impl Into<String>) -> Self {
        Self {
            service,
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
            maybe_applied: false,
        }
    }

    pub fn transient(service: &'static str, message: impl Into<String>) -> Self {
        Self {
            service,
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            maybe_applied: false,
        }
    }

    /// A reqwest error: connection failures never reached the service; timeouts and
    /// broken bodies may have.
    pub fn from_reqwest(service: &'static str, e: &reqwest::Error) -> Self {
        let maybe_applied = !e.is_connect() && !e.is_builder();
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_decode() || e.is_body() {
            "the response was lost"
        } else {
            "request failed"
        };
        // The reqwest message may contain the URL; ours never carry credentials in URLs.
        Self {
            service,
            kind: ErrorKind::Transient,
            message: format!("{what} ({})", redact_url(&e.to_string())),
            retry_after: None,
            maybe_applied,
        }
    }

    /// Classifies an HTTP error status. `body` is the error body (never a value of
    /// ours: services do not echo credentials back, and the OpenAI stand-in and API
    /// redact keys in messages).
    pub fn from_status(
        service: &'static str,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &str,
        now_ms: i64,
    ) -> Self {
        let json = serde_json::from_str::<serde_json::Value>(body).ok();
        let message = json
            .as_ref()
            .and_then(|j| {
                j.pointer("/error/message")
                    .or_else(|| j.get("message"))
                    .or_else(|| j.pointer("/errors/0/message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.chars().take(120).collect());
        let retry_after = retry_after(headers, now_ms);
        let transient = status == 429 || status >= 500 || (status == 403 && json.is_none());
        let note = if status == 403 && json.is_none() {
            " (non-JSON 403: treated as throttling)"
        } else {
            ""
        };
        Self {
            service,
            kind: if transient {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            },
            message: format!("HTTP {status}: {message}{note}"),
            retry_after,
            maybe_applied: false,
        }
    }

    /// A machine-readable code for the audit log and `secret rotations`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "rejected",
        }
    }
}

fn redact_url(text: &str) -> String {
    // Drop query strings: they are the only place a URL could carry a parameter.
    text.split_whitespace()
        .map(|w| match w.find('?') {
            Some(i) if w.contains("://") => format!("{}?…", &w[..i]),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Retry-After` (seconds) or `X-Ratelimit-Reset` (epoch milliseconds).
fn retry_after(headers: &reqwest::header::HeaderMap, now_ms: i64) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    header("x-ratelimit-reset")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|reset_ms| Duration::from_millis((reset_ms - now_ms).max(0) as u64))
}

/// Sends a request and reads its whole answer: status, headers and body (zeroized on
/// drop: answers can carry credentials). Transport failures are classified here;
/// statuses are the caller's to judge.
pub async fn send(
    service: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<(u16, reqwest::header::HeaderMap, zeroize::Zeroizing<String>), ExternalError> {
    let response = request
        .send()
        .await
        .map_err(|e| ExternalError::from_reqwest(service, &e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| ExternalError::from_reqwest(service, &e))?;
    Ok((status, headers, zeroize::Zeroizing::new(body)))
}

/// How often and how long to retry transient failures within one step.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(250),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n counts from 1).
    pub fn wait(&self, attempt: u32, err: &ExternalError) -> Duration {
        let backoff = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        err.retry_after.unwrap_or(backoff).min(self.max_wait)
    }

    /// Runs `call` until it succeeds, fails permanently, or attempts run out. `call`
    /// gets the attempt number, so a non-idempotent call can check first whether an
    /// earlier attempt took effect.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, ExternalError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, ExternalError>>,
    {
        let mut attempt = 1;
        loop {
            match call(attempt).await {
                Ok(value) => return Ok(value),
                Err(err) if err.kind == ErrorKind::Transient && attempt < self.attempts => {
                    let wait = self.wait(attempt, &err);
                    tracing_note(&err, attempt, wait);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// A retry is shown on a terminal; in a pipe, the step's record tells the story.
fn tracing_note(err: &ExternalError, attempt: u32, wait: Duration) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    eprintln!(
        "  {err}; retrying in {} (attempt {})",
        humantime::format_duration(wait),
        attempt + 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        let c = |s, b: &str| ExternalError::from_status("x", s, &h, b, 0).kind;
        assert_eq!(c(429, "{}"), ErrorKind::Transient);
        assert_eq!(c(503, "{}"), ErrorKind::Transient);
        assert_eq!(c(403, "<html>Access denied</html>"), ErrorKind::Transient);
        assert_eq!(
            c(403, r#"{"code":"forbidden","message":"no"}"#),
            ErrorKind::Permanent
        );
        assert_eq!(
            c(401, r#"{"error":{"message":"bad key"}}"#),
            ErrorKind::Permanent
        );
        assert_eq!(c(400, "{}"), ErrorKind::Permanent);
    }

    #[test]
    fn retry_after_headers_are_honoured() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, 0), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h, 1000), Some(Duration::from_millis(500)));
        let err = ExternalError::from_status("x", 429, &h, "{}", 1000);
        assert_eq!(
            RetryPolicy::default().wait(1, &err),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max_wait: Duration::from_millis(350),
        };
        let e = ExternalError::transient("x", "boom");
        assert_eq!(p.wait(1, &e), Duration::from_millis(100));
        assert_eq!(p.wait(2, &e), Duration::from_millis(200));
        assert_eq!(p.wait(3, &e), Duration::from_millis(350));
    }

    #[test]
    fn messages_pick_the_service_error_text() {
        let h = HeaderMap::new();
        let e = ExternalError::from_status(
            "openai",
            401,
            &h,
            r#"{"error":{"message":"Incorrect API key"}}"#,
            0,
        );
        assert_eq!(e.to_string(), "openai: HTTP 401: Incorrect API key");
        let e = ExternalError::from_status(
            "launchdarkly",
            404,
            &h,
            r#"{"code":"not_found","message":"Unknown environment"}"#,
            0,
        );
        assert!(e.to_string().contains("Unknown environment"));
    }
}
