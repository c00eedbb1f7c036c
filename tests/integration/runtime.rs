//! The `tenantry run` binary as operators run it: admin endpoints and graceful shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TIMEOUT, cluster};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_serves_health_and_metrics_and_stops_on_sigterm() {
    let kubeconfig = cluster().kubeconfig.clone();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args([
            "run",
            "--admin-address",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start tenantry run");

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
