//! The controller: shared caches, one reconciler per kind, and their wiring.

mod caches;
mod events;
mod feed;
mod gate;
mod membership;
mod organization;
mod pacing;
mod shared;
mod workspace;

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::{Membership, Workspace};
use crate::error::Error;
use crate::provision::Object;
use crate::settings::Settings;
use crate::status::Outcome;
use caches::count_managed;
pub(crate) use caches::{Feeds, Stores, stores, wait_for_crds};
pub(crate) use feed::Change;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub(crate) use pacing::{StatusPacer, progressing_retry, significant_change};

/// How long after creating a workspace's or an organization's namespace its owner is
/// looked at again if the namespace's watch event (which brings it back at once) never
/// comes.
///
/// A namespace just created is all of its owner's pass: the API server's NamespaceLifecycle
/// admission holds every create into a namespace its informer has not seen yet for 50 ms
/// (`missingNamespaceWait`), and what was posted right after the namespace (a workspace's
/// quota, limits and isolation; an organization's default workspace and roles) waited
/// there, a reconcile slot held idle each time (at 5x, 83 % of the quota POSTs took over
/// 50 ms, against 15 ms in the fair limit). The namespace's watch event comes once the
/// API server has seen it; the rest is provisioned then, and the status is written once,
/// Ready, as before.
pub(crate) const NAMESPACE_CREATED_RETRY: Duration = Duration::from_secs(5);

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    /// Events, written off the reconcile path.
    pub events: events::Events,
    pub observer: Option<Observer>,
    pub status_pacer: StatusPacer,
    /// The last view of each organization, shared by the three reconcilers.
    pub views: crate::view::Views,
    /// Argon2 checks of client secrets against verifiers earlier releases wrote: one at a
    /// time, off the async workers.
    pub hashing: crate::credentials::Hashing,
    /// Each reconciler's queue of triggers and wake-ups, in front of kube's.
    pub gates: Gates,
}

/// The three reconcilers' [`gate::Gate`]s.
#[derive(Default)]
pub struct Gates {
    pub organizations: gate::Gate,
    pub workspaces: gate::Gate,
    pub memberships: gate::Gate,
}

impl Gates {
    /// The gate of kind `K`'s reconciler.
    fn of<K: Resource<DynamicType = ()>>(&self) -> Option<&gate::Gate> {
        match K::kind(&()).as_ref() {
            "Organization" => Some(&self.organizations),
            "Workspace" => Some(&self.workspaces),
            "Membership" => Some(&self.memberships),
            _ => None,
        }
    }
}

/// One finished reconcile, as seen by an [`Observer`].
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub ok: bool,
}

/// Receives every finished reconcile (tests wait on it instead of sleeping).
pub type Observer = tokio::sync::broadcast::Sender<Reconciled>;

impl Context {
    /// The view of the organization owning namespace `ns` (`None`: no such organization
    /// in the cache), from the caches as they are now.
    pub fn view(&self, ns: &str) -> Option<Arc<crate::view::OrgView>> {
        let Some(org) = self.stores.organization_of_namespace(ns) else {
            self.views.forget(ns);
            return None;
        };
        Some(self.view_of(ns, org))
    }

    /// The view of `org`, whose namespace is `ns`.
    pub fn view_of(
        &self,
        ns: &str,
        org: Arc<crate::api::Organization>,
    ) -> Arc<crate::view::OrgView> {
        self.views.get(
            std::time::Instant::now(),
            ns,
            org,
            self.stores.memberships_in(ns),
            self.stores.workspaces_in(ns),
            self.settings.gates(),
            self.settings.default_quota.as_ref(),
        )
    }

