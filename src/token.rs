//! The token endpoint: OAuth 2.0 client credentials grant (RFC 6749 section 4.4) for
//! machine clients. `POST /oauth2/token` with `grant_type=client_credentials` and the
//! client id and secret (HTTP Basic or form fields) answers a short-lived Kubernetes
//! token of the client's ServiceAccount (TokenRequest API), which carries exactly the
//! client's role in its organization. Failed attempts are rate-limited per client and
//! per source address; bodies over 8 KiB are refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{Membership, SubjectKind};
use crate::{credentials, names};

/// Settings of `tenantry token-server`.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenSettings {
    /// Address to listen on.
    #[arg(long, env = "TENANTRY_TOKEN_ADDRESS", default_value = "0.0.0.0:8443")]
    pub address: SocketAddr,
    /// Lifetime of issued tokens, in seconds (the API server enforces at least 600).
    #[arg(long, env = "TENANTRY_TOKEN_LIFETIME_SECONDS", default_value_t = 3600)]
    pub token_lifetime_seconds: i64,
    /// PEM certificate (chain) to serve HTTPS with; plain HTTP when unset.
    #[arg(long, env = "TENANTRY_TOKEN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TENANTRY_TOKEN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Failed attempts allowed per client id, and per source address, each minute.
    #[arg(long, env = "TENANTRY_TOKEN_MAX_FAILURES", default_value_t = 10)]
    pub max_failures_per_minute: u32,
}

const MAX_BODY: usize = 8 * 1024;
const WINDOW: Duration = Duration::from_secs(60);

struct Server {
    client: Client,
    settings: TokenSettings,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Server {
    fn limited(&self, keys: &[&str]) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        f.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        keys.iter().any(|k| {
            f.get(*k)
                .is_some_and(|(n, _)| *n >= self.settings.max_failures_per_minute)
        })
    }
    fn failed(&self, keys: &[&str]) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            let e = f.entry(k.to_string()).or_insert((0, Instant::now()));
            e.0 += 1;
        }
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tenantry\""),
        );
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    r
}

/// Client id and secret from HTTP Basic, else from the form.
fn credentials_of(headers: &HeaderMap, form: &HashMap<String, String>) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((unescape(id)?, unescape(secret)?));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

async fn token(
    State(server): State<Arc<Server>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }
    let Some((client_id, secret)) = credentials_of(&headers, &form) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required",
        );
    };
    let source = peer.ip().to_string();
    let keys = [client_id.as_str(), source.as_str()];
    if server.limited(&keys) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_client",
            "too many failed attempts; retry later",
        );
    }
    match authenticate(&server.client, &client_id, &secret).await {
        Some(sa) => match issue(&server, &sa).await {
            Ok((token, expires_in)) => {
                info!(client_id = %names::printable(&client_id, 128), "issued a token");
                let mut r = axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}))
                    .into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(e) => {
                warn!(client_id = %names::printable(&client_id, 128), error = %e, "TokenRequest failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "could not issue a token",
                )
            }
        },
        None => {
            server.failed(&keys);
            // The client id is what an unauthenticated caller sent: escaped, bounded.
            warn!(client_id = %names::printable(&client_id, 128), source = %source, "client authentication failed");
            error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }
}

/// The client's ServiceAccount when the id and secret are right. Unknown clients cost
/// the same hash verification as known ones.
async fn authenticate(client: &Client, client_id: &str, secret: &str) -> Option<(String, String)> {
    let found = lookup(client, client_id).await;
    let (verifiers, sa) = match &found {
        Some((sa, ns)) => {
            let ann = sa.annotations();
            let mut v = vec![ann.get(credentials::HASH).cloned().unwrap_or_default()];
            let previous_valid = ann
                .get(credentials::PREVIOUS_EXPIRES)
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .is_some_and(|t| t > k8s_openapi::jiff::Timestamp::now());
            if previous_valid {
                v.extend(ann.get(credentials::PREVIOUS_HASH).cloned());
            }
            (v, Some((ns.clone(), sa.name_any())))
        }
        None => (vec![credentials::decoy().to_string()], None),
    };
    let secret = secret.to_string();
    let ok = tokio::task::spawn_blocking(move || {
        verifiers.iter().any(|h| credentials::verify(&secret, h))
    })
    .await
    .unwrap_or(false);
    if ok { sa } else { None }
}

/// The Client Membership and its ServiceAccount for `client_id` (`<org>.<membership>.<hash>`).
async fn lookup(client: &Client, client_id: &str) -> Option<(ServiceAccount, String)> {
    let mut parts = client_id.splitn(3, '.');
    let (org, membership) = (parts.next()?, parts.next()?);
    parts.next()?;
    if !names::is_dns_label(org) || !names::is_dns_label(membership) {
        return None;
    }
    let ns = names::org_namespace(org);
    let m = Api::<Membership>::namespaced(client.clone(), &ns)
        .get_opt(membership)
        .await
        .ok()??;
    if m.spec.subject.kind != SubjectKind::Client
        || m.metadata.deletion_timestamp.is_some()
        || names::client_id(org, membership, m.metadata.uid.as_deref()?) != client_id
    {
        return None;
    }
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get_opt(&names::client_service_account(membership))
        .await
        .ok()??;
    Some((sa, ns))
}

async fn issue(server: &Server, (ns, sa): &(String, String)) -> Result<(String, i64), kube::Error> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(server.settings.token_lifetime_seconds),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = Api::<ServiceAccount>::namespaced(server.client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await?;
    let status = r.status.unwrap_or_default();
    let expires_in = status
        .expiration_timestamp
        .map(|t| {
            t.0.duration_since(k8s_openapi::jiff::Timestamp::now())
                .as_secs()
                .max(0)
        })
        .unwrap_or(server.settings.token_lifetime_seconds);
    Ok((status.token.unwrap_or_default(), expires_in))
}

/// Serves the token endpoint until `shutdown`.
pub async fn serve(
    client: Client,
    settings: TokenSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = settings.address;
    let tls = (settings.tls_cert.clone(), settings.tls_key.clone());
    let server = Arc::new(Server {
        client,
        settings,
        failures: Mutex::default(),
    });
    let app = Router::new()
        .route("/oauth2/token", post(token))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(server);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let (Some(cert), Some(key)) = (&tls.0, &tls.1) {
        let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        info!(%address, "token endpoint listening on HTTPS (POST /oauth2/token)");
        return axum_server::bind_rustls(address, config)
            .handle(handle)
            .serve(service)
            .await;
    }
    let listener = tokio::net::TcpListener::bind(address).await?;
    info!(%address, "token endpoint listening on plain HTTP (POST /oauth2/token): put TLS in front of it");
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
