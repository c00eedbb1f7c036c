//! ValidatingAdmissionPolicies shipped with Tenantry: the guardrails RBAC alone cannot
//! express, enforced by the API server itself (CEL, no webhook on the critical path).
//!
//! Role grants are checked with CEL's `authorizer` against custom verbs on the
//! Organization, which RBAC hands out per organization (see `rbac`):
//! - `grant-owner`: Owners and platform admins; needed to create, change or delete an
//!   Owner Membership, to change `spec.owners`, to grant or change one's own access, to
//!   turn `deletionProtection` off, to change `deletionPolicy`,
//!   `membership.requireAcceptance` or `membership.expireAfterDays`;
//! - `grant-admin`: Owners, Admins and platform admins; needed for Admin and Manager
//!   Memberships and for the workspace Admin role;
//! - `verify`: platform admins only; needed to set `spec.verified`;
//! - `set-limits`: platform admins only; needed to change `spec.limits` (the ceilings)
//!   and `spec.quota` (the pooled quota);
//! - `manage` on the virtual resource `tenancy`: the operator and platform admins; needed
//!   to set or change the labels and annotations Tenantry tracks ownership with, the
//!   owner references and finalizers of the three kinds, pre-accepted Memberships and
//!   subjects named `system:...`.
//!
//! RoleBindings in workspace namespaces name only that namespace's ServiceAccounts unless
//! Tenantry or a platform admin writes them: people get workspace access through
//! Memberships, so removing a member removes the access.
//!
//! Every rule is written against the least-trusted writer: see docs/security.md.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
};
use serde_json::{Value, json};

use crate::labels;

const ORG_LABEL: &str =
    "namespaceObject.metadata.?labels[?'tenantry.dev/organization'].orValue('')";
/// An organization's namespace: made by Tenantry (its component label), or declared by a
/// platform admin for the organization in its label (`org-<organization>`, no component
/// yet) and not adopted yet. Only the platform may set `tenantry.dev/` labels
/// (`tenantry-tracking-labels`), so a tenant cannot declare one.
const ORG_NAMESPACE: &str = "(namespaceObject.metadata.?labels[?'tenantry.dev/component'].orValue('') == 'organization-namespace' \
    || (namespaceObject.metadata.?labels[?'tenantry.dev/component'].orValue('') == '' \
    && namespaceObject.metadata.name == 'org-' + namespaceObject.metadata.?labels[?'tenantry.dev/organization'].orValue('')))";

fn check(verb: &str, name: &str) -> String {
    format!(
        "authorizer.group('tenantry.dev').resource('organizations').name({name}).check('{verb}').allowed()"
    )
}

/// An admissionregistration.k8s.io/v1 object of `kind`, labelled as Tenantry's.
fn document<T: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> T {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "tenantry", "app.kubernetes.io/part-of": "tenantry"}},
        "spec": spec,
    }))
    .expect("a well-formed admission document (static)")
}

fn policy(name: &str, spec: Value) -> ValidatingAdmissionPolicy {
    document("ValidatingAdmissionPolicy", name, spec)
}

fn rules(group: &str, resources: &[&str], operations: &[&str]) -> Value {
    json!({
        "apiGroups": [group], "apiVersions": ["*"], "resources": resources, "operations": operations,
    })
}

/// Kubernetes' own controllers (the namespace controller and the garbage collector delete
/// what a deleted namespace or owner held; with --use-service-account-credentials they run
/// as kube-system ServiceAccounts).
const CONTROLLERS: &str = "(request.userInfo.username == 'system:kube-controller-manager' || request.userInfo.username.startsWith('system:serviceaccount:kube-system:'))";

/// The platform's own verb: the operator and platform admins hold it.
const PLATFORM: &str =
    "authorizer.group('tenantry.dev').resource('tenancy').check('manage').allowed()";

/// A subject name Kubernetes reserves (`system:masters`, `system:authenticated`, ...):
/// only the platform may name it.
fn reserved_subject(s: &str) -> String {
    format!("(({s}.kind == 'User' || {s}.kind == 'Group') && {s}.name.startsWith('system:'))")
}

