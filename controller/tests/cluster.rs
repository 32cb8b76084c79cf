//! The controller against a real API server: objects applied with kubectl and kube-rs, status
//! read back from the API server, traffic through gateway processes the controller configures.

#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

mod support;

use std::time::Instant;

use kube::api::{Patch, PatchParams};
use kube::Api;
use support::*;

/// Status conditions and supportedFeatures as the API server holds them; traffic follows
/// updates and deletes; a bad route is reported while the rest keeps serving.
#[tokio::test]
async fn status_and_traffic_follow_the_cluster() {
    let scope = Scope::new("follow", 31);
    let a = echo("echo-a").await;
    let b = echo("echo-b").await;
    let _ctl = controller(&scope, 0, &["--local-gateways"]);
    apply(&scope.gateway("web", "  - {name: http, port: 8081, protocol: HTTP}\n"));
    apply(&scope.service("echo", &[a.addr]));
    apply(&scope.service("other", &[b.addr]));
    apply(&scope.route("one", "web", "echo"));

    let ip = scope.programmed("web").await;
    assert_eq!(ip, scope.first_address());
    scope
        .route_condition("one", "Accepted", "True", "Accepted")
        .await;
    scope
        .route_condition("one", "ResolvedRefs", "True", "ResolvedRefs")
        .await;

    // Every condition carries the generation it was written for.
    let gw = get("Gateway", Some(&scope.namespace), "web").await.unwrap();
    let generation = gw["metadata"]["generation"].as_i64().unwrap();
    for c in gw["status"]["conditions"].as_array().unwrap() {
        assert_eq!(c["observedGeneration"].as_i64(), Some(generation), "{c}");
    }
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
    let class = get("GatewayClass", None, &scope.class).await.unwrap();
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    let features: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(features, sluice_translate::SUPPORTED_FEATURES);
    // Status is ours through the status subresource, under our field manager.
    let managers: Vec<&str> = gw["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subresource"] == "status")
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["sluice-controller"]);

    let url = format!("http://{ip}:8081/one");
    wait_for(20, "route one served", || async {
        (who(&url).await == "echo-a").then_some(())
    })
    .await;

    // An update with kube-rs: the EndpointSlice now points at b.
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client().await, &scope.namespace);
    let patch = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": b.addr.port()}],
        "endpoints": [{"addresses": [b.addr.ip().to_string()], "conditions": {"ready": true}}],
    });
    let t = Instant::now();
    slices
        .patch(
            "echo-abc",
            &PatchParams::apply("sluice-test").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    wait_for(10, "traffic follows the EndpointSlice", || async {
        (who(&url).await == "echo-b").then_some(())
    })
    .await;
    println!("endpoint change served after {:?}", t.elapsed());

    // A bad route (its Service does not exist) is reported; route one keeps serving.
    apply(&scope.route("bad", "web", "missing"));
    scope
        .route_condition("bad", "ResolvedRefs", "False", "BackendNotFound")
        .await;
    assert_eq!(who(&url).await, "echo-b");
    assert_eq!(who(&format!("http://{ip}:8081/bad")).await, "500");

    // A delete: route one goes away.
    let t = Instant::now();
    kubectl(&["delete", "-n", &scope.namespace, "httproute", "one"], "");
    wait_for(10, "route one no longer served", || async {
        (who(&url).await == "404").then_some(())
    })
    .await;
    println!("route delete served after {:?}", t.elapsed());
    wait_for(10, "attachedRoutes drops to 1", || async {
        let gw = scope.gateway_status("web").await;
        (gw["listeners"][0]["attachedRoutes"] == 1).then_some(())
    })
    .await;
}

