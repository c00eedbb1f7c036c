//! Another writer edits or deletes what Tenantry manages: Tenantry puts it back, and the
//! test reports how long each repair took (measured, not asserted beyond the timeout).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tenantry::api::{Membership, Workspace};
use tenantry::synthetic::{Size, tenancy};

use crate::core::{wait_member_reason, wait_org_ready, wait_ws_ready};
use crate::harness::{TIMEOUT, admin, controller, unique};

/// Polls `check` until it holds; returns how long that took. Fails the test after
/// [`TIMEOUT`].
async fn repaired<F, Fut>(what: &str, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < TIMEOUT,
            "not repaired within {TIMEOUT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    start.elapsed()
}

fn managed() -> ListParams {
    ListParams::default().labels(&tenantry::labels::managed_selector())
}

/// RoleBinding name -> sorted subjects (kind/name) in `ns`.
/// The subjects each RoleBinding must hold, by the grant rules, once the controller has
/// caught up with these objects: the organization namespace's (each granted member in its
/// role's binding) and workspace `ws`'s (each grantee in its workspace role's binding).
fn granted_bindings(
    org: &tenantry::api::Organization,
    memberships: &[Membership],
    ws: &Workspace,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
    use tenantry::grants::{Gates, MemberState, member_states, rbac_subject, workspace_grantees};
    let org_ns = format!("org-{}", org.name_any());
    let ms: Vec<&Membership> = memberships.iter().collect();
    let states = member_states(org, &ms, Gates::default());
    let name = |s: &tenantry::api::Subject, m: Option<&str>| {
        let s = rbac_subject(s, m.unwrap_or(""), &org_ns);
        format!("{}/{}", s.kind, s.name)
    };
    let mut in_org: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &ms {
        if states.get(&m.name_any()) == Some(&MemberState::Granted) {
            in_org
                .entry(tenantry::rbac::org_cluster_role(m.spec.role))
                .or_default()
                .push(name(&m.spec.subject, Some(&m.name_any())));
        }
    }
    let mut in_ws: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in workspace_grantees(org, ws, &ms, &states) {
        in_ws
            .entry(tenantry::rbac::workspace_cluster_role(g.role))
            .or_default()
            .push(name(&g.subject, g.membership.as_deref()));
    }
    (in_org, in_ws)
}

/// Whether every subject `want` names is in its binding in `have`.
fn holds(have: &BTreeMap<String, Vec<String>>, want: &BTreeMap<String, Vec<String>>) -> bool {
    want.iter().all(|(binding, subjects)| {
        have.get(binding)
            .is_some_and(|h| subjects.iter().all(|s| h.contains(s)))
    })
}

async fn bindings(client: &Client, ns: &str) -> BTreeMap<String, Vec<String>> {
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .list(&managed())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rb| {
            let mut s: Vec<String> = rb
                .subjects
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|s| format!("{}/{}", s.kind, s.name))
                .collect();
            s.sort();
            (rb.name_any(), s)
        })
        .collect()
}

async fn names<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&managed())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.name_any())
        .collect()
}

