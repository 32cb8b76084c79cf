//! The whole gateway in-process, started through the composition root the binary uses
//! (`gateway::app::build`): real sockets, a real echo backend, a real client. The other
//! integration tests run the binary as a subprocess.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::time::{Duration, Instant};

use gateway::app::{self, AppOptions};
use gateway::translate::Options;
use sluice_testing::{
    backend_route, echo, get_json, http_gateway, service, unique_ip, GATEWAY_CLASS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reloads_and_stops_in_process() {
    let ip = unique_ip();
    let web = echo("web").await;
    let dir = tempfile::tempdir().unwrap();
    let manifests = |route: &str| {
        [
            GATEWAY_CLASS.to_string(),
            http_gateway("gw"),
            service("default", "web", &[web.addr]),
            route.to_string(),
        ]
        .join("---\n")
    };
    let route = backend_route("web", &["name: gw"], &[], "web");
    std::fs::write(dir.path().join("all.yaml"), manifests(&route)).unwrap();

    let app = app::build(AppOptions {
        source: app::ConfigSource::Files {
            manifests: dir.path().to_path_buf(),
            translate: Options {
                bind: ip,
                ..Options::default()
            },
        },
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        access_log: false,
        threads: 1,
        drain_timeout: Duration::from_secs(5),
        egress_addr: None,
        egress_sni_addr: None,
    })
    .await
    .unwrap();
    let admin = app.admin_addr();
    let addr = std::net::SocketAddr::new(ip, 8080);
    assert_eq!(app.listening().await, vec![addr]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let (code, body, _) = get_json(&client, &format!("http://{addr}/")).await;
    assert_eq!((code, body["service"].as_str()), (200, Some("web")));

    // A change to the files is applied: the route now serves only /only.
    let narrowed = route.replace(
        "rules: [{backendRefs",
        "rules: [{matches: [{path: {type: PathPrefix, value: /only}}], backendRefs",
    );
    assert_ne!(narrowed, route);
    std::fs::write(dir.path().join("all.yaml"), manifests(&narrowed)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, config, _) = get_json(&client, &format!("http://{admin}/config")).await;
        if config["version"].as_u64() > Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no reload within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, _, _) = get_json(&client, &format!("http://{addr}/")).await;
    assert_eq!(code, 404);
    let (code, _, _) = get_json(&client, &format!("http://{addr}/only")).await;
    assert_eq!(code, 200);

    // Stopping closes the listeners and returns.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the gateway stops within 10 s")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
