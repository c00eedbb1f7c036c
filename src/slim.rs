//! What the caches keep of the objects Tenantry makes: a projection, not the object.
//!
//! A cached RoleBinding took about 2.8 KiB of heap (measured with a counting allocator:
//! the typed object's `ObjectMeta`, a `BTreeMap` node per label map, a `String` per value),
//! and the child kinds are most of what the controller caches (235,000 objects at 25x the
//! benchmark's default size). The applier needs one answer from the cache: does the live
//! object still hold everything the build asks for ([`Slim::holds`])? That is answered from
//! the *leaves* of the live object, computed once when the watch brings it: one 32-bit hash
//! per scalar (its path and value) and per list (its path and length), sorted, under a key
//! drawn when the process starts ([`KEYS`]). The desired
//! object's leaves must all be among them, the same test as before (a subset: fields that
//! the API server defaults or others set are ignored; lists compare element by element).
//! Nothing else of the content is kept, except what a reader needs by name
//! ([`Projected`]: a namespace's identity labels and annotations, a quota's hard limits and
//! use).
//!
//! A desired value that is empty (`""`, `{}`, `null`) has no leaves: the API server omits
//! empty values, so an absent field is what it means; a desired empty list asks that the
//! live one be absent or empty (live lists carry a mark when they are not). A build that
//! drops something still changes the object's [`crate::labels::APPLIED`] digest, which is
//! one of its leaves.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::LazyLock;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus,
    Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::Value;

use crate::labels;
use crate::provision::Object;

mod walker;

/// A child kind the caches keep as a [`Slim`].
pub trait Projected: Object {
    /// Whether the label or annotation `key` is kept by name in the projection's metadata
    /// (every one is in the leaves).
    fn keeps(_key: &str) -> bool {
        false
    }

    /// Whether the projection keeps the object's uid.
    const UID: bool = false;

    /// Whether the projection keeps the leaves of the content ([`Slim::holds`]). Kinds
    /// cached as metadata only compare what is kept by name.
    const LEAVES: bool = true;

    /// JSON pointers of values the build sets whole: there the live value must hold what
    /// the desired one does *and nothing more* (one leaf: the digest of what is under it).
    /// For atomic structs the API server adds nothing to, such as a label selector: a
    /// desired `{}` (every pod) has no leaves of its own, so a live selector narrowed by
    /// another writer would otherwise still hold everything asked. A server-side apply
    /// replaces an atomic struct whole, so the repair takes.
    const EXACT: &'static [&'static str] = &[];

    /// What readers other than the applier need of the live object's content, kept in a
    /// compact form (`()`: nothing).
    type Kept: Clone + Send + Sync + 'static;

    /// What is kept of `self`, if anything.
    fn keep(&self) -> Option<Self::Kept>;

    /// An object holding only what was kept, for its readers.
    fn rebuild(kept: &Self::Kept) -> Self;
}

/// Keys and values, sorted by key: labels, annotations or resource amounts as the
/// projection keeps them, packed in one allocation (each string after its length, four
/// bytes little-endian). Two boxed strings per entry cost two allocations each rounded up
/// to the allocator's size class (a namespace's kept labels were 26 blocks); a
/// `BTreeMap` node alone is 540 bytes. Read by lengths, never by a separator: a value
/// may hold any character.
#[derive(Clone, Default)]
pub struct Pairs(Box<[u8]>);

impl Pairs {
    /// Packs `entries` (sorted by key, as a `BTreeMap` gives them). A string longer than
    /// four bytes can count (no API object holds one) is left out with its entry.
    fn of<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut packed = Vec::new();
        for (k, v) in entries {
            let (Ok(kl), Ok(vl)) = (u32::try_from(k.len()), u32::try_from(v.len())) else {
                continue;
            };
            packed.extend_from_slice(&kl.to_le_bytes());
            packed.extend_from_slice(k.as_bytes());
            packed.extend_from_slice(&vl.to_le_bytes());
            packed.extend_from_slice(v.as_bytes());
        }
        Self(packed.into_boxed_slice())
    }

    /// The entries, in key order.
    pub fn iter(&self) -> PairsIter<'_> {
        PairsIter(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes of its keys and values.
    fn bytes(&self) -> usize {
        self.0.len()
    }
}

/// The entries of [`Pairs`].
pub struct PairsIter<'a>(&'a [u8]);

impl<'a> PairsIter<'a> {
    fn string(&mut self) -> Option<&'a str> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let (s, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.string().zip(self.string());
        if entry.is_none() {
            // Packed by `Pairs::of`, so never short; if it were, stop for good.
            self.0 = &[];
        }
        entry
    }
}

