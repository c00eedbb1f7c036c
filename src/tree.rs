//! `tenantry tree`: an organization's footprint as a tree, for people. Secrets are shown
//! by name only, never their values.

use std::fmt::Write;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::{Membership, Organization, Workspace};
use crate::names;

/// Text from the API (names, display names, messages) as it may be printed on a
/// terminal: control characters (escape sequences, newlines) shown escaped.
fn p(s: &str) -> String {
    names::printable(s, 512)
}

fn ready(conditions: &[Condition]) -> String {
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => format!("Ready ({})", p(&c.reason)),
        Some(c) => format!("NotReady ({}: {})", p(&c.reason), p(&c.message)),
        None => "Pending".into(),
    }
}

/// A RoleBinding's subjects, `Kind:name, ...`.
fn subjects(rb: &RoleBinding) -> String {
    rb.subjects
        .iter()
        .flatten()
        .map(|s| format!("{}:{}", p(&s.kind), p(&s.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders the tree of one organization.
pub async fn render(client: &Client, org: &str) -> anyhow::Result<String> {
    let o = Api::<Organization>::all(client.clone()).get(org).await?;
    let status = o.status.clone().unwrap_or_default();
    let org_ns = names::org_namespace(org);
    let mut out = String::new();
    writeln!(
        out,
        "Organization {org} \"{}\" code={} {}",
        p(&o.display_name()),
        status.code.as_deref().unwrap_or("-"),
        ready(&status.conditions)
    )?;
    writeln!(out, "├─ namespace {org_ns}")?;
    let rbs = Api::<RoleBinding>::namespaced(client.clone(), &org_ns)
        .list(&ListParams::default())
        .await?;
    for rb in rbs
        .items
        .iter()
        .filter(|rb| rb.name_any().starts_with("tenantry-org-"))
    {
        let who = subjects(rb);
        writeln!(out, "│  ├─ RoleBinding {} → {}", rb.name_any(), who)?;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), &org_ns)
        .list(&ListParams::default().labels("tenantry.dev/component=client-credentials"))
        .await?;
    for s in &secrets.items {
        writeln!(
            out,
            "│  ├─ Secret {} (client-id, client-secret: values not shown)",
            s.name_any()
        )?;
    }
    let mut wss = Api::<Workspace>::namespaced(client.clone(), &org_ns)
        .list(&ListParams::default())
        .await?
        .items;
    wss.sort_by_key(|w| w.name_any());
    writeln!(out, "├─ workspaces ({})", wss.len())?;
    for ws in &wss {
        let st = ws.status.clone().unwrap_or_default();
        let ns = st.namespace.clone().unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "│  ├─ {} → namespace {} {}",
            ws.name_any(),
            ns,
            ready(&st.conditions)
        )?;
        if let Some(nsobj) = Api::<Namespace>::all(client.clone())
            .get_opt(&ns)
            .await
            .ok()
            .flatten()
        {
            let level = nsobj
                .labels()
                .get("pod-security.kubernetes.io/enforce")
                .cloned()
                .unwrap_or_default();
            writeln!(out, "│  │  ├─ pod security: {level}")?;
            let rbs = Api::<RoleBinding>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels("tenantry.dev/component=workspace-binding"))
                .await?;
            for rb in &rbs.items {
                let who = subjects(rb);
                writeln!(out, "│  │  ├─ RoleBinding {} → {}", rb.name_any(), who)?;
            }
        }
    }
    let mut mbrs = Api::<Membership>::namespaced(client.clone(), &org_ns)
        .list(&ListParams::default())
        .await?
        .items;
    mbrs.sort_by_key(|m| m.name_any());
    writeln!(
        out,
        "└─ members ({} memberships + {} owners in spec)",
        mbrs.len(),
        o.spec.owners.len()
    )?;
    for owner in &o.spec.owners {
        writeln!(out, "   ├─ {} Owner (spec.owners)", p(&owner.to_string()))?;
    }
    for m in &mbrs {
        let st = m.status.clone().unwrap_or_default();
        let ws: Vec<String> = st
            .workspaces
            .iter()
            .map(|w| format!("{}:{:?}", p(&w.name), w.role))
            .collect();
        let client_id = st
            .client_id()
            .map(|id| format!(" client-id={}", p(id)))
            .unwrap_or_default();
        writeln!(
            out,
            "   ├─ {} {} {:?} [{}] {}{}",
            m.name_any(),
            p(&m.spec.subject.to_string()),
            m.spec.role,
            ws.join(" "),
            ready(&st.conditions),
            client_id
        )?;
    }
    Ok(out)
}
