#![forbid(unsafe_code)]
// No panic is reachable from API data: no unwrap/expect/panic, no indexing that may panic,
// no arithmetic that may overflow, outside tests. Modules that see no API data (the
// synthetic tenancy generator, static policy and metric definitions, leader election
// timings) opt out where they do.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]
//! Tenantry: SaaS-style tenancy for Kubernetes, as YAML.
//!
//! Public, for the binary, the tests, the benchmark and the fuzz targets:
//! - [`api`]: the `tenantry.dev/v1alpha1` kinds.
//! - [`controller`]: one reconciler per kind, sharing label-selected caches (`run`).
//! - [`grants`]: the pure rules of who gets what.
//! - [`wire`]: the built-in kinds' watches in protobuf (`wire::get` reads one object so).
//! - [`names`], [`labels`], [`rbac`], [`credentials`], [`token`], [`settings`]: names,
//!   labels, roles, client credentials, the token endpoint, the operator's settings.
//!
//! Private: `build` (the pure builders), `view` (one organization's meaning, shared by
//! the reconcilers), `provision` (the one applier), `slim` (what the caches keep of
//! the objects Tenantry makes), `status`, `policy`, `quantity`,
//! `error`.

pub mod admin;
pub mod api;
mod build;
pub mod controller;
pub mod credentials;
pub mod discovery;
mod error;
pub mod fuzz;
pub mod grants;
pub mod labels;
#[allow(clippy::arithmetic_side_effects)] // lease timings, not API data
pub mod leader;
#[allow(clippy::expect_used)] // static metric registration at start
pub mod metrics;
pub mod names;
pub mod plugin;
#[allow(clippy::expect_used)] // static policy documents
pub mod policy;
mod pool;
mod provision;
mod quantity;
pub mod rbac;
pub mod settings;
mod slim;
mod status;
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // load-test generator
pub mod synthetic;
pub mod token;
pub mod tree;
mod view;
pub mod wire;

/// Where `tenantry manifests` puts the MutatingAdmissionPolicy (`tenantry-finalizers`,
/// served from Kubernetes 1.36; without it the reconcilers add their finalizers
/// themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mutating {
    /// With everything else.
    Include,
    /// Left out (a cluster older than 1.36; the chart's main file).
    Exclude,
    /// Alone (the chart's file, installed where the cluster serves the kind).
    Only,
}

/// Everything `tenantry manifests` prints, as YAML: the roles Tenantry binds, the
/// platform-admin and operator roles and their bindings, and the admission policies.
pub fn manifests_yaml(
    settings: &settings::Settings,
    bindings: bool,
    mutating: Mutating,
) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    let mut push = |doc: String| {
        out.push_str("---\n");
        out.push_str(&doc);
    };
    let mutating_policies = |push: &mut dyn FnMut(String)| {
        for p in policy::mutating_policies() {
            push(serde_saphyr::to_string(&p)?);
        }
        for b in policy::mutating_bindings() {
            push(serde_saphyr::to_string(&b)?);
        }
        Ok::<_, serde_saphyr::SerializeError>(())
    };
    if mutating == Mutating::Only {
        mutating_policies(&mut push)?;
        return Ok(out);
    }
    for role in rbac::cluster_roles() {
        push(serde_saphyr::to_string(&role)?);
    }
    push(serde_saphyr::to_string(&rbac::platform_admin_role())?);
    push(serde_saphyr::to_string(&rbac::operator_role())?);
    for role in rbac::discovery_roles() {
        push(serde_saphyr::to_string(&role)?);
    }
    push(serde_saphyr::to_string(&rbac::discovery_binding())?);
    if bindings {
        for b in
            rbac::platform_bindings(&settings.platform_admin_group, &settings.operator_namespace)
        {
            push(serde_saphyr::to_string(&b)?);
        }
    }
    for p in policy::policies() {
        push(serde_saphyr::to_string(&p)?);
    }
    for b in policy::bindings() {
        push(serde_saphyr::to_string(&b)?);
    }
    if mutating == Mutating::Include {
        mutating_policies(&mut push)?;
    }
    Ok(out)
}
