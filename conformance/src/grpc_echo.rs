//! The gRPC echo backend: the conformance suite's `GrpcEcho` service (package
//! `gateway_api_conformance.echo_basic.grpcecho`), answering each call with what it saw: the
//! fully qualified method, the request metadata, the `:authority` and the Pod's identity. It
//! serves plaintext HTTP/2 (h2c), as upstream's echo server does on its HTTP port.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::echo::Identity;

#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("gateway_api_conformance.echo_basic.grpcecho");
}

use pb::grpc_echo_server::{GrpcEcho, GrpcEchoServer};
use pb::{Assertions, Context, EchoRequest, EchoResponse, Header};

/// The service's full name, as routes match it.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// The `:authority` of a request, carried from the HTTP layer to the handler.
#[derive(Clone)]
struct Authority(String);

struct Echo {
    identity: Identity,
}

impl Echo {
    fn answer(&self, method: &str, req: &Request<EchoRequest>) -> Response<EchoResponse> {
        let authority = req
            .extensions()
            .get::<Authority>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let mut headers: Vec<Header> = req
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| Header {
                key: k.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        // As grpc-go presents metadata: `:authority` among the headers.
        headers.push(Header {
            key: ":authority".into(),
            value: authority.clone(),
        });
        let id = &self.identity;
        Response::new(EchoResponse {
            assertions: Some(Assertions {
                fully_qualified_method: format!("/{SERVICE}/{method}"),
                headers,
                authority,
                context: Some(Context {
                    namespace: id.namespace.clone(),
                    ingress: id.ingress.clone(),
                    service_name: id.service.clone(),
                    pod: id.pod.clone(),
                }),
                tls_assertions: None,
            }),
            request: Some(EchoRequest {}),
        })
    }
}

#[tonic::async_trait]
impl GrpcEcho for Echo {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(self.answer("Echo", &req))
    }
    async fn echo_two(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(self.answer("EchoTwo", &req))
    }
    async fn echo_three(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        Ok(self.answer("EchoThree", &req))
    }
}

/// A running gRPC echo server.
pub struct GrpcEchoServerHandle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcEchoServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the gRPC echo service on `listen` (port 0: any free port) until dropped.
pub async fn serve(listen: SocketAddr, identity: Identity) -> anyhow::Result<GrpcEchoServerHandle> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // The handler sees only metadata: the authority is taken from the request here.
    let authority = tower::util::MapRequestLayer::new(|mut req: http::Request<_>| {
        let a = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(String::from)
            })
            .unwrap_or_default();
        req.extensions_mut().insert(Authority(a));
        req
    });
    let server = tonic::transport::Server::builder()
        .layer(authority)
        .add_service(GrpcEchoServer::new(Echo { identity }))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!("gRPC echo server stopped: {e}");
        }
    });
    Ok(GrpcEchoServerHandle { addr, task })
}
