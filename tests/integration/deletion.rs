//! Data safety (issue 21): what deleting an organization does to its workspace
//! namespaces is decided from the Organization as it was when its deletion began, never
//! from a cache that lags; nothing that holds data is removed before that decision.
//!
//! The user's two commands, back to back, as the issue ran them:
//!
//!     kubectl patch org o1 --type merge -p '{"spec":{"deletionPolicy":"Orphan","deletionProtection":false}}'
//!     kubectl delete org o1 --wait=false

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tenantry::api::*;

use crate::core::{create_org, create_ws, org_spec, put_configmap, wait_ws_ready};
use crate::harness::{admin, controller, unique, wait_gone};

/// An organization with two provisioned workspaces, each holding a member's ConfigMap;
/// the workspace namespaces.
async fn org_with_data(client: &Client, name: &str) -> Vec<String> {
    create_org(client, name, org_spec("o@x.example")).await;
    create_ws(client, name, "data", Default::default()).await;
    let mut namespaces = Vec::new();
    for ws in ["default", "data"] {
        let w = wait_ws_ready(client, name, ws).await;
        let ns = w
            .status
            .and_then(|s| s.namespace)
            .expect("a provisioned namespace");
        put_configmap(client, &ns, "precious").await;
        namespaces.push(ns);
    }
    namespaces
}

/// The two commands, with nothing between them.
async fn orphan_then_delete(client: &Client, name: &str) {
    let orgs = Api::<Organization>::all(client.clone());
    orgs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"deletionPolicy": "Orphan", "deletionProtection": false}})),
    )
    .await
    .expect("choose Orphan");
    orgs.delete(name, &DeleteParams::default())
        .await
        .expect("delete the organization");
}

/// The kept namespaces hold their data and their safety, and nothing of Tenantry's grants.
async fn assert_kept(client: &Client, namespaces: &[String]) {
    for ns in namespaces {
        let kept = Api::<Namespace>::all(client.clone())
            .get(ns)
            .await
            .unwrap_or_else(|e| panic!("namespace {ns} is kept: {e}"));
        assert!(
            kept.metadata.deletion_timestamp.is_none(),
            "{ns} terminating"
        );
        assert!(
            kept.owner_references().is_empty(),
            "{ns}: {:?}",
            kept.owner_references()
        );
        let labels = kept.labels();
        assert!(
            !labels.contains_key("tenantry.dev/organization"),
            "{labels:?}"
        );
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("baseline"),
            "an orphaned namespace keeps its Pod Security level (item 11 of issue 12)"
        );
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get("precious")
            .await
            .unwrap_or_else(|e| panic!("the ConfigMap in {ns} is kept: {e}"));
        let np = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
            .get("tenantry-isolation")
            .await
            .expect("the isolation NetworkPolicy is kept");
        assert!(
            !np.labels().keys().any(|k| k.starts_with("tenantry.dev/")),
            "no longer Tenantry's: {:?}",
            np.labels()
        );
        let bindings = Api::<RoleBinding>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
            .expect("list");
        assert!(
            bindings
                .items
                .iter()
                .all(|rb| !rb.name_any().starts_with("tenantry-")),
            "Tenantry's grants are gone from {ns}"
        );
    }
}

async fn remove(client: &Client, namespaces: &[String]) {
    for ns in namespaces {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn orphan_chosen_right_before_the_delete_keeps_every_workspace() {
    let _ = controller();
    let client = admin().await;
    let name = unique("keep");
    let namespaces = org_with_data(&client, &name).await;
    orphan_then_delete(&client, &name).await;
    wait_gone(&Api::<Organization>::all(client.clone()), &name).await;
    wait_gone(
        &Api::<Namespace>::all(client.clone()),
        &format!("org-{name}"),
    )
    .await;
    assert_kept(&client, &namespaces).await;
    remove(&client, &namespaces).await;
}

#[tokio::test]
async fn delete_chosen_right_before_the_delete_removes_every_workspace() {
    let _ = controller();
    let client = admin().await;
    let name = unique("gone");
    let mut spec = org_spec("o@x.example");
    spec.deletion_policy = Some(DeletionPolicy::Orphan);
    create_org(&client, &name, spec).await;
    let ns = wait_ws_ready(&client, &name, "default")
        .await
        .status
        .and_then(|s| s.namespace)
        .expect("namespace");
    put_configmap(&client, &ns, "precious").await;
    let orgs = Api::<Organization>::all(client.clone());
    orgs.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete", "deletionProtection": false}})),
    )
    .await
    .expect("choose Delete");
    orgs.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&orgs, &name).await;
    wait_gone(&Api::<Namespace>::all(client.clone()), &ns).await;
}

/// The controller is down when the user runs the two commands, and starts after: the
/// organization waits for it (its finalizer), and its spec cannot be changed meanwhile.
#[tokio::test]
async fn orphan_holds_when_the_controller_was_down_during_the_delete() {
    let cp = crate::harness::dedicated().await;
    let client = cp.admin().await;
    let operator =
        crate::resilience::Operator::ready_with(&cp.kubeconfig, "deletion-down", &[]).await;
    let namespaces = org_with_data(&client, "o1").await;
    operator.kill9().await;

    orphan_then_delete(&client, "o1").await;
    // Deletion began: the spec is what it was, whoever asks.
    let r = Api::<Organization>::all(client.clone())
        .patch(
            "o1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await;
    assert!(
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 403),
        "the deletion policy is frozen once deletion began: {r:?}"
    );
    // Nothing is removed while Tenantry is away.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for ns in &namespaces {
        let n = Api::<Namespace>::all(client.clone())
            .get(ns)
            .await
            .expect("still there");
        assert!(n.metadata.deletion_timestamp.is_none(), "{ns}");
    }

    let operator =
        crate::resilience::Operator::ready_with(&cp.kubeconfig, "deletion-up", &[]).await;
    wait_gone(&Api::<Organization>::all(client.clone()), "o1").await;
    wait_gone(&Api::<Namespace>::all(client.clone()), "org-o1").await;
    assert_kept(&client, &namespaces).await;
    drop(operator);
}
