//! Shared resources in a workspace namespace: the copies `build::shared` says it
//! receives, each read from its source when it is made (a Secret's value is never
//! cached), written only when its build changed, never over an object that is not a
//! copy (a conflict, said), and deleted when no longer wanted.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::Context;
use crate::api::{Organization, SharedKind, Workspace};
use crate::build::shared::{self as build, PlatformSource, Wanted};
use crate::error::{Context as _, Result};
use crate::labels::{self, Component};
use crate::provision::{self, Object};
use crate::slim::{Children, Projected, Slim};
use crate::view::OrgView;

/// The platform's sources, from the cache: in the operator's namespace, shared by
/// `platform`.
pub(super) fn platform_sources(ctx: &Context) -> Vec<PlatformSource> {
    let ns = &ctx.settings.operator_namespace;
    let of = |kind: SharedKind, meta: &kube::api::ObjectMeta| {
        (meta.namespace.as_deref() == Some(ns)
            && meta.labels.as_ref().and_then(|l| l.get(labels::SHARED_BY))
                == Some(&labels::SHARED_BY_PLATFORM.to_string()))
        .then(|| PlatformSource {
            kind,
            namespace: ns.clone(),
            name: meta.name.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
        })
    };
    let s = &ctx.stores;
    let mut out: Vec<PlatformSource> = s
        .shared_config_maps
        .state()
        .iter()
        .filter_map(|o| of(SharedKind::ConfigMap, &o.metadata))
        .chain(
            s.shared_secrets
                .state()
                .iter()
                .filter_map(|o| of(SharedKind::Secret, &o.metadata)),
        )
        .collect();
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    out
}

/// The organization's sources (each in the namespace of the workspace it names) and
/// what is wrong with the others. A workspace's namespace counts only once Tenantry has
/// made it for that workspace (its owner UID, a fact of the namespace): a namespace of
/// that name that someone else made (the workspace then says `NamespaceConflict`) is not
/// the organization's to copy from.
pub(super) fn organization_sources(
    ctx: &Context,
    org: &Organization,
    view: &OrgView,
) -> (Vec<(Wanted, kube::core::Selector)>, Vec<build::Problem>) {
    let workspaces: Vec<&Workspace> = view.workspaces.iter().map(AsRef::as_ref).collect();
    let org_name = org.name_any();
    build::organization_sources(org, &workspaces, |w| {
        let uid = w.uid()?;
        let ns = super::workspace::namespace_name(ctx, &org_name, &w.name_any(), &uid).ok()?;
        ctx.stores
            .namespaces
            .get(None, &ns)
            .filter(|n| n.annotations().get(labels::OWNER_UID) == Some(&uid))
            .map(|_| ns)
    })
}

/// Makes namespace `ns` of workspace `ws` hold the copies it receives, and no other.
/// Returns what could not be copied, as messages (a workspace's own object in the way,
/// a source of a type that is not copied, two sources of one name).
pub(super) async fn converge(
    ctx: &Context,
    org: &Organization,
    view: &OrgView,
    ws: &Workspace,
    ns: &str,
) -> Result<Vec<String>> {
    let platform = platform_sources(ctx);
    let (org_sources, _) = organization_sources(ctx, org, view);
    let (wanted, mut said) = build::wanted(ws, ns, &platform, &org_sources);
    let (org_name, ws_name) = (org.name_any(), ws.name_any());
    let mut kept: BTreeSet<(SharedKind, String)> = BTreeSet::new();
    let s = &ctx.stores;
    for w in &wanted {
        // Missing: nothing to copy (the organization says so); a copy made before goes
        // with its source.
        let outcome = match w.kind {
            SharedKind::ConfigMap => match source::<ConfigMap>(ctx, w).await? {
                None => Put::Missing,
                Some(src) => {
                    let copy = build::config_map(&org_name, &ws_name, ns, &src);
                    put(ctx, &s.config_maps, copy).await?
                }
            },
            SharedKind::Secret => match source::<Secret>(ctx, w).await? {
                None => Put::Missing,
                Some(src) => match build::secret(&org_name, &ws_name, ns, &src) {
                    Ok(copy) => put(ctx, &s.secrets, copy).await?,
                    Err(why) => Put::Refused(why),
                },
            },
        };
        match outcome {
            Put::Done => {
                kept.insert((w.kind, w.name.clone()));
            }
            Put::Missing => {}
            Put::Conflict => said.push(format!(
                "{:?} {} exists in namespace {ns} and is not a copy Tenantry made: it is left untouched (rename or delete it to receive the shared one from {})",
                w.kind, w.name, w.namespace
            )),
            Put::Refused(why) => said.push(why),
        }
    }
    // What carries this workspace's copy labels and is no longer wanted goes.
    let mut owner = provision::workspace_owner(&org_name, &ws_name);
    owner.insert(
        labels::COMPONENT.into(),
        Component::SharedCopy.as_str().into(),
    );
    let owned =
        |copy: &dyn Copied| owner.iter().all(|(k, v)| copy.label(k) == Some(v)) && !copy.deleting();
    delete_copies(ctx, ns, |kind, name, copy| {
        owned(copy) && !kept.contains(&(kind, name.to_string()))
    })
    .await?;
    Ok(said)
}