fn pairs<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> Pairs {
    Pairs::of(entries.into_iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Nothing of the content is kept.
macro_rules! keeps_no_content {
    () => {
        type Kept = ();
        fn keep(&self) -> Option<()> {
            None
        }
        fn rebuild(_: &()) -> Self {
            Self::default()
        }
    };
}

/// Tenantry's labels and annotations, but the digest (which only the applier reads, from
/// the leaves).
fn tenantry_key(key: &str) -> bool {
    key.starts_with("tenantry.dev/") && key != labels::APPLIED
}

impl Projected for RoleBinding {
    keeps_no_content!();
}
impl Projected for Role {
    keeps_no_content!();
}
impl Projected for ClusterRole {
    keeps_no_content!();
}
impl Projected for ClusterRoleBinding {
    keeps_no_content!();
}
impl Projected for LimitRange {
    keeps_no_content!();
}
/// Its `podSelector` is `{}` (every pod of the workspace): narrowed, pods outside the
/// selector would be open to every namespace.
impl Projected for NetworkPolicy {
    const EXACT: &'static [&'static str] = &["/spec/podSelector"];
    keeps_no_content!();
}
/// A client's ServiceAccount: its credential verifier and rotation state (annotations), and
/// its uid (a rotation that replaces it names the one it replaces).
impl Projected for ServiceAccount {
    fn keeps(key: &str) -> bool {
        tenantry_key(key)
    }
    const UID: bool = true;
    keeps_no_content!();
}

/// A namespace's owner and identity (whose it is, which organization and workspace) and
/// its recorded deletion policy. Its Pod Security labels (six, half of what a workspace
/// namespace's kept labels took) are read from the API server by the one writer that
/// needs them, when it orphans the namespace ([`crate::provision::release_namespace`]).
impl Projected for Namespace {
    fn keeps(key: &str) -> bool {
        tenantry_key(key) || key == labels::MANAGED_BY
    }
    keeps_no_content!();
}

/// Copies of shared ConfigMaps and Secrets, and client Secrets: cached as metadata (no
/// value is ever in the controller's memory), kept as Tenantry's labels and annotations
/// (the copy's identity and the digest of what was applied: their writer compares those),
/// no leaves. As whole `PartialObjectMeta` they had taken 3 KiB each (a `BTreeMap` node
/// per label map, the owner references, the store's key).
macro_rules! metadata_only {
    ($($kind:ty),*) => {$(
        impl Projected for PartialObjectMeta<$kind> {
            fn keeps(key: &str) -> bool {
                key.starts_with("tenantry.dev/") || key == labels::MANAGED_BY
            }
            const LEAVES: bool = false;
            keeps_no_content!();
        }
    )*};
}
metadata_only!(ConfigMap, Secret);

/// An organization's usage and pooled quota read each workspace quota's hard limits and
/// use, and its identity labels.
impl Projected for ResourceQuota {
    fn keeps(key: &str) -> bool {
        key == labels::ORGANIZATION || key == labels::WORKSPACE
    }

    type Kept = Amounts;

    fn keep(&self) -> Option<Amounts> {
        let amounts = |m: Option<&BTreeMap<String, Quantity>>| {
            pairs(m.into_iter().flatten().map(|(k, q)| (k, &q.0)))
        };
        Some(Amounts {
            hard: amounts(self.spec.as_ref().and_then(|s| s.hard.as_ref())),
            used: amounts(self.status.as_ref().and_then(|s| s.used.as_ref())),
        })
    }

    fn rebuild(kept: &Amounts) -> Self {
        let map = |p: &Pairs| {
            Some(
                p.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        ResourceQuota {
            metadata: ObjectMeta::default(),
            spec: Some(ResourceQuotaSpec {
                hard: map(&kept.hard),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                used: map(&kept.used),
                ..Default::default()
            }),
        }
    }
}

/// A quota's hard limits (`spec.hard`) and use (`status.used`).
#[derive(Clone)]
pub struct Amounts {
    hard: Pairs,
    used: Pairs,
}

/// The cached projection of a live object of kind `K` (its name and namespace are its key
/// in [`Children`]): whether it is being deleted, the labels and annotations
/// [`Projected::keeps`], its uid if [`Projected::UID`], the hashes of its leaves, and
/// what [`Projected::keep`] keeps.
///
/// The leaves are those of its labels (sorted), then the others (sorted). Once the applier
/// found that it holds a desired object ([`Children::verified`]) only the labels' leaves
/// are kept, and after them the digest of that desired object ([`Desired::digest`]): the
/// labels still answer [`Slim::has_labels`] (which objects are an owner's), the digest
/// [`Slim::holds`] for that desired object, and any change to the live object brings a
/// whole projection again with the watch event. Converged, nearly every projection is
/// verified: a RoleBinding's leaves go from about twenty to six.
pub struct Slim<K: Projected> {
    deleting: bool,
    /// `leaves` are the labels' and a desired object's digest.
    verified: bool,
    /// How many leaves are the labels'.
    labels: u32,
    leaves: Box<[Leaf]>,
    /// What is kept by name, on the kinds that keep anything (most objects have none: a
    /// projection is then 32 bytes and its leaves).
    named: Option<Box<Named<K>>>,
}

/// The uid, labels, annotations and content a projection keeps by name.
struct Named<K: Projected> {
    uid: Option<Box<str>>,
    labels: Pairs,
    annotations: Pairs,
    kept: Option<K::Kept>,
}

impl<K: Projected> Clone for Named<K> {
    fn clone(&self) -> Self {
        Self {
            uid: self.uid.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            kept: self.kept.clone(),
        }
    }
}

impl<K: Projected> std::fmt::Debug for Slim<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No content: the leaves are hashes, and a Secret's would say nothing either.
        f.debug_struct("Slim")
            .field("deleting", &self.deleting)
            .field("verified", &self.verified)
            .field("leaves", &self.leaves.len())
            .finish()
    }
}

impl<K: Projected> Slim<K> {
    /// The projection of `live`, as a watch brought it.
    pub fn of(live: &K) -> Self {
        let m = live.meta();
        let kept = |map: &Option<BTreeMap<String, String>>| {
            pairs(map.iter().flatten().filter(|(k, _)| K::keeps(k)))
        };
        // An object that does not serialize has no leaves: it is never up to date, and
        // the applier's write says why.
        let all = if K::LEAVES {
            live_leaves(live).unwrap_or_default()
        } else {
            Vec::new()
        };
        // The labels' leaves first (each is among `all`), then the others.
        let mut ours: Vec<Leaf> = m
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| label_leaf(k, v))
            .filter(|l| all.binary_search(l).is_ok())
            .collect();
        ours.sort_unstable();
        ours.dedup();
        let labels = u32::try_from(ours.len()).unwrap_or_default();
        if labels == 0 {
            ours.clear();
        }
        let mut leaves = Vec::with_capacity(all.len());
        leaves.extend_from_slice(&ours);
        leaves.extend(all.iter().filter(|l| ours.binary_search(l).is_err()));
        let named = Named {
            uid: m.uid.as_deref().filter(|_| K::UID).map(Box::from),
            labels: kept(&m.labels),
            annotations: kept(&m.annotations),
            kept: live.keep(),
        };
        let empty = named.uid.is_none()
            && named.labels.is_empty()
            && named.annotations.is_empty()
            && named.kept.is_none();
        Self {
            deleting: m.deletion_timestamp.is_some(),
            verified: false,
            labels,
            leaves: leaves.into_boxed_slice(),
            named: (!empty).then(|| Box::new(named)),
        }
    }

    /// The verified form of this projection, found to hold `desired`: the labels' leaves
    /// and the desired object's digest (`None`: it is verified already, or has no labels
    /// to keep).
    fn verify(&self, desired: &Desired) -> Option<Self> {
        if self.verified || self.labels == 0 {
            return None;
        }
        let labels = self.label_leaves();
        let mut leaves = Vec::with_capacity(labels.len().saturating_add(1));
        leaves.extend_from_slice(labels);
        leaves.push(desired.digest);
        Some(Self {
            deleting: self.deleting,
            verified: true,
            labels: self.labels,
            leaves: leaves.into_boxed_slice(),
            named: self.named.clone(),
        })
    }

    fn label_leaves(&self) -> &[Leaf] {
        let n = usize::try_from(self.labels).unwrap_or(usize::MAX);
        self.leaves.get(..n).unwrap_or(&self.leaves)
    }

    /// Whether `l` is one of the live object's leaves (of a whole projection; of a
    /// verified one, whether it is one of its labels').
    fn has(&self, l: &Leaf) -> bool {
        let labels = self.label_leaves();
        labels.binary_search(l).is_ok()
            || (!self.verified
                && self
                    .leaves
                    .get(labels.len()..)
                    .is_some_and(|rest| rest.binary_search(l).is_ok()))
    }
}

