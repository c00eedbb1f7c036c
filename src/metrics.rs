//! Prometheus metrics: reconciles by kind and result, their duration, errors by reason,
//! objects managed, and the API writes Tenantry makes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub verb: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    /// `reused` (nothing it reads changed) or `built`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrganizationLabels {
    pub organization: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub organization: String,
    /// A quota resource (`requests.cpu`, `pods`, ...).
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
}

/// Every metric Tenantry exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub managed: Family<KindLabels, Gauge>,
    /// The heap as jemalloc sees it: `allocated` (live) and `resident` (pages it holds).
    pub heap: Family<HeapLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub views: Family<ViewLabels, Counter>,
    pub expiring: Family<OrganizationLabels, Gauge>,
    pub expired: Family<OrganizationLabels, Gauge>,
    pub org_workspaces: Family<OrganizationLabels, Gauge>,
    pub org_members: Family<OrganizationLabels, Gauge>,
    pub org_clients: Family<OrganizationLabels, Gauge>,
    pub quota_allocated: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub quota_used: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub pool_hard: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub pool_not_granted: Family<OrganizationLabels, Gauge>,
    /// The resources each organization has series of (to drop those it no longer has).
    resources: Mutex<HashMap<String, BTreeSet<String>>>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("tenantry");
    let reconciles = Family::<ResultLabels, Counter>::default();
    let duration = Family::<KindLabels, Histogram>::new_with_constructor(
        duration_histogram as fn() -> Histogram,
    );
    let errors = Family::<ErrorLabels, Counter>::default();
    let managed = Family::<KindLabels, Gauge>::default();
    let writes = Family::<WriteLabels, Counter>::default();
    registry.register(
        "reconciles",
        "Reconciles by kind and result (ok, error)",
        reconciles.clone(),
    );
    registry.register(
        "reconcile_duration_seconds",
        "Time one reconcile takes, by kind",
        duration.clone(),
    );
    registry.register(
        "reconcile_errors",
        "Failed reconciles by kind and reason",
        errors.clone(),
    );
    registry.register(
        "managed_objects",
        "Objects in the controller's caches, by kind",
        managed.clone(),
    );
    let heap = Family::<HeapLabels, Gauge>::default();
    registry.register(
        "heap_bytes",
        "The controller's heap as its allocator (jemalloc) sees it: allocated (live objects) and resident (memory it holds)",
        heap.clone(),
    );
    registry.register(
        "api_writes",
        "Writes Tenantry sent to the API server, by verb and kind",
        writes.clone(),
    );
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register(
        "api_requests",
        "Every request sent to the API server, by verb (get, list, watch, create, update, patch, delete) and resource",
        requests.clone(),
    );
    let views = Family::<ViewLabels, Counter>::default();
    registry.register(
        "organization_views",
        "Organization views the reconcilers asked for, reused or built again",
        views.clone(),
    );
    let expiring = Family::<OrganizationLabels, Gauge>::default();
    registry.register(
        "memberships_expiring_soon",
        "Memberships of an organization that expire within 7 days (spec.expiresAt or membership.expireAfterDays)",
        expiring.clone(),
    );
    let expired = Family::<OrganizationLabels, Gauge>::default();
    registry.register(
        "memberships_expired",
        "Memberships of an organization that have expired and grant nothing until renewed",
        expired.clone(),
    );
    let org_workspaces = Family::<OrganizationLabels, Gauge>::default();
    registry.register(
        "organization_workspaces",
        "Workspaces an organization has provisioned (status.usage.workspaces)",
        org_workspaces.clone(),
    );
    let org_members = Family::<OrganizationLabels, Gauge>::default();
    registry.register(
        "organization_members",
        "Owners and members an organization grants access now, clients apart (status.usage.members)",
        org_members.clone(),
    );
    let org_clients = Family::<OrganizationLabels, Gauge>::default();
    registry.register(
        "organization_clients",
        "Machine clients an organization grants access now (status.usage.clients)",
        org_clients.clone(),
    );
    let quota_allocated = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "organization_quota_allocated",
        "The sum of an organization's workspace ResourceQuotas, per resource, in the resource's unit (cores, bytes, objects)",
        quota_allocated.clone(),
    );
    let quota_used = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "organization_quota_used",
        "What an organization's workspaces use of their ResourceQuotas, per resource, in the resource's unit",
        quota_used.clone(),
    );
    let pool_hard = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "organization_quota_pool",
        "An organization's pooled quota (spec.quota), per resource, in the resource's unit",
        pool_hard.clone(),
    );
    let pool_not_granted = Family::<OrganizationLabels, Gauge>::default();
    registry.register(
        "organization_quota_pool_not_granted",
        "Workspaces of an organization whose quota did not fit in its pooled quota",
        pool_not_granted.clone(),
    );
    Metrics {
        registry,
        org_workspaces,
        org_members,
        org_clients,
        quota_allocated,
        quota_used,
        pool_hard,
        pool_not_granted,
        resources: Default::default(),
        views,
        expiring,
        expired,
        requests,
        reconciles,
        duration,
        errors,
        managed,
        heap,
        writes,
    }
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeapLabels {
    /// `allocated` or `resident`.
    pub state: &'static str,
}