/// True when the request's user is `s` (a Membership subject in namespace `ns`), or a
/// member of the group `s`.
fn requester_is(s: &str, ns: &str) -> String {
    format!(
        "(({s}.kind == 'User' && request.userInfo.username == {s}.name) \
        || ({s}.kind == 'Group' && {s}.name in request.userInfo.?groups.orValue([])) \
        || ({s}.kind == 'ServiceAccount' && request.userInfo.username == 'system:serviceaccount:' + {s}.?namespace.orValue('') + ':' + {s}.name) \
        || ({s}.kind == 'Client' && request.userInfo.username == 'system:serviceaccount:' + {ns} + ':' + {s}.name + '-client'))"
    )
}

/// The policies, in install order.
pub fn policies() -> Vec<ValidatingAdmissionPolicy> {
    let roles = "(object != null ? [object.spec.role] : []) + (oldObject != null ? [oldObject.spec.role] : [])";
    let ws_admin = "(object != null && object.spec.?workspaces.orValue([]).exists(w, w.role == 'Admin')) || (oldObject != null && oldObject.spec.?workspaces.orValue([]).exists(w, w.role == 'Admin'))";
    let accepted = "'tenantry.dev/accepted'";
    // An update that changes nothing but the acceptance annotation.
    let only_acceptance = format!(
        "request.operation == 'UPDATE' && object.spec == oldObject.spec \
        && object.metadata.?labels.orValue({{}}) == oldObject.metadata.?labels.orValue({{}}) \
        && object.metadata.?ownerReferences.orValue([]) == oldObject.metadata.?ownerReferences.orValue([]) \
        && object.metadata.?finalizers.orValue([]) == oldObject.metadata.?finalizers.orValue([]) \
        && variables.newAnnotations.all(k, k == {accepted} || (k in variables.oldAnnotations && variables.oldAnnotations[k] == variables.newAnnotations[k])) \
        && variables.oldAnnotations.all(k, k == {accepted} || k in variables.newAnnotations)"
    );
    let subject = "(object != null ? object : oldObject).spec.subject";
    let membership_roles = policy(
        "tenantry-memberships",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rules("tenantry.dev", &["memberships"], &["CREATE", "UPDATE", "DELETE"])]},
            "variables": [
                {"name": "org", "expression": ORG_LABEL},
                {"name": "roles", "expression": roles},
                {"name": "newAnnotations", "expression": "object != null ? object.metadata.?annotations.orValue({}) : {}"},
                {"name": "oldAnnotations", "expression": "oldObject != null ? oldObject.metadata.?annotations.orValue({}) : {}"},
                {"name": "acceptedBefore", "expression": format!("variables.oldAnnotations[?{accepted}].orValue('')")},
                {"name": "acceptedNow", "expression": format!("variables.newAnnotations[?{accepted}].orValue('')")},
                {"name": "onlyAcceptance", "expression": only_acceptance},
                {"name": "isSubject", "expression": requester_is(subject, "namespaceObject.metadata.name")},
                // Kubernetes cleaning up a deleted namespace or owner: never refused.
                {"name": "cleanup", "expression": format!("request.operation == 'DELETE' && {CONTROLLERS}")},
                {"name": "invitee", "expression": format!("{subject}.kind == 'User' && request.userInfo.username == {subject}.name")},
            ],
            "validations": [
                {
                    "expression": format!("variables.org != '' && {ORG_NAMESPACE}"),
                    "message": "a Membership lives in its organization's namespace (org-<organization>)",
                    "reason": "Invalid",
                },
                {
                    // The invitation Role lets the invitee patch its own Membership: that
                    // right covers the acceptance and nothing else.
                    "expression": "request.operation != 'UPDATE' || variables.onlyAcceptance || authorizer.group('tenantry.dev').resource('memberships').namespace(namespaceObject.metadata.name).check('update').allowed()",
                    "message": "you may only accept this invitation (annotation tenantry.dev/accepted): changing a Membership needs the right to change every Membership of the organization",
                    "reason": "Forbidden",
                },
                {
                    // Tenantry marks a member granted before acceptance was required
                    // (`grandfathered`); a platform admin may too, or pre-accept on creation.
                    "expression": format!("request.operation == 'DELETE' || variables.acceptedBefore == variables.acceptedNow || (request.operation == 'UPDATE' && variables.onlyAcceptance && variables.invitee) || (request.operation == 'UPDATE' && variables.onlyAcceptance && variables.acceptedBefore == '' && variables.acceptedNow == '{}' && {PLATFORM}) || (request.operation == 'CREATE' && {PLATFORM})", labels::GRANDFATHERED),
                    "message": "only the invited user may accept an invitation (annotation tenantry.dev/accepted), and accepting changes nothing else; only Tenantry marks a member granted before acceptance was required",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("variables.cleanup || variables.onlyAcceptance || !('Owner' in variables.roles) || {}", check("grant-owner", "variables.org")),
                    "messageExpression": "'only an Owner of organization ' + variables.org + ' (or a platform admin) may grant, change or revoke the Owner role'",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("variables.cleanup || variables.onlyAcceptance || !('Admin' in variables.roles || 'Manager' in variables.roles || {ws_admin}) || {}", check("grant-admin", "variables.org")),
                    "messageExpression": "'only an Owner or Admin of organization ' + variables.org + ' (or a platform admin) may grant, change or revoke the Admin and Manager roles and the workspace Admin role'",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("request.operation == 'DELETE' || variables.onlyAcceptance || !variables.isSubject || {}", check("grant-owner", "variables.org")),
                    "messageExpression": "'you may not grant or change your own access: ask an Owner of organization ' + variables.org",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("object == null || !{} || {PLATFORM}", reserved_subject("object.spec.subject")),
                    "message": "subjects named system:... (system:authenticated, system:masters, ...) are Kubernetes' own: only platform admins may grant them anything",
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
            "validations": [
                {
                    "expression": format!("{ORG_LABEL} != '' && {ORG_NAMESPACE}"),
                    "message": "a Workspace lives in its organization's namespace (org-<organization>)",
                    "reason": "Invalid",
                },
                {
                    // Whose personal workspace it is decides who alone reaches it.
                    "expression": format!(
                        "object.metadata.?labels[?'{pf}'].orValue('') == (oldObject != null ? oldObject.metadata.?labels[?'{pf}'].orValue('') : '') || {PLATFORM}",
                        pf = labels::PERSONAL_FOR
                    ),
                    "message": "the label tenantry.dev/personal-for (whose personal workspace this is) is set by Tenantry only",
                    "reason": "Forbidden",
                },
            ],
        }),
    );

    let verified = |o: &str| format!("{o}.spec.?verified.orValue(false)");
    // Set on creation, or changed: whoever may create organizations (a platform may let
    // people create their own) sets no ceiling of its own.
    let changed = |field: &str| {
        format!(
            "(request.operation == 'CREATE' && has(object.spec.{field})) || (request.operation == 'UPDATE' && (has(object.spec.{field}) != has(oldObject.spec.{field}) || (has(object.spec.{field}) && object.spec.{field} != oldObject.spec.{field})))"
        )
    };
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
                    "expression": format!(
                        "!({} || {}) || {}",
                        changed("limits"),
                        changed("quota"),
                        check("set-limits", "object.metadata.name")
                    ),
                    "message": "spec.limits and spec.quota are set by platform admins only (they bound what the organization may use)",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "!(request.operation == 'UPDATE' && ((oldObject.spec.?deletionProtection.orValue(true) && !object.spec.?deletionProtection.orValue(true)) || object.spec.?deletionPolicy.orValue('Delete') != oldObject.spec.?deletionPolicy.orValue('Delete') || {})) || {}",
                        "object.spec.?membership.?requireAcceptance.orValue(false) != oldObject.spec.?membership.?requireAcceptance.orValue(false) || object.spec.?membership.?expireAfterDays.orValue(0) != oldObject.spec.?membership.?expireAfterDays.orValue(0)",
                        check("grant-owner", "object.metadata.name")
                    ),
                    "messageExpression": "'only an Owner of organization ' + object.metadata.name + ' (or a platform admin) may turn deletionProtection off, change deletionPolicy or change membership.requireAcceptance or membership.expireAfterDays'",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "request.operation == 'DELETE' || !object.spec.owners.exists(s, {} || (s.kind == 'ServiceAccount' && s.?namespace.orValue('') != 'org-' + object.metadata.name)) || (request.operation == 'UPDATE' && object.spec.owners == oldObject.spec.owners) || {PLATFORM}",
                        reserved_subject("s")
                    ),
                    "message": "an owner named system:... or a ServiceAccount outside the organization's namespace may be named by platform admins only",
                    "reason": "Forbidden",
                },
                {
                    // What deleting does (deletionPolicy) is decided from the spec at the
                    // moment deletion began: it cannot change afterwards.
                    "expression": "request.operation != 'UPDATE' || !has(oldObject.metadata.deletionTimestamp) || object.spec == oldObject.spec",
                    "messageExpression": "'organization ' + object.metadata.name + ' is being deleted: its spec (deletionPolicy included) stays what it was when deletion began'",
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

    // Metadata that deletes or pins an object: an owner reference (the garbage collector
    // deletes the object when its owner is missing) or a finalizer. Only the platform sets
    // them on Tenantry's kinds; the garbage collector's own bookkeeping (the orphan and
    // foregroundDeletion finalizers, removing references to deleted owners) is left to it.
    // A new Organization or Workspace may carry the one finalizer Tenantry gives it anyway
    // (`tenantry-finalizers` adds it before this policy runs).
    let gc_finalizers = "['orphan', 'foregroundDeletion']";
    let pins = |o: &str| {
        format!("{o}.metadata.?finalizers.orValue([]).filter(f, !(f in {gc_finalizers}))")
    };
    let lifecycle = policy(
        "tenantry-lifecycle-metadata",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rules("tenantry.dev", &["organizations", "workspaces", "memberships"], &["CREATE", "UPDATE"])]},
            "validations": [{
                "expression": format!(
                    "(request.operation == 'CREATE' ? (object.metadata.?ownerReferences.orValue([]) == [] && {new}.all(f, f == {own})) : (object.metadata.?ownerReferences.orValue([]) == oldObject.metadata.?ownerReferences.orValue([]) && {new} == {old})) || {CONTROLLERS} || {PLATFORM}",
                    new = pins("object"),
                    old = pins("oldObject"),
                    own = own_finalizer(),
                ),
                "message": "metadata.ownerReferences and metadata.finalizers of Organizations, Workspaces and Memberships are Tenantry's: they decide when the object is deleted",
                "reason": "Forbidden",
            }],
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
                rules("", &["namespaces", "resourcequotas", "limitranges", "serviceaccounts", "secrets", "configmaps"], &["CREATE", "UPDATE"]),
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
    // People reach a workspace through Memberships only, so that removing a member
    // removes their access: a RoleBinding a workspace Admin makes inside the workspace may
    // grant the workspace's own ServiceAccounts (its workloads), never a User, a Group or
    // a ServiceAccount of another namespace (a member binding themselves kept their
    // access after removal).
    let workspace_access = policy(
        "tenantry-workspace-access",
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [rules("rbac.authorization.k8s.io", &["rolebindings"], &["CREATE", "UPDATE"])],
                "namespaceSelector": {"matchLabels": {labels::COMPONENT: labels::Component::WorkspaceNamespace.as_str()}},
            },
            "validations": [{
                "expression": format!(
                    "object.?subjects.orValue([]).all(s, s.kind == 'ServiceAccount' && s.?namespace.orValue('') == namespaceObject.metadata.name) || {PLATFORM}"
                ),
                "messageExpression": "'in workspace namespace ' + namespaceObject.metadata.name + ', people get access through a Membership (removing it removes the access); a RoleBinding made here may name only ServiceAccounts of this namespace'",
                "reason": "Forbidden",
            }],
        }),
    );
    vec![
        membership_roles,
        workspace_placement,
        organizations,
        lifecycle,
        tracking,
        workspace_access,
    ]
}