impl<K: Projected> Slim<K> {
    /// Whether the live object holds everything `desired` asks for (verified: whether
    /// `desired` is the object it was found to hold).
    pub fn holds(&self, desired: &Desired) -> bool {
        if self.verified {
            return self.leaves.last() == Some(&desired.digest);
        }
        let has = |l: &Leaf| self.has(l);
        desired.required.iter().all(has) && !desired.absent.iter().any(has)
    }

    /// Whether the live object carries every label of `labels`.
    pub fn has_labels<'a>(
        &self,
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> bool {
        let ours = self.label_leaves();
        labels
            .into_iter()
            .all(|(k, v)| ours.binary_search(&label_leaf(k, v)).is_ok())
    }

    fn labels_kept(&self) -> PairsIter<'_> {
        self.named
            .as_ref()
            .map_or(PairsIter(&[]), |n| n.labels.iter())
    }

    fn annotations_kept(&self) -> PairsIter<'_> {
        self.named
            .as_ref()
            .map_or(PairsIter(&[]), |n| n.annotations.iter())
    }

    /// The value of label `key`, if kept by name ([`Projected::keeps`]).
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels_kept().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of annotation `key`, if kept by name ([`Projected::keeps`]).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations_kept()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The labels kept by name, sorted by key.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels_kept()
    }

    /// The annotations kept by name, as a map.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations_kept()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Whether the object is being deleted.
    pub fn deleting(&self) -> bool {
        self.deleting
    }

    /// Its uid, if [`Projected::UID`].
    pub fn uid(&self) -> Option<&str> {
        self.named.as_ref()?.uid.as_deref()
    }

    /// An object holding what [`Projected::keep`] kept of the live one.
    pub fn kept(&self) -> Option<K> {
        self.named.as_ref()?.kept.as_ref().map(K::rebuild)
    }
}

impl<K: Projected> Slim<K> {
    /// About the bytes it holds (for the caches' size report): 4 per leaf, and the
    /// strings kept.
    fn footprint(&self) -> usize {
        let strings = self.named.as_ref().map_or(0, |n| {
            n.labels.bytes().saturating_add(n.annotations.bytes())
        });
        let kept = self.named.as_ref().and_then(|n| n.kept.as_ref());
        let kept = kept.map_or(0, |k| {
            serde_json::to_vec(&K::rebuild(k)).map_or(0, |b| b.len())
        });
        self.leaves
            .len()
            .saturating_mul(size_of::<Leaf>())
            .saturating_add(self.uid().map_or(0, str::len))
            .saturating_add(strings)
            .saturating_add(kept)
    }
}

