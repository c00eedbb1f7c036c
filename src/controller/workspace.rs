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
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::{Change, Context, Feeds, feed, log_result, requeue_on_error, workspaces_of};
use crate::api::{DeletionPolicy, Membership, Organization, Workspace, WorkspaceStatus, reason};
use crate::error::{Context as _, Error, Result};
use crate::provision::{self, ChangedBy, NamespaceClaim};
use crate::slim::Slim;
use crate::status::{self, Outcome};
use crate::{labels, names};

use crate::build::workspace::{self as build, ISOLATION, LIMITS, QUOTA};
/// Annotation an earlier Tenantry put on workspace namespaces: the deletion policy in
/// force when it was last provisioned. Read only for namespaces it left behind; the
/// decision is now made from the Organization when deletion begins.
const LEGACY_DELETION_POLICY: &str = "tenantry.dev/deletion-policy";

/// Whether a workspace's change can change what another gets: deleted or being deleted
/// (a place under `maxWorkspaces`, a share of the pooled quota freed), or its spec changed
/// (the quota it asks of the pool).
fn concerns_others(change: &Change<'_, Workspace>) -> bool {
    match change {
        Change::Listed(_) | Change::Deleted(_) => true,
        Change::Applied { old, new } => {
            let going = new.meta().deletion_timestamp.is_some()
                && old.is_none_or(|o| o.meta().deletion_timestamp.is_none());
            let respecified = old.is_some_and(|o| o.meta().generation != new.meta().generation);
            going || respecified
        }
    }
}

/// The workspaces a source of shared resources may be copied into: every workspace for
/// the platform's (in the operator's namespace), its organization's for the others.
fn sourced(
    (stores, operator_ns): &(super::Stores, String),
    meta: &kube::api::ObjectMeta,
) -> Vec<ObjectRef<Workspace>> {
    let Some(by) = meta.labels.as_ref().and_then(|l| l.get(labels::SHARED_BY)) else {
        return Vec::new();
    };
    if meta.namespace.as_ref() == Some(operator_ns) {
        stores
            .workspaces
            .state()
            .iter()
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect()
    } else {
        workspaces_of(stores, &names::org_namespace(by))
    }
}

