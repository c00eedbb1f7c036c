//! One organization's meaning, computed once and read by the three reconcilers: which
//! Memberships grant (and why the others do not), who holds each organization role, which
//! Workspaces may be provisioned, who reaches a workspace. Built by the pure
//! [`OrgView::new`] from the organization and the Memberships and Workspaces in its
//! namespace; [`Views`] keeps the last one per organization and builds it again only
//! when one of those objects changed (their resourceVersions say so).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{Membership, OrgRole, Organization, Subject, Workspace};
use crate::grants::{self, Gates, MemberState, WorkspaceGrantee};

/// What an organization's Memberships and Workspaces mean, at one moment: the objects
/// and their [`Meaning`] (whose fields read through the view: `view.states`).
#[derive(Debug)]
pub struct OrgView {
    pub org: Arc<Organization>,
    pub memberships: Vec<Arc<Membership>>,
    pub workspaces: Vec<Arc<Workspace>>,
    /// What they mean: the part [`Views`] keeps.
    pub meaning: Arc<Meaning>,
}

/// What an organization's Memberships and Workspaces mean, without the objects: the part
/// of a view kept between reconciles ([`Views`]). Kept with the objects they were built
/// from, views held those objects' versions of that moment after the caches had newer
/// ones: at 5x, 4,447 Memberships, 1,038 Workspaces and 534 Organizations more than the
/// caches held, a sixth of the controller's heap (`make profile-heap`).
#[derive(Debug)]
pub struct Meaning {
    /// Every Membership not being deleted, by name ([`grants::member_states`]).
    pub states: BTreeMap<String, MemberState>,
    /// The Workspaces the organization may provision ([`grants::provisionable_workspaces`]).
    pub provisionable: BTreeSet<String>,
    /// Everyone holding each organization role ([`grants::org_role_holders`]).
    pub holders: BTreeMap<OrgRole, Vec<(Subject, Option<String>)>>,
    /// When a Membership expires next ([`grants::next_expiry`]): the states hold until
    /// then, and the reconcilers come back then.
    pub next_expiry: Option<Timestamp>,
    /// The pooled quota's plan (`spec.quota`), when the organization has one.
    pub pool: Option<crate::pool::Plan>,
}

impl std::ops::Deref for OrgView {
    type Target = Meaning;

    fn deref(&self) -> &Meaning {
        &self.meaning
    }
}

impl Meaning {
    /// Pure: what these Memberships and Workspaces (those of its namespace) mean for `org`.
    fn new(
        org: &Organization,
        memberships: &[Arc<Membership>],
        workspaces: &[Arc<Workspace>],
        gates: Gates,
        operator_quota: Option<&crate::api::ResourceList>,
    ) -> Self {
        let m: Vec<&Membership> = memberships.iter().map(AsRef::as_ref).collect();
        let w: Vec<&Workspace> = workspaces.iter().map(AsRef::as_ref).collect();
        let states = grants::member_states(org, &m, gates);
        let provisionable = grants::provisionable_workspaces(org, &w);
        let holders = grants::org_role_holders(org, &m, &states);
        let next_expiry = grants::next_expiry(org, &m, gates.now);
        let pool = org.spec.pool().map(|pool| {
            let mut ordered: Vec<&Workspace> = w
                .iter()
                .copied()
                .filter(|ws| provisionable.contains(&ws.name_any()))
                .collect();
            grants::oldest_first(&mut ordered);
            let asks: Vec<(String, Option<crate::pool::Resources>)> = ordered
                .iter()
                .map(|ws| {
                    let (quota, _) = crate::build::workspace::quota(org, ws, operator_quota);
                    (ws.name_any(), quota)
                })
                .collect();
            crate::pool::plan(pool, asks.iter().map(|(n, q)| (n.clone(), q.as_ref())))
        });
        Self {
            states,
            provisionable,
            holders,
            next_expiry,
            pool,
        }
    }
}

impl OrgView {
    /// Pure: the view of `org` with these Memberships and Workspaces (those of its
    /// namespace).
    pub fn new(
        org: Arc<Organization>,
        memberships: Vec<Arc<Membership>>,
        workspaces: Vec<Arc<Workspace>>,
        gates: Gates,
        operator_quota: Option<&crate::api::ResourceList>,
    ) -> Self {
        let meaning = Arc::new(Meaning::new(
            &org,
            &memberships,
            &workspaces,
            gates,
            operator_quota,
        ));
        Self {
            org,
            memberships,
            workspaces,
            meaning,
        }
    }

    /// The organization's namespace (its Memberships' and Workspaces').
    pub fn org_namespace(&self) -> String {
        crate::names::org_namespace(&self.org.name_any())
    }

    /// What workspace `ws` gets of the pooled quota (`None`: no pool, or no share).
    pub fn share(&self, ws: &str) -> Option<&crate::pool::Share> {
        self.pool.as_ref()?.shares.get(ws)
    }

