//! The access model, enforced by Kubernetes itself (RBAC and the shipped
//! ValidatingAdmissionPolicies): impersonated users in every role of two organizations
//! attempt every action of the role table, and the cross-organization and escalation
//! attempts. Mutations are dry runs: authorization and admission run, nothing persists.
//! The test prints the matrix it checked.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject as RbacSubject,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, ResourceExt};
use serde_json::json;
use tenantry::api::*;

use crate::core::{
    add_member, create_org, membership, org_spec, unprotect, wait_member_reason, wait_ws_ready,
};
use crate::harness::{admin, as_user, controller, unique};

const ROLES: [OrgRole; 7] = OrgRole::ALL;

pub(crate) fn user(role: OrgRole, org: &str) -> String {
    format!("{}@{org}.example", role.slug())
}

/// Allowed (true), denied (false, a 403), or a test failure for anything else.
pub(crate) fn allowed<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) -> bool {
    match r {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 403 => false,
        Err(e) => panic!("{what}: neither allowed nor forbidden: {e}"),
    }
}

pub(crate) async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    r.status.map(|s| s.allowed).unwrap_or(false)
}

pub(crate) fn dry() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}
pub(crate) fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..Default::default()
    }
}

/// Sets up an organization with one member per role (each assigned workspace
/// `default`) and a machine client.
pub(crate) async fn populated_org(client: &Client) -> String {
    let name = unique("acc");
    let mut spec = org_spec(&user(OrgRole::Owner, "x"));
    spec.owners = vec![Subject::user(&user(OrgRole::Owner, &name))];
    create_org(client, &name, spec).await;
    wait_ws_ready(client, &name, "default").await;
    for role in ROLES.iter().filter(|r| **r != OrgRole::Owner) {
        let ws_role = if *role == OrgRole::Viewer {
            WorkspaceRole::Viewer
        } else {
            WorkspaceRole::Editor
        };
        add_member(
            client,
            &name,
            membership(
                role.slug(),
                Subject::user(&user(*role, &name)),
                *role,
                &[("default", ws_role)],
            ),
        )
        .await;
    }
    add_member(
        client,
        &name,
        membership("bot", Subject::client("bot"), OrgRole::Member, &[]),
    )
    .await;
    for m in ROLES
        .iter()
        .filter(|r| **r != OrgRole::Owner)
        .map(|r| r.slug())
        .chain(["bot"])
    {
        wait_member_reason(client, &name, m, "Granted").await;
    }
    // The organization's own bindings follow the Memberships: wait until the Admin holds
    // its custom verb on the Organization.
    let admin_user = as_user(&user(OrgRole::Admin, &name), &[]).await;
    let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
    loop {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("grant-admin".into()),
                    group: Some("tenantry.dev".into()),
                    resource: Some("organizations".into()),
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = Api::<SelfSubjectAccessReview>::all(admin_user.clone())
            .create(&PostParams::default(), &review)
            .await
            .expect("access review");
        if r.status.is_some_and(|s| s.allowed) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Admin of {name} never got grant-admin"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    name
}

#[tokio::test]
async fn every_role_may_do_exactly_what_the_table_says() {
    let _ = controller();
    let client = admin().await;
    let a = populated_org(&client).await;
    let b = populated_org(&client).await;
    // Organization a is unprotected so that deletion rights show (as dry runs).
    unprotect(&client, &a).await;
    let (a_ns, b_ns, a_ws) = (
        format!("org-{a}"),
        format!("org-{b}"),
        format!("{a}--default"),
    );

    let mut matrix: BTreeMap<&str, BTreeMap<OrgRole, bool>> = BTreeMap::new();
    for role in ROLES {
        let c = as_user(&user(role, &a), &[]).await;
        let orgs: Api<Organization> = Api::all(c.clone());
        let wss: Api<Workspace> = Api::namespaced(c.clone(), &a_ns);
        let mbrs: Api<Membership> = Api::namespaced(c.clone(), &a_ns);
        let mut row = |action: &'static str, ok: bool| {
            matrix.entry(action).or_default().insert(role, ok);
        };
        row(
            "read the Organization and its status",
            allowed("get org", orgs.get(&a).await),
        );
        row(
            "change displayName, defaults",
            allowed(
                "patch org",
                orgs.patch(
                    &a,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"displayName": "x", "workspaceDefaults": {"networkIsolation": false}}})),
                )
                .await,
            ),
        );
        row(
            "change spec.limits",
            allowed(
                "patch limits",
                orgs.patch(
                    &a,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"limits": {"maxMembers": 99}}})),
                )
                .await,
            ),
        );
        row(
            "delete the Organization",
            allowed(
                "delete org",
                orgs.delete(
                    &a,
                    &DeleteParams {
                        dry_run: true,
                        ..Default::default()
                    },
                )
                .await,
            ),
        );
        let mut ws = Workspace::new("new-ws", Default::default());
        ws.metadata.namespace = Some(a_ns.clone());
        let create_ws = allowed("create ws", wss.create(&dry(), &ws).await);
        let patch_ws = allowed(
            "patch ws",
            wss.patch(
                "default",
                &dry_patch(),
                &Patch::Merge(json!({"spec": {"displayName": "x"}})),
            )
            .await,
        );
        let delete_ws = allowed(
            "delete ws",
            wss.delete(
                "default",
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await,
        );
        row(
            "create/change/delete Workspaces",
            create_ws && patch_ws && delete_ws,
        );
        let mut new_member = membership(
            "new-member",
            Subject::user("new@x.example"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Viewer)],
        );
        new_member.metadata.namespace = Some(a_ns.clone());
        let add = allowed("add member", mbrs.create(&dry(), &new_member).await);
        let change = allowed(
            "change member",
            mbrs.patch(
                "member",
                &dry_patch(),
                &Patch::Merge(json!({"spec": {"role": "Viewer", "workspaces": []}})),
            )
            .await,
        );
        let remove = allowed(
            "remove member",
            mbrs.delete(
                "viewer",
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await,
        );
        row(
            "add/change/remove Members (non-Owner, non-Admin roles)",
            add && change && remove,
        );
        let mut admin_grant = membership(
            "new-admin",
            Subject::user("new-admin@x.example"),
            OrgRole::Admin,
            &[],
        );
        admin_grant.metadata.namespace = Some(a_ns.clone());
        let grant_admin = allowed("grant admin", mbrs.create(&dry(), &admin_grant).await);
        let revoke_admin = allowed(
            "revoke admin",
            mbrs.delete(
                "admin",
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await,
        );
        row("grant or revoke Admin", grant_admin && revoke_admin);
        let mut owner_grant = membership(
            "new-owner",
            Subject::user("new-owner@x.example"),
            OrgRole::Owner,
            &[],
        );
        owner_grant.metadata.namespace = Some(a_ns.clone());
        row(
            "grant or revoke Owner",
            allowed("grant owner", mbrs.create(&dry(), &owner_grant).await),
        );
        let list_m = allowed("list members", mbrs.list(&ListParams::default()).await);
        let list_w = allowed("list workspaces", wss.list(&ListParams::default()).await);
        row("list members and workspaces", list_m && list_w);
        row(
            "read machine-client Secrets",
            allowed(
                "read secret",
                Api::<Secret>::namespaced(c.clone(), &a_ns)
                    .get("bot-credentials")
                    .await,
            ),
        );
        row(
            "workspace: admin (create RoleBindings)",
            can_i(
                &c,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                &a_ws,
            )
            .await,
        );
        row(
            "workspace: edit (create Deployments)",
            can_i(&c, "create", "apps", "deployments", &a_ws).await,
        );
        row(
            "workspace: view (list Pods)",
            can_i(&c, "list", "", "pods", &a_ws).await,
        );

        // Across organizations and escalations: all must be denied.
        let other_mbrs: Api<Membership> = Api::namespaced(c.clone(), &b_ns);
        let edit_other = allowed(
            "edit other org member",
            other_mbrs
                .patch(
                    "member",
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"role": "Viewer"}})),
                )
                .await,
        );
        let mut foreign_ws = Workspace::new("mine", Default::default());
        foreign_ws.metadata.namespace = Some(b_ns.clone());
        let ws_other = allowed(
            "create ws in other org",
            Api::<Workspace>::namespaced(c.clone(), &b_ns)
                .create(&dry(), &foreign_ws)
                .await,
        );
        let read_other = allowed(
            "read other org",
            Api::<Organization>::all(c.clone()).get(&b).await,
        );
        let other_ws_access = can_i(&c, "list", "", "pods", &format!("{b}--default")).await;
        row(
            "ANY access to the other organization",
            edit_other || ws_other || read_other || other_ws_access,
        );
        let mut self_owner = membership(
            "self-owner",
            Subject::user(&user(role, &a)),
            OrgRole::Owner,
            &[],
        );
        self_owner.metadata.namespace = Some(a_ns.clone());
        let escalate_new = allowed("grant self owner", mbrs.create(&dry(), &self_owner).await);
        let escalate_own = if role == OrgRole::Owner {
            false
        } else {
            allowed(
                "promote own membership",
                mbrs.patch(
                    role.slug(),
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"role": "Owner"}})),
                )
                .await,
            )
        };
        row(
            "make yourself Owner (non-owners)",
            role != OrgRole::Owner && (escalate_new || escalate_own),
        );
        let label = allowed(
            "label foreign namespace",
            Api::<Namespace>::all(c.clone())
                .patch(
                    &format!("{b}--default"),
                    &dry_patch(),
                    &Patch::Merge(
                        json!({"metadata": {"labels": {"tenantry.dev/organization": a}}}),
                    ),
                )
                .await,
        );
        row("label another org's namespace as yours", label);
        row(
            "change spec.owners",
            allowed(
                "change owners",
                orgs.patch(
                    &a,
                    &dry_patch(),
                    &Patch::Merge(
                        json!({"spec": {"owners": [{"kind": "User", "name": user(role, &a)}]}}),
                    ),
                )
                .await,
            ),
        );
        row(
            "set spec.verified",
            allowed(
                "verify",
                orgs.patch(
                    &a,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"verified": true}})),
                )
                .await,
            ),
        );
        let protected = Api::<Organization>::all(as_user(&user(role, &b), &[]).await);
        row(
            "delete a protected org (its own, b)",
            allowed(
                "delete protected",
                protected
                    .delete(
                        &b,
                        &DeleteParams {
                            dry_run: true,
                            ..Default::default()
                        },
                    )
                    .await,
            ),
        );
    }

    use OrgRole::*;
    let all = ROLES.to_vec();
    let expected: BTreeMap<&str, Vec<OrgRole>> = [
        ("read the Organization and its status", all.clone()),
        ("change displayName, defaults", vec![Owner, Admin]),
        ("change spec.limits", vec![]),
        ("delete the Organization", vec![Owner]),
        ("create/change/delete Workspaces", vec![Owner, Admin]),
        (
            "add/change/remove Members (non-Owner, non-Admin roles)",
            vec![Owner, Admin, UserAdmin],
        ),
        ("grant or revoke Admin", vec![Owner, Admin]),
        ("grant or revoke Owner", vec![Owner]),
        ("list members and workspaces", all.clone()),
        ("read machine-client Secrets", vec![Owner, Admin]),
        (
            "workspace: admin (create RoleBindings)",
            vec![Owner, Admin, Manager],
        ),
        (
            "workspace: edit (create Deployments)",
            vec![Owner, Admin, Manager, UserAdmin, BillingAdmin, Member],
        ),
        ("workspace: view (list Pods)", all.clone()),
        ("ANY access to the other organization", vec![]),
        ("make yourself Owner (non-owners)", vec![]),
        ("label another org's namespace as yours", vec![]),
        ("change spec.owners", vec![Owner]),
        ("set spec.verified", vec![]),
        ("delete a protected org (its own, b)", vec![]),
    ]
    .into();

    // Print the matrix, then compare.
    let mut table = String::from("\n| action |");
    for r in ROLES {
        table.push_str(&format!(" {r:?} |"));
    }
    table.push_str("\n|---|");
    table.push_str(&"---|".repeat(ROLES.len()));
    let mut wrong = Vec::new();
    for (action, want) in &expected {
        let got = &matrix[action];
        table.push_str(&format!("\n| {action} |"));
        for r in ROLES {
            let ok = got[&r];
            table.push_str(if ok { " yes |" } else { " no |" });
            if ok != want.contains(&r) {
                wrong.push(format!(
                    "{action}: {r:?} was {}",
                    if ok { "allowed" } else { "denied" }
                ));
            }
        }
    }
    println!("{table}");
    assert!(
        wrong.is_empty(),
        "the access matrix differs from the role table:\n{}\n{table}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn platform_admins_verify_and_tracking_labels_are_protected() {
    let _ = controller();
    let client = admin().await;
    let name = unique("acc");
    create_org(&client, &name, org_spec("o@x.example")).await;
    wait_ws_ready(&client, &name, "default").await;

    // A platform admin (by group) may verify; the owner may not.
    let platform = as_user("root@platform.example", &["tenantry:platform-admins"]).await;
    Api::<Organization>::all(platform.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"verified": true}})),
        )
        .await
        .expect("a platform admin verifies");
    let owner = Api::<Organization>::all(as_user("o@x.example", &[]).await);
    let denied = owner
        .patch(
            &name,
            &dry_patch(),
            &Patch::Merge(json!({"spec": {"verified": false}})),
        )
        .await;
    assert!(!allowed("owner unverifies", denied));

    // Someone with the right to label namespaces still cannot set Tenantry's labels.
    let who = format!("ns-labeler-{}", unique("u"));
    grant_cluster(&client, &who, "namespaces", &["get", "patch"]).await;
    let labeler = Api::<Namespace>::all(as_user(&who, &[]).await);
    let ws_ns = format!("{name}--default");
    let r = labeler
        .patch(
            &ws_ns,
            &dry_patch(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}})),
        )
        .await;
    assert!(allowed("plain label", r), "other labels are fine");
    let r = labeler
        .patch(
            &ws_ns,
            &dry_patch(),
            &Patch::Merge(json!({"metadata": {"labels": {"tenantry.dev/workspace": "other"}}})),
        )
        .await;
    let msg = format!("{r:?}");
    assert!(
        !allowed("tenantry label", r),
        "changing tenantry.dev/ labels is denied"
    );
    assert!(msg.contains("set by Tenantry only"), "{msg}");
    let r = labeler
        .patch(
            &ws_ns,
            &dry_patch(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tenantry.dev/owner-uid": "x"}}})),
        )
        .await;
    assert!(!allowed("tenantry annotation", r));
    let r = labeler
        .patch(
            "default",
            &dry_patch(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "tenantry"}}}),
            ),
        )
        .await;
    assert!(
        !allowed("managed-by", r),
        "claiming a namespace for Tenantry is denied"
    );

    // Deleting a protected organization says why.
    let r = Api::<Organization>::all(client.clone())
        .delete(
            &name,
            &DeleteParams {
                dry_run: true,
                ..Default::default()
            },
        )
        .await;
    let msg = format!("{r:?}");
    assert!(msg.contains("protected from deletion"), "{msg}");

    Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&who, &DeleteParams::default())
        .await
        .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .delete(&who, &DeleteParams::default())
        .await
        .unwrap();
    crate::core::delete_org(&client, &name).await;
}

