//! HTTPRoute behaviour through the real gateway binary, real sockets and echo backends.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use sluice_testing::*;

/// Path, header, method and query matching with the spec's precedence, and the 404 when
/// nothing matches.
#[tokio::test(flavor = "multi_thread")]
async fn matching_and_precedence() {
    let exact = echo("exact").await;
    let prefix = echo("prefix").await;
    let longer = echo("longer").await;
    let header = echo("header").await;
    let method = echo("method").await;
    let query = echo("query").await;
    let regex = echo("regex").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /foo}}]
    backendRefs: [{name: prefix, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /foo/bar/}}]
    backendRefs: [{name: longer, port: 80}]
  - matches: [{path: {type: Exact, value: /foo/bar}}]
    backendRefs: [{name: exact, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /foo}, headers: [{name: x-version, value: two}]}]
    backendRefs: [{name: header, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /foo}, method: POST}]
    backendRefs: [{name: method, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /q}, queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: query, port: 80}]
  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]
    backendRefs: [{name: regex, port: 80}]
";
    let mut files = vec![
        (
            "gw.yaml".to_string(),
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml".to_string(), route.to_string()),
    ];
    for (n, e) in [
        ("exact", &exact),
        ("prefix", &prefix),
        ("longer", &longer),
        ("header", &header),
        ("method", &method),
        ("query", &query),
        ("regex", &regex),
    ] {
        files.push((format!("{n}.yaml"), service("default", n, &[e.addr])));
    }
    let gw = Gateway::start(&files).await;
    let c = client_for(gw.addr(8080), &[]);
    let svc = |v: &serde_json::Value| v["service"].as_str().unwrap_or("").to_string();

    let cases = [
        ("/foo", "prefix"),
        ("/foo/", "prefix"),
        ("/foo/baz", "prefix"),
        ("/foo/bar", "exact"),
        ("/foo/bar/", "longer"),
        ("/foo/bar/x", "longer"),
        ("/q?animal=whale", "query"),
        ("/re/123", "regex"),
    ];
    for (path, want) in cases {
        let (code, body, _) = get_json(&c, &gw.url(8080, path)).await;
        assert_eq!((code, svc(&body)), (200, want.to_string()), "GET {path}");
    }
    // Segment-aware prefix: /foobar matches nothing.
    for path in ["/foobar", "/", "/q?animal=dolphin", "/re/abc", "/re/123/x"] {
        let (code, _, _) = get_json(&c, &gw.url(8080, path)).await;
        assert_eq!(code, 404, "GET {path}");
    }
    // A header match wins over a plain prefix of the same length.
    let (_, body, _) = get_json_with(&c, &gw.url(8080, "/foo/x"), &[("x-version", "two")]).await;
    assert_eq!(svc(&body), "header");
    // Header values are matched exactly.
    let (_, body, _) = get_json_with(&c, &gw.url(8080, "/foo/x"), &[("x-version", "three")]).await;
    assert_eq!(svc(&body), "prefix");
    // Method match.
    let r = c
        .post(gw.url(8080, "/foo/x"))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(svc(&r.json().await.unwrap()), "method");
}

/// Backend weights: a 3:1 split within tolerance, weight 0 gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn weighted_split() {
    let a = echo("a").await;
    let b = echo("b").await;
    let z = echo("z").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - {name: a, port: 80, weight: 3}
    - {name: b, port: 80, weight: 1}
    - {name: z, port: 80, weight: 0}
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route.into()),
        ("a.yaml", service("default", "a", &[a.addr])),
        ("b.yaml", service("default", "b", &[b.addr])),
        ("z.yaml", service("default", "z", &[z.addr])),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    let n = 800;
    for _ in 0..n {
        let (code, _, _) = get_json(&c, &gw.url(8080, "/w")).await;
        assert_eq!(code, 200);
    }
    let (ca, cb) = (a.count("/w"), b.count("/w"));
    assert_eq!(ca + cb, n);
    assert_eq!(z.count("/w"), 0, "weight 0 must get no traffic");
    // Picks follow a low-discrepancy sequence, not independent draws: the split is exact to
    // within a few requests.
    let share = ca as f64 / n as f64;
    assert!(
        (0.74..=0.76).contains(&share),
        "a got {share:.3} of traffic, want 0.75 ± 0.01"
    );
}

