//! The token endpoint: OAuth 2.0 client credentials grant (RFC 6749 section 4.4) for
//! machine clients. `POST /oauth2/token` with `grant_type=client_credentials` and the
//! client id and secret (HTTP Basic or form fields) answers a short-lived Kubernetes
//! token of the client's ServiceAccount (TokenRequest API), which carries exactly the
//! client's role in its organization.
//!
//! Abuse: failed attempts are limited per source address (an IPv6 source by its /64), not
//! per client id: a client id is no secret (every member of the organization sees it), so
//! a limit keyed by it would let anyone lock the real client out, while guessing a
//! 256-bit secret is hopeless anyway. An attempt reserves its place before it is verified,
//! so parallel attempts cannot slip past the limit. Verifications run at most
//! `--max-concurrent-verifications` at a time (a SHA-256 verifier takes microseconds; an
//! Argon2id one an earlier release wrote, about 19 MiB); the rest wait briefly, then get
//! 503, so memory stays flat under a flood. Bodies over 8 KiB are refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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

use crate::api::{Membership, Organization, SubjectKind};
use crate::{credentials, grants, names};

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
    /// Failed attempts allowed per source address (IPv6: per /64) each minute.
    #[arg(long, env = "TENANTRY_TOKEN_MAX_FAILURES", default_value_t = 10)]
    pub max_failures_per_minute: u32,
    /// Secret verifications running at once (an Argon2id verifier written by an earlier
    /// release takes about 19 MiB); more requests wait up to 5 s, then get 503.
    #[arg(
        long,
        env = "TENANTRY_TOKEN_MAX_CONCURRENT_VERIFICATIONS",
        default_value_t = 2
    )]
    pub max_concurrent_verifications: u16,
}

const MAX_BODY: usize = 8 * 1024;
const WINDOW: Duration = Duration::from_secs(60);

/// Sources tracked at most (an attacker with many addresses cannot grow memory without
/// bound; when full, unknown sources are limited until entries expire).
const MAX_SOURCES: usize = 100_000;
/// How long a request waits for a verification slot.
const VERIFY_WAIT: Duration = Duration::from_secs(5);

struct Server {
    client: Client,
    settings: TokenSettings,
    limiter: Limiter,
    verifications: tokio::sync::Semaphore,
    pool: VerifyPool,
}

/// Failures and attempts in flight, per source.
#[derive(Default)]
struct Limiter {
    max: u32,
    sources: Mutex<HashMap<IpAddr, Tally>>,
}

#[derive(Clone, Copy)]
struct Tally {
    failures: u32,
    in_flight: u32,
    since: Instant,
}

/// The key of a source: its address, an IPv6 one by its /64 (one host has them all).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Limiter {
    fn new(max: u32) -> Self {
        Self {
            max,
            sources: Mutex::default(),
        }
    }

    /// Reserves an attempt for `source`, or `None` when its failures and the attempts it
    /// has in flight already reach the limit (checked and reserved under one lock: no
    /// check-then-act race).
    fn begin(&self, source: IpAddr) -> Option<Attempt<'_>> {
        let key = source_key(source);
        let mut all = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if all.len() >= MAX_SOURCES {
            all.retain(|_, t| t.in_flight > 0 || now.duration_since(t.since) < WINDOW);
        }
        let len = all.len();
        let tally = match all.get_mut(&key) {
            Some(t) => t,
            None if len >= MAX_SOURCES => return None,
            None => all.entry(key).or_insert(Tally {
                failures: 0,
                in_flight: 0,
                since: now,
            }),
        };
        if now.duration_since(tally.since) >= WINDOW {
            tally.failures = 0;
            tally.since = now;
        }
        if tally.failures.saturating_add(tally.in_flight) >= self.max {
            return None;
        }
        tally.in_flight = tally.in_flight.saturating_add(1);
        Some(Attempt {
            limiter: self,
            key,
            failed: false,
        })
    }
}