#[tokio::test]
async fn invitations_wait_for_the_invited_user() {
    let _ = controller();
    let client = admin().await;
    let name = unique("inv");
    let mut spec = org_spec("o@x.example");
    spec.membership = Some(MembershipPolicy {
        require_acceptance: true,
        ..Default::default()
    });
    create_org(&client, &name, spec).await;
    wait_ws_ready(&client, &name, "default").await;
    add_member(
        &client,
        &name,
        membership(
            "pat",
            Subject::user("pat@x.example"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
    )
    .await;
    wait_member_reason(&client, &name, "pat", "InvitationPending").await;
    let ws_ns = format!("{name}--default");
    let pat = as_user("pat@x.example", &[]).await;
    assert!(
        !can_i(&pat, "create", "apps", "deployments", &ws_ns).await,
        "nothing before accepting"
    );

    let org_ns = format!("org-{name}");
    // Someone else cannot accept for pat; pat cannot change the role while accepting.
    let other = Api::<Membership>::namespaced(as_user("o@x.example", &[]).await, &org_ns);
    let accept = json!({"metadata": {"annotations": {"tenantry.dev/accepted": "true"}}});
    assert!(!allowed(
        "owner accepts for pat",
        other
            .patch("pat", &dry_patch(), &Patch::Merge(accept.clone()))
            .await
    ));
    let mine = Api::<Membership>::namespaced(pat.clone(), &org_ns);
    let sneaky = json!({"metadata": {"annotations": {"tenantry.dev/accepted": "true"}}, "spec": {"role": "Admin"}});
    assert!(!allowed(
        "pat escalates while accepting",
        mine.patch("pat", &dry_patch(), &Patch::Merge(sneaky)).await
    ));
    mine.patch("pat", &PatchParams::default(), &Patch::Merge(accept))
        .await
        .expect("pat accepts");
    wait_member_reason(&client, &name, "pat", "Granted").await;
    crate::harness::wait_for(
        &Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &ws_ns),
        "tenantry-workspace-editor",
        "pat is an editor",
        |rb: Option<&k8s_openapi::api::rbac::v1::RoleBinding>| {
            rb.is_some_and(|rb| {
                rb.subjects
                    .iter()
                    .flatten()
                    .any(|s| s.name == "pat@x.example")
            })
        },
    )
    .await;
    assert!(can_i(&pat, "create", "apps", "deployments", &ws_ns).await);
    // The invitation's Role is gone once accepted.
    crate::harness::wait_gone(
        &Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &org_ns),
        "tenantry-invitation-pat",
    )
    .await;
    let _ = mine.get("pat").await.map(|m| m.name_any());
    crate::core::delete_org(&client, &name).await;
}