/// What became of one copy.
enum Put {
    /// Made, updated, or already up to date.
    Done,
    /// No source to copy from.
    Missing,
    /// An object of that name is in the way.
    Conflict,
    /// Not copied, and why.
    Refused(String),
}

/// A copy as its cache keeps it ([`crate::slim::Slim`] of its metadata): Tenantry's
/// labels and annotations, and whether it is going.
trait Copied: Sync {
    fn label(&self, key: &str) -> Option<&str>;
    fn annotation(&self, key: &str) -> Option<&str>;
    fn deleting(&self) -> bool;
}

impl<K: Projected> Copied for Slim<K> {
    fn label(&self, key: &str) -> Option<&str> {
        Slim::label(self, key)
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        Slim::annotation(self, key)
    }
    fn deleting(&self) -> bool {
        Slim::deleting(self)
    }
}

/// Whether `live` is a copy Tenantry made for the workspace `desired` is for: its
/// identity labels, which only Tenantry and platform admins may set (policy
/// `tenantry-tracking-labels`).
fn is_copy(live: &dyn Copied, desired: &kube::api::ObjectMeta) -> bool {
    let want = desired.labels.clone().unwrap_or_default();
    [labels::ORGANIZATION, labels::WORKSPACE, labels::COMPONENT]
        .iter()
        .all(|k| {
            live.label(k)
                .is_some_and(|v| want.get(*k).map(String::as_str) == Some(v))
        })
}

/// Writes one copy: nothing when the cached copy carries this build's digest; one POST
/// when there is none; a server-side apply over a copy Tenantry made; nothing over
/// anyone else's object.
async fn put<K>(ctx: &Context, cache: &Children<PartialObjectMeta<K>>, desired: K) -> Result<Put>
where
    K: Object + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    PartialObjectMeta<K>: Projected,
{
    let desired = provision::stamped(&desired)?;
    let (ns, name) = (
        desired.meta().namespace.clone().unwrap_or_default(),
        desired.name_any(),
    );
    let api = Api::<K>::namespaced(ctx.client.clone(), &ns);
    let stamp = desired
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::APPLIED))
        .map(String::as_str);
    // Over a copy of Tenantry's: written when its digest differs.
    let over = async |live: &dyn Copied| -> Result<Put> {
        if !is_copy(live, desired.meta()) {
            return Ok(Put::Conflict);
        }
        if live.annotation(labels::APPLIED) != stamp {
            provision::apply_over(&api, &name, &desired).await?;
        }
        Ok(Put::Done)
    };
    if let Some(live) = cache.get(Some(&ns), &name) {
        return over(live.as_ref()).await;
    }
    if provision::create(&api, &desired).await? {
        return Ok(Put::Done);
    }
    // There is one: a copy the cache does not show yet, or someone else's.
    let live = api
        .get_metadata_opt(&name)
        .await
        .context(|| format!("reading {} {ns}/{name}", K::kind(&())))?;
    match live {
        Some(live) => over(&Slim::of(&live)).await,
        None => Ok(Put::Done),
    }
}

/// Deletes every copy in namespace `ns` (a workspace's namespace kept when it leaves
/// Tenantry: the organization's shared objects do not stay behind).
pub(super) async fn remove_all(ctx: &Context, ns: &str) -> Result<()> {
    delete_copies(ctx, ns, |_, _, copy| {
        copy.label(labels::COMPONENT) == Some(Component::SharedCopy.as_str())
    })
    .await
}

/// A source, read when it is copied (a Secret's value is never cached).
async fn source<K>(ctx: &Context, w: &Wanted) -> Result<Option<K>>
where
    K: Object + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::<K>::namespaced(ctx.client.clone(), &w.namespace)
        .get_opt(&w.name)
        .await
        .context(|| format!("reading {} {}/{}", K::kind(&()), w.namespace, w.name))
}

