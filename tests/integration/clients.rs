//! Machine clients: credentials exchanged for a short-lived token at the token endpoint;
//! the token carries exactly the client's role; rotation; revocation.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::core::ObjectMeta;
use kube::{Client, Config};
use serde_json::{Value, json};
use tenantry::api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::core::{
    add_member, create_org, create_ws, membership, org_spec, wait_member_reason, wait_ws_ready,
};
use crate::harness::{admin, cluster, controller, unique, wait_for, wait_gone};

/// POST a form to the token endpoint: (status, JSON body).
pub(crate) async fn post_token(port: u16, body: &str, basic: Option<(&str, &str)>) -> (u16, Value) {
    post_token_from("127.0.0.1", port, body, basic).await
}

/// `post_token` from source address `from` (any 127.0.0.0/8 address is this host).
pub(crate) async fn post_token_from(
    from: &str,
    port: u16,
    body: &str,
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    use base64::Engine;
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{from}:0").parse().expect("an address"))
        .expect("bind the source address");
    let mut s = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("token endpoint up");
    let auth = basic
        .map(|(id, secret)| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
            )
        })
        .unwrap_or_default();
    let req = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `tenantry token-server` on a free port of 127.0.0.1 (plain HTTP), once it listens.
pub(crate) async fn token_server() -> (tokio::process::Child, u16) {
    let port = crate::harness::free_port();
    let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args([
            "token-server",
            "--address",
            &format!("127.0.0.1:{port}"),
            "--token-lifetime-seconds",
            "600",
        ])
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let up = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(crate::harness::TIMEOUT, up)
        .await
        .expect("token endpoint listens");
    (server, port)
}

/// A client that authenticates with a bearer token only.
pub(crate) async fn with_token(token: &str) -> Client {
    let kc = Kubeconfig::read_from(&cluster().kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = serde_json::from_value::<AuthInfo>(json!({"token": token})).unwrap();
    Client::try_from(config).unwrap()
}

pub(crate) async fn can_create_configmap(client: &Client, ns: &str) -> u16 {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(unique("cm")),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm,
        )
        .await
    {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("{e}"),
    }
}

pub(crate) async fn credentials(client: &Client, ns: &str, name: &str) -> (String, String) {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&format!("{name}-credentials"))
        .await
        .unwrap();
    let d = s.data.unwrap();
    let text = |k: &str| String::from_utf8(d[k].0.clone()).unwrap();
    (text("client-id"), text("client-secret"))
}

/// Rotates the client secret of Membership `ci` and returns the new secret, once its
/// verifier is in place (the Secret is written before the verifier).
async fn rotate(admin: &Client, org_ns: &str, value: &str, grace: &str, previous: &str) -> String {
    let mbrs: Api<Membership> = Api::namespaced(admin.clone(), org_ns);
    let annotations = json!({"metadata": {"annotations": {
        "tenantry.dev/rotate": value,
        "tenantry.dev/rotation-grace-seconds": grace,
    }}});
    mbrs.patch("ci", &PatchParams::default(), &Patch::Merge(annotations))
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), org_ns);
    let previous = previous.to_string();
    let sa = wait_for(
        &sas,
        "ci-client",
        "a new verifier",
        move |sa: Option<&ServiceAccount>| {
            sa.and_then(|sa| {
                sa.metadata
                    .annotations
                    .as_ref()?
                    .get("tenantry.dev/client-secret-hash")
                    .cloned()
            })
            .is_some_and(|h| !tenantry::credentials::verify(&previous, &h))
        },
    )
    .await
    .unwrap();
    let (_, secret) = credentials(admin, org_ns, "ci").await;
    let hash = sa.metadata.annotations.unwrap()["tenantry.dev/client-secret-hash"].clone();
    assert!(
        tenantry::credentials::verify(&secret, &hash),
        "the delivered secret matches the verifier"
    );
    secret
}

