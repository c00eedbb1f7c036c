//! Types shared by the three kinds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who a grant is for.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum SubjectKind {
    /// A user as the API server authenticates it (OIDC, client certificate, ...).
    User,
    /// A group as the API server authenticates it.
    Group,
    /// A Kubernetes ServiceAccount (needs `namespace`).
    ServiceAccount,
    /// A machine client of the organization: Tenantry creates its ServiceAccount and a
    /// client id and secret. Only valid in a Membership.
    Client,
}

/// A subject: a user, group, ServiceAccount, or (in a Membership) a machine client.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, KubeSchema,
)]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'ServiceAccount' || (has(self.__namespace__) && self.__namespace__ != '')").message("a ServiceAccount subject needs a namespace"))]
#[x_kube(validation = kube::core::Rule::new("self.kind == 'ServiceAccount' || !has(self.__namespace__)").message("only a ServiceAccount subject has a namespace"))]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'ServiceAccount' || self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("a ServiceAccount subject's name is a DNS-1123 subdomain (lowercase letters, digits, '-', '.'), as Kubernetes names ServiceAccounts"))]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'ServiceAccount' || !has(self.__namespace__) || self.__namespace__.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a ServiceAccount subject's namespace is a DNS-1123 label (lowercase letters, digits, '-', at most 63 characters)"))]
pub struct Subject {
    /// User, Group, ServiceAccount or Client.
    pub kind: SubjectKind,
    /// The user or group name as the API server sees it, the ServiceAccount's name, or
    /// the client's name (a DNS-1123 label).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The ServiceAccount's namespace (ServiceAccount only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

impl Subject {
    pub fn user(name: &str) -> Self {
        Self {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
        }
    }
    pub fn group(name: &str) -> Self {
        Self {
            kind: SubjectKind::Group,
            name: name.into(),
            namespace: None,
        }
    }
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            kind: SubjectKind::ServiceAccount,
            name: name.into(),
            namespace: Some(namespace.into()),
        }
    }
    pub fn client(name: &str) -> Self {
        Self {
            kind: SubjectKind::Client,
            name: name.into(),
            namespace: None,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?}:{ns}/{}", self.kind, self.name),
            None => write!(f, "{:?}:{}", self.kind, self.name),
        }
    }
}

/// Pod Security Standard level enforced in a workspace namespace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

impl PodSecurityLevel {
    /// How much the level allows, from `restricted` (0) to `privileged` (2).
    fn permissiveness(self) -> u8 {
        match self {
            Self::Restricted => 0,
            Self::Baseline => 1,
            Self::Privileged => 2,
        }
    }

    /// This level, or `ceiling` when this one allows more than it.
    pub fn capped_at(self, ceiling: PodSecurityLevel) -> PodSecurityLevel {
        if self.permissiveness() > ceiling.permissiveness() {
            ceiling
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// The schema of a resource list (quota hard limits, LimitRange values): at most 64
/// entries, each an integer or a quantity string (at most 64 characters, which keeps the
/// CEL rule's cost bounded), checked to be a quantity and not negative: the API server
/// refuses the ResourceQuota or LimitRange Tenantry writes from anything else.
pub(crate) fn resource_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": 64,
        "additionalProperties": {"x-kubernetes-int-or-string": true, "maxLength": 64},
        "x-kubernetes-validations": [{
            "rule": "self.all(k, isQuantity(string(self[k])) && !quantity(string(self[k])).isLessThan(quantity('0')))",
            "message": "every value is a Kubernetes quantity (e.g. 500m, 2Gi, 10) and not negative",
        }],
    })
}

/// A resource list in a spec (`requests.cpu: "8"`, `memory: 512Mi`): the same YAML and
/// schema as a map ([`resource_list`]), kept as one sorted slice. A cached Organization
/// held three `BTreeMap`s of two entries each in its `workspaceDefaults`, each a 544-byte
/// tree leaf (11 slots); two entries take 96 bytes here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceList(Box<[(String, Quantity)]>);

