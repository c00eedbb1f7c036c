//! The core API and controller on the real control plane: every rule of the core issue.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tenantry::api::*;

use crate::harness::{
    admin, controller, restart_controller, unique, wait_for, wait_gone, wait_reconciled,
};

// ---------- fixtures ----------

/// Creates an empty ConfigMap: something a member created.
pub async fn put_configmap(client: &Client, ns: &str, name: &str) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");
}

/// A resource list, e.g. `quantities(&[("pods", "10")])`.
pub fn quantities(items: &[(&str, &str)]) -> tenantry::api::ResourceList {
    items
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string()),
            )
        })
        .collect()
}

pub fn org_spec(owner: &str) -> OrganizationSpec {
    OrganizationSpec {
        display_name: "Test Org".into(),
        owners: vec![Subject::user(owner)],
        limits: None,
        workspace_defaults: None,
        default_workspace: None,
        deletion_policy: None,
        ..Default::default()
    }
}

/// [`org_spec`] without a default workspace (the test makes the workspaces it needs).
pub fn bare_org_spec(owner: &str) -> OrganizationSpec {
    OrganizationSpec {
        default_workspace: Some(DefaultWorkspace {
            enabled: false,
            name: "default".into(),
        }),
        ..org_spec(owner)
    }
}

fn ready_in(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation)
}

/// The message of the `Ready` condition among `conditions` (empty without one).
pub fn ready_message(conditions: &[Condition]) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn reason_in(conditions: &[Condition]) -> Option<String> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

pub async fn create_org(client: &Client, name: &str, spec: OrganizationSpec) -> Organization {
    let api: Api<Organization> = Api::all(client.clone());
    api.create(&PostParams::default(), &Organization::new(name, spec))
        .await
        .expect("create organization");
    wait_org_ready(client, name).await
}

pub async fn wait_org_ready(client: &Client, name: &str) -> Organization {
    let api: Api<Organization> = Api::all(client.clone());
    wait_for(
        &api,
        name,
        "Organization Ready",
        |o: Option<&Organization>| {
            o.is_some_and(|o| {
                o.status
                    .as_ref()
                    .is_some_and(|s| ready_in(&s.conditions, o.meta().generation))
            })
        },
    )
    .await
    .expect("organization")
}

/// Waits until the organization's status satisfies `cond`. Counts are status details:
/// written within `--status-interval-ms` of the change, not with Ready.
pub async fn wait_org_status(
    client: &Client,
    name: &str,
    what: &str,
    cond: impl Fn(&OrganizationStatus) -> bool + Send + 'static,
) {
    wait_for(
        &Api::<Organization>::all(client.clone()),
        name,
        what,
        move |o: Option<&Organization>| o.and_then(|o| o.status.as_ref()).is_some_and(&cond),
    )
    .await;
}

pub async fn create_ws(client: &Client, org: &str, name: &str, spec: WorkspaceSpec) {
    let mut ws = Workspace::new(name, spec);
    ws.metadata.namespace = Some(format!("org-{org}"));
    Api::<Workspace>::namespaced(client.clone(), &format!("org-{org}"))
        .create(&PostParams::default(), &ws)
        .await
        .expect("create workspace");
}

pub async fn wait_ws_ready(client: &Client, org: &str, name: &str) -> Workspace {
    let api: Api<Workspace> = Api::namespaced(client.clone(), &format!("org-{org}"));
    wait_for(&api, name, "Workspace Ready", |w: Option<&Workspace>| {
        w.is_some_and(|w| {
            w.status
                .as_ref()
                .is_some_and(|s| ready_in(&s.conditions, w.meta().generation))
        })
    })
    .await
    .expect("workspace")
}

pub async fn wait_ws_reason(client: &Client, org: &str, name: &str, reason: &str) -> Workspace {
    let api: Api<Workspace> = Api::namespaced(client.clone(), &format!("org-{org}"));
    wait_for(
        &api,
        name,
        &format!("Workspace reason {reason}"),
        |w: Option<&Workspace>| {
            w.is_some_and(|w| {
                w.status
                    .as_ref()
                    .and_then(|s| reason_in(&s.conditions))
                    .as_deref()
                    == Some(reason)
            })
        },
    )
    .await
    .expect("workspace")
}

pub fn membership(
    name: &str,
    subject: Subject,
    role: OrgRole,
    ws: &[(&str, WorkspaceRole)],
) -> Membership {
    Membership::new(name, MembershipSpec::new(subject, role, ws))
}

pub async fn add_member(client: &Client, org: &str, m: Membership) {
    Api::<Membership>::namespaced(client.clone(), &format!("org-{org}"))
        .create(&PostParams::default(), &m)
        .await
        .expect("create membership");
}

pub async fn wait_member_reason(
    client: &Client,
    org: &str,
    name: &str,
    reason: &str,
) -> Membership {
    let api: Api<Membership> = Api::namespaced(client.clone(), &format!("org-{org}"));
    wait_for(
        &api,
        name,
        &format!("Membership reason {reason}"),
        |m: Option<&Membership>| {
            m.is_some_and(|m| {
                m.status.as_ref().is_some_and(|s| {
                    reason_in(&s.conditions).as_deref() == Some(reason)
                        && s.observed_generation == m.meta().generation
                })
            })
        },
    )
    .await
    .expect("membership")
}

