//! The caches the reconcilers read: one watch per kind, shared, with indexes by
//! namespace; and the feeds that publish each change once to every subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use tracing::warn;

use super::feed::{Change, Feed};
use crate::api::{Membership, Organization, Workspace};
use crate::labels;
use crate::provision::Object;
use crate::slim::{Children, ChildrenWriter, Measure, Projected};

/// Caches of everything the reconcilers read. Child kinds are label-selected: the caches
/// hold only what Tenantry manages, as projections ([`crate::slim::Slim`]) or metadata.
#[derive(Clone)]
pub struct Stores {
    pub organizations: Store<Organization>,
    pub workspaces: Store<Workspace>,
    pub memberships: Store<Membership>,
    pub namespaces: Children<Namespace>,
    pub role_bindings: Children<RoleBinding>,
    pub roles: Children<Role>,
    pub cluster_roles: Children<ClusterRole>,
    pub cluster_role_bindings: Children<ClusterRoleBinding>,
    pub quotas: Children<ResourceQuota>,
    pub limit_ranges: Children<LimitRange>,
    pub network_policies: Children<NetworkPolicy>,
    pub service_accounts: Children<ServiceAccount>,
    /// Metadata only (`Api<PartialObjectMeta<_>>` lists and watches metadata), as
    /// projections: no secret value is ever in the controller's memory.
    pub secrets: Children<PartialObjectMeta<Secret>>,
    /// Copies of shared ConfigMaps (metadata only, like Secrets).
    pub config_maps: Children<PartialObjectMeta<ConfigMap>>,
    /// Sources of shared resources (`tenantry.dev/shared-by`), metadata only: a copy
    /// reads its source when it is made.
    pub shared_config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub shared_secrets: Store<PartialObjectMeta<Secret>>,
    /// Workspaces and Memberships by organization namespace.
    pub workspace_index: NamespaceIndex,
    pub membership_index: NamespaceIndex,
}

impl Stores {
    /// The organization whose namespace is `ns`.
    pub fn organization_of_namespace(&self, ns: &str) -> Option<Arc<Organization>> {
        // `org-<name>`: a lookup by name (organization names are short enough never to
        // be shortened); a scan only for a namespace that is not of that form.
        ns.strip_prefix(crate::names::ORG_NAMESPACE_PREFIX)
            .and_then(|name| self.organizations.get(&ObjectRef::new(name)))
            .filter(|o| crate::names::org_namespace(&o.name_any()) == ns)
            .or_else(|| {
                self.organizations
                    .find(|o| crate::names::org_namespace(&o.name_any()) == ns)
            })
    }

    pub fn workspaces_in(&self, ns: &str) -> Vec<Arc<Workspace>> {
        self.workspace_index.objects_in(&self.workspaces, ns)
    }

    pub fn memberships_in(&self, ns: &str) -> Vec<Arc<Membership>> {
        self.membership_index.objects_in(&self.memberships, ns)
    }
}

/// How watches wait after an error: from `MIN`, doubling, up to a cap, with jitter;
/// reset by the next event.
///
/// kube's default goes up to 30 s, and a reconciler shares one backoff among all its
/// watches (its triggers), so that one failing watch pauses them all. After an API server
/// outage each watch fails once more (its resourceVersion expired with the API server's
/// watch cache) and lists again; with the default, those failures queued up behind 30-60 s
/// pauses one after the other, and the reconcilers saw no change for minutes (measured:
/// 15 organizations still not converged 200 s after the API server was back). Each cache's
/// watch retries on its own, up to every 2 s ([`WatchBackoff::cache`]); the reconcilers'
/// triggers come from those same watches ([`feed`]) and never fail on their own.
pub struct WatchBackoff {
    next: Duration,
    max: Duration,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(100);