/// Grants user `who` the `verbs` on the core-group cluster resource `resource`, by a
/// ClusterRole and ClusterRoleBinding named `who`: the rights of a platform's helper who
/// is not a platform admin.
pub async fn grant_cluster(client: &Client, who: &str, resource: &str, verbs: &[&str]) {
    let cr = ClusterRole {
        metadata: ObjectMeta {
            name: Some(who.to_string()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec![resource.into()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }]),
        aggregation_rule: None,
    };
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(who.to_string()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: who.to_string(),
        },
        subjects: Some(vec![RbacSubject {
            kind: "User".into(),
            name: who.to_string(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        }]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
}

/// Whether `b`'s subjects include `s`.
fn names_subject(subjects: Option<&Vec<RbacSubject>>, s: &RbacSubject) -> bool {
    subjects
        .into_iter()
        .flatten()
        .any(|b| b.kind == s.kind && b.name == s.name && b.namespace == s.namespace)
}

/// A Membership says `Granted` only once every binding that grants it is in place: a
/// member who reads `Granted` and acts is never refused. Members of every kind are added
/// at once to an organization whose workspaces are ready; every RoleBinding and
/// ClusterRoleBinding of the organization and every Membership are watched, and the
/// revision (etcd's, one counter for every object) at which each binding first named a
/// member must come before the revision of the member's first `Granted`.
#[tokio::test]
async fn a_member_is_granted_only_once_bound() {
    use futures::StreamExt;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::runtime::watcher;
    use std::sync::{Arc, Mutex};

    let _ = controller();
    let client = admin().await;
    let org = unique("bound");
    let org_ns = format!("org-{org}");
    create_org(&client, &org, org_spec("o@x.example")).await;
    for ws in ["dev", "ops"] {
        crate::core::create_ws(&client, &org, ws, Default::default()).await;
    }
    for ws in ["dev", "ops"] {
        wait_ws_ready(&client, &org, ws).await;
    }

    // Every version of every binding of the organization, and of every Membership, from
    // now on: (object, revision, subjects) and (membership, revision, granted).
    type Seen = Arc<Mutex<Vec<(String, u64, Option<Vec<RbacSubject>>)>>>;
    let bindings: Seen = Arc::default();
    let granted: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let rv = |o: &ObjectMeta| -> u64 {
        o.resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("an etcd revision")
    };
    let selected = watcher::Config::default().labels(&format!("tenantry.dev/organization={org}"));
    // Each version of each binding of kind `K`: (kind and path, revision, subjects).
    fn record<K>(
        api: Api<K>,
        selected: watcher::Config,
        seen: Seen,
        subjects: fn(K) -> Option<Vec<RbacSubject>>,
    ) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        tokio::spawn(watcher(api, selected).for_each(move |e| {
            if let Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) = e {
                let ns = b.namespace().map(|n| format!("{n}/")).unwrap_or_default();
                let key = format!("{} {ns}{}", K::kind(&()), b.name_any());
                let rv = b
                    .meta()
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok());
                let rv: u64 = rv.expect("an etcd revision");
                seen.lock().unwrap().push((key, rv, subjects(b)));
            }
            futures::future::ready(())
        }))
    }
    let mut watches = vec![
        record(
            Api::<RoleBinding>::all(client.clone()),
            selected.clone(),
            bindings.clone(),
            |b| b.subjects,
        ),
        record(
            Api::<ClusterRoleBinding>::all(client.clone()),
            selected,
            bindings.clone(),
            |b| b.subjects,
        ),
    ];
    {
        let seen = granted.clone();
        let members = watcher(
            Api::<Membership>::namespaced(client.clone(), &org_ns),
            watcher::Config::default(),
        );
        watches.push(tokio::spawn(members.for_each(move |e| {
            if let Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) = e {
                let is_granted = m
                    .status
                    .iter()
                    .flat_map(|s| &s.conditions)
                    .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Granted");
                if is_granted {
                    seen.lock().unwrap().push((m.name_any(), rv(&m.metadata)));
                }
            }
            futures::future::ready(())
        })));
    }
    // The watches have started (a binding of the owners exists already).
    let started = async {
        while bindings.lock().unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(crate::harness::TIMEOUT, started)
        .await
        .expect("the watches see the owners' bindings");

    let user = |n: &str| RbacSubject {
        kind: "User".into(),
        name: n.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    };
    let members = [
        (
            membership(
                "editor",
                Subject::user("e@x.example"),
                OrgRole::Member,
                &[("dev", WorkspaceRole::Editor)],
            ),
            user("e@x.example"),
        ),
        (
            membership(
                "viewer",
                Subject::user("v@x.example"),
                OrgRole::Viewer,
                &[
                    ("dev", WorkspaceRole::Viewer),
                    ("ops", WorkspaceRole::Viewer),
                ],
            ),
            user("v@x.example"),
        ),
        (
            membership("admin", Subject::user("a@x.example"), OrgRole::Admin, &[]),
            user("a@x.example"),
        ),
        (
            membership(
                "manager",
                Subject::user("m@x.example"),
                OrgRole::Manager,
                &[],
            ),
            user("m@x.example"),
        ),
        (
            membership(
                "team",
                Subject::group("team-x"),
                OrgRole::Member,
                &[("ops", WorkspaceRole::Editor)],
            ),
            RbacSubject {
                kind: "Group".into(),
                ..user("team-x")
            },
        ),
        (
            membership(
                "robot",
                Subject::client("robot"),
                OrgRole::Member,
                &[("dev", WorkspaceRole::Editor)],
            ),
            RbacSubject {
                kind: "ServiceAccount".into(),
                name: tenantry::names::client_service_account("robot"),
                api_group: None,
                namespace: Some(org_ns.clone()),
            },
        ),
    ];
    futures::future::join_all(
        members
            .iter()
            .map(|(m, _)| add_member(&client, &org, m.clone())),
    )
    .await;
    for (m, _) in &members {
        wait_member_reason(&client, &org, &m.name_any(), "Granted").await;
    }
    // The bindings' watch may deliver after the Memberships' one.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for w in watches {
        w.abort();
    }

    let bindings = bindings.lock().unwrap().clone();
    let granted = granted.lock().unwrap().clone();
    for (m, subject) in &members {
        let name = m.name_any();
        let at = granted
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, rv)| *rv)
            .min()
            .expect("seen Granted");
        // Each binding that names the member now, and since when.
        let mut naming: BTreeMap<&str, u64> = BTreeMap::new();
        for (key, rv, subjects) in &bindings {
            if names_subject(subjects.as_ref(), subject) {
                let first = naming.entry(key.as_str()).or_insert(*rv);
                *first = (*first).min(*rv);
            }
        }
        assert!(
            naming
                .keys()
                .any(|k| k.starts_with("RoleBinding") && !k.contains(&format!(" {org_ns}/"))),
            "{name} is bound in a workspace: {naming:?}"
        );
        let late: Vec<_> = naming.iter().filter(|(_, rv)| **rv > at).collect();
        assert!(
            late.is_empty(),
            "{name} was Granted at revision {at}, before these bindings named it: {late:?}"
        );
    }
}
