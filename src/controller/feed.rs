//! One watch per kind, shared by every reconciler that reacts to that kind.
//!
//! kube's `Controller::new`, `owns` and `watches` each open a watch of their own: with
//! three reconcilers that was 34 watches on the API server for 13 kinds, every object
//! decoded up to four times, and the three custom resources held twice in memory. Here
//! the shared caches' watches ([`super::stores`]) publish each change to subscribers,
//! which pick the changes they need: a reconciler's trigger for a sibling or a parent
//! does not fire on a status-only change (measured: a Membership's status write woke
//! every other Membership of its organization, so an organization of n members cost n²
//! reconciles while it converged).

use std::sync::{Arc, Mutex};

use futures::Stream;
use futures::channel::mpsc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{Membership, Organization, Workspace};
use crate::provision::Object;

/// A change of one object, as a watch brought it.
pub enum Change<'a, K> {
    /// Listed when the watch (re)started.
    Listed(&'a K),
    /// Created or changed; `old` is what the cache held before, if anything.
    Applied { old: Option<&'a K>, new: &'a K },
    /// Deleted: its last state.
    Deleted(&'a K),
}

impl<K> Change<'_, K> {
    pub fn object(&self) -> &K {
        match self {
            Change::Listed(o) | Change::Deleted(o) | Change::Applied { new: o, .. } => o,
        }
    }
}