#[tokio::test]
async fn a_client_exchanges_credentials_for_a_token_with_exactly_its_role() {
    let _ = controller();
    let admin = admin().await;
    let org = unique("cli");
    create_org(&admin, &org, org_spec("o@x.example")).await;
    create_ws(&admin, &org, "dev", Default::default()).await;
    create_ws(&admin, &org, "prod", Default::default()).await;
    wait_ws_ready(&admin, &org, "dev").await;
    wait_ws_ready(&admin, &org, "prod").await;
    add_member(
        &admin,
        &org,
        membership(
            "ci",
            Subject::client("ci"),
            OrgRole::Member,
            &[("dev", WorkspaceRole::Editor)],
        ),
    )
    .await;
    wait_member_reason(&admin, &org, "ci", "Granted").await;
    let org_ns = format!("org-{org}");
    let (id, secret) = credentials(&admin, &org_ns, "ci").await;

    // The owner may delete the delivered Secret once copied: the client still works.
    Api::<Secret>::namespaced(admin.clone(), &org_ns)
        .delete("ci-credentials", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(
        &Api::<Secret>::namespaced(admin.clone(), &org_ns),
        "ci-credentials",
    )
    .await;

    let (mut server, port) = token_server().await;

    // RFC 6749 errors.
    let (s, b) = post_token(port, "grant_type=password", Some((&id, &secret))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (s, b) = post_token(port, "client_id=x", None).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = post_token(port, "grant_type=client_credentials", Some((&id, "wrong"))).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    let big = format!("grant_type=client_credentials&pad={}", "x".repeat(20_000));
    assert_eq!(
        post_token(port, &big, None).await.0,
        413,
        "bodies over the limit are refused"
    );

    // Form fields work as well as HTTP Basic.
    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let (s, b) = post_token(port, &form, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_in"].as_i64().unwrap() > 500);
    let (s, b) = post_token(port, "grant_type=client_credentials", Some((&id, &secret))).await;
    assert_eq!(s, 200, "{b}");
    let token = b["access_token"].as_str().unwrap().to_string();
    let as_client = with_token(&token).await;
    assert_eq!(
        can_create_configmap(&as_client, &format!("{org}--dev")).await,
        200,
        "Editor in dev"
    );
    assert_eq!(
        can_create_configmap(&as_client, &format!("{org}--prod")).await,
        403,
        "nothing in prod"
    );
    assert_eq!(
        can_create_configmap(&as_client, "default").await,
        403,
        "nothing outside"
    );

    // Rotation with a grace period: the old secret keeps working for its duration.
    let secret2 = rotate(&admin, &org_ns, "1", "300", &secret).await;
    let token_status = |s: String| {
        let id = id.clone();
        async move {
            post_token(port, "grant_type=client_credentials", Some((&id, &s)))
                .await
                .0
        }
    };
    assert_eq!(
        token_status(secret2.clone()).await,
        200,
        "the new secret works"
    );
    assert_eq!(
        token_status(secret.clone()).await,
        200,
        "the old one too, during the grace period"
    );
    // Rotation without one: the previous secret is refused at once.
    let secret3 = rotate(&admin, &org_ns, "2", "0", &secret2).await;
    assert_eq!(token_status(secret3.clone()).await, 200);
    assert_eq!(
        token_status(secret2.clone()).await,
        401,
        "the previous secret is refused"
    );
    assert_eq!(
        token_status(secret.clone()).await,
        401,
        "and so is the first one"
    );
    let (id3, _) = credentials(&admin, &org_ns, "ci").await;
    assert_eq!(id3, id, "the client id is stable");
    let secret2 = secret3;
    let mbrs: Api<Membership> = Api::namespaced(admin.clone(), &org_ns);
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &org_ns);

    // Removing the membership revokes the client: its ServiceAccount goes, and with it
    // every token issued for it.
    mbrs.delete("ci", &DeleteParams::default()).await.unwrap();
    wait_gone(&sas, "ci-client").await;
    // The API server learns of the deletion through its informer: within moments.
    let rejected = async {
        while can_create_configmap(&as_client, &format!("{org}--dev")).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), rejected)
        .await
        .expect("the issued token is rejected once the ServiceAccount is gone");
    assert_eq!(
        post_token(port, "grant_type=client_credentials", Some((&id, &secret2)))
            .await
            .0,
        401
    );

    // Failed attempts are rate-limited.
    let mut last = 0;
    for _ in 0..12 {
        last = post_token(port, "grant_type=client_credentials", Some((&id, "guess")))
            .await
            .0;
    }
    assert_eq!(last, 429, "too many failures");
    server.start_kill().unwrap();
    crate::core::delete_org(&admin, &org).await;
}

#[tokio::test]
async fn the_token_endpoint_serves_https_when_given_a_certificate() {
    let dir = std::env::temp_dir().join(unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let port = crate::harness::free_port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["token-server", "--address", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/oauth2/token");
    let curl = |user: &'static str| {
        let cert = cert.clone();
        let url = url.clone();
        async move {
            tokio::process::Command::new("curl")
                .args(["-s", "--cacert"])
                .arg(&cert)
                .args([
                    "-u",
                    user,
                    "-d",
                    "grant_type=client_credentials",
                    "-w",
                    "\n%{http_code}",
                    &url,
                ])
                .output()
                .await
                .expect("curl is installed (.ci/run installs it)")
        }
    };
    let answered = async {
        loop {
            let out = curl("nobody.none.000000:wrong").await;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.ends_with("401") {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    let text = tokio::time::timeout(crate::harness::TIMEOUT, answered)
        .await
        .expect("HTTPS answers");
    assert!(text.contains("\"invalid_client\""), "{text}");
    server.start_kill().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Verifiers are SHA-256 of a salt and the secret since 256 random bits need no slow
/// hash; a client issued by an earlier release (an Argon2id verifier on its
/// ServiceAccount) keeps working, and the controller neither reissues its secret nor
/// rewrites its verifier (here after its delivered Secret is deleted, which makes the
/// Membership reconcile and say so).
#[tokio::test]
async fn a_client_issued_with_an_argon2_verifier_keeps_working() {
    let _ = controller();
    let admin = admin().await;
    let org = unique("cliv");
    create_org(&admin, &org, org_spec("o@x.example")).await;
    add_member(
        &admin,
        &org,
        membership("ci", Subject::client("ci"), OrgRole::Viewer, &[]),
    )
    .await;
    wait_member_reason(&admin, &org, "ci", "Granted").await;
    let org_ns = format!("org-{org}");
    let (id, secret) = credentials(&admin, &org_ns, "ci").await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &org_ns);
    let hash_of = |sa: &ServiceAccount| {
        sa.metadata.annotations.as_ref().unwrap()[tenantry::credentials::HASH].clone()
    };
    let issued = hash_of(&sas.get("ci-client").await.unwrap());
    assert!(issued.starts_with("$sha256$"), "{issued}");
    assert!(tenantry::credentials::verify(&secret, &issued));

    // What an earlier release wrote for the same secret.
    let legacy = tenantry::credentials::argon2_hash_with_memory(&secret, &mut Vec::new()).unwrap();
    assert!(legacy.starts_with("$argon2id$"));
    let annotation = json!({"metadata": {"annotations": {tenantry::credentials::HASH: legacy}}});
    sas.patch(
        "ci-client",
        &PatchParams::default(),
        &Patch::Merge(annotation),
    )
    .await
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &org_ns)
        .delete("ci-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let mbrs: Api<Membership> = Api::namespaced(admin.clone(), &org_ns);
    wait_for(
        &mbrs,
        "ci",
        "Ready saying the Secret was deleted",
        |m: Option<&Membership>| {
            m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.message.contains("was deleted after issuance"))
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(
        hash_of(&sas.get("ci-client").await.unwrap()),
        legacy,
        "the earlier release's verifier stays"
    );
    assert!(
        Api::<Secret>::namespaced(admin.clone(), &org_ns)
            .get_opt("ci-credentials")
            .await
            .unwrap()
            .is_none(),
        "no secret reissued"
    );

    let (mut server, port) = token_server().await;
    let (s, b) = post_token(port, "grant_type=client_credentials", Some((&id, &secret))).await;
    assert_eq!(
        s, 200,
        "the secret issued before verifies against Argon2: {b}"
    );
    let (s, _) = post_token(port, "grant_type=client_credentials", Some((&id, "wrong"))).await;
    assert_eq!(s, 401);
    server.start_kill().unwrap();
    crate::core::delete_org(&admin, &org).await;
}
