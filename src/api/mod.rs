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
        not_reconciled_until_observed(crd);
    }
    crds
}

/// Gives every object a status from its first second: `status.observedGeneration`
/// defaults to 0 (a default the API server applies whenever it reads the object, until
/// Tenantry writes the status). An object Tenantry has not looked at yet then reads as
/// not reconciled, generation 1 observed 0: kstatus (Flux's health checks, `wait: true`)
/// says InProgress, where an object with no status at all was Current; Argo CD's health
/// script says Progressing.
fn not_reconciled_until_observed(crd: &mut CustomResourceDefinition) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({})));
            if let Some(observed) = status
                .properties
                .as_mut()
                .and_then(|p| p.get_mut("observedGeneration"))
            {
                observed.default = Some(JSON(serde_json::json!(0)));
            }
        }
    }
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