/// Hands a change to one subscriber if it wants it; false once its stream is dropped.
type Deliver<K> = Box<dyn Fn(&Change<'_, K>) -> bool + Send + Sync>;

/// The changes of one kind, from the watch that feeds its cache.
///
/// A subscriber names what it wants and which objects a change asks to reconcile: the
/// references are computed when the change comes, from the object the watch brought, and
/// only they wait in the subscriber's queue (never a copy of the object: at a restart the
/// initial lists bring every object at once, faster than the reconcilers take them).
pub struct Feed<K: Object> {
    subscribers: Arc<Mutex<Vec<Deliver<K>>>>,
}

impl<K: Object> Clone for Feed<K> {
    fn clone(&self) -> Self {
        Self {
            subscribers: self.subscribers.clone(),
        }
    }
}

impl<K: Object> Feed<K> {
    pub(super) fn new() -> Self {
        Self {
            subscribers: Default::default(),
        }
    }

    /// A trigger stream: for each change `wants` accepts, the objects `to` names (of kind
    /// `P`: the kind itself, its owners, whoever depends on it).
    pub fn triggers<P, I>(
        &self,
        wants: impl Fn(&Change<'_, K>) -> bool + Send + Sync + 'static,
        to: impl Fn(&K) -> I + Send + Sync + 'static,
    ) -> impl Stream<Item = ObjectRef<P>> + Send + 'static
    where
        P: Resource<DynamicType = ()> + 'static,
        I: IntoIterator<Item = ObjectRef<P>>,
    {
        let (tx, rx) = mpsc::unbounded();
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.push(Box::new(move |change| {
            if tx.is_closed() {
                return false;
            }
            if wants(change) {
                for r in to(change.object()) {
                    let _ = tx.unbounded_send(r);
                }
            }
            true
        }));
        rx
    }

    /// Hands `change` to every subscriber (each takes what it wants); forgets those
    /// whose stream was dropped.
    pub(super) fn publish(&self, change: Change<'_, K>) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|deliver| deliver(&change));
    }
}

/// The object itself, by name and namespace (a reconciler's own kind).
pub fn itself<K: Resource<DynamicType = ()>>(o: &K) -> Option<ObjectRef<K>> {
    let r = ObjectRef::new(o.meta().name.as_deref()?);
    Some(match o.meta().namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    })
}

/// Its owners of kind `P` (`ownerReferences` of `P`'s kind and API version), in its
/// namespace: what kube's `owns` triggers.
pub fn owners<P: Resource<DynamicType = ()>, K: Resource>(o: &K) -> Vec<ObjectRef<P>> {
    let m = o.meta();
    m.owner_references
        .iter()
        .flatten()
        .filter(|r| r.kind == P::kind(&()) && r.api_version == P::api_version(&()))
        .map(|r| {
            let owner = ObjectRef::new(&r.name);
            match m.namespace.as_deref() {
                Some(ns) => owner.within(ns),
                None => owner,
            }
        })
        .collect()
}

/// A controller of kind `K` reading its objects from `store`, triggered by `own`'s
/// changes (every object listed or changed: [`applied`]) and seeded with every object
/// in the cache now (each is reconciled once when it starts); add the other triggers
/// with [`Triggers::reconcile_on`], then [`Triggers::gated`].
///
/// The seed is the cache's own objects, taken as the gate has room ([`super::gate`]); a
/// change that comes meanwhile may reconcile an object twice, never not at all (the
/// subscription comes first, then the cache is read).
pub fn controller<K: Object>(store: Store<K>, own: &Feed<K>) -> Triggers<K> {
    let changes = own.triggers(applied, itself);
    Triggers {
        seed: store.state(),
        store,
        streams: vec![futures::StreamExt::boxed(changes)],
    }
}

/// A reconciler's triggers, gathered to go through its [`super::gate::Gate`].
pub struct Triggers<K: Object> {
    store: Store<K>,
    streams: Vec<futures::stream::BoxStream<'static, ObjectRef<K>>>,
    /// Every object of the kind when the reconciler starts.
    seed: Vec<Arc<K>>,
}

impl<K: Object> Triggers<K> {
    /// Adds `triggers`.
    pub fn reconcile_on(
        mut self,
        triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    ) -> Self {
        self.streams.push(futures::StreamExt::boxed(triggers));
        self
    }

    /// kube's controller, taking every trigger through `gate`: at most [`GATE_PER_SLOT`]
    /// times `concurrency` objects wait in its scheduler.
    pub fn gated(self, gate: &super::gate::Gate, concurrency: u16) -> kube::runtime::Controller<K> {
        let limit = usize::from(concurrency.max(1)).saturating_mul(GATE_PER_SLOT);
        kube::runtime::Controller::for_stream(futures::stream::pending(), self.store)
            .reconcile_on(gate.gated(self.streams, self.seed, limit))
    }
}

/// Objects let through to kube's scheduler per reconcile slot: each waits there for the
/// debounce (250 ms by default) before it runs, so this bounds a kind's reconciles to
/// about `concurrency x 512 / 0.25 s` (16,000 a second by default). 64 bounded them to
/// 2,000 a second, and a restart at 25x, where most reconciles find nothing to do, took
/// 39 s instead of 18 (its 55,000 Memberships alone 27 s). The scheduler's tables keep
/// the size of the largest backlog: 4,096 entries per kind, about 1 MiB.
pub const GATE_PER_SLOT: usize = 512;

/// Every change: a child's edit or deletion is something to repair.
pub fn any<K>(_: &Change<'_, K>) -> bool {
    true
}

/// What a reconciler's own kind triggers: every object listed or changed.
pub fn applied<K>(change: &Change<'_, K>) -> bool {
    !matches!(change, Change::Deleted(_))
}

/// The `Ready` condition of a Tenantry object, as far as others depend on it.
pub trait Readiness {
    fn conditions(&self) -> &[Condition];
}

impl Readiness for Organization {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Readiness for Workspace {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Readiness for Membership {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

/// A change that others may depend on: listed, created, deleted, or a change of spec
/// (generation), of metadata (labels, annotations, finalizers, owners, deletion), or of
/// `Ready`'s status or reason. Not a change of status details (counts, lists, messages),
/// which nothing else reads.
pub fn meaningful<K: Resource + Readiness>(change: &Change<'_, K>) -> bool {
    let Change::Applied {
        old: Some(old),
        new,
    } = change
    else {
        return true;
    };
    let ready = |k: &K| {
        k.conditions()
            .iter()
            .find(|c| c.type_ == crate::status::READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    spec_or_metadata_changed(*old, *new) || ready(old) != ready(new)
}

fn spec_or_metadata_changed<K: Resource>(old: &K, new: &K) -> bool {
    let (o, n) = (old.meta(), new.meta());
    o.generation != n.generation
        || o.labels != n.labels
        || o.annotations != n.annotations
        || o.finalizers != n.finalizers
        || o.owner_references != n.owner_references
        || o.deletion_timestamp != n.deletion_timestamp
}

/// A Membership change that can change what its organization's Memberships grant: the
/// trigger of the Workspace and Organization reconcilers. [`meaningful`], except that a
/// change of `Ready` alone counts only in an organization that requires acceptance (or
/// that `require_acceptance` cannot tell): there, whether a member was granted before is
/// read from its status (`grants::member_states`); nowhere else does a Membership's
/// status change what anyone is bound to. Measured at the 1x benchmark size: every
/// Membership's one status write woke all the workspaces of its organization.
pub fn membership_grants(
    require_acceptance: impl Fn(&Membership) -> bool + Send + Sync + 'static,
) -> impl Fn(&Change<'_, Membership>) -> bool + Send + Sync + 'static {
    move |change| match change {
        Change::Applied {
            old: Some(old),
            new,
        } => {
            spec_or_metadata_changed(*old, *new) || (meaningful(change) && require_acceptance(new))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Outcome, conditions};
    use futures::StreamExt;
    use kube::ResourceExt;
    use kube::runtime::watcher;

    fn ws(generation: i64, outcome: Outcome, members: usize) -> Workspace {
        let mut w = Workspace::new("w", Default::default());
        w.metadata.namespace = Some("org-a".into());
        w.metadata.generation = Some(generation);
        w.status = Some(crate::api::WorkspaceStatus {
            conditions: conditions(&[], &outcome, Some(generation)),
            members: (0..members)
                .map(|i| crate::api::WorkspaceMember {
                    kind: crate::api::SubjectKind::User,
                    name: format!("u{i}"),
                    namespace: None,
                    role: crate::api::WorkspaceRole::Viewer,
                    membership: Some(format!("m{i}")),
                })
                .collect(),
            ..Default::default()
        });
        w
    }

    #[test]
    fn a_members_status_wakes_others_only_where_acceptance_reads_it() {
        use crate::api::{MembershipSpec, OrgRole, Subject};
        let member = |generation: i64, outcome: Option<Outcome>| {
            let mut m = Membership::new(
                "m",
                MembershipSpec::new(Subject::user("u@x.example"), OrgRole::Member, &[]),
            );
            m.metadata.namespace = Some("org-a".into());
            m.metadata.generation = Some(generation);
            m.status = outcome.map(|o| crate::api::MembershipStatus {
                conditions: conditions(&[], &o, Some(generation)),
                ..Default::default()
            });
            m
        };
        let new = member(1, None);
        let granted = member(1, Some(Outcome::ready("Granted", "ok")));
        let pending = member(1, Some(Outcome::progressing("WorkspacePending", "w")));
        let respec = member(2, None);
        let fires = |acceptance: bool, old: Option<&Membership>, new: &Membership| {
            membership_grants(move |_: &Membership| acceptance)(&Change::Applied { old, new })
        };
        for acceptance in [false, true] {
            assert!(fires(acceptance, None, &new), "created or listed");
            assert!(fires(acceptance, Some(&new), &respec), "spec");
            let mut deleting = new.clone();
            deleting.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
            assert!(fires(acceptance, Some(&new), &deleting), "deletion");
            let mut accepted = new.clone();
            accepted.metadata.annotations =
                Some([(crate::labels::ACCEPTED.to_string(), "true".to_string())].into());
            assert!(fires(acceptance, Some(&new), &accepted), "annotation");
        }
        // Its first status and a change of Ready: only where acceptance reads them.
        assert!(!fires(false, Some(&new), &granted));
        assert!(!fires(false, Some(&pending), &granted));
        assert!(fires(true, Some(&new), &granted));
        assert!(fires(true, Some(&pending), &granted));
        // Details never.
        assert!(!fires(true, Some(&granted), &granted.clone()));
    }

    #[test]
    fn status_details_are_not_meaningful_to_others() {
        let ready = || Outcome::ready("Provisioned", "ok");
        let (a, more_members) = (ws(1, ready(), 1), ws(1, ready(), 2));
        fn change<'a>(old: &'a Workspace, new: &'a Workspace) -> Change<'a, Workspace> {
            Change::Applied {
                old: Some(old),
                new,
            }
        }
        let next_generation = ws(2, ready(), 1);
        assert!(!meaningful(&change(&a, &more_members)), "details");
        assert!(meaningful(&change(&a, &next_generation)), "spec");
        let progressing = ws(1, Outcome::progressing("Progressing", "x"), 1);
        assert!(meaningful(&change(&progressing, &a)), "Ready");
        let mut annotated = a.clone();
        annotated
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("tenantry.dev/accepted".into(), "true".into());
        assert!(meaningful(&change(&a, &annotated)), "annotations");
        assert!(meaningful(&Change::Applied { old: None, new: &a }), "new");
        assert!(meaningful(&Change::Deleted(&a)), "deleted");
        assert!(meaningful(&Change::Listed(&a)), "listed");
        assert!(!applied(&Change::Deleted(&a)) && applied(&Change::Listed(&a)));
    }

    #[tokio::test]
    async fn subscribers_get_what_they_want_and_a_seed_of_the_cache() {
        use futures::FutureExt;
        let (reader, mut writer) = kube::runtime::reflector::store::<Workspace>();
        let a = ws(1, Outcome::ready("Provisioned", "ok"), 1);
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(a.clone()));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let feed = Feed::new();
        let mut triggers = controller(reader, &feed);
        let names: Vec<_> = triggers.seed.iter().map(|w| w.name_any()).collect();
        assert_eq!(names, ["w"], "seeded with the cache");
        let mut own = triggers.streams.pop().unwrap();
        // Another kind's reconciler: the workspace's organization.
        let mut others = feed.triggers(meaningful, |w: &Workspace| {
            Some(ObjectRef::<Organization>::new(
                &w.namespace()?["org-".len()..],
            ))
        });
        assert!(
            own.next().now_or_never().is_none(),
            "the seed is not a change"
        );
        let b = ws(1, Outcome::ready("Provisioned", "ok"), 2);
        feed.publish(Change::Applied {
            old: Some(&a),
            new: &b,
        });
        feed.publish(Change::Deleted(&b));
        assert!(own.next().await.is_some(), "a details change");
        assert!(own.next().now_or_never().is_none(), "not the deletion");
        let org = others.next().await.unwrap();
        assert_eq!(org.name, "a", "the deletion, mapped to its organization");
        assert!(
            others.next().now_or_never().is_none(),
            "the details change was skipped"
        );
        drop(own);
        feed.publish(Change::Listed(&a));
        assert_eq!(
            feed.subscribers.lock().unwrap().len(),
            1,
            "a dropped stream is forgotten"
        );
    }

    #[test]
    fn owners_of_the_kind_in_the_objects_namespace() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = |kind: &str, api_version: &str, name: &str| OwnerReference {
            kind: kind.into(),
            api_version: api_version.into(),
            name: name.into(),
            uid: "u".into(),
            ..Default::default()
        };
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.namespace = Some("org-a".into());
        secret.metadata.owner_references = Some(vec![
            owner("Membership", "tenantry.dev/v1alpha1", "m1"),
            owner("Membership", "other.example/v1", "m2"),
            owner("Workspace", "tenantry.dev/v1alpha1", "w"),
        ]);
        let refs: Vec<ObjectRef<Membership>> = owners(&secret);
        assert_eq!(refs, vec![ObjectRef::new("m1").within("org-a")]);
    }
}
