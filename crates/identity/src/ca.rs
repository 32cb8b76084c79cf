//! The workload CA: a root made here (or a CA the user provides, as cert-manager writes it) and
//! the signing of workload CSRs for a proven identity.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::SpiffeId;

/// How long a workload certificate lives unless asked for less (as Istio's default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest a workload may ask for; longer requests get this.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A new root's lifetime: ten years.
const ROOT_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Leaves start this long before they are signed, for clocks a little behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the CSR is refused (it must parse, its signature verify, and it may carry only the subjectAltName, key usage, extended key usage and basic constraints extensions): {0}")]
    BadCsr(String),
    #[error("the CSR asks for {requested}, but the caller proved {proven}: only that identity is signed")]
    IdentityMismatch { requested: String, proven: String },
    #[error("the CA certificate has expired")]
    CaExpired,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the CA: {0}")]
    Ca(String),
}

/// A signed workload certificate: the chain leaf first (with the CA certificate when it is an
/// intermediate) and the roots to trust, PEM each, as Istio's certificate service answers.
#[derive(Clone, Debug)]
pub struct SignedChain {
    pub chain: Vec<String>,
    pub roots: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for WorkloadCa {
    /// The trust domain and the certificate's facts; never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCa")
            .field("trust_domain", &self.trust_domain)
            .field("self_signed", &self.self_signed)
            .field("ca_not_after", &self.ca_not_after)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

pub struct WorkloadCa {
    trust_domain: String,
    /// The signing certificate, PEM.
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate's end of validity: no leaf outlives it.
    ca_not_after: SystemTime,
    /// Whether the signing certificate is itself a root (then it is not repeated in chains).
    self_signed: bool,
    /// The roots workloads trust, PEM: the CA itself, or the provided bundle; during a root
    /// rotation, the old and the new.
    roots: Vec<String>,
}

fn pem_blocks(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line.trim_end());
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The end of validity and whether subject and issuer are the same, of a PEM certificate.
fn facts(cert_pem: &str) -> Result<(SystemTime, bool), SignError> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .ok_or_else(|| SignError::Ca("no certificate in the PEM".into()))?
        .map_err(|e| SignError::Ca(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| SignError::Ca(e.to_string()))?;
    if !cert.is_ca() {
        return Err(SignError::Ca(
            "the certificate is not a CA (basicConstraints cA is not set)".into(),
        ));
    }
    let secs = cert.validity().not_after.timestamp();
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((end, cert.subject() == cert.issuer()))
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

impl WorkloadCa {
    /// A new self-signed root for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Self, SignError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| SignError::Ca(e.to_string()))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluice workload CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + ROOT_TTL);
        let key = KeyPair::generate().map_err(|e| SignError::Ca(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| SignError::Ca(e.to_string()))?;
        let cert_pem = cert.pem();
        let (ca_not_after, _) = facts(&cert_pem)?;
        Ok(WorkloadCa {
            trust_domain: trust_domain.to_string(),
            roots: vec![cert_pem.clone()],
            cert_pem,
            issuer: Issuer::new(params, key),
            ca_not_after,
            self_signed: true,
        })
    }

    /// A CA from PEM: its certificate and key (`tls.crt`, `tls.key`) and, when the certificate
    /// is an intermediate, the roots (`ca.crt`; for a root, `None` means itself).
    pub fn from_pem(
        trust_domain: &str,
        cert_pem: &str,
        key_pem: &str,
        roots_pem: Option<&str>,
    ) -> Result<Self, SignError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| SignError::Ca(format!("key: {e}")))?;
        let cert_pem = pem_blocks(cert_pem)
            .into_iter()
            .next()
            .ok_or_else(|| SignError::Ca("no certificate in the PEM".into()))?;
        let (ca_not_after, self_signed) = facts(&cert_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| SignError::Ca(format!("certificate: {e}")))?;
        let roots = match roots_pem {
            Some(r) => pem_blocks(r),
            None if self_signed => vec![cert_pem.clone()],
            None => {
                return Err(SignError::Ca(
                    "an intermediate CA needs its roots (ca.crt)".into(),
                ))
            }
        };
        if roots.is_empty() {
            return Err(SignError::Ca("the root bundle holds no certificate".into()));
        }
        Ok(WorkloadCa {
            trust_domain: trust_domain.to_string(),
            cert_pem,
            issuer,
            ca_not_after,
            self_signed,
            roots,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The signing certificate and key, PEM, to keep (in a Secret).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The roots workloads trust, one PEM bundle (the trust bundle ConfigMap's content).
    pub fn trust_bundle(&self) -> String {
        self.roots.concat()
    }

    /// Trusts `old` roots beside the current ones, for a rotation's overlap period.
    pub fn also_trust(&mut self, old: &str) {
        for root in pem_blocks(old) {
            if !self.roots.contains(&root) {
                self.roots.push(root);
            }
        }
    }

    /// A serving certificate and its key (PEM) for the CA's own services (the certificate
    /// service), valid for `dns`, so that workloads verify it with the trust bundle alone: the
    /// chain leaf first, with the CA certificate when it is an intermediate.
    pub fn serving(&self, dns: &[String]) -> Result<(String, String), SignError> {
        let mut params =
            CertificateParams::new(dns.to_vec()).map_err(|e| SignError::Sign(e.to_string()))?;
        let now = SystemTime::now();
        if self.ca_not_after <= now {
            return Err(SignError::CaExpired);
        }
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = dns.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset((now + MAX_TTL * 52).min(self.ca_not_after));
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| SignError::Sign(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| SignError::Sign(e.to_string()))?;
        let mut chain = cert.pem();
        if !self.self_signed {
            chain.push_str(&self.cert_pem);
        }
        Ok((chain, key.serialize_pem()))
    }

    /// Signs `csr_pem` for `identity`, which the caller has proven. The CSR's own signature
    /// must verify; it may name no subjectAltName or exactly `identity` as a URI, anything else
    /// is refused. The leaf lives `ttl` (default 24 h, at most `MAX_TTL`, never past the CA).
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<SignedChain, SignError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| SignError::BadCsr(e.to_string()))?;
        let proven = identity.to_string();
        for san in &csr.params.subject_alt_names {
            let ok = matches!(san, SanType::URI(u) if u.as_str() == proven);
            if !ok {
                return Err(SignError::IdentityMismatch {
                    requested: format!("{san:?}"),
                    proven,
                });
            }
        }
        let now = SystemTime::now();
        let not_before = now - BACKDATE;
        let ttl = ttl.unwrap_or(DEFAULT_TTL).min(MAX_TTL);
        let not_after = (now + ttl).min(self.ca_not_after);
        if not_after <= now {
            return Err(SignError::CaExpired);
        }
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| SignError::Sign(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(
            proven
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| SignError::Sign(e.to_string()))?,
        )];
        // An X509-SVID: no subject, basicConstraints cA false, the SPIFFE ID its only name.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| SignError::Sign(e.to_string()))?;
        let mut chain = vec![leaf.pem()];
        if !self.self_signed {
            chain.push(self.cert_pem.clone());
        }
        // The certificate's own times, to the second, as the holder will read them.
        let secs = |t: SystemTime| {
            let s = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            SystemTime::UNIX_EPOCH + Duration::from_secs(s)
        };
        Ok(SignedChain {
            chain,
            roots: self.roots.clone(),
            not_before: secs(not_before),
            not_after: secs(not_after),
        })
    }
}

/// 16 random bytes (ring's system generator), top bit clear so the serial is positive.
fn random_serial() -> Result<[u8; 16], SignError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| SignError::Sign("no randomness for the serial number".into()))?;
    out[0] &= 0x7f;
    Ok(out)
}

/// When a certificate valid from `not_before` to `not_after` should be renewed: at half its
/// life, moved earlier by up to a tenth of the life by `jitter` (0.0 to 1.0; the caller draws
/// it), so that workloads started together do not renew together.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    let early = life.mul_f64(0.1 * jitter.clamp(0.0, 1.0));
    not_before + life / 2 - early
}