/// The controller killed (SIGKILL): its gateway keeps serving; changes made meanwhile are
/// served once it is back. A gateway restarted while the controller is away serves its cached
/// snapshot; reconnected, it converges.
#[tokio::test]
async fn gateways_keep_serving_without_the_controller() {
    let scope = Scope::new("away", 32);
    let a = echo("echo-a").await;
    let b = echo("echo-b").await;
    let port = free_port();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("web.json");
    let mut ctl = controller(&scope, port, &[]);
    apply(&scope.gateway("web", "  - {name: http, port: 8082, protocol: HTTP}\n"));
    apply(&scope.service("echo", &[a.addr]));
    apply(&scope.route("one", "web", "echo"));
    // Without --local-gateways the controller runs in cluster mode: status shows the
    // Service's address; this test's gateway process listens on the translated one.
    scope.programmed("web").await;
    let ip = scope.first_address();
    let tls = cache_dir.path();
    discovery_certificate(&scope, "web", tls).await;
    // The stream is mTLS: a certificate asking for another Gateway gets nothing.
    let liar = gateway_as(&scope, "other", port, &tls.join("x.json"), tls);
    liar.wait_log("not Gateway").await;
    let mut gw = gateway_as(&scope, "web", port, &cache, tls);
    let url = format!("http://{ip}:8082/one");
    wait_for(20, "served through the gateway", || async {
        (who(&url).await == "echo-a").then_some(())
    })
    .await;
    apply(&scope.route("two", "web", "echo"));
    scope
        .route_condition("two", "Accepted", "True", "Accepted")
        .await;

    ctl.kill();
    for _ in 0..20 {
        assert_eq!(
            who(&url).await,
            "echo-a",
            "served while the controller is away"
        );
    }
    // A restarted gateway serves from its cache before any controller answers.
    gw.kill();
    let gw2 = gateway_as(&scope, "web", port, &cache, tls);
    gw2.wait_log("serving the cached snapshot").await;
    assert_eq!(who(&url).await, "echo-a");

    // Changed while the controller is away; served after it is back. Route two moves to a
    // Gateway that is not ours: the controller that comes back removes its entry there.
    apply(&scope.service("echo", &[b.addr]));
    apply(&scope.route("two", "elsewhere", "echo"));
    assert_eq!(who(&url).await, "echo-a");
    let _ctl = controller(&scope, port, &[]);
    wait_for(
        30,
        "the gateway converges after the controller is back",
        || async { (who(&url).await == "echo-b").then_some(()) },
    )
    .await;
    gw2.wait_log("connected to the controller").await;
    wait_for(20, "route two without our parents entry", || async {
        let r = get("HTTPRoute", Some(&scope.namespace), "two").await?;
        let ours = r["status"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["controllerName"] == scope.controller_name.as_str());
        (!ours).then_some(())
    })
    .await;
}

/// A listener that cannot open its socket (the port is held by another process) is reported
/// as the gateway answered it.
#[tokio::test]
async fn bind_failures_reported_by_the_gateway_become_status() {
    let scope = Scope::new("bind", 33);
    let ip = scope.first_address();
    let _holder = std::net::TcpListener::bind((ip, 8083)).unwrap();
    let _ctl = controller(&scope, 0, &["--local-gateways"]);
    apply(&scope.gateway(
        "web",
        "  - {name: taken, port: 8083, protocol: HTTP}\n  - {name: free, port: 8084, protocol: HTTP}\n",
    ));
    wait_for(20, "listener taken: PortUnavailable", || async {
        let st = scope.gateway_status("web").await;
        let l = st["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == "taken")?
            .clone();
        (condition(&l["conditions"], "Accepted")? == ("False".into(), "PortUnavailable".into()))
            .then_some(())
    })
    .await;
    let st = scope.gateway_status("web").await;
    let free = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "free")
        .unwrap();
    assert_eq!(
        condition(&free["conditions"], "Programmed"),
        Some(("True".into(), "Programmed".into()))
    );
}

