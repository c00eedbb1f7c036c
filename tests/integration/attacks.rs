//! Regression tests for the attacks of issue 12 (see docs/security.md): each one is an
//! attack that succeeded on an earlier Tenantry, tried again as the least-trusted writer
//! who could try it, with impersonated users on the real control plane.

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tenantry::api::*;

use crate::access::{allowed, can_i, dry, dry_patch, populated_org, user};
use crate::core::{
    add_member, create_org, membership, org_spec, wait_member_reason, wait_ws_ready,
};
use crate::harness::{admin, as_user, controller, status_of, unique, wait_for};

fn in_org(mut m: Membership, org: &str) -> Membership {
    m.metadata.namespace = Some(format!("org-{org}"));
    m
}

/// A new organization (named from `prefix`) whose default workspace is Ready, with
/// `member` added and Granted.
async fn org_with(client: &kube::Client, prefix: &str, member: Membership) -> String {
    let org = unique(prefix);
    create_org(client, &org, org_spec("o@x.example")).await;
    wait_ws_ready(client, &org, "default").await;
    let name = member.metadata.name.clone().unwrap_or_default();
    add_member(client, &org, member).await;
    wait_member_reason(client, &org, &name, "Granted").await;
    org
}

fn message<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> String {
    format!("{r:?}")
}

/// Item 1: an invitee may accept, and do nothing else with its own Membership: not change
/// its spec before accepting, not after. Nobody creates a Membership already accepted.
#[tokio::test]
async fn an_invitee_only_accepts() {
    let _ = controller();
    let client = admin().await;
    let name = unique("atk1");
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
        membership("eve", Subject::user("eve@x.example"), OrgRole::Viewer, &[]),
    )
    .await;
    wait_member_reason(&client, &name, "eve", "InvitationPending").await;
    let org_ns = format!("org-{name}");
    wait_for(
        &Api::<Role>::namespaced(client.clone(), &org_ns),
        "tenantry-invitation-eve",
        "the invitation Role",
        |r: Option<&Role>| r.is_some(),
    )
    .await;
    let eve = Api::<Membership>::namespaced(as_user("eve@x.example", &[]).await, &org_ns);
    for (what, patch) in [
        ("role", json!({"spec": {"role": "Manager"}})),
        (
            "workspaces",
            json!({"spec": {"workspaces": [{"name": "default", "role": "Viewer"}]}}),
        ),
        ("labels", json!({"metadata": {"labels": {"team": "x"}}})),
        (
            "annotations",
            json!({"metadata": {"annotations": {"note": "x"}}}),
        ),
    ] {
        let r = eve.patch("eve", &dry_patch(), &Patch::Merge(patch)).await;
        assert!(
            !allowed(what, r),
            "an invitee must not change its Membership's {what}"
        );
    }
    eve.patch(
        "eve",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"tenantry.dev/accepted": "true"}}})),
    )
    .await
    .expect("eve accepts");
    wait_member_reason(&client, &name, "eve", "Granted").await;

    // Created already accepted, by an Owner: refused (the invitee must accept).
    let owner = Api::<Membership>::namespaced(as_user("o@x.example", &[]).await, &org_ns);
    let mut pre = in_org(
        membership("mal", Subject::user("mal@x.example"), OrgRole::Member, &[]),
        &name,
    );
    pre.metadata.annotations = Some([("tenantry.dev/accepted".into(), "true".into())].into());
    let r = owner.create(&dry(), &pre).await;
    assert!(!allowed("create accepted", r), "a pre-accepted invitation");
    crate::core::delete_org(&client, &name).await;
}

