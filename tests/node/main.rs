//! Tests on a real node (`make node`: containerd, runc, the kubelet, kube-proxy,
//! kube-router, on the local control plane). `make test` starts the node and points
//! `TENANTRY_NODE_KUBECONFIG` at its cluster; without a node these tests fail, saying how
//! to start one: they are never skipped.

use std::time::Duration;

// The integration tests' harness, for its waits (`wait_for`).
#[allow(dead_code)]
#[path = "../integration/harness.rs"]
mod harness;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Client, Config};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A client of the node's cluster, with Tenantry running on it as users run it: the Helm
/// chart (`charts/tenantry`, two replicas, the image from `make image`), installed once.
async fn with_tenantry() -> Client {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let client = node_cluster().await;
    INSTALLED
        .get_or_init(|| async {
            let client = client.clone();
            let kubeconfig = std::env::var("TENANTRY_NODE_KUBECONFIG").unwrap_or_default();
            let out = tokio::process::Command::new(format!("{ROOT}/target/tools/helm"))
                .args([
                    "upgrade",
                    "--install",
                    "tenantry",
                    &format!("{ROOT}/charts/tenantry"),
                ])
                .args(["--set", "tokenServer.enabled=true"])
                .args([
                    "-n",
                    "tenantry-system",
                    "--create-namespace",
                    "--wait",
                    "--timeout",
                    "3m",
                ])
                .args(["--kubeconfig", &kubeconfig])
                .output()
                .await
                .expect("helm (make helm)");
            if !out.status.success() {
                panic!(
                    "helm install of charts/tenantry (with the image from make image):\n{}{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    diagnose(&client, "tenantry-system").await
                );
            }
        })
        .await;
    client
}

/// A client of the node's cluster.
async fn node_cluster() -> Client {
    let path = std::env::var("TENANTRY_NODE_KUBECONFIG").unwrap_or_else(|_| {
        panic!("TENANTRY_NODE_KUBECONFIG is not set: start a node with `make node` (root) and set it to target/controlplane/kubeconfig, or run `make test`")
    });
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    let client = Client::try_from(config).expect("a client");
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| {
            panic!("the node's cluster ({path}) does not answer: {e}; run `make node`")
        });
    assert!(
        !nodes.items.is_empty(),
        "the cluster of {path} has no node: run `make node`"
    );
    client
}

fn unique(prefix: &str) -> String {
    let mut seed = [0u8; 4];
    getrandom::fill(&mut seed).expect("OS randomness");
    format!("{prefix}-{}", u32::from_le_bytes(seed) % 1_000_000)
}

/// A namespace of its own for a test.
async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// The node runs a pod: scheduled by kube-scheduler, its sandbox and container started by
/// containerd and runc from an image imported without a registry, its network set up by
/// the bridge CNI plugin, its log read through the kubelet.
#[tokio::test]
async fn a_pod_runs_on_the_node() {
    let client = node_cluster().await;
    let ns = namespace(&client, "node-smoke").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "hello",
                "image": "localhost/busybox:local",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo hello from $(hostname) at $(ip -4 -o addr show eth0 | awk '{print $4}')"],
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    };
    if tokio::time::timeout(TIMEOUT, await_condition(pods.clone(), "hello", done))
        .await
        .is_err()
    {
        panic!(
            "pod hello did not finish within {TIMEOUT:?}\n{}",
            diagnose(&client, &ns).await
        );
    }
    let pod = pods.get("hello").await.unwrap();
    let status = pod.status.unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"), "{status:?}");
    let log = pods.logs("hello", &LogParams::default()).await.unwrap();
    assert!(log.contains("hello from hello at 10.244."), "{log}");
    Api::<Namespace>::all(client)
        .delete(&ns, &Default::default())
        .await
        .unwrap();
}