/// Two replicas on one Lease: only the leader writes status; killed, the other takes over
/// and writes what changed.
#[tokio::test]
async fn two_controllers_fail_over_the_lease_without_double_writes() {
    let scope = Scope::new("lease", 34);
    let ns = scope.namespace.clone();
    let args = ["--leader-elect", "--lease-name", "ctl"];
    let mut a = controller(&scope, 0, &args);
    a.wait_log("lease: leading").await;
    let port_b = free_port();
    let b = controller(&scope, port_b, &args);
    b.wait_log("leader=false").await;
    apply(&scope.gateway("web", "  - {name: one, port: 8085, protocol: HTTP}\n"));
    scope.programmed("web").await;
    assert!(a.log_count("status written") > 0, "the leader writes");
    assert_eq!(
        b.log_count("status written"),
        0,
        "the follower never writes:\n{}",
        b.logs()
    );
    let lease = get("Lease", Some(&ns), "ctl").await.unwrap();
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(holder.ends_with(&format!("-{}", a.pid())), "{holder}");

    // A gateway whose stream ends at the follower: what it cannot bind still reaches status,
    // through the follower's report to the leader.
    let _holder = std::net::TcpListener::bind((scope.first_address(), 8085)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    discovery_certificate(&scope, "web", dir.path()).await;
    let _gw = gateway_as(
        &scope,
        "web",
        port_b,
        &dir.path().join("web.json"),
        dir.path(),
    );
    wait_for(
        20,
        "listener one PortUnavailable, via the follower",
        || async {
            let st = scope.gateway_status("web").await;
            let l = st["listeners"].as_array()?.first()?.clone();
            (condition(&l["conditions"], "Accepted")? == ("False".into(), "PortUnavailable".into()))
                .then_some(())
        },
    )
    .await;
    assert_eq!(b.log_count("status written"), 0, "{}", b.logs());

    let t = Instant::now();
    a.kill();
    b.wait_log("lease: leading").await;
    println!("failover after {:?}", t.elapsed());
    apply(&scope.gateway(
        "web",
        "  - {name: one, port: 8085, protocol: HTTP}\n  - {name: two, port: 8086, protocol: HTTP}\n",
    ));
    wait_for(20, "the new leader writes the change", || async {
        let st = scope.gateway_status("web").await;
        (st["listeners"].as_array()?.len() == 2).then_some(())
    })
    .await;
    // Its log line may trail what the API server already shows.
    b.wait_log("status written").await;
}

/// A TLS Secret rotated in the cluster: the HTTPS listener serves the new certificate.
#[tokio::test]
async fn a_rotated_tls_secret_is_served() {
    let scope = Scope::new("rotate", 35);
    let backend = echo("echo-a").await;
    let _ctl = controller(&scope, 0, &["--local-gateways"]);
    let old_ca = sluice_testing::TestCa::new();
    let new_ca = sluice_testing::TestCa::new();
    let host = "tls.example.com";
    apply(&old_ca.secret(&scope.namespace, "cert", &[host]));
    apply(&scope.gateway(
        "web",
        &format!(
            "  - name: https\n    port: 8443\n    protocol: HTTPS\n    hostname: {host}\n    \
             tls: {{certificateRefs: [{{name: cert}}]}}\n"
        ),
    ));
    apply(&scope.service("echo", &[backend.addr]));
    apply(&scope.route("one", "web", "echo"));
    let ip = scope.programmed("web").await;
    let addr = std::net::SocketAddr::new(ip, 8443);
    let client = |ca: &sluice_testing::TestCa| {
        reqwest::Client::builder()
            .add_root_certificate(ca.reqwest_cert())
            .resolve(host, addr)
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let url = format!("https://{host}:8443/one");
    let (old, new) = (client(&old_ca), client(&new_ca));
    wait_for(20, "served with the first certificate", || async {
        let r = old.get(&url).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(new.get(&url).send().await.is_err(), "not yet the new CA's");

    apply(&new_ca.secret(&scope.namespace, "cert", &[host]));
    wait_for(10, "served with the rotated certificate", || async {
        let r = new.get(&url).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    // New connections get the new certificate only.
    let fresh = client(&old_ca);
    assert!(fresh.get(&url).send().await.is_err());
}

/// Cluster mode: the controller applies and owns each accepted Gateway's ServiceAccount,
/// Service, Deployment and PodDisruptionBudget, reports the Service's address in status, and
/// deletes them when the Gateway is no longer ours.
#[tokio::test]
async fn gateway_infrastructure_is_applied_and_owned() {
    let scope = Scope::new("infra", 36);
    let mut ctl = controller(&scope, 0, &["--gateway-image", "sluice/sluice:test"]);
    apply(&scope.gateway(
        "web",
        "  - {name: http, port: 8087, protocol: HTTP}\n  - {name: other, port: 8088, protocol: HTTP}\n",
    ));
    let address = scope.programmed("web").await;
    let svc = wait_for(20, "the gateway Service", || async {
        get("Service", Some(&scope.namespace), "web-sluice").await
    })
    .await;
    assert_eq!(
        svc["spec"]["clusterIP"].as_str(),
        Some(address.to_string().as_str())
    );
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [8087, 8088]);
    let gw = get("Gateway", Some(&scope.namespace), "web").await.unwrap();
    for kind in [
        "ServiceAccount",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        let o = wait_for(20, &format!("the gateway {kind}"), || async {
            get(kind, Some(&scope.namespace), "web-sluice").await
        })
        .await;
        let owner = &o["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Gateway", "{kind}");
        assert_eq!(owner["uid"], gw["metadata"]["uid"], "{kind}");
        assert_eq!(owner["controller"], true, "{kind}");
    }
    let deploy = get("Deployment", Some(&scope.namespace), "web-sluice")
        .await
        .unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "sluice/sluice:test");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let gateway_ref = format!("{}/web", scope.namespace);
    assert!(
        args.windows(2)
            .any(|w| w == ["--gateway", gateway_ref.as_str()]),
        "{args:?}"
    );
    assert!(args.contains(&"--bind-any"), "{args:?}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");

    // Moved to a class that is not ours: its objects go.
    apply(&scope.gateway_of_class(
        "web",
        "  - {name: http, port: 8087, protocol: HTTP}
",
        "someone-else",
    ));
    wait_deleted("Deployment", &scope.namespace, "web-sluice").await;

    // Changed while no controller runs: the next one takes the objects of our classes over
    // and deletes those of a Gateway that is no longer ours, keeping the others.
    apply(&scope.gateway("one", "  - {name: http, port: 8091, protocol: HTTP}\n"));
    apply(&scope.gateway("two", "  - {name: http, port: 8092, protocol: HTTP}\n"));
    for name in ["one-sluice", "two-sluice"] {
        wait_for(20, &format!("Deployment {name}"), || async {
            get("Deployment", Some(&scope.namespace), name).await
        })
        .await;
    }
    ctl.kill();
    apply(&scope.gateway_of_class(
        "two",
        "  - {name: http, port: 8092, protocol: HTTP}
",
        "someone-else",
    ));
    let ctl = controller(
        &scope,
        0,
        &[
            "--gateway-image",
            "sluice/sluice:test",
            "--service-external-ips",
        ],
    );
    ctl.wait_log("took over the gateway objects").await;
    wait_deleted("Deployment", &scope.namespace, "two-sluice").await;
    assert!(get("Deployment", Some(&scope.namespace), "one-sluice")
        .await
        .is_some());

    // A requested address (spec.addresses) is the Service's external IP and the Gateway's
    // address (a documentation range: nothing is sent to it).
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: fixed, namespace: {}}}\n\
         spec:\n  gatewayClassName: {}\n  addresses: [{{type: IPAddress, value: 198.51.100.77}}]\n\
         \x20 listeners: [{{name: http, port: 8093, protocol: HTTP}}]\n",
        scope.namespace, scope.class
    ));
    let address = scope.programmed("fixed").await;
    assert_eq!(address.to_string(), "198.51.100.77");
    let svc = get("Service", Some(&scope.namespace), "fixed-sluice")
        .await
        .expect("the Service of Gateway fixed");
    assert_eq!(
        svc["spec"]["externalIPs"],
        serde_json::json!(["198.51.100.77"])
    );
}