impl ResourceList {
    /// The entries, sorted by resource name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Quantity)> {
        self.into_iter()
    }

    /// The amount of `resource`, if listed.
    pub fn get(&self, resource: &str) -> Option<&Quantity> {
        let i = self
            .0
            .binary_search_by(|(k, _)| k.as_str().cmp(resource))
            .ok()?;
        self.0.get(i).map(|(_, q)| q)
    }

    pub fn contains_key(&self, resource: &str) -> bool {
        self.get(resource).is_some()
    }

    /// The resource names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a map (what k8s-openapi's ResourceQuota and LimitRange take).
    pub fn to_map(&self) -> BTreeMap<String, Quantity> {
        self.0.iter().cloned().collect()
    }
}

impl From<BTreeMap<String, Quantity>> for ResourceList {
    fn from(map: BTreeMap<String, Quantity>) -> Self {
        ResourceList(map.into_iter().collect())
    }
}

/// Later entries win over earlier ones of the same resource, as in a map.
impl FromIterator<(String, Quantity)> for ResourceList {
    fn from_iter<I: IntoIterator<Item = (String, Quantity)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl<'a> IntoIterator for &'a ResourceList {
    type Item = (&'a String, &'a Quantity);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Quantity)>,
        fn(&'a (String, Quantity)) -> (&'a String, &'a Quantity),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for ResourceList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, Quantity>::deserialize(deserializer).map(ResourceList::from)
    }
}

impl JsonSchema for ResourceList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourceList".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        resource_list(generator)
    }
}

/// The digest a cached status keeps of a part it forgot (its JSON, hashed): only ever
/// compared with the digest of what a reconcile builds.
fn digest<T: Serialize + ?Sized>(value: &T) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    // Serializing these types cannot fail; were it to, both sides hash what was written.
    let _ = serde_json::to_writer(Hashing(|b: &[u8]| h.write(b)), value);
    h.finish()
}

/// A writer that hands what it is given to a hash (`.0`) and keeps nothing: JSON hashed
/// as serde writes it, never held in a buffer (a status part's [`digest`], an object's
/// stamp, `crate::provision::stamped`).
pub(crate) struct Hashing<F: FnMut(&[u8])>(pub F);

impl<F: FnMut(&[u8])> std::io::Write for Hashing<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (self.0)(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Forgets `part` of a cached status (leaves it empty), keeping its digest in `kept`:
/// [`same`] still answers. A part no reconciler reads back, only compares with what it
/// builds, costs the cache a `u64`.
pub(crate) fn forget<T: Serialize + Default + PartialEq>(part: &mut T, kept: &mut Option<u64>) {
    if *part != T::default() {
        *kept = Some(digest(part));
        *part = T::default();
    }
}

/// Whether `part` (or, once [`forget`]ten, its digest `kept`) is `other`.
pub(crate) fn same<T: Serialize + PartialEq>(part: &T, kept: Option<u64>, other: &T) -> bool {
    match kept {
        Some(d) => d == digest(other),
        None => part == other,
    }
}

/// `skip_serializing_if` of a field only the controller's cache holds: never written.
pub(crate) fn always<T>(_: &T) -> bool {
    true
}

/// Container defaults for a workspace namespace's LimitRange.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitDefaults {
    /// Default limits for containers that set none (e.g. `cpu: 500m`, `memory: 512Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resource_list")]
    pub default: Option<ResourceList>,
    /// Default requests for containers that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resource_list")]
    pub default_request: Option<ResourceList>,
    /// Largest limits a container may set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resource_list")]
    pub max: Option<ResourceList>,
}

/// How a workspace namespace is provisioned. On a Workspace every field overrides the
/// organization's `workspaceDefaults`; unset fields inherit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspacePolicy {
    /// ResourceQuota hard limits (e.g. `requests.cpu: "4"`, `pods: "50"`). No quota when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resource_list")]
    pub quota: Option<ResourceList>,
    /// LimitRange container defaults. No LimitRange when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<LimitDefaults>,
    /// Pod Security Standard enforced on the namespace (default: the operator's, `baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityLevel>,
    /// A default NetworkPolicy that allows traffic within the workspace and denies traffic
    /// from other namespaces (default: the operator's, on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_isolation: Option<bool>,
}

