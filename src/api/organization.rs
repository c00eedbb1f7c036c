//! Organization: the tenant (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{PodSecurityLevel, Subject, WorkspacePolicy};

/// An organization: the tenant. It owns its namespace `org-<name>`, where its Workspaces
/// and Memberships live, and every workspace namespace; deleting it removes all of them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tenantry.dev",
    version = "v1alpha1",
    kind = "Organization",
    plural = "organizations",
    shortname = "org",
    category = "tenantry",
    status = "OrganizationStatus",
    doc = "An organization: the tenant. Owns its namespace org-<name>, its workspaces and its memberships.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Code", type_ = "string", json_path = ".status.code"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Workspaces", type_ = "integer", json_path = ".status.workspaces"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 40 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && !self.metadata.name.contains('--')").message("an organization name is a DNS-1123 label of at most 40 characters (lowercase letters, digits, '-') without '--' (which separates organization and workspace in namespace names)")
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// Human-readable name; may change at any time. Absent or empty: the organization's
    /// name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub display_name: String,

    /// The organization's owners (User, Group or ServiceAccount). They hold the Owner role.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.all(s, s.kind != 'Client')").message("an owner is a User, Group or ServiceAccount"))]
    pub owners: Vec<Subject>,

    /// Limits on the organization's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,

    /// Defaults for every workspace of the organization; a Workspace may override each field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_defaults: Option<WorkspacePolicy>,

    /// The workspace created with the organization (on by default, named `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_workspace: Option<DefaultWorkspace>,

    /// What deleting the organization does to its workspace namespaces: `Delete` (the
    /// default) removes them and everything in them, irrecoverably; `Orphan` keeps each
    /// workspace namespace with its content but removes Tenantry's bindings and labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// While true (the default), deleting the organization is refused: set it to false
    /// first. Deletion removes every workspace and everything in it, irrecoverably.
    #[serde(default = "default_true")]
    pub deletion_protection: bool,

    /// Set by a platform admin when the operator requires verification: until then the
    /// organization adds no members beyond its owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,

    /// How members join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipPolicy>,

    /// A quota pooled across the organization's workspaces (e.g. `requests.cpu: "32"`):
    /// the sum of their ResourceQuotas stays within it, resource by resource. Workspaces
    /// are granted their quota oldest first; one whose quota does not fit in what is left
    /// holds 0 of every pooled resource and says `QuotaPoolExhausted`; a workspace quota
    /// that leaves a pooled resource out holds 0 of it. Set and changed by platform
    /// admins only, like `limits`. Unset: no pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::resource_list")]
    pub quota: Option<super::ResourceList>,

    /// ConfigMaps and Secrets copied into the organization's workspaces (image pull
    /// secrets, CA bundles, settings), kept in step with their source and removed when
    /// no longer listed. A workspace's own object of the same name is never overwritten
    /// (the workspace says `SharedResourceConflict`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(a, self.exists_one(b, a.kind == b.kind && a.name == b.name))").message("each shared resource (kind and name) is listed once"))]
    pub shared_resources: Vec<SharedResource>,
}

/// A ConfigMap or Secret an organization shares with its workspaces.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedResource {
    /// `ConfigMap` or `Secret`.
    pub kind: SharedKind,
    /// The source's name; the copies have the same name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The workspace whose namespace holds the source (not a personal workspace). Whoever
    /// may edit the source there decides what every selected workspace receives: keep
    /// sources in a workspace only the organization's Admins reach.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub from_workspace: String,
    /// The workspaces it is copied into, by their labels. Absent: every workspace of the
    /// organization (the source's own excepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// What can be shared.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum SharedKind {
    ConfigMap,
    Secret,
}

/// How members join an organization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipPolicy {
    /// A User Membership grants nothing until the invited user accepts it by setting the
    /// annotation `tenantry.dev/accepted: "true"` on it (only that user may).
    #[serde(default)]
    pub require_acceptance: bool,
    /// A Membership without `spec.expiresAt` expires this many days after its creation
    /// (not Owner Memberships: an organization keeps its owners). A Membership renews by
    /// setting `spec.expiresAt`. Unset: Memberships expire only at their own `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub expire_after_days: Option<i32>,
    /// Each User member gets a workspace of their own, `personal-<membership>`, that only
    /// they administer (the organization's Owners, Admins and Managers do not reach it),
    /// created when the Membership grants. It counts against `maxWorkspaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_workspaces: Option<PersonalWorkspaces>,
}

