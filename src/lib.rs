#![forbid(unsafe_code)]
//! Tenantry: SaaS-style tenancy for Kubernetes, as YAML.
//!
//! - [`api`]: the `tenantry.dev/v1alpha1` kinds.
//! - [`controller`]: one reconciler per kind, sharing label-selected caches.
//! - [`grants`]: the pure rules of who gets what.
//! - [`provision`], [`names`], [`labels`], [`rbac`]: shared provisioning helpers.

pub mod api;
pub mod controller;
pub mod error;
pub mod grants;
pub mod labels;
pub mod names;
pub mod provision;
pub mod rbac;
pub mod settings;
pub mod status;
pub mod tree;

/// Every object `tenantry manifests` prints: the shipped ClusterRoles, as YAML.
pub fn cluster_roles_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for role in rbac::cluster_roles() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&role)?);
    }
    Ok(out)
}
