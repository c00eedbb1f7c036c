//! The per-organization series (`tenantry_organization_*`, `tenantry_memberships_*`):
//! one small record per organization, encoded at scrape time.
//!
//! A `Family` per series kept, per organization, a label `String` and an `Arc`'d atomic in
//! each of nine hash maps, plus the set of quota resources it had series of: 2.6 KiB per
//! organization in a 5x heap profile, 13 MiB at 25x. The record below holds the numbers
//! and the resource names once (about 200 bytes for four resources); a Prometheus
//! `Collector` writes the same series from it on each scrape.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What one organization publishes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Memberships expiring within [`super::EXPIRING_SOON`], and expired.
    pub expiring: u32,
    pub expired: u32,
    /// status.usage: workspaces provisioned, members and clients granted access.
    pub workspaces: i32,
    pub members: i32,
    pub clients: i32,
    /// Workspaces whose quota did not fit in the pooled quota (0 without one).
    pub not_granted: u32,
    /// Per quota resource, sorted by name.
    pub quota: Box<[Resource]>,
}

/// One quota resource's figures, in the resource's unit (cores, bytes, objects).
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: Box<str>,
    pub allocated: Option<f64>,
    pub used: Option<f64>,
    /// The pooled quota (spec.quota), when the organization has one.
    pub pool: Option<f64>,
}

impl Figures {
    /// The figures of an organization's status (`usage`, `quota`) and its Memberships'
    /// expiry counts.
    pub fn new(
        (expiring, expired): (usize, usize),
        usage: &crate::api::Usage,
        quota: Option<&crate::api::QuotaStatus>,
    ) -> Figures {
        let mut resources: BTreeMap<&str, Resource> = BTreeMap::new();
        let lists: [(Option<&BTreeMap<String, Quantity>>, Field); 3] = [
            (Some(&usage.allocated), |r| &mut r.allocated),
            (Some(&usage.used), |r| &mut r.used),
            (quota.map(|q| &q.hard), |r| &mut r.pool),
        ];
        for (list, field) in lists {
            for (name, q) in list.into_iter().flatten() {
                let entry = resources.entry(name).or_insert_with(|| Resource {
                    name: name.as_str().into(),
                    allocated: None,
                    used: None,
                    pool: None,
                });
                *field(entry) = Some(units(q));
            }
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Figures {
            expiring: count(expiring),
            expired: count(expired),
            workspaces: usage.workspaces,
            members: usage.members,
            clients: usage.clients,
            not_granted: quota.map_or(0, |q| count(q.not_granted.len())),
            quota: resources.into_values().collect(),
        }
    }
}

/// Which of a [`Resource`]'s figures a list of quantities fills.
type Field = fn(&mut Resource) -> &mut Option<f64>;

/// A quantity in its unit (`500m` is 0.5); 0 when it cannot be read.
fn units(q: &Quantity) -> f64 {
    crate::quantity::nanos(&q.0).map_or(0.0, |n| n as f64 / 1e9)
}

/// Every organization's figures, by name.
#[derive(Debug, Default)]
pub struct Organizations(Mutex<BTreeMap<String, Figures>>);

impl Organizations {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Figures>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `org`'s figures (replacing what it published before).
    pub fn set(&self, org: &str, figures: Figures) {
        let mut all = self.lock();
        match all.get_mut(org) {
            Some(old) if *old == figures => {}
            Some(old) => *old = figures,
            None => {
                all.insert(org.to_string(), figures);
            }
        }
    }

