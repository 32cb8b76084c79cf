//! The gRPC echo backend answers a real tonic client over a real socket with what it saw.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use conformance::echo::Identity;
use conformance::grpc_echo::pb::grpc_echo_client::GrpcEchoClient;
use conformance::grpc_echo::pb::EchoRequest;
use conformance::grpc_echo::{serve, SERVICE};

#[tokio::test]
async fn each_method_answers_with_the_request_it_saw() {
    let identity = Identity {
        namespace: "ns".into(),
        ingress: String::new(),
        service: "grpc-echo".into(),
        pod: "grpc-echo-1".into(),
    };
    let server = serve("127.0.0.1:0".parse().unwrap(), identity)
        .await
        .unwrap();
    let url = format!("http://{}", server.addr);
    let mut client = GrpcEchoClient::connect(url).await.unwrap();
    for method in ["Echo", "EchoTwo", "EchoThree"] {
        let mut req = tonic::Request::new(EchoRequest {});
        req.metadata_mut()
            .insert("x-test", format!("value-{method}").parse().unwrap());
        let resp = match method {
            "Echo" => client.echo(req).await,
            "EchoTwo" => client.echo_two(req).await,
            _ => client.echo_three(req).await,
        }
        .unwrap()
        .into_inner();
        let a = resp.assertions.unwrap();
        assert_eq!(a.fully_qualified_method, format!("/{SERVICE}/{method}"));
        assert_eq!(a.authority, server.addr.to_string());
        let header = |k: &str| {
            a.headers
                .iter()
                .find(|h| h.key == k)
                .map(|h| h.value.clone())
        };
        assert_eq!(header("x-test"), Some(format!("value-{method}")));
        assert_eq!(header(":authority"), Some(server.addr.to_string()));
        let ctx = a.context.unwrap();
        assert_eq!(
            (ctx.namespace.as_str(), ctx.pod.as_str()),
            ("ns", "grpc-echo-1")
        );
        assert_eq!(ctx.service_name, "grpc-echo");
        assert!(a.tls_assertions.is_none());
    }
}

/// The `echo` binary serves it when GRPC_ECHO_SERVER is set, as upstream's echo server does.
#[tokio::test]
async fn the_binary_serves_grpc_when_asked_by_the_environment() {
    use tokio::io::AsyncBufReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("GRPC_ECHO_SERVER", "1")
        .env("POD_NAME", "from-env")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("gRPC echo listening") {
                return;
            }
        }
        panic!("echo exited before listening");
    });
    ready
        .await
        .expect("the gRPC echo server starts within 20 s");
    let mut client = GrpcEchoClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let a = client
        .echo(EchoRequest {})
        .await
        .unwrap()
        .into_inner()
        .assertions
        .unwrap();
    assert_eq!(a.context.unwrap().pod, "from-env");
}
