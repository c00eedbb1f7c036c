//! The `tenantry run` binary as operators run it: admin endpoints and graceful shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;

use crate::harness::{TIMEOUT, cluster, wait_for};

/// A plain HTTP/1.1 GET on loopback: (status, body).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The operator namespace, where the leader Lease lives.
async fn operator_namespace() {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("tenantry-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(crate::harness::admin().await)
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating tenantry-system: {e}"),
    }
}

/// `tenantry run` as a child process: its admin port, with the given lease and identity.
fn start(lease: &str, identity: &str, lease_seconds: u32) -> (tokio::process::Child, u16) {
    let port = crate::harness::free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args([
            "run",
            "--admin-address",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .args([
            "--leader-election=true",
            "--lease-name",
            lease,
            "--lease-seconds",
            &lease_seconds.to_string(),
            "--identity",
            identity,
        ])
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start tenantry run");
    (child, port)
}

async fn metrics(port: u16) -> String {
    get(port, "/metrics")
        .await
        .map(|(_, m)| m)
        .unwrap_or_default()
}

/// `tenantry run` on a laptop, as the README says (KUBECONFIG, no flags): outside a pod
/// leader election is off by default, so it needs no Lease and no operator namespace,
/// and reconciles at once (before, it waited forever for a namespace that did not exist).
#[tokio::test]
async fn run_outside_a_cluster_reconciles_without_an_operator_namespace() {
    let port = crate::harness::free_port();
    let missing = crate::harness::unique("nowhere");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["run", "--admin-address", &format!("127.0.0.1:{port}")])
        .args(["--operator-namespace", &missing])
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("TENANTRY_LEADER_ELECTION")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start tenantry run");
    let client = crate::harness::admin().await;
    let name = crate::harness::unique("laptop");
    crate::core::create_org(&client, &name, crate::core::org_spec("o@x.example")).await;
    let reconciled = async {
        loop {
            if metrics(port)
                .await
                .contains("tenantry_reconciles_total{kind=\"Organization\",result=\"ok\"}")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, reconciled)
        .await
        .expect("the laptop process reconciles without a Lease");
    crate::core::wait_ws_ready(&client, &name, "default").await;
    crate::core::delete_org(&client, &name).await;
    let _ = child.kill().await;
}

#[tokio::test]
async fn the_binary_serves_health_and_metrics_and_stops_on_sigterm() {
    operator_namespace().await;
    let (mut child, port) = start(&crate::harness::unique("lease"), "solo", 15);

    // Ready once the caches have synced (probed the way a kubelet does, with a deadline).
    let ready = async {
        loop {
            if let Some((200, _)) = get(port, "/readyz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, ready)
        .await
        .expect("/readyz turns 200");
    assert_eq!(get(port, "/livez").await.map(|(s, _)| s), Some(200));

    // The binary alone converges an organization (nothing else reconciles in this test
    // unless another test started the in-process controller; either way it is Ready).
    let client = crate::harness::admin().await;
    let name = crate::harness::unique("bin");
    crate::core::create_org(&client, &name, crate::core::org_spec("o@x.example")).await;
    crate::core::wait_ws_ready(&client, &name, "default").await;
    let (status, metrics) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    for sample in [
        "tenantry_reconcile_duration_seconds_bucket{",
        "tenantry_reconciles_total{kind=\"Organization\",result=\"ok\"}",
        "tenantry_reconciles_total{kind=\"Workspace\",result=\"ok\"}",
        "tenantry_managed_objects{kind=\"Organization\"}",
    ] {
        assert!(metrics.contains(sample), "{sample} in /metrics:\n{metrics}");
    }
    // One group of series at a time, as a ServiceMonitor's `params` asks (brackets
    // encoded): the organization's series once this process has reconciled it.
    let series = format!("tenantry_organization_workspaces{{organization=\"{name}\"}}");
    let orgs = async {
        loop {
            match get(port, "/metrics?collect%5B%5D=organizations").await {
                Some((200, m)) if m.contains(&series) => return m,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    };
    let orgs = tokio::time::timeout(TIMEOUT, orgs)
        .await
        .expect("the organization's series in collect[]=organizations");
    assert!(!orgs.contains("tenantry_reconciles_total"), "{orgs}");
    let (status, own) = get(port, "/metrics?collect[]=controller")
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(own.contains("tenantry_reconciles_total{"), "{own}");
    assert!(!own.contains("tenantry_organization_workspaces"), "{own}");
    let (status, refused) = get(port, "/metrics?collect[]=nope").await.expect("answers");
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("collect[]=nope"), "{refused}");
    crate::core::delete_org(&client, &name).await;

    // SIGTERM: a clean exit, quickly.
    let pid = child.id().expect("a pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20s of SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit: {status}");
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    operator_namespace().await;
    let lease = crate::harness::unique("lease");
    let (mut a, a_port) = start(&lease, "replica-a", 4);
    let (mut b, b_port) = start(&lease, "replica-b", 4);
    let leases: Api<Lease> = Api::namespaced(crate::harness::admin().await, "tenantry-system");
    let held = wait_for(&leases, &lease, "a holder", |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref()?.holder_identity.clone())
            .is_some_and(|h| h.starts_with("replica-"))
    })
    .await
    .unwrap();
    let leader = held.spec.unwrap().holder_identity.unwrap();
    let (dead, standby, standby_port) = if leader == "replica-a" {
        (&mut a, "replica-b", b_port)
    } else {
        (&mut b, "replica-a", a_port)
    };
    // Only the leader reconciles: the standby has not run a single reconcile.
    let ready = async {
        while get(standby_port, "/readyz").await.map(|(s, _)| s) != Some(200) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, ready)
        .await
        .expect("the standby is ready (waiting)");
    assert!(
        !metrics(standby_port)
            .await
            .contains("tenantry_reconciles_total{"),
        "a standby writes nothing"
    );

    // kill -9 the leader: the standby takes the lease within its duration and works.
    dead.start_kill().unwrap();
    let _ = dead.wait().await;
    let taken_at = std::time::Instant::now();
    wait_for(
        &leases,
        &lease,
        "the standby holds the lease",
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                .as_deref()
                == Some(standby)
        },
    )
    .await;
    let took = taken_at.elapsed();
    assert!(took < Duration::from_secs(4 + 4), "took over in {took:?}");
    let client = crate::harness::admin().await;
    let name = crate::harness::unique("ha");
    crate::core::create_org(&client, &name, crate::core::org_spec("o@x.example")).await;
    crate::core::wait_ws_ready(&client, &name, "default").await;
    let converged = async {
        while !metrics(standby_port)
            .await
            .contains("tenantry_reconciles_total{kind=\"Organization\",result=\"ok\"}")
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, converged)
        .await
        .expect("the new leader reconciles");
    println!("standby {standby} took the lease {took:?} after the leader was killed");
    crate::core::delete_org(&client, &name).await;
}
