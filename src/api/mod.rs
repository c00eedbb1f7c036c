//! The `tenantry.dev/v1alpha1` API: Organization, Workspace and Membership.
//!
//! The CRD YAML in `crds/` is generated from these types (`tenantry crd`); never edit it
//! by hand.

mod common;
mod membership;
mod organization;
mod workspace;

pub use common::*;
pub use membership::*;
pub use organization::*;
pub use workspace::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every Tenantry kind.
pub const GROUP: &str = "tenantry.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD Tenantry serves, in install order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![Organization::crd(), Workspace::crd(), Membership::crd()];
    for crd in &mut crds {
        // Helm keeps them (and so every tenant's objects) on `helm uninstall`.
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("helm.sh/resource-policy".into(), "keep".into());
    }
    crds
}

/// The CRDs as one multi-document YAML stream, as `tenantry crd` prints it.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
