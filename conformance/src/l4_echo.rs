//! The TCP and UDP echo backends of the conformance suite's echo server, for TCPRoute,
//! UDPRoute and TLSRoute tests.
//!
//! TCP: on connect the server sends `Gateway API Test TCP Server\n`, then answers lines:
//! `TEST` with a JSON line of what it is and saw (`namespace`, `ingress`, `service`, `pod`,
//! `tcpport`, `tlsport`, `isTLS`, and `tls` with `version`, `serverName`,
//! `negotiatedProtocol`, `curves`, `cipherSuite` when it terminated TLS), `IS_TLS` with
//! `true`/`false`, `PING` with `PONG`; other lines get no answer. With TLS files it terminates
//! TLS itself, which is how a TLSRoute passthrough test sees the SNI the client sent.
//!
//! UDP: every datagram is answered with `{"request": <its text>, "namespace", "ingress",
//! "service", "pod"}`.
//!
//! Names follow Go's, as upstream reports them: `TLS 1.3`, `TLS_AES_128_GCM_SHA256`, `X25519`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

use crate::echo::{tls_config, Identity, TlsFiles};

pub const WELCOME: &str = "Gateway API Test TCP Server\n";

#[derive(Clone, Serialize)]
struct TcpAssertions {
    namespace: String,
    ingress: String,
    service: String,
    pod: String,
    tcpport: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    tlsport: String,
    #[serde(rename = "isTLS")]
    is_tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsAssertions>,
}

#[derive(Clone, Serialize)]
struct TlsAssertions {
    version: String,
    #[serde(rename = "serverName")]
    server_name: String,
    #[serde(
        rename = "negotiatedProtocol",
        skip_serializing_if = "String::is_empty"
    )]
    negotiated_protocol: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    curves: String,
    #[serde(rename = "cipherSuite")]
    cipher_suite: String,
    /// The client's certificate chain, PEM (as the HTTP and gRPC echo report it).
    #[serde(rename = "peerCertificates", skip_serializing_if = "Vec::is_empty")]
    peer_certificates: Vec<String>,
}

#[derive(Serialize)]
struct UdpAnswer<'a> {
    request: String,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
}

/// A running L4 echo server; stops when dropped.
pub struct L4Server {
    pub addr: SocketAddr,
    /// The TLS listener's address, when it has one.
    pub tls_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for L4Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The TCP echo server on `listen`, and with `tls` a second one on `tls_listen` that
/// terminates TLS first.
pub async fn serve_tcp(
    listen: SocketAddr,
    id: Identity,
    tls: Option<(SocketAddr, TlsFiles)>,
) -> std::io::Result<L4Server> {
    let plain = TcpListener::bind(listen).await?;
    let addr = plain.local_addr()?;
    let secure = match &tls {
        Some((tls_listen, _)) => Some(TcpListener::bind(tls_listen).await?),
        None => None,
    };
    let tls_addr = secure.as_ref().map(|l| l.local_addr()).transpose()?;
    let base = TcpAssertions {
        namespace: id.namespace.clone(),
        ingress: id.ingress.clone(),
        service: id.service.clone(),
        pod: id.pod.clone(),
        tcpport: addr.port().to_string(),
        tlsport: tls_addr.map(|a| a.port().to_string()).unwrap_or_default(),
        is_tls: false,
        tls: None,
    };
    let mut tasks = Vec::new();
    let b = base.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = plain.accept().await else {
                continue;
            };
            tokio::spawn(talk(conn, b.clone()));
        }
    }));
    if let (Some(listener), Some((_, files))) = (secure, tls) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&files)?));
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let mut a = base.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(conn).await else {
                        return;
                    };
                    let (_, session) = stream.get_ref();
                    a.is_tls = true;
                    a.tls = Some(TlsAssertions {
                        version: match session.protocol_version() {
                            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".into(),
                            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".into(),
                            _ => String::new(),
                        },
                        server_name: session.server_name().unwrap_or("").to_string(),
                        negotiated_protocol: session
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .unwrap_or_default(),
                        curves: session
                            .negotiated_key_exchange_group()
                            .map(|g| go_curve_name(&format!("{:?}", g.name())))
                            .unwrap_or_default(),
                        cipher_suite: session
                            .negotiated_cipher_suite()
                            .map(|c| go_suite_name(&format!("{:?}", c.suite())))
                            .unwrap_or_default(),
                        peer_certificates: crate::echo::peer_certificates_pem(session),
                    });
                    talk(stream, a).await;
                });
            }
        }));
    }
    Ok(L4Server {
        addr,
        tls_addr,
        tasks,
    })
}

/// One connection: the welcome line, then an answer to each known line.
async fn talk<S: AsyncRead + AsyncWrite + Unpin>(conn: S, assertions: TcpAssertions) {
    let (read, mut write) = tokio::io::split(conn);
    if write.write_all(WELCOME.as_bytes()).await.is_err() {
        return;
    }
    let payload = serde_json::to_string(&assertions).unwrap_or_default();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.as_str() {
            "TEST" => format!("{payload}\n"),
            "IS_TLS" => format!("{}\n", assertions.is_tls),
            "PING" => "PONG\n".to_string(),
            _ => continue,
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The UDP echo server on `listen`.
pub async fn serve_udp(listen: SocketAddr, id: Identity) -> std::io::Result<L4Server> {
    let socket = UdpSocket::bind(listen).await?;
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let answer = UdpAnswer {
                request: String::from_utf8_lossy(&buf[..n]).into_owned(),
                namespace: &id.namespace,
                ingress: &id.ingress,
                service: &id.service,
                pod: &id.pod,
            };
            if let Ok(payload) = serde_json::to_vec(&answer) {
                let _ = socket.send_to(&payload, peer).await;
            }
        }
    });
    Ok(L4Server {
        addr,
        tls_addr: None,
        tasks: vec![task],
    })
}

/// rustls's name of a cipher suite as Go's `tls.CipherSuiteName` gives it.
pub(crate) fn go_suite_name(rustls_name: &str) -> String {
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => rustls_name.to_string(),
    }
}

/// rustls's name of a key exchange group as Go's `tls.CurveID.String` gives it.
fn go_curve_name(rustls_name: &str) -> String {
    match rustls_name {
        "secp256r1" => "CurveP256".into(),
        "secp384r1" => "CurveP384".into(),
        "secp521r1" => "CurveP521".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_go_gives_them() {
        assert_eq!(
            go_suite_name("TLS13_AES_128_GCM_SHA256"),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            go_suite_name("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
        assert_eq!(go_curve_name("secp256r1"), "CurveP256");
        assert_eq!(go_curve_name("X25519"), "X25519");
    }
}
