//! What a provisioned Workspace's namespace holds, from the Workspace, its Organization,
//! the organization's Memberships and the operator's settings: pure, no API call. The
//! reconciler (`controller::workspace`) claims the namespace and applies what this builds;
//! anything labelled as this workspace's that the build did not produce is deleted.

use std::collections::BTreeMap;

use crate::api::ResourceList;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::api::{
    Membership, Organization, PodSecurityLevel, Workspace, WorkspaceMember, WorkspacePolicy,
    WorkspaceRole,
};
use crate::grants::{self, MemberState, WorkspaceGrantee};
use crate::labels::Component;
use crate::rbac::{cluster_role_ref, dedup};
use crate::{labels, pool, provision, quantity, rbac};

/// Names of what Tenantry puts in a workspace namespace.
pub const QUOTA: &str = "tenantry-quota";
pub const LIMITS: &str = "tenantry-limits";
pub const ISOLATION: &str = "tenantry-isolation";

/// Everything the build reads.
pub struct Input<'a> {
    pub org: &'a Organization,
    pub ws: &'a Workspace,
    /// The namespace's name (from the operator's template, or a legacy one it owns).
    pub namespace: &'a str,
    /// The Workspace's UID, written on the namespace (it is never adopted by another).
    pub uid: &'a str,
    /// The organization's Memberships and what each is (`grants::member_states`).
    pub memberships: &'a [&'a Membership],
    pub states: &'a BTreeMap<String, MemberState>,
    /// The operator's workspace defaults, the last fallback of every field.
    pub operator_defaults: &'a WorkspacePolicy,
    /// `--pod-security-ceiling`, unless the organization's limits set one.
    pub pod_security_ceiling: PodSecurityLevel,
    /// What the workspace gets of the organization's pooled quota (`None`: no share,
    /// which under a pool is nothing of it).
    pub share: Option<&'a pool::Share>,
}

impl<'a> Input<'a> {
    /// The input for `ws` of `org`, with its namespace `(name, workspace uid)`, the
    /// organization's `(memberships, states)`, and the operator's defaults and settings.
    pub fn new(
        org: &'a Organization,
        ws: &'a Workspace,
        (namespace, uid): (&'a str, &'a str),
        (memberships, states): (&'a [&'a Membership], &'a BTreeMap<String, MemberState>),
        (operator_defaults, settings): (&'a WorkspacePolicy, &crate::settings::Settings),
    ) -> Self {
        Input {
            org,
            ws,
            namespace,
            uid,
            memberships,
            states,
            operator_defaults,
            pod_security_ceiling: settings.pod_security_ceiling,
            share: None,
        }
    }

    /// The same input, with the workspace's share of the organization's pooled quota.
    pub fn with_share(self, share: Option<&'a pool::Share>) -> Self {
        Self { share, ..self }
    }
}

/// What the namespace should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub namespace: Namespace,
    pub quota: Option<ResourceQuota>,
    pub limits: Option<LimitRange>,
    pub isolation: Option<NetworkPolicy>,
    /// One per workspace role someone holds.
    pub bindings: Vec<RoleBinding>,
    /// Who reaches the workspace (the Workspace's `status.members`).
    pub members: Vec<WorkspaceMember>,
    /// What the spec asked for beyond the platform's ceilings (enforced at the ceiling).
    pub capped: Vec<Capped>,
}

/// A setting held at the platform's ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capped {
    PodSecurity {
        asked: PodSecurityLevel,
        ceiling: PodSecurityLevel,
    },
    /// `resource asked > ceiling`, one per resource.
    Quota(Vec<String>),
    /// Not granted its share of the organization's pooled quota: `resource asked > left`.
    Pool(Vec<String>),
}

/// The quota a workspace asks for: its own, else the organization's default, else the
/// operator's; held under the organization's per-workspace ceiling
/// (`limits.workspaceQuota`). Returns it and what was above the ceiling.
pub fn quota(
    org: &Organization,
    ws: &Workspace,
    operator_quota: Option<&ResourceList>,
) -> (Option<pool::Resources>, Vec<String>) {
    let asked = ws
        .spec
        .policy
        .quota
        .as_ref()
        .or_else(|| org.spec.workspace_defaults.as_ref()?.quota.as_ref())
        .or(operator_quota)
        .map(ResourceList::to_map);
    match org
        .spec
        .limits
        .as_ref()
        .and_then(|l| l.workspace_quota.as_ref())
    {
        Some(max) => {
            let (quota, above) = quantity::cap(asked, max);
            (Some(quota), above)
        }
        None => (asked, Vec::new()),
    }
}