/// Item 2: a UserAdmin manages ordinary members only: not the all-workspace Manager role,
/// not the workspace Admin role, for itself or anyone; and nobody below Owner changes
/// their own access.
#[tokio::test]
async fn a_user_admin_cannot_raise_anyone() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let ua = as_user(&user(OrgRole::UserAdmin, &org), &[]).await;
    let mbrs = Api::<Membership>::namespaced(ua.clone(), &ns);
    let admin_ws = json!({"spec": {"workspaces": [{"name": "default", "role": "Admin"}]}});
    for (what, target, patch) in [
        (
            "self to Manager",
            "user-admin",
            json!({"spec": {"role": "Manager"}}),
        ),
        ("self workspace Admin", "user-admin", admin_ws.clone()),
        (
            "other to Manager",
            "member",
            json!({"spec": {"role": "Manager"}}),
        ),
        ("other workspace Admin", "member", admin_ws.clone()),
        // Own Membership, even sideways: nobody below Owner edits their own grant.
        (
            "self workspace Viewer",
            "user-admin",
            json!({"spec": {"workspaces": [{"name": "default", "role": "Viewer"}]}}),
        ),
    ] {
        let r = mbrs.patch(target, &dry_patch(), &Patch::Merge(patch)).await;
        let msg = message(&r);
        assert!(!allowed(what, r), "a UserAdmin: {what}");
        assert!(
            msg.contains("Forbidden") || msg.contains("forbidden"),
            "{msg}"
        );
    }
    for (what, role, ws) in [
        ("new Manager", OrgRole::Manager, vec![]),
        (
            "new workspace Admin",
            OrgRole::Member,
            vec![("default", WorkspaceRole::Admin)],
        ),
    ] {
        let m = in_org(
            membership("raised", Subject::user("friend@x.example"), role, &ws),
            &org,
        );
        assert!(!allowed(what, mbrs.create(&dry(), &m).await), "{what}");
    }
    // A second Membership for oneself: refused too.
    let me = in_org(
        membership(
            "me-again",
            Subject::user(&user(OrgRole::UserAdmin, &org)),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
        &org,
    );
    assert!(!allowed("self grant", mbrs.create(&dry(), &me).await));
    // Through a group one belongs to: the same.
    let via_group = in_org(
        membership(
            "via-group",
            Subject::group("ua-team"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
        &org,
    );
    let in_group = Api::<Membership>::namespaced(
        as_user(&user(OrgRole::UserAdmin, &org), &["ua-team"]).await,
        &ns,
    );
    assert!(!allowed(
        "grant own group",
        in_group.create(&dry(), &via_group).await
    ));
    // What a UserAdmin is for still works.
    let ordinary = in_org(
        membership(
            "ordinary",
            Subject::user("friend@x.example"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
        &org,
    );
    mbrs.create(&dry(), &ordinary)
        .await
        .expect("a UserAdmin adds an ordinary member");
    // And an Admin may grant Manager and workspace Admin.
    let admin_mbrs =
        Api::<Membership>::namespaced(as_user(&user(OrgRole::Admin, &org), &[]).await, &ns);
    admin_mbrs
        .patch("member", &dry_patch(), &Patch::Merge(admin_ws))
        .await
        .expect("an Admin grants workspace Admin");
    crate::core::delete_org(&client, &org).await;
}

/// Item 4: an Admin cannot delete the organization through the garbage collector or pin
/// it with a finalizer, nor turn deletion protection off or change the deletion policy.
#[tokio::test]
async fn an_admin_cannot_delete_or_pin_the_organization() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let admin_c = as_user(&user(OrgRole::Admin, &org), &[]).await;
    let orgs = Api::<Organization>::all(admin_c.clone());
    let uid = "00000000-0000-0000-0000-000000000000";
    let attacks = [
        (
            "ownerReferences",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": uid}]}}),
        ),
        (
            "finalizers",
            json!({"metadata": {"finalizers": ["example.com/pin"]}}),
        ),
        (
            "deletionProtection",
            json!({"spec": {"deletionProtection": false}}),
        ),
        (
            "deletionPolicy",
            json!({"spec": {"deletionPolicy": "Orphan"}}),
        ),
    ];
    for (what, patch) in &attacks {
        let r = orgs
            .patch(&org, &dry_patch(), &Patch::Merge(patch.clone()))
            .await;
        assert!(!allowed(what, r), "an Admin sets the organization's {what}");
    }
    // The same metadata on a Workspace or a Membership.
    let ns = format!("org-{org}");
    let wss = Api::<Workspace>::namespaced(admin_c.clone(), &ns);
    let mbrs = Api::<Membership>::namespaced(admin_c.clone(), &ns);
    for (what, patch) in &attacks[..2] {
        let r = wss
            .patch("default", &dry_patch(), &Patch::Merge(patch.clone()))
            .await;
        assert!(!allowed(what, r), "an Admin sets a Workspace's {what}");
        let r = mbrs
            .patch("viewer", &dry_patch(), &Patch::Merge(patch.clone()))
            .await;
        assert!(!allowed(what, r), "an Admin sets a Membership's {what}");
    }
    // The Owner may turn protection off (and then delete).
    let owner = Api::<Organization>::all(as_user(&user(OrgRole::Owner, &org), &[]).await);
    owner
        .patch(
            &org,
            &dry_patch(),
            &Patch::Merge(json!({"spec": {"deletionProtection": false}})),
        )
        .await
        .expect("the Owner turns protection off");
    crate::core::delete_org(&client, &org).await;
}

/// `tenantry await-admission` (what `make demo` and the chart's post-install hook run
/// between the install and the first tenants) exits 0 once the API server admits an
/// Organization (here at once: the suite's install waited for its policies), and not 0
/// when it cannot tell (no API server answers).
#[tokio::test]
async fn await_admission_exits_once_organizations_are_admitted() {
    let run = |kubeconfig: &std::path::Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["await-admission", "--timeout-seconds", "30"])
            .env("KUBECONFIG", kubeconfig)
            .output()
    };
    let out = run(&crate::harness::cluster().kubeconfig).await.unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "await-admission failed: {said}");
    assert!(said.contains("admits Organizations"), "{said}");

    let nowhere = std::env::temp_dir().join(unique("nowhere.kubeconfig"));
    std::fs::write(
        &nowhere,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let out = run(&nowhere).await.unwrap();
    let _ = std::fs::remove_file(&nowhere);
    assert!(
        !out.status.success(),
        "no API server, yet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Organizations and Workspaces are created with their finalizer (the admission policy
/// `tenantry-finalizers`: no write of the reconciler's own before its first build), which
/// opens no door: a tenant still cannot create one pinned by any other finalizer, nor a
/// Membership with any.
#[tokio::test]
async fn new_objects_come_with_their_finalizer_and_no_other() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let admin_c = as_user(&user(OrgRole::Admin, &org), &[]).await;
    let finalizers = |f: &[&str]| Some(f.iter().map(|f| f.to_string()).collect::<Vec<_>>());

    let orgs = Api::<Organization>::all(client.clone());
    let made = orgs
        .create(
            &dry(),
            &Organization::new(&unique("fin"), org_spec("o@x.example")),
        )
        .await
        .expect("a platform admin creates an organization");
    assert_eq!(
        made.metadata.finalizers,
        finalizers(&[tenantry::labels::ORGANIZATION_FINALIZER]),
        "a new Organization carries its finalizer"
    );

    let wss = Api::<Workspace>::namespaced(admin_c.clone(), &ns);
    let ws = Workspace::new("pinned", Default::default());
    let made = wss
        .create(&dry(), &ws)
        .await
        .expect("an Admin creates a Workspace");
    assert_eq!(
        made.metadata.finalizers,
        finalizers(&[tenantry::labels::WORKSPACE_FINALIZER]),
        "a new Workspace carries its finalizer"
    );
    let mut own = ws.clone();
    own.metadata.finalizers = finalizers(&[tenantry::labels::WORKSPACE_FINALIZER]);
    let made = wss
        .create(&dry(), &own)
        .await
        .expect("an Admin creates a Workspace with the finalizer Tenantry gives it");
    assert_eq!(
        made.metadata.finalizers,
        finalizers(&[tenantry::labels::WORKSPACE_FINALIZER]),
        "the finalizer is not added twice"
    );
    for pins in [
        &["example.com/pin"][..],
        &[tenantry::labels::ORGANIZATION_FINALIZER],
        &[tenantry::labels::WORKSPACE_FINALIZER, "example.com/pin"],
    ] {
        let mut pinned = ws.clone();
        pinned.metadata.finalizers = finalizers(pins);
        let r = wss.create(&dry(), &pinned).await;
        assert!(
            !allowed("a Workspace created pinned", r),
            "an Admin creates a Workspace with finalizers {pins:?}"
        );
    }
    let mbrs = Api::<Membership>::namespaced(admin_c, &ns);
    let mut m = membership(
        "pinned",
        Subject::user("pinned@x.example"),
        OrgRole::Member,
        &[("default", WorkspaceRole::Viewer)],
    );
    m.metadata.finalizers = finalizers(&[tenantry::labels::WORKSPACE_FINALIZER]);
    let r = mbrs.create(&dry(), &m).await;
    assert!(
        !allowed("a Membership created pinned", r),
        "an Admin creates a Membership with a finalizer"
    );
    crate::core::delete_org(&client, &org).await;
}

/// Items 13 and 14 (admission): only an Owner switches acceptance on; Kubernetes' own
/// subjects (system:...) are granted by platform admins only.
#[tokio::test]
async fn acceptance_and_reserved_subjects() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let admin_c = as_user(&user(OrgRole::Admin, &org), &[]).await;
    let owner_c = as_user(&user(OrgRole::Owner, &org), &[]).await;
    let accept_on = json!({"spec": {"membership": {"requireAcceptance": true}}});
    assert!(!allowed(
        "admin requires acceptance",
        Api::<Organization>::all(admin_c.clone())
            .patch(&org, &dry_patch(), &Patch::Merge(accept_on.clone()))
            .await
    ));
    Api::<Organization>::all(owner_c.clone())
        .patch(&org, &dry_patch(), &Patch::Merge(accept_on))
        .await
        .expect("an Owner requires acceptance");

    for subject in [
        Subject::group("system:authenticated"),
        Subject::group("system:unauthenticated"),
        Subject::group("system:masters"),
        Subject::user("system:admin"),
    ] {
        let m = in_org(
            membership("everyone", subject.clone(), OrgRole::Viewer, &[]),
            &org,
        );
        let r = Api::<Membership>::namespaced(owner_c.clone(), &ns)
            .create(&dry(), &m)
            .await;
        assert!(!allowed("reserved subject", r), "{subject:?} as a member");
        let r = Api::<Organization>::all(owner_c.clone())
            .patch(
                &org,
                &dry_patch(),
                &Patch::Merge(json!({"spec": {"owners": [
                    {"kind": "User", "name": user(OrgRole::Owner, &org)},
                    subject,
                ]}})),
            )
            .await;
        assert!(!allowed("reserved owner", r));
    }
    // A ServiceAccount of someone else's namespace as owner: platform only.
    let r = Api::<Organization>::all(owner_c.clone())
        .patch(
            &org,
            &dry_patch(),
            &Patch::Merge(json!({"spec": {"owners": [
                {"kind": "User", "name": user(OrgRole::Owner, &org)},
                {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"},
            ]}})),
        )
        .await;
    assert!(!allowed("foreign SA owner", r));
    // A platform admin may (e.g. a break-glass group).
    let platform = as_user("root@platform.example", &["tenantry:platform-admins"]).await;
    let m = in_org(
        membership(
            "breakglass",
            Subject::group("system:masters"),
            OrgRole::Viewer,
            &[],
        ),
        &org,
    );
    Api::<Membership>::namespaced(platform, &ns)
        .create(&dry(), &m)
        .await
        .expect("a platform admin names a system: group");
    let _ = can_i;
    let _ = PostParams::default();
    crate::core::delete_org(&client, &org).await;
}

/// Items 3 and 10: a rotation grace near i64::MAX overflowed a timestamp and the controller
/// panicked (again at every restart). Now a grace outside 0..=86400 s is a condition on
/// that one Membership, the secret is not rotated, and everything else goes on.
#[tokio::test]
async fn a_huge_rotation_grace_is_a_condition_not_a_crash() {
    let _ = controller();
    let client = admin().await;
    let org = org_with(
        &client,
        "atk3",
        membership("ci", Subject::client("ci"), OrgRole::Viewer, &[]),
    )
    .await;
    let ns = format!("org-{org}");
    let mbrs = Api::<Membership>::namespaced(client.clone(), &ns);
    let rotation = |grace: &str| {
        json!({"metadata": {"annotations": {
            "tenantry.dev/rotate": "r1",
            "tenantry.dev/rotation-grace-seconds": grace,
        }}})
    };
    for grace in ["9223372036854775807", "86401", "-5"] {
        mbrs.patch(
            "ci",
            &PatchParams::default(),
            &Patch::Merge(rotation(grace)),
        )
        .await
        .expect("annotate");
        let m = wait_member_reason(&client, &org, "ci", "InvalidAnnotation").await;
        let status = m.status.unwrap_or_default();
        assert_eq!(status.rotation(), None, "no rotation with grace {grace}");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.message.contains("rotation-grace-seconds")),
            "{:?}",
            status.conditions
        );
    }
    // The controller is alive and reconciles others.
    add_member(
        &client,
        &org,
        membership("after", Subject::user("a@x.example"), OrgRole::Viewer, &[]),
    )
    .await;
    wait_member_reason(&client, &org, "after", "Granted").await;
    // A valid grace lets the rotation happen.
    mbrs.patch("ci", &PatchParams::default(), &Patch::Merge(rotation("60")))
        .await
        .expect("annotate");
    let m = wait_member_reason(&client, &org, "ci", "Granted").await;
    assert_eq!(m.status.unwrap_or_default().rotation(), Some("r1"));
    crate::core::delete_org(&client, &org).await;
}

