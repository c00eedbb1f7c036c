//! Who gets what: the pure rules that turn an Organization, its Memberships and its
//! Workspaces into grants. No API calls here; every reconciler uses these functions so
//! that they agree.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::Subject as RbacSubject;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};

use crate::api::{
    Membership, OrgRole, Organization, Subject, SubjectKind, Workspace, WorkspaceRole,
};
use crate::names;

/// Whether a Membership grants anything, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberState {
    Granted,
    /// Another, older Membership of the organization names the same subject.
    Duplicate {
        of: String,
    },
    /// The organization's `maxMembers` is reached by older Memberships.
    LimitReached {
        max: usize,
    },
    /// The organization is not verified yet and the operator requires verification:
    /// only Owner Memberships grant.
    NotVerified,
    /// The organization requires acceptance and the invited user has not accepted.
    InvitationPending,
    /// The membership ended at `at` ([`expiry`]): it grants nothing and holds no place
    /// (under `maxMembers`, or for its subject) until renewed.
    Expired {
        at: Timestamp,
    },
}

/// What decides whether a Membership grants, besides the Memberships themselves.
#[derive(Debug, Clone, Copy)]
pub struct Gates {
    /// The operator requires verification of organizations.
    pub require_verification: bool,
    /// The moment the states are for: a Membership expired at or before it grants nothing.
    pub now: Timestamp,
}

impl Default for Gates {
    /// No verification required, at this moment.
    fn default() -> Self {
        Self {
            require_verification: false,
            now: Timestamp::now(),
        }
    }
}

/// When Membership `m` of `org` expires: its `spec.expiresAt`; without one, its creation
/// plus the organization's `membership.expireAfterDays`, except for Owner Memberships (an
/// organization keeps its owners unless an expiry is set on one). `None`: never.
pub fn expiry(org: &Organization, m: &Membership) -> Option<Timestamp> {
    if let Some(at) = &m.spec.expires_at {
        return Some(at.0);
    }
    if m.spec.role == OrgRole::Owner {
        return None;
    }
    let days = org.spec.expire_after_days()?;
    let created = m.creation_timestamp()?.0;
    // From API data: a sum beyond the calendar is "never", not a panic.
    let secs = days.checked_mul(24 * 3600)?;
    created.checked_add(SignedDuration::from_secs(secs)).ok()
}

/// How many of `memberships` of `org` expire within `soon` after `now`, and how many have
/// expired (those being deleted left out).
pub fn expiry_counts(
    org: &Organization,
    memberships: &[&Membership],
    now: Timestamp,
    soon: std::time::Duration,
) -> (usize, usize) {
    let horizon = SignedDuration::try_from(soon)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX);
    let expiries: Vec<Timestamp> = expiries(org, memberships).collect();
    (
        expiries
            .iter()
            .filter(|at| **at > now && **at <= horizon)
            .count(),
        expiries.iter().filter(|at| **at <= now).count(),
    )
}

/// The first moment after `now` at which one of `memberships` of `org` expires: when
/// their states change without any object changing.
pub fn next_expiry(
    org: &Organization,
    memberships: &[&Membership],
    now: Timestamp,
) -> Option<Timestamp> {
    expiries(org, memberships).filter(|at| *at > now).min()
}

/// The expiries of `memberships` of `org` that have one (those being deleted left out).
fn expiries<'a>(
    org: &'a Organization,
    memberships: &'a [&'a Membership],
) -> impl Iterator<Item = Timestamp> + 'a {
    memberships
        .iter()
        .filter(|m| m.meta().deletion_timestamp.is_none())
        .filter_map(move |m| expiry(org, m))
}

/// Oldest first; within the same second (the API's resolution), by uid, then by name.
/// Durable facts only: a place is never decided by Tenantry's earlier status, which a
/// restore from backup or a status rewrite would not carry.
/// Sorts `items` oldest first (creation time, then uid and name: durable facts, so every
/// reconciler sees the same order).
pub fn oldest_first<K: ResourceExt>(items: &mut [&K]) {
    items.sort_by_key(|o| age_key(*o));
}

fn age_key<K: ResourceExt>(obj: &K) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        obj.creation_timestamp().map(|t| t.0),
        obj.uid().unwrap_or_default(),
        obj.name_any(),
    )
}

