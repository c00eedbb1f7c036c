//! The discovery API (#15): `tenantry discovery-server` behind the real API server's
//! aggregation layer. Users of two organizations, impersonated, each list only their own
//! organizations and workspaces, with their roles; kubectl prints them; nobody reaches the
//! server around the API server with forged caller headers.
//!
//! The server runs on this host, so the APIService's Service is an ExternalName
//! `localhost`: this needs the API server on this host too (the local control plane).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use tenantry::api::*;

use crate::core::{
    add_member, create_org, create_ws, membership, org_spec, wait_member_reason, wait_ws_ready,
};
use crate::harness::{TIMEOUT, admin, as_user, cluster, controller, unique};

const APISERVICE: &str = "v1alpha1.discovery.tenantry.dev";
const SERVICE_NS: &str = "tenantry-discovery-test";
const SERVICE: &str = "tenantry-discovery";

fn apiservices(client: &Client) -> Api<kube::api::DynamicObject> {
    let ar = kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    );
    Api::all_with(client.clone(), &ar)
}

/// Deletes the APIService when the test ends, however it ends: while it points at a
/// server that is gone, discovery of the whole cluster is incomplete (and the namespace
/// controller waits), which would fail other tests.
struct Registered;

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let _ = apiservices(&admin().await)
                    .delete(APISERVICE, &DeleteParams::default())
                    .await;
            })
        })
        .join();
    }
}

/// A CA and a serving certificate it signed for the name the API server checks
/// (`<service>.<namespace>.svc`) and for localhost: (CA PEM, cert PEM, key PEM).
fn serving_certificate() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "discovery-test-ca");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let params = rcgen::CertificateParams::new(vec![
        format!("{SERVICE}.{SERVICE_NS}.svc"),
        "localhost".to_string(),
    ])
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// GET `path` through the API server as `client`: (status, body).
async fn get(client: &Client, path: &str, table: bool) -> (u16, Value) {
    let mut req = http::Request::get(path);
    if table {
        req = req.header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        );
    }
    match client.request::<Value>(req.body(Vec::new()).unwrap()).await {
        Ok(v) => (200, v),
        Err(kube::Error::Api(s)) => (s.code, json!({"reason": s.reason, "message": s.message})),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

const BASE: &str = "/apis/discovery.tenantry.dev/v1alpha1";

/// The names of a list's items.
fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn item<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {list}"))
}