/// The finalizer Tenantry gives a new object of the request's resource, as a CEL
/// expression: an Organization's or a Workspace's, `''` (none) for a Membership.
fn own_finalizer() -> String {
    format!(
        "(request.resource.resource == 'organizations' ? '{}' : request.resource.resource == 'workspaces' ? '{}' : '')",
        labels::ORGANIZATION_FINALIZER,
        labels::WORKSPACE_FINALIZER,
    )
}

/// The MutatingAdmissionPolicy `tenantry-finalizers` (admissionregistration.k8s.io/v1,
/// served from Kubernetes 1.36): an Organization or a Workspace is created with the
/// finalizer its reconciler needs, instead of its first reconcile writing it (one write,
/// one watch event and one reconcile fewer per object). Optional: where the API server
/// does not serve the kind (`install` skips it, the chart checks its capabilities) or the
/// policy fails (`Ignore`), the reconciler adds the finalizer as before. It adds nothing
/// a tenant could not add: `tenantry-lifecycle-metadata` accepts exactly this finalizer
/// on a create, and nothing else.
pub fn mutating_policies() -> Vec<MutatingAdmissionPolicy> {
    let own = own_finalizer();
    vec![document(
        "MutatingAdmissionPolicy",
        "tenantry-finalizers",
        json!({
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "Never",
            "matchConstraints": {"resourceRules": [rules("tenantry.dev", &["organizations", "workspaces"], &["CREATE"])]},
            "matchConditions": [{
                "name": "without-its-finalizer",
                "expression": format!("!({own} in object.metadata.?finalizers.orValue([]))"),
            }],
            "mutations": [{
                "patchType": "JSONPatch",
                "jsonPatch": {"expression": format!(
                    "[JSONPatch{{op: 'add', path: '/metadata/finalizers', value: object.metadata.?finalizers.orValue([]) + [{own}]}}]"
                )},
            }],
        }),
    )]
}