/// The policy in force: the Workspace's fields, else the organization's defaults, else
/// the operator's; then held under the organization's limits.
pub fn policy(input: &Input<'_>) -> (WorkspacePolicy, Vec<Capped>) {
    let org_defaults = input
        .org
        .spec
        .workspace_defaults
        .clone()
        .unwrap_or_default();
    let mut policy = input
        .ws
        .spec
        .policy
        .or(&org_defaults)
        .or(input.operator_defaults);
    let limits = input.org.spec.limits.as_ref();
    let mut capped = Vec::new();
    let ceiling = limits
        .and_then(|l| l.pod_security)
        .unwrap_or(input.pod_security_ceiling);
    let asked = policy.pod_security.unwrap_or(PodSecurityLevel::Baseline);
    let enforced = asked.capped_at(ceiling);
    if enforced != asked {
        capped.push(Capped::PodSecurity { asked, ceiling });
    }
    policy.pod_security = Some(enforced);
    let (quota, above) = quota_in_force(
        input.org,
        input.ws,
        input.operator_defaults.quota.as_ref(),
        input.share,
    );
    if !above.is_empty() {
        capped.push(Capped::Quota(above));
    }
    if input.org.spec.pool().is_some()
        && let Some(pool::Share::NotGranted(short)) = input.share
    {
        capped.push(Capped::Pool(short.clone()));
    }
    policy.quota = quota.map(ResourceList::from);
    (policy, capped)
}

/// The ResourceQuota a workspace holds once provisioned ([`quota`], and under the
/// organization's pooled quota, its `share` of it: `pool::enforce`), and what was above
/// the organization's ceiling. The organization's `usage.allocated` adds these up for its
/// provisionable workspaces: a declared fact, which changes when a workspace or a policy
/// does, not each time a workspace's quota is created (at the benchmark size that was a
/// quarter of the organizations' status writes).
pub fn quota_in_force(
    org: &Organization,
    ws: &Workspace,
    operator_quota: Option<&ResourceList>,
    share: Option<&pool::Share>,
) -> (Option<pool::Resources>, Vec<String>) {
    let (asked, above) = quota(org, ws, operator_quota);
    match org.spec.pool() {
        Some(pool) => (pool::enforce(asked, pool, share), above),
        None => (asked, above),
    }
}

/// The namespace and everything in it.
pub fn children(input: &Input<'_>) -> Children {
    let (policy, capped) = policy(input);
    let org = input.org.name_any();
    let ws = input.ws.name_any();
    let meta = |name: &str, component: Component| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(input.namespace.to_string()),
        labels: Some(provision::workspace_labels(&org, &ws, component)),
        ..Default::default()
    };
    let quota = policy.quota.as_ref().map(|hard| ResourceQuota {
        metadata: meta(QUOTA, Component::WorkspaceQuota),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard.to_map()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let limits = policy
        .limit_range
        .as_ref()
        .filter(|l| l.default.is_some() || l.default_request.is_some() || l.max.is_some())
        .map(|l| LimitRange {
            metadata: meta(LIMITS, Component::WorkspaceLimits),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default: l.default.as_ref().map(ResourceList::to_map),
                    default_request: l.default_request.as_ref().map(ResourceList::to_map),
                    max: l.max.as_ref().map(ResourceList::to_map),
                    ..Default::default()
                }],
            }),
        });
    // Pods of the workspace reach each other; nothing from other namespaces gets in.
    let isolation = policy
        .network_isolation
        .unwrap_or(true)
        .then(|| NetworkPolicy {
            metadata: meta(ISOLATION, Component::WorkspaceIsolation),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector::default()),
                        ..Default::default()
                    }]),
                    ports: None,
                }]),
                egress: None,
            }),
        });

    let org_ns = input.ws.namespace().unwrap_or_default();
    let grantees = grants::workspace_grantees(input.org, input.ws, input.memberships, input.states);
    let bindings = bindings((&org, &org_ns), &ws, input.namespace, &grantees);
    let members = grantees
        .into_iter()
        .map(|g| WorkspaceMember {
            kind: g.subject.kind,
            name: g.subject.name,
            namespace: g.subject.namespace,
            role: g.role,
            membership: g.membership,
        })
        .collect();
    Children {
        namespace: namespace(input, &policy),
        quota,
        limits,
        isolation,
        bindings,
        members,
        capped,
    }
}