/// Personal workspaces of an organization's members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonalWorkspaces {
    pub enabled: bool,
    /// When the member leaves (their Membership is deleted): `Delete` the workspace (its
    /// namespace then goes by the organization's `deletionPolicy`), or `Keep` it, as an
    /// ordinary workspace of the organization. Read when the member leaves: a change
    /// applies to existing personal workspaces too.
    #[serde(default)]
    pub when_member_leaves: WhenMemberLeaves,
}

/// What happens to a personal workspace when its member leaves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WhenMemberLeaves {
    #[default]
    Delete,
    Keep,
}

/// Limits on an organization: its size and how far its workspaces may loosen Pod
/// Security. Set and changed by platform admins only (an organization's own Admins
/// cannot raise them). Unset sizes are unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Workspaces beyond this number (newest first) are not provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_workspaces: Option<i32>,
    /// Memberships beyond this number (newest first) are not granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_members: Option<i32>,
    /// The least restrictive Pod Security level this organization's workspaces may have
    /// (default: the operator's `--pod-security-ceiling`, `baseline`). A workspace asking
    /// for more is provisioned at this level and says `PodSecurityNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityLevel>,
    /// The most each workspace's ResourceQuota may hold, per resource (e.g.
    /// `requests.cpu: "8"`). A workspace asking for more gets this value and says
    /// `QuotaNotAllowed`; one that leaves a resource out gets this value too (no quota
    /// would mean unlimited). Unset: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::resource_list")]
    pub workspace_quota: Option<super::ResourceList>,
}

/// The workspace created together with the organization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefaultWorkspace {
    /// Create the default workspace (default true). Turning it off stops creating it; an
    /// existing default workspace is kept until you delete it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Its name (default `default`).
    #[serde(default = "default_workspace_name")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