/// Waits, up to `within`, until the API server admits an Organization (a dry-run
/// create: nothing is stored); returns how long that took.
///
/// With `tenantry-finalizers` installed, the API server refuses to create Organizations
/// and Workspaces (503, "Resource kind ... not found") until its mutating admission has
/// the CRDs' schema: it polls `/openapi/v3` every 5 s, so for up to about 10 s after the
/// CRDs are established (Kubernetes 1.37, `TypeConverterManager`). Whoever installs and
/// then creates at once (the demo, the benchmark) waits for this first. The policy's
/// `failurePolicy: Ignore` does not cover it: the API server returns that error as is.
/// Use a client without kube's default retry (it would retry the 503 itself, with a
/// backoff that overshoots the window). A 404 (the CRD not served yet) is waited out
/// too; a caller RBAC does not let create Organizations cannot tell (an error); any
/// other answer means admission got past the mutating policy (a refusal by a
/// validating policy, which runs after it, included).
pub async fn await_admission(
    client: &kube::Client,
    within: std::time::Duration,
) -> Result<std::time::Duration, kube::Error> {
    use crate::api::{Organization, OrganizationSpec, Subject};
    let probe = Organization::new(
        "tenantry-admission-probe",
        OrganizationSpec {
            display_name: "admission probe".into(),
            owners: vec![Subject::user("probe@tenantry.invalid")],
            ..Default::default()
        },
    );
    let api = kube::Api::<Organization>::all(client.clone());
    let dry = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    loop {
        match api.create(&dry, &probe).await {
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 503) => {
                if start.elapsed() >= within {
                    return Err(kube::Error::Api(s));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(kube::Error::Api(s))
                if s.code == 401 || (s.code == 403 && s.message.contains("cannot create")) =>
            {
                return Err(kube::Error::Api(s));
            }
            Ok(_) | Err(kube::Error::Api(_)) => return Ok(start.elapsed()),
            Err(e) => return Err(e),
        }
    }
}

/// One binding per mutating policy.
pub fn mutating_bindings() -> Vec<MutatingAdmissionPolicyBinding> {
    mutating_policies()
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            document(
                "MutatingAdmissionPolicyBinding",
                &name,
                json!({"policyName": name}),
            )
        })
        .collect()
}

/// One binding per policy, denying what fails.
pub fn bindings() -> Vec<ValidatingAdmissionPolicyBinding> {
    policies()
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            document(
                "ValidatingAdmissionPolicyBinding",
                &name,
                json!({"policyName": name, "validationActions": ["Deny"]}),
            )
        })
        .collect()
}