    /// Drops a deleted organization's series.
    pub fn forget(&self, org: &str) {
        self.lock().remove(org);
    }
}

/// A per-organization series: its name (after `tenantry_`), help, and value.
type OrgSeries = (&'static str, &'static str, fn(&Figures) -> i64);

/// The series with one sample per organization.
pub const ORGANIZATION_SERIES: [OrgSeries; 6] = [
    (
        "memberships_expiring_soon",
        "Memberships of an organization that expire within 7 days (spec.expiresAt or membership.expireAfterDays)",
        |f| i64::from(f.expiring),
    ),
    (
        "memberships_expired",
        "Memberships of an organization that have expired and grant nothing until renewed",
        |f| i64::from(f.expired),
    ),
    (
        "organization_workspaces",
        "Workspaces an organization has provisioned (status.usage.workspaces)",
        |f| i64::from(f.workspaces),
    ),
    (
        "organization_members",
        "Owners and members an organization grants access now, clients apart (status.usage.members)",
        |f| i64::from(f.members),
    ),
    (
        "organization_clients",
        "Machine clients an organization grants access now (status.usage.clients)",
        |f| i64::from(f.clients),
    ),
    (
        "organization_quota_pool_not_granted",
        "Workspaces of an organization whose quota did not fit in its pooled quota",
        |f| i64::from(f.not_granted),
    ),
];

/// A per-resource series: its name, help, and value (absent: no sample).
type ResourceSeries = (&'static str, &'static str, fn(&Resource) -> Option<f64>);

/// The series with one sample per organization and quota resource.
pub const RESOURCE_SERIES: [ResourceSeries; 3] = [
    (
        "organization_quota_allocated",
        "The sum of an organization's workspace ResourceQuotas, per resource, in the resource's unit (cores, bytes, objects)",
        |r| r.allocated,
    ),
    (
        "organization_quota_used",
        "What an organization's workspaces use of their ResourceQuotas, per resource, in the resource's unit",
        |r| r.used,
    ),
    (
        "organization_quota_pool",
        "An organization's pooled quota (spec.quota), per resource, in the resource's unit",
        |r| r.pool,
    ),
];

impl Collector for Organizations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.lock();
        // The registry adds its prefix (`tenantry_`) to the names; the help ends with a
        // period, as the registry's own help does.
        for (name, help, value) in ORGANIZATION_SERIES {
            let mut family =
                encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
            for (org, figures) in all.iter() {
                let labels = [("organization", org.as_str())];
                ConstGauge::new(value(figures)).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in RESOURCE_SERIES {
            let mut family =
                encoder.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
            for (org, figures) in all.iter() {
                for resource in &figures.quota {
                    let Some(v) = value(resource) else { continue };
                    let labels = [("organization", org.as_str()), ("resource", &resource.name)];
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{QuotaStatus, Usage};
    use prometheus_client::registry::Registry;

    fn scrape(orgs: &std::sync::Arc<Organizations>) -> Vec<String> {
        let mut registry = Registry::with_prefix("tenantry");
        registry.register_collector(Box::new(orgs.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    fn usage(yaml: &str) -> Usage {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn every_series_is_written_from_one_record_per_organization() {
        let orgs = std::sync::Arc::new(Organizations::default());
        let acme = usage(
            "{workspaces: 2, members: 3, clients: 1, allocated: {requests.cpu: 1500m, pods: '20'}, used: {requests.cpu: 500m}}",
        );
        let pool: QuotaStatus = serde_saphyr::from_str(
            "{hard: {requests.cpu: '3'}, allocated: {}, used: {}, notGranted: [big]}",
        )
        .unwrap();
        orgs.set("acme", Figures::new((1, 2), &acme, Some(&pool)));
        orgs.set(
            "zeta",
            Figures::new(
                (0, 0),
                &usage("{workspaces: 1, members: 1, clients: 0}"),
                None,
            ),
        );
        assert_eq!(
            scrape(&orgs),
            [
                "tenantry_memberships_expiring_soon{organization=\"acme\"} 1",
                "tenantry_memberships_expiring_soon{organization=\"zeta\"} 0",
                "tenantry_memberships_expired{organization=\"acme\"} 2",
                "tenantry_memberships_expired{organization=\"zeta\"} 0",
                "tenantry_organization_workspaces{organization=\"acme\"} 2",
                "tenantry_organization_workspaces{organization=\"zeta\"} 1",
                "tenantry_organization_members{organization=\"acme\"} 3",
                "tenantry_organization_members{organization=\"zeta\"} 1",
                "tenantry_organization_clients{organization=\"acme\"} 1",
                "tenantry_organization_clients{organization=\"zeta\"} 0",
                "tenantry_organization_quota_pool_not_granted{organization=\"acme\"} 1",
                "tenantry_organization_quota_pool_not_granted{organization=\"zeta\"} 0",
                "tenantry_organization_quota_allocated{organization=\"acme\",resource=\"pods\"} 20.0",
                "tenantry_organization_quota_allocated{organization=\"acme\",resource=\"requests.cpu\"} 1.5",
                "tenantry_organization_quota_used{organization=\"acme\",resource=\"requests.cpu\"} 0.5",
                "tenantry_organization_quota_pool{organization=\"acme\",resource=\"requests.cpu\"} 3.0",
            ]
            .map(String::from)
        );
        // A resource the organization no longer has, and a deleted organization, leave
        // no series behind.
        orgs.set(
            "acme",
            Figures::new(
                (0, 0),
                &usage("{workspaces: 0, members: 1, clients: 0, allocated: {pods: '1'}}"),
                None,
            ),
        );
        orgs.forget("zeta");
        let after = scrape(&orgs);
        assert!(
            !after
                .iter()
                .any(|l| l.contains("zeta") || l.contains("requests.cpu")),
            "{after:#?}"
        );
        assert!(after.contains(&"tenantry_organization_quota_allocated{organization=\"acme\",resource=\"pods\"} 1.0".to_string()), "{after:#?}");
    }
}