/// Deletes the ConfigMaps and Secrets in namespace `ns` that `gone` picks (by kind, name
/// and what the caches of what Tenantry made keep of them).
async fn delete_copies(
    ctx: &Context,
    ns: &str,
    gone: impl Fn(SharedKind, &str, &dyn Copied) -> bool,
) -> Result<()> {
    let s = &ctx.stores;
    for (name, cm) in s.config_maps.in_namespace(ns) {
        if gone(SharedKind::ConfigMap, &name, cm.as_ref()) {
            provision::delete_named::<ConfigMap>(&ctx.client, ns, &name).await?;
        }
    }
    for (name, secret) in s.secrets.in_namespace(ns) {
        if gone(SharedKind::Secret, &name, secret.as_ref()) {
            provision::delete_named::<Secret>(&ctx.client, ns, &name).await?;
        }
    }
    Ok(())
}

/// What is wrong with an organization's shared resources, for its status.
#[derive(Default)]
pub(super) struct SourceReport {
    /// Cannot be shared as written (a personal workspace, a bad selector).
    pub invalid: Vec<String>,
    /// Not there (yet): no such workspace, or no such object in it.
    pub missing: Vec<String>,
}

/// Marks the sources `org` declares (label [`labels::SHARED_BY`], so that the cache sees
/// a change to them at once) and unmarks those it no longer declares; says what is wrong
/// with the others.
pub(super) async fn mark_sources(
    ctx: &Context,
    org: &Organization,
    view: &OrgView,
) -> Result<SourceReport> {
    let org_name = org.name_any();
    let (sources, problems) = organization_sources(ctx, org, view);
    let mut report = SourceReport::default();
    for p in problems {
        match p {
            build::Problem::NoSuchWorkspace { .. } => report.missing.push(p.to_string()),
            _ => report.invalid.push(p.to_string()),
        }
    }
    let s = &ctx.stores;
    let marked = |kind: SharedKind, ns: &str, name: &str| -> Option<bool> {
        let labels = match kind {
            SharedKind::ConfigMap => s
                .shared_config_maps
                .get(&ObjectRef::new(name).within(ns))?
                .metadata
                .labels
                .clone(),
            SharedKind::Secret => s
                .shared_secrets
                .get(&ObjectRef::new(name).within(ns))?
                .metadata
                .labels
                .clone(),
        };
        Some(labels.unwrap_or_default().get(labels::SHARED_BY) == Some(&org_name))
    };
    let mut declared = BTreeSet::new();
    for (w, _) in &sources {
        declared.insert((w.kind, w.namespace.clone(), w.name.clone()));
        if marked(w.kind, &w.namespace, &w.name) == Some(true) {
            continue;
        }
        let found = match w.kind {
            SharedKind::ConfigMap => {
                mark::<ConfigMap>(ctx, &w.namespace, &w.name, Some(org_name.as_str())).await?
            }
            SharedKind::Secret => {
                mark::<Secret>(ctx, &w.namespace, &w.name, Some(org_name.as_str())).await?
            }
        };
        if !found {
            report.missing.push(format!(
                "{}: no {:?} {} in namespace {}",
                w.name, w.kind, w.name, w.namespace
            ));
        }
    }
    // No longer declared: unmarked (the operator's namespace holds the platform's).
    let ours = |meta: &kube::api::ObjectMeta| {
        meta.namespace.as_deref() != Some(ctx.settings.operator_namespace.as_str())
            && meta.labels.as_ref().and_then(|l| l.get(labels::SHARED_BY)) == Some(&org_name)
    };
    let stale = |kind: SharedKind, meta: &kube::api::ObjectMeta| {
        (ours(meta)
            && !declared.contains(&(
                kind,
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )))
        .then(|| {
            (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        })
    };
    let stale_cms: Vec<_> = s
        .shared_config_maps
        .state()
        .iter()
        .filter_map(|o| stale(SharedKind::ConfigMap, &o.metadata))
        .collect();
    let stale_secrets: Vec<_> = s
        .shared_secrets
        .state()
        .iter()
        .filter_map(|o| stale(SharedKind::Secret, &o.metadata))
        .collect();
    for (ns, name) in stale_cms {
        mark::<ConfigMap>(ctx, &ns, &name, None).await?;
    }
    for (ns, name) in stale_secrets {
        mark::<Secret>(ctx, &ns, &name, None).await?;
    }
    Ok(report)
}

/// Sets (`Some`) or removes (`None`) the [`labels::SHARED_BY`] label of `ns/name`, by its
/// metadata only (a Secret's value is neither sent nor received). `false`: no such
/// object.
async fn mark<K>(ctx: &Context, ns: &str, name: &str, by: Option<&str>) -> Result<bool>
where
    K: Object + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({"metadata": {"labels": {labels::SHARED_BY: by}}});
    crate::metrics::write("patch", K::kind(&()).as_ref());
    let pp = kube::api::PatchParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch_metadata(name, &pp, &kube::api::Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(crate::error::Error::Kube {
            action: format!("marking {} {ns}/{name} as shared", K::kind(&())),
            source,
        }),
    }
}
