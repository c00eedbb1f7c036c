//! The discovery API (`tenantry discovery-server`): `kubectl get myorganizations` and
//! `kubectl get myworkspaces` for anyone, listing only the caller's organizations and
//! workspaces with their roles, like OpenShift's projects. Nobody needs a list right on
//! Organizations or Workspaces for it, and nobody learns of an organization they do not
//! belong to.
//!
//! An aggregated API: an APIService for `discovery.tenantry.dev/v1alpha1` sends the
//! requests to this server. The API server authenticates and authorizes the caller (the
//! ClusterRole `tenantry-discovery`, bound to `system:authenticated`) and passes who they
//! are in headers, over a connection with its front-proxy certificate ([`frontproxy`]).
//! What they see is computed from the same organization views and rules that write the
//! RoleBindings ([`listing`]), from caches of Organizations, Memberships and Workspaces.

pub mod frontproxy;
pub mod listing;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::{Membership, Organization, Workspace};
use crate::grants::Gates;
use crate::view::{OrgView, Views};
use frontproxy::FrontProxy;
use listing::{Caller, GROUP, Items, ORGANIZATIONS, VERSION, WORKSPACES};

/// `tenantry discovery-server`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiscoverySettings {
    /// Address of the HTTPS server the API server proxies to.
    #[arg(
        long,
        env = "TENANTRY_DISCOVERY_ADDRESS",
        default_value = "0.0.0.0:8443"
    )]
    pub address: SocketAddr,
    /// PEM certificate (chain) of the server: valid for `<service>.<namespace>.svc`, the
    /// name the API server checks, and signed by the APIService's caBundle.
    #[arg(long, env = "TENANTRY_DISCOVERY_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TENANTRY_DISCOVERY_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Address of the admin server (/livez, /readyz, /metrics), plain HTTP.
    #[arg(long, env = "TENANTRY_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    pub admin_address: SocketAddr,
    /// As the controller's: an unverified organization grants only its owners.
    #[arg(long, env = "TENANTRY_REQUIRE_VERIFICATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_verification: bool,
}

/// The three caches and the organization views built from them.
struct Caches {
    organizations: Store<Organization>,
    memberships: Store<Membership>,
    workspaces: Store<Workspace>,
    views: Views,
    require_verification: bool,
}

struct Server {
    caches: Caches,
    front: FrontProxy,
}

/// A cache of every `K`, without managedFields; the task that fills it.
fn reflect<K>(
    client: &Client,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|o| o.meta_mut().managed_fields = None);
    let task = reflector::reflector(writer, stream).for_each(|event| async move {
        if let Err(e) = event {
            warn!(error = %e, "discovery cache watch failed; retrying");
        }
    });
    (store, task)
}

impl Caches {
    /// The views of the organizations `caller` may be part of: those naming them as an
    /// owner, and those with a Membership whose subject is them.
    fn views_for(&self, caller: &Caller) -> Vec<Arc<OrgView>> {
        let memberships = self.memberships.state();
        let workspaces = self.workspaces.state();
        let mut orgs: HashMap<String, Arc<Organization>> = HashMap::new();
        let mut candidates = BTreeSet::new();
        for org in self.organizations.state() {
            let ns = crate::names::org_namespace(&org.name_any());
            if org.spec.owners.iter().any(|s| caller.is(s, "", &ns)) {
                candidates.insert(ns.clone());
            }
            orgs.insert(ns, org);
        }
        for m in &memberships {
            let ns = m.namespace().unwrap_or_default();
            if caller.is(&m.spec.subject, &m.name_any(), &ns) {
                candidates.insert(ns);
            }
        }
        // Views of organizations deleted since are dropped (the server runs for long).
        self.views.retain(|ns| orgs.contains_key(ns));
        let gates = Gates {
            require_verification: self.require_verification,
            now: k8s_openapi::jiff::Timestamp::now(),
        };
        candidates
            .into_iter()
            .filter_map(|ns| {
                let org = orgs.get(&ns)?.clone();
                let ms = memberships
                    .iter()
                    .filter(|m| m.metadata.namespace.as_ref() == Some(&ns))
                    .cloned()
                    .collect();
                let ws = workspaces
                    .iter()
                    .filter(|w| w.metadata.namespace.as_ref() == Some(&ns))
                    .cloned()
                    .collect();
                Some(
                    self.views
                        .get(std::time::Instant::now(), &ns, org, ms, ws, gates, None),
                )
            })
            .collect()
    }
}

/// The caller the API server passed (first user header present; every group header).
fn caller(front: &FrontProxy, headers: &HeaderMap) -> Option<Caller> {
    let user = front
        .user_headers
        .iter()
        .find_map(|h| {
            headers
                .get(h.as_str())?
                .to_str()
                .ok()
                .filter(|u| !u.is_empty())
        })?
        .to_string();
    let groups = front
        .group_headers
        .iter()
        .flat_map(|h| headers.get_all(h.as_str()).iter())
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    Some(Caller { user, groups })
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, listing::status(code.as_u16(), reason, message, None))
}

/// Whether the client asked for a `meta.k8s.io/v1` Table (kubectl get does).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
        })
}