/// Runs the Workspace reconciler until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    feeds: &Feeds,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (s1, s2, s3) = (ctx.stores.clone(), ctx.stores.clone(), ctx.stores.clone());
    let operator_ns = ctx.settings.operator_namespace.clone();
    let s4 = (ctx.stores.clone(), operator_ns.clone());
    let s5 = (ctx.stores.clone(), operator_ns);
    let by_labels = |l: &BTreeMap<String, String>| {
        let org = l.get(labels::ORGANIZATION)?;
        let ws = l.get(labels::WORKSPACE)?;
        Some(ObjectRef::<Workspace>::new(ws).within(&names::org_namespace(org)))
    };
    feed::controller(ctx.stores.workspaces.clone(), &feeds.workspaces)
        // What it provisions, by the workspace labels on each: any edit or deletion is
        // repaired.
        .reconcile_on(
            feeds
                .namespaces
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        .reconcile_on(
            feeds
                .role_bindings
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        .reconcile_on(
            feeds
                .quotas
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        .reconcile_on(
            feeds
                .limit_ranges
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        .reconcile_on(
            feeds
                .network_policies
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        // Copies of shared resources (edited or deleted: made again), and their sources
        // (changed: copied again).
        .reconcile_on(
            feeds
                .config_maps
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        .reconcile_on(
            feeds
                .secrets
                .triggers(feed::any, move |o| by_labels(o.labels())),
        )
        .reconcile_on(
            feeds
                .shared_config_maps
                .triggers(feed::any, move |o| sourced(&s4, &o.metadata)),
        )
        .reconcile_on(
            feeds
                .shared_secrets
                .triggers(feed::any, move |o| sourced(&s5, &o.metadata)),
        )
        // Who is granted what, and the organization's policy.
        .reconcile_on(feeds.memberships.triggers(
            feed::membership_grants(super::acceptance_required(ctx.stores.clone())),
            move |m: &Membership| workspaces_of(&s1, &m.namespace().unwrap_or_default()),
        ))
        .reconcile_on(
            feeds
                .organizations
                .triggers(feed::meaningful, move |o: &Organization| {
                    workspaces_of(&s2, &names::org_namespace(&o.name_any()))
                }),
        )
        // A workspace that goes away frees a place under limits.maxWorkspaces; one that goes
        // or asks another quota changes the others' shares of a pooled quota.
        .reconcile_on(
            feeds
                .workspaces
                .triggers(concerns_others, move |w: &Workspace| {
                    let ns = w.namespace().unwrap_or_default();
                    let limited = s3.organization_of_namespace(&ns).is_some_and(|o| {
                        o.spec.max_workspaces().is_some() || o.spec.pool().is_some()
                    });
                    if limited {
                        workspaces_of(&s3, &ns)
                    } else {
                        Vec::new()
                    }
                }),
        )
        .reconcile_on(super::resync(
            ctx.stores.workspaces.clone(),
            ctx.settings.resync(),
        ))
        .gated(&ctx.gates.workspaces, ctx.settings.concurrency)
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

async fn provision_workspace(ws: &Workspace, ctx: &Context) -> Result<Action> {
    let org_ns = ws.namespace().unwrap_or_default();
    let uid = ws
        .uid()
        .ok_or_else(|| Error::MissingKey(format!("Workspace {}", ws.name_any())))?;
    let view = ctx.view(&org_ns);
    let org = view.as_ref().map(|v| &v.org);
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
            let view = view
                .as_ref()
                .ok_or_else(|| Error::MissingKey(org_ns.clone()))?;
            if !view.provisionable.contains(&ws.name_any()) {
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
                        let refs = view.membership_refs();
                        let operator_defaults = ctx.settings.workspace_defaults();
                        let built = build::children(
                            &build::Input::new(
                                org,
                                ws,
                                (&name, &uid),
                                (&refs, &view.states),
                                (&operator_defaults, &ctx.settings),
                            )
                            .with_share(view.share(&ws.name_any())),
                        );
                        let Some((outcome, bound)) = provision(org, ws, &built, &uid, ctx).await?
                        else {
                            // The namespace was just created: its watch event brings the
                            // workspace back (the retry is only a safety net), and the
                            // status is written then, once.
                            return Ok(ctx.look_again(ws, super::NAMESPACE_CREATED_RETRY));
                        };
                        if bound {
                            members = built.members;
                        }
                        if outcome.is_ready() {
                            namespace = Some(name.clone());
                            let not_copied =
                                super::shared::converge(ctx, org, view, ws, &name).await?;
                            held_at_ceiling(org, &name, &built.capped)
                                .or_else(|| not_shared(&name, &not_copied))
                                .unwrap_or(outcome)
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
        members_digest: None,
        observed_generation: ws.meta().generation,
        conditions: status::conditions(&old.conditions, &outcome, ws.meta().generation),
    };
    let held = if old.namespace != new.namespace
        || !old.same_members(&new.members)
        || old.observed_generation != new.observed_generation
        || !status::same_conditions(&old.conditions, &new.conditions)
    {
        let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &org_ns);
        ctx.write_status(&api, ws, &old.conditions, &new.conditions, &new)
            .await?
    } else {
        None
    };
    // Back when a Membership of the organization expires: its bindings here end then.
    let at_expiry = view
        .as_ref()
        .and_then(|v| v.until_next_expiry(k8s_openapi::jiff::Timestamp::now()));
    Ok(ctx
        .conclude(
            ws,
            &old.conditions,
            &outcome,
            Duration::from_secs(5),
            super::soonest(held, at_expiry),
        )
        .await)
}

/// The workspace's namespace: from the operator's template, or, for a workspace
/// provisioned before the template joined organization and workspace with `--`, the
/// namespace it already owns under the old template (found by its owner UID, a fact of the
/// namespace itself): an upgrade moves nobody's data.
pub(super) fn namespace_name(
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
            .get(None, n)
            .is_some_and(|ns| ns.annotation(labels::OWNER_UID) == Some(uid))
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

/// What the spec asked beyond the platform's ceilings, said once the workspace is
/// provisioned at the ceiling (the first reason; every message).
fn held_at_ceiling(org: &Organization, ns: &str, capped: &[build::Capped]) -> Option<Outcome> {
    let org = org.name_any();
    let said: Vec<(&'static str, String)> = capped
        .iter()
        .map(|c| match c {
            build::Capped::PodSecurity { asked, ceiling } => (
                reason::POD_SECURITY_NOT_ALLOWED,
                format!(
                    "podSecurity {} is above what organization {org} may use ({}, set by platform admins in spec.limits.podSecurity or --pod-security-ceiling): namespace {ns} enforces {}",
                    asked.as_str(),
                    ceiling.as_str(),
                    ceiling.as_str()
                ),
            ),
            build::Capped::Pool(short) => (
                reason::QUOTA_POOL_EXHAUSTED,
                format!(
                    "the quota does not fit in what is left of organization {org}'s pooled quota (spec.quota; older workspaces come first): {}; namespace {ns} holds none of the pooled resources until it fits (a smaller quota, or more in the pool)",
                    short.join(", ")
                ),
            ),
            build::Capped::Quota(above) => (
                reason::QUOTA_NOT_ALLOWED,
                format!(
                    "quota above what organization {org} may give one workspace (spec.limits.workspaceQuota, set by platform admins): {}; namespace {ns} enforces the ceiling",
                    above.join(", ")
                ),
            ),
        })
        .collect();
    let (reason, _) = said.first()?;
    let message: Vec<&str> = said.iter().map(|(_, m)| m.as_str()).collect();
    Some(Outcome::stalled(reason, message.join("; ")))
}

/// Shared resources that could not be copied into namespace `ns`, said once it is
/// provisioned.
fn not_shared(ns: &str, not_copied: &[String]) -> Option<Outcome> {
    (!not_copied.is_empty()).then(|| {
        Outcome::stalled(
            reason::SHARED_RESOURCE_CONFLICT,
            format!(
                "namespace {ns} is provisioned; not copied: {}",
                not_copied.join("; ")
            ),
        )
    })
}

/// Claims the namespace and applies what the build made in it; what is labelled as this
/// workspace's and was not built is deleted. Returns the outcome and whether the
/// bindings were applied; `None` when it has just created the namespace.
///
/// A namespace just created is all of that pass ([`super::NAMESPACE_CREATED_RETRY`]).
async fn provision(
    org: &Organization,
    ws: &Workspace,
    built: &build::Children,
    uid: &str,
    ctx: &Context,
) -> Result<Option<(Outcome, bool)>> {
    let name = built.namespace.name_any();
    let s = &ctx.stores;
    match provision::claim_namespace(&ctx.client, &s.namespaces, &built.namespace, uid, None)
        .await?
    {
        NamespaceClaim::Foreign(why) => {
            return Ok(Some((
                Outcome::stalled(
                    reason::NAMESPACE_CONFLICT,
                    format!("{why}: it is left untouched"),
                ),
                false,
            )));
        }
        NamespaceClaim::Terminating => {
            return Ok(Some((
                Outcome::progressing(
                    reason::NAMESPACE_TERMINATING,
                    format!(
                        "namespace {name} is terminating (it was deleted, or belonged to an earlier workspace of this name); it is made again once it is gone"
                    ),
                ),
                false,
            )));
        }
        NamespaceClaim::Gone => {
            return Ok(Some((
                Outcome::progressing(reason::PROGRESSING, format!("creating namespace {name}")),
                false,
            )));
        }
        NamespaceClaim::Created => {
            info!(namespace = %name, "created the workspace namespace");
            return Ok(None);
        }
        NamespaceClaim::Ours => {
            provision::apply_cluster(
                &ctx.client,
                &s.namespaces,
                &built.namespace,
                ChangedBy::Apply,
            )
            .await?;
        }
        // Only organizations adopt a declared namespace (none is offered here).
        NamespaceClaim::Declared => {
            return Ok(Some((
                Outcome::stalled(
                    reason::NAMESPACE_CONFLICT,
                    format!(
                        "namespace {name} exists and was not created by Tenantry for this workspace: it is left untouched"
                    ),
                ),
                false,
            )));
        }
    }

    // A quota or LimitRange the API server refuses (a resource name a quota cannot have, a
    // default above its max) is a bad spec, not an error to retry: it is reported, the
    // previous object (if any) stays, and the rest is provisioned, bindings included.
    let owner = provision::workspace_owner(&org.name_any(), &ws.name_any());
    // One applier per kind: what was built, and the cache's objects of that kind in the
    // namespace (the ones labelled as this workspace's and not built are deleted). The
    // guards (quota, limits, isolation) at once, then the grants: no member reaches the
    // namespace before its quota and isolation are in place.
    macro_rules! converge {
        ($cache:ident, $built:expr) => {
            provision::converge(&ctx.client, &s.$cache, &name, &owner, $built)
        };
    }
    let (quota, limits, isolation) = futures::try_join!(
        converge!(quotas, built.quota.as_slice()),
        converge!(limit_ranges, built.limits.as_slice()),
        converge!(network_policies, built.isolation.as_slice()),
    )?;
    let mut refusals = quota;
    refusals.extend(limits);
    refusals.extend(isolation);
    // The bindings follow the members: each change one PUT (provision::ChangedBy).
    refusals.extend(
        provision::converge_by(
            &ctx.client,
            &s.role_bindings,
            (&name, &owner),
            &built.bindings,
            ChangedBy::Replace,
        )
        .await?,
    );
    let outcome = if refusals.is_empty() {
        Outcome::ready(
            reason::PROVISIONED,
            format!(
                "namespace {name} is provisioned; {} members have access",
                built.members.len()
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
    Ok(Some((outcome, true)))
}

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
        .find(|ns| ns.annotation(labels::OWNER_UID) == Some(uid.as_str()))
        .map(|(_, name, ns)| (name, ns));
    let owned = match owned {
        Some(ns) => Some(ns),
        None => match ws.status.as_ref().and_then(|s| s.namespace.clone()) {
            // The cache may lag: ask the API server before declaring it gone.
            Some(name) => Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&name)
                .await
                .context(|| format!("reading namespace {name}"))?
                .filter(|ns| ns.annotations().get(labels::OWNER_UID) == Some(&uid))
                .map(|ns| (ns.name_any(), Arc::new(Slim::of(&ns)))),
            None => None,
        },
    };
    let Some((name, ns)) = owned else {
        return Ok(());
    };
    let policy = policy.unwrap_or_else(|| match ns.annotation(LEGACY_DELETION_POLICY) {
        Some("Orphan") => DeletionPolicy::Orphan,
        _ => DeletionPolicy::Delete,
    });
    match policy {
        DeletionPolicy::Orphan => {
            // Tenantry's grants go: every workspace binding in the namespace (converged
            // to none), whatever roles an earlier Tenantry bound.
            let s = &ctx.stores;
            let grants: std::collections::BTreeMap<String, String> = [
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                (
                    labels::COMPONENT,
                    labels::Component::WorkspaceBinding.as_str(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let none: &[k8s_openapi::api::rbac::v1::RoleBinding] = &[];
            provision::converge(&ctx.client, &s.role_bindings, &name, &grants, none).await?;
            super::shared::remove_all(ctx, &name).await?;
            provision::release::<ResourceQuota>(&ctx.client, &name, QUOTA).await?;
            provision::release::<LimitRange>(&ctx.client, &name, LIMITS).await?;
            provision::release::<NetworkPolicy>(&ctx.client, &name, ISOLATION).await?;
            provision::release_namespace(&ctx.client, &name).await?;
            info!(namespace = %name, "orphaned the workspace namespace");
        }
        DeletionPolicy::Delete if !ns.deleting() => {
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