/// Item 5: an Admin read an Owner-role client's Secret and exchanged it for an Owner token.
/// Admins read the credentials of clients below Owner only, by name; Owners read all.
#[tokio::test]
async fn an_admin_cannot_read_an_owner_clients_secret() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    add_member(
        &client,
        &org,
        membership("root-bot", Subject::client("root-bot"), OrgRole::Owner, &[]),
    )
    .await;
    wait_member_reason(&client, &org, "root-bot", "Granted").await;
    let admin_secrets =
        Api::<Secret>::namespaced(as_user(&user(OrgRole::Admin, &org), &[]).await, &ns);
    let owner_secrets =
        Api::<Secret>::namespaced(as_user(&user(OrgRole::Owner, &org), &[]).await, &ns);
    // The Member client's credentials: readable by the Admin (once the Role is written).
    wait_readable(
        &admin_secrets,
        "bot-credentials",
        "an Admin reads a Member client's credentials",
    )
    .await;
    let r = admin_secrets.get("root-bot-credentials").await;
    assert!(!allowed("admin reads owner client", r));
    let r = admin_secrets.list(&Default::default()).await;
    assert!(
        !allowed("admin lists secrets", r),
        "listing would show them all"
    );
    owner_secrets
        .get("root-bot-credentials")
        .await
        .expect("an Owner reads an Owner client's credentials");
    // Lowering the client to Admin (an Owner's decision) makes it readable to Admins.
    Api::<Membership>::namespaced(as_user(&user(OrgRole::Owner, &org), &[]).await, &ns)
        .patch(
            "root-bot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"role": "Admin"}})),
        )
        .await
        .expect("the Owner lowers the client");
    wait_readable(
        &admin_secrets,
        "root-bot-credentials",
        "readable once Admin",
    )
    .await;
    crate::core::delete_org(&client, &org).await;
}

/// A privileged pod with a hostPath volume: node root where Pod Security allows it.
fn privileged_pod() -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {
            "containers": [{
                "name": "c",
                "image": "busybox",
                "securityContext": {"privileged": true},
                "volumeMounts": [{"name": "host", "mountPath": "/host"}],
            }],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        },
    }))
    .expect("a pod")
}

/// Item 7: an org Admin set podSecurity: privileged and ran a privileged hostPath pod.
/// Tenants choose Pod Security up to the platform's ceiling (--pod-security-ceiling,
/// baseline); a platform admin may allow more for one organization (spec.limits, which
/// the organization's own Admins cannot change).
#[tokio::test]
async fn pod_security_has_a_platform_ceiling() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let ws_ns = format!("{org}--default");
    let admin_c = as_user(&user(OrgRole::Admin, &org), &[]).await;
    Api::<Workspace>::namespaced(admin_c.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podSecurity": "privileged"}})),
        )
        .await
        .expect("an Admin edits the workspace");
    crate::core::wait_ws_reason(&client, &org, "default", "PodSecurityNotAllowed").await;
    let enforce = |n: &Namespace| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-security.kubernetes.io/enforce").cloned())
    };
    let namespaces = Api::<Namespace>::all(client.clone());
    let level = enforce(&namespaces.get(&ws_ns).await.expect("namespace"));
    assert_eq!(level.as_deref(), Some("baseline"));
    // The real admission path refuses the pod, for the Admin (a workspace Admin) too.
    let pods = Api::<Pod>::namespaced(admin_c.clone(), &ws_ns);
    let r = pods.create(&dry(), &privileged_pod()).await;
    assert!(
        !allowed("privileged pod", r),
        "a privileged pod under baseline"
    );
    // The organization's Admin cannot raise the ceiling.
    let r = Api::<Organization>::all(admin_c.clone())
        .patch(
            &org,
            &dry_patch(),
            &Patch::Merge(json!({"spec": {"limits": {"podSecurity": "privileged"}}})),
        )
        .await;
    assert!(!allowed("admin raises the ceiling", r));
    for (what, limits) in [
        ("maxWorkspaces", json!({"maxWorkspaces": 1000})),
        ("maxMembers", json!({"maxMembers": 1000})),
    ] {
        let r = Api::<Organization>::all(admin_c.clone())
            .patch(
                &org,
                &dry_patch(),
                &Patch::Merge(json!({"spec": {"limits": limits}})),
            )
            .await;
        assert!(!allowed(what, r), "an Admin raises {what}");
    }
    // A platform admin allows privileged for this organization: honoured.
    let platform = as_user("root@platform.example", &["tenantry:platform-admins"]).await;
    Api::<Organization>::all(platform)
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"limits": {"podSecurity": "privileged"}}})),
        )
        .await
        .expect("a platform admin raises the ceiling");
    wait_ws_ready(&client, &org, "default").await;
    let level = enforce(&namespaces.get(&ws_ns).await.expect("namespace"));
    assert_eq!(level.as_deref(), Some("privileged"));
    crate::core::delete_org(&client, &org).await;
}