    /// How long from `now` until a Membership expires, if one will: the latest a
    /// reconciler that read this view should come back.
    pub fn until_next_expiry(&self, now: Timestamp) -> Option<std::time::Duration> {
        until(self.next_expiry?, now)
    }

    /// The Memberships, borrowed (what the builders take).
    pub fn membership_refs(&self) -> Vec<&Membership> {
        self.memberships.iter().map(AsRef::as_ref).collect()
    }

    /// Everyone who reaches workspace `ws`, each with their highest role.
    pub fn grantees(&self, ws: &Workspace) -> Vec<WorkspaceGrantee> {
        grants::workspace_grantees(&self.org, ws, &self.membership_refs(), &self.states)
    }
}

/// How long from `now` until `at` (none when it has passed), plus a little: a reconcile
/// woken for an expiry finds it passed.
pub fn until(at: Timestamp, now: Timestamp) -> Option<std::time::Duration> {
    let ms = at.as_millisecond().checked_sub(now.as_millisecond())?;
    let ms = u64::try_from(ms).ok()?;
    Some(std::time::Duration::from_millis(ms.saturating_add(500)))
}

/// What a view was built from: the organization and every Membership and Workspace of
/// its namespace, by uid and resourceVersion (any change to any of them changes it).
fn fingerprint(org: &Organization, m: &[Arc<Membership>], w: &[Arc<Workspace>]) -> u64 {
    // Borrowed: every reconcile takes a view, and so this runs for each object of the
    // organization each time.
    fn one<K: ResourceExt>(o: &K) -> u64 {
        let m = o.meta();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            m.uid.as_deref(),
            m.resource_version.as_deref(),
            m.name.as_deref(),
        )
            .hash(&mut h);
        h.finish()
    }
    // Order-free: the indexes list names in their order, which is not the point.
    let sum = |items: &mut dyn Iterator<Item = u64>| items.fold(0u64, u64::wrapping_add);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        one(org),
        m.len(),
        sum(&mut m.iter().map(|o| one(o.as_ref()))),
        w.len(),
        sum(&mut w.iter().map(|o| one(o.as_ref()))),
    )
        .hash(&mut h);
    h.finish()
}

/// The last meaning of each organization (by namespace), built again when what it was
/// built from changed. Reconciles of the same organization share it; a reconcile that
/// finds it stale builds it again (level-based: the cache is the truth, the view its
/// digest). Only the [`Meaning`] is kept, never the objects: each view is handed out with
/// the objects its caller read. A meaning no reconcile asked for in [`IDLE`] is let go:
/// once a tenancy has converged, reconciles are rare (a change, the resync walk) and
/// views of every organization held for them were about 2.7 KiB each.
#[derive(Default)]
pub struct Views(Mutex<Held>);

/// How long a view nobody asked for is kept.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Default)]
struct Held {
    by_namespace: HashMap<String, Entry>,
    /// When idle views were last let go.
    swept: Option<Instant>,
}

struct Entry {
    key: u64,
    meaning: Arc<Meaning>,
    used: Instant,
}

impl Held {
    /// Lets go of the views not asked for in [`IDLE`] before `now`, at most once per
    /// [`IDLE`].
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < IDLE)
        {
            return;
        }
        self.swept = Some(now);
        self.by_namespace
            .retain(|_, e| now.saturating_duration_since(e.used) < IDLE);
        if self.by_namespace.capacity() > self.by_namespace.len().saturating_mul(2) {
            self.by_namespace.shrink_to_fit();
        }
    }
}