    /// Writes `status` of `obj`, whose conditions go from `old` to `new`, unless the
    /// [`StatusPacer`] holds it back; then returns how long until it may be written.
    pub async fn write_status<K: Object>(
        &self,
        api: &Api<K>,
        obj: &K,
        old: &[Condition],
        new: &[Condition],
        status: &impl serde::Serialize,
    ) -> Result<Option<Duration>, Error> {
        let key = format!("{}/{}", K::kind(&()), crate::provision::object_path(obj));
        let significant = significant_change(old, new);
        if let Some(wait) = self.status_pacer.admit(&key, significant) {
            tracing::debug!(object = %key, ?wait, "status change of details held back");
            return Ok(Some(wait));
        }
        let ready = |cs: &[Condition]| {
            cs.iter()
                .find(|c| c.type_ == crate::status::READY)
                .map(|c| format!("{}/{}", c.status, c.reason))
                .unwrap_or_default()
        };
        tracing::debug!(object = %key, significant, from = %ready(old), to = %ready(new), "writing status");
        crate::provision::write_status(api, obj, status).await?;
        Ok(None)
    }

    /// Ends a reconcile: an Event when the Ready reason changed, and when to look again
    /// (when ready, only on a change or at the [`resync`] walk; `retry` while
    /// progressing, two minutes when stalled; watches bring it back sooner when something
    /// changes).
    /// `held`: how long until a status held back by the [`StatusPacer`] may be written
    /// (the next look comes no later).
    pub async fn conclude<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        old: &[Condition],
        outcome: &Outcome,
        retry: Duration,
        held: Option<Duration>,
    ) -> Action {
        self.report(obj, old, outcome);
        let after = match outcome {
            // No wake-up per Ready object: the resync walk comes by.
            Outcome::Ready { .. } => held,
            Outcome::Progressing { .. } => {
                let after = progressing_retry(old, retry);
                Some(held.map_or(after, |h| h.min(after)))
            }
            Outcome::Stalled { .. } => Some(held.map_or(STALLED_RETRY, |h| h.min(STALLED_RETRY))),
        };
        match after {
            None => Action::await_change(),
            Some(after) => self.look_again(obj, after),
        }
    }

    /// Looks at `obj` again `after` this long (sooner if a change triggers it), with
    /// nothing said: no status, no Event.
    pub fn look_again<K: Resource<DynamicType = ()>>(&self, obj: &K, after: Duration) -> Action {
        match (self.gates.of::<K>(), obj.meta().name.as_deref()) {
            // In the kind's gate, not kube's scheduler (whose tables keep the size of the
            // most entries they ever held).
            (Some(gate), Some(name)) => {
                gate.after(obj.meta().namespace.as_deref(), name, after);
                Action::await_change()
            }
            _ => Action::requeue(after),
        }
    }

    /// Queues the Event `outcome` deserves, given the conditions `obj` had
    /// ([`events::event_for`]).
    pub fn report<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        old: &[Condition],
        outcome: &Outcome,
    ) {
        if let Some(event) = events::event_for(old, outcome) {
            self.events.publish(event, obj.object_ref(&()));
        }
    }
}

/// How soon a stalled object is looked at again (a change of spec or of the world
/// brings it back sooner).
const STALLED_RETRY: Duration = Duration::from_secs(120);

/// The sooner of two wake-ups, either or both absent.
pub fn soonest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The error policy of every controller: retry soon; conflicts sooner.
pub fn requeue_on_error(err: &Error) -> Action {
    let delay = match err {
        Error::Kube {
            source: kube::Error::Api(s),
            ..
        } if s.code == 409 => Duration::from_secs(1),
        _ => Duration::from_secs(10),
    };
    Action::requeue(delay)
}

/// A reference to every Workspace of the organization namespace `ns`.
pub fn workspaces_of(stores: &Stores, ns: &str) -> Vec<ObjectRef<Workspace>> {
    stores
        .workspaces_in(ns)
        .iter()
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Whether the organization of a Membership requires acceptance, as the caches say
/// (true when its organization is not known: the safe side of [`feed::membership_grants`]).
pub fn acceptance_required(stores: Stores) -> impl Fn(&Membership) -> bool + Send + Sync + 'static {
    move |m| {
        stores
            .organization_of_namespace(&kube::ResourceExt::namespace(m).unwrap_or_default())
            .is_none_or(|org| org.spec.require_acceptance())
    }
}

