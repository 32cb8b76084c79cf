//! Our `ProxyHttp`: per request, pick the listener by Host, the route by Gateway API
//! precedence, apply the rule's filters, pick a backend by weight and an endpoint round-robin.
//!
//! The snapshot is loaded once per request and kept in the context, so a reload in the middle
//! of a request never changes what that request does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{http_proxy, FailToProxy, HttpProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use tracing::debug;

use super::answers::*;
use super::tls::Sni;
use super::EngineState;
use crate::config::{BackendTarget, Bind, Config, Listener, Protocol, RequestParts, Route};
use crate::metrics::RequestKey;

pub type SluiceHttpProxy = HttpProxy<SluiceProxy>;

/// Idle upstream connections kept for reuse, across all backends. pingora's default of 128 is
/// exceeded by a few hundred concurrent requests (HTTP/2 clients multiplex many), and every
/// connection past it is closed after its response and opened again for the next.
pub const UPSTREAM_IDLE_POOL: usize = 4096;

/// Streams an HTTP/2 upstream connection carries at once (gRPC backends and h2c Services).
pub const H2_STREAMS_PER_UPSTREAM: usize = 100;

pub fn new_http_proxy(state: Arc<EngineState>) -> Arc<SluiceHttpProxy> {
    let conf = Arc::new(ServerConf {
        upstream_keepalive_pool_size: UPSTREAM_IDLE_POOL,
        ..ServerConf::default()
    });
    let mut proxy = http_proxy(&conf, SluiceProxy { state });
    // Cleartext HTTP/2 with prior knowledge: the listener finds the preface and hands such a
    // connection to pingora's HTTP/2 server, which checks the preface again (h2c only matters
    // to connections without TLS; TLS connections choose HTTP/2 by ALPN).
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    Arc::new(proxy)
}

pub struct SluiceProxy {
    state: Arc<EngineState>,
}

/// Per-request state.
/// The request id header, as Envoy-based gateways name it.
const REQUEST_ID: &str = "x-request-id";

pub struct Ctx {
    start: Instant,
    snapshot: Option<Arc<Config>>,
    bind: Option<Arc<Bind>>,
    listener: Option<Arc<Listener>>,
    route: Option<Arc<Route>>,
    backend: Option<usize>,
    upstream: Option<SocketAddr>,
    /// The request's host, for the access log (kept only when it is on).
    host: String,
    /// A mirror copy waiting for the request body.
    mirror: Option<PendingMirror>,
    /// Attempts made at a backend (retries included).
    attempts: u32,
    /// The `Access-Control-Allow-Origin` value to add to the response, for allowed origins.
    cors_origin: Option<String>,
    /// A gRPC call's deadline (its `grpc-timeout`), from `start`.
    grpc_deadline: Option<std::time::Duration>,
    /// The request's span (debug level, so disabled and free unless asked for): gateway,
    /// listener, route, rule and, once picked, backend. The engine's own events about the
    /// request are emitted in it.
    span: tracing::Span,
}

/// A request whose Host selects another listener than the one its TLS handshake (SNI) selected
/// is misdirected: its certificate was not chosen for this host. The handshake kept the SNI,
/// lowercased, in the connection's TLS digest.
fn misdirected(session: &Session, bind: &Bind, listener: &Arc<Listener>) -> bool {
    bind.protocol == Protocol::Https
        && bind.listeners.is_shared()
        && session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|t| t.extension.get::<Sni>())
            .and_then(|sni| bind.listeners.select(Some(&sni.0)))
            .is_some_and(|l| !Arc::ptr_eq(l, listener))
}

/// What the request's host and connection select.
enum Selected {
    NoListener,
    Misdirected,
    Listener(Arc<Listener>, Option<Arc<Route>>),
}

struct PendingMirror {
    /// Each mirror's endpoint, and whether it speaks HTTP/2 (a GRPCRoute's backends).
    targets: Vec<(SocketAddr, bool)>,
    head: RequestHeader,
    host: String,
    body: bytes::BytesMut,
    too_big: bool,
}

/// Upstream failures are logged as one structured line each, at most this many a second; the
/// next line that gets through says how many were left out.
static UPSTREAM_ERROR_LOG: super::log_limit::LogLimit = super::log_limit::LogLimit::new(10);

#[async_trait]
impl ProxyHttp for SluiceProxy {
    type CTX = Ctx;

