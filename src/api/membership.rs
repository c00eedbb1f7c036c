//! Membership: one subject's place in one organization.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Subject;

/// A subject's membership of an organization: its organization role and the workspaces
/// it reaches. Lives in the organization's namespace `org-<org>`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tenantry.dev",
    version = "v1alpha1",
    kind = "Membership",
    plural = "memberships",
    shortname = "mbr",
    category = "tenantry",
    namespaced,
    status = "MembershipStatus",
    doc = "A subject's membership of an organization: its organization role and its workspace roles.",
    printcolumn(name = "Subject Kind", type_ = "string", json_path = ".spec.subject.kind"),
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject.name"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new("self.spec.subject.kind != 'Client' || (size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("a Client membership's name is a DNS-1123 label of at most 50 characters (it names the client's ServiceAccount and Secret)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.role != 'Viewer' || self.workspaces.all(w, w.role == 'Viewer')").message("a Viewer may only hold the Viewer workspace role"))]
pub struct MembershipSpec {
    /// Who: a User, Group, ServiceAccount, or a machine Client. Immutable.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("subject is immutable: create a new Membership"))]
    pub subject: Subject,
    /// The organization role.
    pub role: OrgRole,
    /// Workspaces the subject reaches, with a role in each. Owner, Admin and Manager reach
    /// every workspace as Admin without being listed.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub workspaces: Vec<WorkspaceGrant>,
    /// When the membership ends: from then on it grants nothing (status `Expired`) until
    /// renewed by setting a later time. Unset: the organization's
    /// `membership.expireAfterDays` after creation, if any; else never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

impl MembershipSpec {
    /// A spec for `subject` in `role`, reaching `workspaces` (name, workspace role).
    pub fn new(subject: Subject, role: OrgRole, workspaces: &[(&str, WorkspaceRole)]) -> Self {
        Self {
            subject,
            role,
            workspaces: workspaces
                .iter()
                .map(|(name, role)| WorkspaceGrant {
                    name: name.to_string(),
                    role: *role,
                })
                .collect(),
            expires_at: None,
        }
    }
}

/// An organization role.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum OrgRole {
    Owner,
    Admin,
    Manager,
    UserAdmin,
    BillingAdmin,
    Member,
    Viewer,
}

impl OrgRole {
    pub const ALL: [OrgRole; 7] = [
        OrgRole::Owner,
        OrgRole::Admin,
        OrgRole::Manager,
        OrgRole::UserAdmin,
        OrgRole::BillingAdmin,
        OrgRole::Member,
        OrgRole::Viewer,
    ];

    /// Owner, Admin and Manager reach every workspace as workspace Admin.
    pub fn reaches_all_workspaces(self) -> bool {
        matches!(self, OrgRole::Owner | OrgRole::Admin | OrgRole::Manager)
    }

    /// The kebab-case form used in object names (`user-admin`).
    pub fn slug(self) -> &'static str {
        match self {
            OrgRole::Owner => "owner",
            OrgRole::Admin => "admin",
            OrgRole::Manager => "manager",
            OrgRole::UserAdmin => "user-admin",
            OrgRole::BillingAdmin => "billing-admin",
            OrgRole::Member => "member",
            OrgRole::Viewer => "viewer",
        }
    }
}

/// A workspace role.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum WorkspaceRole {
    Admin,
    Editor,
    Viewer,
}

impl WorkspaceRole {
    pub const ALL: [WorkspaceRole; 3] = [
        WorkspaceRole::Admin,
        WorkspaceRole::Editor,
        WorkspaceRole::Viewer,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            WorkspaceRole::Admin => "admin",
            WorkspaceRole::Editor => "editor",
            WorkspaceRole::Viewer => "viewer",
        }
    }
}

/// One workspace a member reaches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceGrant {
    /// The Workspace's name in the same organization.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Admin, Editor or Viewer.
    pub role: WorkspaceRole,
}

/// Observed state of a Membership.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipStatus {
    /// The listed workspaces the subject reaches now, and those it waits for.
    #[serde(default)]
    pub workspaces: Vec<WorkspaceAccess>,
    /// What the controller's cache keeps of `workspaces`: their digest, `workspaces`
    /// emptied ([`MembershipStatus::forget_workspaces`]). Never serialized: only the
    /// status comparison reads it ([`MembershipStatus::same_workspaces`]).
    #[serde(skip_deserializing, skip_serializing_if = "super::common::always")]
    #[schemars(skip)]
    pub workspaces_digest: Option<u64>,
    /// Owner, Admin and Manager: the subject reaches every workspace of the organization
    /// as Admin, including those created later (`workspaces` is then empty: each
    /// Workspace's `status.members` lists who reaches it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_workspaces: bool,
    /// A Client's id, ServiceAccount and the rotation and revocation acted on: fields of
    /// this status (flattened), boxed because most members are not clients (a cached
    /// Membership is then 88 bytes smaller, one allocator size class down).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Box<ClientStatus>>,
    /// The member's personal workspace (`spec.membership.personalWorkspaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_workspace: Option<String>,
    /// When the membership ends (`spec.expiresAt`, or the organization's
    /// `membership.expireAfterDays` after creation); unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// What a Client's Membership status says of its credentials (`status.clientId`,
