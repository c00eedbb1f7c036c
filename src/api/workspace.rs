//! Workspace: one isolated unit of an organization, provisioned as a namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{SubjectKind, WorkspacePolicy, WorkspaceRole};

/// A workspace of an organization. Lives in the organization's namespace `org-<org>` and
/// is provisioned as its own namespace (`<org>-<workspace>` by default) with labels, a
/// ResourceQuota, a LimitRange, Pod Security labels, a default NetworkPolicy and one
/// RoleBinding per workspace role.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenantry.dev",
    version = "v1alpha1",
    kind = "Workspace",
    plural = "workspaces",
    shortname = "ws",
    category = "tenantry",
    namespaced,
    status = "WorkspaceStatus",
    doc = "A workspace: one isolated unit of an organization, provisioned as a namespace.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a workspace name is a DNS-1123 label (lowercase letters, digits, '-', at most 63 characters)")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// Overrides of the organization's `workspaceDefaults`.
    #[serde(flatten)]
    pub policy: WorkspacePolicy,
}

/// Observed state of a Workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The workspace's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Who can reach the workspace, and with which role.
    #[serde(default)]
    pub members: Vec<WorkspaceMember>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One subject's access to a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceMember {
    pub kind: SubjectKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub role: WorkspaceRole,
    /// The Membership that grants it (empty for organization owners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
}
