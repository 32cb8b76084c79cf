//! The TCP and UDP echo backends over real sockets, TLS included.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::sync::Arc;

use conformance::echo::{Identity, TlsFiles};
use conformance::l4_echo::{serve_tcp, serve_udp, WELCOME};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

fn identity() -> Identity {
    Identity {
        namespace: "ns".into(),
        ingress: String::new(),
        service: "tcp-echo".into(),
        pod: "tcp-echo-1".into(),
    }
}

/// Sends each line and reads one line back, after the welcome line.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(conn: S, lines: &[&str]) -> Vec<String> {
    let (read, mut write) = tokio::io::split(conn);
    let mut read = BufReader::new(read);
    let mut welcome = String::new();
    read.read_line(&mut welcome).await.unwrap();
    assert_eq!(welcome, WELCOME);
    let mut out = Vec::new();
    for l in lines {
        write.write_all(format!("{l}\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        read.read_line(&mut answer).await.unwrap();
        out.push(answer.trim_end().to_string());
    }
    out
}

#[tokio::test]
async fn tcp_answers_test_is_tls_and_ping() {
    let server = serve_tcp("127.0.0.1:0".parse().unwrap(), identity(), None)
        .await
        .unwrap();
    let conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let answers = converse(conn, &["PING", "IS_TLS", "TEST"]).await;
    assert_eq!(answers[0], "PONG");
    assert_eq!(answers[1], "false");
    let test: serde_json::Value = serde_json::from_str(&answers[2]).unwrap();
    assert_eq!(test["pod"], "tcp-echo-1");
    assert_eq!(test["service"], "tcp-echo");
    assert_eq!(test["isTLS"], false);
    assert_eq!(test["tcpport"], server.addr.port().to_string());
    assert!(test.get("tls").is_none(), "{test}");
}

#[tokio::test]
async fn tls_reports_the_sni_the_client_sent() {
    let host = "passthrough.example.com";
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = TlsFiles {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
        client_ca_pem: None,
    };
    let server = serve_tcp(
        "127.0.0.1:0".parse().unwrap(),
        identity(),
        Some(("127.0.0.1:0".parse().unwrap(), files)),
    )
    .await
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.tls_addr.unwrap())
        .await
        .unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(host.try_into().unwrap(), tcp)
        .await
        .unwrap();
    let answers = converse(conn, &["IS_TLS", "TEST"]).await;
    assert_eq!(answers[0], "true");
    let test: serde_json::Value = serde_json::from_str(&answers[1]).unwrap();
    assert_eq!(test["isTLS"], true);
    assert_eq!(test["tls"]["serverName"], host);
    assert_eq!(test["tls"]["version"], "TLS 1.3");
    assert!(
        test["tls"]["cipherSuite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_"),
        "{test}"
    );
}

#[tokio::test]
async fn udp_answers_each_datagram() {
    let server = serve_udp("127.0.0.1:0".parse().unwrap(), identity())
        .await
        .unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server.addr).await.unwrap();
    let mut buf = [0u8; 2048];
    for msg in ["hello", "again"] {
        client.send(msg.as_bytes()).await.unwrap();
        // Loopback does not lose datagrams; bounded all the same.
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v["request"], msg);
        assert_eq!(v["pod"], "tcp-echo-1");
        assert_eq!(v["namespace"], "ns");
    }
}