/// The subjects (kind/name) of a RoleBinding, or none when it does not exist.
async fn binding_subjects(client: &Client, ns: &str, name: &str) -> Vec<String> {
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|rb| rb.subjects)
        .unwrap_or_default()
        .into_iter()
        .map(|s| format!("{}/{}", s.kind, s.name))
        .collect()
}

/// Waits until RoleBinding `ns/name` lists exactly `expected` (kind/name), or is absent
/// when `expected` is empty.
async fn wait_binding(client: &Client, ns: &str, name: &str, expected: &[&str]) {
    let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    wait_for(
        &api,
        name,
        &format!("subjects {expected:?}"),
        |rb: Option<&RoleBinding>| {
            let mut got: Vec<String> = rb
                .and_then(|rb| rb.subjects.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|s| format!("{}/{}", s.kind, s.name))
                .collect();
            got.sort();
            got == expected
        },
    )
    .await;
}

fn lp(selector: &str) -> ListParams {
    ListParams::default().labels(selector)
}

// ---------- organization ----------

/// A new workspace is provisioned in one status write, Ready: the pass that creates its
/// namespace writes no status (the namespace's watch event brings the workspace back, and
/// that pass provisions the rest and says Ready), so nobody sees a Progressing workspace
/// first and the API server serves one status write per workspace.
#[tokio::test]
async fn a_new_workspace_is_written_one_status_ready() {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::{WatchStreamExt, watcher};
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    create_org(&client, &name, org_spec("alice@acme.example")).await;
    let api: Api<Workspace> = Api::namespaced(client.clone(), &format!("org-{name}"));
    let mut statuses = watcher(
        api.clone(),
        watcher::Config::default().fields("metadata.name=two"),
    )
    .applied_objects()
    // A status with conditions: the one the controller wrote (a new object's may be the
    // schema's empty defaults).
    .try_filter_map(|w: Workspace| {
        futures::future::ready(Ok(w.status.filter(|s| !s.conditions.is_empty())))
    })
    .boxed();
    // The watch is open (its initial list done) before the workspace exists.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    create_ws(&client, &name, "two", Default::default()).await;
    let first = tokio::time::timeout(crate::harness::TIMEOUT, statuses.try_next())
        .await
        .expect("a status within the timeout")
        .expect("the watch")
        .expect("a status");
    let ready = first
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Provisioned"),
        "the first status written is Ready: {first:?}"
    );
    assert_eq!(
        first.namespace.as_deref(),
        Some(format!("{name}--two").as_str())
    );
    // Provisioned whole in that pass: quota guards and isolation are there.
    let ns = format!("{name}--two");
    assert!(
        !Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn organization_gets_its_namespace_default_workspace_and_a_stable_code() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let org = create_org(&client, &name, org_spec("alice@acme.example")).await;
    let status = org.status.clone().unwrap();
    assert_eq!(
        status.namespace.as_deref(),
        Some(format!("org-{name}").as_str())
    );
    let code = status.code.clone().expect("a code");
    assert_eq!(code, tenantry::names::org_code(&org.uid().unwrap()));

    // The organization namespace is Tenantry's, owned by the Organization.
    let ns = Api::<Namespace>::all(client.clone())
        .get(&format!("org-{name}"))
        .await
        .unwrap();
    assert_eq!(ns.labels().get("tenantry.dev/organization"), Some(&name));
    assert_eq!(ns.owner_references()[0].uid, org.uid().unwrap());

    // The default workspace appears and is provisioned.
    let ws = wait_ws_ready(&client, &name, "default").await;
    assert_eq!(
        ws.status.unwrap().namespace.as_deref(),
        Some(format!("{name}--default").as_str())
    );
    let wsns = Api::<Namespace>::all(client.clone())
        .get(&format!("{name}--default"))
        .await
        .unwrap();
    assert_eq!(
        wsns.labels()
            .get("tenantry.dev/workspace")
            .map(String::as_str),
        Some("default")
    );
    assert_eq!(
        wsns.labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );
    wait_org_ready(&client, &name).await;
    wait_org_status(
        &client,
        &name,
        "the organization counts its default workspace",
        |s| s.workspaces == 1,
    )
    .await;

    // The owner holds the Owner role in the organization namespace.
    wait_binding(
        &client,
        &format!("org-{name}"),
        "tenantry-org-owner",
        &["User/alice@acme.example"],
    )
    .await;

    // A status wipe and a display name change keep the code.
    let api: Api<Organization> = Api::all(client.clone());
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": null})),
    )
    .await
    .unwrap();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"displayName": "Renamed"}})),
    )
    .await
    .unwrap();
    let org = wait_org_ready(&client, &name).await;
    assert_eq!(org.status.unwrap().code, Some(code));
    assert_eq!(org.spec.display_name, "Renamed");

    delete_org(&client, &name).await;
}

