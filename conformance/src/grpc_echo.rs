//! The gRPC echo backend: the conformance suite's `GrpcEcho` service (package
//! `gateway_api_conformance.echo_basic.grpcecho`), answering each call with what it saw: the
//! fully qualified method, the request metadata, the `:authority` and the Pod's identity. It
//! serves plaintext HTTP/2 (h2c), as upstream's echo server does on its HTTP port, and, with a
//! certificate, HTTP/2 over TLS (ALPN h2) on a second port, answering with the TLS session it
//! saw (`tls_assertions`: version, ALPN, SNI, cipher suite, client certificates) as upstream's
//! does on its HTTPS port.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::echo::Identity;

#[allow(clippy::all, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("gateway_api_conformance.echo_basic.grpcecho");
}

use pb::grpc_echo_server::{GrpcEcho, GrpcEchoServer};
use pb::{Assertions, Context, EchoRequest, EchoResponse, Header, TlsAssertions};

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
                tls_assertions: req.extensions().get::<TlsSession>().map(|t| t.0.clone()),
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

/// Serves the gRPC echo service (h2c) on `listen` (port 0: any free port) until dropped.
pub async fn serve(listen: SocketAddr, identity: Identity) -> anyhow::Result<GrpcEchoServerHandle> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = spawn(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        identity,
    );
    Ok(GrpcEchoServerHandle { addr, task })
}

/// Serves the gRPC echo service over TLS (ALPN h2, the certificate of `files`, client
/// certificates checked against its client CAs when it has them) on `listen` until dropped.
pub async fn serve_tls(
    listen: SocketAddr,
    identity: Identity,
    files: &crate::echo::TlsFiles,
) -> anyhow::Result<GrpcEchoServerHandle> {
    let mut cfg = crate::echo::tls_config(files)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(16);
    let accepting = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            // Handshakes run on their own, so a slow client holds up no other.
            tokio::spawn(async move {
                if let Ok(Ok(tls)) =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                        .await
                {
                    let session = TlsSession(assertions(tls.get_ref().1));
                    let _ = tx.send(Ok(TlsConn { tls, session })).await;
                }
            });
        }
    });
    let serving = spawn(tokio_stream::wrappers::ReceiverStream::new(rx), identity);
    let task = tokio::spawn(async move {
        let _accepting = AbortOnDrop(accepting);
        let _ = serving.await;
    });
    Ok(GrpcEchoServerHandle { addr, task })
}

async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the service on the connections of `incoming`.
fn spawn<I, IO, IE>(incoming: I, identity: Identity) -> tokio::task::JoinHandle<()>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
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
        .serve_with_incoming(incoming);
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!("gRPC echo server stopped: {e}");
        }
    })
}

/// The TLS session of a connection, as the handler reports it.
#[derive(Clone)]
struct TlsSession(TlsAssertions);

/// What upstream's echo server reports of a TLS session (Go's names for versions and suites).
fn assertions(session: &rustls::ServerConnection) -> TlsAssertions {
    TlsAssertions {
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            _ => String::new(),
        },
        negotiated_protocol: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
        server_name: session.server_name().unwrap_or("").to_string(),
        cipher_suite: session
            .negotiated_cipher_suite()
            .map(|c| crate::l4_echo::go_suite_name(&format!("{:?}", c.suite())))
            .unwrap_or_default(),
        peer_certificates: crate::echo::peer_certificates_pem(session),
    }
}

/// An accepted TLS connection with its session's facts, which tonic hands each request.
struct TlsConn {
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    session: TlsSession,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsSession;
    fn connect_info(&self) -> TlsSession {
        self.session.clone()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}