/// `status.serviceAccount`, `status.rotation`, `status.revocation`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientStatus {
    /// A Client's id (its secret is only in the `<membership>-credentials` Secret).
    // Required here, so that a status without one has no box; in the CRD as it always
    // was (optional, nullable).
    #[schemars(extend("nullable" = true))]
    pub client_id: String,
    /// The last `tenantry.dev/rotate` annotation value acted on (a Client's secret was
    /// rotated for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
    /// The last `tenantry.dev/revoke` annotation value acted on (a Client's secret and
    /// ServiceAccount were replaced for it: every token issued before is rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
    /// A Client's ServiceAccount in the organization namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl MembershipStatus {
    /// A Client's id, if this is a Client's Membership.
    pub fn client_id(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.client_id.as_str())
    }

    /// The last rotation acted on, if any.
    pub fn rotation(&self) -> Option<&str> {
        self.client.as_ref()?.rotation.as_deref()
    }

    /// The last revocation acted on, if any.
    pub fn revocation(&self) -> Option<&str> {
        self.client.as_ref()?.revocation.as_deref()
    }

    /// Empties `workspaces`, keeping their digest: [`Self::same_workspaces`] still answers.
    /// No reconciler reads them back: each reconcile builds them from the spec and the
    /// workspaces it finds.
    pub fn forget_workspaces(&mut self) {
        super::common::forget(&mut self.workspaces, &mut self.workspaces_digest);
    }

    /// Whether `workspaces` are what this status holds (or held before
    /// [`Self::forget_workspaces`]).
    pub fn same_workspaces(&self, workspaces: &[WorkspaceAccess]) -> bool {
        super::common::same(
            &self.workspaces.as_slice(),
            self.workspaces_digest,
            &workspaces,
        )
    }
}

/// A workspace in a Membership's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceAccess {
    pub name: String,
    pub role: WorkspaceRole,
    /// `Granted`, or `Pending` while the workspace does not exist or is not provisioned.
    pub state: AccessState,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessState {
    Granted,
    Pending,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_workspaces_still_compare_and_never_travel() {
        let access = |name: &str, state| WorkspaceAccess {
            name: name.into(),
            role: WorkspaceRole::Editor,
            state,
        };
        let workspaces = vec![
            access("a", AccessState::Granted),
            access("b", AccessState::Pending),
        ];
        let mut status = MembershipStatus {
            workspaces: workspaces.clone(),
            ..Default::default()
        };
        let full = serde_json::to_value(&status).unwrap();
        status.forget_workspaces();
        assert!(status.workspaces.is_empty());
        assert!(status.same_workspaces(&workspaces), "the digest answers");
        assert!(!status.same_workspaces(&[
            access("a", AccessState::Granted),
            access("b", AccessState::Granted)
        ]));
        assert!(!status.same_workspaces(&[]), "none");
        let json = serde_json::to_value(&status).unwrap();
        assert!(json.get("workspacesDigest").is_none(), "never written");
        let read: MembershipStatus = serde_json::from_value(full).unwrap();
        assert_eq!(read.workspaces_digest, None, "never read");
    }

    #[test]
    fn client_fields_are_the_status_own_and_boxed() {
        let client: MembershipStatus = serde_json::from_value(serde_json::json!({
            "clientId": "acme.ci.x1",
            "serviceAccount": "ci",
            "rotation": "r1",
            "personalWorkspace": "p",
        }))
        .unwrap();
        assert_eq!(client.client_id(), Some("acme.ci.x1"));
        assert_eq!((client.rotation(), client.revocation()), (Some("r1"), None));
        assert_eq!(client.personal_workspace.as_deref(), Some("p"));
        let json = serde_json::to_value(&client).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "clientId": "acme.ci.x1",
                "serviceAccount": "ci",
                "rotation": "r1",
                "personalWorkspace": "p",
                "conditions": [],
                "workspaces": [],
            }),
            "written as before: flat"
        );
        let user: MembershipStatus =
            serde_json::from_value(serde_json::json!({"allWorkspaces": true})).unwrap();
        assert!(
            user.client.is_none() && user.all_workspaces,
            "no box for a user"
        );
        // A cached Membership (in an `Arc`: two counters) fits jemalloc's 640-byte class
        // (the next is 768): 55,000 of them at the benchmark's 25x.
        assert!(
            size_of::<Membership>() + 16 <= 640,
            "{}",
            size_of::<Membership>()
        );
    }
}