/// Whether a Membership's status says it is granted. Read only for a User Membership not
/// yet marked [`crate::labels::GRANDFATHERED`], in the moments between an Owner turning
/// acceptance on and Tenantry marking the members granted then ([`needs_grandfather_mark`]).
fn was_granted(m: &Membership) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready"
                && (c.reason == crate::api::reason::GRANTED
                    || c.reason == crate::api::reason::WORKSPACE_PENDING
                    || c.reason == crate::api::reason::BINDING)
        })
    })
}

/// Whether a Membership's invitation is accepted: by the invited user (`"true"`), or by
/// Tenantry for a member granted before acceptance was required ([`crate::labels::GRANDFATHERED`]).
fn accepted(m: &Membership) -> bool {
    matches!(
        m.annotations()
            .get(crate::labels::ACCEPTED)
            .map(String::as_str),
        Some("true") | Some(crate::labels::GRANDFATHERED)
    )
}

/// Whether Membership `m`, granted ([`MemberState::Granted`]) in `org`, is granted only
/// because its status says it was before `org` required acceptance: Tenantry then marks it
/// [`crate::labels::GRANDFATHERED`], a durable fact (metadata: a backup, a restore and a
/// status rewrite keep it), so that its place never again rests on Tenantry's own status.
/// Never over a value the invitee wrote.
pub fn needs_grandfather_mark(org: &Organization, m: &Membership) -> bool {
    org.spec.require_acceptance()
        && m.spec.subject.kind == SubjectKind::User
        && !m.annotations().contains_key(crate::labels::ACCEPTED)
}

/// The state of every Membership (by name) of one organization. Memberships being
/// deleted are left out.
pub fn member_states(
    org: &Organization,
    memberships: &[&Membership],
    gates: Gates,
) -> BTreeMap<String, MemberState> {
    let unverified = gates.require_verification && org.spec.verified != Some(true);
    let mut sorted: Vec<&Membership> = memberships
        .iter()
        .copied()
        .filter(|m| m.meta().deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|m| age_key(*m));
    let max = org.spec.max_members();
    let mut seen: BTreeMap<&Subject, String> = BTreeMap::new();
    let mut granted = 0usize;
    let mut states = BTreeMap::new();
    for m in sorted {
        let state = if let Some(at) = expiry(org, m).filter(|at| *at <= gates.now) {
            MemberState::Expired { at }
        } else if let Some(first) = seen.get(&m.spec.subject) {
            MemberState::Duplicate { of: first.clone() }
        } else if unverified {
            // Until verified, the organization's members are its spec.owners: no
            // Membership grants, whatever its role or subject (Owners, groups, clients).
            MemberState::NotVerified
        } else if org.spec.require_acceptance()
            && m.spec.subject.kind == SubjectKind::User
            && !accepted(m)
            // Turning acceptance on asks new invitees; members already granted stay.
            && !was_granted(m)
        {
            MemberState::InvitationPending
        } else {
            seen.insert(&m.spec.subject, m.name_any());
            match max {
                Some(max) if granted >= max => MemberState::LimitReached { max },
                _ => {
                    granted = granted.saturating_add(1);
                    MemberState::Granted
                }
            }
        };
        states.insert(m.name_any(), state);
    }
    states
}

/// The workspaces (by name) the organization may provision: the oldest `maxWorkspaces`.
/// Workspaces being deleted are left out.
pub fn provisionable_workspaces(org: &Organization, workspaces: &[&Workspace]) -> BTreeSet<String> {
    let mut sorted: Vec<&Workspace> = workspaces
        .iter()
        .copied()
        .filter(|w| w.meta().deletion_timestamp.is_none())
        .collect();
    sorted.sort_by_key(|w| age_key(*w));
    let max = org.spec.max_workspaces().unwrap_or(usize::MAX);
    sorted.into_iter().take(max).map(|w| w.name_any()).collect()
}