/// A direct HTTPS GET to the discovery server, around the API server, claiming to be
/// `user`, with `cert` (PEM cert, PEM key) as the client certificate if any: the status,
/// or the reason there was none.
async fn direct(
    port: u16,
    ca: &str,
    cert: Option<(Vec<u8>, Vec<u8>)>,
    user: &str,
) -> Result<u16, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match cert {
        Some((c, k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(&c)
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(&k).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let req = http::Request::get(format!("https://localhost:{port}{BASE}/myorganizations"))
        .header("X-Remote-User", user)
        .header("X-Remote-Group", "system:masters")
        .body(http_body_util::Empty::new())
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(r)) => Ok(r.status().as_u16()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn members_discover_only_their_own_organizations_and_workspaces() {
    let _ = controller();
    let client = admin().await;
    // Two organizations; ann belongs to both, bob to one, cy through a group.
    let (a, b) = (unique("disc-a"), unique("disc-b"));
    let (ann, bob, cy, olga, qa) = (
        unique("ann"),
        unique("bob"),
        unique("cy"),
        unique("olga"),
        unique("qa"),
    );
    create_org(&client, &a, org_spec(&olga)).await;
    create_org(&client, &b, org_spec(&unique("owner"))).await;
    for (org, ws) in [(&a, "web"), (&a, "data"), (&b, "web")] {
        create_ws(&client, org, ws, Default::default()).await;
    }
    add_member(
        &client,
        &a,
        membership(
            "ann",
            Subject::user(&ann),
            OrgRole::Member,
            &[("web", WorkspaceRole::Editor)],
        ),
    )
    .await;
    add_member(
        &client,
        &a,
        membership(
            "qa",
            Subject::group(&qa),
            OrgRole::Viewer,
            &[("data", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    add_member(
        &client,
        &b,
        membership("ann", Subject::user(&ann), OrgRole::Viewer, &[]),
    )
    .await;
    add_member(
        &client,
        &b,
        membership("bob", Subject::user(&bob), OrgRole::Admin, &[]),
    )
    .await;
    for (org, m) in [(&a, "ann"), (&a, "qa"), (&b, "ann"), (&b, "bob")] {
        wait_member_reason(&client, org, m, "Granted").await;
    }
    let web = wait_ws_ready(&client, &a, "web").await;
    wait_ws_ready(&client, &b, "web").await;
    wait_ws_ready(&client, &b, "default").await;

    // The server, its certificate, and the APIService pointing at it.
    let (ca, cert, key) = serving_certificate();
    let dir = std::env::temp_dir().join(unique("discovery"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let (port, admin_port) = (crate::harness::free_port(), crate::harness::free_port());
    let _server = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args([
            "discovery-server",
            "--address",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--admin-address", &format!("127.0.0.1:{admin_port}")])
        .arg("--tls-cert")
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = async {
        loop {
            let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, ready)
        .await
        .expect("the discovery server listens (its caches synced)");

    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": SERVICE_NS}})).unwrap(),
        )
        .await;
    let services: Api<Service> = Api::namespaced(client.clone(), SERVICE_NS);
    let _ = services.delete(SERVICE, &DeleteParams::default()).await;
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": SERVICE},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            }))
            .unwrap(),
        )
        .await
        .expect("the ExternalName Service");
    // Before the API is registered, `kubectl tenantry whoami` without --org tells a member
    // (who may not list organizations) what to type.
    let (code, _, err) = crate::plugin::plugin(Some(&ann), &["whoami"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--org"), "{err}");
    let registered = Registered;
    let apiservice: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": APISERVICE},
        "spec": {
            "group": "discovery.tenantry.dev",
            "version": "v1alpha1",
            "groupPriorityMinimum": 1000,
            "versionPriority": 15,
            "service": {"name": SERVICE, "namespace": SERVICE_NS, "port": port},
            "caBundle": base64_encode(ca.as_bytes()),
        },
    }))
    .unwrap();
    let _ = apiservices(&client)
        .delete(APISERVICE, &DeleteParams::default())
        .await;
    apiservices(&client)
        .create(&PostParams::default(), &apiservice)
        .await
        .expect("the APIService");

    // Until the aggregator has found the server available.
    let as_ann = as_user(&ann, &[]).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let orgs = loop {
        let (code, body) = get(&as_ann, &format!("{BASE}/myorganizations"), false).await;
        if code == 200 {
            break body;
        }
        let now = apiservices(&client).get(APISERVICE).await.ok();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the discovery API never answered: {code} {body}\nAPIService: {:#?}",
            now.map(|o| o.data)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // ann: both organizations, with her role in each; only her workspaces.
    assert_eq!(names(&orgs), {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    });
    assert_eq!(item(&orgs, &a)["roles"], json!(["Member"]));
    assert_eq!(item(&orgs, &a)["workspaces"], 1);
    assert_eq!(item(&orgs, &b)["roles"], json!(["Viewer"]));
    assert_eq!(item(&orgs, &b)["state"], "Granted");
    let (_, wss) = get(&as_ann, &format!("{BASE}/myworkspaces"), false).await;
    assert_eq!(names(&wss), vec![format!("{a}.web")]);
    let mine = item(&wss, &format!("{a}.web"));
    assert_eq!(mine["role"], "Editor");
    assert_eq!(
        mine["namespace"],
        json!(web.status.unwrap().namespace.unwrap())
    );

    // With it, whoami finds her organizations itself.
    let (code, out, err) = crate::plugin::plugin(Some(&ann), &["whoami"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&a) && out.contains(&b), "{out}");

    // bob, Admin of b: b alone, and every workspace of b.
    let as_bob = as_user(&bob, &[]).await;
    let (_, orgs) = get(&as_bob, &format!("{BASE}/myorganizations"), false).await;
    assert_eq!(names(&orgs), vec![b.clone()]);
    assert_eq!(item(&orgs, &b)["roles"], json!(["Admin"]));
    let (_, wss) = get(&as_bob, &format!("{BASE}/myworkspaces"), false).await;
    assert_eq!(
        names(&wss),
        vec![format!("{b}.default"), format!("{b}.web")]
    );
    assert_eq!(item(&wss, &format!("{b}.web"))["role"], "Admin");

    // cy, through group qa: a's data workspace as Viewer.
    let as_cy = as_user(&cy, &[&qa]).await;
    let (_, wss) = get(&as_cy, &format!("{BASE}/myworkspaces"), false).await;
    assert_eq!(names(&wss), vec![format!("{a}.data")]);
    assert_eq!(item(&wss, &format!("{a}.data"))["role"], "Viewer");
    // The owner of a: every workspace of a.
    let (_, wss) = get(
        &as_user(&olga, &[]).await,
        &format!("{BASE}/myworkspaces"),
        false,
    )
    .await;
    assert_eq!(
        names(&wss),
        vec![
            format!("{a}.data"),
            format!("{a}.default"),
            format!("{a}.web")
        ]
    );

    // A stranger: nothing, and another tenant's organization is not found (not forbidden:
    // the answer says nothing of who exists).
    let eve = as_user(&unique("eve"), &[]).await;
    let (code, list) = get(&eve, &format!("{BASE}/myorganizations"), false).await;
    assert_eq!((code, names(&list)), (200, vec![]));
    let (code, _) = get(&eve, &format!("{BASE}/myorganizations/{a}"), false).await;
    assert_eq!(code, 404);
    let (code, one) = get(&as_bob, &format!("{BASE}/myorganizations/{b}"), false).await;
    assert_eq!(
        (code, one["metadata"]["name"].as_str()),
        (200, Some(b.as_str()))
    );
    // Read-only.
    let del = as_ann
        .request_text(
            http::Request::delete(format!("{BASE}/myorganizations/{a}"))
                .body(Vec::new())
                .unwrap(),
        )
        .await;
    assert!(del.is_err(), "a delete is refused");

    // kubectl's table, as kubectl get prints it.
    let (code, table) = get(&as_ann, &format!("{BASE}/myworkspaces"), true).await;
    assert_eq!((code, table["kind"].as_str()), (200, Some("Table")));
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &cluster().kubeconfig)
        .args(["get", "myorganizations", "--as", &ann])
        .output()
        .expect("kubectl is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&a) && text.contains(&b) && text.contains("ROLE"),
        "kubectl get myorganizations:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Around the API server: claiming to be olga with a header gets no answer, without a
    // client certificate or with one of another CA named like the front proxy...
    let refused = direct(port, &ca, None, &olga).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let mut impostor = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    impostor
        .distinguished_name
        .push(rcgen::DnType::CommonName, "front-proxy-client");
    let impostor_key = rcgen::KeyPair::generate().unwrap();
    let impostor_cert = impostor.self_signed(&impostor_key).unwrap();
    let refused = direct(
        port,
        &ca,
        Some((
            impostor_cert.pem().into_bytes(),
            impostor_key.serialize_pem().into_bytes(),
        )),
        &olga,
    )
    .await;
    assert!(refused.is_err(), "a certificate of another CA: {refused:?}");
    // ...while the API server's own front-proxy certificate is answered (the check above
    // failed for the certificate, not for something else).
    let pki = cluster()
        .kubeconfig
        .parent()
        .map(|d| d.join("pki"))
        .unwrap_or_default();
    let genuine = (
        std::fs::read(pki.join("front-proxy-client.crt"))
            .expect("the control plane's front-proxy certificate"),
        std::fs::read(pki.join("front-proxy-client.key")).unwrap(),
    );
    assert_eq!(direct(port, &ca, Some(genuine), &olga).await, Ok(200));

    drop(registered);
    let _ = services.delete(SERVICE, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
