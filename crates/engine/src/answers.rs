//! What the gateway answers and edits itself: the request's host, header modifiers on requests
//! and responses, redirects, its own plain-text answers (404, 421, 500, 502, 503, 504, with a
//! reason and no `server` header) or, to gRPC calls, their gRPC form (HTTP 200 with
//! `grpc-status`), and CORS preflights.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, Result};

use crate::config::{HeaderModifier, Listener, Redirect};

/// The request's host, lowercased, without port or trailing dot. Borrowed from the request
/// unless it has uppercase letters.
pub(crate) fn request_host(req: &RequestHeader) -> Option<std::borrow::Cow<'_, str>> {
    let raw = req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })?;
    // Strip the port; keep IPv6 literals whole.
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    let host = host.trim_end_matches('.');
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    })
}

/// Request and response headers alike: what a header modifier does to them.
pub(crate) trait EditHeaders {
    fn set(&mut self, name: HeaderName, value: HeaderValue);
    fn add(&mut self, name: HeaderName, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

impl EditHeaders for RequestHeader {
    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.insert_header(name, value);
    }
    fn add(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.append_header(name, value);
    }
    fn remove(&mut self, name: &HeaderName) {
        let _ = self.remove_header(name);
    }
}

impl EditHeaders for ResponseHeader {
    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.insert_header(name, value);
    }
    fn add(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.append_header(name, value);
    }
    fn remove(&mut self, name: &HeaderName) {
        let _ = self.remove_header(name);
    }
}

/// RequestHeaderModifier and ResponseHeaderModifier: set, then add, then remove.
pub(crate) fn apply_headers(h: &mut impl EditHeaders, m: &HeaderModifier) {
    for (n, v) in &m.set {
        h.set(n.clone(), v.clone());
    }
    for (n, v) in &m.add {
        h.add(n.clone(), v.clone());
    }
    for n in &m.remove {
        h.remove(n);
    }
}

/// The Location of a RequestRedirect, with the spec's default scheme, host, port and path.
pub(crate) fn redirect_location(
    r: &Redirect,
    req: &RequestHeader,
    host: &str,
    listener: &Listener,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(listener.protocol.scheme());
    let hostname = r.hostname.as_deref().unwrap_or(host);
    // With a scheme but no port, the scheme's well-known port; with neither, the listener's.
    let port = r.port.unwrap_or(match r.scheme.as_deref() {
        Some("https") => 443,
        Some(_) => 80,
        None => listener.port,
    });
    let default_port = matches!((scheme, port), ("http", 80) | ("https", 443));
    let path = match &r.path {
        Some(p) => p.apply(req.uri.path()),
        None => req.uri.path().to_string(),
    };
    let query = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let host_part = if hostname.contains(':') {
        format!("[{hostname}]")
    } else {
        hostname.to_string()
    };
    if default_port {
        format!("{scheme}://{host_part}{path}{query}")
    } else {
        format!("{scheme}://{host_part}:{port}{path}{query}")
    }
}

