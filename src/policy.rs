//! ValidatingAdmissionPolicies shipped with Tenantry: the guardrails RBAC alone cannot
//! express, enforced by the API server itself (CEL, no webhook on the critical path).
//!
//! Role grants are checked with CEL's `authorizer` against custom verbs on the
//! Organization, which RBAC hands out per organization (see `rbac`):
//! - `grant-owner`: Owners and platform admins; needed to create, change or delete an
//!   Owner Membership and to change `spec.owners`;
//! - `grant-admin`: Owners, Admins and platform admins; needed for Admin Memberships;
//! - `verify`: platform admins only; needed to set `spec.verified`;
//! - `manage` on the virtual resource `tenancy`: the operator and platform admins; needed
//!   to set or change the labels and annotations Tenantry tracks ownership with.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::{Value, json};

const ORG_LABEL: &str =
    "namespaceObject.metadata.?labels[?'tenantry.dev/organization'].orValue('')";
const ORG_NAMESPACE: &str = "namespaceObject.metadata.?labels[?'tenantry.dev/component'].orValue('') == 'organization-namespace'";

fn check(verb: &str, name: &str) -> String {
    format!(
        "authorizer.group('tenantry.dev').resource('organizations').name({name}).check('{verb}').allowed()"
    )
}

fn policy(name: &str, spec: Value) -> ValidatingAdmissionPolicy {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "tenantry", "app.kubernetes.io/part-of": "tenantry"}},
        "spec": spec,
    }))
    .expect("a well-formed ValidatingAdmissionPolicy")
}

fn rules(group: &str, resources: &[&str], operations: &[&str]) -> Value {
    json!({
        "apiGroups": [group], "apiVersions": ["*"], "resources": resources, "operations": operations,
    })
}

