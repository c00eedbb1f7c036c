//! What one caller sees: the organizations they belong to and the workspaces they reach,
//! each with their role. Pure: computed from the organization views ([`OrgView`]), the
//! same rules that write the RoleBindings, so the listing and the access agree.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::{OrgRole, Subject, Workspace, WorkspaceRole};
use crate::grants::{self, MemberState};
use crate::view::OrgView;

/// The API group and version the discovery server serves.
pub const GROUP: &str = "discovery.tenantry.dev";
pub const VERSION: &str = "v1alpha1";
pub const ORGANIZATIONS: &str = "myorganizations";
pub const WORKSPACES: &str = "myworkspaces";

/// Who asks, as the API server authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

impl Caller {
    /// Whether `subject` (granted by Membership `membership` of the organization namespace
    /// `org_ns`; empty for an owner) is this caller ([`is_subject`]).
    pub fn is(&self, subject: &Subject, membership: &str, org_ns: &str) -> bool {
        is_subject(&self.user, &self.groups, subject, membership, org_ns)
    }
}

/// Whether `subject`, granted by Membership `membership` of the organization namespace
/// `org_ns` (empty for an owner), is the user `user` in `groups`: the subject of the RBAC
/// bindings Tenantry writes for it ([`grants::rbac_subject`]), matched as the API server
/// matches them.
pub fn is_subject(
    user: &str,
    groups: &[String],
    subject: &Subject,
    membership: &str,
    org_ns: &str,
) -> bool {
    let s = grants::rbac_subject(subject, membership, org_ns);
    match s.kind.as_str() {
        "User" => s.name == user,
        "Group" => groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s.namespace.unwrap_or_default();
            user == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

/// One organization the caller belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyOrganization {
    pub name: String,
    pub display_name: String,
    pub created: Option<Time>,
    /// Every organization role the caller holds (highest first).
    pub roles: Vec<OrgRole>,
    /// `Granted`, or why the caller's Memberships grant nothing yet (`InvitationPending`,
    /// `Expired`, `NotVerified`, `LimitReached`, `Duplicate`).
    pub state: String,
    /// How many of its workspaces the caller reaches.
    pub workspaces: usize,
}

/// One workspace the caller reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyWorkspace {
    /// `<organization>.<workspace>` (both DNS-1123 labels: unique, and a valid name).
    pub name: String,
    pub organization: String,
    pub workspace: String,
    pub role: WorkspaceRole,
    /// Its namespace, once provisioned.
    pub namespace: Option<String>,
    /// The Workspace's `Ready` condition status (`True`, `False`, `Unknown`).
    pub ready: String,
    pub created: Option<Time>,
}

fn state_name(s: &MemberState) -> &'static str {
    match s {
        MemberState::Granted => "Granted",
        MemberState::Duplicate { .. } => "Duplicate",
        MemberState::LimitReached { .. } => "LimitReached",
        MemberState::NotVerified => "NotVerified",
        MemberState::InvitationPending => "InvitationPending",
        MemberState::Expired { .. } => "Expired",
    }
}

/// The caller's workspaces in one organization.
pub fn workspaces(caller: &Caller, view: &OrgView) -> Vec<MyWorkspace> {
    let org = view.org.name_any();
    let ns = view.org_namespace();
    let mut out = Vec::new();
    for ws in &view.workspaces {
        if ws.meta().deletion_timestamp.is_some() {
            continue;
        }
        // WorkspaceRole orders Admin < Editor < Viewer: the smallest is the highest.
        let role = view
            .grantees(ws)
            .into_iter()
            .filter(|g| caller.is(&g.subject, g.membership.as_deref().unwrap_or(""), &ns))
            .map(|g| g.role)
            .min();
        if let Some(role) = role {
            out.push(MyWorkspace {
                name: format!("{org}.{}", ws.name_any()),
                organization: org.clone(),
                workspace: ws.name_any(),
                role,
                namespace: ws.status.as_ref().and_then(|s| s.namespace.clone()),
                ready: ready(ws),
                created: ws.meta().creation_timestamp.clone(),
            });
        }
    }
    out
}

fn ready(ws: &Workspace) -> String {
    ws.status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == crate::status::READY)
        })
        .map_or_else(|| "Unknown".into(), |c| c.status.clone())
}

