//! The workload certificate service: workloads send a CSR with their ServiceAccount token, the
//! API server says whose token it is (TokenReview, bound to our audience), and the workload CA
//! signs that identity alone (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`). The service is
//! Istio's (`istio.v1.auth.IstioCertificateService/CreateCertificate`, audience `istio-ca`), so
//! Istio's agents can call it, given our trust bundle (ConfigMap `sluice-ca-root-cert`, not
//! Istio's `istio-ca-root-cert`, so the two can share a cluster). The CA is kept in a Secret of the controller's namespace, made on first
//! start unless the user provides one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sluice_identity::{SignError, SpiffeId, WorkloadCa};
use sluice_proto::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use sluice_proto::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// The Secret that keeps the workload CA (`tls.crt`, `tls.key` and, for an intermediate,
/// `ca.crt`, as cert-manager writes a CA).
pub const WORKLOAD_CA_SECRET: &str = "sluice-workload-ca";
/// The audience workload tokens must be bound to (Istio's default, so its agents' projected
/// tokens work as they are).
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

/// The workload CA of the Secret, or a new root stored there.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    trust_domain: &str,
) -> anyhow::Result<WorkloadCa> {
    let stored = crate::ca::load_or_create_secret(
        client,
        namespace,
        WORKLOAD_CA_SECRET,
        &["tls.crt", "tls.key"],
        || {
            let ca = WorkloadCa::generate(trust_domain)?;
            info!(secret = %format!("{namespace}/{WORKLOAD_CA_SECRET}"), "no workload CA stored: made a root");
            Ok(vec![
                ("tls.crt".to_string(), ca.cert_pem().to_string()),
                ("tls.key".to_string(), ca.key_pem()),
            ])
        },
    )
    .await?;
    let field = |k: &str| stored.get(k).map(String::as_str);
    WorkloadCa::from_pem(
        trust_domain,
        field("tls.crt").unwrap_or_default(),
        field("tls.key").unwrap_or_default(),
        field("ca.crt"),
    )
    .map_err(|e| anyhow::anyhow!("Secret {namespace}/{WORKLOAD_CA_SECRET}: {e}"))
}

/// The ConfigMap in every namespace that holds the roots workloads trust (`root-cert.pem`, the
/// key Istio's agents read).
pub const TRUST_BUNDLE_CONFIGMAP: &str = "sluice-ca-root-cert";
pub const TRUST_BUNDLE_KEY: &str = "root-cert.pem";
const FIELD_MANAGER: &str = "sluice-workload-ca";

/// Applies `TRUST_BUNDLE_CONFIGMAP` with `bundle` in every namespace, and in new ones as they
/// appear, for as long as the task runs (server-side apply; every replica applies the same
/// content). A ConfigMap edited or deleted by hand is restored on the watch's next re-list,
/// not at once.
pub fn publish_trust_bundle(client: kube::Client, bundle: String) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{Patch, PatchParams};
    use kube::runtime::{watcher, WatchStreamExt};
    tokio::spawn(async move {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut events = watcher(namespaces, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = events.next().await {
            let ns = match ev {
                Ok(ns) => ns,
                Err(e) => {
                    warn!("watching namespaces for the trust bundle: {e}");
                    continue;
                }
            };
            let Some(name) = ns.metadata.name else {
                continue;
            };
            if ns.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": TRUST_BUNDLE_CONFIGMAP,
                    "namespace": name,
                    "labels": {"app.kubernetes.io/managed-by": "sluice"},
                },
                "data": {TRUST_BUNDLE_KEY: bundle},
            });
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
            if let Err(e) = api
                .patch(
                    TRUST_BUNDLE_CONFIGMAP,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                warn!(namespace = %name, "publishing the trust bundle: {e}");
            }
        }
    })
}