/// The smallest Organization a newcomer writes: a name and an owner. The display name
/// defaults to the name.
#[tokio::test]
async fn a_minimal_organization_needs_no_display_name() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let org: Organization = serde_json::from_value(json!({
        "apiVersion": "tenantry.dev/v1alpha1",
        "kind": "Organization",
        "metadata": {"name": name},
        "spec": {"owners": [{"kind": "User", "name": "o@x.example"}]},
    }))
    .unwrap();
    let created = Api::<Organization>::all(client.clone())
        .create(&PostParams::default(), &org)
        .await
        .expect("an Organization without displayName is accepted");
    assert_eq!(created.display_name(), name);
    wait_org_ready(&client, &name).await;
    let tree = tenantry::tree::render(&client, &name).await.unwrap();
    assert!(
        tree.starts_with(&format!("Organization {name} \"{name}\"")),
        "{tree}"
    );
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn default_workspace_can_be_turned_off_and_renamed() {
    let _ = controller();
    let client = admin().await;
    let off = unique("t");
    let spec = bare_org_spec("a@x.example");
    let org = create_org(&client, &off, spec).await;
    assert_eq!(org.status.unwrap().workspaces, 0);
    assert!(
        Api::<Workspace>::namespaced(client.clone(), &format!("org-{off}"))
            .get_opt("default")
            .await
            .unwrap()
            .is_none()
    );

    let renamed = unique("t");
    let mut spec = org_spec("a@x.example");
    spec.default_workspace = Some(DefaultWorkspace {
        enabled: true,
        name: "main".into(),
    });
    create_org(&client, &renamed, spec).await;
    wait_ws_ready(&client, &renamed, "main").await;
    delete_org(&client, &off).await;
    delete_org(&client, &renamed).await;
}

/// Turns deletion protection off.
pub async fn unprotect(client: &Client, name: &str) {
    Api::<Organization>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionProtection": false}})),
        )
        .await
        .expect("turn deletion protection off");
}

/// Deletes an organization and checks nothing of it is left: its namespace, its
/// workspaces' namespaces, its ClusterRoles and ClusterRoleBindings.
pub async fn delete_org(client: &Client, name: &str) {
    let api: Api<Organization> = Api::all(client.clone());
    let selector = format!("tenantry.dev/organization={name}");
    let namespaces: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&lp(&selector))
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert!(
        !namespaces.is_empty(),
        "an organization has namespaces before deletion"
    );
    unprotect(client, name).await;
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete organization");
    wait_gone(&api, name).await;
    let ns_api = Api::<Namespace>::all(client.clone());
    for ns in &namespaces {
        wait_gone(&ns_api, ns).await;
    }
    for left in [
        Api::<ClusterRole>::all(client.clone())
            .list(&lp(&selector))
            .await
            .unwrap()
            .items
            .len(),
        Api::<ClusterRoleBinding>::all(client.clone())
            .list(&lp(&selector))
            .await
            .unwrap()
            .items
            .len(),
    ] {
        if left > 0 {
            // The garbage collector removes them shortly after the owner; wait for it.
            let crs = Api::<ClusterRoleBinding>::all(client.clone());
            for crb in crs.list(&lp(&selector)).await.unwrap() {
                wait_gone(&crs, &crb.name_any()).await;
            }
            let crs = Api::<ClusterRole>::all(client.clone());
            for cr in crs.list(&lp(&selector)).await.unwrap() {
                wait_gone(&crs, &cr.name_any()).await;
            }
        }
    }
}

