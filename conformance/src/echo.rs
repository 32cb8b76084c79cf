//! The echo backend: answers every request with JSON describing it, following the contract of
//! the Gateway API conformance echo server (fields `path`, `host`, `method`, `proto`,
//! `headers`, `namespace`, `ingress`, `service`, `pod`, and `tls` when serving TLS).
//!
//! Special behaviour: `X-Echo-Set-Header: N1:V1,N2:V2` sets response headers, `?delay=<dur>`
//! delays the answer, `/status/NNN` answers with that code, `/health` answers `OK`, `/ws` is a WebSocket that echoes
//! messages, and
//! `/retry/?uuid=&succeedAfter=N[&responseCode=C]` fails N times before it echoes. HTTP/1.1 and
//! HTTP/2 (prior knowledge, h2c) are served on the same port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;

/// Who the echo server says it is.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
}

/// TLS material, PEM encoded.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// When set, client certificates are requested and verified against these CAs (a client
    /// without one is still served).
    pub client_ca_pem: Option<Vec<u8>>,
}

#[derive(Serialize)]
struct TlsInfo {
    version: String,
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(rename = "negotiatedProtocol")]
    negotiated_protocol: String,
    #[serde(rename = "cipherSuite")]
    cipher_suite: String,
    /// The client's certificate chain, PEM encoded.
    #[serde(rename = "peerCertificates", skip_serializing_if = "Vec::is_empty")]
    peer_certificates: Vec<String>,
}

#[derive(Serialize)]
struct Echo<'a> {
    path: String,
    host: String,
    method: String,
    proto: String,
    headers: BTreeMap<String, Vec<String>>,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
    #[serde(rename = "httpPort")]
    http_port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsInfo>,
}

/// Go's canonical header form (`x-foo-bar` → `X-Foo-Bar`), as the upstream echo server shows.
pub fn canonical(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Parses Go-style durations used by `?delay=`: `150ms`, `2s`, `1m`.
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "us" | "µs" => n / 1_000_000.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// One request an echo server answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    pub body: Bytes,
}

type SeenLog = Arc<std::sync::Mutex<Vec<Seen>>>;

/// Attempts seen per `uuid` of the `/retry/` endpoint.
type RetryLog = Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// A running echo server: its address and the requests it has answered, in order.
#[derive(Clone, Debug)]
pub struct EchoServer {
    pub addr: SocketAddr,
    pub seen: SeenLog,
}

impl EchoServer {
    /// How many requests it has answered whose target starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .map(|v| v.iter().filter(|s| s.path.starts_with(prefix)).count())
            .unwrap_or(0)
    }

    /// The requests it has answered whose target starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|s| s.path.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Conn {
    seen: SeenLog,
    retries: RetryLog,
    id: Identity,
    port: u16,
    peer: SocketAddr,
    tls: Option<(String, String, String, String, Vec<String>)>,
}

/// `/ws`: a WebSocket that sends every message back.
fn websocket(conn: &Conn, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    use futures_util::{SinkExt, StreamExt};
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Response::builder()
            .status(400)
            .body(Full::new(Bytes::from_static(b"not a websocket handshake")))
            .unwrap_or_default();
    };
    println!("Echoing back request made to /ws to client ({})", conn.peer);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