/// One RoleBinding per workspace role someone holds, listing everyone who holds it: in
/// namespace `namespace` of workspace `ws` of organization `org` (whose Memberships live
/// in `org_ns`), for `grantees` (`grants::workspace_grantees`). Read by the Workspace
/// reconciler, which applies them, and by the Membership reconciler, which says `Granted`
/// only once the live bindings hold them.
pub fn bindings(
    (org, org_ns): (&str, &str),
    ws: &str,
    namespace: &str,
    grantees: &[WorkspaceGrantee],
) -> Vec<RoleBinding> {
    WorkspaceRole::ALL
        .into_iter()
        .filter_map(|role| {
            let name = rbac::workspace_cluster_role(role);
            let subjects: Vec<_> = grantees
                .iter()
                .filter(|g| g.role == role)
                .map(|g| {
                    grants::rbac_subject(&g.subject, g.membership.as_deref().unwrap_or(""), org_ns)
                })
                .collect();
            (!subjects.is_empty()).then(|| RoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(provision::workspace_labels(
                        org,
                        ws,
                        Component::WorkspaceBinding,
                    )),
                    ..Default::default()
                },
                role_ref: cluster_role_ref(&name),
                subjects: Some(dedup(subjects)),
            })
        })
        .collect()
}

fn namespace(input: &Input<'_>, policy: &WorkspacePolicy) -> Namespace {
    let mut labels = provision::workspace_labels(
        &input.org.name_any(),
        &input.ws.name_any(),
        Component::WorkspaceNamespace,
    );
    let level = policy
        .pod_security
        .map(|l| l.as_str())
        .unwrap_or("baseline");
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("{}{mode}", labels::POD_SECURITY_PREFIX),
            level.to_string(),
        );
        labels.insert(
            format!("{}{mode}-version", labels::POD_SECURITY_PREFIX),
            "latest".to_string(),
        );
    }
    // No owner reference to the Organization: the garbage collector would delete the
    // namespace, with its data, before Tenantry applied the deletionPolicy the
    // organization had when its deletion began (the Organization's finalizer decides).
    // Omitted fields are dropped from earlier applies that set them.
    Namespace {
        metadata: ObjectMeta {
            name: Some(input.namespace.to_string()),
            labels: Some(labels),
            annotations: Some([(labels::OWNER_UID.to_string(), input.uid.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    /// Each fixture in `tests/fixtures/build/workspace/`: an Organization, its Memberships
    /// and one or more Workspaces; the expected build of each Workspace is the golden
    /// file beside it (`TENANTRY_BLESS=1 cargo test --lib build` rewrites the golden
    /// files; review the diff).
    #[test]
    fn workspace_builds_match_their_fixtures() {
        fixtures::check("workspace", |docs, settings| {
            let org = docs.organizations.first().expect("an Organization");
            let refs: Vec<&Membership> = docs.memberships.iter().collect();
            let states = grants::member_states(org, &refs, settings.gates());
            // The organization's view decides each workspace's share of a pooled quota.
            let view = crate::view::OrgView::new(
                std::sync::Arc::new(org.clone()),
                docs.memberships
                    .iter()
                    .cloned()
                    .map(std::sync::Arc::new)
                    .collect(),
                docs.workspaces
                    .iter()
                    .cloned()
                    .map(std::sync::Arc::new)
                    .collect(),
                settings.gates(),
                settings.default_quota.as_ref(),
            );
            let mut out = String::new();
            for ws in &docs.workspaces {
                let name = format!("{}--{}", org.name_any(), ws.name_any());
                let uid = ws.uid().unwrap_or_default();
                let defaults = settings.workspace_defaults();
                let built = children(
                    &Input::new(
                        org,
                        ws,
                        (&name, &uid),
                        (&refs, &states),
                        (&defaults, settings),
                    )
                    .with_share(view.share(&ws.name_any())),
                );
                out.push_str(&fixtures::render_workspace(&ws.name_any(), &built));
            }
            out
        });
    }
}