/// The Helm chart's RBAC is all the controller needs: a controller acting as the chart's
/// ServiceAccount (impersonated) watches, writes status, applies a Gateway's objects and its
/// discovery Secret, keeps its CA and holds its Lease, with nothing forbidden. Needs the chart
/// installed in sluice-system (`scripts/test.sh` does it with `scripts/helm.sh install`).
#[tokio::test]
async fn the_charts_rbac_is_enough() {
    let installed = kubectl(
        &["get", "serviceaccount", "-n", "sluice-system", "-o", "name"],
        "",
    )
    .contains("serviceaccount/sluice-controller");
    assert!(
        installed,
        "the chart is not installed: run scripts/helm.sh install (scripts/test.sh does)"
    );
    // On a node the chart's own controllers run and hold the Lease `sluice-controller`, the
    // only one the chart's Role lets its ServiceAccount update: stop them for this test (they
    // release the Lease as they go) and start them again at the end.
    let deploy = ["-n", "sluice-system", "deployment/sluice-controller"];
    let replicas = kubectl(
        &[&["get"], &deploy[..], &["-o", "jsonpath={.spec.replicas}"]].concat(),
        "",
    );
    kubectl(&[&["scale"], &deploy[..], &["--replicas=0"]].concat(), "");
    wait_for(60, "the chart's controller Pods gone", || async {
        let pods = [
            "get",
            "pods",
            "-n",
            "sluice-system",
            "-l",
            "app.kubernetes.io/component=controller",
            "-o",
            "name",
        ];
        kubectl(&pods, "").trim().is_empty().then_some(())
    })
    .await;
    let scope = Scope::new("rbac", 37);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    impersonating_kubeconfig(
        &kc,
        "system:serviceaccount:sluice-system:sluice-controller",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:sluice-system",
            "system:authenticated",
        ],
    );
    let ctl = controller_as(&scope, &kc, "sluice-system", &["--leader-elect"]);
    ctl.wait_log("lease: leading").await;
    let backend = echo("echo-a").await;
    apply(&scope.gateway("web", "  - {name: http, port: 8090, protocol: HTTP}\n"));
    apply(&scope.service("echo", &[backend.addr]));
    apply(&scope.route("one", "web", "echo"));
    scope.programmed("web").await;
    scope
        .route_condition("one", "Accepted", "True", "Accepted")
        .await;
    for kind in [
        "ServiceAccount",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ] {
        wait_for(20, &format!("the gateway {kind}"), || async {
            get(kind, Some(&scope.namespace), "web-sluice").await
        })
        .await;
    }
    let class = get("GatewayClass", None, &scope.class).await.unwrap();
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(ctl.log_count("forbidden"), 0, "{}", ctl.logs());
    kubectl(
        &[
            &["scale"],
            &deploy[..],
            &[&format!("--replicas={replicas}")],
        ]
        .concat(),
        "",
    );
}

