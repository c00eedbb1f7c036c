//! `kubectl tenantry` (#16), run as a separate process the way kubectl runs it, as
//! impersonated users of the organization (`--as`).

use kube::api::Api;
use serde_json::Value;
use tenantry::api::*;

use crate::access::{populated_org, user};
use crate::clients::{can_create_configmap, token_server, with_token};
use crate::core::{create_org, org_spec, wait_member_reason, wait_ws_ready};
use crate::harness::{admin, cluster, controller, unique, wait_for};

/// Runs `kubectl-tenantry args` as `who` (impersonated; the admin when `None`): (exit
/// code, stdout, stderr).
pub(crate) async fn plugin(who: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-tenantry"));
    cmd.args(args).env("KUBECONFIG", &cluster().kubeconfig);
    if let Some(who) = who {
        cmd.args(["--as", who]);
    }
    let out = cmd.output().await.expect("kubectl-tenantry runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `plugin` that must succeed: its stdout.
async fn ok(who: Option<&str>, args: &[&str]) -> String {
    let (code, out, err) = plugin(who, args).await;
    assert_eq!(code, 0, "kubectl tenantry {args:?} as {who:?}: {err}{out}");
    out
}

#[tokio::test]
async fn the_plugin_shows_members_what_they_may_read() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let owner = user(OrgRole::Owner, &org);
    let member = user(OrgRole::Member, &org);

    // whoami: who I am, my role, through what.
    let out = ok(Some(&member), &["whoami", "--org", &org]).await;
    assert!(out.contains(&format!("user: {member}")), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&org))
        .unwrap_or_else(|| panic!("a row for {org}: {out}"));
    assert!(
        line.contains("Member") && line.contains("membership/member") && line.contains("True"),
        "{line}"
    );
    let json: Value =
        serde_json::from_str(&ok(Some(&member), &["whoami", "--org", &org, "-o", "json"]).await)
            .expect("-o json is JSON");
    assert_eq!(json["user"], member.as_str());
    assert_eq!(json["organizations"][0]["role"], "Member");
    let out = ok(Some(&owner), &["whoami", "--org", &org]).await;
    assert!(out.contains("spec.owners"), "{out}");
    // Without --org, a member (who may not list organizations) gets theirs from the
    // discovery API, or is told what to type: discovery::members_discover_only_their_own_organizations_and_workspaces
    // (which registers the API) tests both.

    // who-can: everyone reaching the workspace, through which Membership (the workspace's
    // status.members, which lists them within the status interval).
    let workspaces = Api::<Workspace>::namespaced(client.clone(), &format!("org-{org}"));
    wait_for(
        &workspaces,
        "default",
        "members listed",
        |w: Option<&Workspace>| {
            w.and_then(|w| w.status.as_ref()).is_some_and(|s| {
                s.members
                    .iter()
                    .any(|m| m.membership.as_deref() == Some("viewer"))
            })
        },
    )
    .await;
    let out = ok(Some(&member), &["who-can", &org, "default"]).await;
    assert!(out.starts_with("KIND"), "{out}");
    for through in ["membership/viewer", "membership/admin", "spec.owners"] {
        assert!(out.contains(through), "{through} in {out}");
    }
    let json: Value =
        serde_json::from_str(&ok(Some(&member), &["who-can", &org, "default", "-o", "json"]).await)
            .expect("JSON");
    assert!(
        json["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["name"] == owner.as_str())),
        "{json}"
    );

    // tree: the whole tree for an Owner, as YAML too; a stranger is told why not.
    let out = ok(Some(&owner), &["tree", &org]).await;
    assert!(out.starts_with(&format!("Organization {org}")), "{out}");
    let yaml = ok(Some(&owner), &["tree", &org, "-o", "yaml"]).await;
    assert!(yaml.contains(&format!("organization: {org}")), "{yaml}");
    let (code, _, err) = plugin(Some("stranger@x.example"), &["tree", &org]).await;
    assert_eq!(code, 1);
    assert!(err.contains("forbidden") && err.contains("whoami"), "{err}");
    crate::core::delete_org(&client, &org).await;
}

#[tokio::test]
async fn the_plugin_invites_accepts_rotates_and_gets_a_token() {
    let _ = controller();
    let client = admin().await;
    let org = unique("plg");
    let mut spec = org_spec("o@x.example");
    spec.membership = Some(MembershipPolicy {
        require_acceptance: true,
        ..Default::default()
    });
    create_org(&client, &org, spec).await;
    wait_ws_ready(&client, &org, "default").await;
    let owner = Some("o@x.example");

    // An invitation, accepted by the invitee.
    let out = ok(
        owner,
        &[
            "invite",
            &org,
            "nina@x.example",
            "--role",
            "Viewer",
            "--workspace",
            "default=Viewer",
        ],
    )
    .await;
    assert!(
        out.contains(&format!("kubectl tenantry accept {org} nina-x-example")),
        "{out}"
    );
    wait_member_reason(&client, &org, "nina-x-example", "InvitationPending").await;
    let (code, _, err) = plugin(
        Some("stranger@x.example"),
        &["invite", &org, "eve@x.example", "--role", "Owner"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = plugin(owner, &["invite", &org, "x", "--role", "Boss"]).await;
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("Owner, Admin"), "{err}");
    ok(Some("nina@x.example"), &["accept", &org, "nina-x-example"]).await;
    wait_member_reason(&client, &org, "nina-x-example", "Granted").await;

    // A machine client: a token from its credentials, which works; then a rotation.
    ok(
        owner,
        &[
            "invite",
            &org,
            "ci",
            "--kind",
            "client",
            "--role",
            "Member",
            "--workspace",
            "default=Editor",
        ],
    )
    .await;
    let granted = wait_member_reason(&client, &org, "ci", "Granted").await;
    assert!(granted.status.is_some_and(|s| s.client_id().is_some()));
    let ws = wait_ws_ready(&client, &org, "default").await;
    let ns = ws.status.and_then(|s| s.namespace).expect("a namespace");
    let (mut server, port) = token_server().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let token = ok(owner, &["token", &org, "ci", "--endpoint", &endpoint]).await;
    let token = token.trim();
    assert!(!token.is_empty() && !token.contains(' '), "{token}");
    assert_eq!(
        can_create_configmap(&with_token(token).await, &ns).await,
        200
    );
    let (code, _, err) = plugin(
        Some("nina@x.example"),
        &["token", &org, "ci", "--endpoint", &endpoint],
    )
    .await;
    assert_eq!(code, 1, "a Viewer reads no client secret");
    assert!(err.contains("forbidden"), "{err}");
    server.kill().await.ok();

    ok(owner, &["rotate", &org, "ci", "--grace-seconds", "60"]).await;
    let memberships = Api::<Membership>::namespaced(client.clone(), &format!("org-{org}"));
    wait_for(&memberships, "ci", "rotated", |m: Option<&Membership>| {
        m.and_then(|m| m.status.as_ref()?.rotation()).is_some()
    })
    .await;
    crate::core::delete_org(&client, &org).await;
}