/// The first owner of `org` who already owns `limit` other organizations, if any (the
/// operator's organizations-per-owner limit). The limit decides whether a *new*
/// organization is provisioned, never takes a provisioned one back: `provisioned` (its
/// namespace exists and is its own, a fact of the cluster) exempts `org` and counts
/// against newcomers. So an Owner who names a stranger in `spec.owners` of an older
/// organization cannot stop the stranger's existing organizations from reconciling (and
/// withdrawing grants); among organizations waiting for a place, the oldest come first.
pub fn owner_limit_reached(
    org: &Organization,
    all: &[&Organization],
    limit: usize,
    provisioned: impl Fn(&Organization) -> bool,
) -> Option<Subject> {
    if provisioned(org) {
        return None;
    }
    let me = org.name_any();
    let my_age = age_key(org);
    org.spec
        .owners
        .iter()
        .find(|owner| {
            let before = all
                .iter()
                .filter(|o| o.meta().deletion_timestamp.is_none() && o.name_any() != me)
                .filter(|o| o.spec.owners.contains(owner))
                .filter(|o| provisioned(o) || age_key(**o) < my_age)
                .count();
            before >= limit
        })
        .cloned()
}

/// The RBAC subject for a Tenantry subject. A Client is its ServiceAccount in the
/// organization namespace.
pub fn rbac_subject(subject: &Subject, membership: &str, org_namespace: &str) -> RbacSubject {
    let rbac_group = Some(crate::rbac::API_GROUP.to_string());
    match subject.kind {
        SubjectKind::User => RbacSubject {
            kind: "User".into(),
            name: subject.name.clone(),
            api_group: rbac_group,
            namespace: None,
        },
        SubjectKind::Group => RbacSubject {
            kind: "Group".into(),
            name: subject.name.clone(),
            api_group: rbac_group,
            namespace: None,
        },
        SubjectKind::ServiceAccount => RbacSubject {
            kind: "ServiceAccount".into(),
            name: subject.name.clone(),
            api_group: Some(String::new()),
            namespace: subject.namespace.clone(),
        },
        SubjectKind::Client => RbacSubject {
            kind: "ServiceAccount".into(),
            name: names::client_service_account(membership),
            api_group: Some(String::new()),
            namespace: Some(org_namespace.to_string()),
        },
    }
}

/// One grant of a workspace role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkspaceGrantee {
    pub subject: Subject,
    pub role: WorkspaceRole,
    /// The Membership granting it; `None` for the organization's owners.
    pub membership: Option<String>,
}

/// The Membership whose personal workspace `ws` is, while it exists (not being deleted).
pub fn personal_member<'a>(
    ws: &Workspace,
    memberships: &[&'a Membership],
) -> Option<&'a Membership> {
    let uid = ws.labels().get(crate::labels::PERSONAL_FOR)?;
    memberships
        .iter()
        .copied()
        .find(|m| m.uid().as_ref() == Some(uid) && m.meta().deletion_timestamp.is_none())
}

/// Everyone who reaches workspace `ws`, each with their highest workspace role. A
/// personal workspace is its member's alone (as Admin, while granted); once its member
/// has left (a kept one), it is an ordinary workspace of the organization.
pub fn workspace_grantees(
    org: &Organization,
    ws: &Workspace,
    memberships: &[&Membership],
    states: &BTreeMap<String, MemberState>,
) -> Vec<WorkspaceGrantee> {
    if let Some(m) = personal_member(ws, memberships) {
        let granted = states.get(&m.name_any()) == Some(&MemberState::Granted);
        return granted
            .then(|| WorkspaceGrantee {
                subject: m.spec.subject.clone(),
                role: WorkspaceRole::Admin,
                membership: Some(m.name_any()),
            })
            .into_iter()
            .collect();
    }
    let ws = ws.name_any();
    let ws = ws.as_str();
    // WorkspaceRole orders Admin < Editor < Viewer: the smallest is the highest.
    let mut best: BTreeMap<Subject, (WorkspaceRole, Option<String>)> = BTreeMap::new();
    let mut offer = |subject: &Subject, role: WorkspaceRole, membership: Option<String>| {
        let entry = best
            .entry(subject.clone())
            .or_insert((role, membership.clone()));
        if role < entry.0 {
            *entry = (role, membership);
        }
    };
    for owner in &org.spec.owners {
        offer(owner, WorkspaceRole::Admin, None);
    }
    for m in memberships {
        if states.get(&m.name_any()) != Some(&MemberState::Granted) {
            continue;
        }
        let role = if m.spec.role.reaches_all_workspaces() {
            Some(WorkspaceRole::Admin)
        } else {
            m.spec
                .workspaces
                .iter()
                .filter(|g| g.name == ws)
                .map(|g| g.role)
                .min()
        };
        if let Some(role) = role {
            offer(&m.spec.subject, role, Some(m.name_any()));
        }
    }
    best.into_iter()
        .map(|(subject, (role, membership))| WorkspaceGrantee {
            subject,
            role,
            membership,
        })
        .collect()
}

