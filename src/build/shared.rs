//! Shared resources: which ConfigMaps and Secrets a workspace receives copies of, and
//! the copies. Pure; the Workspace reconciler reads the sources and applies the copies.
//!
//! Sources: the platform's (in the operator's namespace, labelled
//! `tenantry.dev/shared-by: platform`, optionally for the workspaces
//! `tenantry.dev/workspace-selector` selects) and the organization's
//! (`spec.sharedResources`: an object in one of its workspaces, for the workspaces its
//! selector selects). A workspace never receives a copy of a source in its own
//! namespace, nor two objects of one kind and name: the platform's come first, then the
//! organization's in the order listed; a later one of the same kind and name is said,
//! not copied.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use kube::core::{Selector, SelectorExt};
use kube::{Resource, ResourceExt};

use crate::api::{Organization, SharedKind, Workspace};
use crate::labels::{self, Component};
use crate::provision;

/// One source a workspace receives a copy of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    pub kind: SharedKind,
    /// The source's namespace and name (the copy has the same name).
    pub namespace: String,
    pub name: String,
}

/// A source of the platform, as its cached metadata says.
#[derive(Debug, Clone)]
pub struct PlatformSource {
    pub kind: SharedKind,
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

/// Why a shared resource is not copied where it was meant to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `spec.sharedResources` names a workspace that does not exist (yet), or whose
    /// namespace Tenantry has not made (yet).
    NoSuchWorkspace { name: String, workspace: String },
    /// A personal workspace is nobody's but its member's to share.
    PersonalWorkspace { name: String, workspace: String },
    /// A selector that cannot be read.
    BadSelector { name: String, why: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchWorkspace { name, workspace } => write!(
                f,
                "{name}: workspace {workspace} is not in the organization or its namespace is not provisioned"
            ),
            Self::PersonalWorkspace { name, workspace } => write!(
                f,
                "{name}: {workspace} is a personal workspace, which only its member may share from"
            ),
            Self::BadSelector { name, why } => write!(f, "{name}: workspaceSelector: {why}"),
        }
    }
}

/// The selector of a platform source: `k=v,k2=v2` (absent: everything).
pub fn platform_selector(annotations: &BTreeMap<String, String>) -> Result<Selector, String> {
    let Some(text) = annotations.get(labels::WORKSPACE_SELECTOR) else {
        return Ok(Selector::default());
    };
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!(
                "{} {:?}: expected key=value pairs separated by commas",
                labels::WORKSPACE_SELECTOR,
                crate::names::printable(text, 64)
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|pairs| pairs.into_iter().collect())
}

/// The organization's sources, each with the namespace it is in (`namespace_of`: the
/// namespace of one of the organization's workspaces, `None` when there is no such
/// workspace), and what is wrong with the others.
pub fn organization_sources(
    org: &Organization,
    workspaces: &[&Workspace],
    namespace_of: impl Fn(&Workspace) -> Option<String>,
) -> (Vec<(Wanted, Selector)>, Vec<Problem>) {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for r in &org.spec.shared_resources {
        let ws = workspaces
            .iter()
            .find(|w| w.name_any() == r.from_workspace && w.meta().deletion_timestamp.is_none());
        let Some(ws) = ws else {
            problems.push(Problem::NoSuchWorkspace {
                name: r.name.clone(),
                workspace: r.from_workspace.clone(),
            });
            continue;
        };
        if ws.labels().contains_key(labels::PERSONAL_FOR) {
            problems.push(Problem::PersonalWorkspace {
                name: r.name.clone(),
                workspace: r.from_workspace.clone(),
            });
            continue;
        }
        let selector = match r.workspace_selector.clone().map(Selector::try_from) {
            None => Selector::default(),
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                problems.push(Problem::BadSelector {
                    name: r.name.clone(),
                    why: e.to_string(),
                });
                continue;
            }
        };
        let Some(namespace) = namespace_of(ws) else {
            problems.push(Problem::NoSuchWorkspace {
                name: r.name.clone(),
                workspace: r.from_workspace.clone(),
            });
            continue;
        };
        sources.push((
            Wanted {
                kind: r.kind,
                namespace,
                name: r.name.clone(),
            },
            selector,
        ));
    }
    (sources, problems)
}

