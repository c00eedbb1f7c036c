//! What happens to an Organization: its namespace `org-<name>`, its default workspace,
//! the bindings of its organization roles, its per-organization ClusterRoles, its status.
//!
//! Deletion: a finalizer, because what deleting an organization does to its workspace
//! namespaces (delete them with their data, or keep them: `deletionPolicy`) is decided
//! from the Organization as it was when its deletion began; its spec cannot change after
//! that (an admission rule). Workspace namespaces carry no owner reference, so the
//! garbage collector never removes data before that decision. Once the workspace
//! namespaces are settled, the finalizer goes; the organization namespace and the
//! per-organization ClusterRoles carry an owner reference and go with the Organization,
//! and the Workspaces and Memberships go with the organization namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ResourceQuota, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::{Context, Feeds, feed, log_result, requeue_on_error};
use crate::api::{Organization, OrganizationStatus, Workspace, WorkspaceSpec, reason};
use crate::build::organization as build;
use crate::error::{Context as _, Error, Result};
use crate::grants;
use crate::labels::Component;
use crate::provision::{self, ChangedBy, NamespaceClaim};
use crate::status::{self, Outcome};
use crate::{labels, names, rbac};

/// Runs the Organization reconciler until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    feeds: &Feeds,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let by_ns = ctx.stores.clone();
    let by_ns2 = ctx.stores.clone();
    feed::controller(ctx.stores.organizations.clone(), &feeds.organizations)
        .reconcile_on(feeds.namespaces.triggers(feed::any, feed::owners))
        .reconcile_on(feeds.cluster_roles.triggers(feed::any, feed::owners))
        .reconcile_on(
            feeds
                .cluster_role_bindings
                .triggers(feed::any, feed::owners),
        )
        // The organization's own bindings, in its namespace (not those of its workspaces).
        .reconcile_on(feeds.role_bindings.triggers(feed::any, |rb: &RoleBinding| {
            let org = rb.labels().get(labels::ORGANIZATION)?;
            (rb.namespace()? == names::org_namespace(org))
                .then(|| ObjectRef::<Organization>::new(org))
        }))
        // The Role that lets its Admins read client credentials (invitation Roles, in the
        // same namespace, are the Memberships').
        .reconcile_on(feeds.roles.triggers(feed::any, |r: &Role| {
            let org = r.labels().get(labels::ORGANIZATION)?;
            (r.name_any() == rbac::CLIENT_CREDENTIALS
                && r.namespace()? == names::org_namespace(org))
            .then(|| ObjectRef::<Organization>::new(org))
        }))
        // Its clients' credentials Secrets, made or deleted: the Admins' read access names
        // only those Tenantry made.
        .reconcile_on(feeds.secrets.triggers(
            |c: &super::Change<'_, PartialObjectMeta<Secret>>| {
                !matches!(c, super::Change::Applied { old: Some(_), .. })
            },
            |s: &PartialObjectMeta<Secret>| {
                let l = s.labels();
                let org = l.get(labels::ORGANIZATION)?;
                (l.get(labels::COMPONENT).map(String::as_str)
                    == Some(Component::ClientCredentials.as_str())
                    && s.namespace()? == names::org_namespace(org))
                .then(|| ObjectRef::<Organization>::new(org))
            },
        ))
        // Workspaces and Memberships it counts and binds: created, deleted, changed, not
        // their status details.
        .reconcile_on(
            feeds
                .workspaces
                .triggers(feed::meaningful, move |w: &Workspace| {
                    by_ns
                        .organization_of_namespace(&w.namespace().unwrap_or_default())
                        .and_then(|o| feed::itself(o.as_ref()))
                }),
        )
        .reconcile_on(feeds.memberships.triggers(
            feed::membership_grants(super::acceptance_required(ctx.stores.clone())),
            move |m: &crate::api::Membership| {
                by_ns2
                    .organization_of_namespace(&m.namespace().unwrap_or_default())
                    .and_then(|o| feed::itself(o.as_ref()))
            },
        ))
        // What its workspaces hold and use of their quotas: the organization's usage and
        // pooled quota (status writes of these details are paced).
        .reconcile_on(feeds.quotas.triggers(quota_changed, |q: &ResourceQuota| {
            let org = q.labels().get(labels::ORGANIZATION)?;
            Some(ObjectRef::<Organization>::new(org))
        }))
        .reconcile_on(super::resync(
            ctx.stores.organizations.clone(),
            ctx.settings.resync(),
        ))
        .gated(&ctx.gates.organizations, ctx.settings.concurrency)
        .with_config(ctx.settings.controller_config())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |_, e, _| requeue_on_error(e), ctx.clone())
        .for_each(|r| {
            log_result(&ctx, "Organization", r);
            futures::future::ready(())
        })
        .await;
}

