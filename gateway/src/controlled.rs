//! The controller provider (`gateway run --controller URL --gateway NS/NAME`): the gateway's
//! configuration arrives over the discovery stream as versioned snapshots. The stream is
//! re-opened with backoff whenever it breaks, and the gateway keeps serving what it has
//! meanwhile; the last snapshot applied is kept in a local cache file, so a restarted gateway
//! serves it before the controller is reachable again.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use sluice_api::resources::NsName;
use sluice_config::Config;
use sluice_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use sluice_proto::v1::{gateway_message, Ack, BindFailure, GatewayMessage, Hello};

/// First and longest wait between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// `http://host:port` of the controller's discovery service.
    pub url: String,
    /// The Gateway this process serves.
    pub gateway: NsName,
    /// Names this process in the controller's logs.
    pub instance: String,
    /// Where the last applied snapshot is kept.
    pub snapshot_cache: Option<PathBuf>,
    /// Listen on every address (each listener's port), whatever address the snapshot gives:
    /// a gateway Pod, whose Gateway is reached through its Service.
    pub bind_any: bool,
    /// mTLS to the controller (an https URL): files read again at every connection, so a
    /// rotated certificate is used from the next one.
    pub tls: Option<ClientTls>,
}

#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The controller's CA.
    pub ca: PathBuf,
    /// This Gateway's client certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

async fn channel(opts: &ControllerOptions) -> anyhow::Result<tonic::transport::Channel> {
    // Keepalives: a controller that vanished without closing the connection (its node gone)
    // is noticed, and the gateway reconnects, instead of waiting on a dead stream.
    let mut endpoint = tonic::transport::Endpoint::from_shared(opts.url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(tls) = &opts.tls {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&tls.cert)?,
                read(&tls.key)?,
            ));
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint.connect().await?)
}

/// A snapshot received: its configuration, or why it could not be read (answered as a NACK).
pub struct Received {
    pub version: u64,
    pub config: Result<Config, String>,
}

/// The gateway's answer to one snapshot.
pub struct Answer {
    pub version: u64,
    pub error: Option<String>,
    pub bind_failures: Vec<(std::net::SocketAddr, String)>,
}

pub struct ControllerProvider {
    opts: ControllerOptions,
    received: mpsc::Receiver<Received>,
    answers: mpsc::UnboundedSender<Answer>,
    /// The configuration applied last, without its version: a snapshot with the same content
    /// (the controller resends the current one on every reconnect) is answered, not applied.
    applied: Option<Vec<u8>>,
    /// The sockets it could not open, answered again with an unchanged snapshot.
    failures: Vec<(std::net::SocketAddr, String)>,
}

impl ControllerProvider {
    /// Starts connecting in the background; returns the cached snapshot too, if there is one
    /// (the caller serves it; the controller is told its version).
    pub fn start(opts: ControllerOptions) -> (ControllerProvider, Option<Config>) {
        let (tx, received) = mpsc::channel(1);
        let (answers, answers_rx) = mpsc::unbounded_channel();
        let mut provider = ControllerProvider {
            opts: opts.clone(),
            received,
            answers,
            applied: None,
            failures: Vec::new(),
        };
        let cached = provider.cached();
        let serving = cached.as_ref().map_or(0, |c| c.version);
        tokio::spawn(connect_loop(opts, serving, tx, answers_rx));
        (provider, cached)
    }

    pub fn url(&self) -> &str {
        &self.opts.url
    }

    pub fn bind_any(&self) -> bool {
        self.opts.bind_any
    }

