//! Proof that the control plane under the tests is real Kubernetes: CEL validation on
//! CRDs, RBAC with impersonation, owner-reference garbage collection and namespace
//! finalization all work.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::wait::conditions;
use serde_json::json;

use crate::harness::{admin, as_user, status_of, unique, wait_for, wait_gone};

async fn namespace(client: &kube::Client, prefix: &str) -> String {
    let name = unique(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn crd_cel_rule_rejects_a_bad_object() {
    let client = admin().await;
    let group = format!("{}.test.tenantry.dev", unique("cel"));
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"replicas": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.replicas <= 5", "message": "at most 5 replicas"}]
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.meta().name.clone().unwrap();
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    wait_for(
        &crds,
        &name,
        "established",
        conditions::is_crd_established(),
    )
    .await;

    let ns = namespace(&client, "cel").await;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let widget = |replicas: i64, name: &str| {
        let mut obj = DynamicObject::new(name, &ar);
        obj.data = json!({"spec": {"replicas": replicas}});
        obj
    };
    let bad = widgets
        .create(&PostParams::default(), &widget(10, "too-many"))
        .await;
    assert_eq!(
        status_of(&bad),
        422,
        "a CEL rule must reject replicas=10: {bad:?}"
    );
    let msg = format!("{bad:?}");
    assert!(
        msg.contains("at most 5 replicas"),
        "the rule's message is returned: {msg}"
    );
    widgets
        .create(&PostParams::default(), &widget(3, "fine"))
        .await
        .expect("replicas=3 is valid");

    crds.delete(&name, &DeleteParams::default())
        .await
        .expect("delete CRD");
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete ns");
}

#[tokio::test]
async fn rbac_allows_exactly_what_is_bound() {
    let client = admin().await;
    let ns = namespace(&client, "rbac").await;
    let other = namespace(&client, "rbac-other").await;
    let user = format!("alice-{}@acme.example", unique("u"));
    let role = Role {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["configmaps".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
                resources: Some(vec!["rolebindings".into()]),
                verbs: vec!["create".into()],
                ..Default::default()
            },
        ]),
    };
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("alice-reads".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "cm-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &configmap("c"))
        .await
        .unwrap();

    let alice = as_user(&user, &["acme:developers"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(alice.clone(), &ns);
    assert!(
        cms.list(&Default::default()).await.is_ok(),
        "alice may list configmaps in {ns}"
    );
    assert!(
        cms.get("c").await.is_ok(),
        "alice may get a configmap in {ns}"
    );
    assert_eq!(
        status_of(&cms.create(&PostParams::default(), &configmap("mine")).await),
        403,
        "create was not bound"
    );
    assert_eq!(
        status_of(&cms.delete("c", &DeleteParams::default()).await),
        403,
        "delete was not bound"
    );
    let secrets: Api<Secret> = Api::namespaced(alice.clone(), &ns);
    assert_eq!(
        status_of(&secrets.list(&Default::default()).await),
        403,
        "secrets were not bound"
    );
    let elsewhere: Api<ConfigMap> = Api::namespaced(alice, &other);
    assert_eq!(
        status_of(&elsewhere.list(&Default::default()).await),
        403,
        "the binding is only in {ns}"
    );

    // RBAC's escalation check: alice may create RoleBindings, but only to roles whose
    // rights she holds herself.
    let bindings: Api<RoleBinding> = Api::namespaced(as_user(&user, &[]).await, &ns);
    let grant = |role_kind: &str, role: &str| RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("alice-grants-{}", role.replace(':', "-"))),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: role_kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: "bob@acme.example".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    let escalate = bindings
        .create(&PostParams::default(), &grant("ClusterRole", "admin"))
        .await;
    assert_eq!(
        status_of(&escalate),
        403,
        "binding ClusterRole admin is an escalation: {escalate:?}"
    );
    bindings
        .create(&PostParams::default(), &grant("Role", "cm-reader"))
        .await
        .expect("binding a role alice holds is allowed");

    let ns_api = Api::<Namespace>::all(client);
    ns_api.delete(&ns, &DeleteParams::default()).await.unwrap();
    ns_api
        .delete(&other, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let client = admin().await;
    let ns = namespace(&client, "gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = cms
        .create(&PostParams::default(), &configmap("owner"))
        .await
        .unwrap();
    let mut dependent = configmap("dependent");
    dependent.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_gone(&cms, "dependent").await;
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deleted_namespace_with_content_goes_away() {
    let client = admin().await;
    let ns = namespace(&client, "nsdel").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for i in 0..5 {
        cms.create(&PostParams::default(), &configmap(&format!("c{i}")))
            .await
            .unwrap();
    }
    let namespaces = Api::<Namespace>::all(client);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&namespaces, &ns).await;
}