/// What workspace `ws` (namespace `namespace`) receives: the platform's sources its
/// labels match, then the organization's; none from its own namespace, one per kind and
/// name. Returns them and the ones left out for a name already taken, as messages.
pub fn wanted(
    ws: &Workspace,
    namespace: &str,
    platform: &[PlatformSource],
    organization: &[(Wanted, Selector)],
) -> (Vec<Wanted>, Vec<String>) {
    let ws_labels = ws.labels();
    let mut taken: BTreeMap<(SharedKind, String), String> = BTreeMap::new();
    let mut out = Vec::new();
    let mut clashes = Vec::new();
    let platform = platform.iter().filter_map(|p| {
        let selector = platform_selector(&p.annotations).ok()?;
        selector.matches(ws_labels).then(|| Wanted {
            kind: p.kind,
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        })
    });
    let organization = organization
        .iter()
        .filter(|(_, selector)| selector.matches(ws_labels))
        .map(|(w, _)| w.clone());
    for w in platform.chain(organization) {
        if w.namespace == namespace {
            continue;
        }
        let key = (w.kind, w.name.clone());
        if let Some(first) = taken.get(&key) {
            clashes.push(format!(
                "{:?} {} from {} (already copied from {first})",
                w.kind, w.name, w.namespace
            ));
            continue;
        }
        taken.insert(key, w.namespace.clone());
        out.push(w);
    }
    (out, clashes)
}

/// The metadata of a copy of `source` (`namespace/name`) in workspace namespace `ns`.
fn meta(org: &str, ws: &str, ns: &str, source: &ObjectMeta) -> ObjectMeta {
    let name = source.name.clone().unwrap_or_default();
    let from = format!("{}/{}", source.namespace.clone().unwrap_or_default(), name);
    ObjectMeta {
        name: Some(name),
        namespace: Some(ns.to_string()),
        labels: Some(provision::workspace_labels(org, ws, Component::SharedCopy)),
        annotations: Some([(labels::SOURCE.to_string(), from)].into()),
        ..Default::default()
    }
}

/// A copy of ConfigMap `source` for workspace `ws` of `org`, in namespace `ns`: its data
/// only (not its labels, annotations or immutability).
pub fn config_map(org: &str, ws: &str, ns: &str, source: &ConfigMap) -> ConfigMap {
    ConfigMap {
        metadata: meta(org, ws, ns, &source.metadata),
        data: source.data.clone(),
        binary_data: source.binary_data.clone(),
        immutable: None,
    }
}

/// The Secret types a copy may have: those that hold data and nothing Kubernetes acts
/// on (a ServiceAccount token Secret names a ServiceAccount of its own namespace).
const COPIED_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/tls",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
];