/// The caller's place in one organization, if they have one (an owner, or the subject of
/// a Membership, granted or not).
pub fn organization(caller: &Caller, view: &OrgView) -> Option<MyOrganization> {
    let ns = view.org_namespace();
    let roles: BTreeSet<OrgRole> = view
        .holders
        .iter()
        .filter(|(_, holders)| {
            holders
                .iter()
                .any(|(s, m)| caller.is(s, m.as_deref().unwrap_or(""), &ns))
        })
        .map(|(role, _)| *role)
        .collect();
    let state = if roles.is_empty() {
        // Not granted: say why, from the caller's own Memberships (oldest first).
        let mut mine: Vec<&crate::api::Membership> = view
            .memberships
            .iter()
            .map(AsRef::as_ref)
            .filter(|m| caller.is(&m.spec.subject, &m.name_any(), &ns))
            .collect();
        grants::oldest_first(&mut mine);
        let first = mine.iter().find_map(|m| view.states.get(&m.name_any()))?;
        state_name(first)
    } else {
        "Granted"
    };
    let org = view.org.as_ref();
    Some(MyOrganization {
        name: org.name_any(),
        display_name: if org.spec.display_name.is_empty() {
            org.name_any()
        } else {
            org.spec.display_name.clone()
        },
        created: org.meta().creation_timestamp.clone(),
        roles: roles.into_iter().collect(),
        state: state.into(),
        workspaces: workspaces(caller, view).len(),
    })
}

/// `/apis/<group>/<version>`: the resources served (what the API server's discovery and
/// kubectl read).
pub fn resource_list() -> Value {
    let resource = |name: &str, kind: &str, short: &[&str]| {
        json!({
            "name": name,
            "singularName": name.trim_end_matches('s'),
            "namespaced": false,
            "kind": kind,
            "verbs": ["get", "list"],
            "shortNames": short,
        })
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            resource(ORGANIZATIONS, "MyOrganization", &["myorgs"]),
            resource(WORKSPACES, "MyWorkspace", &["myws"]),
        ],
    })
}

/// `/apis/<group>`.
pub fn group() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    })
}

fn metadata(name: &str, created: &Option<Time>) -> Value {
    match created {
        Some(t) => json!({"name": name, "creationTimestamp": t}),
        None => json!({"name": name}),
    }
}

fn org_object(o: &MyOrganization) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "MyOrganization",
        "metadata": metadata(&o.name, &o.created),
        "displayName": o.display_name,
        "roles": o.roles,
        "state": o.state,
        "workspaces": o.workspaces,
    })
}

fn workspace_object(w: &MyWorkspace) -> Value {
    // `namespace` is absent until the workspace is provisioned.
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "MyWorkspace",
        "metadata": metadata(&w.name, &w.created),
        "organization": w.organization,
        "workspace": w.workspace,
        "role": w.role,
        "namespace": w.namespace,
        "ready": w.ready,
    })
}

/// The response for a list or a get, as JSON objects or as the Table kubectl asks for
/// (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
pub enum Items<'a> {
    Organizations(&'a [MyOrganization]),
    Workspaces(&'a [MyWorkspace]),
}

impl Items<'_> {
    fn objects(&self) -> Vec<Value> {
        match self {
            Items::Organizations(o) => o.iter().map(org_object).collect(),
            Items::Workspaces(w) => w.iter().map(workspace_object).collect(),
        }
    }

    /// The list, `MyOrganizationList` or `MyWorkspaceList`.
    pub fn list(&self) -> Value {
        let kind = match self {
            Items::Organizations(_) => "MyOrganizationList",
            Items::Workspaces(_) => "MyWorkspaceList",
        };
        json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": kind,
            "metadata": {},
            "items": self.objects(),
        })
    }

    /// The first item alone (a get).
    pub fn first(&self) -> Option<Value> {
        self.objects().into_iter().next()
    }

    /// A `meta.k8s.io/v1` Table of the items, with their ages at `now`.
    pub fn table(&self, now: Timestamp) -> Value {
        let column = |name: &str, format: &str, description: &str| json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0});
        let (columns, rows): (Vec<Value>, Vec<(Vec<Value>, Value)>) = match self {
            Items::Organizations(items) => (
                vec![
                    column("Name", "name", "The organization."),
                    column("Display Name", "", "Its display name."),
                    column("Role", "", "Your organization roles."),
                    column(
                        "State",
                        "",
                        "Granted, or why your membership grants nothing yet.",
                    ),
                    column("Workspaces", "", "How many of its workspaces you reach."),
                    column("Age", "", "Since the organization was created."),
                ],
                items
                    .iter()
                    .map(|o| {
                        let roles: Vec<String> = o.roles.iter().map(|r| format!("{r:?}")).collect();
                        (
                            vec![
                                json!(o.name),
                                json!(o.display_name),
                                json!(roles.join(",")),
                                json!(o.state),
                                json!(o.workspaces),
                                json!(age(&o.created, now)),
                            ],
                            metadata(&o.name, &o.created),
                        )
                    })
                    .collect(),
            ),
            Items::Workspaces(items) => (
                vec![
                    column("Name", "name", "<organization>.<workspace>."),
                    column("Organization", "", "The organization."),
                    column("Workspace", "", "The workspace."),
                    column("Role", "", "Your workspace role."),
                    column("Namespace", "", "The workspace's namespace."),
                    column("Ready", "", "Whether the workspace is provisioned."),
                    column("Age", "", "Since the workspace was created."),
                ],
                items
                    .iter()
                    .map(|w| {
                        (
                            vec![
                                json!(w.name),
                                json!(w.organization),
                                json!(w.workspace),
                                json!(format!("{:?}", w.role)),
                                json!(w.namespace.clone().unwrap_or_default()),
                                json!(w.ready),
                                json!(age(&w.created, now)),
                            ],
                            metadata(&w.name, &w.created),
                        )
                    })
                    .collect(),
            ),
        };
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|(cells, meta)| {
                json!({
                    "cells": cells,
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
                })
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {},
            "columnDefinitions": columns,
            "rows": rows,
        })
    }
}

