//! The controller's certificate authority for the discovery stream: one CA per installation,
//! kept in a Secret so every replica and every restart uses the same one. It issues the
//! controller's serving certificate and one client certificate per Gateway, whose identity
//! (a URI SAN `sluice://gateway/<namespace>/<name>`) says which Gateway's configuration its
//! holder may receive.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tracing::info;

use sluice_api::resources::NsName;

pub const CA_SECRET: &str = "sluice-ca";
pub const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
/// How long issued certificates are valid, in days (the CA: ten years).
const LEAF_DAYS: i64 = 365;
const CA_DAYS: i64 = 3650;
/// A leaf certificate is issued again when less than this remains of it.
const RENEW_BEFORE_DAYS: u64 = 30;

/// The identity of a Gateway's client certificate.
pub fn gateway_identity(gateway: &NsName) -> String {
    format!("sluice://gateway/{}/{}", gateway.namespace, gateway.name)
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug, PartialEq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    let t = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(24 * days))
        .unwrap_or(k8s_openapi::jiff::Timestamp::MAX);
    let d = t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    rcgen::date_time_ymd(
        i32::from(d.year()),
        u8::try_from(d.month()).unwrap_or(1),
        u8::try_from(d.day()).unwrap_or(1),
    )
}

impl Ca {
    pub fn generate() -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluice discovery CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = days_from_now(CA_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
        })
    }

    /// The Secret's CA, or a new one stored there.
    pub async fn load_or_create(client: kube::Client, namespace: &str) -> anyhow::Result<Ca> {
        let stored = load_or_create_secret(
            client,
            namespace,
            CA_SECRET,
            &[CA_CERT_KEY, CA_KEY_KEY],
            || {
                let ca = Ca::generate()?;
                info!(secret = %format!("{namespace}/{CA_SECRET}"), "no discovery CA stored: made one");
                Ok(vec![
                    (CA_CERT_KEY.to_string(), ca.cert_pem.clone()),
                    (CA_KEY_KEY.to_string(), ca.issuer.key().serialize_pem()),
                ])
            },
        )
        .await?;
        Ca::from_pem(&stored[CA_CERT_KEY], &stored[CA_KEY_KEY])
            .map_err(|e| anyhow::anyhow!("Secret {namespace}/{CA_SECRET}: {e}"))
    }

    /// The controller's serving certificate, for its DNS names and addresses.
    pub fn server(&self, dns: &[String], ips: &[IpAddr]) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(dns.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A Gateway's client certificate.
    pub fn gateway_client(&self, gateway: &NsName) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(gateway_identity(gateway).try_into()?)];
        params
            .distinguished_name
            .push(DnType::CommonName, gateway.to_string());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> anyhow::Result<Issued> {
        params.not_after = days_from_now(LEAF_DAYS);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The text fields of Secret `namespace/name`, which must hold `required`; when it does not
/// exist, `make`'s fields are stored there first. Of two replicas creating it at once, the one
/// whose create fails reads the other's.
pub async fn load_or_create_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    required: &[&str],
    make: impl Fn() -> anyhow::Result<Vec<(String, String)>>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(name).await? {
            let fields: BTreeMap<String, String> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            if let Some(missing) = required.iter().find(|k| !fields.contains_key(**k)) {
                anyhow::bail!("Secret {namespace}/{name}: no {missing}");
            }
            return Ok(fields);
        }
        let fields = make()?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            data: Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(fields.into_iter().collect()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("Secret {namespace}/{name}: could not read or create it")
}

/// Whether a certificate (PEM) should be issued again: it expires within `RENEW_BEFORE_DAYS`,
/// has expired, or does not parse.
pub fn renewal_due(cert_pem: &str) -> bool {
    let Some(Ok(der)) = rustls_pemfile::certs(&mut cert_pem.as_bytes()).next() else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return true;
    };
    cert.validity()
        .time_to_expiration()
        .is_none_or(|left| left.whole_days() < RENEW_BEFORE_DAYS as i64)
}

/// The Gateway a client certificate (DER) was issued to, from its URI SAN.
pub fn gateway_of(cert_der: &[u8]) -> Option<NsName> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            let rest = uri.strip_prefix("sluice://gateway/")?;
            let (ns, name) = rest.split_once('/')?;
            Some(NsName::new(ns, name))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_renewed_a_month_before_they_expire() {
        let ca = Ca::generate().unwrap();
        let fresh = ca.gateway_client(&NsName::new("ns", "web")).unwrap();
        assert!(!renewal_due(&fresh.cert_pem));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_before = days_from_now(-300);
        params.not_after = days_from_now(20);
        let key = KeyPair::generate().unwrap();
        let soon = params.signed_by(&key, &ca.issuer).unwrap();
        assert!(renewal_due(&soon.pem()));
        assert!(renewal_due("not a certificate"));
    }

    #[test]
    fn a_gateway_certificate_names_its_gateway() {
        let ca = Ca::generate().unwrap();
        let gw = NsName::new("edge", "web");
        let issued = ca.gateway_client(&gw).unwrap();
        let der = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(gateway_of(&der), Some(gw));
        // The CA reloads from its PEM and issues certificates the same CA verifies.
        let again = Ca::from_pem(&ca.cert_pem, &ca.issuer.key().serialize_pem()).unwrap();
        assert!(again.server(&["localhost".into()], &[]).is_ok());
    }
}
