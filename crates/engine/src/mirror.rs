//! RequestMirror: a copy of the request goes to the mirror backend, fire-and-forget. The mirror
//! never delays or fails the main request; its answer is read and dropped. A GRPCRoute's mirror
//! backends (HTTP/2 clusters) get the copy over h2c, the others over HTTP/1.1.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::debug;

const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body copied to mirrors.
pub const MAX_MIRROR_BODY: usize = 1 << 20;

pub struct MirrorClient {
    client: Client<HttpConnector, Full<Bytes>>,
    h2c: Client<HttpConnector, Full<Bytes>>,
}

impl Default for MirrorClient {
    fn default() -> Self {
        Self::new()
    }
}

impl MirrorClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        MirrorClient {
            client: Client::builder(TokioExecutor::new()).build(connector.clone()),
            h2c: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector),
        }
    }

    /// Sends a copy of the request to `addr` in the background.
    pub fn send(
        &self,
        addr: std::net::SocketAddr,
        http2: bool,
        head: &pingora::http::RequestHeader,
        host: &str,
        body: Bytes,
    ) {
        let path = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Ok(uri) = format!("http://{addr}{path}").parse::<http::Uri>() else {
            return;
        };
        let mut req = http::Request::new(Full::new(body));
        if http2 {
            *req.version_mut() = http::Version::HTTP_2;
        }
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = uri;
        for (name, value) in head.headers.iter() {
            if name == http::header::CONTENT_LENGTH
                || name == http::header::TRANSFER_ENCODING
                || name == http::header::HOST
                || name == http::header::CONNECTION
            {
                continue;
            }
            req.headers_mut().append(name.clone(), value.clone());
        }
        if let Ok(h) = http::HeaderValue::from_str(host) {
            req.headers_mut().insert(http::header::HOST, h);
        }
        let client = if http2 { &self.h2c } else { &self.client };
        let fut = client.request(req);
        tokio::spawn(async move {
            match tokio::time::timeout(MIRROR_TIMEOUT, fut).await {
                Ok(Ok(resp)) => {
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
                Ok(Err(e)) => debug!(%addr, error = %e, "mirror request failed"),
                Err(_) => debug!(%addr, "mirror request timed out"),
            }
        });
    }
}