/// Item 8: under the template {org}-{workspace}, org "a" claimed the namespaces of a future
/// org "a-b" (and org "cert" the namespace "cert-manager"). Organization names cannot
/// contain "--", which now joins organization and workspace: both organizations get
/// their own namespaces, and names with "--" are refused.
#[tokio::test]
async fn organizations_cannot_squat_each_others_namespaces() {
    let _ = controller();
    let client = admin().await;
    let a = unique("sq");
    let b = format!("{a}-x");
    let spec = crate::core::bare_org_spec("o@x.example");
    create_org(&client, &a, spec.clone()).await;
    crate::core::create_ws(&client, &a, "x-clash", Default::default()).await;
    let first = wait_ws_ready(&client, &a, "x-clash").await;
    create_org(&client, &b, spec.clone()).await;
    crate::core::create_ws(&client, &b, "clash", Default::default()).await;
    let second = wait_ws_ready(&client, &b, "clash").await;
    let ns = |w: &Workspace| w.status.as_ref().and_then(|s| s.namespace.clone());
    assert_eq!(ns(&first), Some(format!("{a}--x-clash")));
    assert_eq!(ns(&second), Some(format!("{a}-x--clash")));
    // An organization named with "--" is refused by the API server.
    let r = Api::<Organization>::all(client.clone())
        .create(&dry(), &Organization::new(&format!("{a}--y"), spec))
        .await;
    assert!(
        message(&r).contains("without '--'"),
        "an organization name with --: {r:?}"
    );
    crate::core::delete_org(&client, &a).await;
    crate::core::delete_org(&client, &b).await;
}

/// Item 6: an Owner of another organization froze revocation in a stranger's: naming the
/// stranger in `spec.owners` of an older organization pushed the stranger's over
/// --max-organizations-per-owner, which then stopped reconciling (removed members kept
/// their bindings). The limit now decides only whether a new organization is provisioned.
#[tokio::test]
async fn naming_a_stranger_owner_does_not_freeze_their_organization() {
    let cp = crate::harness::dedicated().await;
    let client = cp.admin().await;
    let operator = crate::resilience::Operator::ready_with(
        &cp.kubeconfig,
        "attacks-owner-limit",
        &["--max-organizations-per-owner", "1"],
    )
    .await;
    let evil = crate::core::bare_org_spec("eve@x.example");
    create_org(&client, "evil", evil).await;
    create_org(&client, "sams", org_spec("sam@x.example")).await;
    wait_ws_ready(&client, "sams", "default").await;
    add_member(
        &client,
        "sams",
        membership(
            "bob",
            Subject::user("bob@x.example"),
            OrgRole::Viewer,
            &[("default", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    wait_member_reason(&client, "sams", "bob", "Granted").await;
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), "sams--default");
    fn bob_bound(rb: Option<&RoleBinding>) -> bool {
        rb.and_then(|rb| rb.subjects.as_ref())
            .is_some_and(|s| s.iter().any(|s| s.name == "bob@x.example"))
    }
    wait_for(
        &bindings,
        "tenantry-workspace-viewer",
        "bob bound",
        bob_bound,
    )
    .await;

    // Eve names Sam an owner of her older organization.
    Api::<Organization>::all(client.clone())
        .patch(
            "evil",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"owners": [
                {"kind": "User", "name": "eve@x.example"},
                {"kind": "User", "name": "sam@x.example"},
            ]}})),
        )
        .await
        .expect("eve adds sam");
    // Sam removes Bob: the binding goes, and Sam's organization stays Ready.
    Api::<Membership>::namespaced(client.clone(), "org-sams")
        .delete("bob", &Default::default())
        .await
        .expect("remove bob");
    wait_for(
        &bindings,
        "tenantry-workspace-viewer",
        "bob unbound",
        |rb: Option<&RoleBinding>| !bob_bound(rb),
    )
    .await;
    let org_ns_bindings = Api::<RoleBinding>::namespaced(client.clone(), "org-sams");
    wait_for(
        &org_ns_bindings,
        "tenantry-org-viewer",
        "bob unbound",
        |rb: Option<&RoleBinding>| !bob_bound(rb),
    )
    .await;
    let sams = crate::core::wait_org_ready(&client, "sams").await;
    assert!(sams.status.is_some(), "sams stays Ready");
    // The limit still holds for Sam's next organization.
    Api::<Organization>::all(client.clone())
        .create(
            &PostParams::default(),
            &Organization::new("sams-next", org_spec("sam@x.example")),
        )
        .await
        .expect("create");
    crate::core::wait_org_status(&client, "sams-next", "OwnerLimitReached", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "OwnerLimitReached")
    })
    .await;
    drop(operator);
}

/// Item 13: with acceptance required, Owner and Admin User Memberships could never be
/// accepted (accepting was judged as granting Owner), and switching acceptance on
/// suspended every member. Now any invitee accepts, and members already granted stay.
/// Item 16: a 252-character Membership name made the invitation objects invalid and the
/// Membership got no condition at all.
#[tokio::test]
async fn acceptance_works_for_every_role_and_spares_existing_members() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let owner = as_user(&user(OrgRole::Owner, &org), &[]).await;
    Api::<Organization>::all(owner.clone())
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"membership": {"requireAcceptance": true}}})),
        )
        .await
        .expect("an Owner requires acceptance");
    let long = "l".repeat(252);
    for (name, who, role) in [
        ("olive", "olive@x.example", OrgRole::Owner),
        ("adam", "adam@x.example", OrgRole::Admin),
        (long.as_str(), "long@x.example", OrgRole::Viewer),
    ] {
        add_member(
            &client,
            &org,
            membership(name, Subject::user(who), role, &[]),
        )
        .await;
        wait_member_reason(&client, &org, name, "InvitationPending").await;
        // Its Event too: the Event of an object of the longest name was refused (its
        // name was the object's plus a suffix).
        wait_event_about(&client, &ns, name, "InvitationPending").await;
        Api::<Membership>::namespaced(as_user(who, &[]).await, &ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"tenantry.dev/accepted": "true"}}}),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{who} accepts its {role:?} invitation: {e}"));
        wait_member_reason(&client, &org, name, "Granted").await;
    }
    // Everyone granted before acceptance was required is still granted.
    let members = Api::<Membership>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("list");
    for m in members.items {
        let reason = m
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone());
        assert_eq!(
            reason.as_deref(),
            Some("Granted"),
            "{} after acceptance was switched on",
            m.metadata.name.unwrap_or_default()
        );
    }
    // #13: their place rested on their status, which a restore without status or a status
    // rewrite loses (the member was then suspended as an invitee). Tenantry marks them
    // (tenantry.dev/accepted: grandfathered), a durable fact only it may write.
    let memberships = Api::<Membership>::namespaced(client.clone(), &ns);
    let earlier: Vec<&str> = OrgRole::ALL
        .iter()
        .filter(|r| **r != OrgRole::Owner)
        .map(|r| r.slug())
        .collect();
    for name in &earlier {
        wait_for(
            &memberships,
            name,
            "marked grandfathered",
            |m: Option<&Membership>| {
                m.is_some_and(|m| {
                    m.annotations()
                        .get("tenantry.dev/accepted")
                        .map(String::as_str)
                        == Some("grandfathered")
                })
            },
        )
        .await;
    }
    for name in &earlier {
        memberships
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": null})),
            )
            .await
            .expect("a platform admin clears a status");
        wait_member_reason(&client, &org, name, "Granted").await;
    }
    // Nobody else may mark an invitee so: not an Admin of the organization.
    add_member(
        &client,
        &org,
        membership(
            "nina",
            Subject::user("nina@x.example"),
            OrgRole::Viewer,
            &[],
        ),
    )
    .await;
    wait_member_reason(&client, &org, "nina", "InvitationPending").await;
    let by_admin = Api::<Membership>::namespaced(
        as_user(&user(OrgRole::Admin, &org), &[]).await,
        &ns,
    )
    .patch(
        "nina",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"tenantry.dev/accepted": "grandfathered"}}}),
        ),
    )
    .await;
    assert_eq!(
        status_of(&by_admin),
        403,
        "an Admin marks an invitee grandfathered: {by_admin:?}"
    );
    crate::core::delete_org(&client, &org).await;
}