/// Endpoints of one Service are used round-robin; endpoints not ready get nothing.
#[tokio::test(flavor = "multi_thread")]
async fn round_robin_across_endpoints() {
    let e1 = echo("multi").await;
    let e2 = conformance::echo::serve(
        "127.0.0.2:0".parse().unwrap(),
        Identity {
            service: "multi".into(),
            pod: "multi-1".into(),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let not_ready =
        conformance::echo::serve("127.0.0.3:0".parse().unwrap(), Identity::default(), None)
            .await
            .unwrap();
    // Two endpoints with different IPs but the same port is what an EndpointSlice holds; our
    // echo servers have different ports, so use one slice per endpoint.
    let svc = format!(
        "{}---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: multi-def
  namespace: default
  labels: {{kubernetes.io/service-name: multi}}
addressType: IPv4
ports:
- {{name: http, port: {}}}
endpoints:
- addresses: [\"127.0.0.2\"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: multi-not-ready
  namespace: default
  labels: {{kubernetes.io/service-name: multi}}
addressType: IPv4
ports:
- {{name: http, port: {}}}
endpoints:
- addresses: [\"127.0.0.3\"]
  conditions: {{ready: false}}
",
        service("default", "multi", &[e1.addr]),
        e2.addr.port(),
        not_ready.addr.port()
    );
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rr, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: multi, port: 80}]
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route.into()),
        ("svc.yaml", svc),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    for _ in 0..10 {
        assert_eq!(get_json(&c, &gw.url(8080, "/rr")).await.0, 200);
    }
    assert_eq!(e1.count("/rr"), 5);
    assert_eq!(e2.count("/rr"), 5);
    assert_eq!(not_ready.count("/rr"), 0);
}

/// Unresolvable backends answer 500; a Service without ready endpoints answers 503; a rule
/// with only zero weights answers 500.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_backends() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: does-not-exist, port: 80}]
  - matches: [{path: {value: /empty}}]
    backendRefs: [{name: empty, port: 80}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: empty, port: 80, weight: 0}]
  - matches: [{path: {value: /kind}}]
    backendRefs: [{name: x, kind: Bucket, group: storage.example.com}]
