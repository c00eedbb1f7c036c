//! A machine client's credentials as a pure plan: from what the Membership asks (the
//! rotate, revoke and grace annotations), the verifier on the client's ServiceAccount and
//! the time, whether this pass issues a secret (the first, a rotation, a revocation), and
//! what the verifier holds afterwards (the previous secret's hash while its grace lasts,
//! the last rotation and revocation handled). No API call, no clock, no randomness: the
//! reconciler generates the secret and fills in its hash ([`Plan::verifier_with`]).
//! Tested against `tests/fixtures/build/client/`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::api::Membership;
use crate::credentials;

/// What a Membership asks of its client's credentials (its annotations).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `tenantry.dev/rotate`: a value not handled yet asks for a new secret.
    pub rotate_to: Option<String>,
    /// `tenantry.dev/revoke`: a value not handled yet asks for a new secret and a new
    /// ServiceAccount (every token issued before is rejected).
    pub revoke_to: Option<String>,
    /// `tenantry.dev/rotation-grace-seconds`, as written.
    pub grace: Option<String>,
}

impl Request {
    pub fn of(m: &Membership) -> Self {
        let get = |k: &str| m.annotations().get(k).cloned();
        Self {
            rotate_to: get(credentials::ROTATE),
            revoke_to: get(credentials::REVOKE),
            grace: get(credentials::ROTATION_GRACE),
        }
    }
}

/// The annotations of the client's ServiceAccount that make up its verifier.
pub const VERIFIER_KEYS: [&str; 5] = [
    credentials::HASH,
    credentials::PREVIOUS_HASH,
    credentials::PREVIOUS_EXPIRES,
    credentials::ROTATION,
    credentials::REVOCATION,
];

/// The verifier annotations among `annotations` (a ServiceAccount's).
pub fn verifier_of(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter(|(k, _)| VERIFIER_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Why a secret is issued in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Issue {
    /// No verifier yet: the client's first secret.
    First,
    /// A new `tenantry.dev/rotate` value.
    Rotate,
    /// A new `tenantry.dev/revoke` value: the previous secret gets no grace, and the
    /// ServiceAccount is replaced.
    Revoke,
}

/// What one pass does to a client's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Whether, and why, a new secret is issued.
    pub issue: Option<Issue>,
    /// The verifier after this pass. When a secret is issued its hash is not here yet:
    /// [`Plan::verifier_with`] adds it.
    pub verifier: BTreeMap<String, String>,
    /// Why an annotation cannot be honoured (a rotation asked for waits; the current
    /// secret keeps working).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl Plan {
    /// The verifier to write, with `new_hash` (the hash of the secret issued in this
    /// pass) when one is.
    pub fn verifier_with(&self, new_hash: Option<String>) -> BTreeMap<String, String> {
        let mut v = self.verifier.clone();
        if let (Some(_), Some(hash)) = (self.issue, new_hash) {
            v.insert(credentials::HASH.into(), hash);
        }
        v
    }

    /// Whether the client's ServiceAccount is replaced (a revocation).
    pub fn replaces_service_account(&self) -> bool {
        self.issue == Some(Issue::Revoke)
    }
}

/// The plan for a client whose ServiceAccount's verifier is `live` (see [`verifier_of`];
/// empty: no ServiceAccount or none issued yet), at `now`.
pub fn plan(req: &Request, live: &BTreeMap<String, String>, now: Timestamp) -> Plan {
    let mut v = verifier_of(live);
    let first = !v.contains_key(credentials::HASH);
    // A grace period Tenantry cannot honour holds the rotation back (the old secret keeps
    // working, the new one is not issued) and is reported on this Membership alone.
    let grace = credentials::rotation_grace(req.grace.as_deref());
    // A revocation answers a leak: it is never held back by the grace annotation, and
    // the previous secret gets no grace.
    let revoke = !first
        && req.revoke_to.is_some()
        && req.revoke_to.as_ref() != v.get(credentials::REVOCATION);
    let rotate = !first
        && req.rotate_to.is_some()
        && req.rotate_to.as_ref() != v.get(credentials::ROTATION)
        && grace.is_ok();
    let issue = if first {
        Some(Issue::First)
    } else if revoke {
        Some(Issue::Revoke)
    } else if rotate {
        Some(Issue::Rotate)
    } else {
        None
    };
    if let Some(issue) = issue {
        let grace_ends = match grace {
            Ok(seconds) if seconds > 0 && issue == Issue::Rotate => {
                credentials::grace_ends(now, seconds)
            }
            _ => None,
        };
        let previous = v.remove(credentials::HASH);
        v.remove(credentials::PREVIOUS_HASH);
        v.remove(credentials::PREVIOUS_EXPIRES);
        if let (Some(previous), Some(expires)) = (previous, grace_ends) {
            v.insert(credentials::PREVIOUS_HASH.into(), previous);
            v.insert(credentials::PREVIOUS_EXPIRES.into(), expires.to_string());
        }
        // What was asked is handled by this issuance (the first one included: a
        // Membership created with a rotate value is not rotated again for it).
        for (key, value) in [
            (credentials::ROTATION, &req.rotate_to),
            (credentials::REVOCATION, &req.revoke_to),
        ] {
            match value {
                Some(value) => v.insert(key.into(), value.clone()),
                None => v.remove(key),
            };
        }
    }
    // The previous secret stops working once its grace period is over.
    let expired = v
        .get(credentials::PREVIOUS_EXPIRES)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| t <= now);
    if expired {
        v.remove(credentials::PREVIOUS_HASH);
        v.remove(credentials::PREVIOUS_EXPIRES);
    }
    Plan {
        issue,
        verifier: v,
        refused: grace.err(),
    }
}