/// A namespace's objects, sorted by name, in a vector no longer than they are: most
/// namespaces hold one object of a kind (a hash map per namespace cost more than the
/// objects' projections).
type ByName<K> = Vec<(Box<str>, Arc<Slim<K>>)>;
type ByNamespace<K> = HashMap<Box<str>, ByName<K>>;

fn position<K: Projected>(by_name: &ByName<K>, name: &str) -> Result<usize, usize> {
    by_name.binary_search_by(|(n, _)| (**n).cmp(name))
}

/// The cache of one child kind: projections by namespace (`""` for cluster-scoped kinds),
/// then name. "What this namespace holds" is one lookup; no other index is needed.
pub struct Children<K: Projected> {
    map: Arc<RwLock<ByNamespace<K>>>,
    ready: Arc<tokio::sync::watch::Sender<bool>>,
}

impl<K: Projected> Clone for Children<K> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Projected> Default for Children<K> {
    fn default() -> Self {
        Self {
            map: Default::default(),
            ready: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl<K: Projected> Children<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByNamespace<K>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The object `name` in namespace `ns` (`None`: cluster-scoped).
    pub fn get(&self, ns: Option<&str>, name: &str) -> Option<Arc<Slim<K>>> {
        self.read()
            .get(ns.unwrap_or_default())
            .and_then(|m| Some(m.get(position(m, name).ok()?)?.1.clone()))
    }

    /// Every object in namespace `ns`, with its name.
    pub fn in_namespace(&self, ns: &str) -> Vec<(String, Arc<Slim<K>>)> {
        self.read()
            .get(ns)
            .into_iter()
            .flatten()
            .map(|(name, o)| (name.to_string(), o.clone()))
            .collect()
    }

    /// An object for which `pred` holds, with its namespace and name.
    pub fn find(&self, pred: impl Fn(&Slim<K>) -> bool) -> Option<(String, String, Arc<Slim<K>>)> {
        self.read().iter().find_map(|(ns, m)| {
            m.iter()
                .find(|(_, o)| pred(o))
                .map(|(name, o)| (ns.to_string(), name.to_string(), o.clone()))
        })
    }

    /// The objects held.
    pub fn len(&self) -> usize {
        self.read().values().map(Vec::len).sum()
    }

    /// `seen`, the projection of `name` in `ns` the applier found to hold `desired`, is
    /// replaced by its verified form ([`Slim`]) unless the watch replaced it meanwhile.
    pub fn verified(&self, ns: Option<&str>, name: &str, seen: &Arc<Slim<K>>, desired: &Desired) {
        let Some(compact) = seen.verify(desired) else {
            return;
        };
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let Some(by_name) = map.get_mut(ns.unwrap_or_default()) else {
            return;
        };
        if let Ok(i) = position(by_name, name)
            && let Some(entry) = by_name.get_mut(i)
            && Arc::ptr_eq(&entry.1, seen)
        {
            entry.1 = Arc::new(compact);
        }
    }

    /// Waits until the first full list is in.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

impl<K: Projected> Children<K> {
    /// What it holds: the objects, about the bytes they hold (names and leaves,
    /// [`Slim::footprint`]), and how many of the projections are whole (not verified:
    /// no build has been found held by them since the watch brought them).
    pub fn measure(&self) -> Measure {
        let map = self.read();
        let mut m = Measure::default();
        for (ns, by_name) in map.iter() {
            m.bytes = m.bytes.saturating_add(ns.len());
            for (name, o) in by_name {
                m.objects = m.objects.saturating_add(1);
                m.whole = m.whole.saturating_add(usize::from(!o.verified));
                m.bytes = m
                    .bytes
                    .saturating_add(name.len())
                    .saturating_add(o.footprint());
            }
        }
        m
    }
}

/// What a cache holds ([`Children::measure`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    pub objects: usize,
    pub bytes: usize,
    /// Projections not verified ([`Slim`]).
    pub whole: usize,
}

/// The watch's side of a [`Children`] cache: a relist builds a new map, swapped in when
/// complete.
pub struct ChildrenWriter<K: Projected> {
    cache: Children<K>,
    pending: Option<ByNamespace<K>>,
}

impl<K: Projected> ChildrenWriter<K> {
    pub fn new(cache: Children<K>) -> Self {
        Self {
            cache,
            pending: None,
        }
    }

    fn key(o: &K) -> (Box<str>, Box<str>) {
        let m = o.meta();
        (
            m.namespace.as_deref().unwrap_or_default().into(),
            m.name.as_deref().unwrap_or_default().into(),
        )
    }

    pub fn apply(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(o) => {
                let (ns, name) = Self::key(o);
                let slim = Arc::new(Slim::of(o));
                let mut map = self.cache.map.write().unwrap_or_else(|e| e.into_inner());
                let by_name = map.entry(ns).or_default();
                match position(by_name, &name) {
                    Ok(i) => {
                        if let Some(entry) = by_name.get_mut(i) {
                            entry.1 = slim;
                        }
                    }
                    Err(i) => {
                        by_name.insert(i, (name, slim));
                        by_name.shrink_to_fit();
                    }
                }
            }
            watcher::Event::Delete(o) => {
                let (ns, name) = Self::key(o);
                let mut map = self.cache.map.write().unwrap_or_else(|e| e.into_inner());
                if let Some(by_name) = map.get_mut(&ns) {
                    if let Ok(i) = position(by_name, &name) {
                        by_name.remove(i);
                        by_name.shrink_to_fit();
                    }
                    if by_name.is_empty() {
                        map.remove(&ns);
                    }
                }
            }
            watcher::Event::Init => self.pending = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let (ns, name) = Self::key(o);
                self.pending
                    .get_or_insert_with(HashMap::new)
                    .entry(ns)
                    .or_default()
                    .push((name, Arc::new(Slim::of(o))));
            }
            watcher::Event::InitDone => {
                let mut listed = self.pending.take().unwrap_or_default();
                for by_name in listed.values_mut() {
                    by_name.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    // A name listed twice (not expected of a list): the last one stays.
                    by_name.dedup_by(|later, earlier| {
                        let same = later.0 == earlier.0;
                        if same {
                            std::mem::swap(later, earlier);
                        }
                        same
                    });
                    by_name.shrink_to_fit();
                }
                listed.shrink_to_fit();
                *self.cache.map.write().unwrap_or_else(|e| e.into_inner()) = listed;
                self.cache.ready.send_replace(true);
            }
        }
    }
}