    /// For one cache's watch.
    pub fn cache() -> Self {
        Self {
            next: Self::MIN,
            max: Duration::from_secs(2),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        // Up to a quarter more, so that many watches do not retry in lockstep.
        let jitter = getrandom::u32().unwrap_or(0).checked_rem(1000).unwrap_or(0);
        let extra = delay
            .checked_div(4)
            .and_then(|d| d.checked_mul(jitter))
            .and_then(|d| d.checked_div(1000))
            .unwrap_or_default();
        Some(delay.saturating_add(extra))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Names of a kind's objects by namespace, kept by the watch that feeds its cache, so
/// "the workspaces of this organization" costs what is in it, not a scan of the cluster.
/// A namespace's names are a sorted vector no longer than they are (a `BTreeSet` node
/// took about 280 bytes for the five workspaces of an organization).
#[derive(Clone, Default)]
pub struct NamespaceIndex(Arc<std::sync::RwLock<Names>>);

type Names = HashMap<Box<str>, Vec<Box<str>>>;

/// The index's side of a watch: a relist builds a new index, swapped in when complete.
#[derive(Default)]
struct IndexWriter {
    index: NamespaceIndex,
    pending: Option<Names>,
}

impl IndexWriter {
    fn new(index: NamespaceIndex) -> Self {
        Self {
            index,
            pending: None,
        }
    }

    fn apply<K: Resource>(&mut self, event: &watcher::Event<K>) {
        let key = |o: &K| {
            let m = o.meta();
            (
                Box::<str>::from(m.namespace.as_deref().unwrap_or_default()),
                Box::<str>::from(m.name.as_deref().unwrap_or_default()),
            )
        };
        let mut index = self.index.0.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(o) => {
                let (ns, name) = key(o);
                let names = index.entry(ns).or_default();
                if let Err(i) = names.binary_search(&name) {
                    names.insert(i, name);
                    names.shrink_to_fit();
                }
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = key(o);
                if let Some(names) = index.get_mut(&ns) {
                    if let Ok(i) = names.binary_search(&name) {
                        names.remove(i);
                        names.shrink_to_fit();
                    }
                    if names.is_empty() {
                        index.remove(&ns);
                    }
                }
            }
            watcher::Event::Init => self.pending = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = key(o);
                self.pending
                    .get_or_insert_with(HashMap::new)
                    .entry(ns)
                    .or_default()
                    .push(name);
            }
            watcher::Event::InitDone => {
                let mut listed = self.pending.take().unwrap_or_default();
                for names in listed.values_mut() {
                    names.sort_unstable();
                    names.dedup();
                    names.shrink_to_fit();
                }
                listed.shrink_to_fit();
                *index = listed;
            }
        }
    }
}

impl NamespaceIndex {
    /// The objects of `store` in namespace `ns`.
    pub fn objects_in<K: Object>(&self, store: &Store<K>, ns: &str) -> Vec<Arc<K>> {
        let index = self.0.read().unwrap_or_else(|e| e.into_inner());
        let Some(names) = index.get(ns) else {
            return Vec::new();
        };
        // One key, its name replaced for each lookup: not two Strings a name.
        let mut key = ObjectRef::new("").within(ns);
        names
            .iter()
            .filter_map(|name| {
                key.name.clear();
                key.name.push_str(name);
                store.get(&key)
            })
            .collect()
    }
}

/// A cache of whole objects of kind `K`, the feed of their changes, and the task that runs
/// its watch.
fn reflect<K: Object>(
    api: Api<K>,
    config: watcher::Config,
    index: Option<NamespaceIndex>,
    forget: fn(&mut K),
) -> (Store<K>, Feed<K>, BoxFuture<'static, ()>)
where
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    let feed = Feed::new();
    let mut indexer = index.map(IndexWriter::new);
    let cache = reader.clone();
    let task = run(
        watcher(api, config).boxed(),
        forget,
        feed.clone(),
        move |event| {
            writer.apply_watcher_event(event);
            if let Some(indexer) = &mut indexer {
                indexer.apply(event);
            }
        },
        move |o| cache.get(&ObjectRef::from_obj(o)),
    );
    (reader, feed, task)
}

/// A cache of kind `K` that keeps a projection of each object ([`crate::slim::Slim`]), fed
/// by `events` (kube's watcher, or [`crate::wire::watcher`]); the feed publishes the whole
/// objects as the watch brings them.
fn reflect_slim<K: Projected>(events: Events<K>) -> (Children<K>, Feed<K>, BoxFuture<'static, ()>) {
    let cache = Children::default();
    let mut writer = ChildrenWriter::new(cache.clone());
    let feed = Feed::new();
    let kept = cache.clone();
    let task = run(
        events,
        |_| {},
        feed.clone(),
        move |event| writer.apply(event),
        // What the projection kept is what subscribers that compare may read.
        move |o| {
            let slim = kept.get(o.meta().namespace.as_deref(), &o.name_any())?;
            slim.kept().map(Arc::new)
        },
    );
    (cache, feed, task)
}

/// The annotation `kubectl apply` (client-side) and tools built on it keep: the whole
/// object again, as JSON.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconciler reads and objects carry in bulk, on the way in: managedFields
/// (on objects Tenantry applies, a large part of each object: measured, the controller's
/// memory), and the copy of the object a client-side `kubectl apply` (or a GitOps tool
/// applying that way) leaves in an annotation.
fn unread(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What a cache forgets of a custom resource on the way in: the parts of its status only
/// ever compared with what a reconcile builds, its conditions' messages among them (their
/// digests answer that).
fn forget_organization(o: &mut Organization) {
    if let Some(status) = &mut o.status {
        status.forget_detail();
        crate::status::forget_messages(&mut status.conditions);
    }
}

fn forget_workspace(w: &mut Workspace) {
    if let Some(status) = &mut w.status {
        status.forget_members();
        crate::status::forget_messages(&mut status.conditions);
    }
}

fn forget_membership(m: &mut Membership) {
    if let Some(status) = &mut m.status {
        status.forget_workspaces();
        crate::status::forget_messages(&mut status.conditions);
    }
}

/// A watch's events.
type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Runs the watch of kind `K`: each object loses what no reader needs ([`unread`],
/// `forget`), each event goes to the cache (`store`), then to the feed's subscribers with
/// what `old` says the cache held before.
fn run<K: Object>(
    events: Events<K>,
    forget: fn(&mut K),
    publisher: Feed<K>,
    mut store: impl FnMut(&watcher::Event<K>) + Send + 'static,
    old: impl Fn(&K) -> Option<Arc<K>> + Send + 'static,
) -> BoxFuture<'static, ()> {
    let kind = K::kind(&()).to_string();
    // How long the first list took, and how many objects it brought (a restart's time is
    // mostly these lists: logged once per kind).
    let started = std::time::Instant::now();
    let mut listed = 0_u64;
    let mut loaded = false;
    let stream = events.backoff(WatchBackoff::cache()).modify(move |o| {
        unread(o.meta_mut());
        forget(o);
    });
    stream
        .for_each(move |event| {
            match event {
                Ok(event) => {
                    // What the cache held before, for the subscribers that compare.
                    let before = match &event {
                        watcher::Event::Apply(o) => old(o),
                        _ => None,
                    };
                    store(&event);
                    match &event {
                        watcher::Event::Apply(o) => publisher.publish(Change::Applied {
                            old: before.as_deref(),
                            new: o,
                        }),
                        watcher::Event::InitApply(o) => {
                            listed = listed.saturating_add(1);
                            publisher.publish(Change::Listed(o))
                        }
                        watcher::Event::Delete(o) => publisher.publish(Change::Deleted(o)),
                        watcher::Event::InitDone if !loaded => {
                            loaded = true;
                            tracing::info!(
                                kind,
                                objects = listed,
                                seconds = started.elapsed().as_secs_f64(),
                                "cache loaded"
                            );
                        }
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                }
                Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
            }
            futures::future::ready(())
        })
        .boxed()
}

/// The label selector of the sources of shared resources.
fn shared() -> watcher::Config {
    watcher::Config::default()
        .labels(labels::SHARED_BY)
        .any_semantic()
}

/// The label selector of every cache of what Tenantry makes.
fn managed() -> watcher::Config {
    watcher::Config::default()
        .labels(&labels::managed_selector())
        .any_semantic()
}

/// The changes of every cached kind (see [`feed`]).
#[derive(Clone)]
pub struct Feeds {
    pub organizations: Feed<Organization>,
    pub workspaces: Feed<Workspace>,
    pub memberships: Feed<Membership>,
    pub namespaces: Feed<Namespace>,
    pub role_bindings: Feed<RoleBinding>,
    pub roles: Feed<Role>,
    pub cluster_roles: Feed<ClusterRole>,
    pub cluster_role_bindings: Feed<ClusterRoleBinding>,
    pub quotas: Feed<ResourceQuota>,
    pub limit_ranges: Feed<LimitRange>,
    pub network_policies: Feed<NetworkPolicy>,
    pub service_accounts: Feed<ServiceAccount>,
    pub secrets: Feed<PartialObjectMeta<Secret>>,
    pub config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    pub shared_config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    pub shared_secrets: Feed<PartialObjectMeta<Secret>>,
}

/// Starts the caches, one watch per kind; returns them, the feeds of their changes, and
/// the tasks that run the watches. With `streaming`, each watch begins with every object
/// (the API server's WatchList: no pages, each object as it is read from the watch
/// cache), else with a list in pages (`Settings::initial_list`: measured, pages grow
/// dearer with the number of objects of a kind). With `protobuf` (streaming only), the
/// built-in kinds [`crate::wire`] speaks are watched in protobuf.
pub fn stores(
    client: &Client,
    streaming: bool,
    protobuf: bool,
) -> (Stores, Feeds, Vec<BoxFuture<'static, ()>>) {
    let mut tasks = Vec::new();
    let initial = |config: watcher::Config| {
        if streaming {
            config.streaming_lists()
        } else {
            config
        }
    };
    let c = client;
    let (workspace_index, membership_index) =
        (NamespaceIndex::default(), NamespaceIndex::default());
    macro_rules! cache {
        ($cfg:expr) => {
            cache!($cfg, None, |_| {})
        };
        (slim $cfg:expr) => {{
            let (store, feed, task) =
                reflect_slim(watcher(Api::all(c.clone()), initial($cfg)).boxed());
            tasks.push(task);
            (store, feed)
        }};
        (proto $cfg:expr) => {{
            let config = initial($cfg);
            let events = if protobuf && streaming {
                crate::wire::watcher(c.clone(), config.label_selector).boxed()
            } else {
                watcher(Api::all(c.clone()), config).boxed()
            };
            let (store, feed, task) = reflect_slim(events);
            tasks.push(task);
            (store, feed)
        }};
        ($cfg:expr, $index:expr, $forget:expr) => {{
            let (store, feed, task) = reflect(Api::all(c.clone()), initial($cfg), $index, $forget);
            tasks.push(task);
            (store, feed)
        }};
    }
    let all = || watcher::Config::default().any_semantic();
    // Each kind once: its cache goes to `Stores`, the feed of its changes to `Feeds`.
    macro_rules! caches {
        ($($field:ident: [$($cfg:tt)+])*) => {{
            $(let $field = cache!($($cfg)+);)*
            (
                Stores {
                    workspace_index: workspace_index.clone(),
                    membership_index: membership_index.clone(),
                    $($field: $field.0,)*
                },
                Feeds { $($field: $field.1,)* },
            )
        }};
    }
    let (stores, feeds) = caches! {
        organizations: [all(), None, forget_organization]
        workspaces: [all(), Some(workspace_index.clone()), forget_workspace]
        memberships: [all(), Some(membership_index.clone()), forget_membership]
        namespaces: [proto managed()]
        role_bindings: [proto managed()]
        roles: [proto managed()]
        cluster_roles: [proto managed()]
        cluster_role_bindings: [proto managed()]
        quotas: [proto managed()]
        limit_ranges: [proto managed()]
        network_policies: [proto managed()]
        service_accounts: [slim managed()]
        secrets: [slim managed()]
        config_maps: [slim managed()]
        shared_config_maps: [shared()]
        shared_secrets: [shared()]
    };
    (stores, feeds, tasks)
}

impl Stores {
    /// Waits until every cache has its first full list.
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.organizations.wait_until_ready(),
            self.workspaces.wait_until_ready(),
            self.memberships.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.role_bindings.wait_until_ready(),
            self.roles.wait_until_ready(),
            self.cluster_roles.wait_until_ready(),
            self.cluster_role_bindings.wait_until_ready(),
            self.quotas.wait_until_ready(),
            self.limit_ranges.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.service_accounts.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.shared_config_maps.wait_until_ready(),
            self.shared_secrets.wait_until_ready(),
        );
    }
}

/// Waits until the CRDs are served; says so every 10 s while they are not.
pub async fn wait_for_crds(client: &Client) {
    loop {
        let lp = kube::api::ListParams::default().limit(1);
        let (orgs, wss, mbrs) = (
            Api::<Organization>::all(client.clone()),
            Api::<Workspace>::all(client.clone()),
            Api::<Membership>::all(client.clone()),
        );
        let probes = futures::join!(
            orgs.list_metadata(&lp),
            wss.list_metadata(&lp),
            mbrs.list_metadata(&lp)
        );
        match (probes.0, probes.1, probes.2) {
            (Ok(_), Ok(_), Ok(_)) => return,
            (a, b, c) => {
                let err = [a.err(), b.err(), c.err()].into_iter().flatten().next();
                warn!(
                    error = ?err.map(|e| e.to_string()),
                    "the tenantry.dev CRDs are not served yet (install them: `tenantry crd | kubectl apply --server-side -f -`); retrying in 10s"
                );
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Keeps the `managed_objects` gauges current.
/// Bytes written to it, nothing kept.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A cache's census: the objects held and, when `bytes`, about the bytes they hold and
/// how many projections are whole ([`Measure`]).
trait Census {
    fn census(&self, bytes: bool) -> Measure;
}

/// Whole objects: their JSON-encoded size (a proxy for the heap they hold: strings
/// dominate both); none is a projection.
impl<K> Census for Store<K>
where
    K: Serialize + Clone + kube::Resource,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn census(&self, bytes: bool) -> Measure {
        if !bytes {
            return Measure {
                objects: self.len(),
                ..Measure::default()
            };
        }
        let objects = self.state();
        let mut size = Counter(0);
        for o in &objects {
            let _ = serde_json::to_writer(&mut size, o.as_ref());
        }
        Measure {
            objects: objects.len(),
            bytes: size.0,
            whole: 0,
        }
    }
}

/// Projections: names, 4 bytes a leaf, and what is kept ([`Children::measure`]).
impl<K: Projected> Census for Children<K> {
    fn census(&self, bytes: bool) -> Measure {
        if bytes {
            self.measure()
        } else {
            Measure {
                objects: self.len(),
                ..Measure::default()
            }
        }
    }
}

/// Per cached kind: its name and what it holds (when `bytes`, its encoded size and whole
/// projections too).
fn census(s: &Stores, bytes: bool) -> Vec<(&'static str, Measure)> {
    macro_rules! kinds {
        ($($kind:literal => $field:ident),* $(,)?) => {
            vec![$(($kind, s.$field.census(bytes))),*]
        };
    }
    kinds![
        "Organization" => organizations,
        "Workspace" => workspaces,
        "Membership" => memberships,
        "Namespace" => namespaces,
        "RoleBinding" => role_bindings,
        "Role" => roles,
        "ClusterRole" => cluster_roles,
        "ClusterRoleBinding" => cluster_role_bindings,
        "ResourceQuota" => quotas,
        "LimitRange" => limit_ranges,
        "NetworkPolicy" => network_policies,
        "ServiceAccount" => service_accounts,
        "Secret" => secrets,
        "ConfigMap" => config_maps,
        "SharedConfigMapSource" => shared_config_maps,
        "SharedSecretSource" => shared_secrets,
    ]
}

/// `/debug/caches`: per cached kind, the objects held, their encoded bytes, and the
/// projections still whole (a projection is whole until an owner's build is found held
/// by it: after a restart, until the owners' first reconciles).
pub(super) fn report(s: &Stores) -> serde_json::Value {
    census(s, true)
        .into_iter()
        .map(|(kind, m)| {
            (
                kind.to_string(),
                serde_json::json!({ "objects": m.objects, "bytes": m.bytes, "whole": m.whole }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub(super) async fn count_managed(stores: Stores) {
    loop {
        let counts = census(&stores, false)
            .into_iter()
            .map(|(kind, m)| (kind, m.objects));
        for (kind, n) in counts {
            crate::metrics::METRICS
                .managed
                .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
                .set(n as i64);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::IndexWriter;

    #[test]
    fn what_no_reconciler_reads_is_dropped_on_the_way_in() {
        let mut m: kube::api::ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "acme",
            "annotations": {
                super::LAST_APPLIED: "{\"spec\":{}}",
                "tenantry.dev/rotate": "1"
            },
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
        }))
        .unwrap();
        super::unread(&mut m);
        assert!(m.managed_fields.is_none());
        assert_eq!(
            m.annotations.unwrap().keys().collect::<Vec<_>>(),
            ["tenantry.dev/rotate"]
        );
        let mut only = kube::api::ObjectMeta {
            annotations: Some([(super::LAST_APPLIED.to_string(), "{}".to_string())].into()),
            ..Default::default()
        };
        super::unread(&mut only);
        assert!(only.annotations.is_none());
    }

    #[test]
    fn the_custom_resources_forget_what_is_only_compared() {
        use crate::api::{
            AccessState, Membership, MembershipStatus, Organization, OrganizationStatus, Usage,
            WorkspaceAccess, WorkspaceRole,
        };
        let mut org = Organization::new("acme", Default::default());
        org.status = Some(OrganizationStatus {
            members: 3,
            usage: Some(Usage {
                workspaces: 2,
                ..Default::default()
            }),
            ..Default::default()
        });
        let built = org.status.clone().unwrap();
        super::forget_organization(&mut org);
        let json = serde_json::to_value(&org).unwrap();
        assert_eq!(json["status"]["members"], 3, "what is read stays");
        assert!(json["status"].get("usage").is_none(), "{json}");
        let kept = org.status.as_ref().unwrap();
        assert!(kept.same_detail(&built.quota, &built.usage));

        let mut m = Membership::new(
            "bob",
            serde_json::from_value(serde_json::json!({
                "subject": {"kind": "User", "name": "bob"}, "role": "Member"
            }))
            .unwrap(),
        );
        let access = vec![WorkspaceAccess {
            name: "w0".into(),
            role: WorkspaceRole::Viewer,
            state: AccessState::Granted,
        }];
        m.status = Some(MembershipStatus {
            workspaces: access.clone(),
            ..Default::default()
        });
        super::forget_membership(&mut m);
        let kept = m.status.as_ref().unwrap();
        assert!(kept.workspaces.is_empty() && kept.same_workspaces(&access));
    }

    #[test]
    fn watch_backoff_is_short_capped_and_reset_by_an_event() {
        use kube::runtime::utils::Backoff;
        use std::time::Duration;
        let mut b = super::WatchBackoff::cache();
        let delays: Vec<Duration> = b.by_ref().take(10).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(125));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(2500)),
            "{delays:?}"
        );
        assert!(delays[9] >= Duration::from_secs(2));
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(125));
    }

    #[test]
    fn the_namespace_index_follows_the_watch() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::watcher;
        let cm = |ns: &str, name: &str| ConfigMap {
            metadata: kube::core::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let names = |w: &IndexWriter, ns: &str| -> Vec<String> {
            let index = w.index.0.read().unwrap();
            index
                .get(ns)
                .into_iter()
                .flatten()
                .map(|n| n.to_string())
                .collect()
        };
        let mut w = IndexWriter::default();
        w.apply(&watcher::Event::<ConfigMap>::Init);
        w.apply(&watcher::Event::InitApply(cm("a", "x")));
        w.apply(&watcher::Event::InitApply(cm("b", "y")));
        assert!(names(&w, "a").is_empty(), "a relist shows once complete");
        w.apply(&watcher::Event::<ConfigMap>::InitDone);
        assert_eq!(names(&w, "a"), ["x"]);
        w.apply(&watcher::Event::Apply(cm("a", "z")));
        w.apply(&watcher::Event::Delete(cm("b", "y")));
        assert_eq!(names(&w, "a"), ["x", "z"]);
        assert!(names(&w, "b").is_empty());
        // A relist replaces everything: what was deleted meanwhile is gone.
        w.apply(&watcher::Event::<ConfigMap>::Init);
        w.apply(&watcher::Event::InitApply(cm("a", "z")));
        w.apply(&watcher::Event::<ConfigMap>::InitDone);
        assert_eq!(names(&w, "a"), ["z"]);
    }
}
