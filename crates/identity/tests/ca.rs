//! The workload CA against real certificates: CSRs made with rcgen as a workload makes them,
//! chains verified by rustls' WebPKI client verifier (what a server's mTLS checks), fields read
//! back with x509-parser.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, UnixTime};
use sluice_identity::{renew_at, SignError, SpiffeId, WorkloadCa, DEFAULT_TTL, MAX_TTL};

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

/// A workload's CSR: a fresh key, the given SANs.
fn csr(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

fn der(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

/// Verifies `chain` (leaf first) as a client certificate against `bundle`'s roots.
fn verify(bundle: &str, chain: &[String]) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut bundle.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let intermediates: Vec<_> = chain[1..].iter().map(|c| der(c)).collect();
    verifier
        .verify_client_cert(&der(&chain[0]), &intermediates, UnixTime::now())
        .map(|_| ())
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn signs_the_proven_identity_for_24_hours() {
    let ca = WorkloadCa::generate("cluster.local").unwrap();
    let me = id("shop", "checkout");
    // With the identity as its only SAN, and with none: both signed for the proven identity.
    for sans in [vec![uri(&me.to_string())], vec![]] {
        let signed = ca.sign(&csr(sans), &me, None).unwrap();
        assert_eq!(
            signed.chain.len(),
            1,
            "a root CA is not repeated in the chain"
        );
        assert_eq!(signed.roots, vec![ca.trust_bundle()]);
        verify(&ca.trust_bundle(), &signed.chain).unwrap();

        let leaf = der(&signed.chain[0]);
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert_eq!(names, vec![format!("URI({me})")]);
        assert!(!cert.is_ca());
        let bc = cert
            .basic_constraints()
            .unwrap()
            .expect("basicConstraints present");
        assert!(!bc.value.ca);
        assert_eq!(cert.subject().iter().count(), 0, "an SVID has no subject");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth, "{eku:?}");
        // 24 hours from now, started five minutes back for clocks behind ours.
        let v = cert.validity();
        let life = v.not_after.timestamp() - v.not_before.timestamp();
        assert_eq!(life, DEFAULT_TTL.as_secs() as i64 + 300);
        assert_eq!(v.not_after.timestamp(), secs(signed.not_after));
        let now = secs(SystemTime::now());
        assert!((v.not_after.timestamp() - now - DEFAULT_TTL.as_secs() as i64).abs() < 60);
    }
}

#[test]
fn signs_nothing_but_the_proven_identity() {
    let ca = WorkloadCa::generate("cluster.local").unwrap();
    let me = id("shop", "checkout");
    for sans in [
        vec![uri("spiffe://cluster.local/ns/shop/sa/admin")],
        vec![
            uri(&me.to_string()),
            uri("spiffe://cluster.local/ns/kube-system/sa/default"),
        ],
        vec![SanType::DnsName("checkout.shop.svc".try_into().unwrap())],
        vec![uri("spiffe://other.domain/ns/shop/sa/checkout")],
    ] {
        let err = ca.sign(&csr(sans.clone()), &me, None).unwrap_err();
        assert!(
            matches!(&err, SignError::IdentityMismatch { proven, .. } if *proven == me.to_string()),
            "{sans:?}: {err}"
        );
    }
}

#[test]
fn refuses_csrs_that_do_not_verify() {
    let ca = WorkloadCa::generate("cluster.local").unwrap();
    let me = id("shop", "checkout");
    let good = csr(vec![uri(&me.to_string())]);
    // One byte of the signature changed (the DER's last byte is the signature's).
    let der = {
        let block: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut bytes = B64.decode(block).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        bytes
    };
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        B64.encode(&der)
    );
    let err = ca.sign(&tampered, &me, None).unwrap_err();
    assert!(matches!(err, SignError::BadCsr(_)), "{err}");
    let err = ca.sign("not a CSR", &me, None).unwrap_err();
    assert!(matches!(err, SignError::BadCsr(_)), "{err}");
}