/// Item 14: with --require-verification, an unverified organization still added Owner
/// Memberships, groups and clients. Until verified, its members are its spec.owners.
#[tokio::test]
async fn an_unverified_organization_adds_nobody_beyond_its_owners() {
    let cp = crate::harness::dedicated().await;
    let client = cp.admin().await;
    let operator = crate::resilience::Operator::ready_with(
        &cp.kubeconfig,
        "attacks-verification",
        &["--require-verification=true"],
    )
    .await;
    create_org(&client, "unverified", org_spec("o@x.example")).await;
    let members = [
        membership(
            "co-owner",
            Subject::user("co@x.example"),
            OrgRole::Owner,
            &[],
        ),
        membership("team", Subject::group("devs"), OrgRole::Viewer, &[]),
        membership("bot", Subject::client("bot"), OrgRole::Viewer, &[]),
    ];
    for m in members {
        let name = m.metadata.name.clone().unwrap_or_default();
        add_member(&client, "unverified", m).await;
        wait_member_reason(&client, "unverified", &name, "OrganizationNotVerified").await;
    }
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), "org-unverified");
    let owners = bindings
        .get("tenantry-org-owner")
        .await
        .expect("the owners' binding");
    assert_eq!(
        owners
            .subjects
            .unwrap_or_default()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        vec!["o@x.example"],
        "only spec.owners"
    );
    for rb in ["tenantry-org-viewer"] {
        assert!(bindings.get_opt(rb).await.expect("get").is_none(), "{rb}");
    }
    // Verified by a platform admin: they are granted.
    Api::<Organization>::all(client.clone())
        .patch(
            "unverified",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"verified": true}})),
        )
        .await
        .expect("verify");
    for name in ["co-owner", "team", "bot"] {
        wait_member_reason(&client, "unverified", name, "Granted").await;
    }
    drop(operator);
}

/// Item 15: `tenantry tree` printed a displayName's escape sequences raw (a tenant could
/// rewrite an operator's terminal). Text from the API is printed escaped.
#[tokio::test]
async fn tree_prints_tenant_text_escaped() {
    let _ = controller();
    let client = admin().await;
    let org = unique("atk15");
    let mut spec = org_spec("o@x.example");
    spec.display_name = "Evil\u{1b}[2J\u{1b}]0;pwned\u{7}\nOrganization fake \"x\" Ready".into();
    create_org(&client, &org, spec).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["tree", &org])
        .env("KUBECONFIG", &crate::harness::cluster().kubeconfig)
        .output()
        .expect("run tenantry tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("Organization fake")),
        "a display name cannot forge a line: {text}"
    );
    assert!(text.contains("Evil\\u{1b}[2J"), "{text}");
    crate::core::delete_org(&client, &org).await;
}

/// Peak resident memory of process `pid`, in MiB (Linux VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// Item 9: failures were keyed by the client id an anonymous caller names (anyone who
/// knows it locked the real client out), the limiter let 40 parallel wrong attempts
/// through, and each Argon2 verification allocates about 19 MiB (a few concurrent ones
/// exceed the chart's 128 MiB). Now: limited per source, reserved before verifying, at
/// most two verifications at once.
#[tokio::test]
async fn the_token_endpoint_cannot_be_used_to_lock_out_or_exhaust() {
    let _ = controller();
    let client = admin().await;
    let org = unique("atk9");
    create_org(&client, &org, org_spec("o@x.example")).await;
    add_member(
        &client,
        &org,
        membership("ci", Subject::client("ci"), OrgRole::Viewer, &[]),
    )
    .await;
    wait_member_reason(&client, &org, "ci", "Granted").await;
    let (id, secret) = crate::clients::credentials(&client, &format!("org-{org}"), "ci").await;
    let (mut server, port) = crate::clients::token_server().await;
    let pid = server.id().expect("pid");
    let idle = peak_rss_mib(pid);

    // An attacker at 127.0.0.2 who knows the client id: 40 wrong attempts at once.
    let attempts = (0..40).map(|_| {
        let id = id.clone();
        async move {
            crate::clients::post_token_from(
                "127.0.0.2",
                port,
                "grant_type=client_credentials",
                Some((&id, "guess")),
            )
            .await
            .0
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let verified = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429 || **s == 503).count();
    println!("40 parallel wrong attempts: {verified} verified (401), {refused} refused");
    assert!(
        verified <= 10,
        "at most the limit is verified: {statuses:?}"
    );
    assert_eq!(verified + refused, 40, "{statuses:?}");
    let peak = peak_rss_mib(pid);
    println!("token-server peak RSS: {idle:.1} MiB idle, {peak:.1} MiB after the flood");
    assert!(peak < 100.0, "memory stays flat: {peak:.1} MiB");
    // The attacker is locked out; the real client, elsewhere, is not.
    let (s, _) = crate::clients::post_token_from(
        "127.0.0.2",
        port,
        "grant_type=client_credentials",
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(s, 429, "the attacking source is limited");
    let (s, body) = crate::clients::post_token_from(
        "127.0.0.3",
        port,
        "grant_type=client_credentials",
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(s, 200, "the real client still gets a token: {body}");
    server.start_kill().expect("stop");
    crate::core::delete_org(&client, &org).await;
}

/// Item 10: a rotation is not a revocation. Tokens minted with a leaked secret kept
/// working for their lifetime after the secret was rotated. `tenantry.dev/revoke` issues
/// a new secret (the old one refused at once, whatever the grace annotation says) and
/// replaces the client's ServiceAccount, so every token issued before is rejected.
#[tokio::test]
async fn a_revocation_kills_the_tokens_of_a_leaked_secret() {
    use crate::clients::{can_create_configmap, credentials, post_token, token_server, with_token};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let _ = controller();
    let client = admin().await;
    let org = org_with(
        &client,
        "atk10",
        membership(
            "ci",
            Subject::client("ci"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
    )
    .await;
    let ns = format!("org-{org}");
    let ws = format!("{org}--default");
    let (id, leaked) = credentials(&client, &ns, "ci").await;
    let (mut server, port) = token_server().await;
    let mint = |secret: String| {
        let id = id.clone();
        async move { post_token(port, "grant_type=client_credentials", Some((&id, &secret))).await }
    };
    let (status, body) = mint(leaked.clone()).await;
    assert_eq!(status, 200, "{body}");
    let stolen = with_token(body["access_token"].as_str().expect("a token")).await;
    assert_eq!(
        can_create_configmap(&stolen, &ws).await,
        200,
        "the stolen token works"
    );

    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    let old_uid = sas
        .get("ci-client")
        .await
        .expect("the client's ServiceAccount")
        .metadata
        .uid;
    // A rotation alone (what main offered) leaves the stolen token working.
    Api::<Membership>::namespaced(client.clone(), &ns)
        .patch(
            "ci",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "tenantry.dev/revoke": "leak-1",
                // A grace asked for alongside is not honoured by a revocation.
                "tenantry.dev/rotation-grace-seconds": "3600",
            }}})),
        )
        .await
        .expect("annotate");
    wait_for(
        &Api::<Membership>::namespaced(client.clone(), &ns),
        "ci",
        "revocation leak-1 handled",
        |m: Option<&Membership>| {
            m.and_then(|m| m.status.as_ref())
                .is_some_and(|s| s.revocation() == Some("leak-1"))
        },
    )
    .await;
    let new_uid = sas
        .get("ci-client")
        .await
        .expect("a new ServiceAccount")
        .metadata
        .uid;
    assert_ne!(old_uid, new_uid, "the ServiceAccount was replaced");
    let rejected = async {
        while can_create_configmap(&stolen, &ws).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), rejected)
        .await
        .expect("the token minted with the leaked secret is rejected");
    assert_eq!(
        mint(leaked.clone()).await.0,
        401,
        "the leaked secret is refused"
    );
    let (id2, fresh) = credentials(&client, &ns, "ci").await;
    assert_eq!(id2, id, "the client id is stable");
    assert_ne!(fresh, leaked);
    let (status, body) = mint(fresh).await;
    assert_eq!(status, 200, "the new secret works: {body}");
    let renewed = with_token(body["access_token"].as_str().expect("a token")).await;
    assert_eq!(
        can_create_configmap(&renewed, &ws).await,
        200,
        "the new ServiceAccount keeps the client's grants"
    );
    // Handled once: a later reconcile does not revoke again.
    let m = wait_member_reason(&client, &org, "ci", "Granted").await;
    assert_eq!(m.status.unwrap_or_default().revocation(), Some("leak-1"));
    assert_eq!(
        sas.get("ci-client")
            .await
            .expect("still there")
            .metadata
            .uid,
        new_uid
    );
    server.start_kill().expect("stop the token server");
    crate::core::delete_org(&client, &org).await;
}