/// An Organization (no default workspace) with `workspaces` (name, Pod Security level),
/// all Ready: the workspace namespaces, by workspace name.
async fn tenancy(
    client: &Client,
    org: &str,
    workspaces: &[(&str, &str)],
) -> std::collections::BTreeMap<String, String> {
    use tenantry::api::{Organization, Workspace};
    let orgs = Api::<Organization>::all(client.clone());
    let o: Organization = serde_json::from_value(json!({
        "apiVersion": "tenantry.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": org},
        "spec": {
            "owners": [{"kind": "User", "name": format!("owner@{org}.example")}],
            "defaultWorkspace": {"enabled": false, "name": "default"},
            "deletionProtection": false,
        },
    }))
    .unwrap();
    orgs.create(&PostParams::default(), &o).await.unwrap();
    let ready = |conditions: Option<
        &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    >| { conditions.is_some_and(|cs| ready_in(cs)) };
    harness::wait_for(
        &orgs,
        org,
        "Organization Ready",
        move |o: Option<&Organization>| {
            ready(o.and_then(|o| o.status.as_ref()).map(|s| &s.conditions))
        },
    )
    .await;
    let ns = format!("org-{org}");
    let api = Api::<Workspace>::namespaced(client.clone(), &ns);
    let mut out = std::collections::BTreeMap::new();
    for (name, level) in workspaces {
        let w: Workspace = serde_json::from_value(json!({
            "apiVersion": "tenantry.dev/v1alpha1", "kind": "Workspace",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSecurity": level},
        }))
        .unwrap();
        api.create(&PostParams::default(), &w).await.unwrap();
        let w = harness::wait_for(
            &api,
            name,
            "Workspace Ready",
            move |w: Option<&Workspace>| {
                ready(w.and_then(|w| w.status.as_ref()).map(|s| &s.conditions))
            },
        )
        .await
        .unwrap();
        let namespace = w.status.and_then(|s| s.namespace).unwrap();
        out.insert(name.to_string(), namespace);
    }
    out
}

/// A busybox container (the node's local image) running `script`, restricted-compatible.
fn busybox(name: &str, script: &str) -> serde_json::Value {
    json!({
        "name": name,
        "image": "localhost/busybox:local",
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// Waits until `cond` holds for pod `name`.
async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    cond: impl Fn(&Pod) -> bool + Send + 'static,
) -> Pod {
    let waited = tokio::time::timeout(
        TIMEOUT,
        await_condition(pods.clone(), name, move |p: Option<&Pod>| {
            p.is_some_and(&cond)
        }),
    )
    .await;
    match waited {
        Ok(pod) => pod.unwrap().unwrap(),
        Err(_) => {
            let ns = pods.get(name).await.ok().and_then(|p| p.metadata.namespace);
            let client = pods.clone().into_client();
            panic!(
                "pod {name}: {what} not within {TIMEOUT:?}\n{}",
                diagnose(&client, ns.as_deref().unwrap_or("default")).await
            )
        }
    }
}

/// What a person needs when a pod does not get where a test waits for it (CI shows only
/// the failure): the node's conditions and taints, the namespace's pods with their phase
/// and why their containers wait, its latest Events, the kubelet's and containerd's last
/// errors (target/node/logs).
async fn diagnose(client: &Client, ns: &str) -> String {
    use k8s_openapi::api::core::v1::Event;
    use std::fmt::Write;
    let mut out = String::from("--- diagnosis ---\n");
    if let Ok(nodes) = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
    {
        for n in nodes.items {
            let conditions = n.status.and_then(|s| s.conditions).unwrap_or_default();
            let conditions = conditions
                .iter()
                .map(|c| format!("{}={}", c.type_, c.status));
            let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
            let taints = taints.iter().map(|t| format!("{}:{}", t.key, t.effect));
            let _ = writeln!(
                out,
                "node {}: {} taints [{}]",
                n.metadata.name.unwrap_or_default(),
                conditions.collect::<Vec<_>>().join(" "),
                taints.collect::<Vec<_>>().join(", ")
            );
        }
    }
    if let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
    {
        for p in pods.items {
            let status = p.status.unwrap_or_default();
            let mut why = Vec::new();
            for c in status.container_statuses.iter().flatten() {
                let state = c.state.as_ref();
                if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                    why.push(format!(
                        "{} waiting {} {}",
                        c.name,
                        w.reason.as_deref().unwrap_or(""),
                        w.message.as_deref().unwrap_or("")
                    ));
                }
                if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                    why.push(format!("{} exited {} {:?}", c.name, t.exit_code, t.reason));
                }
            }
            let _ = writeln!(
                out,
                "pod {ns}/{}: {} {}",
                p.metadata.name.unwrap_or_default(),
                status.phase.unwrap_or_default(),
                why.join("; ")
            );
        }
    }
    if let Ok(events) = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
    {
        let mut events = events.items;
        events.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
        for e in events.iter().rev().take(15).rev() {
            let _ = writeln!(
                out,
                "event {} {} {}: {}",
                e.type_.as_deref().unwrap_or(""),
                e.reason.as_deref().unwrap_or(""),
                e.involved_object.name.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("")
            );
        }
    }
    for (log, is_error) in [
        (
            "kubelet",
            (|l: &str| l.starts_with('E')) as fn(&str) -> bool,
        ),
        ("containerd", |l: &str| l.contains("level=error")),
    ] {
        let text = std::fs::read_to_string(format!("{ROOT}/target/node/logs/{log}.log"))
            .unwrap_or_default();
        let errors = text.lines().filter(|l| is_error(l)).collect::<Vec<_>>();
        for line in errors.iter().rev().take(8).rev() {
            let _ = writeln!(out, "{log}: {}", line.chars().take(400).collect::<String>());
        }
    }
    out
}