";
    let empty = "apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec: {ports: [{port: 80}]}
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route.into()),
        ("empty.yaml", empty.into()),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    assert_eq!(get_json(&c, &gw.url(8080, "/missing")).await.0, 500);
    assert_eq!(get_json(&c, &gw.url(8080, "/empty")).await.0, 503);
    assert_eq!(get_json(&c, &gw.url(8080, "/zero")).await.0, 500);
    assert_eq!(get_json(&c, &gw.url(8080, "/kind")).await.0, 500);
    let st = gw.status_of("HTTPRoute", Some("default"), "broken").await;
    let conds = &st["status"]["parents"][0]["conditions"];
    assert_eq!(
        condition(conds, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        condition(conds, "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
}

/// Hostnames: exact and wildcard route hostnames, intersected with listener hostnames.
#[tokio::test(flavor = "multi_thread")]
async fn hostnames_and_wildcards() {
    let exact = echo("exact").await;
    let wild = echo("wild").await;
    let other = echo("other").await;
    let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: wild, protocol: HTTP, port: 8080, hostname: '*.example.com'}
  - {name: other, protocol: HTTP, port: 8080, hostname: other.test}
";
    let routes = [
        backend_route("exact", &["name: gw"], &["foo.example.com"], "exact"),
        backend_route(
            "wild",
            &["name: gw, sectionName: wild"],
            &["*.example.com"],
            "wild",
        ),
        backend_route("other", &["name: gw, sectionName: other"], &[], "other"),
    ]
    .join("---\n");
    let gw = Gateway::start(&[
        ("gw.yaml", format!("{GATEWAY_CLASS}---\n{gateway}")),
        ("routes.yaml", routes),
        ("s1.yaml", service("default", "exact", &[exact.addr])),
        ("s2.yaml", service("default", "wild", &[wild.addr])),
        ("s3.yaml", service("default", "other", &[other.addr])),
    ])
    .await;
    let hosts = [
        "foo.example.com",
        "bar.example.com",
        "a.b.example.com",
        "example.com",
        "other.test",
        "nope.test",
    ];
    let c = client_for(gw.addr(8080), &hosts);
    let svc = |v: serde_json::Value| v["service"].as_str().unwrap_or("").to_string();
    let get = |h: &str| {
        let c = c.clone();
        let url = format!("http://{h}:8080/");
        async move { get_json(&c, &url).await }
    };
    assert_eq!(svc(get("foo.example.com").await.1), "exact");
    assert_eq!(svc(get("bar.example.com").await.1), "wild");
    assert_eq!(svc(get("a.b.example.com").await.1), "wild");
    assert_eq!(
        get("example.com").await.0,
        404,
        "*.example.com does not match example.com"
    );
    assert_eq!(svc(get("other.test").await.1), "other");
    assert_eq!(get("nope.test").await.0, 404);
    // The route for foo.example.com attaches to both listeners but only intersects `wild`.
    let st = gw.status_of("HTTPRoute", Some("default"), "exact").await;
    assert_eq!(
        condition(&st["status"]["parents"][0]["conditions"], "Accepted").0,
        "True"
    );
}

/// RequestHeaderModifier, ResponseHeaderModifier, URLRewrite and RequestRedirect.
#[tokio::test(flavor = "multi_thread")]
async fn filters() {
    let app = echo("app").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: set-value}]
        add: [{name: x-add, value: added}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-resp-set, value: r1}]
        add: [{name: x-resp-add, value: r2}]
        remove: [x-content-type-options]
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: rewritten.example
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: elsewhere.example, statusCode: 301}
  - matches: [{path: {value: /to-https}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https}
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, port: 9090}
  - matches: [{path: {value: /backend-filter}}]
    backendRefs:
    - name: app
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: app}]}
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route.into()),
        ("app.yaml", service("default", "app", &[app.addr])),
    ])
    .await;
    let c = client_for(gw.addr(8080), &["host.example"]);
    let (code, body, headers) = get_json_with(
        &c,
        "http://host.example:8080/headers",
        &[
            ("x-set", "original"),
            ("x-add", "first"),
            ("x-remove", "gone"),
        ],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(headers["x-resp-set"], "r1");
    assert_eq!(headers["x-resp-add"], "r2");
    assert!(headers.get("x-content-type-options").is_none());
    assert_eq!(body["headers"]["X-Set"], serde_json::json!(["set-value"]));
    assert_eq!(
        body["headers"]["X-Add"],
        serde_json::json!(["first", "added"])
    );
    assert!(body["headers"].get("X-Remove").is_none());

    let (code, body, _) = get_json(&c, "http://host.example:8080/prefix/rest?q=1").await;
    assert_eq!(code, 200);
    assert_eq!(body["path"], "/new/rest?q=1");
    assert_eq!(body["host"], "rewritten.example");
    let (_, body, _) = get_json(&c, "http://host.example:8080/full/anything").await;
    assert_eq!(body["path"], "/replaced");

    let (code, _, h) = get_json(&c, "http://host.example:8080/redirect/x?y=1").await;
    assert_eq!(code, 301);
    assert_eq!(
        h["location"],
        "http://elsewhere.example:8080/redirect/x?y=1"
    );
    let (code, _, h) = get_json(&c, "http://host.example:8080/to-https/x").await;
    assert_eq!(code, 302);
    assert_eq!(h["location"], "https://host.example/to-https/x");
    let (_, _, h) = get_json(&c, "http://host.example:8080/old/page").await;
    assert_eq!(h["location"], "http://host.example:9090/new/page");

    let (_, body, _) = get_json(&c, "http://host.example:8080/backend-filter").await;
    assert_eq!(body["headers"]["X-Backend"], serde_json::json!(["app"]));
}