/// GRPCRoutes, TCPRoutes and UDPRoutes from the API server (TCP and UDP at `v1`): status
/// written under each kind, and traffic of each through a local gateway.
#[tokio::test]
async fn grpc_tcp_and_udp_routes_from_the_cluster() {
    use conformance::echo::Identity;
    use conformance::grpc_echo::pb::grpc_echo_client::GrpcEchoClient;
    use conformance::grpc_echo::pb::EchoRequest;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let scope = Scope::new("l4", 38);
    let id = |pod: &str| Identity {
        pod: pod.into(),
        service: pod.into(),
        ..Identity::default()
    };
    let any = std::net::SocketAddr::new(backend_ip(), 0);
    let grpc = conformance::grpc_echo::serve(any, id("grpc-echo"))
        .await
        .unwrap();
    let tcp = conformance::l4_echo::serve_tcp(any, id("tcp-echo"), None)
        .await
        .unwrap();
    let udp = conformance::l4_echo::serve_udp(any, id("udp-echo"))
        .await
        .unwrap();
    let _ctl = controller(&scope, 0, &["--local-gateways"]);
    apply(&scope.gateway(
        "mixed",
        "  - {name: grpc, port: 8091, protocol: HTTP}\n  - {name: tcp, port: 9091, protocol: TCP}\n  - {name: udp, port: 5391, protocol: UDP}\n",
    ));
    apply(&scope.service("grpc-echo", &[grpc.addr]));
    apply(&scope.service("tcp-echo", &[tcp.addr]));
    apply(&scope.service("udp-echo", &[udp.addr]).replace(
        "{name: http, port: 80,",
        "{name: http, protocol: UDP, port: 80,",
    ));
    let ns = &scope.namespace;
    apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: grpc, namespace: {ns}}}\n\
         spec:\n  parentRefs: [{{name: mixed, sectionName: grpc}}]\n  rules:\n  - backendRefs: [{{name: grpc-echo, port: 80}}]\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: tcp, namespace: {ns}}}\n\
         spec:\n  parentRefs: [{{name: mixed, sectionName: tcp}}]\n  rules:\n  - backendRefs: [{{name: tcp-echo, port: 80}}]\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute\nmetadata: {{name: udp, namespace: {ns}}}\n\
         spec:\n  parentRefs: [{{name: mixed, sectionName: udp}}]\n  rules:\n  - backendRefs: [{{name: udp-echo, port: 80}}]\n"
    ));
    let ip = scope.programmed("mixed").await;
    for kind in ["GRPCRoute", "TCPRoute", "UDPRoute"] {
        let name = kind.trim_end_matches("Route").to_ascii_lowercase();
        wait_for(20, &format!("{kind} accepted"), || async {
            let r = get(kind, Some(ns), &name).await?;
            let parent = r["status"]["parents"].as_array()?.first()?.clone();
            let ok = condition(&parent["conditions"], "Accepted")?.0 == "True"
                && condition(&parent["conditions"], "ResolvedRefs")?.0 == "True";
            ok.then_some(())
        })
        .await;
    }

    // gRPC over h2c to the GRPCRoute's backend.
    let pod = wait_for(20, "a gRPC call answered", || async {
        let mut c = GrpcEchoClient::connect(format!("http://{ip}:8091"))
            .await
            .ok()?;
        let r = c.echo(EchoRequest {}).await.ok()?.into_inner();
        Some(r.assertions?.context?.pod)
    })
    .await;
    assert_eq!(pod, "grpc-echo");

    // TCP: the echo's welcome line and its answer to TEST.
    let answer = wait_for(20, "a TCP exchange", || async {
        let s = tokio::net::TcpStream::connect((ip, 9091)).await.ok()?;
        let mut s = tokio::io::BufReader::new(s);
        let mut line = String::new();
        s.read_line(&mut line).await.ok()?;
        s.get_mut().write_all(b"TEST\n").await.ok()?;
        line.clear();
        s.read_line(&mut line).await.ok()?;
        serde_json::from_str::<serde_json::Value>(&line).ok()
    })
    .await;
    assert_eq!(answer["pod"], "tcp-echo");

    // UDP: one datagram, its JSON answer from the listener's address.
    let answer = wait_for(20, "a UDP answer", || async {
        let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
        s.connect((ip, 5391)).await.ok()?;
        s.send(b"ping").await.ok()?;
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&buf[..n]).ok()
    })
    .await;
    assert_eq!(answer["pod"], "udp-echo");
    assert_eq!(answer["request"], "ping");
}
