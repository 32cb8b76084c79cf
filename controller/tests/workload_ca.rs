//! The workload certificate service against the real API server: ServiceAccount tokens made
//! by the API server (TokenRequest), reviewed by it (TokenReview), the CA kept in a real
//! Secret, a tonic client over TLS calling the service as Istio's agent does.

#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

mod support;

use std::sync::Arc;

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

/// A workload's token gets a certificate for its ServiceAccount's SPIFFE ID alone; tokens for
/// another audience, no token, a forged token and a CSR for another identity get none; the CA
/// stays the one in its Secret.
#[tokio::test]
async fn workloads_get_certificates_for_their_service_account() {
    let scope = Scope::new("wca", 39);
    let ns = scope.namespace.clone();
    apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: checkout, namespace: {ns}}}\n"
    ));
    let client = client().await;
    let ca = controller::workload_ca::load_or_create(client.clone(), &ns, "cluster.local")
        .await
        .unwrap();
    let again = controller::workload_ca::load_or_create(client.clone(), &ns, "cluster.local")
        .await
        .unwrap();
    assert_eq!(again.cert_pem(), ca.cert_pem(), "the CA is the Secret's");
    let bundle = ca.trust_bundle();

    // The service over TLS, as the controller serves it.
    let tls_ca = controller::ca::Ca::generate().unwrap();
    let serving = tls_ca
        .server(&["localhost".into()], &[[127, 0, 0, 1].into()])
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = controller::workload_ca::CertificateService::new(
        Arc::new(ca),
        controller::workload_ca::ApiServerReviewer(client.clone()),
        controller::workload_ca::DEFAULT_AUDIENCE,
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&serving.cert_pem, &serving.key_pem),
            ))
            .unwrap()
            .add_service(service.server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel =
        tonic::transport::Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&tls_ca.cert_pem))
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
