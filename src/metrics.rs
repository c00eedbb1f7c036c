//! Prometheus metrics: reconciles by kind and result, their duration, errors by reason,
//! objects managed, and the API writes Tenantry makes.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod organizations;

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
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
}

/// Every metric Tenantry exports, in two groups a scrape can ask for on its own
/// ([`Group`]).
pub struct Metrics {
    /// The controller's own series (reconciles, requests, caches, heap).
    pub registry: Registry,
    /// The per-organization series: one record per organization, so at 5,000 of them
    /// 50,000 samples (3.4 MB of text) where the controller's own are about a hundred.
    pub organizations_registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub managed: Family<KindLabels, Gauge>,
    /// The heap as jemalloc sees it: `allocated` (live) and `resident` (pages it holds).
    pub heap: Family<HeapLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub views: Family<ViewLabels, Counter>,
    /// The per-organization series, one record per organization.
    pub organizations: std::sync::Arc<organizations::Organizations>,
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
    let organizations = std::sync::Arc::new(organizations::Organizations::default());
    let mut organizations_registry = Registry::with_prefix("tenantry");
    organizations_registry.register_collector(Box::new(organizations.clone()));
    Metrics {
        registry,
        organizations_registry,
        organizations,
        views,
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

/// Publishes organization `org`'s figures: its Memberships expiring soon and expired (from
/// its view), what it uses and its pooled quota (its status).
pub fn organization(
    org: &str,
    view: &crate::view::OrgView,
    now: k8s_openapi::jiff::Timestamp,
    usage: &crate::api::Usage,
    quota: Option<&crate::api::QuotaStatus>,
) {
    let expiry =
        crate::grants::expiry_counts(&view.org, &view.membership_refs(), now, EXPIRING_SOON);
    METRICS
        .organizations
        .set(org, organizations::Figures::new(expiry, usage, quota));
}

/// Drops the series of a deleted organization.
pub fn forget_organization(org: &str) {
    METRICS.organizations.forget(org);
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

/// A group of series a scrape can ask for: `/metrics?collect[]=controller` (the
/// controller's own: cheap, for a short interval or a benchmark polling it) or
/// `collect[]=organizations` (one sample per organization and series: its size grows
/// with the tenancy), the `collect[]` parameter node_exporter and others take. Without
/// one, both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Controller,
    Organizations,
}

impl Group {
    pub const ALL: [Group; 2] = [Group::Controller, Group::Organizations];

    pub fn name(self) -> &'static str {
        match self {
            Group::Controller => "controller",
            Group::Organizations => "organizations",
        }
    }

    /// The groups a `/metrics` query asks for (`collect[]=<group>`, repeated; none: all),
    /// or the value that names no group.
    pub fn from_query(query: Option<&str>) -> Result<Vec<Group>, String> {
        let mut groups = Vec::new();
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (_, value) in pairs.filter(|(k, _)| k == "collect[]") {
            let group = Group::ALL
                .into_iter()
                .find(|g| g.name() == value)
                .ok_or_else(|| {
                    format!(
                        "collect[]={value}: no such group of metrics (controller, organizations)"
                    )
                })?;
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        if groups.is_empty() {
            groups.extend(Group::ALL);
        }
        Ok(groups)
    }
}

/// The metrics of `groups` in the Prometheus text format.
pub fn encode_groups(groups: &[Group]) -> String {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    for group in groups {
        let registry = match group {
            Group::Controller => {
                heap();
                &METRICS.registry
            }
            Group::Organizations => &METRICS.organizations_registry,
        };
        encode_registry(&mut out, registry).expect("writing to a String");
    }
    encode_eof(&mut out).expect("writing to a String");
    out
}

/// Every metric in the Prometheus text format.
pub fn encode() -> String {
    encode_groups(&Group::ALL)
}

#[cfg(test)]
mod tests {
    use super::{Group, classify, organizations};
    use http::Method;

    /// `/metrics?collect[]=...` as Prometheus sends it (`params: {collect[]: [...]}`,
    /// the brackets encoded).
    #[test]
    fn a_scrape_asks_for_groups_of_series_by_name() {
        use Group::{Controller, Organizations};
        let q = Group::from_query;
        assert_eq!(q(None), Ok(vec![Controller, Organizations]));
        assert_eq!(q(Some("")), Ok(vec![Controller, Organizations]));
        assert_eq!(q(Some("collect[]=controller")), Ok(vec![Controller]));
        assert_eq!(
            q(Some("collect%5B%5D=organizations")),
            Ok(vec![Organizations])
        );
        assert_eq!(
            q(Some(
                "collect[]=organizations&collect[]=controller&collect[]=controller"
            )),
            Ok(vec![Organizations, Controller])
        );
        // Other parameters are not ours to refuse.
        assert_eq!(q(Some("x=1")), Ok(vec![Controller, Organizations]));
        let refused = q(Some("collect[]=secrets")).unwrap_err();
        assert!(refused.contains("collect[]=secrets"), "{refused}");
    }

    /// Each group's text stands alone (one `# EOF`, at the end) and the two together are
    /// the whole.
    #[test]
    fn the_groups_split_the_series_between_them() {
        super::METRICS
            .organizations
            .set("groups-test", organizations::Figures::default());
        super::view(true);
        let controller = super::encode_groups(&[Group::Controller]);
        let orgs = super::encode_groups(&[Group::Organizations]);
        let all = super::encode();
        for text in [&controller, &orgs, &all] {
            assert_eq!(text.matches("# EOF").count(), 1, "{text}");
            assert!(text.ends_with("# EOF\n"), "{text}");
        }
        assert!(
            controller.contains("tenantry_organization_views_total{result=\"reused\"}"),
            "{controller}"
        );
        assert!(
            !controller.contains("tenantry_organization_members"),
            "{controller}"
        );
        assert!(
            orgs.contains("tenantry_organization_members{organization=\"groups-test\"} 0"),
            "{orgs}"
        );
        assert!(!orgs.contains("tenantry_organization_views"), "{orgs}");
        assert!(all.contains("tenantry_organization_views") && all.contains("groups-test"));
        super::METRICS.organizations.forget("groups-test");
    }

    /// jemalloc's options are compiled in (`.cargo/config.toml`): freed pages go back to
    /// the system at once (docs/benchmarks.md: the restarted controller's peak).
    #[test]
    fn jemalloc_gives_freed_pages_back_at_once() {
        assert_eq!(
            tikv_jemalloc_ctl::config::malloc_conf::read()
                .unwrap()
                .trim_end_matches('\0'),
            "dirty_decay_ms:0,muzzy_decay_ms:0"
        );
    }

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
            .chain(organizations::ORGANIZATION_SERIES.map(|(name, ..)| name))
            .chain(organizations::RESOURCE_SERIES.map(|(name, ..)| name))
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