#[test]
fn lifetimes_are_bounded() {
    let ca = WorkloadCa::generate("cluster.local").unwrap();
    let me = id("shop", "checkout");
    let life = |ttl| {
        let s = ca.sign(&csr(vec![]), &me, Some(ttl)).unwrap();
        s.not_after.duration_since(s.not_before).unwrap()
    };
    assert_eq!(
        life(Duration::from_secs(3600)),
        Duration::from_secs(3600 + 300)
    );
    assert_eq!(
        life(Duration::from_secs(365 * 86400)),
        MAX_TTL + Duration::from_secs(300)
    );
}

/// A root and an intermediate signed by it, PEM: (root cert, intermediate cert, its key).
fn root_and_intermediate() -> (String, String, String) {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "corp root");
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, root_key);
    let key = KeyPair::generate().unwrap();
    let mut inter = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    inter
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mesh intermediate");
    inter.use_authority_key_identifier_extension = true;
    let cert = inter.signed_by(&key, &issuer).unwrap();
    (root_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn a_provided_intermediate_ca_signs_with_its_chain() {
    let (root, inter, key) = root_and_intermediate();
    let ca = WorkloadCa::from_pem("cluster.local", &inter, &key, Some(&root)).unwrap();
    let signed = ca.sign(&csr(vec![]), &id("a", "b"), None).unwrap();
    assert_eq!(signed.chain.len(), 2, "leaf, then the intermediate");
    assert_eq!(signed.chain[1], ca.cert_pem());
    assert_eq!(ca.trust_bundle(), root);
    verify(&root, &signed.chain).unwrap();
    // Without the intermediate the root cannot vouch for the leaf.
    assert!(verify(&root, &signed.chain[..1]).is_err());

    // An intermediate without its roots, a leaf posing as a CA, a key that does not parse.
    let err = WorkloadCa::from_pem("cluster.local", &inter, &key, None).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
    let leaf = ca.sign(&csr(vec![]), &id("a", "b"), None).unwrap().chain[0].clone();
    let err = WorkloadCa::from_pem("cluster.local", &leaf, &key, Some(&root)).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
    let err = WorkloadCa::from_pem("cluster.local", &inter, "garbage", Some(&root)).unwrap_err();
    assert!(err.to_string().contains("key"), "{err}");
}

#[test]
fn a_stored_ca_signs_as_before_and_rotation_trusts_both_roots() {
    let old = WorkloadCa::generate("cluster.local").unwrap();
    let again =
        WorkloadCa::from_pem("cluster.local", old.cert_pem(), &old.key_pem(), None).unwrap();
    let by_old = again.sign(&csr(vec![]), &id("a", "b"), None).unwrap();
    verify(&old.trust_bundle(), &by_old.chain).unwrap();

    // A new root, trusting the old one during the overlap: leaves of either verify.
    let mut new = WorkloadCa::generate("cluster.local").unwrap();
    assert!(verify(&new.trust_bundle(), &by_old.chain).is_err());
    new.also_trust(&old.trust_bundle());
    new.also_trust(&old.trust_bundle());
    assert_eq!(new.trust_bundle().matches("BEGIN CERTIFICATE").count(), 2);
    let by_new = new.sign(&csr(vec![]), &id("a", "b"), None).unwrap();
    verify(&new.trust_bundle(), &by_old.chain).unwrap();
    verify(&new.trust_bundle(), &by_new.chain).unwrap();
    assert_eq!(by_new.roots.len(), 2);
}

#[test]
fn renewal_at_half_life_with_jitter() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let end = start + Duration::from_secs(86_400);
    assert_eq!(
        renew_at(start, end, 0.0),
        start + Duration::from_secs(43_200)
    );
    assert_eq!(
        renew_at(start, end, 1.0),
        start + Duration::from_secs(34_560)
    );
    assert_eq!(renew_at(start, end, 7.0), renew_at(start, end, 1.0));
}