/// Whether a custom resource's `Ready` condition is True.
fn ready_in(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether a pod is Ready (its containers' readiness probes pass).
fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Issue 22: workspace isolation proven by traffic. A server in workspace one of
/// organization A (its readiness probe, the kubelet's traffic, passes); a client in the
/// same workspace reaches it, clients in workspace two of A and in workspace three of B
/// do not (kube-router enforces Tenantry's `tenantry-isolation` NetworkPolicy).
#[tokio::test]
async fn workspaces_are_isolated_by_traffic() {
    let client = with_tenantry().await;
    let (a, b) = (unique("neta"), unique("netb"));
    let of_a = tenancy(&client, &a, &[("one", "restricted"), ("two", "restricted")]).await;
    let of_b = tenancy(&client, &b, &[("three", "restricted")]).await;
    let server_ns = &of_a["one"];
    let servers = Api::<Pod>::namespaced(client.clone(), server_ns);
    let mut container = busybox(
        "server",
        "mkdir -p /tmp/www && echo hello-from-server > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    container["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1});
    let server: Pod = serde_json::from_value(json!({
        "metadata": {"name": "server"},
        "spec": {"containers": [container]},
    }))
    .unwrap();
    servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    let server = wait_pod(
        &servers,
        "server",
        "Ready (its readiness probe passes)",
        pod_ready,
    )
    .await;
    let ip = server.status.and_then(|s| s.pod_ip).unwrap();
    // Each client tries three times, after the enforcer has had a moment for the new pods.
    let script = format!(
        "sleep 5; ok=0; for i in 1 2 3; do \
           if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080 2>/dev/null | grep -q hello-from-server; then ok=$((ok+1)); fi; sleep 1; \
         done; echo reached $ok of 3"
    );
    let mut results = Vec::new();
    for (what, ns) in [
        ("the same workspace", &of_a["one"]),
        ("another workspace of the organization", &of_a["two"]),
        ("a workspace of another organization", &of_b["three"]),
    ] {
        let pods = Api::<Pod>::namespaced(client.clone(), ns);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "client"},
            "spec": {"restartPolicy": "Never", "containers": [busybox("client", &script)]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        results.push((what, pods));
    }
    let mut table = String::from("| client in | reached the server |\n|---|---|");
    let mut seen = Vec::new();
    for (what, pods) in &results {
        wait_pod(pods, "client", "finished", |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await;
        let log = pods.logs("client", &LogParams::default()).await.unwrap();
        table.push_str(&format!("\n| {what} | {} |", log.trim()));
        seen.push(log.trim().to_string());
    }
    println!("{table}");
    assert_eq!(
        seen,
        ["reached 3 of 3", "reached 0 of 3", "reached 0 of 3"],
        "pods reach each other only inside a workspace:\n{table}"
    );
}

/// Issue 22: Pod Security through the real admission path: a privileged pod is refused in
/// a baseline workspace, a pod violating restricted in a restricted one, and a compliant
/// pod runs.
#[tokio::test]
async fn pod_security_is_enforced_by_admission() {
    let client = with_tenantry().await;
    let org = unique("psa");
    let ns = tenancy(
        &client,
        &org,
        &[("base", "baseline"), ("strict", "restricted")],
    )
    .await;
    let pod = |name: &str, container: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        }))
        .unwrap()
    };
    let refusal = |r: Result<Pod, kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("expected a refusal by Pod Security admission, got {other:?}"),
    };
    let base = Api::<Pod>::namespaced(client.clone(), &ns["base"]);
    let privileged = pod(
        "privileged",
        json!({"name": "c", "image": "localhost/busybox:local", "imagePullPolicy": "Never",
               "command": ["true"], "securityContext": {"privileged": true}}),
    );
    let msg = refusal(base.create(&PostParams::default(), &privileged).await);
    assert!(msg.contains("violates PodSecurity \"baseline"), "{msg}");
    let strict = Api::<Pod>::namespaced(client.clone(), &ns["strict"]);
    let loose = pod(
        "loose",
        json!({"name": "c", "image": "localhost/busybox:local", "imagePullPolicy": "Never", "command": ["true"]}),
    );
    let msg = refusal(strict.create(&PostParams::default(), &loose).await);
    assert!(msg.contains("violates PodSecurity \"restricted"), "{msg}");
    strict
        .create(
            &PostParams::default(),
            &pod("fine", busybox("c", "echo fine")),
        )
        .await
        .expect("a restricted-compliant pod is admitted");
    let done = wait_pod(&strict, "fine", "finished", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    assert_eq!(phase(&done), "Succeeded");
}

