//! The ClusterRoles Tenantry ships, and the names it binds.
//!
//! Workspace roles aggregate the rules of Kubernetes' built-in `admin`, `edit` and
//! `view` roles (the same aggregation labels those roles select), so a workspace Admin can
//! do inside the workspace namespace what a namespace admin can, no more. Platform teams
//! extend them by labelling a ClusterRole `tenantry.dev/aggregate-to-workspace-<role>`.
//!
//! Organization roles are bound by a RoleBinding in the organization namespace `org-<org>`
//! and grant what each role may do with that organization's Workspaces, Memberships and
//! machine-client Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{AggregationRule, ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use crate::api::{OrgRole, WorkspaceRole};
use crate::labels;

/// The ClusterRole a workspace role binds to.
pub fn workspace_cluster_role(role: WorkspaceRole) -> String {
    format!("tenantry-workspace-{}", role.slug())
}

/// The ClusterRole an organization role binds to in the organization namespace.
pub fn org_cluster_role(role: OrgRole) -> String {
    format!("tenantry-org-{}", role.slug())
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

fn shipped_labels() -> BTreeMap<String, String> {
    [
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "tenantry".to_string(),
        ),
    ]
    .into()
}

/// Rules of an organization role inside `org-<org>`.
pub fn org_role_rules(role: OrgRole) -> Vec<PolicyRule> {
    let tenantry = |resources: &[&str], verbs: &[&str]| rule(&["tenantry.dev"], resources, verbs);
    let mut rules = vec![rule(&["", "events.k8s.io"], &["events"], READ)];
    match role {
        OrgRole::Owner | OrgRole::Admin => {
            rules.push(tenantry(&["workspaces", "memberships"], WRITE));
            // Machine-client credentials are the only Secrets in the organization namespace.
            rules.push(rule(&[""], &["secrets"], READ));
            rules.push(rule(&[""], &["serviceaccounts"], READ));
        }
        OrgRole::UserAdmin => {
            rules.push(tenantry(&["workspaces"], READ));
            rules.push(tenantry(&["memberships"], WRITE));
        }
        OrgRole::Manager | OrgRole::BillingAdmin | OrgRole::Member | OrgRole::Viewer => {
            rules.push(tenantry(&["workspaces", "memberships"], READ));
        }
    }
    rules
}

/// Every ClusterRole Tenantry ships (installed by the Helm chart, or by `tenantry
/// manifests`).
pub fn cluster_roles() -> Vec<ClusterRole> {
    let mut roles = Vec::new();
    for role in WorkspaceRole::ALL {
        let builtin = match role {
            WorkspaceRole::Admin => "admin",
            WorkspaceRole::Editor => "edit",
            WorkspaceRole::Viewer => "view",
        };
        let selector = |key: String| LabelSelector {
            match_labels: Some([(key, "true".to_string())].into()),
            ..Default::default()
        };
        roles.push(ClusterRole {
            metadata: ObjectMeta {
                name: Some(workspace_cluster_role(role)),
                labels: Some(shipped_labels()),
                ..Default::default()
            },
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(vec![
                    selector(format!("rbac.authorization.k8s.io/aggregate-to-{builtin}")),
                    selector(format!(
                        "tenantry.dev/aggregate-to-workspace-{}",
                        role.slug()
                    )),
                ]),
            }),
            rules: None,
        });
    }
    for role in OrgRole::ALL {
        roles.push(ClusterRole {
            metadata: ObjectMeta {
                name: Some(org_cluster_role(role)),
                labels: Some(shipped_labels()),
                ..Default::default()
            },
            aggregation_rule: None,
            rules: Some(org_role_rules(role)),
        });
    }
    roles
}

/// Applies the shipped ClusterRoles (used by `make demo` and the tests; the Helm chart
/// installs the same objects).
pub async fn install_cluster_roles(client: &Client) -> Result<(), kube::Error> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let pp = PatchParams::apply(labels::FIELD_MANAGER).force();
    for role in cluster_roles() {
        let name = role.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&role)).await?;
    }
    Ok(())
}
