//! Organization-wide resources (#15): the pooled quota, usage for billing, shared
//! resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tenantry::api::*;

use crate::access::{allowed, populated_org, user};
use crate::core::{create_ws, delete_org, wait_org_status, wait_ws_ready, wait_ws_reason};
use crate::harness::{TIMEOUT, admin, as_user, controller};

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..Default::default()
    }
}

/// The ResourceQuota Tenantry keeps in namespace `ns`, as `resource -> value`.
pub(crate) async fn hard(client: &kube::Client, ns: &str) -> Option<BTreeMap<String, String>> {
    Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .get_opt("tenantry-quota")
        .await
        .expect("read the quota")
        .and_then(|q| q.spec?.hard)
        .map(|h| h.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Waits until the quota in `ns` holds `value` of `resource`.
pub(crate) async fn wait_hard(client: &kube::Client, ns: &str, resource: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = hard(client, ns).await;
        if now
            .as_ref()
            .and_then(|h| h.get(resource))
            .map(String::as_str)
            == Some(value)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ns}: waiting for {resource} = {value} in its quota, have {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn q(
    list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    r: &str,
) -> Option<String> {
    list.get(r).map(|v| v.0.clone())
}

/// A platform admin pools a quota over an organization's workspaces (`spec.quota`); its
/// Admin cannot. The oldest workspace is granted its quota; a younger one that does not
/// fit in what is left holds 0 of every pooled resource and says `QuotaPoolExhausted`;
/// the organization's status shows the pool, what is allocated and used (a pod's
/// requests), and its usage for billing, which its BillingAdmin reads. When the older
/// workspace asks less, the younger one is granted.
#[tokio::test]
async fn a_pooled_quota_caps_the_sum_of_the_workspace_quotas() {
    let _ = controller();
    let client = admin().await;
    let org = populated_org(&client).await;
    let ns = format!("org-{org}");
    let default_ns = format!("{org}--default");
    let admin_c = as_user(&user(OrgRole::Admin, &org), &[]).await;

    // Only the platform pools (like limits): an Admin may not, on its own organization.
    let r = Api::<Organization>::all(admin_c.clone())
        .patch(
            &org,
            &dry_patch(),
            &Patch::Merge(json!({"spec": {"quota": {"requests.cpu": "1000"}}})),
        )
        .await;
    assert!(!allowed("an Admin sets the pooled quota", r));
    // The Admin sets the workspaces' default quota (its own setting).
    Api::<Organization>::all(admin_c.clone())
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workspaceDefaults": {"quota": {"requests.cpu": "2", "pods": "10"}}}})),
        )
        .await
        .expect("an Admin sets the workspace defaults");
    let platform = as_user("root@platform.example", &["tenantry:platform-admins"]).await;
    Api::<Organization>::all(platform)
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quota": {"requests.cpu": "3", "pods": "20"}}})),
        )
        .await
        .expect("a platform admin pools a quota");

    // The oldest workspace is granted its quota.
    wait_hard(&client, &default_ns, "requests.cpu", "2").await;
    // A younger one asks 2 CPUs of the 1 left: not granted, none of the pool, said.
    create_ws(&client, &org, "second", WorkspaceSpec::default()).await;
    let ws = wait_ws_reason(&client, &org, "second", "QuotaPoolExhausted").await;
    let message = crate::core::ready_message(&ws.status.unwrap_or_default().conditions);
    assert!(message.contains("requests.cpu 2 > 1 left"), "{message}");
    let second_ns = format!("{org}--second");
    wait_hard(&client, &second_ns, "requests.cpu", "0").await;
    assert_eq!(
        hard(&client, &second_ns).await.unwrap()["pods"],
        "0",
        "not granted: none of any pooled resource"
    );

    // A pod in the granted workspace uses half a CPU of it.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "worker"},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "main",
                "image": "registry.invalid/worker:1",
                "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}},
            }],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(admin_c.clone(), &default_ns);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    // The namespace's default ServiceAccount may still be on its way.
    while let Err(e) = pods.create(&PostParams::default(), &pod).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an Admin runs a pod: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    wait_org_status(&client, &org, "the pool's state and the usage", |s| {
        let (Some(quota), Some(usage)) = (&s.quota, &s.usage) else {
            return false;
        };
        q(&quota.hard, "requests.cpu").as_deref() == Some("3")
            && q(&quota.allocated, "requests.cpu").as_deref() == Some("2")
            && q(&quota.allocated, "pods").as_deref() == Some("10")
            && q(&quota.used, "requests.cpu").as_deref() == Some("500m")
            && quota.not_granted == ["second"]
            && q(&usage.allocated, "requests.cpu").as_deref() == Some("2")
            && q(&usage.used, "requests.cpu").as_deref() == Some("500m")
            && q(&usage.used, "pods").as_deref() == Some("1")
            && usage.workspaces == 2
            && usage.clients == 1
    })
    .await;
    // Billing reads it (the organization is the BillingAdmin's to read), and so do
    // Prometheus's scrapes.
    let billing = as_user(&user(OrgRole::BillingAdmin, &org), &[]).await;
    let seen = Api::<Organization>::all(billing)
        .get(&org)
        .await
        .expect("a BillingAdmin reads the organization");
    let usage = seen.status.unwrap().usage.unwrap();
    assert!(usage.members >= 7, "the owner and six members: {usage:?}");
    let metrics = tenantry::metrics::encode();
    for series in [
        format!(
            "tenantry_organization_quota_used{{organization=\"{org}\",resource=\"requests.cpu\"}} 0.5"
        ),
        format!(
            "tenantry_organization_quota_pool{{organization=\"{org}\",resource=\"requests.cpu\"}} 3"
        ),
        format!("tenantry_organization_quota_pool_not_granted{{organization=\"{org}\"}} 1"),
        format!("tenantry_organization_clients{{organization=\"{org}\"}} 1"),
    ] {
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }

    // The older workspace asks less: the younger one fits, and is granted.
    Api::<Workspace>::namespaced(admin_c.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quota": {"requests.cpu": "1", "pods": "10"}}})),
        )
        .await
        .expect("an Admin gives the default workspace a smaller quota");
    wait_hard(&client, &second_ns, "requests.cpu", "2").await;
    wait_ws_ready(&client, &org, "second").await;
    wait_org_status(&client, &org, "the younger workspace granted", |s| {
        s.quota.as_ref().is_some_and(|q| {
            q.not_granted.is_empty()
                && q.allocated.get("requests.cpu").map(|v| v.0.as_str()) == Some("3")
        })
    })
    .await;
    delete_org(&client, &org).await;
    let gone = tenantry::metrics::encode();
    assert!(
        !gone.contains(&format!("organization=\"{org}\"")),
        "a deleted organization's series go"
    );
}

