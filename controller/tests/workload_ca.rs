//! The workload certificate service against the real API server: ServiceAccount tokens made
//! by the API server (TokenRequest), reviewed by it (TokenReview), the CA kept in a real
//! Secret, a tonic client over TLS calling the service as Istio's agent does.

#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

mod support;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::Api;
use sluice_proto::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use sluice_proto::istio_ca::IstioCertificateRequest;
use support::*;

async fn token(client: &kube::Client, ns: &str, sa: &str, audience: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_string()],
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    api.create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

fn csr(uri: Option<&str>) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    if let Some(u) = uri {
        params.subject_alt_names = vec![rcgen::SanType::URI(u.to_string().try_into().unwrap())];
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// The URI SANs of a PEM certificate.
fn uris(pem: &str) -> Vec<String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// The controller with `--workload-ca-addr`: a workload's token gets a certificate for its
/// ServiceAccount's SPIFFE ID alone; tokens for another audience, no token, a forged token and
/// a CSR for another identity get none; the CA is the one in its Secret, and its trust bundle
/// is published in every namespace.
#[tokio::test]
async fn workloads_get_certificates_for_their_service_account() {
    let scope = Scope::new("wca", 39);
    let ns = scope.namespace.clone();
    apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: checkout, namespace: {ns}}}\n"
    ));
    let client = client().await;
    // The controller binary serves the certificate service; its CA is the Secret's.
    let port = free_port();
    let proc = controller(
        &scope,
        free_port(),
        &["--workload-ca-addr", &format!("127.0.0.1:{port}")],
    );
    proc.wait_log("workload certificate service listening")
        .await;
    let ca = controller::workload_ca::load_or_create(client.clone(), &ns, "cluster.local")
        .await
        .unwrap();
    let bundle = ca.trust_bundle();

    // The trust bundle reaches every namespace, one made after the controller started too.
    let later = format!("{ns}-later");
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {later}}}\n"
    ));
    for namespace in [&ns, &later] {
        let got = wait_for(30, "the trust bundle ConfigMap", || async {
            get(
                "ConfigMap",
                Some(namespace.as_str()),
                controller::workload_ca::TRUST_BUNDLE_CONFIGMAP,
            )
            .await
        })
        .await;
        assert_eq!(got["data"]["root-cert.pem"], bundle.as_str(), "{namespace}");
    }

    // TLS verified with the trust bundle alone: the serving certificate is the workload CA's.
    let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&bundle))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ca_client = IstioCertificateServiceClient::new(channel);
    let call = |csr: String, token: Option<String>| {
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: 3600,
            metadata: None,
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let me = format!("spiffe://cluster.local/ns/{ns}/sa/checkout");

    let good = token(&client, &ns, "checkout", "istio-ca").await;
    let chain = ca_client
        .create_certificate(call(csr(Some(&me)), Some(good.clone())))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 2, "the leaf, then the root");
    assert_eq!(uris(&chain[0]), vec![me.clone()]);
    assert_eq!(chain[1], bundle);
    // No SAN asked for: the proven identity anyway.
    let chain = ca_client
        .create_certificate(call(csr(None), Some(good.clone())))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(uris(&chain[0]), vec![me.clone()]);

    // Another ServiceAccount's identity asked for with this token.
    let other = format!("spiffe://cluster.local/ns/{ns}/sa/admin");
    let err = ca_client
        .create_certificate(call(csr(Some(&other)), Some(good)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // A token for another audience, no token, a token the API server did not make.
    let wrong_audience = token(&client, &ns, "checkout", "someone-else").await;
    for (what, t) in [
        ("another audience", Some(wrong_audience)),
        ("no token", None),
        (
            "a forged token",
            Some("eyJhbGciOiJub25lIn0.e30.".to_string()),
        ),
    ] {
        let err = ca_client
            .create_certificate(call(csr(Some(&me)), t))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what}: {err}");
    }
}