/// One attempt in flight; a failure is counted when it ends.
struct Attempt<'a> {
    limiter: &'a Limiter,
    key: IpAddr,
    failed: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut all = self
            .limiter
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = all.get_mut(&self.key) {
            t.in_flight = t.in_flight.saturating_sub(1);
            if self.failed {
                t.failures = t.failures.saturating_add(1);
            }
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

/// The client id and secret a token request presents (HTTP Basic in `authorization`,
/// else the form fields), or why the request is refused: an RFC 6749 error code and
/// description (status 400). Pure: fuzzed (`crate::fuzz::token_request`).
pub fn request_credentials(
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(String, String), (&'static str, &'static str)> {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        None => return Err(("invalid_request", "grant_type is missing")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err((
                "unsupported_grant_type",
                "only client_credentials is supported",
            ));
        }
    }
    credentials_of(authorization, &form).ok_or((
        "invalid_request",
        "client_id and client_secret are required",
    ))
}

/// Client id and secret from HTTP Basic, else from the form.
fn credentials_of(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(basic) = authorization.and_then(|v| v.strip_prefix("Basic ")) {
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
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (client_id, secret) = match request_credentials(authorization, &body) {
        Ok(found) => found,
        Err((code, description)) => return error(StatusCode::BAD_REQUEST, code, description),
    };
    let source = peer.ip();
    let Some(mut attempt) = server.limiter.begin(source) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_client",
            "too many failed attempts; retry later",
        );
    };
    let Ok(Ok(_slot)) = tokio::time::timeout(VERIFY_WAIT, server.verifications.acquire()).await
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "busy; retry shortly",
        );
    };
    match authenticate(&server.client, &server.pool, &client_id, &secret).await {
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
            attempt.failed = true;
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
async fn authenticate(
    client: &Client,
    pool: &VerifyPool,
    client_id: &str,
    secret: &str,
) -> Option<(String, String)> {
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
    let ok = pool
        .run(move |memory| {
            verifiers
                .iter()
                .any(|h| credentials::verify_with_memory(&secret, h, memory))
        })
        .await
        .unwrap_or(false);
    if ok { sa } else { None }
}

/// A verification, given its thread's Argon2 working memory (used only by the Argon2id
/// verifiers of earlier releases; a SHA-256 one needs none).
type Job = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

/// A fixed set of threads for verifications, each with its Argon2 working memory
/// allocated on first need (a verifier of an earlier release) and reused: memory stays at
/// most at threads x 19 MiB however many attempts come
/// (measured before: 184 MiB after 40 parallel wrong attempts, growing 19 MiB with each
/// verification).
struct VerifyPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl VerifyPool {
    fn new(threads: u16) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `f` on the pool; `None` if the pool is gone.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<argon2::Block>) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |memory: &mut Vec<argon2::Block>| {
                let _ = tx.send(f(memory));
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// The organization and Membership a client id (`<org>.<membership>.<hash>`) names, when
/// both are DNS labels. Pure: fuzzed.
pub fn client_id_parts(client_id: &str) -> Option<(&str, &str)> {
    let mut parts = client_id.splitn(3, '.');
    let (org, membership) = (parts.next()?, parts.next()?);
    parts.next()?;
    (names::is_dns_label(org) && names::is_dns_label(membership)).then_some((org, membership))
}

/// The Client Membership and its ServiceAccount for `client_id` (`<org>.<membership>.<hash>`).
async fn lookup(client: &Client, client_id: &str) -> Option<(ServiceAccount, String)> {
    let (org, membership) = client_id_parts(client_id)?;
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
    // An expired membership grants nothing, a token included (its bindings are withdrawn
    // too): answered like an unknown client.
    let organization = Api::<Organization>::all(client.clone())
        .get_opt(org)
        .await
        .ok()??;
    if grants::expiry(&organization, &m).is_some_and(|at| at <= k8s_openapi::jiff::Timestamp::now())
    {
        info!(client_id = %names::printable(client_id, 128), "the client's membership has expired: no token");
        return None;
    }
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get_opt(&names::client_service_account(membership))
        .await
        .ok()??;
    // Only the ServiceAccount Tenantry made for this very Membership: never one of that
    // name someone else made, nor an earlier Membership's (its tokens would act for it).
    (crate::build::client::whose(&sa, org, membership, m.metadata.uid.as_deref()?)
        == crate::build::client::Whose::Ours)
        .then_some((sa, ns))
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
        limiter: Limiter::new(settings.max_failures_per_minute),
        verifications: tokio::sync::Semaphore::new(usize::from(
            settings.max_concurrent_verifications.max(1),
        )),
        pool: VerifyPool::new(settings.max_concurrent_verifications)?,
        settings,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parallel attempts reserve their place: never more than the limit in flight and
    /// failed together; other sources are not affected; a success frees its place.
    #[test]
    fn attempts_are_reserved_per_source() {
        let l = Limiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| l.begin(a).expect("within the limit"))
            .collect();
        assert!(l.begin(a).is_none(), "a fourth parallel attempt is refused");
        assert!(l.begin(b).is_some(), "another source is not affected");
        drop(held);
        for _ in 0..3 {
            let mut t = l.begin(a).expect("free again");
            t.failed = true;
        }
        assert!(l.begin(a).is_none(), "three failures lock the source");
        assert!(l.begin(b).is_some());
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source_key(x), source_key(y));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