/// Serves the certificate service on `opts.addr` with the Secret's CA (made when missing) and
/// publishes its trust bundle; the address it listens on. Workloads have no certificate yet:
/// TLS without client authentication, the token in each request authenticates. The serving
/// certificate (for `dns`) is the workload CA's, so the trust bundle alone verifies it.
pub async fn serve(
    client: kube::Client,
    namespace: &str,
    opts: &crate::WorkloadCaOptions,
    dns: &[String],
) -> anyhow::Result<std::net::SocketAddr> {
    let ca = load_or_create(client.clone(), namespace, &opts.trust_domain).await?;
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on workload CA address {}: {e}", opts.addr))?;
    let addr = listener.local_addr()?;
    let (cert, key) = ca
        .serving(dns)
        .map_err(|e| anyhow::anyhow!("the certificate service's serving certificate: {e}"))?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&cert, &key));
    publish_trust_bundle(client.clone(), ca.trust_bundle());
    let service = CertificateService::new(Arc::new(ca), ApiServerReviewer(client), &opts.audience);
    let server = tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(service.server())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    crate::spawn_server("workload certificate service", server);
    info!(%addr, trust_domain = %opts.trust_domain, "workload certificate service listening");
    Ok(addr)
}

/// What the API server says a token is.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    /// The ServiceAccount (namespace, name) the token authenticates for `audience`.
    async fn review(&self, token: &str, audience: &str) -> Result<(String, String), Status>;
}

/// TokenReview against the API server.
pub struct ApiServerReviewer(pub kube::Client);

#[tonic::async_trait]
impl TokenReviewer for ApiServerReviewer {
    async fn review(&self, token: &str, audience: &str) -> Result<(String, String), Status> {
        let api: Api<TokenReview> = Api::all(self.0.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![audience.to_string()]),
            },
            ..TokenReview::default()
        };
        let done = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| match e {
                // Our own RBAC, not the caller's fault nor worth a retry.
                kube::Error::Api(a) if a.code == 403 => {
                    warn!("TokenReview refused: {}", a.message);
                    Status::internal(
                        "the controller may not review tokens (RBAC: create tokenreviews.authentication.k8s.io)",
                    )
                }
                other => {
                    warn!("TokenReview failed: {other}");
                    Status::unavailable("the API server could not review the token")
                }
            })?;
        let status = done.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Status::unauthenticated(format!(
                "the token does not authenticate{}",
                status.error.map(|e| format!(": {e}")).unwrap_or_default()
            )));
        }
        // The API server echoes the audiences the token is valid for; ours must be one.
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == audience)
        {
            return Err(Status::unauthenticated(format!(
                "the token is not bound to the audience {audience:?}"
            )));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        let sa = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                Status::permission_denied(format!("{user:?} is not a ServiceAccount"))
            })?;
        Ok((sa.0.to_string(), sa.1.to_string()))
    }
}

pub struct CertificateService<R> {
    ca: Arc<WorkloadCa>,
    reviewer: R,
    audience: String,
}

impl<R: TokenReviewer> CertificateService<R> {
    pub fn new(ca: Arc<WorkloadCa>, reviewer: R, audience: &str) -> Self {
        CertificateService {
            ca,
            reviewer,
            audience: audience.to_string(),
        }
    }

    pub fn server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl<R: TokenReviewer> IstioCertificateService for CertificateService<R> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("no ServiceAccount token (authorization: Bearer ...)")
            })?
            .to_string();
        let (namespace, service_account) = self.reviewer.review(&token, &self.audience).await?;
        let identity = SpiffeId::new(self.ca.trust_domain(), &namespace, &service_account)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let req = request.into_inner();
        let ttl = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let signed = self
            .ca
            .sign(&req.csr, &identity, ttl)
            .map_err(|e| match e {
                SignError::BadCsr(_) => Status::invalid_argument(e.to_string()),
                SignError::IdentityMismatch { .. } => Status::permission_denied(e.to_string()),
                other => Status::internal(other.to_string()),
            })?;
        info!(%identity, "signed a workload certificate");
        let mut cert_chain = signed.chain;
        cert_chain.extend(signed.roots);
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}
