//! What the caches keep of the objects Tenantry makes: a projection, not the object.
//!
//! A cached RoleBinding took about 2.8 KiB of heap (measured with a counting allocator:
//! the typed object's `ObjectMeta`, a `BTreeMap` node per label map, a `String` per value),
//! and the child kinds are most of what the controller caches (235,000 objects at 25x the
//! benchmark's default size). The applier needs one answer from the cache: does the live
//! object still hold everything the build asks for ([`Slim::holds`])? That is answered from
//! the *leaves* of the live object, computed once when the watch brings it: one 64-bit hash
//! per scalar (its path and value) and per list (its path and length), sorted. The desired
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

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Resource;
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::labels;
use crate::provision::Object;

/// A child kind the caches keep as a [`Slim`].
pub trait Projected: Object {
    /// Whether the label or annotation `key` is kept by name in the projection's metadata
    /// (every one is in the leaves).
    fn keeps(_key: &str) -> bool {
        false
    }

    /// Whether the projection keeps the object's uid.
    const UID: bool = false;

    /// What readers other than the applier need of the live object's content, if anything.
    fn keep(&self) -> Option<Self> {
        None
    }
}

/// Tenantry's labels and annotations, but the digest (which only the applier reads, from
/// the leaves).
fn tenantry_key(key: &str) -> bool {
    key.starts_with("tenantry.dev/") && key != labels::APPLIED
}

impl Projected for RoleBinding {}
impl Projected for Role {}
impl Projected for ClusterRole {}
impl Projected for ClusterRoleBinding {}
impl Projected for LimitRange {}
impl Projected for NetworkPolicy {}
/// A client's ServiceAccount: its credential verifier and rotation state (annotations), and
/// its uid (a rotation that replaces it names the one it replaces).
impl Projected for ServiceAccount {
    fn keeps(key: &str) -> bool {
        tenantry_key(key)
    }
    const UID: bool = true;
}

/// A namespace's owner and identity (whose it is, which organization and workspace), its
/// recorded deletion policy, and its Pod Security labels (kept when it is orphaned).
impl Projected for Namespace {
    fn keeps(key: &str) -> bool {
        tenantry_key(key)
            || key == labels::MANAGED_BY
            || key.starts_with("pod-security.kubernetes.io/")
    }
}

/// An organization's usage and pooled quota read each workspace quota's hard limits and
/// use, and its identity labels.
impl Projected for ResourceQuota {
    fn keeps(key: &str) -> bool {
        key == labels::ORGANIZATION || key == labels::WORKSPACE
    }

    fn keep(&self) -> Option<Self> {
        Some(ResourceQuota {
            metadata: ObjectMeta::default(),
            spec: Some(ResourceQuotaSpec {
                hard: self.spec.as_ref().and_then(|s| s.hard.clone()),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                used: self.status.as_ref().and_then(|s| s.used.clone()),
                ..Default::default()
            }),
        })
    }
}

