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

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
};
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
    let tenantry =
        |resources: &[&str], verbs: &[&str]| rule(&[crate::api::GROUP], resources, verbs);
    let mut rules = vec![rule(&["", "events.k8s.io"], &["events"], READ)];
    match role {
        OrgRole::Owner | OrgRole::Admin => {
            rules.push(tenantry(&["workspaces", "memberships"], WRITE));
            // Machine-client credentials are the only Secrets in the organization
            // namespace. Owners read them all; Admins only those of clients below Owner,
            // by name ([`CLIENT_CREDENTIALS`], written per organization).
            if role == OrgRole::Owner {
                rules.push(rule(&[""], &["secrets"], READ));
            }
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

/// The Role (and RoleBinding) in an organization namespace that lets its Admins read the
/// credentials Secrets of clients whose role is not Owner, named one by one.
pub const CLIENT_CREDENTIALS: &str = "tenantry-client-credentials";

/// The API group of RBAC objects.
pub const API_GROUP: &str = "rbac.authorization.k8s.io";

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

/// Name of the platform-admin ClusterRole (and its ClusterRoleBinding).
pub const PLATFORM_ADMIN: &str = "tenantry-platform-admin";
/// Name of the operator's ClusterRole (and its ClusterRoleBinding).
pub const OPERATOR: &str = "tenantry-operator";
/// The operator's ServiceAccount name.
pub const OPERATOR_SERVICE_ACCOUNT: &str = "tenantry";

/// The discovery API's ClusterRole for everyone (`kubectl get myorganizations`), and its
/// binding to `system:authenticated`: each caller sees only their own.
pub const DISCOVERY: &str = "tenantry-discovery";
/// The discovery server's own ClusterRole: it reads the three kinds, nothing else.
pub const DISCOVERY_SERVER: &str = "tenantry-discovery-server";

/// [`DISCOVERY`] and [`DISCOVERY_SERVER`].
pub fn discovery_roles() -> Vec<ClusterRole> {
    let role = |name: &str, rules: Vec<PolicyRule>| ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(shipped_labels()),
            ..Default::default()
        },
        rules: Some(rules),
        aggregation_rule: None,
    };
    vec![
        role(
            DISCOVERY,
            vec![rule(
                &[crate::discovery::listing::GROUP],
                &[
                    crate::discovery::listing::ORGANIZATIONS,
                    crate::discovery::listing::WORKSPACES,
                ],
                &["get", "list"],
            )],
        ),
        role(
            DISCOVERY_SERVER,
            vec![rule(
                &[crate::api::GROUP],
                &["organizations", "memberships", "workspaces"],
                &["get", "list", "watch"],
            )],
        ),
    ]
}

/// Binds [`DISCOVERY`] to every authenticated user.
pub fn discovery_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(DISCOVERY.into()),
            labels: Some(shipped_labels()),
            ..Default::default()
        },
        role_ref: cluster_role_ref(DISCOVERY),
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "system:authenticated".into(),
            api_group: Some(API_GROUP.into()),
            namespace: None,
        }]),
    }
}

/// Platform admins may do everything in Tenantry: every organization, including the
/// custom verbs `grant-owner`, `grant-admin` and `verify`.
pub fn platform_admin_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(PLATFORM_ADMIN.into()),
            labels: Some(shipped_labels()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(
                &[crate::api::GROUP],
                &["organizations"],
                &[
                    "get",
                    "list",
                    "watch",
                    "create",
                    "update",
                    "patch",
                    "delete",
                    "grant-owner",
                    "grant-admin",
                    "verify",
                    "set-limits",
                ],
            ),
            rule(
                &[crate::api::GROUP],
                &[
                    "organizations/status",
                    "workspaces/status",
                    "memberships/status",
                ],
                READ,
            ),
            rule(&[crate::api::GROUP], &["workspaces", "memberships"], WRITE),
            rule(&[crate::api::GROUP], &["tenancy"], &["manage"]),
        ]),
        aggregation_rule: None,
    }
}

