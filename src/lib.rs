#![forbid(unsafe_code)]
//! Tenantry: SaaS-style tenancy for Kubernetes, as YAML.

pub mod api;
pub mod labels;
pub mod rbac;