#[tokio::test]
async fn organization_deletion_leaves_nothing() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    create_org(&client, &name, org_spec("a@x.example")).await;
    create_ws(&client, &name, "one", Default::default()).await;
    add_member(
        &client,
        &name,
        membership(
            "bot",
            Subject::client("bot"),
            OrgRole::Member,
            &[("one", WorkspaceRole::Editor)],
        ),
    )
    .await;
    wait_ws_ready(&client, &name, "one").await;
    wait_member_reason(&client, &name, "bot", "Granted").await;
    // Something a member created in the workspace goes with it.
    Api::<ConfigMap>::namespaced(client.clone(), &format!("{name}--one"))
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    delete_org(&client, &name).await;
    let selector = format!("tenantry.dev/organization={name}");
    assert!(
        Api::<Namespace>::all(client.clone())
            .list(&lp(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(client.clone())
            .list(&lp(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---------- workspace ----------

#[tokio::test]
async fn workspace_is_provisioned_from_its_spec_else_the_organization_defaults() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let mut spec = org_spec("a@x.example");
    spec.workspace_defaults = Some(WorkspacePolicy {
        quota: Some(quantities(&[("pods", "10")])),
        limit_range: Some(LimitDefaults {
            default: Some(quantities(&[("memory", "256Mi")])),
            ..Default::default()
        }),
        pod_security: Some(PodSecurityLevel::Restricted),
        network_isolation: Some(true),
    });
    // The platform (this test's cluster admin) lets this organization go privileged.
    spec.limits = Some(Limits {
        pod_security: Some(PodSecurityLevel::Privileged),
        ..Default::default()
    });
    spec.default_workspace = Some(DefaultWorkspace {
        enabled: false,
        name: "default".into(),
    });
    create_org(&client, &name, spec).await;
    create_ws(&client, &name, "inherits", Default::default()).await;
    create_ws(
        &client,
        &name,
        "overrides",
        WorkspaceSpec {
            display_name: None,
            policy: WorkspacePolicy {
                quota: Some(quantities(&[("pods", "3")])),
                limit_range: None,
                pod_security: Some(PodSecurityLevel::Privileged),
                network_isolation: Some(false),
            },
        },
    )
    .await;
    wait_ws_ready(&client, &name, "inherits").await;
    wait_ws_ready(&client, &name, "overrides").await;

    let inh = format!("{name}--inherits");
    let ovr = format!("{name}--overrides");
    let ns_api = Api::<Namespace>::all(client.clone());
    let level = |ns: &Namespace| {
        ns.labels()
            .get("pod-security.kubernetes.io/enforce")
            .cloned()
    };
    assert_eq!(
        level(&ns_api.get(&inh).await.unwrap()).as_deref(),
        Some("restricted")
    );
    assert_eq!(
        level(&ns_api.get(&ovr).await.unwrap()).as_deref(),
        Some("privileged")
    );
    let quota = |ns: &str| {
        let api = Api::<ResourceQuota>::namespaced(client.clone(), ns);
        async move {
            api.get("tenantry-quota")
                .await
                .unwrap()
                .spec
                .unwrap()
                .hard
                .unwrap()["pods"]
                .0
                .clone()
        }
    };
    assert_eq!(quota(&inh).await, "10");
    assert_eq!(quota(&ovr).await, "3");
    let lr = Api::<LimitRange>::namespaced(client.clone(), &inh)
        .get("tenantry-limits")
        .await
        .unwrap();
    assert_eq!(
        lr.spec.unwrap().limits[0].default.as_ref().unwrap()["memory"].0,
        "256Mi"
    );
    let np_inh = Api::<NetworkPolicy>::namespaced(client.clone(), &inh)
        .get_opt("tenantry-isolation")
        .await
        .unwrap();
    let np = np_inh.expect("isolation on by default");
    assert_eq!(
        np.spec.as_ref().unwrap().policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    assert!(
        Api::<NetworkPolicy>::namespaced(client.clone(), &ovr)
            .get_opt("tenantry-isolation")
            .await
            .unwrap()
            .is_none()
    );

    // Switching isolation off later removes the policy; on again brings it back.
    let wss: Api<Workspace> = Api::namespaced(client.clone(), &format!("org-{name}"));
    wss.patch(
        "inherits",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"networkIsolation": false}})),
    )
    .await
    .unwrap();
    wait_ws_ready(&client, &name, "inherits").await;
    wait_gone(
        &Api::<NetworkPolicy>::namespaced(client.clone(), &inh),
        "tenantry-isolation",
    )
    .await;
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn a_conflicting_namespace_is_never_adopted_or_touched() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let spec = bare_org_spec("a@x.example");
    create_org(&client, &name, spec).await;
    let squatted = format!("{name}--taken");
    let ns_api = Api::<Namespace>::all(client.clone());
    let before = ns_api
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(squatted.clone()),
                    labels: Some([("team".to_string(), "someone-else".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    create_ws(&client, &name, "taken", Default::default()).await;
    let ws = wait_ws_reason(&client, &name, "taken", "NamespaceConflict").await;
    let conds = ws.status.unwrap().conditions;
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True"),
        "{conds:?}"
    );
    let after = ns_api.get(&squatted).await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the namespace was not written"
    );
    assert!(
        Api::<RoleBinding>::namespaced(client.clone(), &squatted)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Deleting the workspace leaves the foreign namespace alone.
    Api::<Workspace>::namespaced(client.clone(), &format!("org-{name}"))
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        &Api::<Workspace>::namespaced(client.clone(), &format!("org-{name}")),
        "taken",
    )
    .await;
    assert!(
        ns_api
            .get(&squatted)
            .await
            .unwrap()
            .meta()
            .deletion_timestamp
            .is_none()
    );
    ns_api
        .delete(&squatted, &DeleteParams::default())
        .await
        .unwrap();
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn workspaces_beyond_the_limit_are_not_provisioned() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let mut spec = org_spec("a@x.example");
    spec.limits = Some(Limits {
        max_workspaces: Some(2),
        ..Default::default()
    });
    create_org(&client, &name, spec).await;
    wait_ws_ready(&client, &name, "default").await;
    crate::harness::next_second().await;
    create_ws(&client, &name, "second", Default::default()).await;
    wait_ws_ready(&client, &name, "second").await;
    crate::harness::next_second().await;
    create_ws(&client, &name, "third", Default::default()).await;
    wait_ws_reason(&client, &name, "third", "WorkspaceLimitReached").await;
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&format!("{name}--third"))
            .await
            .unwrap()
            .is_none()
    );
    // Freeing a place provisions it.
    let wss: Api<Workspace> = Api::namespaced(client.clone(), &format!("org-{name}"));
    wss.delete("second", &DeleteParams::default())
        .await
        .unwrap();
    wait_ws_ready(&client, &name, "third").await;
    delete_org(&client, &name).await;
}

/// A new organization with one Ready workspace `ws`: the client, the organization's name
/// and the workspace's namespace.
async fn org_with_workspace(ws: &str) -> (Client, String, String) {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    create_org(&client, &name, org_spec("a@x.example")).await;
    create_ws(&client, &name, ws, Default::default()).await;
    wait_ws_ready(&client, &name, ws).await;
    let ns = format!("{name}--{ws}");
    (client, name, ns)
}

#[tokio::test]
async fn workspace_deletion_removes_its_namespace_and_bindings() {
    let (client, name, ns) = org_with_workspace("doomed").await;
    put_configmap(&client, &ns, "data").await;
    let wss: Api<Workspace> = Api::namespaced(client.clone(), &format!("org-{name}"));
    wss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&wss, "doomed").await;
    wait_gone(&Api::<Namespace>::all(client.clone()), &ns).await;
    delete_org(&client, &name).await;
}