/// Issue 22: the chart as users install it. Two replicas become Ready and one holds the
/// leader Lease; killing the leader's pod hands the Lease to another replica, and
/// reconciling goes on (a new Organization becomes Ready afterwards).
#[tokio::test]
async fn the_chart_runs_two_replicas_and_a_killed_leader_hands_over() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{DeleteParams, ListParams};
    let client = with_tenantry().await;
    let pods = Api::<Pod>::namespaced(client.clone(), "tenantry-system");
    let selector = ListParams::default()
        .labels("app.kubernetes.io/name=tenantry,app.kubernetes.io/component=controller");
    let ready = |p: &Pod| p.metadata.deletion_timestamp.is_none() && pod_ready(p);
    let names = pods
        .list(&selector)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| ready(p))
        .filter_map(|p| p.metadata.name)
        .collect::<Vec<_>>();
    assert_eq!(names.len(), 2, "two Ready replicas: {names:?}");
    let leases = Api::<Lease>::namespaced(client.clone(), "tenantry-system");
    let holder = |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
    };
    let leader = harness::wait_for(
        &leases,
        "tenantry-leader",
        "a leader",
        move |l: Option<&Lease>| holder(l).is_some_and(|h| !h.is_empty()),
    )
    .await
    .and_then(|l| holder(Some(&l)))
    .unwrap();
    assert!(
        names.contains(&leader),
        "the leader {leader} is one of the replicas {names:?}"
    );
    let started = std::time::Instant::now();
    pods.delete(
        &leader,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The other replica, or the one the ReplicaSet starts in the killed one's place.
    let killed = leader.clone();
    let next = harness::wait_for(
        &leases,
        "tenantry-leader",
        "another replica takes over",
        move |l: Option<&Lease>| holder(l).is_some_and(|h| !h.is_empty() && h != killed),
    )
    .await
    .and_then(|l| holder(Some(&l)))
    .unwrap();
    println!(
        "leader {leader} killed; {next} leads after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let org = unique("handover");
    tenancy(&client, &org, &[("after", "baseline")]).await;
}

/// Issue 22: a machine client from inside a pod. The pod exchanges its client id and
/// secret at the token server through its Service (`tenantry-token`, from the chart), and
/// the token works against the API server (the `kubernetes` Service) with exactly the
/// client's grants: its workspace yes, another workspace no.
#[tokio::test]
async fn a_client_gets_and_uses_a_token_from_inside_a_pod() {
    use k8s_openapi::api::core::v1::Secret;
    use tenantry::api::Membership;
    let client = with_tenantry().await;
    let org = unique("tok");
    let ns = tenancy(
        &client,
        &org,
        &[("target", "baseline"), ("elsewhere", "baseline")],
    )
    .await;
    let org_ns = format!("org-{org}");
    let members = Api::<Membership>::namespaced(client.clone(), &org_ns);
    let m: Membership = serde_json::from_value(json!({
        "apiVersion": "tenantry.dev/v1alpha1", "kind": "Membership",
        "metadata": {"name": "ci", "namespace": org_ns},
        "spec": {"subject": {"kind": "Client", "name": "ci"}, "role": "Member",
                 "workspaces": [{"name": "target", "role": "Editor"}]},
    }))
    .unwrap();
    members.create(&PostParams::default(), &m).await.unwrap();
    harness::wait_for(
        &members,
        "ci",
        "Membership Ready",
        |m: Option<&Membership>| {
            m.and_then(|m| m.status.as_ref())
                .is_some_and(|s| ready_in(&s.conditions))
        },
    )
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), &org_ns)
        .get("ci-credentials")
        .await
        .unwrap();
    let data = secret.data.unwrap_or_default();
    let value =
        |k: &str| String::from_utf8(data.get(k).map(|b| b.0.clone()).unwrap_or_default()).unwrap();
    let script = r#"
