//! What an Organization is made of, built from the Organization and its view: the
//! organization namespace, the RoleBindings of its organization roles there, the
//! Role and RoleBinding that let Admins read the credentials of clients below Owner, and
//! the per-organization ClusterRoles and ClusterRoleBindings on the Organization object
//! itself. Pure; tested against `tests/fixtures/build/organization/`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::api::{OrgRole, Organization, Subject};
use crate::grants;
use crate::labels::{self, Component};
use crate::provision;
use crate::rbac::{self, cluster_role_ref, dedup};
use crate::view::OrgView;

/// Everything the Organization reconciler applies.
#[derive(Debug, Clone, Default)]
pub struct Children {
    pub namespace: Namespace,
    /// One per organization role that someone holds (component `organization-binding`).
    pub role_bindings: Vec<RoleBinding>,
    /// The Admins' read access to client credentials (component
    /// `client-credentials-access`): none when no client below Owner or no Admin.
    pub credentials_roles: Vec<Role>,
    pub credentials_bindings: Vec<RoleBinding>,
    /// Access to the Organization object itself: reader, editor, owner.
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// The organization namespace `ns` of `org` (UID `uid`), and what goes in it.
/// `credentials`: the client credentials Secrets Tenantry made in `ns`, by name (the
/// cache holds only those: labels under `tenantry.dev/` are Tenantry's alone).
pub fn children(
    org: &Organization,
    view: &OrgView,
    ns: &str,
    uid: &str,
    credentials: &BTreeSet<String>,
) -> Children {
    let org_name = org.name_any();
    let holders = &view.holders;
    let subjects = |list: &[(Subject, Option<String>)]| -> Vec<_> {
        dedup(
            list.iter()
                .map(|(s, m)| grants::rbac_subject(s, m.as_deref().unwrap_or(""), ns))
                .collect(),
        )
    };
    let meta = |name: &str, component: Component| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(provision::org_labels(&org_name, component)),
        ..Default::default()
    };

    let role_bindings = OrgRole::ALL
        .iter()
        .filter_map(|role| {
            let held = holders.get(role).filter(|h| !h.is_empty())?;
            let name = rbac::org_cluster_role(*role);
            Some(RoleBinding {
                metadata: meta(&name, Component::OrganizationBinding),
                role_ref: cluster_role_ref(&name),
                subjects: Some(subjects(held)),
            })
        })
        .collect();

    // Admins read the credentials of clients below Owner, by name: an Owner client's
    // secret would be an Owner token. Never a rule with no names: an empty resourceNames
    // means every Secret.
    let readable = grants::admin_readable_credentials(&view.membership_refs(), |name| {
        credentials.contains(name)
    });
    let admins = holders.get(&OrgRole::Admin).filter(|a| !a.is_empty());
    let (credentials_roles, credentials_bindings) = match admins {
        Some(admins) if !readable.is_empty() => {
            let name = rbac::CLIENT_CREDENTIALS;
            let role = Role {
                metadata: meta(name, Component::ClientCredentialsAccess),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["secrets".into()]),
                    resource_names: Some(readable),
                    verbs: vec!["get".into()],
                    ..Default::default()
                }]),
            };
            let binding = RoleBinding {
                metadata: meta(name, Component::ClientCredentialsAccess),
                role_ref: RoleRef {
                    api_group: Some(rbac::API_GROUP.into()),
                    kind: "Role".into(),
                    name: name.to_string(),
                },
                subjects: Some(subjects(admins)),
            };
            (vec![role], vec![binding])
        }
        _ => (Vec::new(), Vec::new()),
    };

    // Access to the cluster-scoped Organization object itself, limited to this one by
    // resourceNames: everyone reads it; Owner and Admin change it; only Owner deletes it.
    let everyone: Vec<_> = holders.values().flatten().cloned().collect();
    let of = |roles: &[OrgRole]| -> Vec<_> {
        roles
            .iter()
            .flat_map(|r| holders.get(r).cloned().unwrap_or_default())
            .collect()
    };
    let tiers: [(&str, &[&str], Vec<_>); 3] = [
        ("reader", &["get", "watch"], everyone),
        (
            "editor",
            &["update", "patch", "grant-admin"],
            of(&[OrgRole::Owner, OrgRole::Admin]),
        ),
        ("owner", &["delete", "grant-owner"], of(&[OrgRole::Owner])),
    ];
    let mut cluster_roles = Vec::new();
    let mut cluster_role_bindings = Vec::new();
    for (tier, verbs, holders) in tiers {
        let name = format!("tenantry:org:{org_name}:{tier}");
        let meta = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(provision::org_labels(
                &org_name,
                Component::OrganizationRole,
            )),
            owner_references: provision::owner_ref(org, true).map(|r| vec![r]),
            ..Default::default()
        };
        cluster_roles.push(ClusterRole {
            metadata: meta.clone(),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![crate::api::GROUP.into()]),
                resources: Some(vec!["organizations".into()]),
                resource_names: Some(vec![org_name.clone()]),
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                ..Default::default()
            }]),
            aggregation_rule: None,
        });
        cluster_role_bindings.push(ClusterRoleBinding {
            metadata: meta,
            role_ref: cluster_role_ref(&name),
            subjects: Some(subjects(&holders)),
        });
    }

    Children {
        namespace: namespace(org, ns, uid),
        role_bindings,
        credentials_roles,
        credentials_bindings,
        cluster_roles,
        cluster_role_bindings,
    }
}

