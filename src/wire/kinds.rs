//! The built-in kinds watched in protobuf: each message turned into its `k8s-openapi`
//! type, field by field, as the API server's JSON of the same object reads.
//!
//! Protobuf cannot tell an empty string, list or map from an absent one (Go writes every
//! non-pointer field), while the API server's JSON leaves out what is empty and
//! `omitempty`: here an empty optional value is absent, as the JSON read has it. A field
//! left out here would be missing from the cached projection, and every build asking for
//! it would find drift: the integration suite reads each kind both ways and compares
//! (`a_protobuf_watch_reads_what_a_json_read_does`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::api::rbac::v1 as rbac;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_pb::api::core::v1 as pbcore;
use k8s_pb::api::networking::v1 as pbnet;
use k8s_pb::api::rbac::v1 as pbrbac;
use k8s_pb::apimachinery::pkg::api::resource as pbresource;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pbmeta;
use k8s_pb::apimachinery::pkg::util::intstr as pbintstr;

use super::Proto;

/// An optional string: absent when empty.
fn opt(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// A required string.
fn req(s: Option<String>) -> String {
    s.unwrap_or_default()
}

/// An optional list: absent when empty.
fn list<T, U>(items: Vec<T>, f: impl FnMut(T) -> U) -> Option<Vec<U>> {
    (!items.is_empty()).then(|| items.into_iter().map(f).collect())
}

fn strings(items: Vec<String>) -> Option<Vec<String>> {
    (!items.is_empty()).then_some(items)
}

/// An optional map of strings: absent when empty.
fn map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

fn quantities(m: BTreeMap<String, pbresource::Quantity>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.into_iter()
            .map(|(k, q)| (k, Quantity(q.string.unwrap_or_default())))
            .collect()
    })
}

fn time(t: Option<pbmeta::Time>) -> Option<meta::Time> {
    let t = t?;
    k8s_openapi::jiff::Timestamp::new(t.seconds.unwrap_or_default(), t.nanos.unwrap_or_default())
        .ok()
        .map(meta::Time)
}

fn object_meta(m: Option<pbmeta::ObjectMeta>) -> meta::ObjectMeta {
    let m = m.unwrap_or_default();
    meta::ObjectMeta {
        annotations: map(m.annotations),
        creation_timestamp: time(m.creation_timestamp),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: time(m.deletion_timestamp),
        finalizers: strings(m.finalizers),
        generate_name: opt(m.generate_name),
        generation: m.generation.filter(|g| *g != 0),
        labels: map(m.labels),
        // Dropped on the way into every cache (`caches::unread`).
        managed_fields: None,
        name: opt(m.name),
        namespace: opt(m.namespace),
        owner_references: list(m.owner_references, |o| meta::OwnerReference {
            api_version: req(o.api_version),
            block_owner_deletion: o.block_owner_deletion,
            controller: o.controller,
            kind: req(o.kind),
            name: req(o.name),
            uid: req(o.uid),
        }),
        resource_version: opt(m.resource_version),
        self_link: opt(m.self_link),
        uid: opt(m.uid),
    }
}

fn label_selector(s: pbmeta::LabelSelector) -> meta::LabelSelector {
    meta::LabelSelector {
        match_expressions: list(s.match_expressions, |e| meta::LabelSelectorRequirement {
            key: req(e.key),
            operator: req(e.operator),
            values: strings(e.values),
        }),
        match_labels: map(s.match_labels),
    }
}

pub(super) fn int_or_string(v: pbintstr::IntOrString) -> IntOrString {
    // Type 1 is a string, 0 (or none) an integer.
    if v.r#type == Some(1) {
        IntOrString::String(v.str_val.unwrap_or_default())
    } else {
        IntOrString::Int(v.int_val.unwrap_or_default())
    }
}

fn subject(s: pbrbac::Subject) -> rbac::Subject {
    rbac::Subject {
        api_group: opt(s.api_group),
        kind: req(s.kind),
        name: req(s.name),
        namespace: opt(s.namespace),
    }
}

fn role_ref(r: Option<pbrbac::RoleRef>) -> rbac::RoleRef {
    let r = r.unwrap_or_default();
    rbac::RoleRef {
        // Required, and written as JSON even when empty (the core group).
        api_group: r.api_group,
        kind: req(r.kind),
        name: req(r.name),
    }
}

fn policy_rule(r: pbrbac::PolicyRule) -> rbac::PolicyRule {
    rbac::PolicyRule {
        api_groups: strings(r.api_groups),
        non_resource_urls: strings(r.non_resource_ur_ls),
        resource_names: strings(r.resource_names),
        resources: strings(r.resources),
        verbs: r.verbs,
    }
}