T=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials \
  "$TOKEN_URL" |
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$T" ] || { echo "no token"; exit 1; }
code() {
  curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $T" \
    --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt \
    "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$1/configmaps"
}
echo "own=$(code "$OWN") other=$(code "$OTHER")"
"#;
    // The token server's Service (its environment variables reach only pods of its own
    // namespace; there is no cluster DNS here): by its cluster IP.
    let service =
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "tenantry-system")
            .get("tenantry-token")
            .await
            .unwrap();
    let spec = service.spec.unwrap_or_default();
    let port = spec
        .ports
        .unwrap_or_default()
        .first()
        .map(|p| p.port)
        .unwrap_or_default();
    let token_url = format!(
        "http://{}:{port}/oauth2/token",
        spec.cluster_ip.unwrap_or_default()
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &ns["target"]);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ci"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "ci", "image": "localhost/curl:local", "imagePullPolicy": "Never",
            "command": ["sh", "-c", script],
            "env": [
                {"name": "CLIENT_ID", "value": value("client-id")},
                {"name": "CLIENT_SECRET", "value": value("client-secret")},
                {"name": "TOKEN_URL", "value": token_url},
                {"name": "OWN", "value": ns["target"]},
                {"name": "OTHER", "value": ns["elsewhere"]},
            ],
        }]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_pod(&pods, "ci", "finished", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let log = pods.logs("ci", &LogParams::default()).await.unwrap();
    println!("client from a pod: {}", log.trim());
    assert_eq!(
        log.trim(),
        "own=200 other=403",
        "the token's reach from inside a pod"
    );
}
