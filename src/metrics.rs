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

/// Every metric Tenantry exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub errors: Family<ErrorLabels, Counter>,
    pub managed: Family<KindLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
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
    registry.register(
        "api_writes",
        "Writes Tenantry sent to the API server, by verb and kind",
        writes.clone(),
    );
    Metrics {
        registry,
        reconciles,
        duration,
        errors,
        managed,
        writes,
    }
});

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
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String");
    out
}