/// Issue 13: a Membership granted a workspace that is being provisioned writes one status,
/// `Granted`, when the wait is short, not `WorkspacePending` first (a tenancy applied at
/// once wrote both for most members). The workspace's namespace is held terminating by a
/// finalizer of the test's, so the wait is certain. A missing workspace is still reported
/// at once (`duplicates_limits_and_missing_workspaces_are_reported`).
#[tokio::test]
async fn a_member_of_a_workspace_being_provisioned_writes_one_status() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let (client, name, ns) = org_with_workspace("w").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let pin: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "pin", "finalizers": ["example.com/pin"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &pin).await.unwrap();
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    wait_ws_reason(&client, &name, "w", "NamespaceTerminating").await;

    // Every status the Membership is ever written, from before it exists.
    let members: Api<Membership> = Api::namespaced(client.clone(), &format!("org-{name}"));
    let stream = watcher(
        members.clone(),
        watcher::Config::default().fields("metadata.name=m"),
    )
    .applied_objects();
    let seen = tokio::spawn(async move {
        let mut reasons: Vec<String> = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(m)) = stream.next().await {
            let reason = m.status.as_ref().and_then(|s| reason_in(&s.conditions));
            if let Some(reason) = reason
                && reasons.last() != Some(&reason)
            {
                reasons.push(reason.clone());
                if reason == "Granted" {
                    break;
                }
            }
        }
        reasons
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    add_member(
        &client,
        &name,
        membership(
            "m",
            Subject::user("m@x.example"),
            OrgRole::Member,
            &[("w", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let waiting = members.get("m").await.unwrap();
    assert!(
        waiting
            .status
            .as_ref()
            .is_none_or(|s| s.conditions.is_empty()),
        "no status while the workspace is provisioned: {:?}",
        waiting.status
    );
    cms.patch(
        "pin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_member_reason(&client, &name, "m", "Granted").await;
    let reasons = tokio::time::timeout(std::time::Duration::from_secs(30), seen)
        .await
        .expect("the watch saw Granted")
        .unwrap();
    assert_eq!(reasons, ["Granted"], "the statuses written, in order");
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn orphan_policy_keeps_the_namespace_without_tenantry() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let mut spec = org_spec("a@x.example");
    spec.deletion_policy = Some(DeletionPolicy::Orphan);
    create_org(&client, &name, spec).await;
    wait_ws_ready(&client, &name, "default").await;
    let ns = format!("{name}--default");
    let api: Api<Organization> = Api::all(client.clone());
    unprotect(&client, &name).await;
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&api, &name).await;
    wait_gone(
        &Api::<Namespace>::all(client.clone()),
        &format!("org-{name}"),
    )
    .await;
    let kept = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .expect("orphaned namespace is kept");
    assert!(kept.meta().deletion_timestamp.is_none());
    assert!(
        !kept.labels().contains_key("tenantry.dev/organization"),
        "{:?}",
        kept.labels()
    );
    assert!(
        binding_subjects(&client, &ns, "tenantry-workspace-admin")
            .await
            .is_empty()
    );
    Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}

// ---------- membership ----------

#[tokio::test]
async fn role_and_workspace_changes_move_bindings_and_removal_leaves_nothing() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let spec = bare_org_spec("owner@x.example");
    create_org(&client, &name, spec).await;
    for ws in ["a", "b"] {
        create_ws(&client, &name, ws, Default::default()).await;
        wait_ws_ready(&client, &name, ws).await;
    }
    let (a, b, org_ns) = (
        format!("{name}--a"),
        format!("{name}--b"),
        format!("org-{name}"),
    );
    add_member(
        &client,
        &name,
        membership(
            "dev",
            Subject::user("dev@x.example"),
            OrgRole::Member,
            &[("a", WorkspaceRole::Editor)],
        ),
    )
    .await;
    let m = wait_member_reason(&client, &name, "dev", "Granted").await;
    assert_eq!(
        m.status.unwrap().workspaces,
        vec![WorkspaceAccess {
            name: "a".into(),
            role: WorkspaceRole::Editor,
            state: AccessState::Granted
        }]
    );
    wait_binding(
        &client,
        &a,
        "tenantry-workspace-editor",
        &["User/dev@x.example"],
    )
    .await;
    wait_binding(
        &client,
        &org_ns,
        "tenantry-org-member",
        &["User/dev@x.example"],
    )
    .await;
    assert!(
        binding_subjects(&client, &b, "tenantry-workspace-editor")
            .await
            .is_empty()
    );

    // Move to b as Viewer.
    let mbrs: Api<Membership> = Api::namespaced(client.clone(), &org_ns);
    mbrs.patch(
        "dev",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"workspaces": [{"name": "b", "role": "Viewer"}]}})),
    )
    .await
    .unwrap();
    wait_binding(
        &client,
        &b,
        "tenantry-workspace-viewer",
        &["User/dev@x.example"],
    )
    .await;
    wait_binding(&client, &a, "tenantry-workspace-editor", &[]).await;

    // Manager reaches every workspace as Admin, including one created later.
    mbrs.patch(
        "dev",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"role": "Manager", "workspaces": []}})),
    )
    .await
    .unwrap();
    for ns in [&a, &b] {
        wait_binding(
            &client,
            ns,
            "tenantry-workspace-admin",
            &["User/dev@x.example", "User/owner@x.example"],
        )
        .await;
    }
    wait_binding(&client, &b, "tenantry-workspace-viewer", &[]).await;
    wait_binding(
        &client,
        &org_ns,
        "tenantry-org-manager",
        &["User/dev@x.example"],
    )
    .await;
    wait_binding(&client, &org_ns, "tenantry-org-member", &[]).await;
    create_ws(&client, &name, "later", Default::default()).await;
    wait_ws_ready(&client, &name, "later").await;
    wait_binding(
        &client,
        &format!("{name}--later"),
        "tenantry-workspace-admin",
        &["User/dev@x.example", "User/owner@x.example"],
    )
    .await;

    // Something the member created stays when the member goes.
    put_configmap(&client, &a, "made-by-dev").await;
    mbrs.delete("dev", &DeleteParams::default()).await.unwrap();
    for ns in [&a, &b, &format!("{name}--later")] {
        wait_binding(
            &client,
            ns,
            "tenantry-workspace-admin",
            &["User/owner@x.example"],
        )
        .await;
    }
    wait_binding(&client, &org_ns, "tenantry-org-manager", &[]).await;
    // No binding anywhere names dev any more.
    for rb in Api::<RoleBinding>::all(client.clone())
        .list(&lp(&format!("tenantry.dev/organization={name}")))
        .await
        .unwrap()
    {
        let subjects = rb.subjects.clone().unwrap_or_default();
        assert!(
            !subjects.iter().any(|s| s.name == "dev@x.example"),
            "{} still names dev",
            rb.name_any()
        );
    }
    // The organization's ClusterRoleBindings follow in the same pass, after its
    // RoleBindings.
    let crbs = Api::<ClusterRoleBinding>::all(client.clone());
    for crb in crbs
        .list(&lp(&format!("tenantry.dev/organization={name}")))
        .await
        .unwrap()
    {
        wait_for(
            &crbs,
            &crb.name_any(),
            "dev gone from the binding",
            |b: Option<&ClusterRoleBinding>| {
                b.is_none_or(|b| {
                    !b.subjects
                        .iter()
                        .flatten()
                        .any(|s| s.name == "dev@x.example")
                })
            },
        )
        .await;
    }
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &a)
            .get_opt("made-by-dev")
            .await
            .unwrap()
            .is_some()
    );
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn duplicates_limits_and_missing_workspaces_are_reported() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let mut spec = org_spec("owner@x.example");
    spec.limits = Some(Limits {
        max_members: Some(2),
        ..Default::default()
    });
    create_org(&client, &name, spec).await;
    add_member(
        &client,
        &name,
        membership(
            "first",
            Subject::user("u@x.example"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    wait_member_reason(&client, &name, "first", "Granted").await;
    crate::harness::next_second().await;
    add_member(
        &client,
        &name,
        membership("again", Subject::user("u@x.example"), OrgRole::Admin, &[]),
    )
    .await;
    let dup = wait_member_reason(&client, &name, "again", "DuplicateSubject").await;
    assert!(
        dup.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    add_member(
        &client,
        &name,
        membership(
            "pending",
            Subject::group("g"),
            OrgRole::Member,
            &[("future", WorkspaceRole::Editor)],
        ),
    )
    .await;
    let pending = wait_member_reason(&client, &name, "pending", "WorkspacePending").await;
    assert_eq!(
        pending.status.unwrap().workspaces[0].state,
        AccessState::Pending
    );
    crate::harness::next_second().await;
    add_member(
        &client,
        &name,
        membership("third", Subject::user("v@x.example"), OrgRole::Member, &[]),
    )
    .await;
    wait_member_reason(&client, &name, "third", "MemberLimitReached").await;
    // The duplicate Admin grants nothing.
    let org_ns = format!("org-{name}");
    assert!(
        !binding_subjects(&client, &org_ns, "tenantry-org-admin")
            .await
            .contains(&"User/u@x.example".to_string())
    );
    assert!(
        !binding_subjects(
            &client,
            &format!("{name}--default"),
            "tenantry-workspace-admin"
        )
        .await
        .contains(&"User/u@x.example".to_string())
    );

    // The missing workspace is granted as soon as it appears.
    create_ws(&client, &name, "future", Default::default()).await;
    wait_member_reason(&client, &name, "pending", "Granted").await;
    wait_binding(
        &client,
        &format!("{name}--future"),
        "tenantry-workspace-editor",
        &["Group/g"],
    )
    .await;
    delete_org(&client, &name).await;
}

// ---------- drift, restarts and idleness ----------

/// Tenantry creates an object by POST (cheaper than an apply), which records its fields
/// under an Update entry; a later apply still removes a field the build dropped, because
/// the first apply takes those fields over (`provision::own_created_fields`).
#[tokio::test]
async fn a_field_set_at_creation_goes_when_the_spec_drops_it() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let spec = bare_org_spec("owner@x.example");
    create_org(&client, &name, spec).await;
    let policy = |hard: &[(&str, &str)]| WorkspacePolicy {
        quota: Some(quantities(hard)),
        ..Default::default()
    };
    create_ws(
        &client,
        &name,
        "dev",
        WorkspaceSpec {
            display_name: None,
            policy: policy(&[("pods", "10"), ("requests.cpu", "2")]),
        },
    )
    .await;
    wait_ws_ready(&client, &name, "dev").await;
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &format!("{name}--dev"));
    let hard = |q: &ResourceQuota| -> Vec<String> {
        q.spec
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default()
    };
    let created = quotas.get("tenantry-quota").await.unwrap();
    assert_eq!(hard(&created), ["pods", "requests.cpu"]);
    let owners: Vec<(String, String)> = created
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        owners.contains(&("tenantry".into(), "Update".into())),
        "created by POST: {owners:?}"
    );

    Api::<Workspace>::namespaced(client.clone(), &format!("org-{name}"))
        .patch(
            "dev",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quota": {"requests.cpu": null}}})),
        )
        .await
        .unwrap();
    wait_for(
        &quotas,
        "tenantry-quota",
        "requests.cpu removed from the quota",
        |q: Option<&ResourceQuota>| q.is_some_and(|q| hard(q) == ["pods"]),
    )
    .await;
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn drift_is_repaired() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let mut spec = org_spec("owner@x.example");
    spec.workspace_defaults = Some(WorkspacePolicy {
        quota: Some(quantities(&[("pods", "7")])),
        ..Default::default()
    });
    create_org(&client, &name, spec).await;
    wait_ws_ready(&client, &name, "default").await;
    let ns = format!("{name}--default");
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);

    // A deleted RoleBinding comes back.
    rbs.delete("tenantry-workspace-admin", &DeleteParams::default())
        .await
        .unwrap();
    wait_binding(
        &client,
        &ns,
        "tenantry-workspace-admin",
        &["User/owner@x.example"],
    )
    .await;

    // Edited subjects are restored.
    rbs.patch(
        "tenantry-workspace-admin",
        &PatchParams::default(),
        &Patch::Merge(json!({"subjects": [{"kind": "User", "name": "mallory@evil.example", "apiGroup": "rbac.authorization.k8s.io"}]})),
    )
    .await
    .unwrap();
    wait_binding(
        &client,
        &ns,
        "tenantry-workspace-admin",
        &["User/owner@x.example"],
    )
    .await;

    // An edited quota is restored.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    quotas
        .patch(
            "tenantry-quota",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "1000"}}})),
        )
        .await
        .unwrap();
    wait_for(
        &quotas,
        "tenantry-quota",
        "pods quota back to 7",
        |q: Option<&ResourceQuota>| {
            q.and_then(|q| {
                q.spec
                    .as_ref()?
                    .hard
                    .as_ref()?
                    .get("pods")
                    .map(|p| p.0 == "7")
            })
            .unwrap_or(false)
        },
    )
    .await;

    // A deleted NetworkPolicy and a stripped namespace label come back.
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    nps.delete("tenantry-isolation", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &nps,
        "tenantry-isolation",
        "recreated",
        |n: Option<&NetworkPolicy>| n.is_some(),
    )
    .await;
    let ns_api = Api::<Namespace>::all(client.clone());
    ns_api
        .patch(&ns, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})))
        .await
        .unwrap();
    wait_for(
        &ns_api,
        &ns,
        "pod security restored",
        |n: Option<&Namespace>| {
            n.is_some_and(|n| {
                n.labels()
                    .get("pod-security.kubernetes.io/enforce")
                    .map(String::as_str)
                    == Some("baseline")
            })
        },
    )
    .await;
    delete_org(&client, &name).await;
}

