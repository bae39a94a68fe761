//! Entry points for the fuzz targets in `fuzz/` (the server itself never calls them):
//! the decoding of every request body and query string the API accepts, through the
//! very extractors its routes use, without a socket, a router or a vault.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use super::error::{JsonBody, QueryArgs};
use super::handlers::{AuditQuery, ReadQuery, RotationsQuery, WriteBody};

/// What a decoder made of a request: accepted, or refused with this status and body.
#[derive(Debug)]
pub enum Decoded {
    Accepted,
    Refused {
        status: u16,
        body: Vec<u8>,
    },
    /// The bytes do not even form an HTTP request (an invalid header or URI).
    NotARequest,
}

async fn refused(error: super::error::ApiError) -> Decoded {
    let response = error.into_response();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Decoded::Refused { status, body }
}

/// Decodes `body`, sent with `content_type`, as the body of `PUT /v1/secrets/{name}`.
pub async fn write_body(content_type: &str, body: Vec<u8>) -> Decoded {
    let Ok(request) = Request::builder()
        .method("PUT")
        .uri("/v1/secrets/A")
        .header(CONTENT_TYPE, content_type)
        .body(Body::from(body))
    else {
        return Decoded::NotARequest;
    };
    match JsonBody::<WriteBody>::from_request(request, &()).await {
        Ok(_) => Decoded::Accepted,
        Err(e) => refused(e).await,
    }
}

async fn query<T: DeserializeOwned>(path: &str, query: &str) -> Decoded {
    let Ok(request) = Request::builder()
        .uri(format!("{path}?{query}"))
        .body(Body::empty())
    else {
        return Decoded::NotARequest;
    };
    let (mut parts, _) = request.into_parts();
    match QueryArgs::<T>::from_request_parts(&mut parts, &()).await {
        Ok(_) => Decoded::Accepted,
        Err(e) => refused(e).await,
    }
}

/// Decodes `query` as the query string of each route that takes one: a value read,
/// the rotation list and the audit log.
pub async fn queries(text: &str) -> [Decoded; 3] {
    [
        query::<ReadQuery>("/v1/secrets/A", text).await,
        query::<RotationsQuery>("/v1/rotations", text).await,
        query::<AuditQuery>("/v1/audit", text).await,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(d: &Decoded) -> String {
        match d {
            Decoded::Refused { body, .. } => String::from_utf8_lossy(body).into_owned(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bodies_and_queries_decode_as_the_routes_do_and_refusals_quote_nothing() {
        assert!(matches!(
            write_body(
                "application/json",
                br#"{"value":"v","if_version":3}"#.to_vec()
            )
            .await,
            Decoded::Accepted
        ));
        for body in [
            &br#"{"value":"v","extra":"sk-live-Quoted1"}"#[..],
            br#"{"value":["sk-live-Quoted1"]}"#,
            br#"{"value":"sk-live-Quoted1""#,
            br#"sk-live-Quoted1"#,
        ] {
            let refused = write_body("application/json", body.to_vec()).await;
            let text = message(&refused);
            assert!(
                matches!(refused, Decoded::Refused { status: 400, .. }),
                "{text}"
            );
            assert!(!text.contains("Quoted1"), "{text}");
        }
        let [read, rotations, audit] = queries("version=sk-live-Quoted1&limit=x").await;
        for d in [&read, &rotations, &audit] {
            assert!(!message(d).contains("Quoted1"));
        }
        assert!(matches!(queries("limit=5").await[1], Decoded::Accepted));
    }
}
