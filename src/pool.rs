//! An organization's pooled quota (`spec.quota`): the sum of its workspaces' quotas may
//! not exceed it, resource by resource. Pure: the plan is decided from durable facts (each
//! workspace's quota as built, and the workspaces' ages), never from an earlier status.
//!
//! Workspaces are granted their share oldest first. A workspace's share of a pooled
//! resource is what its quota names for it (nothing named asks 0: no quota would mean
//! unlimited, which no pool allows). A workspace whose share does not fit in what is left
//! is not granted it: its ResourceQuota holds 0 of every pooled resource (nothing new that
//! needs one starts there), it says why, and it takes nothing from the pool, so a younger
//! workspace that fits is still granted. A workspace is granted all of its pooled share or
//! none of it: half a share (CPU without memory) would start nothing either, and hide why.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// A resource list (`requests.cpu: "8"`).
pub type Resources = BTreeMap<String, Quantity>;

/// What one workspace gets of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// Its quota's amounts of the pooled resources.
    Granted,
    /// Nothing of the pooled resources; why, as `resource asked > left`, one per
    /// resource that did not fit.
    NotGranted(Vec<String>),
}

/// The pool and what each workspace gets of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The pool (`spec.quota`).
    pub hard: Resources,
    /// By workspace name.
    pub shares: BTreeMap<String, Share>,
    /// What the granted workspaces hold of each pooled resource.
    pub allocated: Resources,
}