/// Whose a live client ServiceAccount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// This Membership's.
    Ours,
    /// An earlier Membership's of the same name: Tenantry's (its labels), another UID.
    Earlier,
    /// Not made by Tenantry for a client of this name (it lacks the labels only Tenantry
    /// may set).
    Foreign,
}

/// Whose `sa` is, for the Membership `membership` of organization `org`, of UID `uid`:
/// Tenantry's labels for that client (only Tenantry may set labels under `tenantry.dev/`),
/// then the annotation `tenantry.dev/owner-uid` (Tenantry's alone) names the Membership;
/// on one written before that annotation, its owner reference does. Read by the
/// Membership reconciler and by the token endpoint.
pub fn whose(sa: &ServiceAccount, org: &str, membership: &str, uid: &str) -> Whose {
    let ours = crate::provision::membership_labels(
        org,
        membership,
        crate::labels::Component::ClientServiceAccount,
    );
    if !crate::provision::carries_labels(&sa.metadata, &ours) {
        return Whose::Foreign;
    }
    let this = match sa.annotations().get(crate::labels::OWNER_UID) {
        Some(owner) => owner == uid,
        None => sa.owner_references().iter().any(|r| r.uid == uid),
    };
    if this { Whose::Ours } else { Whose::Earlier }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case of a fixture file.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Case {
        case: String,
        now: Timestamp,
        #[serde(default)]
        membership: BTreeMap<String, String>,
        #[serde(default)]
        service_account: BTreeMap<String, String>,
    }

    /// Each fixture in `tests/fixtures/build/client/`: cases (a Membership's annotations,
    /// its ServiceAccount's, the time); the expected plan of each is in the golden file
    /// beside it, with the new secret's hash shown as `<new>`.
    #[test]
    fn client_plans_match_their_fixtures() {
        crate::build::fixtures::check_text("client", |text| {
            let mut out = String::new();
            for doc in serde_saphyr::from_multiple::<Case>(text).expect("cases") {
                let get = |k: &str| doc.membership.get(k).cloned();
                let req = Request {
                    rotate_to: get(credentials::ROTATE),
                    revoke_to: get(credentials::REVOKE),
                    grace: get(credentials::ROTATION_GRACE),
                };
                let plan = plan(&req, &doc.service_account, doc.now);
                let written = Plan {
                    verifier: plan.verifier_with(Some("<new>".into())),
                    ..plan.clone()
                };
                out.push_str(&format!(
                    "--- # {}\n{}replacesServiceAccount: {}\n",
                    doc.case,
                    serde_saphyr::to_string(&written).expect("YAML"),
                    plan.replaces_service_account()
                ));
            }
            out
        });
    }

    #[test]
    fn a_service_account_is_a_memberships_by_tenantrys_labels_and_its_uid() {
        let sa = |labelled: bool, owner_uid: Option<&str>, owner_ref: Option<&str>| {
            let mut sa = ServiceAccount::default();
            if labelled {
                sa.metadata.labels = Some(crate::provision::membership_labels(
                    "acme",
                    "ci",
                    crate::labels::Component::ClientServiceAccount,
                ));
            }
            sa.metadata.annotations =
                owner_uid.map(|u| [(crate::labels::OWNER_UID.to_string(), u.to_string())].into());
            sa.metadata.owner_references = owner_ref.map(|u| {
                vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: u.into(),
                        ..Default::default()
                    },
                ]
            });
            sa
        };
        let whose = |sa: &ServiceAccount| whose(sa, "acme", "ci", "u1");
        assert_eq!(whose(&sa(true, Some("u1"), Some("u1"))), Whose::Ours);
        // One written before the annotation: its owner reference.
        assert_eq!(whose(&sa(true, None, Some("u1"))), Whose::Ours);
        // An earlier Membership's: another UID, or orphaned.
        assert_eq!(whose(&sa(true, Some("u0"), Some("u1"))), Whose::Earlier);
        assert_eq!(whose(&sa(true, None, Some("u0"))), Whose::Earlier);
        assert_eq!(whose(&sa(true, None, None)), Whose::Earlier);
        // Without Tenantry's labels, whatever else it says.
        assert_eq!(whose(&sa(false, Some("u1"), Some("u1"))), Whose::Foreign);
        assert_eq!(whose(&sa(false, None, None)), Whose::Foreign);
        // Another client's labels.
        assert_eq!(
            super::whose(&sa(true, Some("u1"), None), "acme", "cd", "u1"),
            Whose::Foreign
        );
    }

    #[test]
    fn a_plan_is_stable_once_carried_out() {
        // Whatever was asked, writing the verifier the plan gives and planning again
        // issues nothing more: a reconcile or a restart never issues a second secret.
        let t0: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let asks = [None, Some("1".to_string()), Some("2".to_string())];
        let graces = [
            None,
            Some("0".to_string()),
            Some("60".to_string()),
            Some("x".into()),
        ];
        for rotate_to in &asks {
            for revoke_to in &asks {
                for grace in &graces {
                    let req = Request {
                        rotate_to: rotate_to.clone(),
                        revoke_to: revoke_to.clone(),
                        grace: grace.clone(),
                    };
                    let live: BTreeMap<String, String> = [
                        (credentials::HASH.to_string(), "h0".to_string()),
                        (credentials::ROTATION.to_string(), "1".to_string()),
                    ]
                    .into();
                    let first = plan(&req, &live, t0);
                    let written = first.verifier_with(Some("h1".into()));
                    let again = plan(&req, &written, t0);
                    assert_eq!(again.issue, None, "{req:?}: {first:?} then {again:?}");
                    assert_eq!(again.verifier, written, "{req:?}");
                }
            }
        }
    }
}
