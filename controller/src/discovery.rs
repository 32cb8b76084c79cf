//! Configuration discovery, the controller's side: every gateway process opens a stream, names
//! its Gateway, and is sent that Gateway's slice of the latest translation, again whenever the
//! slice changes; it answers each snapshot with an ACK or a NACK, which reach the controller's
//! loop (listener sockets a gateway could not open become status).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use sluice_api::resources::NsName;
use sluice_config::Config;
use sluice_proto::v1::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use sluice_proto::v1::{gateway_message, Ack, GatewayMessage, Snapshot};

/// The configuration all streams serve from.
#[derive(Clone, Default)]
pub struct Published {
    /// 0 until the first translation: no snapshot is sent before it.
    pub version: u64,
    pub config: Arc<Config>,
}

/// What a gateway answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub gateway: NsName,
    pub instance: String,
    pub version: u64,
    /// `None` for an ACK; the gateway's reason for a NACK.
    pub error: Option<String>,
    pub bind_failures: BTreeMap<SocketAddr, String>,
}

/// A gateway connected or disconnected, or answered a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Connected { gateway: NsName, instance: String },
    Answered(Answer),
    Disconnected { gateway: NsName, instance: String },
}

#[derive(Clone)]
pub struct Discovery {
    published: watch::Sender<Published>,
    events: mpsc::UnboundedSender<Event>,
}

impl Discovery {
    pub fn new() -> (Discovery, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let (published, _) = watch::channel(Published::default());
        (Discovery { published, events }, rx)
    }

    /// Makes `config` what every stream serves; streams whose slice changed send it.
    pub fn publish(&self, version: u64, config: Config) {
        self.published.send_replace(Published {
            version,
            config: Arc::new(config),
        });
    }

    pub fn server(&self) -> ConfigDiscoveryServer<Discovery> {
        ConfigDiscoveryServer::new(self.clone())
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for Discovery {
    type StreamStream = SnapshotStream;

    async fn stream(
        &self,
        request: Request<Streaming<GatewayMessage>>,
    ) -> Result<Response<SnapshotStream>, Status> {
        // The client certificate names the one Gateway this stream may be told about.
        let identity = request.peer_certs().and_then(|certs| {
            certs
                .first()
                .and_then(|c| crate::ca::gateway_of(c.as_ref()))
        });
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))?;
        let hello = match first? {
            Some(GatewayMessage {
                message: Some(gateway_message::Message::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
        };
        let gateway = match hello.gateway.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => NsName::new(ns, name),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "Hello.gateway: {:?} is not namespace/name",
                    hello.gateway
                )))
            }
        };
        if identity.as_ref() != Some(&gateway) {
            let who = identity.map_or("no Gateway".to_string(), |g| format!("Gateway {g}"));
            warn!(%gateway, certificate = %who, "refused: the client certificate is not this Gateway's");
            return Err(Status::permission_denied(format!(
                "the client certificate is issued to {who}, not Gateway {gateway}"
            )));
        }
        let instance = hello.instance.clone();
        info!(%gateway, %instance, serving = hello.serving_version, "gateway connected");
        let _ = self.events.send(Event::Connected {
            gateway: gateway.clone(),
            instance: instance.clone(),
        });
        let (tx, rx) = mpsc::channel(2);
        let published = self.published.subscribe();
        let events = self.events.clone();
        tokio::spawn(serve_stream(
            gateway, instance, inbound, published, events, tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// One gateway's stream: sends its slice whenever it changes, passes its answers on.
async fn serve_stream(
    gateway: NsName,
    instance: String,
    mut inbound: Streaming<GatewayMessage>,
    mut published: watch::Receiver<Published>,
    events: mpsc::UnboundedSender<Event>,
    tx: mpsc::Sender<Result<Snapshot, Status>>,
) {
    let mut last_sent: Option<Vec<u8>> = None;
    loop {
        let next = {
            let p = published.borrow_and_update();
            (p.version > 0).then(|| (p.version, p.config.for_gateway(&gateway)))
        };
        if let Some((version, mut slice)) = next {
            // Encoded without its version, which `Snapshot.version` carries: the same
            // content under a new version is not sent again.
            slice.version = 0;
            match serde_json::to_vec(&slice) {
                Ok(config) if last_sent.as_ref() != Some(&config) => {
                    debug!(%gateway, version, bytes = config.len(), "sending snapshot");
                    let snap = Snapshot {
                        version,
                        config: config.clone(),
                        format: sluice_proto::FORMAT_JSON.into(),
                    };
                    if tx.send(Ok(snap)).await.is_err() {
                        break;
                    }
                    last_sent = Some(config);
                }
                Ok(_) => {}
                Err(e) => warn!(%gateway, "cannot encode the snapshot: {e}"),
            }
        }
        tokio::select! {
            changed = published.changed() => if changed.is_err() { break },
            msg = inbound.message() => match msg {
                Ok(Some(GatewayMessage { message: Some(gateway_message::Message::Ack(ack)) })) => {
                    let _ = events.send(Event::Answered(answer(&gateway, &instance, ack)));
                }
                Ok(Some(_)) => warn!(%gateway, "unexpected message on the stream; ignored"),
                Ok(None) => break,
                Err(e) => { debug!(%gateway, "stream ended: {e}"); break }
            },
            () = tx.closed() => break,
        }
    }
    info!(%gateway, %instance, "gateway disconnected");
    let _ = events.send(Event::Disconnected { gateway, instance });
}

fn answer(gateway: &NsName, instance: &str, ack: Ack) -> Answer {
    let mut bind_failures = BTreeMap::new();
    for f in ack.bind_failures {
        match f.address.parse() {
            Ok(addr) => {
                bind_failures.insert(addr, f.error);
            }
            Err(_) => {
                warn!(%gateway, address = %f.address, "bind failure with an unreadable address")
            }
        }
    }
    Answer {
        gateway: gateway.clone(),
        instance: instance.to_string(),
        version: ack.version,
        error: (!ack.error.is_empty()).then_some(ack.error),
        bind_failures,
    }
}