/// The policies, in install order.
pub fn policies() -> Vec<ValidatingAdmissionPolicy> {
    let roles = "(object != null ? [object.spec.role] : []) + (oldObject != null ? [oldObject.spec.role] : [])";
    let membership_roles = policy(
        "tenantry-memberships",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rules("tenantry.dev", &["memberships"], &["CREATE", "UPDATE", "DELETE"])]},
            "variables": [
                {"name": "org", "expression": ORG_LABEL},
                {"name": "roles", "expression": roles},
                {"name": "acceptedBefore", "expression": "oldObject != null ? oldObject.metadata.?annotations[?'tenantry.dev/accepted'].orValue('') : ''"},
                {"name": "acceptedNow", "expression": "object != null ? object.metadata.?annotations[?'tenantry.dev/accepted'].orValue('') : ''"},
            ],
            "validations": [
                {
                    "expression": format!("variables.org != '' && {ORG_NAMESPACE}"),
                    "message": "a Membership lives in its organization's namespace (org-<organization>)",
                    "reason": "Invalid",
                },
                {
                    "expression": format!("!('Owner' in variables.roles) || {}", check("grant-owner", "variables.org")),
                    "messageExpression": "'only an Owner of organization ' + variables.org + ' (or a platform admin) may grant, change or revoke the Owner role'",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("!('Admin' in variables.roles) || {}", check("grant-admin", "variables.org")),
                    "messageExpression": "'only an Owner or Admin of organization ' + variables.org + ' (or a platform admin) may grant, change or revoke the Admin role'",
                    "reason": "Forbidden",
                },
                {
                    "expression": "request.operation != 'UPDATE' || variables.acceptedBefore == variables.acceptedNow || (object.spec.subject.kind == 'User' && request.userInfo.username == object.spec.subject.name && object.spec == oldObject.spec)",
                    "message": "only the invited user may accept an invitation (annotation tenantry.dev/accepted), and accepting changes nothing else",
                    "reason": "Forbidden",
                },
            ],
        }),
    );

    let workspace_placement = policy(
        "tenantry-workspaces",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rules("tenantry.dev", &["workspaces"], &["CREATE", "UPDATE"])]},
            "validations": [{
                "expression": format!("{ORG_LABEL} != '' && {ORG_NAMESPACE}"),
                "message": "a Workspace lives in its organization's namespace (org-<organization>)",
                "reason": "Invalid",
            }],
        }),
    );

    let verified = |o: &str| format!("{o}.spec.?verified.orValue(false)");
    let organizations = policy(
        "tenantry-organizations",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rules("tenantry.dev", &["organizations"], &["CREATE", "UPDATE", "DELETE"])]},
            "validations": [
                {
                    "expression": format!(
                        "request.operation != 'UPDATE' || object.spec.owners == oldObject.spec.owners || {}",
                        check("grant-owner", "object.metadata.name")
                    ),
                    "messageExpression": "'only an Owner of organization ' + object.metadata.name + ' (or a platform admin) may change spec.owners'",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "request.operation == 'DELETE' || (request.operation == 'CREATE' ? !{} : {} == {}) || {}",
                        verified("object"), verified("object"), verified("oldObject"),
                        check("verify", "object.metadata.name")
                    ),
                    "message": "only platform admins may set spec.verified",
                    "reason": "Forbidden",
                },
                {
                    "expression": "request.operation != 'DELETE' || !oldObject.spec.?deletionProtection.orValue(true)",
                    "messageExpression": "'organization ' + oldObject.metadata.name + ' is protected from deletion: set spec.deletionProtection to false first (deleting it removes every workspace and everything in it, irrecoverably)'",
                    "reason": "Forbidden",
                },
            ],
        }),
    );

    // Labels and annotations Tenantry tracks ownership with: tenantry.dev/* and
    // app.kubernetes.io/managed-by=tenantry.
    let tracked = |m: &str| {
        format!(
            "{m}.filter(k, k.startsWith('tenantry.dev/') || (k == 'app.kubernetes.io/managed-by' && {m}[k] == 'tenantry'))"
        )
    };
    let changed = |new: &str, old: &str| {
        format!(
            "{}.exists(k, !(k in {old}) || {old}[k] != {new}[k]) || {}.exists(k, !(k in {new}) || {new}[k] != {old}[k])",
            tracked(new),
            tracked(old)
        )
    };
    let tracking = policy(
        "tenantry-tracking-labels",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                rules("", &["namespaces", "resourcequotas", "limitranges", "serviceaccounts", "secrets"], &["CREATE", "UPDATE"]),
                rules("rbac.authorization.k8s.io", &["rolebindings", "clusterroles", "clusterrolebindings"], &["CREATE", "UPDATE"]),
                rules("networking.k8s.io", &["networkpolicies"], &["CREATE", "UPDATE"]),
            ]},
            "variables": [
                {"name": "newLabels", "expression": "object.metadata.?labels.orValue({})"},
                {"name": "oldLabels", "expression": "oldObject != null ? oldObject.metadata.?labels.orValue({}) : {}"},
                {"name": "newAnnotations", "expression": "object.metadata.?annotations.orValue({})"},
                {"name": "oldAnnotations", "expression": "oldObject != null ? oldObject.metadata.?annotations.orValue({}) : {}"},
            ],
            "validations": [{
                "expression": format!(
                    "!({} || {}) || authorizer.group('tenantry.dev').resource('tenancy').check('manage').allowed()",
                    changed("variables.newLabels", "variables.oldLabels"),
                    changed("variables.newAnnotations", "variables.oldAnnotations"),
                ),
                "message": "labels and annotations under tenantry.dev/ (and app.kubernetes.io/managed-by=tenantry) are set by Tenantry only",
                "reason": "Forbidden",
            }],
        }),
    );
    vec![
        membership_roles,
        workspace_placement,
        organizations,
        tracking,
    ]
}

/// One binding per policy, denying what fails.
pub fn bindings() -> Vec<ValidatingAdmissionPolicyBinding> {
    policies()
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            serde_json::from_value(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "tenantry", "app.kubernetes.io/part-of": "tenantry"}},
                "spec": {"policyName": name, "validationActions": ["Deny"]},
            }))
            .expect("a well-formed ValidatingAdmissionPolicyBinding")
        })
        .collect()
}
