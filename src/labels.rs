//! Labels, annotations and names that mark what Tenantry manages.

/// The one field manager of every server-side apply Tenantry makes.
pub const FIELD_MANAGER: &str = "tenantry";

/// On everything Tenantry creates: the organization it belongs to.
pub const ORGANIZATION: &str = "tenantry.dev/organization";
/// On what belongs to one workspace.
pub const WORKSPACE: &str = "tenantry.dev/workspace";
/// On what belongs to one membership (a Client's ServiceAccount and Secret).
pub const MEMBERSHIP: &str = "tenantry.dev/membership";
/// What the object is to Tenantry: one of [`Component`].
pub const COMPONENT: &str = "tenantry.dev/component";

/// The values of [`COMPONENT`]: what each object Tenantry makes is to it. The applier
/// deletes what carries an owner's labels and was not built, so two kinds of object of
/// one owner never share a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// `org-<org>`.
    OrganizationNamespace,
    /// The RoleBinding of one organization role in `org-<org>`.
    OrganizationBinding,
    /// The per-organization ClusterRoles and ClusterRoleBindings (access to the
    /// Organization object).
    OrganizationRole,
    /// The Role and RoleBinding that let Admins read the credentials of clients below
    /// Owner.
    ClientCredentialsAccess,
    /// The Role and RoleBinding that let an invited user accept.
    Invitation,
    /// A client's credentials Secret.
    ClientCredentials,
    /// A client's ServiceAccount.
    ClientServiceAccount,
    /// The default Workspace Tenantry creates with an organization.
    DefaultWorkspace,
    /// A member's personal Workspace.
    PersonalWorkspace,
    /// A User's personal Organization (`--personal-organizations`).
    PersonalOrganization,
    /// A workspace's namespace.
    WorkspaceNamespace,
    WorkspaceQuota,
    WorkspaceLimits,
    WorkspaceIsolation,
    /// The RoleBinding of one workspace role.
    WorkspaceBinding,
    /// A ConfigMap or Secret copied into a workspace from a shared source.
    SharedCopy,
}

impl Component {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrganizationNamespace => "organization-namespace",
            Self::OrganizationBinding => "organization-binding",
            Self::OrganizationRole => "organization-role",
            Self::ClientCredentialsAccess => "client-credentials-access",
            Self::Invitation => "invitation",
            Self::ClientCredentials => "client-credentials",
            Self::ClientServiceAccount => "client-service-account",
            Self::DefaultWorkspace => "default-workspace",
            Self::PersonalWorkspace => "personal-workspace",
            Self::PersonalOrganization => "personal-organization",
            Self::WorkspaceNamespace => "workspace-namespace",
            Self::WorkspaceQuota => "workspace-quota",
            Self::WorkspaceLimits => "workspace-limits",
            Self::WorkspaceIsolation => "workspace-isolation",
            Self::WorkspaceBinding => "workspace-binding",
            Self::SharedCopy => "shared-copy",
        }
    }
}
/// The Pod Security Admission labels a workspace namespace carries (`enforce`, `audit`,
/// `warn` and their `-version`s); an orphaned namespace keeps them.
pub const POD_SECURITY_PREFIX: &str = "pod-security.kubernetes.io/";

/// `app.kubernetes.io/managed-by=tenantry` on everything Tenantry creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tenantry";

/// On every object Tenantry applies: a digest of the object as Tenantry last built it.
/// A build that differs (a quota key dropped from the spec, a binding's subject gone) is
/// a change to apply even when the live object still holds everything built: the live
/// object's extra fields may be what the new build no longer sets.
pub const APPLIED: &str = "tenantry.dev/applied";

/// The UID of the Tenantry object a namespace was created for. A namespace whose
/// annotation names another object is never adopted.
pub const OWNER_UID: &str = "tenantry.dev/owner-uid";

/// Finalizer on Workspaces: their namespace is cluster-scoped, so an owner reference
/// cannot cascade from the Workspace to it.
pub const WORKSPACE_FINALIZER: &str = "tenantry.dev/workspace-cleanup";
/// On Organizations: their workspace namespaces are settled (deleted or kept, by the
/// deletionPolicy at deletion) before the Organization goes.
pub const ORGANIZATION_FINALIZER: &str = "tenantry.dev/organization-cleanup";

/// The label selector that finds everything Tenantry manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// Set to `"true"` on a Membership by the invited user to accept the invitation; set to
/// [`GRANDFATHERED`] by Tenantry on a member granted before the organization required
/// acceptance.
pub const ACCEPTED: &str = "tenantry.dev/accepted";

/// On a personal Workspace: the UID of the Membership whose workspace it is. Only Tenantry
/// and platform admins may set or change it (policy `tenantry-workspaces`).
pub const PERSONAL_FOR: &str = "tenantry.dev/personal-for";

/// On a personal Organization: the User whose organization it is.
pub const PERSONAL_USER: &str = "tenantry.dev/personal-user";

/// The value of [`ACCEPTED`] Tenantry writes on a User Membership that was granted when
/// its organization turned acceptance on: it stays granted, and that fact is kept where a
/// backup, a restore or a status rewrite keeps it (the admission policy lets only Tenantry
/// and platform admins write it).
pub const GRANDFATHERED: &str = "grandfathered";

/// On a source of shared resources: who shares it. Set by platform admins to `platform`
/// on a ConfigMap or Secret in the operator's namespace (copied into every workspace);
/// set by Tenantry to the organization's name on a source an Organization declares in
/// `spec.sharedResources` (so that a change to it is seen at once).
pub const SHARED_BY: &str = "tenantry.dev/shared-by";
/// The value of [`SHARED_BY`] on the platform's sources.
pub const SHARED_BY_PLATFORM: &str = "platform";
/// On a platform source: the workspaces it is copied into, by their labels
/// (`env=prod,tier=web`); absent: every workspace.
pub const WORKSPACE_SELECTOR: &str = "tenantry.dev/workspace-selector";
/// On a copy: its source, `<namespace>/<name>`.
pub const SOURCE: &str = "tenantry.dev/source";