/// What a desired object asks of the live one: leaves it must hold, and the marks of
/// non-empty lists it must not hold (a desired empty list: absent or empty, as in the
/// subset comparison; an element someone added to it is drift).
#[derive(Debug, Default)]
pub struct Desired {
    required: Vec<Leaf>,
    absent: Vec<Leaf>,
    /// Of both lists: what a verified projection keeps of the desired object it holds.
    digest: Leaf,
}

/// What `desired` asks for, to test with [`Slim::holds`].
pub fn desired<K: Projected>(desired: &K) -> serde_json::Result<Desired> {
    let mut out = Leaves::default();
    leaves_into(desired, Side::Desired, &mut out)?;
    // In one order whichever way they were collected: the digest is compared with the
    // digest of a later build of the same object.
    out.present.sort_unstable();
    out.absent.sort_unstable();
    // 0xfa begins no path (no UTF-8 key holds that byte).
    let mut h = hasher();
    h.write_u8(0xfa);
    for list in [&out.present, &out.absent] {
        for l in list {
            h.write_u32(*l);
        }
        h.write_usize(list.len());
    }
    Ok(Desired {
        required: out.present,
        absent: out.absent,
        digest: leaf(&h),
    })
}

/// Leaves collected from an object.
#[derive(Default)]
struct Leaves {
    present: Vec<Leaf>,
    /// Desired side only: marks of lists that must be empty.
    absent: Vec<Leaf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// A live object: every value.
    Live,
    /// A desired object: empty values (what the API server omits) have no leaves.
    Desired,
}

/// The metadata fields that are content; the rest (name, namespace, uid, resourceVersion,
/// timestamps, managedFields) is the API server's or the object's address.
const METADATA_CONTENT: [&str; 4] = ["labels", "annotations", "ownerReferences", "finalizers"];

/// The leaves of `object` on `side`, [`Projected::EXACT`]'s included: walked as it
/// serializes ([`walker`]), or from its `serde_json::Value` for kinds with exact values
/// and for what the walker does not take (the same leaves: unit-tested).
fn leaves_into<K: Projected>(object: &K, side: Side, out: &mut Leaves) -> serde_json::Result<()> {
    if K::EXACT.is_empty() {
        if walker::collect(object, side, out).is_ok() {
            return Ok(());
        }
        *out = Leaves::default();
    }
    value_leaves_into::<K>(&serde_json::to_value(object)?, side, out);
    Ok(())
}

/// The leaves of an object of kind `K` from its `Value`, [`Projected::EXACT`]'s included.
fn value_leaves_into<K: Projected>(value: &Value, side: Side, out: &mut Leaves) {
    collect(value, side, out);
    out.present.extend(exact::<K>(value));
}

/// A live object's leaves as a projection keeps them: sorted, each once.
fn sorted_unique(out: Leaves) -> Vec<Leaf> {
    let mut leaves = out.present;
    leaves.sort_unstable();
    leaves.dedup();
    leaves
}

/// The sorted, deduplicated leaf hashes of the live object `object`.
fn live_leaves<K: Projected>(object: &K) -> serde_json::Result<Vec<Leaf>> {
    let mut out = Leaves::default();
    leaves_into(object, Side::Live, &mut out)?;
    Ok(sorted_unique(out))
}

/// The sorted, deduplicated leaf hashes of a live object of kind `K`, from its `Value`.
#[cfg(test)]
fn leaves<K: Projected>(object: &Value) -> Vec<Leaf> {
    let mut out = Leaves::default();
    value_leaves_into::<K>(object, Side::Live, &mut out);
    sorted_unique(out)
}

/// One leaf per [`Projected::EXACT`] pointer of `K`: the pointer and every leaf under it
/// (as a desired object has them, on both sides: empty values count for nothing, as they
/// select nothing more), so the live value matches only when it holds exactly what the
/// desired one does.
fn exact<K: Projected>(object: &Value) -> impl Iterator<Item = Leaf> + '_ {
    K::EXACT.iter().map(move |pointer| {
        let mut under = Leaves::default();
        if let Some(v) = object.pointer(pointer) {
            walk(hasher(), v, Side::Desired, &mut under);
        }
        under.present.sort_unstable();
        // 0xfb begins no path (no UTF-8 key holds that byte): no other leaf is this one.
        let mut h = hasher();
        h.write_u8(0xfb);
        key(&mut h, pointer);
        for leaf in &under.present {
            h.write_u32(*leaf);
        }
        h.write_usize(under.present.len());
        leaf(&h)
    })
}

