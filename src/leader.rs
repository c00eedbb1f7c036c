//! Leader election on a `coordination.k8s.io` Lease, so that two replicas never both
//! write: only the holder runs the reconcilers. A standby takes over once the lease has
//! not been renewed for its duration. Every write to the Lease is a replace with the
//! resourceVersion read, so two candidates cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

/// How a candidate takes part.
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderSettings {
    /// Elect a leader among replicas (only the leader reconciles). Default: on in a
    /// cluster (a pod), off elsewhere (`tenantry run` on a laptop needs no Lease and no
    /// operator namespace).
    #[arg(long, env = "TENANTRY_LEADER_ELECTION", action = clap::ArgAction::Set)]
    pub leader_election: Option<bool>,
    /// Name of the Lease, in the operator namespace.
    #[arg(
        long,
        env = "TENANTRY_LEADER_ELECTION_LEASE",
        default_value = "tenantry-leader"
    )]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal; a standby takes over after it.
    #[arg(
        long,
        env = "TENANTRY_LEADER_ELECTION_LEASE_SECONDS",
        default_value_t = 15
    )]
    pub lease_seconds: u32,
    /// This replica's identity (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl LeaderSettings {
    /// Whether to elect a leader: as set, else whether this process runs in a pod.
    pub fn enabled(&self) -> bool {
        self.leader_election.unwrap_or_else(in_cluster)
    }
}

/// Whether this process runs in a Kubernetes pod (the kubelet sets this variable in
/// every container).
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, settings: &LeaderSettings) -> Self {
        let identity = settings.identity.clone().unwrap_or_else(|| {
            let mut raw = [0u8; 4];
            let _ = getrandom::fill(&mut raw);
            format!("tenantry-{}", crate::names::hex(&raw))
        });
        Self {
            api: Api::namespaced(client, namespace),
            name: settings.lease_name.clone(),
            identity,
            duration: Duration::from_secs(settings.lease_seconds.max(2).into()),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the leader renews, and a standby retries.
    fn period(&self) -> Duration {
        self.duration / 3
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let same_holder =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if same_holder {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if same_holder || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    }

    /// One attempt to take or keep the lease. Ok(true) when we hold it now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_us = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(secs)) => {
                now > *renewed + SignedDuration::from_secs(secs.into())
            }
            _ => true,
        };
        if !(held_by_us || free || expired) {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&spec), now));
        // The resourceVersion we read makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        info!(identity = %self.identity, lease = %self.name, "waiting to lead");
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => warn!(
                    "leader election: the operator namespace does not exist; create it or set --operator-namespace (TENANTRY_NAMESPACE)"
                ),
                Err(e) => warn!(error = %e, "leader election: reading the lease failed"),
            }
            tokio::time::sleep(self.period()).await;
        }
    }

    /// Renews the lease while leading; returns when leadership is lost (another holder,
    /// or no successful renewal within the lease duration).
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.period()).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(identity = %self.identity, "another replica holds the lease");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "renewing the lease failed");
                    if last_renewal.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up (on a clean shutdown), so a standby takes over at once.
    pub async fn release(&self) {
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
        spec.renew_time = None;
        let _ = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
        info!(identity = %self.identity, "released the lease");
    }
}
