//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! the holder renews every `RETRY`; a candidate takes the Lease over only when it has seen the
//! same record unchanged for the whole lease duration (its own clock, so clock skew between
//! nodes does not matter); every write carries the resourceVersion it read, so of two
//! candidates only one wins. A leader that cannot renew for `RENEW_DEADLINE` stops leading
//! before its Lease can expire for the others, so two replicas never write at once.
//!
//! Written here rather than taken from kube-leader-election 0.44: that crate takes an expired
//! Lease over with a merge patch that carries no resourceVersion, so two candidates can both
//! believe they lead until the next renewal.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(10);
/// A leader that could not renew for this long stops leading (shorter than the duration).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(7);
/// How often the holder renews and candidates try.
pub const RETRY: Duration = Duration::from_secs(2);
/// How long one campaign or renewal may take: with `RETRY`, a leader that cannot renew
/// notices within `RENEW_DEADLINE` + this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The record seen last and when it was first seen (the candidate's clock).
    observed: Option<(Option<LeaseSpec>, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            observed: None,
        }
    }

    /// Campaigns and renews until `stop` completes (then releases the Lease if held).
    /// `leading` says whether this replica leads now.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut last_renew: Option<Instant> = None;
        loop {
            // Bounded: a call that hangs must not keep us leading past the deadline.
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.try_acquire_or_renew());
            let result = match attempt.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no answer from the API server in {ATTEMPT_TIMEOUT:?}"
                )),
            };
            match result {
                Ok(true) => {
                    last_renew = Some(Instant::now());
                    if !*leading.borrow() {
                        info!(lease = %self.name, identity = %self.identity, "leading");
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if *leading.borrow() {
                        warn!(lease = %self.name, "lost the lease to another replica");
                        leading.send_replace(false);
                    }
                    last_renew = None;
                }
                Err(e) => {
                    warn!(lease = %self.name, "lease: {e}");
                    if *leading.borrow() && last_renew.is_none_or(|t| t.elapsed() > RENEW_DEADLINE)
                    {
                        warn!(lease = %self.name, "could not renew in time; no longer leading");
                        leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = &mut stop => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            self.release().await;
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let next = if holder == self.identity {
            // Renewal.
            let acquired = spec.acquire_time.clone().unwrap_or_else(|| now.clone());
            self.spec(acquired, now, spec.lease_transitions.unwrap_or(0))
        } else {
            if !holder.is_empty() && !self.expired(&spec) {
                return Ok(false);
            }
            // Taking over a released or expired Lease.
            self.spec(now.clone(), now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(next);
        // `replace` sends the resourceVersion read above: a concurrent write makes it fail.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = Some((l.spec, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Has the holder's record stayed the same for a whole lease duration, as we saw it?
    fn expired(&mut self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        match &self.observed {
            Some((seen, since)) if seen.as_ref() == Some(spec) => since.elapsed() > duration,
            _ => {
                self.observed = Some((Some(spec.clone()), Instant::now()));
                false
            }
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at once.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the lease"),
            Err(e) => warn!(lease = %self.name, "could not release the lease: {e}"),
        }
    }
}