/// Everyone holding each organization role: the owners in the spec and the granted
/// Memberships. Keyed by role; each list is sorted and free of duplicates.
pub fn org_role_holders(
    org: &Organization,
    memberships: &[&Membership],
    states: &BTreeMap<String, MemberState>,
) -> BTreeMap<OrgRole, Vec<(Subject, Option<String>)>> {
    let mut holders: BTreeMap<OrgRole, BTreeSet<(Subject, Option<String>)>> = BTreeMap::new();
    for owner in &org.spec.owners {
        holders
            .entry(OrgRole::Owner)
            .or_default()
            .insert((owner.clone(), None));
    }
    for m in memberships {
        if states.get(&m.name_any()) == Some(&MemberState::Granted) {
            holders
                .entry(m.spec.role)
                .or_default()
                .insert((m.spec.subject.clone(), Some(m.name_any())));
        }
    }
    holders
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

/// The credentials Secrets an organization Admin may read: those of machine clients whose
/// organization role is not Owner. An Admin who could read an Owner client's secret
/// could exchange it for an Owner token; Owners read every client's. Only Secrets that
/// Tenantry made for them (`made`, by name): a Secret of that name that someone else made
/// (a platform's, in a namespace declared for the organization) is not the client's, and
/// an Admin who creates a Membership must not gain read access to it.
pub fn admin_readable_credentials(
    memberships: &[&Membership],
    made: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut names: Vec<String> = memberships
        .iter()
        .filter(|m| m.spec.subject.kind == SubjectKind::Client && m.spec.role != OrgRole::Owner)
        .map(|m| names::client_secret_name(&m.name_any()))
        .filter(|name| made(name))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Limits, MembershipSpec, OrganizationSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn org(max_members: Option<i32>, max_workspaces: Option<i32>) -> Organization {
        Organization::new(
            "acme",
            OrganizationSpec {
                display_name: "Acme".into(),
                owners: vec![Subject::user("root@acme.example")],
                limits: Some(Limits {
                    max_members,
                    max_workspaces,
                    ..Default::default()
                }),
                workspace_defaults: None,
                default_workspace: None,
                deletion_policy: None,
                ..Default::default()
            },
        )
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap())
    }

    fn member(
        name: &str,
        subject: Subject,
        role: OrgRole,
        ws: &[(&str, WorkspaceRole)],
        age: i64,
    ) -> Membership {
        let mut m = Membership::new(name, MembershipSpec::new(subject, role, ws));
        m.metadata.creation_timestamp = Some(at(age));
        m
    }

    fn workspace(name: &str, age: i64) -> Workspace {
        let mut w = Workspace::new(name, Default::default());
        w.metadata.creation_timestamp = Some(at(age));
        w
    }

    #[test]
    fn admins_read_no_owner_clients_credentials() {
        let owner = member(
            "root-ci",
            Subject::client("root-ci"),
            OrgRole::Owner,
            &[],
            1,
        );
        let admin = member("ci", Subject::client("ci"), OrgRole::Admin, &[], 2);
        let viewer = member("ro", Subject::client("ro"), OrgRole::Viewer, &[], 3);
        let person = member("ann", Subject::user("ann"), OrgRole::Viewer, &[], 4);
        let all = [&owner, &admin, &viewer, &person];
        assert_eq!(
            admin_readable_credentials(&all, |_| true),
            vec!["ci-credentials".to_string(), "ro-credentials".to_string()]
        );
        assert!(admin_readable_credentials(&[&owner], |_| true).is_empty());
        // A Secret Tenantry did not make (or has not made yet) is nobody's to read.
        assert_eq!(
            admin_readable_credentials(&all, |name| name != "ci-credentials"),
            vec!["ro-credentials".to_string()]
        );
    }

    #[test]
    fn the_newer_duplicate_grants_nothing() {
        let a = member("a", Subject::user("u"), OrgRole::Member, &[], 1);
        let b = member("b", Subject::user("u"), OrgRole::Admin, &[], 2);
        let states = member_states(&org(None, None), &[&b, &a], Gates::default());
        assert_eq!(states["a"], MemberState::Granted);
        assert_eq!(states["b"], MemberState::Duplicate { of: "a".into() });
    }

    #[test]
    fn members_beyond_the_limit_are_not_granted_oldest_win() {
        let ms: Vec<Membership> = (0..4)
            .map(|i| {
                member(
                    &format!("m{i}"),
                    Subject::user(&format!("u{i}")),
                    OrgRole::Member,
                    &[],
                    10 - i,
                )
            })
            .collect();
        let refs: Vec<&Membership> = ms.iter().collect();
        let states = member_states(&org(Some(2), None), &refs, Gates::default());
        assert_eq!(states["m3"], MemberState::Granted);
        assert_eq!(states["m2"], MemberState::Granted);
        assert_eq!(states["m1"], MemberState::LimitReached { max: 2 });
        assert_eq!(states["m0"], MemberState::LimitReached { max: 2 });
    }

    #[test]
    fn places_go_by_creation_then_uid_never_by_status() {
        // Two Memberships created in the same second, one limit place: the smaller uid
        // holds it, whatever the statuses say (a restore from backup carries none; a
        // status says what Tenantry last wrote, not who came first).
        let granted = |name: &str, uid: &str, reason: &'static str| {
            let mut m = member(name, Subject::user(name), OrgRole::Member, &[], 5);
            m.metadata.uid = Some(uid.into());
            m.status = Some(crate::api::MembershipStatus {
                conditions: crate::status::conditions(
                    &[],
                    &crate::status::Outcome::ready(reason, "."),
                    Some(1),
                ),
                ..Default::default()
            });
            m
        };
        let first = granted("zed", "0001", crate::api::reason::MEMBER_LIMIT_REACHED);
        let second = granted("amy", "0002", crate::api::reason::GRANTED);
        for order in [[&first, &second], [&second, &first]] {
            let states = member_states(&org(Some(1), None), &order, Gates::default());
            assert_eq!(states["zed"], MemberState::Granted);
            assert_eq!(states["amy"], MemberState::LimitReached { max: 1 });
        }
        // Workspaces: the same rule, whatever their status says of a namespace.
        let mut a = workspace("b-ws", 5);
        a.metadata.uid = Some("0001".into());
        let mut b = workspace("a-ws", 5);
        b.metadata.uid = Some("0002".into());
        b.status = Some(crate::api::WorkspaceStatus {
            namespace: Some("ws-a".into()),
            ..Default::default()
        });
        let places = provisionable_workspaces(&org(None, Some(1)), &[&b, &a]);
        assert_eq!(
            places.into_iter().collect::<Vec<_>>(),
            vec!["b-ws".to_string()]
        );
    }

    #[test]
    fn duplicates_do_not_use_up_the_limit() {
        let a = member("a", Subject::user("u"), OrgRole::Member, &[], 1);
        let dup = member("dup", Subject::user("u"), OrgRole::Member, &[], 2);
        let c = member("c", Subject::group("g"), OrgRole::Member, &[], 3);
        let states = member_states(&org(Some(2), None), &[&a, &dup, &c], Gates::default());
        assert_eq!(states["c"], MemberState::Granted);
    }

    #[test]
    fn oldest_workspaces_are_provisioned_first() {
        let ws = [
            workspace("new", 3),
            workspace("old", 1),
            workspace("mid", 2),
        ];
        let refs: Vec<&Workspace> = ws.iter().collect();
        let p = provisionable_workspaces(&org(None, Some(2)), &refs);
        assert_eq!(p, ["mid".to_string(), "old".to_string()].into());
        assert_eq!(provisionable_workspaces(&org(None, None), &refs).len(), 3);
        assert!(provisionable_workspaces(&org(None, Some(0)), &refs).is_empty());
    }

    #[test]
    fn admins_reach_every_workspace_others_only_theirs() {
        let admin = member("admin", Subject::user("a"), OrgRole::Manager, &[], 1);
        let dev = member(
            "dev",
            Subject::user("d"),
            OrgRole::Member,
            &[("prod", WorkspaceRole::Editor)],
            2,
        );
        let viewer = member(
            "v",
            Subject::group("auditors"),
            OrgRole::Viewer,
            &[("dev", WorkspaceRole::Viewer)],
            3,
        );
        let all = [&admin, &dev, &viewer];
        let o = org(None, None);
        let states = member_states(&o, &all, Gates::default());
        let prod = workspace_grantees(&o, &workspace("prod", 0), &all, &states);
        let roles: Vec<(String, WorkspaceRole)> = prod
            .iter()
            .map(|g| (g.subject.name.clone(), g.role))
            .collect();
        assert_eq!(
            roles,
            vec![
                ("a".into(), WorkspaceRole::Admin),
                ("d".into(), WorkspaceRole::Editor),
                ("root@acme.example".into(), WorkspaceRole::Admin),
            ]
        );
        let dev_ws = workspace_grantees(&o, &workspace("dev", 0), &all, &states);
        assert!(
            dev_ws
                .iter()
                .any(|g| g.subject.name == "auditors" && g.role == WorkspaceRole::Viewer)
        );
        assert!(!dev_ws.iter().any(|g| g.subject.name == "d"));
    }

    #[test]
    fn a_subject_gets_its_highest_role_once() {
        let m = member(
            "m",
            Subject::user("root@acme.example"),
            OrgRole::Member,
            &[("prod", WorkspaceRole::Viewer)],
            1,
        );
        let o = org(None, None);
        let states = member_states(&o, &[&m], Gates::default());
        let g = workspace_grantees(&o, &workspace("prod", 0), &[&m], &states);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].role, WorkspaceRole::Admin);
        assert_eq!(g[0].membership, None);
    }

    #[test]
    fn ungranted_members_hold_no_role() {
        let a = member("a", Subject::user("u"), OrgRole::Admin, &[], 1);
        let b = member("b", Subject::user("u"), OrgRole::Admin, &[], 2);
        let o = org(None, None);
        let states = member_states(&o, &[&a, &b], Gates::default());
        let holders = org_role_holders(&o, &[&a, &b], &states);
        assert_eq!(
            holders[&OrgRole::Admin],
            vec![(Subject::user("u"), Some("a".to_string()))]
        );
        assert_eq!(holders[&OrgRole::Owner].len(), 1);
    }

    #[test]
    fn unverified_organizations_grant_only_owners() {
        let owner = member("o", Subject::user("o"), OrgRole::Owner, &[], 1);
        let dev = member("d", Subject::user("d"), OrgRole::Member, &[], 2);
        let gates = Gates {
            require_verification: true,
            ..Default::default()
        };
        let client = member("c", Subject::client("c"), OrgRole::Viewer, &[], 3);
        let everyone = member("e", Subject::group("devs"), OrgRole::Viewer, &[], 4);
        let mut o = org(None, None);
        let states = member_states(&o, &[&owner, &dev, &client, &everyone], gates);
        // Only spec.owners hold the organization until it is verified: no Membership
        // grants, an Owner one included (it would add an owner beyond spec.owners).
        for m in ["o", "d", "c", "e"] {
            assert_eq!(states[m], MemberState::NotVerified, "{m}");
        }
        let holders = org_role_holders(&o, &[&owner, &dev], &states);
        assert_eq!(
            holders[&OrgRole::Owner],
            vec![(Subject::user("root@acme.example"), None)]
        );
        o.spec.verified = Some(true);
        assert_eq!(
            member_states(&o, &[&owner, &dev], gates)["d"],
            MemberState::Granted
        );
        assert_eq!(
            member_states(&org(None, None), &[&dev], Gates::default())["d"],
            MemberState::Granted
        );
    }

    #[test]
    fn invitations_wait_for_the_user() {
        let mut o = org(None, None);
        o.spec.membership = Some(crate::api::MembershipPolicy {
            require_acceptance: true,
            ..Default::default()
        });
        let mut user = member("u", Subject::user("u"), OrgRole::Member, &[], 1);
        let group = member("g", Subject::group("g"), OrgRole::Member, &[], 2);
        let states = member_states(&o, &[&user, &group], Gates::default());
        assert_eq!(states["u"], MemberState::InvitationPending);
        assert_eq!(states["g"], MemberState::Granted, "only Users are invited");
        // A member granted before acceptance was required stays granted.
        let mut old = member("old", Subject::user("old"), OrgRole::Owner, &[], 0);
        old.status = Some(crate::api::MembershipStatus {
            conditions: crate::status::conditions(
                &[],
                &crate::status::Outcome::ready(crate::api::reason::GRANTED, "granted"),
                None,
            ),
            ..Default::default()
        });
        assert_eq!(
            member_states(&o, &[&old], Gates::default())["old"],
            MemberState::Granted
        );
        assert!(
            needs_grandfather_mark(&o, &old),
            "granted by its status only"
        );
        // Once marked, its place rests on the mark: a status rewrite or a restore without
        // status changes nothing.
        old.metadata.annotations = Some(
            [(
                crate::labels::ACCEPTED.to_string(),
                crate::labels::GRANDFATHERED.to_string(),
            )]
            .into(),
        );
        old.status = None;
        assert_eq!(
            member_states(&o, &[&old], Gates::default())["old"],
            MemberState::Granted
        );
        assert!(!needs_grandfather_mark(&o, &old));
        // Any other value is the invitee's, and no acceptance.
        let mut declined = user.clone();
        declined.metadata.annotations =
            Some([(crate::labels::ACCEPTED.to_string(), "no".to_string())].into());
        assert_eq!(
            member_states(&o, &[&declined], Gates::default())["u"],
            MemberState::InvitationPending
        );
        assert!(!needs_grandfather_mark(&o, &declined));
        assert!(
            !needs_grandfather_mark(&org(None, None), &user),
            "no acceptance required, no mark"
        );
        user.metadata.annotations =
            Some([(crate::labels::ACCEPTED.to_string(), "true".to_string())].into());
        assert_eq!(
            member_states(&o, &[&user], Gates::default())["u"],
            MemberState::Granted
        );
    }

    #[test]
    fn a_personal_workspace_is_its_members_alone() {
        let o = org(None, None);
        let mut pat = member("pat", Subject::user("pat"), OrgRole::Member, &[], 1);
        pat.metadata.uid = Some("uid-pat".into());
        let admin = member("adm", Subject::user("adm"), OrgRole::Admin, &[], 2);
        let all = [&pat, &admin];
        let states = member_states(&o, &all, Gates::default());
        let mut ws = workspace("personal-pat", 3);
        ws.metadata.labels = Some(
            [(
                crate::labels::PERSONAL_FOR.to_string(),
                "uid-pat".to_string(),
            )]
            .into(),
        );
        let g = workspace_grantees(&o, &ws, &all, &states);
        assert_eq!(g.len(), 1, "neither the owners nor the Admin: {g:?}");
        assert_eq!(
            (
                g[0].subject.name.as_str(),
                g[0].role,
                g[0].membership.as_deref()
            ),
            ("pat", WorkspaceRole::Admin, Some("pat"))
        );
        // While its member grants nothing, nobody reaches it.
        let mut expired = pat.clone();
        expired.spec.expires_at = Some(at(0));
        let states = member_states(&o, &[&expired, &admin], Gates::default());
        assert!(workspace_grantees(&o, &ws, &[&expired, &admin], &states).is_empty());
        // Its member gone (a kept workspace): an ordinary workspace again.
        let states = member_states(&o, &[&admin], Gates::default());
        let g = workspace_grantees(&o, &ws, &[&admin], &states);
        assert_eq!(g.len(), 2, "the owner and the Admin: {g:?}");
    }

    #[test]
    fn memberships_expire_and_free_their_place() {
        let mut o = org(Some(1), None);
        let gates = |now: i64| Gates {
            now: at(now).0,
            ..Default::default()
        };
        let mut old = member("old", Subject::user("u"), OrgRole::Member, &[], 1);
        old.spec.expires_at = Some(at(100));
        let newer = member("new", Subject::user("u"), OrgRole::Member, &[], 2);
        let other = member("other", Subject::user("v"), OrgRole::Member, &[], 3);
        let all = [&old, &newer, &other];
        let before = member_states(&o, &all, gates(99));
        assert_eq!(before["old"], MemberState::Granted);
        assert_eq!(before["new"], MemberState::Duplicate { of: "old".into() });
        assert_eq!(before["other"], MemberState::LimitReached { max: 1 });
        assert_eq!(next_expiry(&o, &all, at(99).0), Some(at(100).0));
        // At its expiry (not a second later) it grants nothing and holds no place: the
        // newer Membership of the same subject takes both.
        let after = member_states(&o, &all, gates(100));
        assert_eq!(after["old"], MemberState::Expired { at: at(100).0 });
        assert_eq!(after["new"], MemberState::Granted);
        assert_eq!(after["other"], MemberState::LimitReached { max: 1 });
        assert_eq!(next_expiry(&o, &all, at(100).0), None);
        // The organization's default: after creation, not for Owners, not over a
        // Membership's own expiresAt.
        o.spec.membership = Some(crate::api::MembershipPolicy {
            expire_after_days: Some(2),
            ..Default::default()
        });
        let day = 24 * 3600;
        assert_eq!(expiry(&o, &newer), Some(at(2 + 2 * day).0));
        assert_eq!(expiry(&o, &old), Some(at(100).0));
        let owner = member("own", Subject::user("w"), OrgRole::Owner, &[], 1);
        assert_eq!(expiry(&o, &owner), None);
        assert_eq!(
            expiry_counts(
                &o,
                &all,
                at(101).0,
                std::time::Duration::from_secs(7 * 24 * 3600)
            ),
            (2, 1),
            "two within a week, one expired"
        );
        // From API data: a default beyond the calendar is never, not a panic.
        o.spec.membership = Some(crate::api::MembershipPolicy {
            expire_after_days: Some(i32::MAX),
            ..Default::default()
        });
        assert_eq!(expiry(&o, &newer), None);
        let mut far = newer.clone();
        far.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::MAX));
        assert_eq!(expiry(&o, &far), None);
    }

    #[test]
    fn organizations_over_the_owner_limit_wait() {
        let mut a = org(None, None);
        a.metadata.name = Some("a".into());
        a.metadata.creation_timestamp = Some(at(1));
        let mut b = a.clone();
        b.metadata.name = Some("b".into());
        b.metadata.creation_timestamp = Some(at(2));
        let mut c = b.clone();
        c.metadata.name = Some("c".into());
        c.spec.owners = vec![Subject::user("someone-else")];
        let none = |_: &Organization| false;
        assert_eq!(owner_limit_reached(&a, &[&a, &b, &c], 1, none), None);
        assert_eq!(
            owner_limit_reached(&b, &[&a, &b, &c], 1, none),
            Some(Subject::user("root@acme.example"))
        );
        assert_eq!(owner_limit_reached(&c, &[&a, &b, &c], 1, none), None);
        assert_eq!(owner_limit_reached(&b, &[&a, &b, &c], 2, none), None);
    }

    /// Naming a stranger owner of an older organization does not take the stranger's
    /// provisioned organization back; it does count against the stranger's next one.
    #[test]
    fn the_owner_limit_never_takes_a_provisioned_organization_back() {
        let mut attackers = org(None, None);
        attackers.metadata.name = Some("attackers".into());
        attackers.metadata.creation_timestamp = Some(at(1));
        attackers.spec.owners = vec![Subject::user("eve"), Subject::user("sam")];
        let mut sams = attackers.clone();
        sams.metadata.name = Some("sams".into());
        sams.metadata.creation_timestamp = Some(at(2));
        sams.spec.owners = vec![Subject::user("sam")];
        let mut next = sams.clone();
        next.metadata.name = Some("next".into());
        next.metadata.creation_timestamp = Some(at(3));
        let all = [&attackers, &sams, &next];
        let provisioned = |o: &Organization| o.name_any() != "next";
        assert_eq!(owner_limit_reached(&sams, &all, 1, provisioned), None);
        assert_eq!(owner_limit_reached(&attackers, &all, 1, provisioned), None);
        assert_eq!(
            owner_limit_reached(&next, &all, 1, provisioned),
            Some(Subject::user("sam"))
        );
        // A newer organization that got provisioned first is counted too.
        let only_next = |o: &Organization| o.name_any() == "next";
        assert_eq!(
            owner_limit_reached(&sams, &[&sams, &next], 1, only_next),
            Some(Subject::user("sam"))
        );
    }

    #[test]
    fn clients_are_their_service_account() {
        let s = rbac_subject(&Subject::client("ci"), "ci-bot", "org-acme");
        assert_eq!(s.kind, "ServiceAccount");
        assert_eq!(s.name, "ci-bot-client");
        assert_eq!(s.namespace.as_deref(), Some("org-acme"));
    }
}
