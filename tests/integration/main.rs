//! Integration tests: one test binary, one real control plane for the whole run (see
//! `harness`). Run with `make test`; against another cluster with `make test-kind`.

mod harness;

mod access;
mod attacks;
mod badinput;
mod chart;
mod clients;
mod controlplane;
mod core;
mod deletion;
mod discovery;
mod gitops;
mod lifecycle;
mod organizationwide;
mod plugin;
mod repair;
mod resilience;
mod runtime;
mod wire;
