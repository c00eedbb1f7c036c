//! Tests on a real node (`make node`: containerd, runc, the kubelet, kube-proxy,
//! kube-router, on the local control plane). `make test` starts the node and points
//! `TENANTRY_NODE_KUBECONFIG` at its cluster; without a node these tests fail, saying how
//! to start one: they are never skipped.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Client, Config};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);

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
    tokio::time::timeout(TIMEOUT, await_condition(pods.clone(), "hello", done))
        .await
        .unwrap_or_else(|_| panic!("pod hello did not finish within {TIMEOUT:?}"))
        .unwrap();
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