/// Refreshes the heap gauges from jemalloc's statistics (zero when jemalloc is not the
/// allocator: tests, `--features dhat-heap`).
pub fn heap() {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return;
    }
    let gauge = |state| METRICS.heap.get_or_create(&HeapLabels { state });
    if let Ok(n) = stats::allocated::read() {
        gauge("allocated").set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Ok(n) = stats::resident::read() {
        gauge("resident").set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Counts one organization view asked for: reused or built.
pub fn view(reused: bool) {
    METRICS
        .views
        .get_or_create(&ViewLabels {
            result: if reused { "reused" } else { "built" }.into(),
        })
        .inc();
}

/// How soon "expiring soon" is.
pub const EXPIRING_SOON: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Publishes organization `org`'s Memberships expiring soon and expired, from its view.
pub fn memberships_expiry(
    org: &str,
    view: &crate::view::OrgView,
    now: k8s_openapi::jiff::Timestamp,
) {
    let labels = OrganizationLabels {
        organization: org.to_string(),
    };
    let (soon, expired) =
        crate::grants::expiry_counts(&view.org, &view.membership_refs(), now, EXPIRING_SOON);
    METRICS.expiring.get_or_create(&labels).set(soon as i64);
    METRICS.expired.get_or_create(&labels).set(expired as i64);
}

/// Publishes what organization `org` uses and its pooled quota (its status).
pub fn organization_usage(
    org: &str,
    usage: Option<&crate::api::Usage>,
    quota: Option<&crate::api::QuotaStatus>,
) {
    let m = &*METRICS;
    let labels = OrganizationLabels {
        organization: org.to_string(),
    };
    let Some(usage) = usage else { return };
    m.org_workspaces
        .get_or_create(&labels)
        .set(i64::from(usage.workspaces));
    m.org_members
        .get_or_create(&labels)
        .set(i64::from(usage.members));
    m.org_clients
        .get_or_create(&labels)
        .set(i64::from(usage.clients));
    let units = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        crate::quantity::nanos(&q.0).map_or(0.0, |n| n as f64 / 1e9)
    };
    let series = |resource: &str| ResourceLabels {
        organization: org.to_string(),
        resource: resource.to_string(),
    };
    let mut now = BTreeSet::new();
    for (family, list) in [
        (&m.quota_allocated, Some(&usage.allocated)),
        (&m.quota_used, Some(&usage.used)),
        (&m.pool_hard, quota.map(|q| &q.hard)),
    ] {
        for (resource, q) in list.into_iter().flatten() {
            family.get_or_create(&series(resource)).set(units(q));
            now.insert(resource.clone());
        }
    }
    m.pool_not_granted
        .get_or_create(&labels)
        .set(quota.map_or(0, |q| q.not_granted.len() as i64));
    let mut known = m.resources.lock().unwrap_or_else(|e| e.into_inner());
    let before = known
        .insert(org.to_string(), now.clone())
        .unwrap_or_default();
    for gone in before.difference(&now) {
        forget_resource(&series(gone));
    }
    if quota.is_none() {
        for resource in &now {
            m.pool_hard.remove(&series(resource));
        }
    }
}

fn forget_resource(labels: &ResourceLabels) {
    METRICS.quota_allocated.remove(labels);
    METRICS.quota_used.remove(labels);
    METRICS.pool_hard.remove(labels);
}

/// Drops the series of a deleted organization.
pub fn forget_organization(org: &str) {
    let m = &*METRICS;
    let labels = OrganizationLabels {
        organization: org.to_string(),
    };
    for family in [
        &m.expiring,
        &m.expired,
        &m.org_workspaces,
        &m.org_members,
        &m.org_clients,
        &m.pool_not_granted,
    ] {
        family.remove(&labels);
    }
    let known = m
        .resources
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(org)
        .unwrap_or_default();
    for resource in known {
        forget_resource(&ResourceLabels {
            organization: org.to_string(),
            resource,
        });
    }
}

/// Counts one write.
pub fn write(verb: &str, kind: &str) {
    METRICS
        .writes
        .get_or_create(&WriteLabels {
            verb: verb.into(),
            kind: kind.into(),
        })
        .inc();
}

/// The Kubernetes verb and resource of an API request, from its method, path and query.
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    // Namespaced paths: namespaces/<ns>/<resource>[/<name>[/<subresource>]]; the namespace
    // itself: namespaces/<name>[/status|finalize].
    let (resource, named) = match rest {
        ["namespaces", _, sub] if matches!(*sub, "status" | "finalize") => ("namespaces", true),
        ["namespaces", _, resource, tail @ ..] => (*resource, !tail.is_empty()),
        [resource, tail @ ..] => (*resource, !tail.is_empty()),
        [] => ("", false),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource.to_string())
}

