//! Members' lifecycle (#16): memberships that expire, and their renewal.

use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tenantry::api::*;

use crate::access::{can_i, populated_org, user};
use crate::clients::{credentials, post_token, token_server};
use crate::core::{
    add_member, create_org, create_ws, membership, org_spec, wait_member_reason, wait_ws_ready,
};
use crate::harness::{admin, as_user, controller, status_of, unique, wait_for};

fn in_secs(s: i64) -> Time {
    Time(Timestamp::now() + SignedDuration::from_secs(s))
}

/// Whether any RoleBinding in `ns` names User `who`.
async fn bound(client: &kube::Client, ns: &str, who: &str) -> bool {
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list RoleBindings")
        .items
        .iter()
        .flat_map(|b| b.subjects.iter().flatten())
        .any(|s| s.kind == "User" && s.name == who)
}

/// A membership with `spec.expiresAt` grants until then, then nothing (status `Expired`,
/// every binding withdrawn, without any object changing); a later `expiresAt` renews it.
/// A member cannot renew itself, and an expired Client gets no token.
#[tokio::test]
async fn a_membership_expires_and_is_renewed() {
    let _ = controller();
    let client = admin().await;
    let org = unique("exp");
    create_org(&client, &org, org_spec("o@x.example")).await;
    create_ws(&client, &org, "dev", Default::default()).await;
    let ws = wait_ws_ready(&client, &org, "dev").await;
    let ws_ns = ws.status.and_then(|s| s.namespace).expect("a namespace");
    let org_ns = format!("org-{org}");
    let who = "temp@x.example";
    let mut m = membership(
        "temp",
        Subject::user(who),
        OrgRole::Member,
        &[("dev", WorkspaceRole::Editor)],
    );
    m.spec.expires_at = Some(in_secs(12));
    add_member(&client, &org, m).await;
    let granted = wait_member_reason(&client, &org, "temp", "Granted").await;
    assert!(
        granted.status.and_then(|s| s.expires_at).is_some(),
        "the status shows when it expires"
    );
    let member = as_user(who, &[]).await;
    assert!(can_i(&member, "create", "", "configmaps", &ws_ns).await);

    // Expiry: nothing changes but the clock.
    let expired = wait_member_reason(&client, &org, "temp", "Expired").await;
    let ready = expired
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Ready")
        .cloned()
        .expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.expiresAt"),
        "{}",
        ready.message
    );
    let gone = async {
        while bound(&client, &ws_ns, who).await || bound(&client, &org_ns, who).await {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(crate::harness::TIMEOUT, gone)
        .await
        .expect("every binding of the expired member is withdrawn");
    assert!(!can_i(&member, "create", "", "configmaps", &ws_ns).await);
    // Counted for alerts (the controller runs in this process: its metrics are these).
    let expired_metric = format!("tenantry_memberships_expired{{organization=\"{org}\"}} 1");
    let counted = async {
        while !tenantry::metrics::encode().contains(&expired_metric) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(crate::harness::TIMEOUT, counted)
        .await
        .expect("the expired membership is counted");

    // Renewal: a spec change.
    Api::<Membership>::namespaced(client.clone(), &org_ns)
        .patch(
            "temp",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"expiresAt": in_secs(3600)}})),
        )
        .await
        .expect("renew");
    wait_member_reason(&client, &org, "temp", "Granted").await;
    let back = async {
        while !can_i(&member, "create", "", "configmaps", &ws_ns).await {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(crate::harness::TIMEOUT, back)
        .await
        .expect("the renewed member reaches its workspace again");

    // An expired Client gets no token, whatever its secret.
    let mut bot = membership(
        "bot",
        Subject::client("bot"),
        OrgRole::Member,
        &[("dev", WorkspaceRole::Editor)],
    );
    bot.spec.expires_at = Some(in_secs(3600));
    add_member(&client, &org, bot).await;
    wait_member_reason(&client, &org, "bot", "Granted").await;
    let (id, secret) = credentials(&client, &org_ns, "bot").await;
    let (mut server, port) = token_server().await;
    let (s, b) = post_token(port, "grant_type=client_credentials", Some((&id, &secret))).await;
    assert_eq!(s, 200, "a client before its expiry: {b}");
    Api::<Membership>::namespaced(client.clone(), &org_ns)
        .patch(
            "bot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"expiresAt": in_secs(-60)}})),
        )
        .await
        .expect("end the client's membership");
    wait_member_reason(&client, &org, "bot", "Expired").await;
    let (s, b) = post_token(port, "grant_type=client_credentials", Some((&id, &secret))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "an expired client"
    );
    server.kill().await.ok();
    crate::core::delete_org(&client, &org).await;
}

/// `membership.expireAfterDays`: Memberships without their own `expiresAt` expire that
/// long after creation, Owners excepted; only an Owner sets it; no member renews itself.
#[tokio::test]
async fn an_organization_sets_how_long_memberships_last() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let org_ns = format!("org-{org}");
    let admin_user = as_user(&user(OrgRole::Admin, &org), &[]).await;
    let policy = json!({"spec": {"membership": {"expireAfterDays": 30}}});
    let by_admin = Api::<Organization>::all(admin_user.clone())
        .patch(&org, &PatchParams::default(), &Patch::Merge(&policy))
        .await;
    assert_eq!(
        status_of(&by_admin),
        403,
        "an Admin sets expireAfterDays: {by_admin:?}"
    );
    Api::<Organization>::all(as_user(&user(OrgRole::Owner, &org), &[]).await)
        .patch(&org, &PatchParams::default(), &Patch::Merge(&policy))
        .await
        .expect("an Owner sets expireAfterDays");
    let memberships = Api::<Membership>::namespaced(client.clone(), &org_ns);
    let viewer = wait_for(
        &memberships,
        "viewer",
        "expires 30 days after creation",
        |m: Option<&Membership>| {
            m.and_then(|m| m.status.as_ref()?.expires_at.as_ref())
                .is_some()
        },
    )
    .await
    .expect("viewer");
    let created = viewer
        .metadata
        .creation_timestamp
        .clone()
        .expect("created")
        .0;
    assert_eq!(
        viewer.status.and_then(|s| s.expires_at).map(|t| t.0),
        Some(created + SignedDuration::from_hours(30 * 24))
    );
    // A UserAdmin may change others' memberships, not renew its own.
    let user_admin = as_user(&user(OrgRole::UserAdmin, &org), &[]).await;
    let own = Api::<Membership>::namespaced(user_admin, &org_ns)
        .patch(
            OrgRole::UserAdmin.slug(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"expiresAt": in_secs(10 * 365 * 86400)}})),
        )
        .await;
    assert_eq!(status_of(&own), 403, "a member renews itself: {own:?}");
    crate::core::delete_org(&client, &org).await;
}