/// Item 12: a member who was workspace Admin bound themselves (or a group they are in) in
/// the workspace, and kept that access after their Membership was removed. Now RoleBindings
/// a tenant makes in a workspace may name only that workspace's ServiceAccounts: people get
/// access through Memberships, so removing the Membership removes the access.
#[tokio::test]
async fn a_removed_admin_keeps_no_binding_of_their_own() {
    use k8s_openapi::api::rbac::v1::{RoleRef, Subject as RbacSubject};
    let _ = controller();
    let client = admin().await;
    const LEAVER: &str = "leaver@atk12.example";
    let org = org_with(
        &client,
        "atk12",
        membership(
            "leaver",
            Subject::user(LEAVER),
            OrgRole::Member,
            &[("default", WorkspaceRole::Admin)],
        ),
    )
    .await;
    let leaver = LEAVER.to_string();
    let ws = format!("{org}--default");
    let as_leaver = as_user(&leaver, &["leavers"]).await;
    let wait_access = |want: bool| {
        let as_leaver = as_leaver.clone();
        let ws = ws.clone();
        async move {
            let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
            while can_i(&as_leaver, "create", "", "configmaps", &ws).await != want {
                assert!(tokio::time::Instant::now() < deadline, "access {want}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    wait_access(true).await;
    let bindings = Api::<RoleBinding>::namespaced(as_leaver.clone(), &ws);
    let binding = |name: &str, role: &str, subject: RbacSubject| RoleBinding {
        metadata: kube::core::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![subject]),
    };
    let subject = |kind: &str, name: &str, ns: Option<&str>| RbacSubject {
        kind: kind.into(),
        name: name.into(),
        namespace: ns.map(str::to_string),
        api_group: (kind != "ServiceAccount").then(|| "rbac.authorization.k8s.io".into()),
    };
    // Every way a person keeps the workspace for themselves is refused, with a reason.
    for (name, role, s) in [
        (
            "self",
            "tenantry-workspace-admin",
            subject("User", &leaver, None),
        ),
        ("self-admin", "admin", subject("User", &leaver, None)),
        ("friend", "edit", subject("User", "friend@x.example", None)),
        ("my-group", "edit", subject("Group", "leavers", None)),
        (
            "foreign-sa",
            "edit",
            subject("ServiceAccount", "default", Some(&format!("org-{org}"))),
        ),
    ] {
        let r = bindings
            .create(&PostParams::default(), &binding(name, role, s))
            .await;
        let why = message(&r);
        assert!(!allowed("a self-made binding", r), "{name}: {why}");
        assert!(why.contains("Membership"), "{name}: {why}");
    }
    // An update cannot slip a person into a binding either.
    let workload = binding(
        "app",
        "edit",
        subject("ServiceAccount", "default", Some(&ws)),
    );
    bindings
        .create(&PostParams::default(), &workload)
        .await
        .expect("the workspace's own ServiceAccounts may be bound: its workloads");
    let r = bindings
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": [
                {"kind": "ServiceAccount", "name": "default", "namespace": ws},
                {"kind": "User", "name": leaver, "apiGroup": "rbac.authorization.k8s.io"},
            ]})),
        )
        .await;
    let why = message(&r);
    assert!(!allowed("adding oneself", r), "{why}");
    // A platform admin may still bind a person by hand.
    Api::<RoleBinding>::namespaced(client.clone(), &ws)
        .create(
            &dry(),
            &binding(
                "by-platform",
                "view",
                subject("User", "auditor@x.example", None),
            ),
        )
        .await
        .expect("a platform admin binds anyone");

    // Removed: no access left.
    Api::<Membership>::namespaced(client.clone(), &format!("org-{org}"))
        .delete("leaver", &Default::default())
        .await
        .expect("remove the member");
    wait_access(false).await;
    assert!(!can_i(&as_leaver, "get", "", "secrets", &ws).await);
    assert!(
        !can_i(
            &as_leaver,
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            &ws
        )
        .await
    );
    crate::core::delete_org(&client, &org).await;
}

/// Item 7 (quotas): an org Admin gave a workspace any quota it liked (or none: unlimited).
/// A platform admin sets a per-workspace ceiling in `spec.limits.workspaceQuota`; a quota
/// above it is enforced at the ceiling and says `QuotaNotAllowed`, a resource left out gets
/// the ceiling, and the Admin cannot raise it.
#[tokio::test]
async fn a_workspace_quota_has_a_platform_ceiling() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let ws_ns = format!("{org}--default");
    let admin_c = as_user(&user(OrgRole::Admin, &org), &[]).await;
    let r = Api::<Organization>::all(admin_c.clone())
        .patch(
            &org,
            &dry_patch(),
            &Patch::Merge(
                json!({"spec": {"limits": {"workspaceQuota": {"requests.cpu": "1000"}}}}),
            ),
        )
        .await;
    assert!(!allowed("an Admin sets the quota ceiling", r));
    let platform = as_user("root@platform.example", &["tenantry:platform-admins"]).await;
    Api::<Organization>::all(platform)
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"limits": {"workspaceQuota": {
                "requests.cpu": "2", "requests.memory": "4Gi", "pods": 20,
            }}}})),
        )
        .await
        .expect("a platform admin sets the ceiling");
    // No quota asked: the ceiling applies (never unlimited).
    crate::organizationwide::wait_hard(&client, &ws_ns, "pods", "20").await;
    // The Admin asks for far more: enforced at the ceiling, and said.
    Api::<Workspace>::namespaced(admin_c.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quota": {"requests.cpu": "64", "requests.memory": "1Ei", "services": "5"}}})),
        )
        .await
        .expect("an Admin edits the workspace");
    let ws = crate::core::wait_ws_reason(&client, &org, "default", "QuotaNotAllowed").await;
    let message = ws
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .map(|c| c.message)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(message.contains("requests.cpu 64 > 2"), "{message}");
    let quota = crate::organizationwide::hard(&client, &ws_ns)
        .await
        .expect("a quota");
    assert_eq!(quota.get("requests.cpu").map(String::as_str), Some("2"));
    assert_eq!(
        quota.get("requests.memory").map(String::as_str),
        Some("4Gi")
    );
    assert_eq!(
        quota.get("pods").map(String::as_str),
        Some("20"),
        "filled in"
    );
    assert_eq!(
        quota.get("services").map(String::as_str),
        Some("5"),
        "not capped: kept"
    );
    // Within the ceiling: as asked, Ready.
    Api::<Workspace>::namespaced(admin_c.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quota": {"requests.cpu": "1500m", "requests.memory": null, "services": null}}})),
        )
        .await
        .expect("an Admin edits the workspace");
    wait_ws_ready(&client, &org, "default").await;
    let quota = crate::organizationwide::hard(&client, &ws_ns)
        .await
        .expect("a quota");
    assert_eq!(quota.get("requests.cpu").map(String::as_str), Some("1500m"));
    assert_eq!(
        quota.get("requests.memory").map(String::as_str),
        Some("4Gi")
    );
    crate::core::delete_org(&client, &org).await;
}

