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

/// Builds the rustls config of one HTTPS port, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(certs: Vec<(Option<String>, Arc<CertifiedKey>)>) -> Arc<rustls::ServerConfig> {
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
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(r));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}