/// The cached projection of a live object of kind `K`: its name, namespace, deletion
/// timestamp and the labels and annotations [`Projected::keeps`], the sorted hashes of its
/// leaves, and what [`Projected::keep`] keeps.
#[derive(Serialize, Deserialize)]
#[serde(bound = "K: Object")]
pub struct Slim<K> {
    pub metadata: ObjectMeta,
    /// Not serialized: the caches' size report counts 8 bytes each ([`Slim::leaf_count`]).
    #[serde(skip)]
    leaves: Box<[u64]>,
    kept: Option<Box<K>>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K: Clone> Clone for Slim<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            leaves: self.leaves.clone(),
            kept: self.kept.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Slim<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No content: the leaves are hashes, and a Secret's would say nothing either.
        f.debug_struct("Slim")
            .field("name", &self.metadata.name)
            .field("namespace", &self.metadata.namespace)
            .field("leaves", &self.leaves.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Slim<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K: Projected> Slim<K> {
    /// The projection of `live`, as a watch brought it.
    pub fn of(live: &K) -> Self {
        let m = live.meta();
        let kept = |map: &Option<std::collections::BTreeMap<String, String>>| {
            let kept: std::collections::BTreeMap<String, String> = map
                .iter()
                .flatten()
                .filter(|(k, _)| K::keeps(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!kept.is_empty()).then_some(kept)
        };
        let metadata = ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            deletion_timestamp: m.deletion_timestamp.clone(),
            uid: m.uid.clone().filter(|_| K::UID),
            labels: kept(&m.labels),
            annotations: kept(&m.annotations),
            ..Default::default()
        };
        // An object that does not serialize has no leaves: it is never up to date, and
        // the applier's write says why.
        let leaves = serde_json::to_value(live)
            .map(|v| leaves(&v))
            .unwrap_or_default();
        Self {
            metadata,
            leaves: leaves.into_boxed_slice(),
            kept: live.keep().map(Box::new),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Slim<K> {
    /// The cache key of the projection of the object with metadata `meta`.
    pub fn key(meta: &ObjectMeta) -> ObjectRef<Self> {
        let name = meta.name.as_deref().unwrap_or_default();
        match &meta.namespace {
            Some(ns) => ObjectRef::new(name).within(ns),
            None => ObjectRef::new(name),
        }
    }
}

impl<K> Slim<K> {
    /// Whether the live object holds everything `desired` asks for.
    pub fn holds(&self, desired: &Desired) -> bool {
        let has = |l: &u64| self.leaves.binary_search(l).is_ok();
        desired.required.iter().all(has) && !desired.absent.iter().any(has)
    }

    /// Whether the live object carries every label of `labels`.
    pub fn has_labels<'a>(
        &self,
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> bool {
        labels.into_iter().all(|(k, v)| {
            let mut h = path(&["metadata", "labels", k]);
            scalar(&mut h, &Value::String(v.clone()));
            self.leaves.binary_search(&h.finish()).is_ok()
        })
    }

    /// What [`Projected::keep`] kept of the live object.
    pub fn kept(&self) -> Option<&K> {
        self.kept.as_deref()
    }

    /// The number of leaves (for the caches' size report).
    pub fn leaf_count(&self) -> usize {
        self.leaves.len()
    }
}

/// What a desired object asks of the live one: leaves it must hold, and the marks of
/// non-empty lists it must not hold (a desired empty list: absent or empty, as in the
/// subset comparison; an element someone added to it is drift).
#[derive(Debug, Default)]
pub struct Desired {
    required: Vec<u64>,
    absent: Vec<u64>,
}

/// What `desired` asks for, to test with [`Slim::holds`].
pub fn desired<K: Serialize>(desired: &K) -> serde_json::Result<Desired> {
    let mut out = Leaves::default();
    collect(&serde_json::to_value(desired)?, Side::Desired, &mut out);
    Ok(Desired {
        required: out.present,
        absent: out.absent,
    })
}

/// Leaves collected from an object.
#[derive(Default)]
struct Leaves {
    present: Vec<u64>,
    /// Desired side only: marks of lists that must be empty.
    absent: Vec<u64>,
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

/// The sorted, deduplicated leaf hashes of a live object.
fn leaves(object: &Value) -> Vec<u64> {
    let mut out = Leaves::default();
    collect(object, Side::Live, &mut out);
    let mut leaves = out.present;
    leaves.sort_unstable();
    leaves.dedup();
    leaves
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

/// A hasher at `segments`, each ended by a separator no key holds.
fn path(segments: &[&str]) -> DefaultHasher {
    let mut h = DefaultHasher::new();
    for s in segments {
        key(&mut h, s);
    }
    h
}

fn key(h: &mut DefaultHasher, segment: &str) {
    h.write(segment.as_bytes());
    h.write_u8(0xff);
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
        Value::String(s) => {
            h.write_u8(3);
            s.hash(h);
        }
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
fn non_empty(at: &DefaultHasher) -> u64 {
    let mut h = at.clone();
    h.write_u8(0xfc);
    h.finish()
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
            out.present.push(len.finish());
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
            out.present.push(h.finish());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::{RoleRef, Subject};

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
        let labels = slim.metadata.labels.clone().unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            [
                "pod-security.kubernetes.io/enforce",
                "tenantry.dev/organization"
            ]
        );
        let annotations = slim.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [labels::OWNER_UID]);
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
        assert!(slim.metadata.labels.is_some());
    }
}