/// The leaves of an object: everything but its `status`, its `apiVersion` and `kind`,
/// and the metadata that is not content.
fn collect(object: &Value, side: Side, out: &mut Leaves) {
    if let Value::Object(fields) = object {
        for (key, value) in fields {
            match key.as_str() {
                "status" | "apiVersion" | "kind" => {}
                "metadata" => {
                    for (k, v) in value.as_object().into_iter().flatten() {
                        if METADATA_CONTENT.contains(&k.as_str()) {
                            walk(path(&["metadata", k]), v, side, out);
                        }
                    }
                }
                _ => walk(path(&[key]), value, side, out),
            }
        }
    }
}

/// A leaf: 32 bits of SipHash under [`KEYS`].
type Leaf = u32;

/// The key of every leaf hash, drawn when the process starts: nobody outside it can
/// compute a leaf, so no value can be made to collide with another on purpose.
static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

fn hasher() -> DefaultHasher {
    KEYS.build_hasher()
}

/// The leaf of what `h` has taken in: its 64 bits folded to 32.
fn leaf(h: &DefaultHasher) -> Leaf {
    let x = h.finish();
    (x >> 32) as u32 ^ x as u32
}

/// A hasher at `segments`, each ended by a separator no key holds.
fn path(segments: &[&str]) -> DefaultHasher {
    let mut h = hasher();
    for s in segments {
        key(&mut h, s);
    }
    h
}

fn key(h: &mut DefaultHasher, segment: &str) {
    h.write(segment.as_bytes());
    h.write_u8(0xff);
}

/// The leaf of label `key` with value `value`, as [`collect`] makes it from a `Value`.
fn label_leaf(key: &str, value: &str) -> Leaf {
    let mut h = path(&["metadata", "labels", key]);
    string(&mut h, value);
    leaf(&h)
}

/// A string value's leaf (also what [`Slim::has_labels`] looks for, without a `Value`).
fn string(h: &mut DefaultHasher, s: &str) {
    h.write_u8(3);
    s.hash(h);
}

fn scalar(h: &mut DefaultHasher, v: &Value) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            b.hash(h);
        }
        Value::Number(n) => {
            h.write_u8(2);
            n.to_string().hash(h);
        }
        Value::String(s) => string(h, s),
        Value::Array(_) | Value::Object(_) => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The mark of a non-empty list at `at`.
fn non_empty(at: &DefaultHasher) -> Leaf {
    let mut h = at.clone();
    h.write_u8(0xfc);
    leaf(&h)
}

