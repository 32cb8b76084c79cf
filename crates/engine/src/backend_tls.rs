//! TLS the engine makes itself to backends. pingora verifies a backend's certificate against
//! the SNI name only, so for BackendTLSPolicies with subjectAltNames the engine makes the TLS
//! connection (a custom L4 connector): the policy hostname is the SNI, and the certificate must
//! chain to the policy's CAs and carry one of the listed SANs. Layer-4 forwarding (TLSRoutes on
//! Terminate listeners) re-encrypts to the backend with the same connector, checking the SANs
//! when the policy lists them and the hostname otherwise.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Accepts a certificate that chains to `roots` and names one of the SANs, whatever the SNI.
#[derive(Debug)]
pub struct SanVerifier {
    roots: Arc<rustls::RootCertStore>,
    dns: Vec<ServerName<'static>>,
    uris: Vec<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl SanVerifier {
    fn has_uri(&self, end_entity: &CertificateDer<'_>) -> bool {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let Ok((_, cert)) = X509Certificate::from_der(end_entity.as_ref()) else {
            return false;
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        san.value.general_names.iter().any(|n| match n {
            GeneralName::URI(u) => self.uris.iter().any(|want| want == u),
            _ => false,
        })
    }
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let dns_ok = self
            .dns
            .iter()
            .any(|n| rustls::client::verify_server_name(&cert, n).is_ok());
        if dns_ok || self.has_uri(end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate chain and its key, presented to backends that ask for one.
pub struct ClientAuth {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientAuth {
    /// From PEM: the chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 key. `None` when either
    /// does not parse.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Option<Self> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert[..])
            .collect::<Result<_, _>>()
            .ok()?;
        let key = rustls_pemfile::private_key(&mut &key[..]).ok().flatten()?;
        (!chain.is_empty()).then_some(ClientAuth { chain, key })
    }
}

/// Connects TCP, then TLS with our own verifier, and hands pingora the result as its stream.
pub struct TlsOrigin {
    config: Arc<rustls::ClientConfig>,
    sni: ServerName<'static>,
    /// The ALPN protocol offered; the backend must choose it or none.
    alpn: Option<&'static [u8]>,
}

impl fmt::Debug for TlsOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsOrigin({:?})", self.sni)
    }
}

/// ALPN for HTTP/1.1 connections (pingora offers the same to TLS backends).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// ALPN for HTTP/2 connections (gRPC and h2 backends).
pub const ALPN_H2: &[u8] = b"h2";

impl TlsOrigin {
    /// `sans`: the DNS and URI subjectAltNames one of which the certificate must carry; without
    /// them it must be valid for `hostname`. `client`: the certificate presented when the
    /// backend asks for one. `None` when `hostname` is not a valid TLS server name or the
    /// client key does not fit its certificate.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        hostname: &str,
        sans: Option<(&[String], &[String])>,
        alpn: Option<&'static [u8]>,
        client: Option<&ClientAuth>,
    ) -> Option<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(roots);
        let store = Arc::new(store);
        let verifier: Arc<dyn ServerCertVerifier> = match sans {
            Some((dns, uris)) => Arc::new(SanVerifier {
                roots: store,
                dns: dns
                    .iter()
                    .filter_map(|n| ServerName::try_from(n.clone()).ok())
                    .collect(),
                uris: uris.to_vec(),
                provider: provider.clone(),
            }),
            None => {
                rustls::client::WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .ok()?
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(c) => builder
                .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
                .ok()?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Some(TlsOrigin {
            config: Arc::new(config),
            sni: ServerName::try_from(hostname.to_string()).ok()?,
            alpn,
        })
    }

    /// The TLS handshake on a connected socket.
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.sni.clone(), tcp)
            .await?;
        if let (Some(want), Some(got)) = (self.alpn, tls.get_ref().1.alpn_protocol()) {
            if want != got {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the backend chose ALPN {:?}, not {:?}",
                        String::from_utf8_lossy(got),
                        String::from_utf8_lossy(want)
                    ),
                ));
            }
        }
        Ok(tls)
    }
}

#[async_trait]
impl pingora::connectors::L4Connect for TlsOrigin {
    async fn connect(&self, addr: &PSocketAddr) -> pingora::Result<Stream> {
        let inet = *addr.as_inet().ok_or_else(|| {
            Error::explain(ErrorType::ConnectError, "backend TLS needs an IP address")
        })?;
        let tcp = tokio::net::TcpStream::connect(inet).await.map_err(|e| {
            Error::because(ErrorType::ConnectError, format!("connecting to {inet}"), e)
        })?;
        let _ = tcp.set_nodelay(true);
        let tls = self.handshake(tcp).await.map_err(|e| {
            Error::because(ErrorType::TLSHandshakeFailure, format!("TLS to {inet}"), e)
        })?;
        Ok(Stream::from(VirtualSocketStream::new(Box::new(TlsSocket(
            tls,
        )))))
    }
}

#[derive(Debug)]
struct TlsSocket(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> std::io::Result<()> {
        // TCP_NODELAY is set at connect; keep-alive probes are not needed on a pooled backend.
        Ok(())
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a leaf it signs with the given SANs, as DER.
    fn chain(sans: Vec<rcgen::SanType>) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca_cert.der().clone(), cert.der().clone())
    }

    fn verifier(ca: CertificateDer<'static>, dns: &[&str], uris: &[&str]) -> SanVerifier {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        SanVerifier {
            roots: Arc::new(roots),
            dns: dns
                .iter()
                .map(|d| ServerName::try_from(d.to_string()).unwrap())
                .collect(),
            uris: uris.iter().map(|u| u.to_string()).collect(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn check(v: &SanVerifier, leaf: &CertificateDer<'_>) -> bool {
        let sni = ServerName::try_from("sni.example.com").unwrap();
        v.verify_server_cert(leaf, &[], &sni, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn hostname_and_uri_sans() {
        let uri = "spiffe://cluster.local/ns/app/sa/backend";
        let (ca, leaf) = chain(vec![
            rcgen::SanType::DnsName("backend.example.com".try_into().unwrap()),
            rcgen::SanType::URI(uri.try_into().unwrap()),
        ]);
        // The SNI name is not in the certificate; the SANs decide.
        assert!(check(
            &verifier(ca.clone(), &["backend.example.com"], &[]),
            &leaf
        ));
        assert!(check(&verifier(ca.clone(), &[], &[uri]), &leaf));
        assert!(!check(
            &verifier(ca.clone(), &["other.example.com"], &["spiffe://other"]),
            &leaf
        ));
        // A certificate from another CA fails even with a matching SAN.
        let (other_ca, _) = chain(vec![]);
        assert!(!check(
            &verifier(other_ca, &["backend.example.com"], &[]),
            &leaf
        ));
    }
}