/// kubectl's short age: `42s`, `5m`, `3h`, `12d`, `<unknown>`.
pub fn age(created: &Option<Time>, now: Timestamp) -> String {
    let Some(t) = created else {
        return "<unknown>".into();
    };
    let s = now.as_second().saturating_sub(t.0.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A `meta.k8s.io/v1` Status (an error, as the API server writes them), with `details`
/// when there are any.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{Membership, Organization, Workspace};
    use crate::grants::Gates;

    fn view(yaml: &str) -> OrgView {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
        let (mut org, mut ms, mut ws) = (None, vec![], vec![]);
        for (i, d) in docs.into_iter().enumerate() {
            let mut d = d;
            d["metadata"]["uid"] = json!(format!("u{i}"));
            d["metadata"]["creationTimestamp"] = json!(format!("2026-01-01T00:00:{i:02}Z"));
            match d["kind"].as_str().unwrap() {
                "Organization" => {
                    org = Some(Arc::new(serde_json::from_value::<Organization>(d).unwrap()))
                }
                "Membership" => ms.push(Arc::new(serde_json::from_value::<Membership>(d).unwrap())),
                _ => ws.push(Arc::new(serde_json::from_value::<Workspace>(d).unwrap())),
            }
        }
        OrgView::new(org.unwrap(), ms, ws, Gates::default(), None)
    }

    const ACME: &str = r#"
apiVersion: tenantry.dev/v1alpha1
kind: Organization
metadata: {name: acme}
spec:
  displayName: Acme Inc.
  owners: [{kind: User, name: olga}]
  membership: {requireAcceptance: false}
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: web, namespace: org-acme}
spec: {}
status:
  namespace: acme--web
  conditions: [{type: Ready, status: "True", reason: Provisioned, message: "", lastTransitionTime: "2026-01-01T00:00:00Z"}]
---
apiVersion: tenantry.dev/v1alpha1
kind: Workspace
metadata: {name: data, namespace: org-acme}
spec: {}
---
apiVersion: tenantry.dev/v1alpha1
kind: Membership
metadata: {name: dev, namespace: org-acme}
spec:
  subject: {kind: User, name: dev}
  role: Member
  workspaces: [{name: web, role: Editor}]
---
apiVersion: tenantry.dev/v1alpha1
kind: Membership
metadata: {name: ops, namespace: org-acme}
spec:
  subject: {kind: Group, name: ops}
  role: Viewer
  workspaces: [{name: web, role: Admin}, {name: data, role: Viewer}]
---
apiVersion: tenantry.dev/v1alpha1
kind: Membership
metadata: {name: ci, namespace: org-acme}
spec:
  subject: {kind: Client, name: ci}
  role: Member
  workspaces: [{name: data, role: Editor}]
---
apiVersion: tenantry.dev/v1alpha1
kind: Membership
metadata: {name: late, namespace: org-acme}
spec:
  subject: {kind: User, name: late}
  role: Admin
  expiresAt: "2020-01-01T00:00:00Z"
"#;

    fn caller(user: &str, groups: &[&str]) -> Caller {
        Caller {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn names(ws: &[MyWorkspace]) -> Vec<(String, WorkspaceRole)> {
        ws.iter().map(|w| (w.name.clone(), w.role)).collect()
    }

    #[test]
    fn a_member_sees_the_workspaces_assigned_with_the_highest_role() {
        let v = view(ACME);
        let dev = caller("dev", &[]);
        assert_eq!(
            names(&workspaces(&dev, &v)),
            vec![("acme.web".into(), WorkspaceRole::Editor)]
        );
        let o = organization(&dev, &v).unwrap();
        assert_eq!(
            (o.roles.clone(), o.state.as_str(), o.workspaces),
            (vec![OrgRole::Member], "Granted", 1)
        );
        assert_eq!(o.display_name, "Acme Inc.");
        // Through a group, and as a user in that group: the highest role of both.
        let both = caller("dev", &["ops"]);
        let mut got = names(&workspaces(&both, &v));
        got.sort();
        assert_eq!(
            got,
            vec![
                ("acme.data".into(), WorkspaceRole::Viewer),
                ("acme.web".into(), WorkspaceRole::Admin)
            ]
        );
        assert_eq!(
            organization(&both, &v).unwrap().roles,
            vec![OrgRole::Member, OrgRole::Viewer]
        );
        let web = workspaces(&both, &v)
            .into_iter()
            .find(|w| w.workspace == "web")
            .unwrap();
        assert_eq!(
            (web.namespace.as_deref(), web.ready.as_str()),
            (Some("acme--web"), "True")
        );
    }

    #[test]
    fn owners_reach_every_workspace_and_strangers_see_nothing() {
        let v = view(ACME);
        let olga = caller("olga", &[]);
        assert_eq!(workspaces(&olga, &v).len(), 2);
        assert_eq!(organization(&olga, &v).unwrap().roles, vec![OrgRole::Owner]);
        // A name alone is not a group, nor a group a user.
        for stranger in [
            caller("eve", &[]),
            caller("ops", &[]),
            caller("eve", &["dev", "olga"]),
        ] {
            assert!(organization(&stranger, &v).is_none(), "{stranger:?}");
            assert!(workspaces(&stranger, &v).is_empty(), "{stranger:?}");
        }
    }

    #[test]
    fn a_client_is_its_service_account_in_the_organization_namespace() {
        let v = view(ACME);
        let sa = format!(
            "system:serviceaccount:org-acme:{}",
            crate::names::client_service_account("ci")
        );
        assert_eq!(
            names(&workspaces(&caller(&sa, &[]), &v)),
            vec![("acme.data".into(), WorkspaceRole::Editor)]
        );
        // A user named like the client is not the client.
        assert!(organization(&caller("ci", &[]), &v).is_none());
    }

    #[test]
    fn a_member_who_is_not_granted_sees_why_and_no_workspace() {
        let v = view(ACME);
        let late = caller("late", &[]);
        let o = organization(&late, &v).unwrap();
        assert_eq!(
            (o.roles.len(), o.state.as_str(), o.workspaces),
            (0, "Expired", 0)
        );
        assert!(workspaces(&late, &v).is_empty());
    }

    #[test]
    fn tables_carry_one_row_per_item_and_ages_read_like_kubectl() {
        let v = view(ACME);
        let ws = workspaces(&caller("olga", &[]), &v);
        let now: Timestamp = "2026-01-03T00:00:00Z".parse().unwrap();
        let t = Items::Workspaces(&ws).table(now);
        assert_eq!(t["rows"].as_array().unwrap().len(), 2);
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap().len(),
            t["columnDefinitions"].as_array().unwrap().len()
        );
        assert_eq!(t["rows"][0]["cells"][6], "47h");
        let list = Items::Workspaces(&ws).list();
        assert_eq!(list["items"][0]["kind"], "MyWorkspace");
        let at = |s: &str| Some(Time(s.parse().unwrap()));
        assert_eq!(age(&at("2026-01-02T23:59:30Z"), now), "30s");
        assert_eq!(age(&at("2026-01-02T23:00:00Z"), now), "60m");
        assert_eq!(age(&at("2025-12-01T00:00:00Z"), now), "33d");
        assert_eq!(age(&None, now), "<unknown>");
        // A clock behind the object's creation says 0s, never a negative age.
        assert_eq!(age(&at("2026-01-04T00:00:00Z"), now), "0s");
    }
}