/// RoleBindings and ClusterRoleBindings: the same fields.
macro_rules! binding {
    ($($kind:ident)*) => {$(
        impl Proto for rbac::$kind {
            type Message = pbrbac::$kind;
            fn from_message(m: Self::Message) -> Self {
                Self {
                    metadata: object_meta(m.metadata),
                    role_ref: role_ref(m.role_ref),
                    subjects: list(m.subjects, subject),
                }
            }
        }
    )*};
}

binding!(RoleBinding ClusterRoleBinding);

impl Proto for rbac::ClusterRole {
    type Message = pbrbac::ClusterRole;
    fn from_message(m: Self::Message) -> Self {
        Self {
            metadata: object_meta(m.metadata),
            aggregation_rule: m.aggregation_rule.map(|a| rbac::AggregationRule {
                cluster_role_selectors: list(a.cluster_role_selectors, label_selector),
            }),
            rules: list(m.rules, policy_rule),
        }
    }
}

impl Proto for rbac::Role {
    type Message = pbrbac::Role;
    fn from_message(m: Self::Message) -> Self {
        Self {
            metadata: object_meta(m.metadata),
            rules: list(m.rules, policy_rule),
        }
    }
}

impl Proto for core::Namespace {
    type Message = pbcore::Namespace;
    fn from_message(m: Self::Message) -> Self {
        Self {
            metadata: object_meta(m.metadata),
            spec: m.spec.map(|s| core::NamespaceSpec {
                finalizers: strings(s.finalizers),
            }),
            status: m.status.map(|s| core::NamespaceStatus {
                conditions: list(s.conditions, |c| core::NamespaceCondition {
                    last_transition_time: time(c.last_transition_time),
                    message: opt(c.message),
                    reason: opt(c.reason),
                    status: req(c.status),
                    type_: req(c.r#type),
                }),
                phase: opt(s.phase),
            }),
        }
    }
}

impl Proto for core::ResourceQuota {
    type Message = pbcore::ResourceQuota;
    fn from_message(m: Self::Message) -> Self {
        Self {
            metadata: object_meta(m.metadata),
            spec: m.spec.map(|s| core::ResourceQuotaSpec {
                hard: quantities(s.hard),
                scope_selector: s.scope_selector.map(|s| core::ScopeSelector {
                    match_expressions: list(s.match_expressions, |e| {
                        core::ScopedResourceSelectorRequirement {
                            operator: req(e.operator),
                            scope_name: req(e.scope_name),
                            values: strings(e.values),
                        }
                    }),
                }),
                scopes: strings(s.scopes),
            }),
            status: m.status.map(|s| core::ResourceQuotaStatus {
                hard: quantities(s.hard),
                used: quantities(s.used),
            }),
        }
    }
}

impl Proto for core::LimitRange {
    type Message = pbcore::LimitRange;
    fn from_message(m: Self::Message) -> Self {
        Self {
            metadata: object_meta(m.metadata),
            spec: m.spec.map(|s| core::LimitRangeSpec {
                limits: s
                    .limits
                    .into_iter()
                    .map(|l| core::LimitRangeItem {
                        default: quantities(l.default),
                        default_request: quantities(l.default_request),
                        max: quantities(l.max),
                        max_limit_request_ratio: quantities(l.max_limit_request_ratio),
                        min: quantities(l.min),
                        type_: req(l.r#type),
                    })
                    .collect(),
            }),
        }
    }
}

fn peer(p: pbnet::NetworkPolicyPeer) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        ip_block: p.ip_block.map(|b| net::IPBlock {
            cidr: req(b.cidr),
            except: strings(b.except),
        }),
        namespace_selector: p.namespace_selector.map(label_selector),
        pod_selector: p.pod_selector.map(label_selector),
    }
}

fn port(p: pbnet::NetworkPolicyPort) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        end_port: p.end_port,
        port: p.port.map(int_or_string),
        protocol: opt(p.protocol),
    }
}

impl Proto for net::NetworkPolicy {
    type Message = pbnet::NetworkPolicy;
    fn from_message(m: Self::Message) -> Self {
        Self {
            metadata: object_meta(m.metadata),
            spec: m.spec.map(|s| net::NetworkPolicySpec {
                egress: list(s.egress, |r| net::NetworkPolicyEgressRule {
                    ports: list(r.ports, port),
                    to: list(r.to, peer),
                }),
                ingress: list(s.ingress, |r| net::NetworkPolicyIngressRule {
                    from: list(r.from, peer),
                    ports: list(r.ports, port),
                }),
                pod_selector: s.pod_selector.map(label_selector),
                policy_types: strings(s.policy_types),
            }),
        }
    }
}