impl Default for DefaultWorkspace {
    fn default() -> Self {
        Self {
            enabled: true,
            name: default_workspace_name(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_workspace_name() -> String {
    "default".into()
}

/// What happens to workspace namespaces when the organization is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Orphan,
}

/// Observed state of an Organization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// Stable organization code, derived from the object's UID: it never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The organization's own namespace, where its Workspaces and Memberships live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Number of Workspaces in the organization.
    #[serde(default)]
    pub workspaces: i32,
    /// Number of Memberships in the organization.
    #[serde(default)]
    pub members: i32,
    /// The pooled quota (`spec.quota`): what its workspaces hold of it and use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaStatus>,
    /// What the organization uses, for billing: readable by its Owners and BillingAdmins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the controller's cache keeps of `quota` and `usage`: their digest, both
    /// emptied ([`OrganizationStatus::forget_detail`]). Never serialized: only the status
    /// comparison reads it ([`OrganizationStatus::same_detail`]).
    #[serde(skip_deserializing, skip_serializing_if = "super::common::always")]
    #[schemars(skip)]
    pub detail_digest: Option<u64>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl OrganizationStatus {
    /// Empties `quota` and `usage`, keeping their digest: [`Self::same_detail`] still
    /// answers. No reconciler reads them back (each reconcile builds them from the view and
    /// the workspaces' quotas), and their maps were most of a cached Organization's heap.
    pub fn forget_detail(&mut self) {
        let mut detail = (self.quota.take(), self.usage.take());
        super::common::forget(&mut detail, &mut self.detail_digest);
        (self.quota, self.usage) = detail;
    }

    /// Whether `quota` and `usage` are what this status holds (or held before
    /// [`Self::forget_detail`]).
    pub fn same_detail(&self, quota: &Option<QuotaStatus>, usage: &Option<Usage>) -> bool {
        super::common::same(
            &(&self.quota, &self.usage),
            self.detail_digest,
            &(quota, usage),
        )
    }
}

/// The pooled quota's state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// The pool (`spec.quota`).
    #[serde(default)]
    pub hard: BTreeMap<String, Quantity>,
    /// What the workspaces granted their share hold of each pooled resource.
    #[serde(default)]
    pub allocated: BTreeMap<String, Quantity>,
    /// What the workspaces use of each pooled resource (their ResourceQuotas' usage).
    #[serde(default)]
    pub used: BTreeMap<String, Quantity>,
    /// Workspaces not granted their share (it did not fit in what was left), by name;
    /// each says why in its `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_granted: Vec<String>,
}

/// What an organization uses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Workspaces provisioned (within `limits.maxWorkspaces`, not being deleted).
    #[serde(default)]
    pub workspaces: i32,
    /// Members granted access: the owners and the Memberships of people (User, Group,
    /// ServiceAccount) that grant now (not invitations, not expired).
    #[serde(default)]
    pub members: i32,
    /// Machine clients (Client Memberships) that grant now.
    #[serde(default)]
    pub clients: i32,
    /// The sum of the workspaces' ResourceQuotas, per resource: what each provisionable
    /// workspace is allocated (its quota in force, under the organization's ceiling and
    /// pool), counted from its creation on.
    #[serde(default)]
    pub allocated: BTreeMap<String, Quantity>,
    /// The sum of what the workspaces use of them, per resource allocated (0 until the
    /// quota controller has measured it).
    #[serde(default)]
    pub used: BTreeMap<String, Quantity>,
}

impl Default for OrganizationSpec {
    fn default() -> Self {
        Self {
            display_name: String::new(),
            owners: Vec::new(),
            limits: None,
            workspace_defaults: None,
            default_workspace: None,
            deletion_policy: None,
            deletion_protection: true,
            verified: None,
            membership: None,
            quota: None,
            shared_resources: Vec::new(),
        }
    }
}

impl Organization {
    /// The display name, else the organization's name.
    pub fn display_name(&self) -> String {
        if self.spec.display_name.is_empty() {
            kube::ResourceExt::name_any(self)
        } else {
            self.spec.display_name.clone()
        }
    }
}

impl OrganizationSpec {
    pub fn default_workspace(&self) -> DefaultWorkspace {
        self.default_workspace.clone().unwrap_or_default()
    }
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }
    pub fn max_workspaces(&self) -> Option<usize> {
        self.limits
            .as_ref()?
            .max_workspaces
            .map(|n| n.max(0) as usize)
    }
    /// Personal workspaces, when enabled.
    pub fn personal_workspaces(&self) -> Option<&PersonalWorkspaces> {
        self.membership
            .as_ref()?
            .personal_workspaces
            .as_ref()
            .filter(|p| p.enabled)
    }
    pub fn require_acceptance(&self) -> bool {
        self.membership
            .as_ref()
            .is_some_and(|m| m.require_acceptance)
    }
    /// The organization's default lifetime of a Membership (`membership.expireAfterDays`).
    pub fn expire_after_days(&self) -> Option<i64> {
        self.membership
            .as_ref()?
            .expire_after_days
            .map(|d| i64::from(d.max(0)))
    }
    /// The pooled quota, when one is set (an empty one is none).
    pub fn pool(&self) -> Option<&super::ResourceList> {
        self.quota.as_ref().filter(|q| !q.is_empty())
    }
    pub fn max_members(&self) -> Option<usize> {
        self.limits.as_ref()?.max_members.map(|n| n.max(0) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_quota_and_usage_still_compare_and_never_travel() {
        let usage = Usage {
            workspaces: 2,
            used: [("requests.cpu".to_string(), Quantity("1".into()))].into(),
            ..Default::default()
        };
        let mut status = OrganizationStatus {
            usage: Some(usage.clone()),
            ..Default::default()
        };
        let full = serde_json::to_value(&status).unwrap();
        status.forget_detail();
        assert!(status.usage.is_none() && status.quota.is_none());
        assert!(
            status.same_detail(&None, &Some(usage.clone())),
            "the digest answers"
        );
        let mut more = usage.clone();
        more.workspaces = 3;
        assert!(!status.same_detail(&None, &Some(more)));
        assert!(!status.same_detail(&Some(QuotaStatus::default()), &Some(usage)));
        assert!(!status.same_detail(&None, &None), "none");
        let json = serde_json::to_value(&status).unwrap();
        assert!(json.get("usage").is_none() && json.get("detailDigest").is_none());
        let read: OrganizationStatus = serde_json::from_value(full).unwrap();
        assert_eq!(read.detail_digest, None, "never read");
        let mut empty = OrganizationStatus::default();
        empty.forget_detail();
        assert!(empty.detail_digest.is_none() && empty.same_detail(&None, &None));
    }
}
