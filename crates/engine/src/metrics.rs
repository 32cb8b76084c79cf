//! Prometheus metrics of the gateway, served on the admin listener's `/metrics`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use rustc_hash::FxHashMap;

#[derive(Clone)]
pub struct Metrics {
    /// Tells this set of metrics apart in the per-thread cache of `record_request`.
    id: u64,
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
    /// Egress decisions by decision (allowed, audit, denied), policy and rule. Destinations are
    /// not a label: their number is unbounded (one per name a client tries); the access log
    /// has each one.
    pub egress_decisions: IntCounterVec,
    /// TLS and TCP listener connections by gateway, listener, route, backend and decision
    /// (`l4::Decision`).
    pub l4_connections: IntCounterVec,
    /// Bytes of TLS and TCP listener connections by gateway, route and direction (`received`
    /// from clients, `sent` to them).
    pub l4_bytes: IntCounterVec,
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
            &["decision", "policy", "rule"],
        )
        .expect("valid metric");
        let l4_connections = IntCounterVec::new(
            Opts::new(
                "sluice_l4_connections_total",
                "Connections of TLS and TCP listeners, by what became of them",
            ),
            &["gateway", "listener", "route", "backend", "decision"],
        )
        .expect("valid metric");
        let l4_bytes = IntCounterVec::new(
            Opts::new(
                "sluice_l4_bytes_total",
                "Bytes forwarded on connections of TLS and TCP listeners",
            ),
            &["gateway", "route", "direction"],
        )
        .expect("valid metric");
        for c in [
            Box::new(egress_decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(l4_connections.clone()),
            Box::new(l4_bytes.clone()),
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            duration,
            upstream_connect_errors,
            tls_handshake_errors,
            worker_connections,
            reloads,
            config_version,
            egress_decisions,
            l4_connections,
            l4_bytes,
        }
    }

    /// Counts a finished request and observes its duration. The metrics of a label set are
    /// resolved once per worker thread and configuration version: prometheus's
    /// `with_label_values` hashes every label and takes the vector's lock on each call.
    /// `labels` (gateway, listener, route, backend, code) is called only on a miss.
    pub fn record_request<'a>(
        &self,
        key: RequestKey,
        labels: impl FnOnce() -> [&'a str; 5],
        seconds: f64,
    ) {
        REQUEST_METRICS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let generation = (self.id, key.version);
            if cache.generation != generation {
                // The keys of another version may name objects that no longer exist.
                cache.map.clear();
                cache.generation = generation;
            }
            let (requests, duration) = cache.map.entry(key).or_insert_with(|| {
                let l = labels();
                (
                    self.requests.with_label_values(&l),
                    self.duration.with_label_values(&[l[0], l[2]]),
                )
            });
            requests.inc();
            duration.observe(seconds);
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Names the label set of a request by the configuration version and the addresses of the
/// snapshot objects its labels come from (0 where there is none). While the version is the
/// same those objects are alive, so equal keys mean equal labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub version: u64,
    pub bind: usize,
    pub listener: usize,
    pub route: usize,
    pub backend: usize,
    pub code: u16,
}

#[derive(Default)]
struct RequestCache {
    generation: (u64, u64),
    map: FxHashMap<RequestKey, (IntCounter, Histogram)>,
}

thread_local! {
    static REQUEST_METRICS: RefCell<RequestCache> = RefCell::new(RequestCache::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u64, route: usize, code: u16) -> RequestKey {
        RequestKey {
            version,
            bind: 1,
            listener: 2,
            route,
            backend: 0,
            code,
        }
    }

    #[test]
    fn requests_are_counted_under_their_labels() {
        let m = Metrics::new();
        let a = || ["default/gw", "http", "default/a", "default/svc:80", "200"];
        let b = || ["default/gw", "http", "default/b", "default/svc:80", "404"];
        m.record_request(key(1, 10, 200), a, 0.001);
        m.record_request(key(1, 10, 200), a, 0.001);
        m.record_request(key(1, 11, 404), b, 0.001);
        // A new version may reuse an address for another route: its labels are asked again.
        m.record_request(key(2, 10, 404), b, 0.001);
        let count = |l: [&str; 5]| m.requests.with_label_values(&l).get();
        assert_eq!(count(a()), 2);
        assert_eq!(count(b()), 2);
        let observed = m
            .duration
            .with_label_values(&["default/gw", "default/b"])
            .get_sample_count();
        assert_eq!(observed, 2);
        // Another set of metrics on the same thread does not see the first one's entries.
        let other = Metrics::new();
        other.record_request(key(2, 10, 404), b, 0.001);
        assert_eq!(other.requests.with_label_values(&b()).get(), 1);
        assert_eq!(count(b()), 2);
    }
}
