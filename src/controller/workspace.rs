//! What happens to a Workspace: its namespace (never adopted), ResourceQuota, LimitRange,
//! Pod Security labels, default NetworkPolicy, one RoleBinding per workspace role, status.
//!
//! A Workspace has a finalizer: its namespace is cluster-scoped, so an owner reference
//! cannot cascade from the (namespaced) Workspace to it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::{Change, Context, Feeds, feed, log_result, requeue_on_error, workspaces_of};
use crate::api::{
    DeletionPolicy, Membership, Organization, PodSecurityLevel, Workspace, WorkspaceMember,
    WorkspacePolicy, WorkspaceRole, WorkspaceStatus, reason,
};
use crate::error::{Context as _, Error, Result};
use crate::grants;
use crate::provision::{self, NamespaceClaim};
use crate::rbac::{cluster_role_ref, dedup};
use crate::status::{self, Outcome};
use crate::{labels, names, quantity, rbac};

const QUOTA: &str = "tenantry-quota";
const LIMITS: &str = "tenantry-limits";
const ISOLATION: &str = "tenantry-isolation";
/// Annotation an earlier Tenantry put on workspace namespaces: the deletion policy in
/// force when it was last provisioned. Read only for namespaces it left behind; the
/// decision is now made from the Organization when deletion begins.
const LEGACY_DELETION_POLICY: &str = "tenantry.dev/deletion-policy";

/// Whether a workspace's change can free a place for another: deleted, or being deleted.
fn frees_a_place(change: &Change<'_, Workspace>) -> bool {
    match change {
        Change::Listed(_) | Change::Deleted(_) => true,
        Change::Applied { old, new } => {
            new.meta().deletion_timestamp.is_some()
                && old.is_none_or(|o| o.meta().deletion_timestamp.is_none())
        }
    }
}

/// Runs the Workspace reconciler until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    feeds: &Feeds,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (s1, s2, s3) = (ctx.stores.clone(), ctx.stores.clone(), ctx.stores.clone());
    let by_labels = |l: &BTreeMap<String, String>| {
        let org = l.get(labels::ORGANIZATION)?;
        let ws = l.get(labels::WORKSPACE)?;
        Some(ObjectRef::<Workspace>::new(ws).within(&names::org_namespace(org)))
    };
    Controller::for_stream(
        feeds.workspaces.subscribe(true, feed::applied),
        ctx.stores.workspaces.clone(),
    )
    // What it provisions, by the workspace labels on each: any edit or deletion is
    // repaired.
    .watches_stream(feeds.namespaces.subscribe(false, feed::any), move |o| {
        by_labels(o.labels())
    })
    .watches_stream(feeds.role_bindings.subscribe(false, feed::any), move |o| {
        by_labels(o.labels())
    })
    .watches_stream(feeds.quotas.subscribe(false, feed::any), move |o| {
        by_labels(o.labels())
    })
    .watches_stream(feeds.limit_ranges.subscribe(false, feed::any), move |o| {
        by_labels(o.labels())
    })
    .watches_stream(
        feeds.network_policies.subscribe(false, feed::any),
        move |o| by_labels(o.labels()),
    )
    // Who is granted what, and the organization's policy.
    .watches_stream(
        feeds.memberships.subscribe(false, feed::meaningful),
        move |m: Membership| workspaces_of(&s1, &m.namespace().unwrap_or_default()),
    )
    .watches_stream(
        feeds.organizations.subscribe(false, feed::meaningful),
        move |o: Organization| workspaces_of(&s2, &names::org_namespace(&o.name_any())),
    )
    // A workspace that goes away frees a place under limits.maxWorkspaces.
    .watches_stream(
        feeds.workspaces.subscribe(false, frees_a_place),
        move |w: Workspace| {
            let ns = w.namespace().unwrap_or_default();
            let limited = s3
                .organization_of_namespace(&ns)
                .is_some_and(|o| o.spec.max_workspaces().is_some());
            if limited {
                workspaces_of(&s3, &ns)
            } else {
                Vec::new()
            }
        },
    )
    .with_config(ctx.settings.controller_config())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, |_, e, _| requeue_on_error(e), ctx.clone())
    .for_each(|r| {
        log_result(&ctx, "Workspace", r);
        futures::future::ready(())
    })
    .await;
}