impl Views {
    /// The view of `org` given the Memberships and Workspaces of its namespace `ns`
    /// as the caches hold them `now` (`Instant::now()`, but in tests).
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &self,
        now: Instant,
        ns: &str,
        org: Arc<Organization>,
        memberships: Vec<Arc<Membership>>,
        workspaces: Vec<Arc<Workspace>>,
        gates: Gates,
        operator_quota: Option<&crate::api::ResourceList>,
    ) -> Arc<OrgView> {
        let key = fingerprint(&org, &memberships, &workspaces);
        let held = {
            let mut held = self.lock();
            held.sweep(now);
            // A view holds until its next expiry: then the same objects mean something else.
            held.by_namespace
                .get_mut(ns)
                .filter(|e| e.key == key && e.meaning.next_expiry.is_none_or(|at| gates.now < at))
                .map(|e| {
                    e.used = now;
                    e.meaning.clone()
                })
        };
        crate::metrics::view(held.is_some());
        // The objects are the ones asked with: the same versions as those the meaning was
        // built from (the key says so), and the entry keeps none of them.
        let meaning = held.unwrap_or_else(|| {
            let meaning = Arc::new(Meaning::new(
                &org,
                &memberships,
                &workspaces,
                gates,
                operator_quota,
            ));
            self.lock().by_namespace.insert(
                ns.to_string(),
                Entry {
                    key,
                    meaning: meaning.clone(),
                    used: now,
                },
            );
            meaning
        });
        Arc::new(OrgView {
            org,
            memberships,
            workspaces,
            meaning,
        })
    }

    /// Forgets an organization's view (it was deleted).
    pub fn forget(&self, ns: &str) {
        self.lock().by_namespace.remove(ns);
    }

    /// Keeps only the views of the organization namespaces `keep` accepts (the others'
    /// organizations are gone).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().by_namespace.retain(|ns, _| keep(ns));
    }

    /// How many views are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_namespace.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MembershipSpec, OrganizationSpec, SubjectKind};

    fn org() -> Arc<Organization> {
        let mut o = Organization::new(
            "acme",
            OrganizationSpec {
                display_name: "Acme".into(),
                ..Default::default()
            },
        );
        o.metadata.uid = Some("u-acme".into());
        o.metadata.resource_version = Some("1".into());
        Arc::new(o)
    }

    fn member(name: &str, rv: &str) -> Arc<Membership> {
        let mut m = Membership::new(
            name,
            MembershipSpec {
                subject: Subject {
                    kind: SubjectKind::User,
                    name: format!("{name}@acme.example"),
                    namespace: None,
                },
                role: OrgRole::Member,
                workspaces: Vec::new(),
                expires_at: None,
            },
        );
        m.metadata.namespace = Some("org-acme".into());
        m.metadata.uid = Some(format!("u-{name}"));
        m.metadata.resource_version = Some(rv.into());
        Arc::new(m)
    }

    #[test]
    fn a_view_is_built_again_only_when_what_it_reads_changed() {
        let views = Views::default();
        let gates = Gates::default();
        let get = |ms: Vec<Arc<Membership>>| {
            views.get(Instant::now(), "org-acme", org(), ms, vec![], gates, None)
        };
        let a = get(vec![member("ann", "1"), member("bob", "1")]);
        // The same objects in another order: the same view.
        let b = get(vec![member("bob", "1"), member("ann", "1")]);
        assert!(Arc::ptr_eq(&a.meaning, &b.meaning));
        // One Membership changed: a new view.
        let c = get(vec![member("ann", "2"), member("bob", "1")]);
        assert!(!Arc::ptr_eq(&a.meaning, &c.meaning));
        // One more Membership: a new view, which grants it.
        let d = get(vec![
            member("ann", "2"),
            member("bob", "1"),
            member("cy", "1"),
        ]);
        assert_eq!(d.states.get("cy"), Some(&MemberState::Granted));
        assert_eq!(d.holders[&OrgRole::Member].len(), 3);
        views.forget("org-acme");
        let e = get(vec![
            member("ann", "2"),
            member("bob", "1"),
            member("cy", "1"),
        ]);
        assert!(!Arc::ptr_eq(&d.meaning, &e.meaning));
    }

    #[test]
    fn the_views_keep_no_object() {
        let views = Views::default();
        let (o, ann) = (org(), member("ann", "1"));
        let get = || {
            views.get(
                Instant::now(),
                "org-acme",
                o.clone(),
                vec![ann.clone()],
                vec![],
                Gates::default(),
                None,
            )
        };
        let view = get();
        assert_eq!(view.states.get("ann"), Some(&MemberState::Granted));
        let meaning = view.meaning.clone();
        drop(view);
        // Only this test holds them: a newer version in the cache frees the old one.
        assert_eq!((Arc::strong_count(&o), Arc::strong_count(&ann)), (1, 1));
        // Asked again with the same versions: the kept meaning, with the objects asked with.
        let again = get();
        assert!(Arc::ptr_eq(&again.meaning, &meaning));
        assert!(Arc::ptr_eq(&again.memberships[0], &ann) && Arc::ptr_eq(&again.org, &o));
    }

    #[test]
    fn a_view_nobody_asks_for_is_let_go() {
        let views = Views::default();
        let gates = Gates::default();
        let t0 = Instant::now();
        let get = |ns: &str, at: Instant| {
            views.get(at, ns, org(), vec![member("ann", "1")], vec![], gates, None)
        };
        let a = get("org-a", t0);
        get("org-b", t0);
        assert_eq!(views.len(), 2);
        // Asked for again before it idled: the same view, kept longer.
        let later = t0 + IDLE / 2;
        assert!(Arc::ptr_eq(&a.meaning, &get("org-a", later).meaning));
        // One idle period after the first sweep: org-b was not asked for since t0.
        get("org-a", t0 + IDLE);
        assert_eq!(views.len(), 1, "org-b let go, org-a kept");
        // The next ask for org-b builds it again.
        get("org-b", t0 + IDLE);
        assert_eq!(views.len(), 2);
        // Nothing asked for in two idle periods: the next sweep keeps only what it asks.
        get("org-c", t0 + IDLE * 3);
        assert_eq!(views.len(), 1);
    }
}