/// RequestMirror: the mirror receives a copy; the main request is answered by the backend.
#[tokio::test(flavor = "multi_thread")]
async fn request_mirror() {
    let app = echo("app").await;
    let shadow = echo("shadow").await;
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: app, port: 80}]
";
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route.into()),
        ("app.yaml", service("default", "app", &[app.addr])),
        ("shadow.yaml", service("default", "shadow", &[shadow.addr])),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    for i in 0..5 {
        let (code, body, _) = get_json(&c, &gw.url(8080, &format!("/m{i}"))).await;
        assert_eq!((code, body["service"].as_str()), (200, Some("app")));
    }
    // The mirror is fire-and-forget: wait for its copies to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while shadow.count("/m") < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "mirror got {} of 5",
            shadow.count("/m")
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.count("/m"), 5);
}

/// The backend learns the client address and the scheme.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers() {
    let app = echo("app").await;
    let route = backend_route("r", &["name: gw"], &[], "app");
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("route.yaml", route),
        ("app.yaml", service("default", "app", &[app.addr])),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    let (_, body, _) = get_json(&c, &gw.url(8080, "/")).await;
    assert_eq!(
        body["headers"]["X-Forwarded-Proto"],
        serde_json::json!(["http"])
    );
    let xff = body["headers"]["X-Forwarded-For"][0].as_str().unwrap();
    assert!(
        xff.parse::<std::net::IpAddr>().is_ok(),
        "X-Forwarded-For {xff:?}"
    );
    // A header from an earlier hop is kept, and this client is appended to it.
    let (_, body, _) = get_json_with(
        &c,
        &gw.url(8080, "/"),
        &[("x-forwarded-for", "203.0.113.7, 2001:db8::1")],
    )
    .await;
    assert_eq!(
        body["headers"]["X-Forwarded-For"],
        serde_json::json!([format!("203.0.113.7, 2001:db8::1, {xff}")])
    );
}

/// Several Gateways in one folder, each on its own address from the pool; a JSON manifest;
/// a header regex match.
#[tokio::test(flavor = "multi_thread")]
async fn gateways_on_pool_addresses_and_json_manifests() {
    let a = echo("a").await;
    let b = echo("b").await;
    let pool_ip = unique_ip();
    let pool = format!("{pool_ip}/32");
    let second = std::net::IpAddr::V4(match pool_ip {
        std::net::IpAddr::V4(v4) => std::net::Ipv4Addr::from(u32::from(v4) ^ 0x8000),
        _ => unreachable!(),
    });
    let route_b = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "b", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw-b"}],
            "rules": [{
                "matches": [{"headers": [{"name": "x-id", "type": "RegularExpression", "value": "[0-9]+"}]}],
                "backendRefs": [{"name": "b", "port": 80}]
            }]
        }
    });
    let gw_b = http_gateway("gw-b").replace(
        "  gatewayClassName: sluice\n",
        &format!(
            "  gatewayClassName: sluice\n  addresses: [{{type: IPAddress, value: '{second}'}}]\n"
        ),
    );
    let gw = Gateway::start_with(
        &[
            (
                "gw.yaml",
                format!("{GATEWAY_CLASS}---\n{}---\n{gw_b}", http_gateway("gw-a")),
            ),
            (
                "a.yaml",
                format!(
                    "{}---\n{}",
                    service("default", "a", &[a.addr]),
                    backend_route("a", &["name: gw-a"], &[], "a")
                ),
            ),
            ("b.json", route_b.to_string()),
            ("b-svc.yaml", service("default", "b", &[b.addr])),
        ],
        &["--address-pool", &pool],
    )
    .await;
    let st = gw.status_of("Gateway", Some("default"), "gw-a").await;
    assert_eq!(st["status"]["addresses"][0]["value"], pool_ip.to_string());
    let ca = client_for(std::net::SocketAddr::new(pool_ip, 8080), &[]);
    let (code, body, _) = get_json(&ca, &format!("http://{pool_ip}:8080/")).await;
    assert_eq!((code, body["service"].as_str()), (200, Some("a")));
    let cb = client_for(std::net::SocketAddr::new(second, 8080), &[]);
    let url = format!("http://{second}:8080/");
    let (_, body, _) = get_json_with(&cb, &url, &[("x-id", "42")]).await;
    assert_eq!(body["service"], "b");
    let (code, _, _) = get_json_with(&cb, &url, &[("x-id", "4x2")]).await;
    assert_eq!(code, 404, "regex matches the whole value");
}