/// The organization namespace: owned by the Organization (it goes with it), marked with
/// the Organization's UID (never adopted from anyone else).
fn namespace(org: &Organization, ns: &str, uid: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(ns.to_string()),
            labels: Some(provision::org_labels(
                &org.name_any(),
                Component::OrganizationNamespace,
            )),
            annotations: Some([(labels::OWNER_UID.to_string(), uid.to_string())].into()),
            owner_references: provision::owner_ref(org, true).map(|r| vec![r]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One provisioned workspace's ResourceQuota: what it holds (`spec.hard`) and what is
/// used of it (`status.used`).
pub type QuotaState<'a> = (
    Option<&'a crate::pool::Resources>,
    Option<&'a crate::pool::Resources>,
);

/// What the organization uses (`status.usage`) and, under a pooled quota, its state
/// (`status.quota`): from the view and the ResourceQuotas of its provisioned workspaces.
pub fn usage(
    view: &OrgView,
    quotas: &[QuotaState<'_>],
) -> (Option<crate::api::QuotaStatus>, crate::api::Usage) {
    use crate::api::SubjectKind;
    use crate::quantity::{sum, to_list};
    let subjects: std::collections::BTreeSet<&Subject> = view
        .holders
        .values()
        .flatten()
        .map(|(subject, _)| subject)
        .collect();
    let clients = subjects
        .iter()
        .filter(|s| s.kind == SubjectKind::Client)
        .count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let allocated = sum(quotas.iter().filter_map(|(hard, _)| *hard));
    let used = sum(quotas.iter().filter_map(|(_, used)| *used));
    let quota = view.pool.as_ref().map(|plan| crate::api::QuotaStatus {
        hard: plan.hard.clone(),
        allocated: plan.allocated.clone(),
        used: plan
            .hard
            .keys()
            .map(|r| {
                let v = used.get(r).copied().unwrap_or(0);
                (
                    r.clone(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        crate::quantity::format(v),
                    ),
                )
            })
            .collect(),
        not_granted: plan.not_granted(),
    });
    let usage = crate::api::Usage {
        workspaces: count(view.provisionable.len()),
        members: count(subjects.len().saturating_sub(clients)),
        clients: count(clients),
        allocated: to_list(&allocated),
        // Each allocated resource, 0 until the quota controller has measured it: a new
        // workspace's quota getting its first status (all zeros) changes nothing here. At
        // the 5x benchmark size those first statuses came for minutes, and each was an
        // organization status write.
        used: to_list(
            &allocated
                .keys()
                .map(|r| (r.clone(), used.get(r).copied().unwrap_or(0)))
                .collect(),
        ),
    };
    (quota, usage)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::build::fixtures;

    /// Each fixture in `tests/fixtures/build/organization/`: an Organization and its
    /// Memberships; the expected build is the golden file beside it.
    #[test]
    fn organization_builds_match_their_fixtures() {
        fixtures::check("organization", |docs, settings| {
            let org = docs.organizations.first().expect("an Organization");
            let view = OrgView::new(
                Arc::new(org.clone()),
                docs.memberships.iter().cloned().map(Arc::new).collect(),
                docs.workspaces.iter().cloned().map(Arc::new).collect(),
                settings.gates(),
                settings.default_quota.as_ref(),
            );
            let ns = crate::names::org_namespace(&org.name_any());
            let uid = org.uid().unwrap_or_default();
            // The credentials Secrets the fixture says Tenantry made.
            let credentials = docs
                .secrets
                .iter()
                .filter(|s| {
                    s.labels().get(labels::COMPONENT).map(String::as_str)
                        == Some(Component::ClientCredentials.as_str())
                })
                .map(|s| s.name_any())
                .collect();
            fixtures::render_organization(&children(org, &view, &ns, &uid, &credentials))
        });
    }

    /// Usage counts people and clients once each (whatever roles they hold), adds up the
    /// workspaces' quotas, and under a pool reports its plan and the pooled resources used.
    #[test]
    fn usage_adds_up_the_workspaces_and_counts_each_member_once() {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(
            r#"
apiVersion: tenantry.dev/v1alpha1
kind: Organization
metadata: {name: acme, uid: u-acme, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  owners: [{kind: User, name: alice}]
  quota: {requests.cpu: "4"}
---
apiVersion: tenantry.dev/v1alpha1
kind: Membership
metadata: {name: alice-admin, namespace: org-acme, uid: u-m1, creationTimestamp: "2026-01-01T00:00:01Z"}
spec: {subject: {kind: User, name: alice}, role: Admin}
---
apiVersion: tenantry.dev/v1alpha1
kind: Membership
metadata: {name: ci, namespace: org-acme, uid: u-m2, creationTimestamp: "2026-01-01T00:00:02Z"}
spec: {subject: {kind: Client, name: ci}, role: Member}
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: a, namespace: org-acme, uid: u-w1, creationTimestamp: "2026-01-01T00:00:03Z"}
spec: {quota: {requests.cpu: "3"}}
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: b, namespace: org-acme, uid: u-w2, creationTimestamp: "2026-01-01T00:00:04Z"}
spec: {quota: {requests.cpu: "2"}}
"#,
        )
        .expect("yaml");
        let of = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind).cloned();
        let org: Organization = serde_json::from_value(of("Organization").next().unwrap()).unwrap();
        let view = OrgView::new(
            Arc::new(org),
            of("Membership")
                .map(|d| Arc::new(serde_json::from_value(d).unwrap()))
                .collect(),
            of("Workspace")
                .map(|d| Arc::new(serde_json::from_value(d).unwrap()))
                .collect(),
            Default::default(),
            None,
        );
        let list = |pairs: &[(&str, &str)]| -> crate::pool::Resources {
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string()),
                    )
                })
                .collect()
        };
        let (a_hard, a_used) = (
            list(&[("requests.cpu", "3"), ("pods", "10")]),
            list(&[("requests.cpu", "1500m"), ("pods", "2")]),
        );
        let (b_hard, b_used) = (
            list(&[("requests.cpu", "0")]),
            list(&[("requests.cpu", "0")]),
        );
        let (quota, usage) = usage(
            &view,
            &[
                (Some(&a_hard), Some(&a_used)),
                (Some(&b_hard), Some(&b_used)),
            ],
        );
        assert_eq!((usage.workspaces, usage.members, usage.clients), (2, 1, 1));
        assert_eq!(
            usage.allocated,
            list(&[("requests.cpu", "3"), ("pods", "10")])
        );
        assert_eq!(
            usage.used,
            list(&[("requests.cpu", "1500m"), ("pods", "2")])
        );
        let quota = quota.expect("a pool");
        assert_eq!(quota.hard, list(&[("requests.cpu", "4")]));
        assert_eq!(quota.allocated, list(&[("requests.cpu", "3")]));
        assert_eq!(quota.used, list(&[("requests.cpu", "1500m")]));
        assert_eq!(quota.not_granted, vec!["b".to_string()]);

        // A quota the quota controller has not measured yet uses nothing: its first
        // status, all zeros, changes nothing in the organization's usage.
        let c_hard = list(&[("requests.memory", "1Gi")]);
        let unmeasured = super::usage(
            &view,
            &[(Some(&a_hard), Some(&a_used)), (Some(&c_hard), None)],
        )
        .1;
        let measured = super::usage(
            &view,
            &[
                (Some(&a_hard), Some(&a_used)),
                (Some(&c_hard), Some(&list(&[("requests.memory", "0")]))),
            ],
        )
        .1;
        assert_eq!(
            unmeasured.used,
            list(&[
                ("requests.cpu", "1500m"),
                ("pods", "2"),
                ("requests.memory", "0")
            ])
        );
        assert_eq!(unmeasured, measured);
    }
}