impl Plan {
    /// The workspaces not granted their share, by name.
    pub fn not_granted(&self) -> Vec<String> {
        self.shares
            .iter()
            .filter(|(_, s)| matches!(s, Share::NotGranted(_)))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The plan for `pool` and the workspaces that may be provisioned, oldest first, each with
/// its quota as built (the Workspace's, else the defaults, under the platform's ceiling).
pub fn plan<'a>(
    pool: &crate::api::ResourceList,
    workspaces: impl IntoIterator<Item = (String, Option<&'a Resources>)>,
) -> Plan {
    // What is left of each pooled resource; a pool value that cannot be read grants none.
    let mut left: BTreeMap<&String, i128> = pool
        .iter()
        .map(|(r, q)| (r, quantity::nanos(&q.0).unwrap_or(0).max(0)))
        .collect();
    let mut shares = BTreeMap::new();
    for (name, quota) in workspaces {
        let mut asks = Vec::new();
        let mut short = Vec::new();
        for (resource, available) in &left {
            let asked = quota.and_then(|q| q.get(*resource));
            // Not named: asks 0. Not a quantity (or negative): cannot be granted.
            let amount = match asked {
                None => Some(0),
                Some(q) => quantity::nanos(&q.0).filter(|v| *v >= 0),
            };
            match amount {
                Some(a) if a <= *available => asks.push((*resource, a)),
                _ => short.push(format!(
                    "{resource} {} > {} left",
                    asked.map_or("0".to_string(), |q| crate::names::printable(&q.0, 64)),
                    quantity::format(*available)
                )),
            }
        }
        let share = if short.is_empty() {
            for (resource, amount) in asks {
                if let Some(l) = left.get_mut(resource) {
                    *l = l.saturating_sub(amount);
                }
            }
            Share::Granted
        } else {
            Share::NotGranted(short)
        };
        shares.insert(name, share);
    }
    let allocated = pool
        .iter()
        .map(|(r, q)| {
            let total = quantity::nanos(&q.0).unwrap_or(0).max(0);
            let rest = left.get(r).copied().unwrap_or(total);
            (
                r.clone(),
                Quantity(quantity::format(total.saturating_sub(rest))),
            )
        })
        .collect();
    Plan {
        hard: pool.to_map(),
        shares,
        allocated,
    }
}

/// The quota a workspace enforces given its share of `pool`: granted, its own (each
/// pooled resource it does not name at 0); not granted, 0 of every pooled resource. No
/// pool: its own, unchanged.
pub fn enforce(
    quota: Option<Resources>,
    pool: &crate::api::ResourceList,
    share: Option<&Share>,
) -> Option<Resources> {
    if pool.is_empty() {
        return quota;
    }
    let mut quota = quota.unwrap_or_default();
    let granted = matches!(share, Some(Share::Granted));
    for resource in pool.keys() {
        if !granted {
            quota.insert(resource.clone(), Quantity("0".into()));
        } else {
            quota
                .entry(resource.clone())
                .or_insert_with(|| Quantity("0".into()));
        }
    }
    Some(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> Resources {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    #[test]
    fn the_oldest_workspaces_are_granted_first_and_a_younger_one_that_fits_too() {
        let pool = list(&[("requests.cpu", "4"), ("requests.memory", "8Gi")]);
        let big = list(&[
            ("requests.cpu", "3"),
            ("requests.memory", "2Gi"),
            ("pods", "10"),
        ]);
        let huge = list(&[("requests.cpu", "2"), ("requests.memory", "1Gi")]);
        let small = list(&[("requests.cpu", "500m"), ("requests.memory", "1Gi")]);
        let plan = plan(
            &pool.clone().into(),
            [
                ("a".to_string(), Some(&big)),
                ("b".to_string(), Some(&huge)),
                ("c".to_string(), Some(&small)),
                ("d".to_string(), None),
            ],
        );
        assert_eq!(plan.shares["a"], Share::Granted);
        assert_eq!(
            plan.shares["b"],
            Share::NotGranted(vec!["requests.cpu 2 > 1 left".into()]),
            "only what does not fit is said"
        );
        assert_eq!(plan.shares["c"], Share::Granted, "a younger one that fits");
        assert_eq!(plan.shares["d"], Share::Granted, "no quota asks 0");
        assert_eq!(
            plan.allocated,
            list(&[("requests.cpu", "3500m"), ("requests.memory", "3Gi")])
        );
        assert_eq!(plan.not_granted(), vec!["b".to_string()]);
    }

    #[test]
    fn what_a_workspace_enforces_never_escapes_the_pool() {
        let pool = list(&[("requests.cpu", "4"), ("limits.memory", "8Gi")]);
        let own = list(&[("requests.cpu", "2"), ("pods", "10")]);
        assert_eq!(
            enforce(
                Some(own.clone()),
                &pool.clone().into(),
                Some(&Share::Granted)
            ),
            Some(list(&[
                ("requests.cpu", "2"),
                ("limits.memory", "0"),
                ("pods", "10")
            ])),
            "granted: its own, what it does not name at 0 (never unlimited)"
        );
        assert_eq!(
            enforce(
                Some(own.clone()),
                &pool.clone().into(),
                Some(&Share::NotGranted(vec![]))
            ),
            Some(list(&[
                ("requests.cpu", "0"),
                ("limits.memory", "0"),
                ("pods", "10")
            ])),
            "not granted: 0 of the pool, the rest kept"
        );
        assert_eq!(
            enforce(None, &pool.clone().into(), None),
            Some(list(&[("requests.cpu", "0"), ("limits.memory", "0")])),
            "not in the plan (not provisionable): nothing of the pool"
        );
        assert_eq!(
            enforce(
                Some(own.clone()),
                &crate::api::ResourceList::default(),
                None
            ),
            Some(own)
        );
        assert_eq!(
            enforce(None, &crate::api::ResourceList::default(), None),
            None
        );
    }

    #[test]
    fn what_cannot_be_read_is_not_granted_and_nothing_panics() {
        let pool = list(&[("requests.cpu", "1e40"), ("pods", "10")]);
        let odd = list(&[("requests.cpu", "x"), ("pods", "-1")]);
        let fine = list(&[("requests.cpu", "0"), ("pods", "10")]);
        let plan = plan(
            &pool.clone().into(),
            [
                ("odd".to_string(), Some(&odd)),
                ("fine".to_string(), Some(&fine)),
            ],
        );
        assert!(matches!(plan.shares["odd"], Share::NotGranted(ref s) if s.len() == 2));
        assert_eq!(
            plan.shares["fine"],
            Share::Granted,
            "an unreadable pool value grants 0"
        );
        assert_eq!(
            plan.allocated,
            list(&[("requests.cpu", "0"), ("pods", "10")])
        );
    }
}