/// Counts one API request in `tenantry_api_requests_total`.
pub fn count_request<B>(req: http::Request<B>) -> http::Request<B> {
    let (verb, resource) = classify(req.method(), req.uri());
    METRICS
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.into(),
            resource,
        })
        .inc();
    req
}

/// A kube client that counts its requests (`tenantry_api_requests_total`).
pub fn counted_client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&tower::util::MapRequestLayer::new(
            count_request::<kube::client::Body>,
        ))
        .build())
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    kind: &'static str,
    start: Instant,
}

pub fn timer(kind: &'static str) -> ReconcileTimer {
    ReconcileTimer {
        kind,
        start: Instant::now(),
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        METRICS
            .duration
            .get_or_create(&KindLabels {
                kind: self.kind.into(),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// The metrics in the Prometheus text format.
pub fn encode() -> String {
    heap();
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::classify;
    use http::Method;

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        let c = |m: Method, u: &str| {
            let (v, r) = classify(&m, &u.parse().unwrap());
            format!("{v} {r}")
        };
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces?labelSelector=x"),
            "list namespaces"
        );
        assert_eq!(c(Method::GET, "/api/v1/namespaces/a"), "get namespaces");
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/status"),
            "get namespaces"
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/secrets"),
            "list secrets"
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/secrets/s"),
            "get secrets"
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/tenantry.dev/v1alpha1/organizations?watch=true&resourceVersion=1"
            ),
            "watch organizations"
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/rbac.authorization.k8s.io/v1/namespaces/n/rolebindings/b?fieldManager=t"
            ),
            "patch rolebindings"
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/tenantry.dev/v1alpha1/namespaces/o/workspaces/w/status"
            ),
            "patch workspaces"
        );
        assert_eq!(c(Method::POST, "/api/v1/namespaces"), "create namespaces");
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/a"),
            "delete namespaces"
        );
        assert_eq!(c(Method::GET, "/version"), "list ");
    }

    /// Every metric the chart's dashboard and alerts query is one Tenantry exports (a
    /// renamed metric would leave a panel empty and an alert silent).
    #[test]
    fn the_dashboard_and_alerts_query_metrics_that_exist() {
        // Every name registered (`registry.register("<name>", ...)`), with the prefix.
        let source = include_str!("metrics.rs");
        let exported: std::collections::BTreeSet<String> = source
            .split("registry.register(")
            .skip(1)
            .filter_map(|rest| rest.split('"').nth(1))
            .map(|name| format!("tenantry_{name}"))
            .collect();
        assert!(exported.len() > 10, "{exported:?}");
        let base = |name: &str| {
            ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_string()
        };
        for (file, text) in [
            (
                "dashboard.json",
                include_str!("../charts/tenantry/files/dashboard.json"),
            ),
            (
                "monitoring.yaml",
                include_str!("../charts/tenantry/templates/monitoring.yaml"),
            ),
        ] {
            let mut queried = 0;
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("tenantry_") {
                    queried += 1;
                    assert!(
                        exported.contains(&base(word)),
                        "{file} queries {word}, which Tenantry does not export: {exported:?}"
                    );
                }
            }
            assert!(queried > 3, "{file} queries Tenantry's metrics");
        }
    }
}