/// The resync of a kind: every object of `store` once per `period`, one after the other
/// at an even pace (a round takes the period), the first round one period after the start
/// (the initial list reconciles everything). Measured before: with a scheduled wake-up per
/// Ready object, kube's scheduler held an entry for every object, and its hash map and
/// delay queue keep the capacity of the most entries they ever held (2.6 of the 14.8 MiB
/// settled heap at the benchmark's 1x). A round holds a weak reference per object (8
/// bytes; an object deleted meanwhile is skipped).
pub fn resync<K>(
    store: kube::runtime::reflector::Store<K>,
    period: Duration,
) -> futures::stream::BoxStream<'static, ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use futures::StreamExt;
    use std::sync::Weak;
    struct Round<K> {
        left: std::vec::IntoIter<Weak<K>>,
        gap: Duration,
        first: bool,
    }
    let start = Round::<K> {
        left: Vec::new().into_iter(),
        gap: period,
        first: true,
    };
    futures::stream::unfold(start, move |mut round| {
        let store = store.clone();
        async move {
            loop {
                if round.first {
                    round.first = false;
                    tokio::time::sleep(period).await;
                }
                if let Some(next) = round.left.next() {
                    tokio::time::sleep(round.gap).await;
                    if let Some(obj) = next.upgrade() {
                        return Some((ObjectRef::from_obj(obj.as_ref()), round));
                    }
                    continue;
                }
                let all: Vec<Weak<K>> = store.state().iter().map(Arc::downgrade).collect();
                if all.is_empty() {
                    tokio::time::sleep(period).await;
                    continue;
                }
                let n = u32::try_from(all.len()).unwrap_or(u32::MAX);
                round.gap = period.checked_div(n).unwrap_or(period);
                round.left = all.into_iter();
            }
        }
    })
    .boxed()
}