impl WorkspacePolicy {
    /// This policy, with unset fields taken from `fallback`.
    pub fn or(&self, fallback: &WorkspacePolicy) -> WorkspacePolicy {
        WorkspacePolicy {
            quota: self.quota.clone().or_else(|| fallback.quota.clone()),
            limit_range: self
                .limit_range
                .clone()
                .or_else(|| fallback.limit_range.clone()),
            pod_security: self.pod_security.or(fallback.pod_security),
            network_isolation: self.network_isolation.or(fallback.network_isolation),
        }
    }
}

/// Condition types and reasons Tenantry reports. Reasons are CamelCase, as the API
/// conventions ask, and stable: tooling may match on them.
pub mod reason {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";

    pub const PROVISIONED: &str = "Provisioned";
    pub const PROGRESSING: &str = "Progressing";
    pub const NAMESPACE_CONFLICT: &str = "NamespaceConflict";
    pub const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
    pub const INVALID_NAME: &str = "InvalidName";
    pub const INVALID_POLICY: &str = "InvalidPolicy";
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    pub const CREDENTIALS_CONFLICT: &str = "CredentialsConflict";
    pub const POD_SECURITY_NOT_ALLOWED: &str = "PodSecurityNotAllowed";
    pub const QUOTA_NOT_ALLOWED: &str = "QuotaNotAllowed";
    pub const QUOTA_POOL_EXHAUSTED: &str = "QuotaPoolExhausted";
    pub const SHARED_RESOURCE_CONFLICT: &str = "SharedResourceConflict";
    pub const SHARED_RESOURCE_MISSING: &str = "SharedResourceMissing";
    pub const INVALID_SHARED_RESOURCE: &str = "InvalidSharedResource";
    pub const ORGANIZATION_NOT_FOUND: &str = "OrganizationNotFound";
    pub const WORKSPACE_LIMIT_REACHED: &str = "WorkspaceLimitReached";
    pub const MEMBER_LIMIT_REACHED: &str = "MemberLimitReached";
    pub const DUPLICATE_SUBJECT: &str = "DuplicateSubject";
    pub const WORKSPACE_PENDING: &str = "WorkspacePending";
    pub const GRANTED: &str = "Granted";
    /// Granted, and the organization's bindings that name the member are being written.
    pub const BINDING: &str = "Binding";
    pub const DELETING: &str = "Deleting";
    pub const ORGANIZATION_NOT_VERIFIED: &str = "OrganizationNotVerified";
    pub const OWNER_LIMIT_REACHED: &str = "OwnerLimitReached";
    pub const INVITATION_PENDING: &str = "InvitationPending";
    pub const EXPIRED: &str = "Expired";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource list reads and writes as the map it replaced: the same YAML in, the same
    /// JSON out (sorted by resource), a repeated resource's last value kept.
    #[test]
    fn a_resource_list_is_the_map_it_replaced() {
        let yaml = "{pods: 50, requests.cpu: '4', memory: 512Mi}";
        let list: ResourceList = serde_saphyr::from_str(yaml).unwrap();
        let map: BTreeMap<String, Quantity> = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(list.to_map(), map);
        assert_eq!(ResourceList::from(map.clone()), list);
        assert_eq!(list.get("requests.cpu"), Some(&Quantity("4".into())));
        assert_eq!(list.get("pods"), Some(&Quantity("50".into())));
        assert_eq!(list.get("requests.memory"), None);
        assert!(list.contains_key("memory") && !list.contains_key("cpu"));
        assert_eq!(
            list.keys().collect::<Vec<_>>(),
            ["memory", "pods", "requests.cpu"]
        );
        assert_eq!((list.len(), list.is_empty()), (3, false));
        let repeated: ResourceList = serde_json::from_str(r#"{"pods": "1", "pods": "2"}"#).unwrap();
        assert_eq!(
            repeated.iter().collect::<Vec<_>>(),
            [(&"pods".to_string(), &Quantity("2".into()))]
        );
        let collected: ResourceList = [("b", "1"), ("a", "2"), ("b", "3")]
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .into_iter()
            .collect();
        assert_eq!(collected.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(collected.get("b"), Some(&Quantity("3".into())));
        // The schema is the map's (`resource_list`), whatever the Rust type.
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<ResourceList>();
        assert_eq!(schema.get("maxProperties"), Some(&serde_json::json!(64)));
    }
}