async fn handle(
    State(server): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only get and list are served",
        );
    }
    let base = format!("/apis/{GROUP}/{VERSION}");
    let path = uri.path().trim_end_matches('/');
    match path {
        "/apis" => {
            return json_response(
                StatusCode::OK,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [listing::group()]}),
            );
        }
        p if p == format!("/apis/{GROUP}") => {
            return json_response(StatusCode::OK, listing::group());
        }
        p if p == base => return json_response(StatusCode::OK, listing::resource_list()),
        _ => {}
    }
    let Some(rest) = path.strip_prefix(&format!("{base}/")) else {
        return failure(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    let (resource, name) = match rest.split_once('/') {
        Some((r, n)) if !n.contains('/') => (r, Some(n)),
        Some(_) => return failure(StatusCode::NOT_FOUND, "NotFound", "not found"),
        None => (rest, None),
    };
    if resource != ORGANIZATIONS && resource != WORKSPACES {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource {resource}"),
        );
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "watch is not served: list again",
        );
    }
    let Some(caller) = caller(&server.front, &headers) else {
        return failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the request names no user",
        );
    };
    let views = server.caches.views_for(&caller);
    let (mut orgs, mut wss) = (Vec::new(), Vec::new());
    for view in &views {
        if resource == ORGANIZATIONS {
            orgs.extend(listing::organization(&caller, view));
        } else {
            wss.extend(listing::workspaces(&caller, view));
        }
    }
    orgs.retain(|o| name.is_none_or(|n| o.name == n));
    wss.retain(|w| name.is_none_or(|n| w.name == n));
    orgs.sort_by(|a, b| a.name.cmp(&b.name));
    wss.sort_by(|a, b| a.name.cmp(&b.name));
    let items = if resource == ORGANIZATIONS {
        Items::Organizations(&orgs)
    } else {
        Items::Workspaces(&wss)
    };
    if wants_table(&headers) {
        if name.is_some() && orgs.is_empty() && wss.is_empty() {
            return not_found(resource, name.unwrap_or_default());
        }
        return json_response(
            StatusCode::OK,
            items.table(k8s_openapi::jiff::Timestamp::now()),
        );
    }
    match name {
        None => json_response(StatusCode::OK, items.list()),
        // Not found, whether it does not exist or is not the caller's: the answer says
        // nothing of other tenants.
        Some(n) => items.first().map_or_else(
            || not_found(resource, n),
            |item| json_response(StatusCode::OK, item),
        ),
    }
}

fn not_found(resource: &str, name: &str) -> Response {
    let details = json!({"name": name, "group": GROUP, "kind": resource});
    let message = format!("{resource}.{GROUP} \"{name}\" not found");
    json_response(
        StatusCode::NOT_FOUND,
        listing::status(404, "NotFound", &message, Some(details)),
    )
}

/// Runs the discovery server until `shutdown`: reads the front proxy's trust, fills the
/// caches, then serves HTTPS (front-proxy clients only) and the admin endpoints.
pub async fn serve(
    client: Client,
    settings: DiscoverySettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let front = FrontProxy::read(&client).await?;
    let cert = std::fs::read(&settings.tls_cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", settings.tls_cert.display()))?;
    let key = std::fs::read(&settings.tls_key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", settings.tls_key.display()))?;
    let tls = front.server_config(&cert, &key)?;
    let (organizations, t1) = reflect::<Organization>(&client);
    let (memberships, t2) = reflect::<Membership>(&client);
    let (workspaces, t3) = reflect::<Workspace>(&client);
    let tasks = tokio::spawn(async move {
        futures::join!(t1, t2, t3);
    });
    let health = crate::admin::Health::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let admin = tokio::spawn(crate::admin::serve(
        settings.admin_address,
        health.clone(),
        admin_stop,
    ));
    let (a, b, c) = (
        organizations.clone(),
        memberships.clone(),
        workspaces.clone(),
    );
    let _ = futures::join!(
        a.wait_until_ready(),
        b.wait_until_ready(),
        c.wait_until_ready()
    );
    health.set_ready(true);
    info!("discovery caches synced");
    let server = Arc::new(Server {
        caches: Caches {
            organizations,
            memberships,
            workspaces,
            views: Views::default(),
            require_verification: settings.require_verification,
        },
        front,
    });
    let app = Router::new().fallback(handle).with_state(server);
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    info!(address = %settings.address, "discovery API listening on HTTPS ({GROUP}/{VERSION}, front-proxy clients only)");
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
    let served = axum_server::bind_rustls(settings.address, config)
        .handle(handle)
        .serve(app.into_make_service())
        .await;
    tasks.abort();
    let _ = admin.await;
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_table_request_gets_a_table() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert!(wants_table(&h));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_table(&h));
    }

    #[test]
    fn the_caller_is_read_from_the_front_proxy_headers() {
        let front = FrontProxy {
            ca: String::new(),
            allowed_names: vec![],
            user_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
        };
        let mut h = HeaderMap::new();
        assert_eq!(caller(&front, &h), None);
        h.insert("x-remote-user", "ann".parse().unwrap());
        h.append("x-remote-group", "dev".parse().unwrap());
        h.append("x-remote-group", "system:authenticated".parse().unwrap());
        assert_eq!(
            caller(&front, &h),
            Some(Caller {
                user: "ann".into(),
                groups: vec!["dev".into(), "system:authenticated".into()]
            })
        );
    }
}
