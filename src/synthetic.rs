//! A generated tenancy of any size: what `tenantry generate`, the benchmark and the
//! resilience tests apply.
//!
//! Every organization gets the same shape, so cost per object can be compared across
//! sizes: `workspaces` Workspaces (`w0`, `w1`, ...; the organization's own default
//! workspace is turned off so the count is exact), each with a ResourceQuota, a
//! LimitRange, Pod Security labels and a NetworkPolicy; `members` Memberships cycling
//! through the organization roles (Admin, Manager, UserAdmin, BillingAdmin, Viewer,
//! Member, ...), the narrower roles with one or two workspace grants; and `clients`
//! machine clients (role Member, Editor of `w0`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::{
    DefaultWorkspace, LimitDefaults, Membership, MembershipSpec, OrgRole, Organization,
    OrganizationSpec, Subject, Workspace, WorkspacePolicy, WorkspaceRole, WorkspaceSpec,
};

/// How big a generated tenancy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Size {
    /// Organizations.
    #[arg(long, default_value_t = 200)]
    pub organizations: usize,
    /// Workspaces per organization.
    #[arg(long, default_value_t = 5)]
    pub workspaces: usize,
    /// Human members per organization (besides its owner).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Machine clients per organization.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
}

impl Default for Size {
    fn default() -> Self {
        Self {
            organizations: 200,
            workspaces: 5,
            members: 10,
            clients: 1,
        }
    }
}

impl Size {
    /// This size multiplied by `factor` in organizations (the shape of each stays).
    pub fn times(self, factor: usize) -> Self {
        Self {
            organizations: self.organizations * factor,
            ..self
        }
    }
}

/// The objects of a generated tenancy, in the order to apply them.
#[derive(Clone, Debug, Default)]
pub struct Tenancy {
    pub organizations: Vec<Organization>,
    pub workspaces: Vec<Workspace>,
    pub memberships: Vec<Membership>,
}

/// The organization roles members cycle through (Owners are the organization's `owners`).
const ROLES: [OrgRole; 6] = [
    OrgRole::Admin,
    OrgRole::Manager,
    OrgRole::UserAdmin,
    OrgRole::BillingAdmin,
    OrgRole::Viewer,
    OrgRole::Member,
];

/// The name of organization `i` of a tenancy generated with `prefix`.
pub fn organization_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

/// Generates a tenancy; names start with `prefix` (a DNS label start that is not `org`).
pub fn tenancy(prefix: &str, size: Size) -> Tenancy {
    let mut t = Tenancy::default();
    for i in 0..size.organizations {
        let org = organization_name(prefix, i);
        let ns = crate::names::org_namespace(&org);
        t.organizations.push(Organization::new(
            &org,
            OrganizationSpec {
                display_name: format!("Organization {i}"),
                owners: vec![Subject::user(&format!("owner@{org}.example"))],
                default_workspace: Some(DefaultWorkspace {
                    enabled: false,
                    ..Default::default()
                }),
                workspace_defaults: Some(policy()),
                ..Default::default()
            },
        ));
        let workspaces: Vec<String> = (0..size.workspaces).map(|j| format!("w{j}")).collect();
        for w in &workspaces {
            let mut ws = Workspace::new(
                w,
                WorkspaceSpec {
                    display_name: Some(format!("Workspace {w} of {org}")),
                    policy: WorkspacePolicy::default(),
                },
            );
            ws.metadata.namespace = Some(ns.clone());
            t.workspaces.push(ws);
        }
        for m in 0..size.members {
            let role = ROLES[m % ROLES.len()];
            let grants: Vec<(&str, WorkspaceRole)> = if role.reaches_all_workspaces() {
                Vec::new()
            } else {
                let roles = WorkspaceRole::ALL;
                (0..2.min(workspaces.len()))
                    .map(|k| {
                        (
                            workspaces[(m + k) % workspaces.len()].as_str(),
                            // An organization Viewer holds only the Viewer role.
                            if role == OrgRole::Viewer {
                                WorkspaceRole::Viewer
                            } else {
                                roles[(m + k) % roles.len()]
                            },
                        )
                    })
                    .collect()
            };
            let mut mb = Membership::new(
                &format!("user-{m}"),
                MembershipSpec::new(
                    Subject::user(&format!("user-{m}@{org}.example")),
                    role,
                    &grants,
                ),
            );
            mb.metadata.namespace = Some(ns.clone());
            t.memberships.push(mb);
        }
        for c in 0..size.clients {
            let grants: Vec<(&str, WorkspaceRole)> = workspaces
                .first()
                .map(|w| vec![(w.as_str(), WorkspaceRole::Editor)])
                .unwrap_or_default();
            let mut mb = Membership::new(
                &format!("client-{c}"),
                MembershipSpec::new(
                    Subject::client(&format!("ci-{c}")),
                    OrgRole::Member,
                    &grants,
                ),
            );
            mb.metadata.namespace = Some(ns.clone());
            t.memberships.push(mb);
        }
    }
    t
}

fn policy() -> WorkspacePolicy {
    let q = |pairs: &[(&str, &str)]| -> crate::api::ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    WorkspacePolicy {
        quota: Some(q(&[("requests.cpu", "4"), ("pods", "50")])),
        limit_range: Some(LimitDefaults {
            default: Some(q(&[("cpu", "500m"), ("memory", "512Mi")])),
            default_request: Some(q(&[("cpu", "100m"), ("memory", "128Mi")])),
            max: None,
        }),
        pod_security: None,
        network_isolation: Some(true),
    }
}

/// The tenancy as multi-document YAML, ready for one `kubectl apply -f -`: each
/// organization's namespace is declared first (labelled for its organization, which
/// adopts it), so the Workspaces and Memberships have their namespace when applied.
pub fn to_yaml(t: &Tenancy) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for org in &t.organizations {
        let name = org.metadata.name.clone().unwrap_or_default();
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::core::ObjectMeta {
                name: Some(crate::names::org_namespace(&name)),
                labels: Some([(crate::labels::ORGANIZATION.to_string(), name)].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&ns)?);
    }
    for doc in t.organizations.iter().map(serde_saphyr::to_string) {
        out.push_str("---\n");
        out.push_str(&doc?);
    }
    for doc in t.workspaces.iter().map(serde_saphyr::to_string) {
        out.push_str("---\n");
        out.push_str(&doc?);
    }
    for doc in t.memberships.iter().map(serde_saphyr::to_string) {
        out.push_str("---\n");
        out.push_str(&doc?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_size_has_the_documented_shape() {
        let t = tenancy("b", Size::default());
        assert_eq!(t.organizations.len(), 200);
        assert_eq!(t.workspaces.len(), 1000);
        assert_eq!(t.memberships.len(), 2200);
        let names: std::collections::BTreeSet<_> = t
            .memberships
            .iter()
            .map(|m| (m.metadata.namespace.clone(), m.metadata.name.clone()))
            .collect();
        assert_eq!(names.len(), 2200, "names are unique");
        // Grants only name workspaces of the same organization.
        for m in &t.memberships {
            for g in &m.spec.workspaces {
                assert!(g.name.starts_with('w'));
            }
        }
        assert!(
            to_yaml(&tenancy("b", Size::default().times(0)))
                .unwrap()
                .is_empty()
        );
    }
}