/// Personal workspaces (`spec.membership.personalWorkspaces`): a User member gets a
/// workspace only they administer; nobody else may mark a workspace personal; it goes
/// with the member, or stays as an ordinary workspace, by `whenMemberLeaves` as it is
/// when the member leaves.
#[tokio::test]
async fn members_get_a_personal_workspace_only_they_administer() {
    let _ = controller();
    let client = admin().await;
    let org = unique("pws");
    let mut spec = org_spec("o@x.example");
    spec.membership = Some(MembershipPolicy {
        personal_workspaces: Some(PersonalWorkspaces {
            enabled: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    create_org(&client, &org, spec).await;
    wait_ws_ready(&client, &org, "default").await;
    let org_ns = format!("org-{org}");
    let memberships = Api::<Membership>::namespaced(client.clone(), &org_ns);
    let workspaces = Api::<Workspace>::namespaced(client.clone(), &org_ns);
    add_member(
        &client,
        &org,
        membership("adm", Subject::user("adm@x.example"), OrgRole::Admin, &[]),
    )
    .await;
    add_member(
        &client,
        &org,
        membership("pat", Subject::user("pat@x.example"), OrgRole::Member, &[]),
    )
    .await;
    wait_for(
        &memberships,
        "pat",
        "its personal workspace",
        |m: Option<&Membership>| {
            m.and_then(|m| m.status.as_ref()?.personal_workspace.as_deref()) == Some("personal-pat")
        },
    )
    .await;
    let ws = wait_ws_ready(&client, &org, "personal-pat").await;
    let ns = ws.status.and_then(|s| s.namespace).expect("a namespace");
    let only_pat = wait_for(
        &workspaces,
        "personal-pat",
        "pat alone",
        |w: Option<&Workspace>| {
            w.and_then(|w| w.status.as_ref())
                .is_some_and(|s| s.members.len() == 1 && s.members[0].name == "pat@x.example")
        },
    )
    .await
    .expect("the workspace");
    assert_eq!(
        only_pat.status.expect("status").members[0].role,
        WorkspaceRole::Admin
    );
    let pat = as_user("pat@x.example", &[]).await;
    assert!(
        can_i(
            &pat,
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            &ns
        )
        .await
    );
    for other in ["o@x.example", "adm@x.example"] {
        let c = as_user(other, &[]).await;
        assert!(
            !can_i(&c, "get", "", "configmaps", &ns).await,
            "{other} reaches pat's personal workspace"
        );
    }

    // Nobody but Tenantry marks a workspace personal: not an Admin, for a friend.
    let uid = memberships
        .get("pat")
        .await
        .expect("pat")
        .metadata
        .uid
        .expect("a uid");
    let mut sneaky = Workspace::new("sneaky", Default::default());
    sneaky.metadata.labels = Some([("tenantry.dev/personal-for".to_string(), uid)].into());
    let r = Api::<Workspace>::namespaced(as_user("adm@x.example", &[]).await, &org_ns)
        .create(&Default::default(), &sneaky)
        .await;
    assert_eq!(
        status_of(&r),
        403,
        "an Admin marks a workspace personal: {r:?}"
    );

    // whenMemberLeaves: Delete (the default): it goes with its member.
    memberships
        .delete("pat", &Default::default())
        .await
        .expect("pat leaves");
    crate::harness::wait_gone(&workspaces, "personal-pat").await;

    // Keep, set after the workspace was made: read when the member leaves.
    add_member(
        &client,
        &org,
        membership("ray", Subject::user("ray@x.example"), OrgRole::Viewer, &[]),
    )
    .await;
    wait_ws_ready(&client, &org, "personal-ray").await;
    Api::<Organization>::all(client.clone())
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"membership": {"personalWorkspaces": {"enabled": true, "whenMemberLeaves": "Keep"}}}})),
        )
        .await
        .expect("keep personal workspaces");
    wait_for(
        &workspaces,
        "personal-ray",
        "no longer goes with ray",
        |w: Option<&Workspace>| {
            w.is_some_and(|w| {
                w.metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty()
            })
        },
    )
    .await;
    memberships
        .delete("ray", &Default::default())
        .await
        .expect("ray leaves");
    crate::harness::wait_gone(&memberships, "ray").await;
    // Kept, as an ordinary workspace: the organization's Admins reach it now.
    let kept = wait_for(
        &workspaces,
        "personal-ray",
        "reached by the Admin",
        |w: Option<&Workspace>| {
            w.and_then(|w| w.status.as_ref())
                .is_some_and(|s| s.members.iter().any(|m| m.name == "adm@x.example"))
        },
    )
    .await
    .expect("the kept workspace");
    assert!(kept.metadata.deletion_timestamp.is_none());
    crate::core::delete_org(&client, &org).await;
}

