//! Prometheus metrics of the gateway, served on the admin listener's `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by gateway, listener, route, backend and status code.
    pub requests: IntCounterVec,
    /// Request duration by gateway and route, from the first byte read to the last written.
    pub duration: HistogramVec,
    /// Failed connection attempts to backends.
    pub upstream_connect_errors: IntCounterVec,
    pub tls_handshake_errors: IntCounter,
    /// Downstream connections accepted, by data-path worker.
    pub worker_connections: IntCounterVec,
    /// Configuration reloads by result (applied, rejected).
    pub reloads: IntCounterVec,
    pub config_version: IntGauge,
    /// Egress decisions by decision (allowed, audit, denied), policy and destination.
    pub egress_decisions: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("sluice_http_requests_total", "HTTP requests served"),
            &["gateway", "listener", "route", "backend", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_http_request_duration_seconds",
                "Time from reading the request to writing the last byte of the response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["gateway", "route"],
        )
        .expect("valid metric");
        let upstream_connect_errors = IntCounterVec::new(
            Opts::new(
                "sluice_upstream_connect_errors_total",
                "Failed connection attempts to backends",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let tls_handshake_errors = IntCounter::new(
            "sluice_tls_handshake_errors_total",
            "Downstream TLS handshakes that failed or timed out",
        )
        .expect("valid metric");
        let worker_connections = IntCounterVec::new(
            Opts::new(
                "sluice_worker_connections_total",
                "Downstream connections accepted, by data-path worker",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "sluice_config_reloads_total",
                "Configuration reloads by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_version = IntGauge::new(
            "sluice_config_version",
            "Version of the configuration being served",
        )
        .expect("valid metric");
        let egress_decisions = IntCounterVec::new(
            Opts::new("sluice_egress_decisions_total", "Egress decisions"),
            &["decision", "policy", "destination"],
        )
        .expect("valid metric");
        for c in [
            Box::new(egress_decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(upstream_connect_errors.clone()),
            Box::new(tls_handshake_errors.clone()),
            Box::new(worker_connections.clone()),
            Box::new(reloads.clone()),
            Box::new(config_version.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_connect_errors,
            tls_handshake_errors,
            worker_connections,
            reloads,
            config_version,
            egress_decisions,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