#[tokio::test]
async fn client_credentials_are_issued_once_and_survive_a_controller_restart() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    create_org(&client, &name, org_spec("owner@x.example")).await;
    add_member(
        &client,
        &name,
        membership(
            "deployer",
            Subject::client("deployer"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
    )
    .await;
    let m = wait_member_reason(&client, &name, "deployer", "Granted").await;
    let status = m.status.unwrap();
    let org_ns = format!("org-{name}");
    let secret = Api::<Secret>::namespaced(client.clone(), &org_ns)
        .get("deployer-credentials")
        .await
        .unwrap();
    let data = secret.data.clone().unwrap();
    let id = String::from_utf8(data["client-id"].0.clone()).unwrap();
    let value = data["client-secret"].0.clone();
    assert_eq!(status.client_id(), Some(id.as_str()));
    assert!(id.starts_with(&format!("{name}.deployer.")), "{id}");
    assert!(value.len() >= 43, "at least 256 bits, base64url");
    // The secret is nowhere in the Membership.
    let m_json = serde_json::to_string(
        &Api::<Membership>::namespaced(client.clone(), &org_ns)
            .get("deployer")
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(!m_json.contains(std::str::from_utf8(&value).unwrap()));
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &org_ns)
        .get("deployer-client")
        .await
        .unwrap();
    assert_eq!(sa.owner_references()[0].name, "deployer");
    wait_binding(
        &client,
        &format!("{name}--default"),
        "tenantry-workspace-editor",
        &["ServiceAccount/deployer-client"],
    )
    .await;

    // A restart (empty caches) and a spec change reconcile it again: the secret stays.
    let mut rx = controller();
    restart_controller();
    let mbrs: Api<Membership> = Api::namespaced(client.clone(), &org_ns);
    mbrs.patch(
        "deployer",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"workspaces": [{"name": "default", "role": "Viewer"}]}})),
    )
    .await
    .unwrap();
    wait_reconciled(&mut rx, &[("Membership", Some(&org_ns), "deployer")]).await;
    wait_binding(
        &client,
        &format!("{name}--default"),
        "tenantry-workspace-viewer",
        &["ServiceAccount/deployer-client"],
    )
    .await;
    let again = Api::<Secret>::namespaced(client.clone(), &org_ns)
        .get("deployer-credentials")
        .await
        .unwrap();
    assert_eq!(
        again.resource_version(),
        secret.resource_version(),
        "the Secret was not rewritten"
    );
    assert_eq!(again.data.unwrap()["client-secret"].0, value);

    // Removing the membership removes its ServiceAccount and Secret.
    mbrs.delete("deployer", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        &Api::<ServiceAccount>::namespaced(client.clone(), &org_ns),
        "deployer-client",
    )
    .await;
    wait_gone(
        &Api::<Secret>::namespaced(client.clone(), &org_ns),
        "deployer-credentials",
    )
    .await;
    delete_org(&client, &name).await;
}