    /// The snapshot cache: the configuration applied last, if one was kept and reads.
    fn cached(&mut self) -> Option<Config> {
        let path = self.opts.snapshot_cache.as_ref()?;
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) => {
                self.applied = without_version(&config);
                Some(config)
            }
            Err(e) => {
                warn!(path = %path.display(), "snapshot cache does not read, ignored: {e}");
                None
            }
        }
    }

    /// The next snapshot whose content differs from what is served; one with the same
    /// content is answered at once.
    pub async fn next(&mut self) -> Option<(u64, Result<Config, String>)> {
        loop {
            let r = self.received.recv().await?;
            if let Ok(config) = &r.config {
                if self.applied.is_some() && without_version(config) == self.applied {
                    debug!(version = r.version, "snapshot unchanged");
                    self.answer(Answer {
                        version: r.version,
                        error: None,
                        bind_failures: self.failures.clone(),
                    });
                    continue;
                }
            }
            return Some((r.version, r.config));
        }
    }

    /// Records that `config` is served (and caches it), and answers the controller.
    pub fn applied(&mut self, config: &Config, answer: Answer) {
        self.applied = without_version(config);
        self.failures = answer.bind_failures.clone();
        if answer.error.is_none() {
            if let Some(path) = &self.opts.snapshot_cache {
                if let Err(e) = write_cache(path, config) {
                    warn!(path = %path.display(), "cannot write the snapshot cache: {e}");
                }
            }
        }
        self.answer(answer);
    }

    /// The sockets the cached snapshot could not open, answered with an unchanged snapshot.
    pub fn failed_to_bind(&mut self, failures: Vec<(std::net::SocketAddr, String)>) {
        self.failures = failures;
    }

    /// Answers a snapshot that was not applied (a NACK): the sockets are those of what is
    /// still served.
    pub fn refused(&self, version: u64, error: String) {
        self.answer(Answer {
            version,
            error: Some(error),
            bind_failures: self.failures.clone(),
        });
    }

    fn answer(&self, answer: Answer) {
        let _ = self.answers.send(answer);
    }
}

fn without_version(config: &Config) -> Option<Vec<u8>> {
    let mut v = serde_json::to_value(config).ok()?;
    v["version"] = 0.into();
    serde_json::to_vec(&v).ok()
}

/// Written to a temporary file and renamed, so a crash never leaves half a cache.
fn write_cache(path: &std::path::Path, config: &Config) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(config)?)?;
    std::fs::rename(&tmp, path)
}

/// Keeps a stream open: connects, says Hello, passes snapshots on and answers back; after
/// any failure waits (backoff doubling to `BACKOFF_MAX`) and connects again.
async fn connect_loop(
    opts: ControllerOptions,
    mut serving: u64,
    received: mpsc::Sender<Received>,
    mut answers: mpsc::UnboundedReceiver<Answer>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match stream_once(&opts, serving, &received, &mut answers).await {
            Ok(Some(v)) => {
                serving = v;
                backoff = BACKOFF_MIN;
            }
            Ok(None) => return, // the gateway is stopping
            Err(e) => {
                warn!(controller = %opts.url, "discovery stream: {e:#}; retrying in {backoff:?}")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One stream, until it breaks: `Ok(Some(version))` with the version answered last after the
/// controller ended it, `Ok(None)` when the gateway no longer listens.
async fn stream_once(
    opts: &ControllerOptions,
    serving: u64,
    received: &mpsc::Sender<Received>,
    answers: &mut mpsc::UnboundedReceiver<Answer>,
) -> anyhow::Result<Option<u64>> {
    let mut client = ConfigDiscoveryClient::new(channel(opts).await?);
    let (out, out_rx) = mpsc::channel(4);
    out.send(GatewayMessage {
        message: Some(gateway_message::Message::Hello(Hello {
            gateway: opts.gateway.to_string(),
            serving_version: serving,
            instance: opts.instance.clone(),
        })),
    })
    .await?;
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    info!(controller = %opts.url, gateway = %opts.gateway, "connected to the controller");
    let mut last = serving;
    loop {
        tokio::select! {
            snap = inbound.message() => {
                let Some(snap) = snap? else { return Ok(Some(last)) };
                let config = if snap.format != sluice_proto::FORMAT_JSON {
                    Err(format!("snapshot format {:?} is not {:?}", snap.format, sluice_proto::FORMAT_JSON))
                } else {
                    serde_json::from_slice::<Config>(&snap.config)
                        .map(|mut c| { c.version = snap.version; c })
                        .map_err(|e| format!("snapshot {} does not decode: {e}", snap.version))
                };
                if received.send(Received { version: snap.version, config }).await.is_err() {
                    return Ok(None);
                }
            }
            answer = answers.recv() => {
                let Some(a) = answer else { return Ok(None) };
                if a.error.is_none() {
                    last = a.version;
                }
                let ack = Ack {
                    version: a.version,
                    error: a.error.unwrap_or_default(),
                    bind_failures: a.bind_failures.into_iter()
                        .map(|(addr, error)| BindFailure { address: addr.to_string(), error })
                        .collect(),
                };
                out.send(GatewayMessage { message: Some(gateway_message::Message::Ack(ack)) }).await?;
            }
        }
    }
}
