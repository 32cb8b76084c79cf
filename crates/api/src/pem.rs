//! PEM helpers shared by translation (which checks certificates) and the engine (which serves
//! them).

use std::sync::Arc;

/// A certificate chain and its private key, from PEM.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("tls.key is not PEM: {e}"))?
        .ok_or("tls.key holds no private key")?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))
}