    /// No downstream modules: pingora's default adds a (disabled) compression module that still
    /// runs on every request. Sluice does not compress responses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            snapshot: None,
            bind: None,
            listener: None,
            route: None,
            backend: None,
            upstream: None,
            host: String::new(),
            mirror: None,
            attempts: 0,
            cors_origin: None,
            grpc_deadline: None,
            span: tracing::Span::none(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Every request carries an id to the backend and the access log: the client's, or one
        // made here.
        if !session.req_header().headers.contains_key(REQUEST_ID) {
            session
                .req_header_mut()
                .insert_header(REQUEST_ID, super::request_id::next_value())?;
        }
        let snapshot = self.state.config.load_full();
        let local = session.server_addr().and_then(|a| a.as_inet()).copied();
        let Some(bind) = local.and_then(|l| snapshot.bind_for(l)).cloned() else {
            // The listener was removed while this connection was open.
            return respond(session, 503, "listener removed\n", None).await;
        };
        ctx.snapshot = Some(snapshot);
        // The listener and the route, chosen while the request is borrowed (its host too).
        let selected = {
            let req = session.req_header();
            let host = request_host(req);
            match bind.listeners.select(host.as_deref()) {
                None => Selected::NoListener,
                Some(listener) if misdirected(session, &bind, listener) => Selected::Misdirected,
                Some(listener) => {
                    let parts = RequestParts {
                        method: &req.method,
                        path: req.uri.path(),
                        query: req.uri.query(),
                        headers: &req.headers,
                    };
                    let route = listener.routes.find(host.as_deref(), &parts).cloned();
                    if self.state.access_log {
                        ctx.host = host.map(|h| h.into_owned()).unwrap_or_default();
                    }
                    Selected::Listener(listener.clone(), route)
                }
            }
        };
        ctx.bind = Some(bind);
        let (listener, route) = match selected {
            Selected::NoListener => {
                return respond(session, 404, "no listener for this host\n", None).await
            }
            Selected::Misdirected => {
                return respond(session, 421, "misdirected request\n", None).await
            }
            Selected::Listener(listener, route) => (listener, route),
        };
        ctx.listener = Some(listener.clone());
        let Some(route) = route else {
            return respond(session, 404, "no route\n", None).await;
        };
        ctx.span = tracing::debug_span!(
            "request",
            gateway = %ctx.bind.as_ref().map_or("", |b| b.gateway_label.as_str()),
            listener = %listener.name,
            route = %route.action.route_label,
            rule = route.rule,
            backend = tracing::field::Empty,
        );
        ctx.route = Some(route.clone());
        let action = &route.action;
        if is_grpc(session.req_header()) {
            ctx.grpc_deadline = grpc_timeout(session.req_header());
        }

        if let Some(cors) = &action.cors {
            let req = session.req_header();
            if let Some(origin) = req.headers.get(http::header::ORIGIN) {
                let origin = origin.to_str().ok().filter(|o| cors.allows(o));
                let preflight = req.method == http::Method::OPTIONS
                    && req
                        .headers
                        .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
                match (preflight, origin) {
                    // A preflight is the filter's to answer, allowed or not: it never reaches
                    // the backend (HTTPRouteCORS).
                    (true, Some(origin)) => {
                        let resp = cors_preflight(cors, req, origin)?;
                        session.write_response_header(Box::new(resp), true).await?;
                        return Ok(true);
                    }
                    (true, None) => {
                        return respond(
                            session,
                            403,
                            "CORS preflight refused: origin not allowed by this route\n",
                            None,
                        )
                        .await;
                    }
                    (false, Some(origin)) => {
                        ctx.cors_origin = Some(cors.allow_origin_value(origin).to_string());
                    }
                    (false, None) => {}
                }
            }
        }
        if action.retry.is_some() {
            // Keep the request body so a retry can send it again.
            session.enable_retry_buffering();
        }
        if let Some(r) = &action.redirect {
            let req = session.req_header();
            let host = request_host(req).unwrap_or_default();
            let location = redirect_location(r, req, &host, &listener);
            return respond(session, r.status, "", Some(("location", location))).await;
        }
        if let Some(m) = &action.request_headers {
            apply_headers(session.req_header_mut(), m);
        }
        if let Some(rw) = &action.rewrite {
            let req = session.req_header_mut();
            if let Some(p) = &rw.path {
                let new_path = p.apply(req.uri.path());
                let pq = match req.uri.query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                let mut parts = req.uri.clone().into_parts();
                parts.path_and_query = pq.parse().ok();
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    req.set_uri(uri);
                }
            }
            if let Some(h) = &rw.hostname {
                let _ = req.insert_header(http::header::HOST, h.as_str());
                if req.uri.authority().is_some() {
                    let mut parts = req.uri.clone().into_parts();
                    parts.authority = h.parse().ok();
                    if let Ok(uri) = http::Uri::from_parts(parts) {
                        req.set_uri(uri);
                    }
                }
            }
        }
        let mut targets = Vec::new();
        for m in &action.mirrors {
            if !m.this_one() {
                continue;
            }
            if let BackendTarget::Cluster(c) = &m.target {
                targets.extend(c.pick().map(|a| (a, c.http2)));
            }
        }
        if !targets.is_empty() {
            let host = request_host(session.req_header())
                .unwrap_or_default()
                .into_owned();
            if session.is_body_empty() {
                for (addr, http2) in targets {
                    self.state
                        .mirror
                        .send(addr, http2, session.req_header(), &host, Bytes::new());
                }
            } else {
                // Sent once the whole body has been read (request_body_filter).
                ctx.mirror = Some(PendingMirror {
                    targets,
                    head: session.req_header().clone(),
                    host,
                    body: bytes::BytesMut::new(),
                    too_big: false,
                });
            }
        }
        if action.no_backends || action.backends.is_empty() {
            return respond(session, 500, "no backend\n", None).await;
        }
        let Some(idx) = action.pick_backend().map(|b| {
            action
                .backends
                .iter()
                .position(|x| std::ptr::eq(x, b))
                .unwrap_or(0)
        }) else {
            return respond(session, 500, "no backend\n", None).await;
        };
        ctx.backend = Some(idx);
        let backend = &action.backends[idx];
        ctx.span
            .record("backend", tracing::field::display(backend.target.label()));
        if let BackendTarget::Invalid { reason, .. } = &backend.target {
            debug!(route = %action.route_label, %reason, "backend does not resolve");
            return respond(session, 500, "backend does not resolve\n", None).await;
        }
        if let Some(m) = &backend.request_headers {
            apply_headers(session.req_header_mut(), m);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(m) = ctx.mirror.as_mut() {
            if let Some(chunk) = body {
                if m.body.len() + chunk.len() > super::mirror::MAX_MIRROR_BODY {
                    m.too_big = true;
                } else if !m.too_big {
                    m.body.extend_from_slice(chunk);
                }
            }
            if end_of_stream {
                if let Some(m) = ctx.mirror.take() {
                    if m.too_big {
                        debug!("request body too large to mirror");
                    } else {
                        let body = m.body.freeze();
                        for (addr, http2) in m.targets {
                            let body = body.clone();
                            self.state.mirror.send(addr, http2, &m.head, &m.host, body);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let cluster = ctx.route.as_ref().zip(ctx.backend).and_then(|(r, i)| {
            match &r.action.backends.get(i)?.target {
                BackendTarget::Cluster(c) => Some(c.clone()),
                BackendTarget::Invalid { .. } => None,
            }
        });
        let Some(cluster) = cluster else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(500),
                "no backend selected",
            ));
        };
        let Some(addr) = cluster.pick() else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("no ready endpoint for {}", cluster.name),
            ));
        };
        ctx.upstream = Some(addr);
        let action = ctx.route.as_ref().map(|r| r.action.clone());
        if ctx.attempts > 0 {
            if let Some(backoff) = action
                .as_ref()
                .and_then(|a| a.retry.as_ref())
                .map(|r| r.backoff)
            {
                tokio::time::sleep(backoff).await;
            }
        }
        ctx.attempts += 1;
        let mut peer = match &cluster.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => {
                // Without a usable CA the connection must fail rather than go out unverified.
                let Some(ca) = &tls.ca else {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(500),
                        format!(
                            "BackendTLSPolicy {} has no usable CA certificate",
                            tls.policy
                        ),
                    ));
                };
                let gateway = ctx.bind.as_ref().map(|b| &b.gateway);
                let origins = tls.origins(gateway);
                let own = if cluster.http2 {
                    &origins.san_h2
                } else {
                    &origins.san
                };
                let mut p = match own {
                    // Our own connector makes the TLS connection (ALPN h2 for HTTP/2 clusters);
                    // pingora sees a plain stream and speaks HTTP/2 on it with prior knowledge.
                    Some(origin) => {
                        let mut p = HttpPeer::new(addr, false, tls.hostname.clone());
                        p.options.custom_l4 = Some(origin.clone());
                        p
                    }
                    None => HttpPeer::new(addr, true, tls.hostname.clone()),
                };
                p.group_key = origins.pool_key;
                p.options.ca = Some(ca.clone());
                p.options.verify_cert = true;
                p.options.verify_hostname = true;
                p.client_cert_key = gateway
                    .zip(ctx.snapshot.as_ref())
                    .and_then(|(g, snap)| snap.backend_client_certs.get(g).cloned());
                p
            }
        };
        // HTTP/2: prior knowledge without TLS or over our own TLS connector, ALPN h2 with
        // pingora's TLS.
        if cluster.http2 {
            peer.options.set_http_version(2, 2);
            // Concurrent calls share a connection (pingora's default is one stream each).
            peer.options.max_h2_streams = H2_STREAMS_PER_UPSTREAM;
        }
        if let Some(a) = &action {
            // The tighter of the per-attempt timeout and what is left of the request timeout.
            let left = match (a.request_timeout, ctx.grpc_deadline) {
                (Some(r), Some(g)) => Some(r.min(g)),
                (r, g) => r.or(g),
            }
            .map(|t| t.saturating_sub(ctx.start.elapsed()));
            let timeout = match (a.backend_timeout, left) {
                (Some(b), Some(l)) => Some(b.min(l)),
                (b, l) => b.or(l),
            };
            if let Some(t) = timeout {
                if t.is_zero() {
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(504),
                        "request timeout",
                    ));
                }
                peer.options.total_connection_timeout = Some(t);
                peer.options.read_timeout = Some(t);
                peer.options.write_timeout = Some(t);
            }
        }
        Ok(Box::new(peer))
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let retry = ctx.route.as_ref().and_then(|r| r.action.retry.as_ref());
        if let Some(policy) = retry {
            let code = resp.status.as_u16();
            if ctx.attempts <= policy.attempts && policy.codes.contains(&code) {
                let mut e = Error::explain(ErrorType::HTTPStatus(code), "retrying on status code");
                e.set_retry(true);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            use std::fmt::Write;
            // One buffer, written once: the previous hops, then this client.
            let prev = upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            // The longest IPv6 text is 39 characters.
            let mut value = String::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
            if let Some(p) = prev {
                value.push_str(p);
                value.push_str(", ");
            }
            let _ = write!(value, "{}", client.ip());
            upstream.insert_header("x-forwarded-for", value)?;
        }
        let proto = ctx
            .bind
            .as_ref()
            .map(|b| b.protocol)
            .unwrap_or(Protocol::Http);
        // A static value: no copy of it per request.
        upstream.insert_header(
            "x-forwarded-proto",
            http::HeaderValue::from_static(proto.scheme()),
        )?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        if let (Some(origin), Some(cors)) = (&ctx.cors_origin, &route.action.cors) {
            resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.as_str())?;
            if cors.allow_credentials {
                resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
            }
            if !cors.expose_headers.is_empty() {
                resp.insert_header(
                    http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    cors.expose_headers.join(", "),
                )?;
            }
        }
        if let Some(m) = ctx
            .backend
            .and_then(|i| route.action.backends.get(i)?.response_headers.as_ref())
        {
            apply_headers(resp, m);
        }
        if let Some(m) = &route.action.response_headers {
            apply_headers(resp, m);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let backend = backend_label(ctx);
        self.state
            .metrics
            .upstream_connect_errors
            .with_label_values(&[backend])
            .inc();
        // A retry policy retries connection failures too (GEP-1731), on another endpoint.
        if let Some(policy) = ctx.route.as_ref().and_then(|r| r.action.retry.as_ref()) {
            if ctx.attempts <= policy.attempts {
                e.set_retry(true);
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let policy = ctx.route.as_ref().and_then(|r| r.action.retry.as_ref());
        // Nothing of the response may have reached the client, and the body must be replayable.
        let replayable =
            session.response_written().is_none() && !session.as_ref().retry_buffer_truncated();
        // A backend that timed out may still be working on the request: another attempt would
        // add to its load rather than get an answer sooner.
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        match policy {
            // A retry policy retries a connection that failed before its answer (GEP-1731),
            // whether the connection was new or reused, as it retries connection failures.
            Some(p) if replayable && !timed_out && ctx.attempts <= p.attempts => e.set_retry(true),
            Some(_) => e.set_retry(false),
            // Without one, pingora's default: a reused connection may have been closed by the
            // backend while idle, so an idempotent request is sent once more.
            None if replayable && session.req_header().method.is_idempotent() => {
                e.retry.decide_reuse(client_reused)
            }
            None => e.set_retry(false),
        }
        e
    }

    /// pingora's own line ("Fail to proxy: ...") is replaced by ours in `fail_to_proxy`.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        true
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = error_status(e);
        let why = error_reason(e);
        if code > 0 && session.response_written().is_none() && is_grpc(session.req_header()) {
            // A gRPC call gets its answer in gRPC's form; past its deadline, DEADLINE_EXCEEDED.
            let status = match ctx.grpc_deadline {
                Some(d) if ctx.start.elapsed() >= d => grpc_code::DEADLINE_EXCEEDED,
                _ => grpc_status(code),
            };
            if let Ok(resp) = grpc_response(status, &why) {
                let _ = write_grpc_answer(session, resp).await;
            }
        } else if code > 0 {
            // Our own answer: a short plain-text reason, and no `server: Pingora` header.
            let body = Bytes::from(format!("{why}\n"));
            if let Ok(resp) = plain_response(code, body.len(), &[]) {
                let _ = session.write_error_response(resp, body).await;
            }
        }
        if code == 0 {
            // The client went away or sent something unreadable: its business, not a backend
            // failure, and it must not use up the budget of upstream error lines.
            tracing::debug!(
                kind = e.etype().as_str(),
                source = e.esource().as_str(),
                "{why}"
            );
        } else if code >= 500 {
            if let Some(suppressed) = UPSTREAM_ERROR_LOG.allow() {
                let _in_request = ctx.span.enter();
                tracing::warn!(
                    gateway = ctx.bind.as_ref().map_or("", |b| b.gateway_label.as_str()),
                    listener = ctx.listener.as_ref().map_or("", |l| l.name.as_str()),
                    route = ctx
                        .route
                        .as_ref()
                        .map_or("", |r| r.action.route_label.as_str()),
                    backend = backend_label(ctx),
                    upstream = ctx.upstream.map(|a| a.to_string()).unwrap_or_default(),
                    status = code,
                    kind = e.etype().as_str(),
                    // The underlying error (e.g. the socket's), not pingora's error chain.
                    cause = e
                        .cause
                        .as_ref()
                        .map(|_| e.root_cause().to_string())
                        .unwrap_or_default(),
                    suppressed,
                    "{why}"
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let gateway = ctx
            .bind
            .as_ref()
            .map(|b| b.gateway_label.as_str())
            .unwrap_or("");
        let listener = ctx.listener.as_ref().map(|l| l.name.as_str()).unwrap_or("");
        let route = ctx
            .route
            .as_ref()
            .map(|r| r.action.route_label.as_str())
            .unwrap_or("");
        let backend = backend_label(ctx);
        let elapsed = ctx.start.elapsed();
        ctx.span
            .in_scope(|| tracing::debug!(status = code, upstream = ?ctx.upstream, "request done"));
        let key = RequestKey {
            version: ctx.snapshot.as_ref().map_or(0, |s| s.version),
            bind: ctx.bind.as_ref().map_or(0, |b| Arc::as_ptr(b) as usize),
            listener: ctx.listener.as_ref().map_or(0, |l| Arc::as_ptr(l) as usize),
            route: ctx.route.as_ref().map_or(0, |r| Arc::as_ptr(r) as usize),
            backend: ctx.backend.unwrap_or(usize::MAX),
            code,
        };
        let mut code_buf = itoa::Buffer::new();
        self.state.metrics.record_request(
            key,
            || [gateway, listener, route, backend, code_buf.format(code)],
            elapsed.as_secs_f64(),
        );
        if self.state.access_log {
            let req = session.req_header();
            let line = serde_json::json!({
                "time": k8s_openapi::jiff::Timestamp::now().to_string(),
                "client": session.client_addr().map(|a| a.to_string()),
                "method": req.method.as_str(),
                "host": ctx.host,
                "path": req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "protocol": format!("{:?}", req.version),
                "status": code,
                // Milliseconds, to the microsecond.
                "duration_ms": elapsed.as_micros() as f64 / 1000.0,
                "user_agent": req.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()),
                "request_id": req.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()),
                "bytes_sent": session.body_bytes_sent(),
                "gateway": gateway,
                "listener": listener,
                "route": route,
                "rule": ctx.route.as_ref().map(|r| r.rule),
                "backend": backend,
                "upstream": ctx.upstream.map(|a| a.to_string()),
                "error": e.map(|e| e.to_string()),
            });
            crate::access_log::write_line(&line);
        }
    }
}

/// Keeps pooled connections of one BackendTLSPolicy apart from any other connection.
fn backend_label(ctx: &Ctx) -> &str {
    ctx.route
        .as_ref()
        .zip(ctx.backend)
        .and_then(|(r, i)| r.action.backends.get(i))
        .map(|b| b.target.label())
        .unwrap_or("")
}