/// `--personal-organizations`: a User granted in an organization gets one of their own,
/// which they own alone, created once; a group gets none; deleting the member leaves it.
#[tokio::test]
async fn a_granted_user_gets_a_personal_organization() {
    let cp = crate::harness::dedicated().await;
    let client = cp.admin().await;
    let operator = crate::resilience::Operator::ready_with(
        &cp.kubeconfig,
        "lifecycle-personal-orgs",
        &["--personal-organizations", "true"],
    )
    .await;
    create_org(&client, "acme", org_spec("o@x.example")).await;
    wait_ws_ready(&client, "acme", "default").await;
    add_member(
        &client,
        "acme",
        membership(
            "kim",
            Subject::user("Kim@Example.com"),
            OrgRole::Member,
            &[],
        ),
    )
    .await;
    add_member(
        &client,
        "acme",
        membership("devs", Subject::group("devs"), OrgRole::Member, &[]),
    )
    .await;
    wait_member_reason(&client, "acme", "kim", "Granted").await;
    let name = tenantry::names::personal_organization("Kim@Example.com");
    assert!(name.starts_with("user-kim-example-com-"), "{name}");
    let org = crate::core::wait_org_ready(&client, &name).await;
    assert_eq!(org.spec.owners, vec![Subject::user("Kim@Example.com")]);
    assert_eq!(org.spec.display_name, "Kim@Example.com");
    wait_ws_ready(&client, &name, "default").await;
    let kim = cp.as_user("Kim@Example.com").await;
    let ws_ns = format!("{name}--default");
    assert!(can_i(&kim, "create", "", "configmaps", &ws_ns).await);
    let orgs = Api::<Organization>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(orgs.items.len(), 2, "acme and kim's: a group gets none");
    // The member leaves: their organization is theirs, and stays.
    Api::<Membership>::namespaced(client.clone(), "org-acme")
        .delete("kim", &Default::default())
        .await
        .expect("kim leaves");
    crate::harness::wait_gone(
        &Api::<Membership>::namespaced(client.clone(), "org-acme"),
        "kim",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still = Api::<Organization>::all(client.clone())
        .get(&name)
        .await
        .expect("kim's organization stays");
    assert!(still.metadata.deletion_timestamp.is_none());
    drop(operator);
}
