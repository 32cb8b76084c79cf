//! TLS termination: one rustls server config per HTTPS port, choosing the certificate by SNI
//! among the listeners that share the port.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::wildcard_matches;

/// Certificates of one port, selected by SNI with the listener hostname rules: exact names,
/// then wildcards from the longest suffix, then the listener without a hostname.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            if let Some(c) = self.exact.get(&sni) {
                return Some(c.clone());
            }
            if let Some((_, c)) = self
                .wildcard
                .iter()
                .find(|(s, _)| wildcard_matches(s, &sni))
            {
                return Some(c.clone());
            }
        }
        // No SNI, or a name no listener claims: the catch-all listener's certificate, else the
        // first one, so clients that do not send SNI still get a handshake.
        self.default.clone()
    }
}

/// Client certificate validation of an HTTPS port (GEP-91).
pub use sluice_config::ClientValidation;

/// AllowInsecureFallback: offers client authentication and verifies what is presented, but lets
/// the handshake continue whatever the outcome, as the mode asks. Authorization is then the
/// backend's job.
#[derive(Debug)]
struct InsecureFallback(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if let Err(e) = self.0.verify_client_cert(end_entity, intermediates, now) {
            tracing::debug!(error = %e, "client certificate not valid; accepted by AllowInsecureFallback");
        }
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    // Only the chain may fail: a client must still prove it holds the key of the certificate it
    // presents, or it could replay another client's certificate.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn client_verifier(
    v: &ClientValidation,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(
        v.roots
            .iter()
            .map(|der| rustls_pki_types::CertificateDer::from(der.clone())),
    );
    if added == 0 {
        return None;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .ok()?;
    Some(if v.insecure_fallback {
        Arc::new(InsecureFallback(verifier))
    } else {
        verifier
    })
}

/// Builds the rustls config of one HTTPS port, offering HTTP/2 and HTTP/1.1 by ALPN (`http`),
/// or of a TLS port whose connections the gateway terminates and forwards (no ALPN).
pub fn server_config(
    certs: Vec<(Option<String>, Arc<CertifiedKey>)>,
    client_validation: Option<&ClientValidation>,
    http: bool,
) -> Arc<rustls::ServerConfig> {
    let mut r = SniResolver::default();
    for (host, cert) in &certs {
        match host.as_deref() {
            None => r.default = Some(cert.clone()),
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => r.wildcard.push((suffix.to_string(), cert.clone())),
                None => {
                    r.exact.insert(h.to_string(), cert.clone());
                }
            },
        }
    }
    r.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    if r.default.is_none() {
        r.default = certs.first().map(|(_, c)| c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match client_validation.map(|v| client_verifier(v, &provider)) {
        Some(Some(verifier)) => builder.with_client_cert_verifier(verifier),
        Some(None) => {
            // Translation only passes usable roots; should that ever fail, fail closed: a port
            // that must verify clients and cannot serves no handshake at all.
            tracing::error!(
                "client CA certificates unusable; refusing every TLS handshake on this port"
            );
            r = SniResolver::default();
            builder.with_no_client_auth()
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(r));
    if http {
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Arc::new(cfg)
}

/// The server name a TLS connection asked for, lowercased, kept with the connection's digest
/// where its requests (HTTP/1 and HTTP/2 alike) can read it without a lookup.
pub struct Sni(pub Box<str>);

/// Keeps the SNI of a handshake in the connection's TLS digest.
pub(crate) struct KeepSni;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for KeepSni {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let name = tls.server_name()?;
        Some(Arc::new(Sni(name.to_ascii_lowercase().into_boxed_str())))
    }
}