/// The operator's own rights, each for a reason (least privilege: no wildcards, no
/// `escalate`, `bind` only on the roles it hands out).
pub fn operator_role() -> ClusterRole {
    let mut bindable: Vec<String> = WorkspaceRole::ALL
        .iter()
        .map(|r| workspace_cluster_role(*r))
        .collect();
    bindable.extend(OrgRole::ALL.iter().map(|r| org_cluster_role(*r)));
    let rules = vec![
        // Read the three kinds; add/remove the Workspace finalizer; create the default
        // Workspace; write status.
        rule(
            &[crate::api::GROUP],
            &["organizations"],
            &["get", "list", "watch"],
        ),
        rule(
            &[crate::api::GROUP],
            &["workspaces", "memberships"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(
            &[crate::api::GROUP],
            &[
                "organizations/status",
                "workspaces/status",
                "memberships/status",
            ],
            &["get", "patch", "update"],
        ),
        // The per-organization ClusterRoles grant these verbs on one Organization; RBAC
        // lets a subject create a role only with rights it holds itself (no `escalate`).
        // (create: a User's personal organization, with --personal-organizations.)
        rule(
            &[crate::api::GROUP],
            &["organizations"],
            &[
                "create",
                "update",
                "patch",
                "delete",
                "grant-owner",
                "grant-admin",
            ],
        ),
        // Set the labels and annotations the tracking policy protects.
        rule(&[crate::api::GROUP], &["tenancy"], &["manage"]),
        // Organization and workspace namespaces: created, labelled, deleted.
        rule(
            &[""],
            &["namespaces"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // What a workspace namespace holds; the Client ServiceAccounts.
        rule(
            &[""],
            &["resourcequotas", "limitranges", "serviceaccounts"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule(
            &["networking.k8s.io"],
            &["networkpolicies"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // Client credentials: written at issuance and rotation only; watched only with
        // Tenantry's label selectors. Shared resources: sources read when copied (and
        // marked), copies written in workspace namespaces.
        rule(
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // `update`: a rotation rewrites Tenantry's credentials Secret whole (one PUT at the
        // version read), so that nothing another writer added stays beside a new secret.
        rule(
            &[""],
            &["secrets"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        // Bindings of organization and workspace roles; per-organization ClusterRoles.
        // (Roles: the one that lets an invited user accept.) `update`: a binding that
        // follows the members is changed by one PUT (`provision::ChangedBy::Replace`),
        // no more than `patch` allows.
        rule(
            &[API_GROUP],
            &[
                "roles",
                "rolebindings",
                "clusterroles",
                "clusterrolebindings",
            ],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        // Bind only the roles Tenantry hands out.
        PolicyRule {
            api_groups: Some(vec![API_GROUP.into()]),
            resources: Some(vec!["clusterroles".into()]),
            verbs: vec!["bind".into()],
            resource_names: Some(bindable),
            ..Default::default()
        },
        // The token endpoint: short-lived tokens for Client ServiceAccounts.
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        // Events for what users should see.
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        // Leader election.
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "create", "update"],
        ),
    ];
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(OPERATOR.into()),
            labels: Some(shipped_labels()),
            ..Default::default()
        },
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// Bindings of the platform-admin role to `group` and of the operator role to the
/// operator's ServiceAccount in `namespace`.
pub fn platform_bindings(group: &str, namespace: &str) -> Vec<ClusterRoleBinding> {
    let binding = |name: &str, subject: Subject| ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(shipped_labels()),
            ..Default::default()
        },
        role_ref: cluster_role_ref(name),
        subjects: Some(vec![subject]),
    };
    vec![
        binding(
            PLATFORM_ADMIN,
            Subject {
                kind: "Group".into(),
                name: group.into(),
                api_group: Some(API_GROUP.into()),
                namespace: None,
            },
        ),
        binding(
            OPERATOR,
            Subject {
                kind: "ServiceAccount".into(),
                name: OPERATOR_SERVICE_ACCOUNT.into(),
                api_group: Some(String::new()),
                namespace: Some(namespace.into()),
            },
        ),
    ]
}

/// Applies everything `tenantry manifests` prints: the roles Tenantry binds, the
/// platform-admin and operator roles and bindings, and the admission policies.
pub async fn install(
    client: &Client,
    settings: &crate::settings::Settings,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding,
    };
    let pp = PatchParams::apply(labels::FIELD_MANAGER).force();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut all_roles = cluster_roles();
    all_roles.push(platform_admin_role());
    all_roles.push(operator_role());
    all_roles.extend(discovery_roles());
    for role in all_roles {
        roles
            .patch(
                &role.metadata.name.clone().unwrap_or_default(),
                &pp,
                &Patch::Apply(&role),
            )
            .await?;
    }
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let mut bindings =
        platform_bindings(&settings.platform_admin_group, &settings.operator_namespace);
    bindings.push(discovery_binding());
    for b in bindings {
        crbs.patch(
            &b.metadata.name.clone().unwrap_or_default(),
            &pp,
            &Patch::Apply(&b),
        )
        .await?;
    }
    let vaps: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    for p in crate::policy::policies() {
        vaps.patch(
            &p.metadata.name.clone().unwrap_or_default(),
            &pp,
            &Patch::Apply(&p),
        )
        .await?;
    }
    let vapbs: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for b in crate::policy::bindings() {
        vapbs
            .patch(
                &b.metadata.name.clone().unwrap_or_default(),
                &pp,
                &Patch::Apply(&b),
            )
            .await?;
    }
    // Optional (Kubernetes 1.36 and newer): where the API server does not serve them, the
    // reconcilers add their finalizers themselves.
    let maps: Api<MutatingAdmissionPolicy> = Api::all(client.clone());
    let mapbs: Api<MutatingAdmissionPolicyBinding> = Api::all(client.clone());
    let mutating = async {
        for p in crate::policy::mutating_policies() {
            let name = p.metadata.name.clone().unwrap_or_default();
            maps.patch(&name, &pp, &Patch::Apply(&p)).await?;
        }
        for b in crate::policy::mutating_bindings() {
            let name = b.metadata.name.clone().unwrap_or_default();
            mapbs.patch(&name, &pp, &Patch::Apply(&b)).await?;
        }
        Ok::<_, kube::Error>(())
    };
    match mutating.await {
        Err(kube::Error::Api(s)) if s.code == 404 => tracing::info!(
            "MutatingAdmissionPolicies are not served (Kubernetes older than 1.36): the reconcilers add their finalizers themselves"
        ),
        other => other?,
    }
    Ok(())
}

/// A reference to ClusterRole `name`.
pub fn cluster_role_ref(name: &str) -> RoleRef {
    RoleRef {
        api_group: Some(API_GROUP.into()),
        kind: "ClusterRole".into(),
        name: name.to_string(),
    }
}

/// Sorted, without repeats (a subject may hold a role through its owner entry and a
/// Membership).
pub fn dedup(
    mut subjects: Vec<k8s_openapi::api::rbac::v1::Subject>,
) -> Vec<k8s_openapi::api::rbac::v1::Subject> {
    let key = |s: &k8s_openapi::api::rbac::v1::Subject| {
        (s.kind.clone(), s.namespace.clone(), s.name.clone())
    };
    subjects.sort_by_key(key);
    subjects.dedup_by_key(|s| key(s));
    subjects
}