async fn handle(
    conn: Arc<Conn>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.uri().path() == "/ws" {
        return Ok(websocket(&conn, req));
    }
    let (parts, body) = req.into_parts();
    // Read the whole body so the client can reuse the connection.
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    println!(
        "Echoing back request made to {path} to client ({})",
        conn.peer
    );
    if let Ok(mut seen) = conn.seen.lock() {
        seen.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            body,
        });
    }
    if parts.uri.path() == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"OK"))));
    }
    // `/retry/?uuid=U&succeedAfter=N[&responseCode=C]`: the first N attempts of U fail, with
    // code C or, without one, by closing the connection without an answer.
    if parts.uri.path().starts_with("/retry") {
        let q = |k: &str| {
            parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .map(str::to_string)
            })
        };
        let uuid = q("uuid").unwrap_or_default();
        let succeed_after: u32 = q("succeedAfter").and_then(|v| v.parse().ok()).unwrap_or(0);
        let attempt = conn
            .retries
            .lock()
            .map(|mut m| {
                let n = m.entry(uuid).or_insert(0);
                *n += 1;
                *n
            })
            .unwrap_or(1);
        if attempt <= succeed_after {
            return match q("responseCode").and_then(|c| c.parse::<u16>().ok()) {
                Some(code) => Ok(Response::builder()
                    .status(code)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default()),
                None => Err(std::io::Error::other(
                    "failing this attempt by closing the connection",
                )),
            };
        }
    }
    if let Some(delay) = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay=")))
        .and_then(parse_duration)
    {
        tokio::time::sleep(delay.min(Duration::from_secs(60))).await;
    }
    let mut status = 200u16;
    if let Some(code) = parts
        .uri
        .path()
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        status = code;
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        if k == http::header::HOST {
            continue;
        }
        headers
            .entry(canonical(k.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let proto = match parts.version {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let echo = Echo {
        path,
        host,
        method: parts.method.to_string(),
        proto: proto.into(),
        headers,
        namespace: &conn.id.namespace,
        ingress: &conn.id.ingress,
        service: &conn.id.service,
        pod: &conn.id.pod,
        http_port: conn.port.to_string(),
        tls: conn.tls.as_ref().map(|(v, sni, alpn, cs, peers)| TlsInfo {
            version: v.clone(),
            server_name: sni.clone(),
            negotiated_protocol: alpn.clone(),
            cipher_suite: cs.clone(),
            peer_certificates: peers.clone(),
        }),
    };
    let body = serde_json::to_vec(&echo).unwrap_or_default();
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-content-type-options", "nosniff");
    if let Some(set) = parts
        .headers
        .get("x-echo-set-header")
        .and_then(|v| v.to_str().ok())
    {
        for pair in set.split(',') {
            if let Some((n, v)) = pair.split_once(':') {
                resp = resp.header(n.trim(), v.trim());
            }
        }
    }
    Ok(resp.body(Full::new(Bytes::from(body))).unwrap_or_default())
}

/// Starts an echo server on `addr` in the background.
pub async fn serve(
    addr: SocketAddr,
    id: Identity,
    tls: Option<TlsFiles>,
) -> std::io::Result<EchoServer> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let seen: SeenLog = Arc::default();
    let retries: RetryLog = Arc::default();
    let server = EchoServer {
        addr: local,
        seen: seen.clone(),
    };
    let acceptor = match tls {
        None => None,
        Some(files) => Some(tls_acceptor(&files)?),
    };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let id = id.clone();
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            let retries = retries.clone();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let conn = Arc::new(Conn {
                            seen,
                            retries,
                            id,
                            port: local.port(),
                            peer,
                            tls: None,
                        });
                        let svc = service_fn(move |req| handle(conn.clone(), req));
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                            .await;
                    }
                    Some(acc) => {
                        let Ok(stream) = acc.accept(tcp).await else {
                            return;
                        };
                        let (_, session) = stream.get_ref();
                        let info = (
                            match session.protocol_version() {
                                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                                _ => String::new(),
                            },
                            session.server_name().unwrap_or("").to_string(),
                            session
                                .alpn_protocol()
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .unwrap_or_default(),
                            session
                                .negotiated_cipher_suite()
                                .map(|c| format!("{:?}", c.suite()))
                                .unwrap_or_default(),
                            peer_certificates_pem(session),
                        );
                        let conn = Arc::new(Conn {
                            seen,
                            retries,
                            id,
                            port: local.port(),
                            peer,
                            tls: Some(info),
                        });
                        let svc = service_fn(move |req| handle(conn.clone(), req));
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    Ok(server)
}

/// The client's certificate chain of a TLS session, PEM each (the echo modes' `peerCertificates`).
pub(crate) fn peer_certificates_pem(session: &rustls::ServerConnection) -> Vec<String> {
    session
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| pem_encode(c.as_ref()))
        .collect()
}

pub(crate) fn pem_encode(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn tls_acceptor(files: &TlsFiles) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let mut cfg = tls_config(files)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The TLS server configuration of `files` (certificate, key, optional client CAs), no ALPN.
pub(crate) fn tls_config(files: &TlsFiles) -> std::io::Result<rustls::ServerConfig> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let certs: Vec<_> = rustls_pemfile::certs(&mut files.cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("certificate: {e}")))?;
    let key = rustls_pemfile::private_key(&mut files.key_pem.as_slice())
        .map_err(|e| bad(format!("key: {e}")))?
        .ok_or_else(|| bad("no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let builder = match &files.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(c.map_err(|e| bad(format!("client CA: {e}")))?)
                    .map_err(|e| bad(format!("client CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_canonical_header_names() {
        assert_eq!(canonical("x-echo-set-header"), "X-Echo-Set-Header");
        assert_eq!(canonical("USER-AGENT"), "User-Agent");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("150ms"), Some(Duration::from_millis(150)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("soon"), None);
    }
}