#[instrument(skip_all, fields(workspace = %ws.name_any(), namespace = ?ws.namespace()))]
async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = crate::metrics::timer("Workspace");
    let ns = ws
        .namespace()
        .ok_or_else(|| Error::MissingKey(format!("Workspace {}", ws.name_any())))?;
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, labels::WORKSPACE_FINALIZER, ws, |event| async {
        match event {
            Finalizer::Apply(ws) => provision_workspace(&ws, &ctx).await,
            Finalizer::Cleanup(ws) => cleanup(&ws, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// What the workspace should be, once its organization is known.
struct Plan<'a> {
    org: &'a Organization,
    ws: &'a Workspace,
    namespace: String,
    uid: String,
    policy: WorkspacePolicy,
}

async fn provision_workspace(ws: &Workspace, ctx: &Context) -> Result<Action> {
    let org_ns = ws.namespace().unwrap_or_default();
    let uid = ws
        .uid()
        .ok_or_else(|| Error::MissingKey(format!("Workspace {}", ws.name_any())))?;
    let org = ctx.stores.organization_of_namespace(&org_ns);
    let mut members = Vec::new();
    let mut namespace = None;
    let outcome = match &org {
        None => Outcome::progressing(
            reason::ORGANIZATION_NOT_FOUND,
            format!(
                "no Organization owns namespace {org_ns}; Workspaces live in their organization's namespace"
            ),
        ),
        Some(org) if org.meta().deletion_timestamp.is_some() => {
            Outcome::progressing(reason::DELETING, "the organization is being deleted")
        }
        Some(org) => {
            let all = ctx.stores.workspaces_in(&org_ns);
            let refs: Vec<&Workspace> = all.iter().map(|w| w.as_ref()).collect();
            if !grants::provisionable_workspaces(org, &refs).contains(&ws.name_any()) {
                Outcome::stalled(
                    reason::WORKSPACE_LIMIT_REACHED,
                    format!(
                        "the organization allows {} workspaces (limits.maxWorkspaces); older workspaces come first",
                        org.spec.max_workspaces().unwrap_or_default()
                    ),
                )
            } else {
                match namespace_name(ctx, &org.name_any(), &ws.name_any(), &uid) {
                    Err(e) => Outcome::stalled(reason::INVALID_NAME, e.to_string()),
                    Ok(name) => {
                        let org_defaults = org.spec.workspace_defaults.clone().unwrap_or_default();
                        let mut policy = ws
                            .spec
                            .policy
                            .or(&org_defaults)
                            .or(&ctx.settings.workspace_defaults());
                        // Tenants choose Pod Security up to the platform's ceiling.
                        let ceiling = org
                            .spec
                            .limits
                            .as_ref()
                            .and_then(|l| l.pod_security)
                            .unwrap_or(ctx.settings.pod_security_ceiling);
                        let asked = policy.pod_security.unwrap_or(PodSecurityLevel::Baseline);
                        let enforced = asked.capped_at(ceiling);
                        policy.pod_security = Some(enforced);
                        // And quotas up to the platform's per-workspace ceiling.
                        let mut above_quota = Vec::new();
                        if let Some(max) = org
                            .spec
                            .limits
                            .as_ref()
                            .and_then(|l| l.workspace_quota.as_ref())
                        {
                            let (quota, above) = quantity::cap(policy.quota.as_ref(), max);
                            policy.quota = Some(quota);
                            above_quota = above;
                        }
                        let plan = Plan {
                            org,
                            ws,
                            namespace: name.clone(),
                            uid: uid.clone(),
                            policy,
                        };
                        let (outcome, granted) = provision(&plan, ctx).await?;
                        if outcome.is_ready() {
                            namespace = Some(name.clone());
                        }
                        members = granted;
                        if outcome.is_ready() && enforced != asked {
                            Outcome::stalled(
                                reason::POD_SECURITY_NOT_ALLOWED,
                                format!(
                                    "podSecurity {} is above what organization {} may use ({}, set by platform admins in spec.limits.podSecurity or --pod-security-ceiling): namespace {name} enforces {}",
                                    asked.as_str(),
                                    org.name_any(),
                                    ceiling.as_str(),
                                    enforced.as_str()
                                ),
                            )
                        } else if outcome.is_ready() && !above_quota.is_empty() {
                            Outcome::stalled(
                                reason::QUOTA_NOT_ALLOWED,
                                format!(
                                    "quota above what organization {} may give one workspace (spec.limits.workspaceQuota, set by platform admins): {}; namespace {name} enforces the ceiling",
                                    org.name_any(),
                                    above_quota.join(", ")
                                ),
                            )
                        } else {
                            outcome
                        }
                    }
                }
            }
        }
    };

    let old = ws.status.clone().unwrap_or_default();
    let new = WorkspaceStatus {
        namespace,
        members,
        observed_generation: ws.meta().generation,
        conditions: status::conditions(&old.conditions, &outcome, ws.meta().generation),
    };
    let held = if old.namespace != new.namespace
        || old.members != new.members
        || old.observed_generation != new.observed_generation
        || !status::same_conditions(&old.conditions, &new.conditions)
    {
        let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &org_ns);
        ctx.write_status(&api, ws, &old.conditions, &new.conditions, &new)
            .await?
    } else {
        None
    };
    Ok(ctx
        .conclude(ws, &old.conditions, &outcome, Duration::from_secs(5), held)
        .await)
}

/// The workspace's namespace: from the operator's template, or, for a workspace
/// provisioned before the template joined organization and workspace with `--`, the
/// namespace it already owns under the old template (found by its owner UID, a fact of the
/// namespace itself): an upgrade moves nobody's data.
fn namespace_name(
    ctx: &Context,
    org: &str,
    ws: &str,
    uid: &str,
) -> Result<String, names::NameError> {
    let s = &ctx.settings;
    let name = names::workspace_namespace(
        &s.namespace_template,
        org,
        ws,
        &s.operator_namespace,
        &s.reserved(),
    )?;
    let ours = |n: &str| {
        ctx.stores
            .namespaces
            .get(&ObjectRef::new(n))
            .is_some_and(|ns| {
                ns.annotations().get(labels::OWNER_UID).map(String::as_str) == Some(uid)
            })
    };
    if s.namespace_template == names::DEFAULT_NAMESPACE_TEMPLATE && !ours(&name) {
        let legacy = names::LEGACY_NAMESPACE_TEMPLATE
            .replace("{org}", org)
            .replace("{workspace}", ws);
        let legacy = names::shorten(&legacy, names::MAX_LABEL);
        if ours(&legacy) {
            return Ok(legacy);
        }
    }
    Ok(name)
}

/// Provisions the namespace and everything in it. Returns the outcome and who was granted.
async fn provision(plan: &Plan<'_>, ctx: &Context) -> Result<(Outcome, Vec<WorkspaceMember>)> {
    let name = &plan.namespace;
    let s = &ctx.stores;
    match provision::claim_namespace(&ctx.client, &s.namespaces, &namespace(plan), &plan.uid)
        .await?
    {
        NamespaceClaim::Foreign(why) => {
            return Ok((
                Outcome::stalled(
                    reason::NAMESPACE_CONFLICT,
                    format!("{why}: it is left untouched"),
                ),
                vec![],
            ));
        }
        NamespaceClaim::Terminating => {
            return Ok((
                Outcome::progressing(
                    reason::NAMESPACE_TERMINATING,
                    format!(
                        "namespace {name} is terminating (it was deleted, or belonged to an earlier workspace of this name); it is made again once it is gone"
                    ),
                ),
                vec![],
            ));
        }
        NamespaceClaim::Gone => {
            return Ok((
                Outcome::progressing(reason::PROGRESSING, format!("creating namespace {name}")),
                vec![],
            ));
        }
        // Just created: the rest is provisioned in the same pass (one status write, Ready,
        // instead of a Progressing one first).
        NamespaceClaim::Created => info!(namespace = %name, "created the workspace namespace"),
        NamespaceClaim::Ours(_) => {}
    }
    provision::apply_cluster(&ctx.client, &s.namespaces, &namespace(plan)).await?;

    let meta = |object: &str, component: &str| ObjectMeta {
        name: Some(object.to_string()),
        namespace: Some(name.clone()),
        labels: Some(provision::workspace_labels(
            &plan.org.name_any(),
            &plan.ws.name_any(),
            component,
        )),
        ..Default::default()
    };

    // A quota or LimitRange the API server refuses (a resource name a quota cannot have, a
    // default above its max) is a bad spec, not an error to retry: it is reported, the
    // previous object (if any) stays, and the rest is provisioned, bindings included.
    let mut refusals = Vec::new();
    match &plan.policy.quota {
        Some(hard) => {
            let quota = ResourceQuota {
                metadata: meta(QUOTA, "workspace-quota"),
                spec: Some(ResourceQuotaSpec {
                    hard: Some(hard.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if let Some(why) = refused(provision::apply(&ctx.client, &s.quotas, &quota).await)? {
                refusals.push(why);
            }
        }
        None => {
            provision::delete_cached(&ctx.client, &s.quotas, name, QUOTA).await?;
        }
    }

    match &plan.policy.limit_range {
        Some(l) if l.default.is_some() || l.default_request.is_some() || l.max.is_some() => {
            let lr = LimitRange {
                metadata: meta(LIMITS, "workspace-limits"),
                spec: Some(LimitRangeSpec {
                    limits: vec![LimitRangeItem {
                        type_: "Container".into(),
                        default: l.default.clone(),
                        default_request: l.default_request.clone(),
                        max: l.max.clone(),
                        ..Default::default()
                    }],
                }),
            };
            if let Some(why) = refused(provision::apply(&ctx.client, &s.limit_ranges, &lr).await)? {
                refusals.push(why);
            }
        }
        _ => {
            provision::delete_cached(&ctx.client, &s.limit_ranges, name, LIMITS).await?;
        }
    }

    if plan.policy.network_isolation.unwrap_or(true) {
        // Pods of the workspace reach each other; nothing from other namespaces gets in.
        let np = NetworkPolicy {
            metadata: meta(ISOLATION, "workspace-isolation"),
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
        };
        provision::apply(&ctx.client, &s.network_policies, &np).await?;
    } else {
        provision::delete_cached(&ctx.client, &s.network_policies, name, ISOLATION).await?;
    }

    // One RoleBinding per workspace role, listing everyone who holds it.
    let org_ns = plan.ws.namespace().unwrap_or_default();
    let memberships = s.memberships_in(&org_ns);
    let refs: Vec<&Membership> = memberships.iter().map(|m| m.as_ref()).collect();
    let states = grants::member_states(plan.org, &refs, ctx.settings.gates());
    let grantees = grants::workspace_grantees(plan.org, &plan.ws.name_any(), &refs, &states);
    for role in WorkspaceRole::ALL {
        let binding = rbac::workspace_cluster_role(role);
        let subjects: Vec<_> = grantees
            .iter()
            .filter(|g| g.role == role)
            .map(|g| {
                grants::rbac_subject(&g.subject, g.membership.as_deref().unwrap_or(""), &org_ns)
            })
            .collect();
        if subjects.is_empty() {
            provision::delete_cached(&ctx.client, &s.role_bindings, name, &binding).await?;
            continue;
        }
        let rb = RoleBinding {
            metadata: meta(&binding, "workspace-binding"),
            role_ref: cluster_role_ref(&binding),
            subjects: Some(dedup(subjects)),
        };
        provision::apply(&ctx.client, &s.role_bindings, &rb).await?;
    }

    let members = grantees
        .into_iter()
        .map(|g| WorkspaceMember {
            kind: g.subject.kind,
            name: g.subject.name,
            namespace: g.subject.namespace,
            role: g.role,
            membership: g.membership,
        })
        .collect::<Vec<_>>();
    let outcome = if refusals.is_empty() {
        Outcome::ready(
            reason::PROVISIONED,
            format!(
                "namespace {name} is provisioned; {} members have access",
                members.len()
            ),
        )
    } else {
        Outcome::stalled(
            reason::INVALID_POLICY,
            format!(
                "the API server refuses the workspace's quota or limitRange (from the Workspace or the organization's workspaceDefaults): {}",
                refusals.join("; ")
            ),
        )
    };
    Ok((outcome, members))
}

/// The API server's message when it refused an object as invalid (400, 422); other
/// failures stay errors, to be retried.
fn refused(applied: Result<bool>) -> Result<Option<String>> {
    match applied {
        Ok(_) => Ok(None),
        Err(Error::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 400 || s.code == 422 => Ok(Some(s.message.clone())),
        Err(e) => Err(e),
    }
}

fn namespace(plan: &Plan<'_>) -> Namespace {
    let org = plan.org.name_any();
    let mut labels = provision::workspace_labels(&org, &plan.ws.name_any(), "workspace-namespace");
    let level = plan
        .policy
        .pod_security
        .map(|l| l.as_str())
        .unwrap_or("baseline");
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            level.to_string(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".to_string(),
        );
    }
    // No owner reference to the Organization: the garbage collector would delete the
    // namespace, with its data, before Tenantry applied the deletionPolicy the
    // organization had when its deletion began (the Organization's finalizer decides).
    // Omitted fields are dropped from earlier applies that set them.
    Namespace {
        metadata: ObjectMeta {
            name: Some(plan.namespace.clone()),
            labels: Some(labels),
            annotations: Some([(labels::OWNER_UID.to_string(), plan.uid.clone())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The Workspace is being deleted on its own: its namespace goes, or stays, by its
/// organization's `deletionPolicy` as the API server has it at this moment (read live, not
/// from the cache: a policy changed right before the DELETE is honoured).
async fn cleanup(ws: &Workspace, ctx: &Context) -> Result<Action> {
    let org_ns = ws.namespace().unwrap_or_default();
    let org_name = ctx
        .stores
        .organization_of_namespace(&org_ns)
        .map(|o| o.name_any())
        .or_else(|| {
            org_ns
                .strip_prefix(names::ORG_NAMESPACE_PREFIX)
                .map(str::to_string)
        });
    let live = match &org_name {
        Some(name) => Api::<Organization>::all(ctx.client.clone())
            .get_opt(name)
            .await
            .context(|| format!("reading Organization {name}"))?,
        None => None,
    };
    // No organization: its own cleanup settled every namespace it had (an orphaned one is
    // no longer this Workspace's); what is left follows the policy recorded by an earlier
    // Tenantry, else the cascade.
    let policy = live.map(|org| org.spec.deletion_policy());
    settle_namespace(ws, policy, ctx).await?;
    Ok(Action::await_change())
}

/// Applies a deletion decision to the namespace of `ws`, if it still owns one: delete it
/// with everything in it, or (Orphan) keep it with its safety (Pod Security labels,
/// NetworkPolicy, quota, limits) and remove Tenantry's grants and identity. `None` falls
/// back to the policy an earlier Tenantry recorded on the namespace, else Delete.
pub(super) async fn settle_namespace(
    ws: &Workspace,
    policy: Option<DeletionPolicy>,
    ctx: &Context,
) -> Result<()> {
    let uid = ws.uid().unwrap_or_default();
    let owned = ctx
        .stores
        .namespaces
        .find(|ns| ns.annotations().get(labels::OWNER_UID) == Some(&uid));
    let owned = match owned {
        Some(ns) => Some(ns.as_ref().clone()),
        None => match ws.status.as_ref().and_then(|s| s.namespace.clone()) {
            // The cache may lag: ask the API server before declaring it gone.
            Some(name) => Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&name)
                .await
                .context(|| format!("reading namespace {name}"))?
                .filter(|ns| ns.annotations().get(labels::OWNER_UID) == Some(&uid)),
            None => None,
        },
    };
    let Some(ns) = owned else {
        return Ok(());
    };
    let name = ns.name_any();
    let policy = policy.unwrap_or_else(|| {
        match ns
            .annotations()
            .get(LEGACY_DELETION_POLICY)
            .map(String::as_str)
        {
            Some("Orphan") => DeletionPolicy::Orphan,
            _ => DeletionPolicy::Delete,
        }
    });
    match policy {
        DeletionPolicy::Orphan => {
            let s = &ctx.stores;
            for role in WorkspaceRole::ALL {
                provision::delete_cached(
                    &ctx.client,
                    &s.role_bindings,
                    &name,
                    &rbac::workspace_cluster_role(role),
                )
                .await?;
            }
            provision::release::<ResourceQuota>(&ctx.client, &name, QUOTA).await?;
            provision::release::<LimitRange>(&ctx.client, &name, LIMITS).await?;
            provision::release::<NetworkPolicy>(&ctx.client, &name, ISOLATION).await?;
            let safety = ns
                .labels()
                .iter()
                .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            provision::release_namespace(&ctx.client, &name, safety).await?;
            info!(namespace = %name, "orphaned the workspace namespace");
        }
        DeletionPolicy::Delete if ns.meta().deletion_timestamp.is_none() => {
            Api::<Namespace>::all(ctx.client.clone())
                .delete(&name, &Default::default())
                .await
                .map(|_| ())
                .or_else(|e| match e {
                    kube::Error::Api(s) if s.code == 404 => Ok(()),
                    e => Err(e),
                })
                .context(|| format!("deleting namespace {name}"))?;
            info!(namespace = %name, "deleted the workspace namespace");
        }
        DeletionPolicy::Delete => {}
    }
    Ok(())
}