/// Every object Tenantry manages for an organization, by kind/namespace/name, with its
/// resourceVersion, plus the three kinds' own objects.
async fn footprint(client: &Client, org: &str) -> BTreeMap<String, String> {
    let lp = lp(&format!("tenantry.dev/organization={org}"));
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($t:ty, $api:expr, $lp:expr) => {
            for o in $api.list($lp).await.unwrap() {
                let o: $t = o;
                out.insert(
                    format!(
                        "{}/{}/{}",
                        <$t>::kind(&()),
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    ),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(Namespace, Api::<Namespace>::all(client.clone()), &lp);
    collect!(RoleBinding, Api::<RoleBinding>::all(client.clone()), &lp);
    collect!(ClusterRole, Api::<ClusterRole>::all(client.clone()), &lp);
    collect!(
        ClusterRoleBinding,
        Api::<ClusterRoleBinding>::all(client.clone()),
        &lp
    );
    collect!(
        ResourceQuota,
        Api::<ResourceQuota>::all(client.clone()),
        &lp
    );
    collect!(LimitRange, Api::<LimitRange>::all(client.clone()), &lp);
    collect!(
        NetworkPolicy,
        Api::<NetworkPolicy>::all(client.clone()),
        &lp
    );
    collect!(
        ServiceAccount,
        Api::<ServiceAccount>::all(client.clone()),
        &lp
    );
    collect!(Secret, Api::<Secret>::all(client.clone()), &lp);
    let all = ListParams::default();
    collect!(
        Workspace,
        Api::<Workspace>::namespaced(client.clone(), &format!("org-{org}")),
        &all
    );
    collect!(
        Membership,
        Api::<Membership>::namespaced(client.clone(), &format!("org-{org}")),
        &all
    );
    out
}

#[tokio::test]
async fn an_idle_reconcile_writes_nothing() {
    let _ = controller();
    let client = admin().await;
    let name = unique("t");
    let mut spec = org_spec("owner@x.example");
    spec.workspace_defaults = Some(WorkspacePolicy {
        quota: Some(quantities(&[("pods", "5")])),
        limit_range: Some(LimitDefaults {
            default_request: Some(quantities(&[("cpu", "100m")])),
            ..Default::default()
        }),
        ..Default::default()
    });
    create_org(&client, &name, spec).await;
    create_ws(&client, &name, "two", Default::default()).await;
    wait_ws_ready(&client, &name, "default").await;
    wait_ws_ready(&client, &name, "two").await;
    add_member(
        &client,
        &name,
        membership(
            "m",
            Subject::user("m@x.example"),
            OrgRole::Member,
            &[("two", WorkspaceRole::Editor)],
        ),
    )
    .await;
    add_member(
        &client,
        &name,
        membership(
            "c",
            Subject::client("c"),
            OrgRole::Viewer,
            &[("default", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    wait_member_reason(&client, &name, "m", "Granted").await;
    wait_member_reason(&client, &name, "c", "Granted").await;
    wait_org_ready(&client, &name).await;
    let org_ns = format!("org-{name}");
    // Let the last status writes settle: wait until a full pass over every object ends.
    let mut rx = controller();
    restart_controller();
    let everything = [
        ("Organization", None, name.as_str()),
        ("Workspace", Some(org_ns.as_str()), "default"),
        ("Workspace", Some(org_ns.as_str()), "two"),
        ("Membership", Some(org_ns.as_str()), "m"),
        ("Membership", Some(org_ns.as_str()), "c"),
    ];
    wait_reconciled(&mut rx, &everything).await;
    let before = footprint(&client, &name).await;
    let org_rv = Api::<Organization>::all(client.clone())
        .get(&name)
        .await
        .unwrap()
        .resource_version();
    assert!(before.len() > 20, "a real footprint: {before:#?}");

    // Restart: a full pass over everything with empty caches.
    let mut rx = controller();
    restart_controller();
    wait_reconciled(&mut rx, &everything).await;
    let after = footprint(&client, &name).await;
    assert_eq!(before, after, "an idle reconcile wrote nothing");
    assert_eq!(
        org_rv,
        Api::<Organization>::all(client.clone())
            .get(&name)
            .await
            .unwrap()
            .resource_version()
    );
    let org = Api::<Organization>::all(client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(org.status.unwrap().members, 2);
    delete_org(&client, &name).await;
}