/// A response the gateway makes itself: a plain-text body of `len` bytes, and `extra` headers.
pub(crate) fn plain_response(
    code: u16,
    len: usize,
    extra: &[(&str, String)],
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(code, Some(2 + extra.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    for (k, v) in extra {
        resp.insert_header(k.to_string(), v.as_str())?;
    }
    Ok(resp)
}

pub(crate) async fn respond(
    session: &mut Session,
    code: u16,
    body: &'static str,
    extra: Option<(&str, String)>,
) -> Result<bool> {
    if code >= 400 && is_grpc(session.req_header()) {
        let resp = grpc_response(grpc_status(code), body.trim_end())?;
        write_grpc_answer(session, resp).await?;
        return Ok(true);
    }
    let resp = plain_response(code, body.len(), extra.as_slice())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(true)
}

/// A gRPC call: its content-type is `application/grpc`, or one of its `+format` forms
/// (gRPC-Web's `application/grpc-web` is not one).
pub(crate) fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// gRPC status codes the gateway answers with.
pub(crate) mod grpc_code {
    pub const UNKNOWN: u8 = 2;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

/// The gRPC status for an answer the gateway would give with HTTP status `code`, by gRPC's
/// mapping of HTTP statuses (no route is UNIMPLEMENTED, no backend UNAVAILABLE). The gateway's
/// own 500s all mean that no backend can be used (none, only invalid references, no usable
/// CA): UNAVAILABLE, as GRPCRoute requires for invalid backendRefs.
pub(crate) fn grpc_status(code: u16) -> u8 {
    use grpc_code::*;
    match code {
        400 => INTERNAL,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        404 => UNIMPLEMENTED,
        429 | 500 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// A gRPC call's answer from the gateway: HTTP 200 and, in the same (final) header block,
/// `grpc-status` and `grpc-message` (a "Trailers-Only" response).
pub(crate) fn grpc_response(status: u8, message: &str) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", status.to_string())?;
    resp.insert_header("grpc-message", grpc_message(message))?;
    Ok(resp)
}

/// Writes a gRPC answer of ours. Over HTTP/2 it is trailers-only: one HEADERS frame that ends
/// the stream. pingora's proxy session drops the end-of-stream flag of response headers (its
/// HTTP/2 session ends the stream later with an empty DATA frame, which grpc-go refuses:
/// "server closed the stream without sending trailers"), so the HTTP/2 session is written
/// directly; no downstream module of pingora is in use that would have filtered it. Over
/// HTTP/1.1 the headers and an empty body.
pub(crate) async fn write_grpc_answer(session: &mut Session, resp: ResponseHeader) -> Result<()> {
    match session.as_downstream_mut() {
        pingora::protocols::http::ServerSession::H2(h2) => {
            h2.write_response_header(Box::new(resp), true)
        }
        _ => session.write_response_header(Box::new(resp), true).await,
    }
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%`.
fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `grpc-timeout` header: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn grpc_timeout(req: &RequestHeader) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = req.headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The status a failed request is answered with, as Envoy-based gateways answer: 503 when no
/// connection to the backend could be made, 504 when the backend did not answer in time, 502
/// for other backend failures.
pub(crate) fn error_status(e: &Error) -> u16 {
    use pingora::{ErrorSource, ErrorType as T};
    match e.etype() {
        T::HTTPStatus(code) => *code,
        T::ConnectTimedout
        | T::ConnectRefused
        | T::ConnectNoRoute
        | T::ConnectError
        | T::ConnectProxyFailure => 503,
        T::ReadTimedout | T::WriteTimedout if e.esource() == &ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                T::WriteError | T::ReadError | T::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Why a request failed, in the words of the plain-text answer and of the log line.
pub(crate) fn error_reason(e: &Error) -> std::borrow::Cow<'static, str> {
    use pingora::ErrorType as T;
    match e.etype() {
        // Our own refusals carry their reason (e.g. "no ready endpoint for default/app:80").
        T::HTTPStatus(_) => match &e.context {
            Some(c) => c.as_str().to_string().into(),
            None => "request failed".into(),
        },
        T::ConnectTimedout => {
            "upstream connect timeout: the backend did not accept the connection in time".into()
        }
        T::ConnectRefused => "upstream connect error: the backend refused the connection".into(),
        T::ConnectNoRoute | T::ConnectError | T::ConnectProxyFailure => {
            "upstream connect error: no connection to the backend could be made".into()
        }
        T::TLSHandshakeFailure | T::TLSHandshakeTimedout | T::InvalidCert | T::HandshakeError => {
            "upstream TLS error: the TLS handshake with the backend failed".into()
        }
        T::ReadTimedout | T::WriteTimedout if e.esource() == &pingora::ErrorSource::Upstream => {
            "upstream request timeout".into()
        }
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => {
                "upstream error: the backend's response failed or was cut short".into()
            }
            pingora::ErrorSource::Downstream => "bad request".into(),
            _ => "internal error".into(),
        },
    }
}

/// The answer to an allowed CORS preflight request.
pub(crate) fn cors_preflight(
    cors: &crate::config::Cors,
    req: &RequestHeader,
    origin: &str,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        cors.allow_origin_value(origin),
    )?;
    // `*` is only valid without credentials; with them, echo what the preflight asked for.
    let allowed = |list: &[String], requested: http::header::HeaderName| {
        if !list.iter().any(|m| m == "*") {
            list.join(", ")
        } else if cors.allow_credentials {
            req.headers
                .get(requested)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        } else {
            "*".to_string()
        }
    };
    let methods = allowed(
        &cors.allow_methods,
        http::header::ACCESS_CONTROL_REQUEST_METHOD,
    );
    if !methods.is_empty() {
        resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_METHODS, methods)?;
    }
    let headers = allowed(
        &cors.allow_headers,
        http::header::ACCESS_CONTROL_REQUEST_HEADERS,
    );
    if !headers.is_empty() {
        resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_HEADERS, headers)?;
    }
    resp.insert_header(
        http::header::ACCESS_CONTROL_MAX_AGE,
        cors.max_age.to_string(),
    )?;
    if cors.allow_credentials {
        resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    if !cors.expose_headers.is_empty() {
        resp.insert_header(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            cors.expose_headers.join(", "),
        )?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "Example.COM:8080").unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("example.com"));
        req.insert_header("host", "[::1]:80").unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("::1"));
        // A host already in lowercase is borrowed from the request, not copied.
        req.insert_header("host", "app.example.com.").unwrap();
        let host = request_host(&req).unwrap();
        assert!(matches!(
            host,
            std::borrow::Cow::Borrowed("app.example.com")
        ));
    }

    #[test]
    fn header_modifier_order_is_set_add_remove() {
        let mut h = RequestHeader::build("GET", b"/", None).unwrap();
        h.insert_header("a", "1").unwrap();
        let m = HeaderModifier {
            set: vec![("a".parse().unwrap(), "2".parse().unwrap())],
            add: vec![("b".parse().unwrap(), "3".parse().unwrap())],
            remove: vec!["c".parse().unwrap()],
        };
        h.insert_header("c", "x").unwrap();
        apply_headers(&mut h, &m);
        assert_eq!(h.headers.get("a").unwrap(), "2");
        assert_eq!(h.headers.get("b").unwrap(), "3");
        assert!(h.headers.get("c").is_none());
    }
}