/// Issue 14: an organization adopts a namespace declared for it (so that a whole tenancy
/// applies in one go). Whoever may create namespaces but is not a platform admin cannot
/// declare one (the `tenantry.dev/` labels are the platform's), and an organization never
/// adopts a namespace made for it without the declaration, or declared for another
/// organization: it reports the conflict and leaves the namespace alone.
#[tokio::test]
async fn only_the_platform_declares_an_organization_namespace() {
    let _ = controller();
    let client = admin().await;
    let plain = |name: &str, org: Option<&str>| Namespace {
        metadata: kube::core::ObjectMeta {
            name: Some(name.to_string()),
            labels: org.map(|o| [("tenantry.dev/organization".to_string(), o.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    // A namespace creator who is not a platform admin (e.g. a self-service portal's
    // account) plants org-<future organization>, with a RoleBinding of its own inside.
    let squatter = unique("ns-maker");
    crate::access::grant_cluster(&client, &squatter, "namespaces", &["create"]).await;
    let as_squatter = Api::<Namespace>::all(as_user(&squatter, &[]).await);
    let (planted, crossed) = (unique("plant"), unique("cross"));
    let r = as_squatter
        .create(&dry(), &plain(&format!("org-{planted}"), Some(&planted)))
        .await;
    let said = message(&r);
    assert!(
        !allowed("declaring an organization namespace", r),
        "only the platform declares an organization's namespace: {said}"
    );
    as_squatter
        .create(
            &PostParams::default(),
            &plain(&format!("org-{planted}"), None),
        )
        .await
        .expect("a plain namespace of that name is the squatter's right");
    // A platform admin's slip: declared for another organization.
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &plain(&format!("org-{crossed}"), Some(&planted)),
        )
        .await
        .unwrap();
    for name in [&planted, &crossed] {
        Api::<Organization>::all(client.clone())
            .create(
                &PostParams::default(),
                &Organization::new(name, crate::core::bare_org_spec("o@x.example")),
            )
            .await
            .unwrap();
        crate::core::wait_org_status(&client, name, "NamespaceConflict", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "NamespaceConflict")
        })
        .await;
        let ns = Api::<Namespace>::all(client.clone())
            .get(&format!("org-{name}"))
            .await
            .unwrap();
        assert!(
            ns.metadata.owner_references.is_none()
                && !ns
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("tenantry.dev/owner-uid"),
            "org-{name} is left alone"
        );
    }
    let mut ws = Workspace::new("w", Default::default());
    ws.metadata.namespace = Some(format!("org-{crossed}"));
    let r = Api::<Workspace>::namespaced(client.clone(), &format!("org-{crossed}"))
        .create(&dry(), &ws)
        .await;
    assert!(
        message(&r).contains("lives in its organization's namespace"),
        "a Workspace goes only where its organization's namespace is: {r:?}"
    );
    // Neither namespace is the organizations': they stay when the organizations go.
    for name in [&planted, &crossed] {
        crate::core::unprotect(&client, name).await;
        Api::<Organization>::all(client.clone())
            .delete(name, &Default::default())
            .await
            .unwrap();
        crate::harness::wait_gone(&Api::<Organization>::all(client.clone()), name).await;
        let ns = Api::<Namespace>::all(client.clone())
            .get(&format!("org-{name}"))
            .await
            .unwrap();
        assert!(ns.metadata.deletion_timestamp.is_none(), "org-{name} stays");
        Api::<Namespace>::all(client.clone())
            .delete(&format!("org-{name}"), &Default::default())
            .await
            .unwrap();
    }
}

/// Waits until `secrets` (a user's view) may read Secret `name`: RBAC written by Tenantry
/// takes a moment.
async fn wait_readable(secrets: &Api<Secret>, name: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
    while secrets.get(name).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Waits for an Event in `ns` about the object named `name` with `reason`.
async fn wait_event_about(client: &kube::Client, ns: &str, name: &str, reason: &str) {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::{WatchStreamExt, watcher};
    let events = watcher(
        Api::<Event>::namespaced(client.clone(), ns),
        watcher::Config::default(),
    )
    .applied_objects()
    .try_filter(|e| {
        futures::future::ready(
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name),
        )
    })
    .boxed();
    let first = tokio::time::timeout(crate::harness::TIMEOUT, events.into_future()).await;
    assert!(
        matches!(first, Ok((Some(Ok(_)), _))),
        "an Event {reason} about {name} in {ns}"
    );
}

/// A client Membership named after a Secret Tenantry did not make (a platform's, in the
/// organization namespace): Tenantry wrote the client's secret into it (keeping the
/// platform's keys, annotations and owners), took it over with an owner reference (so
/// removing the Membership deleted the platform's Secret), and gave the organization's
/// Admins read access to it by name. Now the name is a conflict the Membership reports,
/// the Secret is left alone, and nobody reads it through Tenantry.
#[tokio::test]
async fn a_client_never_takes_over_a_secret_tenantry_did_not_make() {
    use k8s_openapi::ByteString;
    let _ = controller();
    let client = admin().await;
    let boss = "adm@x.example";
    let org = org_with(
        &client,
        "atk-cred",
        membership("adm", Subject::user(boss), OrgRole::Admin, &[]),
    )
    .await;
    let ns = format!("org-{org}");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let platform = Secret {
        metadata: kube::core::ObjectMeta {
            name: Some("db-credentials".into()),
            annotations: Some(
                [("example.com/copy-to".to_string(), "elsewhere".to_string())].into(),
            ),
            ..Default::default()
        },
        data: Some(
            [(
                "password".to_string(),
                ByteString(b"platform-only".to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let before = secrets
        .create(&PostParams::default(), &platform)
        .await
        .unwrap();
    // An Admin adds a client of that name.
    let as_admin = as_user(boss, &[]).await;
    let admin_memberships = Api::<Membership>::namespaced(as_admin.clone(), &ns);
    admin_memberships
        .create(
            &PostParams::default(),
            &in_org(
                membership("db", Subject::client("db"), OrgRole::Member, &[]),
                &org,
            ),
        )
        .await
        .expect("an Admin adds a client");
    let m = wait_member_reason(&client, &org, "db", "CredentialsConflict").await;
    let message = crate::core::ready_message(&m.status.unwrap().conditions);
    assert!(message.contains("db-credentials"), "{message}");
    wait_event_about(&client, &ns, "db", "CredentialsConflict").await;
    // Nothing is written into it.
    let after = secrets.get("db-credentials").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "left alone"
    );
    assert!(after.metadata.owner_references.is_none());
    // Nor may the Admin read it: not even once the Admins' credentials Role has been
    // rewritten for a later client (which the Admin reads).
    admin_memberships
        .create(
            &PostParams::default(),
            &in_org(
                membership("ci", Subject::client("ci"), OrgRole::Member, &[]),
                &org,
            ),
        )
        .await
        .unwrap();
    wait_member_reason(&client, &org, "ci", "Granted").await;
    let admin_secrets = Api::<Secret>::namespaced(as_admin.clone(), &ns);
    wait_readable(
        &admin_secrets,
        "ci-credentials",
        "the Admin reads the later client's credentials",
    )
    .await;
    let r = admin_secrets.get("db-credentials").await;
    assert!(
        !allowed("the Admin reads the platform's Secret", r),
        "the platform's Secret is not the client's"
    );
    // The same for its ServiceAccount's name: a platform's ServiceAccount `ops-client`
    // (pods run as it, it has rights elsewhere) is never written to, nor given a verifier
    // whose secret would mint its tokens at the token endpoint.
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
    let platform_sa = sas
        .create(
            &PostParams::default(),
            &k8s_openapi::api::core::v1::ServiceAccount {
                metadata: kube::core::ObjectMeta {
                    name: Some("ops-client".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin_memberships
        .create(
            &PostParams::default(),
            &in_org(
                membership("ops", Subject::client("ops"), OrgRole::Member, &[]),
                &org,
            ),
        )
        .await
        .unwrap();
    let m = wait_member_reason(&client, &org, "ops", "CredentialsConflict").await;
    let message = format!("{:?}", m.status.unwrap().conditions);
    assert!(message.contains("ops-client"), "{message}");
    let after = sas.get("ops-client").await.unwrap();
    assert_eq!(
        after.resource_version(),
        platform_sa.resource_version(),
        "left alone"
    );
    assert!(
        secrets.get_opt("ops-credentials").await.unwrap().is_none(),
        "no secret issued for it"
    );
    admin_memberships
        .delete("ops", &Default::default())
        .await
        .unwrap();
    crate::harness::wait_gone(&admin_memberships, "ops").await;
    assert!(
        sas.get_opt("ops-client").await.unwrap().is_some(),
        "the platform's stays"
    );

    // Once the platform's Secret is gone (and the Membership looked at again), the client
    // gets its credentials there, readable by the Admin.
    secrets
        .delete("db-credentials", &Default::default())
        .await
        .unwrap();
    crate::harness::wait_gone(&secrets, "db-credentials").await;
    admin_memberships
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/note": "renamed"}}})),
        )
        .await
        .unwrap();
    wait_member_reason(&client, &org, "db", "Granted").await;
    let issued = secrets.get("db-credentials").await.unwrap();
    let value = String::from_utf8(issued.data.unwrap()["client-secret"].0.clone()).unwrap();
    assert!(tenantry::credentials::looks_generated(&value));
    wait_readable(
        &admin_secrets,
        "db-credentials",
        "the Admin reads the client's own credentials",
    )
    .await;
    crate::core::delete_org(&client, &org).await;
}

/// Someone who may write Secrets in the organization namespace but not read them (a CI
/// system's account, say) put a value of their own into a client's credentials Secret,
/// with an annotation that copies the Secret where they can read it; at the next rotation
/// (or revocation: the answer to a leak) Tenantry took that value for an issuance cut
/// short and made it the client's secret, and kept the annotation. Now only a secret
/// Tenantry wrote there is ever taken up (its hash is in an annotation only Tenantry may
/// write), and a rotation rewrites the Secret whole.
#[tokio::test]
async fn a_value_planted_in_a_credentials_secret_never_becomes_the_secret() {
    let _ = controller();
    let client = admin().await;
    let org = org_with(
        &client,
        "atk-plant",
        membership("ci", Subject::client("ci"), OrgRole::Member, &[]),
    )
    .await;
    let ns = format!("org-{org}");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
    let planted = tenantry::credentials::generate().unwrap();
    secrets
        .patch(
            "ci-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"example.com/copy-to": "attacker"}},
                "stringData": {"client-secret": planted},
            })),
        )
        .await
        .expect("a Secret writer plants a value");
    for (key, value) in [
        (tenantry::credentials::ROTATE, "r1"),
        (tenantry::credentials::REVOKE, "v1"),
    ] {
        Api::<Membership>::namespaced(client.clone(), &ns)
            .patch(
                "ci",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .unwrap();
        let handled = if key == tenantry::credentials::ROTATE {
            tenantry::credentials::ROTATION
        } else {
            tenantry::credentials::REVOCATION
        };
        let sa = wait_for(
            &sas,
            "ci-client",
            "handled",
            |sa: Option<&k8s_openapi::api::core::v1::ServiceAccount>| {
                sa.is_some_and(|sa| {
                    sa.annotations().get(handled).map(String::as_str) == Some(value)
                })
            },
        )
        .await
        .unwrap();
        let verifier = sa.annotations()[tenantry::credentials::HASH].clone();
        let now = secrets.get("ci-credentials").await.unwrap();
        let issued =
            String::from_utf8(now.data.clone().unwrap()["client-secret"].0.clone()).unwrap();
        assert_ne!(
            issued, planted,
            "{key}: the planted value is not the secret"
        );
        assert!(!tenantry::credentials::verify(&planted, &verifier), "{key}");
        assert!(tenantry::credentials::verify(&issued, &verifier), "{key}");
        assert!(
            !now.annotations().contains_key("example.com/copy-to"),
            "{key}: the Secret holding the new secret is Tenantry's alone: {:?}",
            now.annotations()
        );
        // Planted again before the revocation.
        secrets
            .patch(
                "ci-credentials",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"client-secret": planted}})),
            )
            .await
            .unwrap();
    }
    crate::core::delete_org(&client, &org).await;
}

/// A client Membership removed with `--cascade=orphan` (or replaced by a GitOps tool
/// before the garbage collector came) left its ServiceAccount behind; a new Membership of
/// the same name took it over, verifier and minted tokens included: the removed client's
/// secret and tokens then acted with the new Membership's rights. Now the new Membership's
/// client gets a ServiceAccount and a secret of its own.
#[tokio::test]
async fn a_new_membership_of_the_same_name_inherits_no_client() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{DeleteParams, PropagationPolicy};
    let _ = controller();
    let client = admin().await;
    let org = org_with(
        &client,
        "atk-heir",
        membership("ci", Subject::client("ci"), OrgRole::Member, &[]),
    )
    .await;
    let ns = format!("org-{org}");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    let memberships = Api::<Membership>::namespaced(client.clone(), &ns);
    let value = |s: Secret| String::from_utf8(s.data.unwrap()["client-secret"].0.clone()).unwrap();
    let old_sa = sas.get("ci-client").await.unwrap();
    let old_value = value(secrets.get("ci-credentials").await.unwrap());
    memberships
        .delete(
            "ci",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    crate::harness::wait_gone(&memberships, "ci").await;
    wait_for(
        &sas,
        "ci-client",
        "orphaned",
        |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| sa.owner_references().is_empty()),
    )
    .await
    .unwrap();
    add_member(
        &client,
        &org,
        membership("ci", Subject::client("ci"), OrgRole::Admin, &[]),
    )
    .await;
    wait_member_reason(&client, &org, "ci", "Granted").await;
    let sa = wait_for(
        &sas,
        "ci-client",
        "a ServiceAccount of its own",
        |sa: Option<&ServiceAccount>| {
            sa.is_some_and(|sa| {
                sa.uid() != old_sa.uid()
                    && sa.annotations().contains_key(tenantry::credentials::HASH)
            })
        },
    )
    .await
    .unwrap();
    let verifier = &sa.annotations()[tenantry::credentials::HASH];
    assert!(
        !tenantry::credentials::verify(&old_value, verifier),
        "the removed client's secret does not work for the new one"
    );
    let issued = value(secrets.get("ci-credentials").await.unwrap());
    assert_ne!(issued, old_value);
    assert!(tenantry::credentials::verify(&issued, verifier));
    crate::core::delete_org(&client, &org).await;
}
