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
    /// What the controller's cache keeps of `members`: their digest, `members` emptied
    /// ([`WorkspaceStatus::forget_members`]). Never serialized: only the status
    /// comparison reads it ([`WorkspaceStatus::same_members`]).
    // Neither read nor written, and not in the schema; not `serde(skip)`, under which the
    // copy of this struct KubeSchema derives the schema from would never read the field.
    #[serde(skip_deserializing, skip_serializing_if = "super::common::always")]
    #[schemars(skip)]
    pub members_digest: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl WorkspaceStatus {
    /// Empties `members`, keeping their digest: [`Self::same_members`] still answers.
    /// Measured: a workspace's members were half of a cached Workspace's heap (1.4 of
    /// 2.7 KiB in the benchmark's tenancy), and no reconciler reads them.
    pub fn forget_members(&mut self) {
        super::common::forget(&mut self.members, &mut self.members_digest);
    }

    /// Whether `members` are the members this status holds (or held before
    /// [`Self::forget_members`]).
    pub fn same_members(&self, members: &[WorkspaceMember]) -> bool {
        super::common::same(&self.members.as_slice(), self.members_digest, &members)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> WorkspaceMember {
        WorkspaceMember {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
            role: WorkspaceRole::Viewer,
            membership: Some(name.into()),
        }
    }

    #[test]
    fn forgotten_members_still_compare_and_never_travel() {
        let members = vec![member("alice"), member("bob")];
        let mut status = WorkspaceStatus {
            members: members.clone(),
            ..Default::default()
        };
        let full = serde_json::to_value(&status).unwrap();
        assert!(status.same_members(&members));
        status.forget_members();
        assert!(status.members.is_empty());
        assert!(status.same_members(&members), "the digest answers");
        assert!(!status.same_members(&members[..1]), "one fewer");
        assert!(!status.same_members(&[member("alice"), member("carol")]));
        assert!(!status.same_members(&[]), "none");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["members"], serde_json::json!([]));
        assert!(json.get("membersDigest").is_none(), "never written");
        let read: WorkspaceStatus = serde_json::from_value(full).unwrap();
        assert_eq!(read.members_digest, None, "never read");
        let mut empty = WorkspaceStatus::default();
        empty.forget_members();
        assert!(empty.same_members(&[]) && !empty.same_members(&members));
    }
}