/// A reference to every Membership of the organization namespace `ns`.
pub fn memberships_of(stores: &Stores, ns: &str) -> Vec<ObjectRef<Membership>> {
    stores
        .memberships_in(ns)
        .iter()
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// Runs the controller until `shutdown` fires: waits for the CRDs, fills the caches, then
/// runs the three reconcilers.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
    observer: Option<Observer>,
    health: Option<crate::admin::Health>,
) -> anyhow::Result<()> {
    settings
        .check()
        .map_err(|why| anyhow::anyhow!("settings: {why}"))?;
    wait_for_crds(&client).await;
    let streaming = match client.apiserver_version().await {
        Ok(v) => settings.initial_list.streams(&v.major, &v.minor),
        Err(e) => {
            warn!(error = %e, "the API server's version is unknown; caches load by pages");
            settings.initial_list == crate::settings::InitialList::Streaming
        }
    };
    // Protobuf watches are streaming lists (`wire`): none where the caches list by pages.
    let protobuf = streaming && settings.protobuf_watches;
    info!(streaming, protobuf, "loading the caches");
    let (stores, feeds, tasks) = stores(&client, streaming, protobuf);
    let caches = tokio::spawn(futures::future::join_all(tasks));
    stores.ready().await;
    info!("caches synced; starting reconcilers");
    if let Some(health) = &health {
        let s = stores.clone();
        health.set_cache_report(move || caches::report(&s));
        health.set_ready(true);
    }
    let gauges = tokio::spawn(count_managed(stores.clone()));
    let reporter = Reporter {
        controller: "tenantry".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let (events, event_writer) = events::Events::start(client.clone(), reporter);
    let ctx = Arc::new(Context {
        events,
        client,
        status_pacer: StatusPacer::new(Duration::from_millis(settings.status_interval_ms)),
        settings,
        stores,
        observer,
        views: Default::default(),
        hashing: Default::default(),
        gates: Default::default(),
    });
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    futures::join!(
        organization::run(ctx.clone(), &feeds, stop(shutdown.clone())),
        workspace::run(ctx.clone(), &feeds, stop(shutdown.clone())),
        membership::run(ctx.clone(), &feeds, stop(shutdown.clone())),
    );
    caches.abort();
    gauges.abort();
    event_writer.abort();
    info!("controller stopped");
    Ok(())
}

/// Logs one reconcile result, counts it, and tells the observer.
pub fn log_result<K>(
    ctx: &Context,
    kind: &'static str,
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<Error, watcher::Error>>,
) where
    K: Resource<DynamicType = ()>,
{
    use crate::metrics::{ErrorLabels, METRICS, ResultLabels};
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    METRICS
        .reconciles
        .get_or_create(&ResultLabels {
            kind: kind.into(),
            result: outcome.into(),
        })
        .inc();
    if let Err(kube::runtime::controller::Error::ReconcilerFailed(e, _)) = &result {
        METRICS
            .errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: e.metric_label().into(),
            })
            .inc();
    }
    use kube::runtime::controller::Error as CtlError;
    let (obj, ok) = match result {
        Ok((obj, _)) => {
            tracing::debug!(kind, object = %obj, "reconciled");
            (Some((obj.namespace, obj.name)), true)
        }
        Err(CtlError::ReconcilerFailed(e, obj)) => {
            warn!(kind, object = %obj, error = %e, "reconcile failed");
            (Some((obj.namespace.clone(), obj.name.clone())), false)
        }
        // The object was deleted between the event and the reconcile: nothing to do.
        Err(CtlError::ObjectNotFound(obj)) => {
            tracing::debug!(kind, object = %obj, "object gone before its reconcile");
            if let Some(gate) = ctx.gates.of::<K>() {
                gate.done(obj.namespace.as_deref(), &obj.name);
            }
            (None, false)
        }
        Err(e) => {
            warn!(kind, error = %e, "controller error");
            (None, false)
        }
    };
    if let (Some(gate), Some((namespace, name))) = (ctx.gates.of::<K>(), &obj) {
        gate.done(namespace.as_deref(), name);
    }
    if let (Some(observer), Some((namespace, name))) = (&ctx.observer, obj) {
        let _ = observer.send(Reconciled {
            kind,
            namespace,
            name,
            ok,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn ws(name: &str) -> Workspace {
        let mut w = Workspace::new(name, Default::default());
        w.metadata.namespace = Some("org-x".into());
        w
    }

    async fn round(
        walk: &mut futures::stream::BoxStream<'static, ObjectRef<Workspace>>,
        n: usize,
    ) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(walk.next().await.unwrap().name);
        }
        names.sort();
        names
    }

    #[tokio::test(start_paused = true)]
    async fn the_resync_walks_every_object_once_per_period_at_an_even_pace() {
        let (store, mut writer) = kube::runtime::reflector::store::<Workspace>();
        for name in ["a", "b", "c"] {
            writer.apply_watcher_event(&watcher::Event::Apply(ws(name)));
        }
        let period = Duration::from_secs(60);
        let mut walk = resync(store, period);
        let t0 = tokio::time::Instant::now();
        assert_eq!(round(&mut walk, 3).await, ["a", "b", "c"]);
        // The first round starts one period in, and takes a period: 20 s apart.
        assert_eq!(t0.elapsed(), period * 2);
        writer.apply_watcher_event(&watcher::Event::Delete(ws("b")));
        writer.apply_watcher_event(&watcher::Event::Apply(ws("d")));
        assert_eq!(
            round(&mut walk, 3).await,
            ["a", "c", "d"],
            "what the cache holds now"
        );
        assert_eq!(t0.elapsed(), period * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_deleted_during_a_round_is_skipped() {
        let (store, mut writer) = kube::runtime::reflector::store::<Workspace>();
        for name in ["a", "b"] {
            writer.apply_watcher_event(&watcher::Event::Apply(ws(name)));
        }
        let mut walk = resync(store, Duration::from_secs(10));
        let first = walk.next().await.unwrap().name;
        let other = if first == "a" { "b" } else { "a" };
        writer.apply_watcher_event(&watcher::Event::Delete(ws(other)));
        // The rest of the round has nothing left: the next one holds `first` alone.
        assert_eq!(walk.next().await.unwrap().name, first);
        assert_eq!(walk.next().await.unwrap().name, first);
    }
}
