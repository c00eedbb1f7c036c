//! The caches watch the built-in kinds Tenantry makes in protobuf (`tenantry::wire`):
//! each object, read that way, is the object a JSON read gives (but its managedFields,
//! which the caches drop). A field the conversion missed would be drift to every
//! reconcile, and a write each time.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use tenantry::api::{
    LimitDefaults, OrgRole, Subject, WorkspacePolicy, WorkspaceRole, WorkspaceSpec,
};
use tenantry::wire::Proto;

use crate::core::{
    add_member, bare_org_spec, create_org, create_ws, membership, quantities, wait_member_reason,
    wait_ws_ready,
};
use crate::harness::{TIMEOUT, admin, controller, unique};

/// Reads every object of kind `K` matching `selector` as JSON and in protobuf and
/// compares them; returns how many were compared.
async fn same_both_ways<K>(client: &Client, selector: &str) -> usize
where
    K: Proto + DeserializeOwned + PartialEq + Debug,
{
    let all = Api::<K>::all(client.clone());
    // Some objects follow others (the Role reading client credentials follows the client's
    // Secret): wait for the first.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let listed = loop {
        let listed = all
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list");
        if !listed.items.is_empty() || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut compared = 0;
    for o in listed.items {
        let (ns, name) = (o.namespace(), o.name_any());
        // The object may change between the two reads (a status, a repair): read both
        // again until they are of the same version.
        for attempt in 0.. {
            let request = kube::core::Request::new(K::url_path(&(), ns.as_deref()))
                .get(&name, &Default::default())
                .expect("a GET");
            let json: K = client.request(request).await.expect("get as JSON");
            let proto: K = tenantry::wire::get(client, ns.as_deref(), &name)
                .await
                .expect("get in protobuf");
            if json.resource_version() != proto.resource_version() && attempt < 10 {
                continue;
            }
            let mut json = json;
            json.meta_mut().managed_fields = None;
            assert_eq!(proto, json, "{} {ns:?}/{name}", K::kind(&()));
            compared += 1;
            break;
        }
    }
    compared
}

#[tokio::test]
async fn a_protobuf_watch_reads_what_a_json_read_does() {
    let client = admin().await;
    let _c = controller();
    let org = unique("wire");
    create_org(&client, &org, bare_org_spec("owner@wire.example")).await;
    create_ws(
        &client,
        &org,
        "dev",
        WorkspaceSpec {
            display_name: None,
            policy: WorkspacePolicy {
                quota: Some(quantities(&[("pods", "10"), ("requests.cpu", "2")])),
                limit_range: Some(LimitDefaults {
                    default: Some(quantities(&[("cpu", "500m"), ("memory", "512Mi")])),
                    default_request: Some(quantities(&[("cpu", "100m")])),
                    max: Some(quantities(&[("memory", "1Gi")])),
                }),
                pod_security: None,
                network_isolation: Some(true),
            },
        },
    )
    .await;
    add_member(
        &client,
        &org,
        membership(
            "viewer",
            Subject::user("viewer@wire.example"),
            OrgRole::Member,
            &[("dev", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    // An Admin and a client: the Role and RoleBinding by which Admins read the client's
    // credentials.
    add_member(
        &client,
        &org,
        membership(
            "admin",
            Subject::user("admin@wire.example"),
            OrgRole::Admin,
            &[],
        ),
    )
    .await;
    add_member(
        &client,
        &org,
        membership("bot", Subject::client("bot"), OrgRole::Member, &[]),
    )
    .await;
    for m in ["viewer", "admin", "bot"] {
        wait_member_reason(&client, &org, m, "Granted").await;
    }
    wait_ws_ready(&client, &org, "dev").await;

    let selector = format!(
        "{},{}={org}",
        tenantry::labels::managed_selector(),
        tenantry::labels::ORGANIZATION
    );
    let counts = [
        (
            "Namespace",
            same_both_ways::<Namespace>(&client, &selector).await,
        ),
        (
            "RoleBinding",
            same_both_ways::<RoleBinding>(&client, &selector).await,
        ),
        (
            "ResourceQuota",
            same_both_ways::<ResourceQuota>(&client, &selector).await,
        ),
        (
            "LimitRange",
            same_both_ways::<LimitRange>(&client, &selector).await,
        ),
        (
            "NetworkPolicy",
            same_both_ways::<NetworkPolicy>(&client, &selector).await,
        ),
        ("Role", same_both_ways::<Role>(&client, &selector).await),
        (
            "ClusterRole",
            same_both_ways::<ClusterRole>(&client, &selector).await,
        ),
        (
            "ClusterRoleBinding",
            same_both_ways::<ClusterRoleBinding>(&client, &selector).await,
        ),
    ];
    // Every kind was there to compare (else the test proves nothing of it).
    for (kind, n) in counts {
        assert!(n > 0, "no {kind} of organization {org} to compare");
    }
}