#[tokio::test]
async fn edits_and_deletions_by_another_writer_are_undone() {
    let _rx = controller();
    let client = admin().await;
    let t = tenancy(
        &unique("rp"),
        Size {
            organizations: 1,
            workspaces: 2,
            members: 6,
            clients: 1,
        },
    );
    let org = t.organizations[0].name_any();
    let org_ns = format!("org-{org}");
    let ws0 = format!("{org}--w0");
    let ws1 = format!("{org}--w1");
    let pp = PostParams::default();
    Api::<tenantry::api::Organization>::all(client.clone())
        .create(&pp, &t.organizations[0])
        .await
        .unwrap();
    wait_org_ready(&client, &org).await;
    for w in &t.workspaces {
        Api::<Workspace>::namespaced(client.clone(), &org_ns)
            .create(&pp, w)
            .await
            .unwrap();
    }
    for m in &t.memberships {
        Api::<Membership>::namespaced(client.clone(), &org_ns)
            .create(&pp, m)
            .await
            .unwrap();
    }
    for w in &t.workspaces {
        wait_ws_ready(&client, &org, &w.name_any()).await;
    }
    for m in &t.memberships {
        wait_member_reason(&client, &org, &m.name_any(), "Granted").await;
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ws0);
    let limits: Api<LimitRange> = Api::namespaced(client.clone(), &ws0);
    let netpols: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ws0);
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &ws0);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &org_ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &org_ns);
    let merge = PatchParams::default();

    // A member's status says Granted before every reconciler has written its bindings:
    // the snapshot below is taken once the bindings hold what the grant rules say.
    let live_org = Api::<tenantry::api::Organization>::all(client.clone())
        .get(&org)
        .await
        .unwrap();
    let live_ms = Api::<Membership>::namespaced(client.clone(), &org_ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let live_ws0 = Api::<Workspace>::namespaced(client.clone(), &org_ns)
        .get("w0")
        .await
        .unwrap();
    let (want_org, want_ws0) = granted_bindings(&live_org, &live_ms, &live_ws0);
    assert!(
        !want_org.is_empty() && !want_ws0.is_empty(),
        "the tenancy grants something"
    );
    repaired("bindings as granted (before the edits)", || async {
        holds(&bindings(&client, &org_ns).await, &want_org)
            && holds(&bindings(&client, &ws0).await, &want_ws0)
    })
    .await;

    let ns_labels = namespaces.get(&ws0).await.unwrap().labels().clone();
    let ws0_bindings = bindings(&client, &ws0).await;
    let org_bindings = bindings(&client, &org_ns).await;
    let quota = names(&quotas).await.pop().expect("a ResourceQuota");
    let quota_hard = quotas.get(&quota).await.unwrap().spec.unwrap().hard;
    let limit = names(&limits).await.pop().expect("a LimitRange");
    let netpol = names(&netpols).await.pop().expect("a NetworkPolicy");
    let (binding, subjects) = ws0_bindings
        .iter()
        .find(|(_, s)| !s.is_empty())
        .map(|(n, s)| (n.clone(), s.clone()))
        .expect("a RoleBinding in the workspace");
    let org_binding = org_bindings.keys().next().expect("an org binding").clone();
    let sa = tenantry::names::client_service_account("client-0");
    let secret = tenantry::names::client_secret_name("client-0");
    let secret_data = secrets.get(&secret).await.unwrap().data;

    let mut report: Vec<(&str, Duration)> = Vec::new();

    // 1. Pod Security loosened on the namespace.
    namespaces
        .patch(
            &ws0,
            &merge,
            &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})),
        )
        .await
        .unwrap();
    let took = repaired("namespace labels", || async {
        namespaces.get(&ws0).await.unwrap().labels() == &ns_labels
    })
    .await;
    report.push(("namespace Pod Security label changed", took));

    // 2. The namespace's Tenantry labels removed (it leaves Tenantry's caches).
    let strip: BTreeMap<String, Option<String>> = ns_labels
        .keys()
        .filter(|k| k.starts_with("tenantry.dev/") || k.starts_with("app.kubernetes.io/"))
        .map(|k| (k.clone(), None))
        .collect();
    namespaces
        .patch(
            &ws0,
            &merge,
            &Patch::Merge(json!({"metadata": {"labels": strip}})),
        )
        .await
        .unwrap();
    let took = repaired("namespace identity labels", || async {
        namespaces.get(&ws0).await.unwrap().labels() == &ns_labels
    })
    .await;
    report.push(("namespace Tenantry labels removed", took));

    // 3. Someone adds themselves to a workspace RoleBinding.
    let mut with_mallory = rbs.get(&binding).await.unwrap();
    with_mallory.metadata.managed_fields = None;
    with_mallory
        .subjects
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::rbac::v1::Subject {
            kind: "User".into(),
            name: "mallory@evil.example".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        });
    rbs.replace(&binding, &pp, &with_mallory).await.unwrap();
    let took = repaired("RoleBinding subjects", || async {
        bindings(&client, &ws0).await.get(&binding) == Some(&subjects)
    })
    .await;
    report.push(("RoleBinding subject added", took));

    // 4. The same in the organization's namespace.
    let org_rbs: Api<RoleBinding> = Api::namespaced(client.clone(), &org_ns);
    org_rbs
        .patch(
            &org_binding,
            &merge,
            &Patch::Merge(json!({"subjects": [{"kind": "User", "name": "mallory@evil.example", "apiGroup": "rbac.authorization.k8s.io"}]})),
        )
        .await
        .unwrap();
    let took = repaired("organization RoleBinding", || async {
        bindings(&client, &org_ns).await == org_bindings
    })
    .await;
    report.push(("organization RoleBinding subjects replaced", took));

    // 5. A RoleBinding deleted.
    rbs.delete(&binding, &DeleteParams::default())
        .await
        .unwrap();
    let took = repaired("deleted RoleBinding", || async {
        bindings(&client, &ws0).await == ws0_bindings
    })
    .await;
    report.push(("RoleBinding deleted", took));

    // 6. The quota raised.
    quotas
        .patch(
            &quota,
            &merge,
            &Patch::Merge(json!({"spec": {"hard": {"pods": "5000"}}})),
        )
        .await
        .unwrap();
    let took = repaired("quota values", || async {
        quotas.get(&quota).await.unwrap().spec.unwrap().hard == quota_hard
    })
    .await;
    report.push(("ResourceQuota hard.pods raised", took));

    // 6b. The isolation NetworkPolicy's `podSelector: {}` (every pod) narrowed to some
    //     pods: the others would be open to every namespace. Set whole again.
    netpols
        .patch(
            &netpol,
            &merge,
            &Patch::Merge(json!({"spec": {"podSelector": {"matchLabels": {"app": "narrowed"}}}})),
        )
        .await
        .unwrap();
    let took = repaired("NetworkPolicy podSelector", || async {
        let selector = netpols
            .get(&netpol)
            .await
            .unwrap()
            .spec
            .unwrap()
            .pod_selector;
        selector.is_none_or(|s| {
            s.match_labels.unwrap_or_default().is_empty()
                && s.match_expressions.unwrap_or_default().is_empty()
        })
    })
    .await;
    report.push(("NetworkPolicy podSelector narrowed", took));

    // 7. The LimitRange and the NetworkPolicy deleted.
    limits
        .delete(&limit, &DeleteParams::default())
        .await
        .unwrap();
    let took = repaired("LimitRange", || async {
        limits.get_opt(&limit).await.unwrap().is_some()
    })
    .await;
    report.push(("LimitRange deleted", took));
    netpols
        .delete(&netpol, &DeleteParams::default())
        .await
        .unwrap();
    let took = repaired("NetworkPolicy", || async {
        netpols.get_opt(&netpol).await.unwrap().is_some()
    })
    .await;
    report.push(("NetworkPolicy deleted", took));

    // 8. The client's ServiceAccount (which holds the verifier) deleted: it comes back
    //    with the verifier of the same secret; the Secret is untouched.
    sas.delete(&sa, &DeleteParams::default()).await.unwrap();
    let took = repaired("client ServiceAccount", || async {
        sas.get_opt(&sa)
            .await
            .unwrap()
            .is_some_and(|sa| sa.annotations().contains_key(tenantry::credentials::HASH))
    })
    .await;
    report.push(("client ServiceAccount deleted", took));
    let restored = sas.get(&sa).await.unwrap();
    let value =
        String::from_utf8(secret_data.as_ref().unwrap()["client-secret"].0.clone()).unwrap();
    assert!(
        tenantry::credentials::verify(&value, &restored.annotations()[tenantry::credentials::HASH]),
        "the restored verifier accepts the secret that was issued"
    );
    assert_eq!(
        secrets.get(&secret).await.unwrap().data,
        secret_data,
        "the client secret was not reissued"
    );

    // 9. A whole workspace namespace deleted: it is made again once the old one is gone.
    let ws1_bindings = bindings(&client, &ws1).await;
    namespaces
        .delete(&ws1, &DeleteParams::default())
        .await
        .unwrap();
    crate::core::wait_ws_reason(&client, &org, "w1", "NamespaceTerminating").await;
    let took = repaired("deleted workspace namespace", || async {
        namespaces
            .get_opt(&ws1)
            .await
            .unwrap()
            .is_some_and(|n| n.metadata.deletion_timestamp.is_none())
            && bindings(&client, &ws1).await == ws1_bindings
    })
    .await;
    report.push(("workspace namespace deleted (incl. termination)", took));
    wait_ws_ready(&client, &org, "w1").await;

    // 10. The credentials Secret deleted (an owner copied the secret, as SaaS consoles
    //     show a secret once): the value cannot be restored, only a verifier is kept.
    //     The member stays Ready; its message says how to rotate, and a rotation issues
    //     a new secret.
    secrets
        .delete(&secret, &DeleteParams::default())
        .await
        .unwrap();
    let memberships: Api<Membership> = Api::namespaced(client.clone(), &org_ns);
    let noted = crate::harness::wait_for(
        &memberships,
        "client-0",
        "a note about the deleted Secret",
        |m: Option<&Membership>| {
            m.and_then(|m| m.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True" && c.message.contains("was deleted"))
        },
    )
    .await
    .unwrap();
    let ready = noted
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("tenantry.dev/rotate"),
        "{}",
        ready.message
    );
    assert!(
        secrets.get_opt(&secret).await.unwrap().is_none(),
        "nothing re-creates it"
    );
    Api::<Membership>::namespaced(client.clone(), &org_ns)
        .patch(
            "client-0",
            &merge,
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tenantry.dev/rotate": "after-deletion"}}}),
            ),
        )
        .await
        .unwrap();
    let new = crate::harness::wait_for(&secrets, &secret, "a new Secret", |s: Option<&Secret>| {
        s.is_some()
    })
    .await
    .unwrap()
    .data;
    assert!(
        new.is_some() && new != secret_data,
        "a new secret was issued"
    );

    // Nothing else changed in the organization. (The Admins' read access to the client's
    // credentials names only a Secret Tenantry made: it went with the deleted Secret and
    // comes back with the new one.)
    assert_eq!(bindings(&client, &ws0).await, ws0_bindings);
    let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
    loop {
        let now = bindings(&client, &org_ns).await;
        if now == org_bindings {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the organization's bindings as they were: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    wait_org_ready(&client, &org).await;

    println!("time to repair, by what another writer did:");
    for (what, took) in &report {
        println!("  {what:<50} {:>8.0} ms", took.as_secs_f64() * 1000.0);
    }
    crate::core::delete_org(&client, &org).await;
}