fn walk(at: DefaultHasher, v: &Value, side: Side, out: &mut Leaves) {
    if side == Side::Desired && is_empty(v) {
        if v.is_array() {
            out.absent.push(non_empty(&at));
        }
        return;
    }
    match v {
        Value::Object(fields) => {
            for (k, child) in fields {
                let mut h = at.clone();
                key(&mut h, k);
                walk(h, child, side, out);
            }
        }
        Value::Array(items) => {
            // The length: a list with an element more or less is a different list.
            let mut len = at.clone();
            len.write_u8(0xfe);
            len.write_usize(items.len());
            out.present.push(leaf(&len));
            if side == Side::Live && !items.is_empty() {
                out.present.push(non_empty(&at));
            }
            for (i, child) in items.iter().enumerate() {
                let mut h = at.clone();
                h.write_u8(0xfd);
                h.write_usize(i);
                walk(h, child, side, out);
            }
        }
        scalar_value => {
            let mut h = at;
            scalar(&mut h, scalar_value);
            out.present.push(leaf(&h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_pack_any_string_and_read_back_in_order() {
        let map: BTreeMap<String, String> =
            [("a", ""), ("tenantry.dev/x", "v\0with\0nul"), ("z", "ünï")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let packed = pairs(&map);
        let back: Vec<(&str, &str)> = packed.iter().collect();
        let want: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(back, want);
        assert!(!packed.is_empty());
        assert!(Pairs::default().iter().next().is_none());
        // A truncated buffer ends the iteration, without a panic.
        let short = Pairs(packed.0[..packed.0.len() - 1].into());
        assert_eq!(short.iter().count(), 2);
    }
    use k8s_openapi::api::rbac::v1::{RoleRef, Subject};

    #[test]
    fn a_selector_set_whole_must_not_be_narrowed_or_widened() {
        use k8s_openapi::api::networking::v1::NetworkPolicySpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let policy = |selector: LabelSelector| NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("isolation".into()),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector),
                policy_types: Some(vec!["Ingress".into()]),
                ..Default::default()
            }),
        };
        let every_pod = policy(LabelSelector::default());
        let narrowed = policy(LabelSelector {
            match_labels: Some([("app".to_string(), "a".to_string())].into()),
            ..Default::default()
        });
        let asked = desired(&every_pod).unwrap();
        assert!(Slim::of(&every_pod).holds(&asked));
        assert!(
            !Slim::of(&narrowed).holds(&asked),
            "narrowed by another writer"
        );
        // Empty maps and lists in the selector still select every pod.
        let spelled_out = policy(LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(Vec::new()),
        });
        assert!(Slim::of(&spelled_out).holds(&asked));
        // And the other way: a selector the build asks for is not met by `{}`.
        assert!(!Slim::of(&every_pod).holds(&desired(&narrowed).unwrap()));
        assert!(Slim::of(&narrowed).holds(&desired(&narrowed).unwrap()));
    }

    fn binding(subjects: &[&str]) -> RoleBinding {
        RoleBinding {
            metadata: ObjectMeta {
                name: Some("b".into()),
                namespace: Some("ns".into()),
                labels: Some([("tenantry.dev/organization".into(), "acme".into())].into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "edit".into(),
            },
            subjects: Some(
                subjects
                    .iter()
                    .map(|s| Subject {
                        kind: "User".into(),
                        name: s.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    /// The live object as the API server returns it: defaults and server metadata added.
    fn served(mut rb: RoleBinding) -> RoleBinding {
        rb.metadata.uid = Some("u-1".into());
        rb.metadata.resource_version = Some("42".into());
        rb.metadata
            .labels
            .get_or_insert_default()
            .insert("someone/else".into(), "x".into());
        for s in rb.subjects.iter_mut().flatten() {
            s.api_group = Some("rbac.authorization.k8s.io".into());
        }
        rb
    }

    #[test]
    fn a_live_object_holds_what_was_built_and_what_others_added() {
        let built = binding(&["alice", "bob"]);
        let live = Slim::of(&served(built.clone()));
        assert!(live.holds(&desired(&built).unwrap()));
        assert!(live.has_labels(&std::collections::BTreeMap::from([(
            "tenantry.dev/organization".to_string(),
            "acme".to_string()
        )])));
        assert!(!live.has_labels(&std::collections::BTreeMap::from([(
            "tenantry.dev/organization".to_string(),
            "other".to_string()
        )])));
    }

    #[test]
    fn a_verified_projection_keeps_its_labels_and_the_one_build_it_holds() {
        let built = binding(&["alice", "bob"]);
        let asked = desired(&built).unwrap();
        let cache = Children::<RoleBinding>::default();
        let mut writer = ChildrenWriter::new(cache.clone());
        writer.apply(&watcher::Event::Apply(served(built.clone())));
        let whole = cache.get(Some("ns"), "b").unwrap();
        assert!(!whole.verified && whole.holds(&asked));
        let label = |v: &str| {
            std::collections::BTreeMap::from([(
                "tenantry.dev/organization".to_string(),
                v.to_string(),
            )])
        };
        // Replaced by the watch meanwhile: the newer projection stays whole.
        let newer = served(binding(&["alice"]));
        writer.apply(&watcher::Event::Apply(newer.clone()));
        cache.verified(Some("ns"), "b", &whole, &asked);
        assert!(!cache.get(Some("ns"), "b").unwrap().verified);
        writer.apply(&watcher::Event::Apply(served(built.clone())));
        let whole = cache.get(Some("ns"), "b").unwrap();
        cache.verified(Some("ns"), "b", &whole, &asked);
        let verified = cache.get(Some("ns"), "b").unwrap();
        assert!(verified.verified);
        assert_eq!(cache.measure().whole, 0);
        assert_eq!(
            verified.leaves.len(),
            3,
            "two labels' leaves and the digest, of {}",
            whole.leaves.len()
        );
        assert!(verified.holds(&asked) && verified.holds(&desired(&built).unwrap()));
        for other in [binding(&["alice"]), binding(&["alice", "bob", "carol"])] {
            assert!(!verified.holds(&desired(&other).unwrap()), "{other:?}");
        }
        let mut relabelled = built.clone();
        relabelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "a".into());
        assert!(!whole.holds(&desired(&relabelled).unwrap()));
        assert!(!verified.holds(&desired(&relabelled).unwrap()));
        assert!(verified.has_labels(&label("acme")) && !verified.has_labels(&label("other")));
        // Verified once: a second verification changes nothing.
        cache.verified(Some("ns"), "b", &verified, &asked);
        assert!(Arc::ptr_eq(&verified, &cache.get(Some("ns"), "b").unwrap()));
        // Any event brings the whole projection back.
        writer.apply(&watcher::Event::Apply(served(binding(&["alice"]))));
        let again = cache.get(Some("ns"), "b").unwrap();
        assert!(!again.verified && !again.holds(&asked));
        assert!(again.holds(&desired(&binding(&["alice"])).unwrap()));
    }

    #[test]
    fn a_verified_namespace_keeps_what_it_keeps_by_name() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("ws".into()),
                labels: Some([("tenantry.dev/workspace".into(), "w".into())].into()),
                annotations: Some([(labels::OWNER_UID.into(), "u".into())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let whole = Slim::of(&ns);
        let verified = whole.verify(&desired(&ns).unwrap()).unwrap();
        assert_eq!(verified.label("tenantry.dev/workspace"), Some("w"));
        assert_eq!(verified.annotation(labels::OWNER_UID), Some("u"));
        // No label: nothing to keep, it stays whole.
        assert!(
            Slim::of(&Namespace::default())
                .verify(&Desired::default())
                .is_none()
        );
    }

    #[test]
    fn a_changed_value_or_list_is_drift() {
        let live = Slim::of(&served(binding(&["alice", "bob"])));
        for other in [
            binding(&["alice"]),
            binding(&["alice", "bob", "carol"]),
            binding(&["bob", "alice"]),
            binding(&["alice", "mallory"]),
        ] {
            assert!(!live.holds(&desired(&other).unwrap()), "{other:?}");
        }
        let mut role = binding(&["alice", "bob"]);
        role.role_ref.name = "admin".into();
        assert!(!live.holds(&desired(&role).unwrap()));
    }

    #[test]
    fn empty_desired_values_match_fields_the_server_omits() {
        let mut built = binding(&["alice"]);
        built.metadata.annotations = Some(Default::default());
        built.subjects.get_or_insert_default()[0].namespace = Some(String::new());
        let live = Slim::of(&served(binding(&["alice"])));
        assert!(live.holds(&desired(&built).unwrap()));
        // A desired empty list: the live one absent or empty, not with a subject.
        let nobody = binding(&[]);
        assert!(!live.holds(&desired(&nobody).unwrap()));
        assert!(Slim::of(&served(binding(&[]))).holds(&desired(&nobody).unwrap()));
        let mut omitted = served(binding(&[]));
        omitted.subjects = None;
        assert!(Slim::of(&omitted).holds(&desired(&nobody).unwrap()));
    }

    #[test]
    fn a_namespace_keeps_its_identity_and_a_quota_its_use() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("ws".into()),
                labels: Some(
                    [
                        ("tenantry.dev/organization".into(), "acme".into()),
                        (
                            "pod-security.kubernetes.io/enforce".into(),
                            "restricted".into(),
                        ),
                        ("team".into(), "a".into()),
                    ]
                    .into(),
                ),
                annotations: Some(
                    [
                        (labels::OWNER_UID.into(), "u".into()),
                        (labels::APPLIED.into(), "d".into()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let slim = Slim::of(&ns);
        assert_eq!(
            slim.labels().collect::<Vec<_>>(),
            [("tenantry.dev/organization", "acme")],
            "Pod Security labels are in the leaves only"
        );
        assert_eq!(slim.label("tenantry.dev/organization"), Some("acme"));
        assert_eq!(slim.label("team"), None, "not kept by name");
        assert_eq!(
            slim.annotations().into_keys().collect::<Vec<_>>(),
            [labels::OWNER_UID]
        );
        assert_eq!(slim.annotation(labels::OWNER_UID), Some("u"));
        assert!(slim.named.is_some());
        let binding = Slim::of(&binding(&["alice"]));
        assert!(binding.named.is_none(), "a binding keeps nothing by name");
        assert!(binding.labels().next().is_none() && binding.uid().is_none());
        assert!(
            std::mem::size_of::<Slim<RoleBinding>>() <= 32,
            "{}",
            std::mem::size_of::<Slim<RoleBinding>>()
        );
        assert_eq!(slim.annotation(labels::APPLIED), None);
        assert!(slim.kept().is_none());

        let q: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q", "namespace": "ws", "labels": {"tenantry.dev/workspace": "w"}},
            "spec": {"hard": {"pods": "10"}, "scopes": ["NotTerminating"]},
            "status": {"hard": {"pods": "10"}, "used": {"pods": "3"}}
        }))
        .unwrap();
        let slim = Slim::of(&q);
        let kept = slim.kept().unwrap();
        assert_eq!(
            serde_json::to_value(kept).unwrap(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {}, "spec": {"hard": {"pods": "10"}}, "status": {"used": {"pods": "3"}}
            })
        );
        assert_eq!(slim.labels().count(), 1);
        assert!(!slim.deleting());
    }

    #[test]
    fn the_children_cache_follows_the_watch() {
        let rb = |ns: &str, name: &str| {
            let mut b = binding(&["alice"]);
            b.metadata.namespace = Some(ns.into());
            b.metadata.name = Some(name.into());
            b
        };
        let names = |c: &Children<RoleBinding>, ns: &str| -> Vec<String> {
            // In name order, as kept.
            c.in_namespace(ns)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<String>>()
        };
        let cache = Children::default();
        let mut w = ChildrenWriter::new(cache.clone());
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(rb("a", "x")));
        w.apply(&watcher::Event::InitApply(rb("b", "y")));
        assert!(
            names(&cache, "a").is_empty(),
            "a relist shows once complete"
        );
        assert!(!*cache.ready.borrow());
        w.apply(&watcher::Event::InitDone);
        assert!(*cache.ready.borrow());
        assert_eq!(names(&cache, "a"), ["x"]);
        w.apply(&watcher::Event::Apply(rb("a", "z")));
        w.apply(&watcher::Event::Delete(rb("b", "y")));
        assert_eq!(names(&cache, "a"), ["x", "z"]);
        w.apply(&watcher::Event::Apply(rb("a", "a")));
        w.apply(&watcher::Event::Apply(rb("a", "z")));
        assert_eq!(names(&cache, "a"), ["a", "x", "z"], "a change replaces");
        assert!(cache.get(Some("a"), "a").is_some());
        w.apply(&watcher::Event::Delete(rb("a", "a")));
        assert!(names(&cache, "b").is_empty());
        assert!(cache.get(Some("a"), "z").is_some());
        assert!(cache.get(None, "z").is_none());
        assert_eq!(cache.len(), 2);
        // A relist replaces everything: what was deleted meanwhile is gone.
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(rb("a", "z")));
        w.apply(&watcher::Event::InitApply(rb("a", "m")));
        w.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache, "a"), ["m", "z"]);
        assert!(cache.get(Some("a"), "m").is_some() && cache.get(Some("a"), "x").is_none());
        let m = cache.measure();
        assert_eq!((m.objects, m.whole), (2, 2));
        assert!(m.bytes > 8, "{m:?}");
    }
}