/// A copy of Secret `source`, like [`config_map`]; a type that is not copied is said.
pub fn secret(org: &str, ws: &str, ns: &str, source: &Secret) -> Result<Secret, String> {
    let type_ = source.type_.clone().unwrap_or_else(|| "Opaque".into());
    if !COPIED_TYPES.contains(&type_.as_str()) {
        return Err(format!(
            "Secret {} is of type {}, which is not copied (only {})",
            source.name_any(),
            crate::names::printable(&type_, 64),
            COPIED_TYPES.join(", ")
        ));
    }
    let data: Option<BTreeMap<String, ByteString>> = source.data.clone();
    Ok(Secret {
        metadata: meta(org, ws, ns, &source.metadata),
        type_: Some(type_),
        data,
        string_data: None,
        immutable: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<serde_json::Value> {
        serde_saphyr::from_multiple(yaml).expect("yaml")
    }

    #[test]
    fn a_workspace_gets_the_platforms_then_its_organizations_once_each() {
        let d = docs(
            r#"
apiVersion: tenantry.dev/v1alpha1
kind: Organization
metadata: {name: acme, uid: u-acme}
spec:
  owners: [{kind: User, name: alice}]
  sharedResources:
    - {kind: Secret, name: pull, fromWorkspace: shared}
    - {kind: ConfigMap, name: ca-bundle, fromWorkspace: shared}
    - {kind: ConfigMap, name: prod-settings, fromWorkspace: shared, workspaceSelector: {matchLabels: {env: prod}}}
    - {kind: ConfigMap, name: diary, fromWorkspace: personal-bob}
    - {kind: ConfigMap, name: later, fromWorkspace: not-yet}
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: shared, namespace: org-acme}
spec: {}
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: web, namespace: org-acme, labels: {env: prod}}
spec: {}
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: personal-bob, namespace: org-acme, labels: {tenantry.dev/personal-for: u-bob}}
spec: {}
"#,
        );
        let org: Organization = serde_json::from_value(d[0].clone()).unwrap();
        let ws: Vec<Workspace> = d[1..]
            .iter()
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .collect();
        let refs: Vec<&Workspace> = ws.iter().collect();
        let (sources, problems) =
            organization_sources(&org, &refs, |w| Some(format!("acme--{}", w.name_any())));
        assert_eq!(sources.len(), 3);
        assert_eq!(
            problems,
            vec![
                Problem::PersonalWorkspace {
                    name: "diary".into(),
                    workspace: "personal-bob".into()
                },
                Problem::NoSuchWorkspace {
                    name: "later".into(),
                    workspace: "not-yet".into()
                },
            ]
        );
        let platform = vec![PlatformSource {
            kind: SharedKind::ConfigMap,
            namespace: "tenantry-system".into(),
            name: "ca-bundle".into(),
            annotations: Default::default(),
        }];
        let names = |(w, _): (Vec<Wanted>, Vec<String>)| {
            w.into_iter()
                .map(|w| format!("{:?} {}/{}", w.kind, w.namespace, w.name))
                .collect::<Vec<_>>()
        };
        let (web, clashes) = wanted(&ws[1], "acme--web", &platform, &sources);
        assert_eq!(
            names((web, vec![])),
            vec![
                "ConfigMap tenantry-system/ca-bundle",
                "Secret acme--shared/pull",
                "ConfigMap acme--shared/prod-settings",
            ],
            "the platform's ca-bundle first; the organization's of that name is said"
        );
        assert_eq!(clashes.len(), 1, "{clashes:?}");
        // The source workspace gets no copy of its own; no env=prod, no prod settings.
        assert_eq!(
            names(wanted(&ws[0], "acme--shared", &platform, &sources)),
            vec!["ConfigMap tenantry-system/ca-bundle"]
        );
    }

    #[test]
    fn a_copy_holds_the_data_and_nothing_kubernetes_acts_on() {
        let source: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pull", "namespace": "acme--shared",
                "labels": {"app": "x"}, "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/dockerconfigjson",
            "immutable": true,
            "data": {".dockerconfigjson": "e30="},
        }))
        .unwrap();
        let copy = secret("acme", "web", "acme--web", &source).unwrap();
        assert_eq!(copy.metadata.namespace.as_deref(), Some("acme--web"));
        assert_eq!(copy.immutable, None);
        assert_eq!(copy.data, source.data);
        assert_eq!(
            copy.metadata.annotations.unwrap()[labels::SOURCE],
            "acme--shared/pull"
        );
        assert_eq!(
            copy.metadata.labels.unwrap()[labels::COMPONENT],
            "shared-copy"
        );
        let mut token = source.clone();
        token.type_ = Some("kubernetes.io/service-account-token".into());
        assert!(secret("acme", "web", "acme--web", &token).is_err());
        let bad = BTreeMap::from([(labels::WORKSPACE_SELECTOR.to_string(), "env".to_string())]);
        assert!(platform_selector(&bad).is_err());
        let good = BTreeMap::from([(
            labels::WORKSPACE_SELECTOR.to_string(),
            "env=prod, tier=web".to_string(),
        )]);
        let s = platform_selector(&good).unwrap();
        assert!(s.matches(&BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("tier".to_string(), "web".to_string())
        ])));
        assert!(!s.matches(&BTreeMap::from([("env".to_string(), "prod".to_string())])));
    }
}