/// A ResourceQuota's change that changes its organization's usage: what it holds or what
/// is used of it (or it came or went).
fn quota_changed(change: &super::Change<'_, ResourceQuota>) -> bool {
    match change {
        super::Change::Applied {
            old: Some(old),
            new,
        } => {
            // Absent and empty alike (the cache keeps amounts, not whether a map was there).
            let hard = |q: &ResourceQuota| {
                q.spec
                    .as_ref()
                    .and_then(|s| s.hard.clone())
                    .unwrap_or_default()
            };
            let used = |q: &ResourceQuota| {
                q.status
                    .as_ref()
                    .and_then(|s| s.used.clone())
                    .unwrap_or_default()
            };
            hard(old) != hard(new) || used(old) != used(new)
        }
        _ => true,
    }
}

#[instrument(skip_all, fields(organization = %org.name_any()))]
async fn reconcile(org: Arc<Organization>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = crate::metrics::timer("Organization");
    let api: Api<Organization> = Api::all(ctx.client.clone());
    finalizer(&api, labels::ORGANIZATION_FINALIZER, org, |event| async {
        match event {
            Finalizer::Apply(org) => apply(org, &ctx).await,
            Finalizer::Cleanup(org) => cleanup(&org, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The Organization is being deleted: settle every workspace namespace by the
/// `deletionPolicy` it had when its deletion began. The object here carries the
/// deletionTimestamp, so it is at least as new as the spec at that moment, and the spec
/// cannot change after it (admission policy `tenantry-organizations`).
async fn cleanup(org: &Organization, ctx: &Context) -> Result<Action> {
    let name = org.name_any();
    let policy = org.spec.deletion_policy();
    let org_ns = names::org_namespace(&name);
    // Every Workspace, from the API server: the cache may not have one created just now.
    let workspaces = match Api::<Workspace>::namespaced(ctx.client.clone(), &org_ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(e).context(|| format!("listing the Workspaces of {name}")),
    };
    for ws in &workspaces {
        super::workspace::settle_namespace(ws, Some(policy), ctx).await?;
    }
    crate::metrics::forget_organization(&name);
    info!(
        workspaces = workspaces.len(),
        policy = ?policy,
        "settled the workspace namespaces of a deleted organization"
    );
    Ok(Action::await_change())
}

async fn apply(org: Arc<Organization>, ctx: &Context) -> Result<Action> {
    let name = org.name_any();
    let uid = org
        .uid()
        .ok_or_else(|| Error::MissingKey(format!("Organization {name}")))?;
    let ns_name = names::org_namespace(&name);

    let over_limit = ctx.settings.max_organizations_per_owner.and_then(|limit| {
        let all = ctx.stores.organizations.state();
        let refs: Vec<&Organization> = all.iter().map(|o| o.as_ref()).collect();
        // Provisioned: its namespace exists and is its own (a fact of the cluster, not
        // of Tenantry's earlier status).
        let provisioned = |o: &Organization| {
            let ns = names::org_namespace(&o.name_any());
            ctx.stores
                .namespaces
                .get(None, &ns)
                .is_some_and(|n| n.annotations().get(labels::OWNER_UID) == o.uid().as_ref())
        };
        grants::owner_limit_reached(&org, &refs, limit, provisioned).map(|owner| (owner, limit))
    });
    let outcome = if let Some((owner, limit)) = over_limit {
        Outcome::stalled(
            reason::OWNER_LIMIT_REACHED,
            format!(
                "{owner} already owns {limit} organizations, the most one owner may have; this one is not provisioned"
            ),
        )
    } else {
        let Some(outcome) = provision_org(&org, &ns_name, &uid, ctx).await? else {
            // The namespace was just created: its watch event brings the organization
            // back, and the status is written then, once.
            return Ok(ctx.look_again(org.as_ref(), super::NAMESPACE_CREATED_RETRY));
        };
        if outcome.is_ready() {
            let view = ctx.view_of(&ns_name, org.clone());
            let report = super::shared::mark_sources(ctx, &org, &view).await?;
            shared_outcome(&report).unwrap_or(outcome)
        } else {
            outcome
        }
    };

    let workspaces = ctx
        .stores
        .workspaces_in(&ns_name)
        .iter()
        .filter(|w| w.meta().deletion_timestamp.is_none())
        .count();
    let members = ctx.stores.memberships_in(&ns_name).len();
    let view = ctx.view_of(&ns_name, org.clone());
    let (quota, usage) = usage(ctx, &org, &view);
    let old = org.status.clone().unwrap_or_default();
    let new = OrganizationStatus {
        code: Some(names::org_code(&uid)),
        namespace: Some(ns_name.clone()),
        workspaces: workspaces as i32,
        members: members as i32,
        quota,
        usage: Some(usage),
        detail_digest: None,
        observed_generation: org.meta().generation,
        conditions: status::conditions(&old.conditions, &outcome, org.meta().generation),
    };
    // Back when a Membership expires: its organization role bindings end then.
    let now = k8s_openapi::jiff::Timestamp::now();
    if let Some(usage) = &new.usage {
        crate::metrics::organization(&name, &view, now, usage, new.quota.as_ref());
    }
    let at_expiry = view.until_next_expiry(now);
    let held = if same_status(&old, &new) {
        None
    } else {
        ctx.write_status(
            &Api::<Organization>::all(ctx.client.clone()),
            org.as_ref(),
            &old.conditions,
            &new.conditions,
            &new,
        )
        .await?
    };
    Ok(ctx
        .conclude(
            org.as_ref(),
            &old.conditions,
            &outcome,
            Duration::from_secs(2),
            super::soonest(held, at_expiry),
        )
        .await)
}

/// The client credentials Secrets Tenantry made in organization namespace `ns`, by name
/// (what `build::organization::children` reads).
pub(super) fn credentials(s: &super::Stores, ns: &str) -> std::collections::BTreeSet<String> {
    s.secrets
        .in_namespace(ns)
        .into_iter()
        .filter(|(_, secret)| {
            secret.label(labels::COMPONENT) == Some(Component::ClientCredentials.as_str())
        })
        .map(|(name, _)| name)
        .collect()
}

/// The organization namespace and everything in it: claimed (created, or found to be
/// this organization's), then built (`build::organization`) and applied.
async fn provision_org(
    org: &Arc<Organization>,
    ns_name: &str,
    uid: &str,
    ctx: &Context,
) -> Result<Option<Outcome>> {
    let view = ctx.view_of(ns_name, org.clone());
    let s = &ctx.stores;
    let built = build::children(org, &view, ns_name, uid, &credentials(s, ns_name));
    Ok(Some(
        match provision::claim_namespace(
            &ctx.client,
            &s.namespaces,
            &built.namespace,
            uid,
            Some(&org.name_any()),
        )
        .await?
        {
            NamespaceClaim::Foreign(why) => Outcome::stalled(reason::NAMESPACE_CONFLICT, why),
            NamespaceClaim::Terminating => Outcome::progressing(
                reason::NAMESPACE_TERMINATING,
                format!(
                    "namespace {ns_name} is terminating (it was deleted, or belonged to an earlier organization of this name); it is made again once it is gone"
                ),
            ),
            NamespaceClaim::Gone => {
                Outcome::progressing(reason::PROGRESSING, format!("creating namespace {ns_name}"))
            }
            claim @ (NamespaceClaim::Created | NamespaceClaim::Ours | NamespaceClaim::Declared) => {
                match claim {
                    NamespaceClaim::Created => {
                        // The rest once the API server has seen it (see
                        // super::NAMESPACE_CREATED_RETRY).
                        info!(namespace = %ns_name, "created the organization namespace");
                        return Ok(None);
                    }
                    _ => {
                        // A declared namespace becomes the organization's here: the build
                        // marks it with the organization's UID and owner reference.
                        provision::apply_cluster(
                            &ctx.client,
                            &s.namespaces,
                            &built.namespace,
                            ChangedBy::Apply,
                        )
                        .await?;
                        if matches!(claim, NamespaceClaim::Declared) {
                            info!(namespace = %ns_name, "adopted the organization namespace a platform admin declared");
                        }
                    }
                }
                ensure_default_workspace(org, ns_name, ctx).await?;
                apply_children(org, ns_name, &built, ctx).await?;
                Outcome::ready(reason::PROVISIONED, format!("namespace {ns_name} is ready"))
            }
        },
    ))
}

/// Applies what the build made in the organization namespace (the one applier, by
/// component: what carries it and was not built goes) and on the cluster.
async fn apply_children(
    org: &Organization,
    ns: &str,
    built: &build::Children,
    ctx: &Context,
) -> Result<()> {
    let s = &ctx.stores;
    let org_name = org.name_any();
    // One applier per kind and component: what carries the organization's labels and
    // this component, in its namespace, and was not built goes.
    let bindings = provision::org_labels(&org_name, Component::OrganizationBinding);
    let credentials = provision::org_labels(&org_name, Component::ClientCredentialsAccess);
    // What follows the members (bindings, the credentials Role's names) is made before
    // they have all arrived and changes as they do: created by POST, each change is one
    // PUT (provision::ChangedBy).
    macro_rules! converge {
        ($cache:ident, $labels:expr, $built:expr) => {
            provision::converge_by(
                &ctx.client,
                &s.$cache,
                (ns, &$labels),
                $built,
                ChangedBy::Replace,
            )
        };
    }
    // The roles first, then what binds them, each step at once: a binding never names a
    // role that is not there yet.
    let (roles, _) = futures::try_join!(
        converge!(roles, credentials, &built.credentials_roles),
        futures::future::try_join_all(built.cluster_roles.iter().map(|role| {
            provision::apply_cluster(&ctx.client, &s.cluster_roles, role, ChangedBy::Apply)
        })),
    )?;
    let (org_bindings, credentials_bindings, _) = futures::try_join!(
        converge!(role_bindings, bindings, &built.role_bindings),
        converge!(role_bindings, credentials, &built.credentials_bindings),
        futures::future::try_join_all(built.cluster_role_bindings.iter().map(|binding| {
            provision::apply_cluster(
                &ctx.client,
                &s.cluster_role_bindings,
                binding,
                ChangedBy::Replace,
            )
        })),
    )?;
    // Built from validated names only: a refusal here is a bug, not a tenant's input.
    if let Some(why) = [org_bindings, roles, credentials_bindings]
        .iter()
        .flatten()
        .next()
    {
        return Err(Error::Refused(format!(
            "the API server refused a binding of organization {org_name}: {why}"
        )));
    }
    Ok(())
}

/// What is wrong with the shared resources, once the organization is provisioned: a
/// source that cannot be shared is a bad spec (stalled); one that is not there yet is
/// waited for (it may be applied with the organization).
fn shared_outcome(report: &super::shared::SourceReport) -> Option<Outcome> {
    if !report.invalid.is_empty() {
        let all: Vec<&str> = report
            .invalid
            .iter()
            .chain(&report.missing)
            .map(String::as_str)
            .collect();
        return Some(Outcome::stalled(
            reason::INVALID_SHARED_RESOURCE,
            format!("spec.sharedResources: {}", all.join("; ")),
        ));
    }
    (!report.missing.is_empty()).then(|| {
        Outcome::progressing(
            reason::SHARED_RESOURCE_MISSING,
            format!(
                "spec.sharedResources: {}; copied once it exists",
                report.missing.join("; ")
            ),
        )
    })
}

/// What the organization uses, and its pooled quota's state: from the view (what each
/// provisionable workspace is allocated, `build::workspace::quota_in_force`) and what the
/// ResourceQuotas of its provisioned workspaces report used, as the cache holds them (each
/// found by the workspace's namespace name and checked to carry that workspace's labels).
fn usage(
    ctx: &Context,
    org: &Organization,
    view: &crate::view::OrgView,
) -> (Option<crate::api::QuotaStatus>, crate::api::Usage) {
    let org_name = org.name_any();
    let operator_quota = ctx.settings.workspace_defaults().quota;
    let quotas: Vec<(Option<crate::pool::Resources>, Option<ResourceQuota>)> = view
        .workspaces
        .iter()
        .filter(|w| view.provisionable.contains(&w.name_any()))
        .map(|w| {
            let ws = w.name_any();
            let allocated = crate::build::workspace::quota_in_force(
                org,
                w,
                operator_quota.as_ref(),
                view.share(&ws),
            )
            .0;
            let live = w
                .uid()
                .and_then(|uid| super::workspace::namespace_name(ctx, &org_name, &ws, &uid).ok())
                .and_then(|ns| {
                    ctx.stores
                        .quotas
                        .get(Some(&ns), crate::build::workspace::QUOTA)
                })
                .filter(|q| {
                    q.label(labels::ORGANIZATION) == Some(org_name.as_str())
                        && q.label(labels::WORKSPACE) == Some(ws.as_str())
                })
                .and_then(|q| q.kept());
            (allocated, live)
        })
        .collect();
    let states: Vec<build::QuotaState<'_>> = quotas
        .iter()
        .map(|(allocated, live)| {
            (
                allocated.as_ref(),
                live.as_ref()
                    .and_then(|q| q.status.as_ref())
                    .and_then(|s| s.used.as_ref()),
            )
        })
        .collect();
    build::usage(view, &states)
}

fn same_status(a: &OrganizationStatus, b: &OrganizationStatus) -> bool {
    a.code == b.code
        && a.namespace == b.namespace
        && a.workspaces == b.workspaces
        && a.members == b.members
        && a.same_detail(&b.quota, &b.usage)
        && a.observed_generation == b.observed_generation
        && status::same_conditions(&a.conditions, &b.conditions)
}

/// Creates the default workspace when it is on and missing.
async fn ensure_default_workspace(org: &Organization, ns: &str, ctx: &Context) -> Result<()> {
    let dw = org.spec.default_workspace();
    if !dw.enabled {
        return Ok(());
    }
    if ctx
        .stores
        .workspaces
        .get(&ObjectRef::new(&dw.name).within(ns))
        .is_some()
    {
        return Ok(());
    }
    let mut ws = Workspace::new(
        &dw.name,
        WorkspaceSpec {
            display_name: Some("Default".into()),
            ..Default::default()
        },
    );
    ws.metadata.namespace = Some(ns.to_string());
    ws.metadata.labels = Some(provision::org_labels(
        &org.name_any(),
        Component::DefaultWorkspace,
    ));
    if provision::create(&Api::<Workspace>::namespaced(ctx.client.clone(), ns), &ws).await? {
        info!(workspace = %dw.name, "created the default workspace");
    }
    Ok(())
}
