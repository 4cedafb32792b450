//! gRPC clients get the gateway's own refusals as gRPC answers them: a
//! trailers-only response (HTTP 200, `content-type: application/grpc`,
//! `grpc-status` and `grpc-message`), not a text body they cannot read.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Empty};

use super::headers;

/// Whether `req` is a gRPC call (HTTP/2, `content-type: application/grpc…`).
pub fn is_call<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2 && headers::is_grpc(req.headers())
}

/// The gRPC status code for a refusal's HTTP status.
fn code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 | 421 => 7,  // PERMISSION_DENIED (a rule; a request for another hostname)
        504 => 4,        // DEADLINE_EXCEEDED
        502 | 503 => 14, // UNAVAILABLE
        _ => 2,          // UNKNOWN
    }
}

/// `text` percent-encoded as `grpc-message` wants it (printable ASCII but `%` as is).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The gateway's refusal `response` (its text body the message) as a
/// trailers-only gRPC response.
pub async fn refusal<B: hyper::body::Body>(response: Response<B>) -> Response<Empty<Bytes>> {
    let (parts, body) = response.into_parts();
    let text = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = percent_encode(String::from_utf8_lossy(&text).trim());
    let mut r = Response::new(Empty::new());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code(parts.status)));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded_and_statuses_mapped() {
        assert_eq!(percent_encode("100% née\n"), "100%25 n%C3%A9e%0A");
        assert_eq!(code(StatusCode::FORBIDDEN), 7);
        assert_eq!(code(StatusCode::BAD_GATEWAY), 14);
        assert_eq!(code(StatusCode::IM_A_TEAPOT), 2);
    }
}