/// Waits until ConfigMap `ns/name` holds `key: value` (`None`: until it is gone).
async fn wait_config(client: &kube::Client, ns: &str, name: &str, want: Option<(&str, &str)>) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let cm = api.get_opt(name).await.expect("read a ConfigMap");
        let now = cm.as_ref().map(|c| c.data.clone().unwrap_or_default());
        let ok = match want {
            None => cm.is_none(),
            Some((k, v)) => now.as_ref().and_then(|d| d.get(k)).map(String::as_str) == Some(v),
        };
        if ok {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ns}/{name}: waiting for {want:?}, have {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn config_map(
    name: &str,
    labels: serde_json::Value,
    annotations: serde_json::Value,
    data: &str,
) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "data": {"value": data},
    }))
    .unwrap()
}

/// An organization shares ConfigMaps and Secrets from one of its workspaces
/// (`spec.sharedResources`), the platform from the operator's namespace (label
/// `tenantry.dev/shared-by: platform`): copies appear in the selected workspaces, follow
/// their source, go when no longer listed, and never replace a workspace's own object of
/// that name (the workspace says `SharedResourceConflict`). A source not there yet is
/// waited for (`SharedResourceMissing`); nobody but Tenantry can pass an object off as a
/// copy.
#[tokio::test]
async fn shared_resources_are_copied_kept_in_step_and_never_overwrite() {
    let _ = controller();
    let client = admin().await;
    let org = crate::harness::unique("shr");
    let owner = format!("owner@{org}.example");
    crate::core::create_org(&client, &org, crate::core::org_spec(&owner)).await;
    let ns = format!("org-{org}");
    create_ws(&client, &org, "shared", WorkspaceSpec::default()).await;
    let mut web = Workspace::new("web", WorkspaceSpec::default());
    web.metadata.namespace = Some(ns.clone());
    web.metadata.labels = Some(
        [
            ("env".to_string(), "prod".to_string()),
            ("shared-test".to_string(), org.clone()),
        ]
        .into(),
    );
    Api::<Workspace>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &web)
        .await
        .expect("create workspace web");
    for ws in ["default", "shared", "web"] {
        wait_ws_ready(&client, &org, ws).await;
    }
    let (src_ns, web_ns, default_ns) = (
        format!("{org}--shared"),
        format!("{org}--web"),
        format!("{org}--default"),
    );
    let cms = |ns: &str| Api::<ConfigMap>::namespaced(client.clone(), ns);
    let pp = PostParams::default();
    cms(&src_ns)
        .create(&pp, &config_map("ca-bundle", json!({}), json!({}), "A"))
        .await
        .unwrap();
    cms(&src_ns)
        .create(&pp, &config_map("settings", json!({}), json!({}), "shared"))
        .await
        .unwrap();
    let pull: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &src_ns)
        .create(&pp, &pull)
        .await
        .unwrap();
    // The web workspace's own "settings", made before anything is shared.
    cms(&web_ns)
        .create(&pp, &config_map("settings", json!({}), json!({}), "mine"))
        .await
        .unwrap();

    let owner_c = as_user(&owner, &[]).await;
    Api::<Organization>::all(owner_c.clone())
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sharedResources": [
                {"kind": "ConfigMap", "name": "ca-bundle", "fromWorkspace": "shared"},
                {"kind": "Secret", "name": "pull", "fromWorkspace": "shared"},
                {"kind": "ConfigMap", "name": "settings", "fromWorkspace": "shared",
                 "workspaceSelector": {"matchLabels": {"env": "prod"}}},
                {"kind": "ConfigMap", "name": "later", "fromWorkspace": "shared"},
            ]}})),
        )
        .await
        .expect("an Owner shares resources");
    // Copies in every workspace but the source's.
    for ns in [&default_ns, &web_ns] {
        wait_config(&client, ns, "ca-bundle", Some(("value", "A"))).await;
    }
    let copy = Api::<Secret>::namespaced(client.clone(), &web_ns)
        .get("pull")
        .await
        .expect("the Secret is copied");
    assert_eq!(copy.data, pull.data);
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    // The web workspace keeps its own settings, and says so.
    let ws = wait_ws_reason(&client, &org, "web", "SharedResourceConflict").await;
    let message = format!("{:?}", ws.status.unwrap_or_default().conditions);
    assert!(message.contains("ConfigMap settings"), "{message}");
    wait_config(&client, &web_ns, "settings", Some(("value", "mine"))).await;
    // Selected by label: the default workspace (no env=prod) gets no settings.
    assert!(
        cms(&default_ns)
            .get_opt("settings")
            .await
            .unwrap()
            .is_none()
    );
    // A source not there yet is waited for, said on the organization.
    crate::core::wait_org_status(&client, &org, "SharedResourceMissing", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "SharedResourceMissing")
    })
    .await;
    cms(&src_ns)
        .create(&pp, &config_map("later", json!({}), json!({}), "now"))
        .await
        .unwrap();
    wait_config(&client, &default_ns, "later", Some(("value", "now"))).await;
    crate::core::wait_org_ready(&client, &org).await;

    // A namespace that has a workspace's name but is not Tenantry's (the workspace says
    // NamespaceConflict) is nobody's to copy from: its Secret is not read out.
    let foreign_ns = format!("{org}--foreign");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": foreign_ns}})).unwrap(),
        )
        .await
        .unwrap();
    let mut loot = pull.clone();
    loot.metadata.name = Some("loot".into());
    Api::<Secret>::namespaced(client.clone(), &foreign_ns)
        .create(&pp, &loot)
        .await
        .unwrap();
    create_ws(&client, &org, "foreign", WorkspaceSpec::default()).await;
    wait_ws_reason(&client, &org, "foreign", "NamespaceConflict").await;
    Api::<Organization>::all(owner_c.clone())
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sharedResources": [
                {"kind": "ConfigMap", "name": "ca-bundle", "fromWorkspace": "shared"},
                {"kind": "Secret", "name": "pull", "fromWorkspace": "shared"},
                {"kind": "ConfigMap", "name": "settings", "fromWorkspace": "shared",
                 "workspaceSelector": {"matchLabels": {"env": "prod"}}},
                {"kind": "ConfigMap", "name": "later", "fromWorkspace": "shared"},
                {"kind": "Secret", "name": "loot", "fromWorkspace": "foreign"},
            ]}})),
        )
        .await
        .unwrap();
    crate::core::wait_org_status(
        &client,
        &org,
        "the foreign namespace is not a source",
        |s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.reason == "SharedResourceMissing"
                    && c.message.contains("loot")
            })
        },
    )
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &web_ns);
    assert!(
        secrets.get_opt("loot").await.unwrap().is_none(),
        "nothing read out of a foreign namespace"
    );
    let foreign = Api::<Secret>::namespaced(client.clone(), &foreign_ns)
        .get("loot")
        .await
        .unwrap();
    assert!(
        !foreign.labels().contains_key("tenantry.dev/shared-by"),
        "a foreign object is not marked"
    );
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(&foreign_ns, &Default::default())
        .await
        .unwrap();

    // The copy follows its source; a deleted copy is made again.
    cms(&src_ns)
        .patch(
            "ca-bundle",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"value": "B"}})),
        )
        .await
        .unwrap();
    wait_config(&client, &web_ns, "ca-bundle", Some(("value", "B"))).await;
    cms(&default_ns)
        .delete("ca-bundle", &Default::default())
        .await
        .unwrap();
    wait_config(&client, &default_ns, "ca-bundle", Some(("value", "B"))).await;

    // Nobody but Tenantry passes an object off as a copy (its labels are Tenantry's).
    let forged = config_map(
        "forged",
        json!({"tenantry.dev/organization": org, "tenantry.dev/workspace": "web", "tenantry.dev/component": "shared-copy"}),
        json!({}),
        "x",
    );
    let r = Api::<ConfigMap>::namespaced(owner_c.clone(), &web_ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &forged,
        )
        .await;
    assert!(!allowed("a workspace Admin forges a copy", r));

    // The platform shares too, from the operator's namespace, for the workspaces its
    // selector selects.
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "tenantry-system"}})).unwrap(),
        )
        .await;
    let platform_name = format!("platform-{org}");
    cms("tenantry-system")
        .create(
            &pp,
            &config_map(
                &platform_name,
                json!({"tenantry.dev/shared-by": "platform"}),
                json!({"tenantry.dev/workspace-selector": format!("shared-test={org}")}),
                "platform",
            ),
        )
        .await
        .unwrap();
    wait_config(
        &client,
        &web_ns,
        &platform_name,
        Some(("value", "platform")),
    )
    .await;
    assert!(
        cms(&default_ns)
            .get_opt(&platform_name)
            .await
            .unwrap()
            .is_none()
    );

    // No longer listed: the copies go, the source is unmarked and stays.
    Api::<Organization>::all(owner_c)
        .patch(
            &org,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sharedResources": [
                {"kind": "Secret", "name": "pull", "fromWorkspace": "shared"},
            ]}})),
        )
        .await
        .unwrap();
    for ns in [&default_ns, &web_ns] {
        wait_config(&client, ns, "ca-bundle", None).await;
    }
    wait_config(&client, &web_ns, "settings", Some(("value", "mine"))).await;
    wait_ws_ready(&client, &org, "web").await;
    let source = cms(&src_ns).get("ca-bundle").await.unwrap();
    assert!(
        !source.labels().contains_key("tenantry.dev/shared-by"),
        "unmarked: {:?}",
        source.labels()
    );
    cms("tenantry-system")
        .delete(&platform_name, &Default::default())
        .await
        .unwrap();
    wait_config(&client, &web_ns, &platform_name, None).await;
    delete_org(&client, &org).await;
}