/// A response body that the backend streams reaches the client piece by piece: the gateway
/// collects small writes into one send, and must still pass on each chunk as it comes. The
/// backend holds back its second chunk until the client has received the first, so a gateway
/// that waited for more data would never deliver it.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_bodies_are_not_held_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (first_seen_tx, first_seen_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "request ended early");
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await
            .unwrap();
        first_seen_rx.await.unwrap();
        s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
        // Keep the connection open until the gateway is done with it.
        let _ = s.read(&mut buf).await;
    });
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("svc.yaml", service("default", "stream", &[backend_addr])),
        (
            "route.yaml",
            backend_route("r", &["name: gw"], &[], "stream"),
        ),
    ])
    .await;
    let c = client_for(gw.addr(8080), &[]);
    let mut resp = c.get(gw.url(8080, "/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let wait = std::time::Duration::from_secs(10);
    let first = tokio::time::timeout(wait, resp.chunk())
        .await
        .expect("the first chunk was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first");
    first_seen_tx.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(c) = tokio::time::timeout(wait, resp.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"second");
}

/// `--threads 3` runs three data-path workers, each a thread of its own, and every one of them
/// takes connections from the shared listening socket.
#[tokio::test(flavor = "multi_thread")]
async fn every_worker_thread_accepts_connections() {
    let app = echo("app").await;
    let files = [
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        (
            "route.yaml",
            backend_route("app", &["name: gw"], &[], "app"),
        ),
        ("app.yaml", service("default", "app", &[app.addr])),
    ];
    let gw = Gateway::start_with(&files, &["--threads", "3"]).await;

    let mut threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.pid()))
        .expect("the gateway's threads are listed")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("sluice-worker-"))
        .collect();
    threads.sort();
    assert_eq!(
        threads,
        ["sluice-worker-0", "sluice-worker-1", "sluice-worker-2"]
    );

    // A fresh connection per request: which worker accepts it is up to the race between them,
    // so with three workers and 60 connections each one takes some.
    for _ in 0..60 {
        let c = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = c.get(gw.url(8080, "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["service"], "app");
    }
    let metrics = gw.admin_text("/metrics").await;
    for worker in 0..3 {
        let line = format!("sluice_worker_connections_total{{worker=\"{worker}\"}}");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"));
        assert!(
            count > 0,
            "worker {worker} accepted no connection:\n{metrics}"
        );
    }
}

/// Cleartext HTTP/2 with prior knowledge (how plaintext gRPC clients connect) is served on an
/// HTTP listener, beside HTTP/1.1 on the same port; an HTTP/1 request shorter than the HTTP/2
/// preface is answered, not held waiting for more bytes.
#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_on_http_listeners() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = echo("app").await;
    let gw = Gateway::start(&[
        (
            "gw.yaml",
            format!("{GATEWAY_CLASS}---\n{}", http_gateway("gw")),
        ),
        ("svc.yaml", service("default", "app", &[app.addr])),
        ("route.yaml", backend_route("r", &["name: gw"], &[], "app")),
    ])
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = h2.get(gw.url(8080, "/h2c")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (body["service"].as_str(), body["path"].as_str()),
            (Some("app"), Some("/h2c"))
        );
    }
    let r = client_for(gw.addr(8080), &[])
        .get(gw.url(8080, "/h1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    // 18 bytes, shorter than the 24-byte HTTP/2 preface.
    let mut s = tokio::net::TcpStream::connect(gw.addr(8080)).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut resp),
    )
    .await
    .expect("an answer to a short HTTP/1.0 request")
    .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
        "{resp}"
    );
}
