//! What happens to a Membership: whether it grants (duplicates and `maxMembers` are
//! decided here, oldest first), a Client's ServiceAccount and credentials Secret, and the
//! status listing the workspaces it reaches.
//!
//! The bindings themselves are written by the Organization (organization roles) and
//! Workspace (workspace roles) reconcilers, which watch Memberships; so removing a
//! Membership removes every binding without a finalizer. A Client's ServiceAccount and
//! Secret carry an owner reference to the Membership and go with it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::{Change, Context, Feeds, feed, log_result, memberships_of, requeue_on_error};
use crate::api::{
    AccessState, ClientStatus, Membership, MembershipStatus, Organization, OrganizationSpec,
    PersonalWorkspaces, Subject, SubjectKind, WhenMemberLeaves, Workspace, WorkspaceAccess,
    WorkspaceSpec, reason,
};
use crate::build::client;
use crate::error::{Context as _, Error, Result};
use crate::grants::{self, MemberState};
use crate::labels::Component;
use crate::provision::{self, ChangedBy};
use crate::status::{self, Outcome};
use crate::view::OrgView;
use crate::{credentials, labels, names};

/// Whether a Membership's change can change the state of its siblings: deleted or being
/// deleted (a place under `maxMembers`, or a subject, is freed), a changed spec (subject,
/// role) or annotations (an accepted invitation). Not a new Membership: newer ones never
/// displace older ones. Not a status write: those were most of all reconciles, n² for an
/// organization of n members.
fn sibling_change(change: &Change<'_, Membership>) -> bool {
    match change {
        Change::Listed(_) | Change::Deleted(_) => true,
        Change::Applied { old: None, .. } => false,
        Change::Applied {
            old: Some(old),
            new,
        } => {
            let (o, n) = (old.meta(), new.meta());
            o.generation != n.generation
                || o.annotations != n.annotations
                || o.deletion_timestamp != n.deletion_timestamp
        }
    }
}

/// Whether a workspace's change can change what a Membership is granted: it appeared, went
/// away or is going away, or became ready or stopped being ready. Not its spec, finalizer or
/// status details.
fn workspace_came_or_went(change: &Change<'_, Workspace>) -> bool {
    match change {
        Change::Listed(_) | Change::Deleted(_) | Change::Applied { old: None, .. } => true,
        Change::Applied {
            old: Some(old),
            new,
        } => {
            old.meta().deletion_timestamp.is_some() != new.meta().deletion_timestamp.is_some()
                || workspace_ready(old) != workspace_ready(new)
        }
    }
}

/// Whether a workspace's condition `type_` is True: `Ready`, its namespace is
/// provisioned; `Stalled`, it will not be until someone acts (a conflict, a limit).
fn workspace_is(w: &Workspace, type_: &str) -> bool {
    w.status
        .as_ref()
        .is_some_and(|s| status::is_true(&s.conditions, type_))
}

fn workspace_ready(w: &Workspace) -> bool {
    workspace_is(w, status::READY)
}

/// The Memberships of binding `b`'s organization that it names and that are not Ready
/// yet: those that may wait for it ([`Binds`]). Nothing for the members already Ready,
/// which every member's arrival would otherwise wake (the Admins' bindings list them all).
fn named_by<K: Binding + Resource>(stores: &super::Stores, b: &K) -> Vec<ObjectRef<Membership>> {
    let Some(org) = b.labels().get(labels::ORGANIZATION) else {
        return Vec::new();
    };
    let ns = names::org_namespace(org);
    let waiting: Vec<_> = stores
        .memberships_in(&ns)
        .into_iter()
        .filter(|m| {
            !m.status
                .as_ref()
                .is_some_and(|s| status::is_true(&s.conditions, status::READY))
        })
        .collect();
    if waiting.is_empty() {
        return Vec::new();
    }
    waiting
        .iter()
        .filter(|m| b.names(&grants::rbac_subject(&m.spec.subject, &m.name_any(), &ns)))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// Runs the Membership reconciler until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    feeds: &Feeds,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (s1, s2, s3) = (ctx.stores.clone(), ctx.stores.clone(), ctx.stores.clone());
    let (s4, s5) = (ctx.stores.clone(), ctx.stores.clone());
    feed::controller(ctx.stores.memberships.clone(), &feeds.memberships)
        .reconcile_on(feeds.service_accounts.triggers(feed::any, feed::owners))
        .reconcile_on(feeds.secrets.triggers(feed::any, feed::owners))
        // Siblings decide duplicates and limits; workspaces decide what is granted.
        .reconcile_on(
            feeds
                .memberships
                .triggers(sibling_change, move |m: &Membership| {
                    memberships_of(&s1, &m.namespace().unwrap_or_default())
                }),
        )
        .reconcile_on(
            feeds
                .workspaces
                .triggers(workspace_came_or_went, move |w: &Workspace| {
                    memberships_of(&s2, &w.namespace().unwrap_or_default())
                }),
        )
        .reconcile_on(
            feeds
                .organizations
                .triggers(feed::meaningful, move |o: &Organization| {
                    memberships_of(&s3, &names::org_namespace(&o.name_any()))
                }),
        )
        // A binding written: the members it names that wait for it (`Binds`).
        .reconcile_on(
            feeds
                .role_bindings
                .triggers(feed::applied, move |b: &RoleBinding| named_by(&s4, b)),
        )
        .reconcile_on(
            feeds
                .cluster_role_bindings
                .triggers(feed::applied, move |b: &ClusterRoleBinding| {
                    named_by(&s5, b)
                }),
        )
        .reconcile_on(super::resync(
            ctx.stores.memberships.clone(),
            ctx.settings.resync(),
        ))
        .gated(&ctx.gates.memberships, ctx.settings.concurrency)
        .with_config(ctx.settings.controller_config())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |_, e, _| requeue_on_error(e), ctx.clone())
        .for_each(|r| {
            log_result(&ctx, "Membership", r);
            futures::future::ready(())
        })
        .await;
}

/// What a reconcile found out.
#[derive(Default)]
struct Found {
    /// How long after its creation the first status may wait ([`first_status_hold`]):
    /// while every workspace still pending exists and is being provisioned (none is
    /// missing, going away or stalled), a wait that ends by itself.
    first_status_grace: Option<Duration>,
    workspaces: Vec<WorkspaceAccess>,
    all_workspaces: bool,
    client: Option<Box<ClientStatus>>,
    personal_workspace: Option<String>,
}

#[instrument(skip_all, fields(membership = %m.name_any(), namespace = ?m.namespace()))]
async fn reconcile(m: Arc<Membership>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = crate::metrics::timer("Membership");
    if m.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = m
        .namespace()
        .ok_or_else(|| Error::MissingKey(format!("Membership {}", m.name_any())))?;
    let mut found = Found::default();
    let mut expires_at = None;
    let outcome = match ctx.view(&ns) {
        None => Outcome::progressing(
            reason::ORGANIZATION_NOT_FOUND,
            format!(
                "no Organization owns namespace {ns}; Memberships live in their organization's namespace"
            ),
        ),
        Some(view) => {
            let org = &view.org;
            let state = view.states.get(&m.name_any());
            expires_at = grants::expiry(org, &m);
            // The invitation's Role and RoleBinding exist while, and only while, the
            // invitation is pending: every other state converges them away.
            let pending = state == Some(&MemberState::InvitationPending);
            invitations(org, &m, &ns, &ctx, pending).await?;
            match state {
                Some(MemberState::Duplicate { of }) => Outcome::stalled(
                    reason::DUPLICATE_SUBJECT,
                    format!(
                        "{} is already a member through Membership {of}; this one grants nothing",
                        m.spec.subject
                    ),
                ),
                Some(MemberState::LimitReached { max }) => Outcome::stalled(
                    reason::MEMBER_LIMIT_REACHED,
                    format!(
                        "the organization allows {max} members (limits.maxMembers); older memberships come first"
                    ),
                ),
                Some(MemberState::NotVerified) => Outcome::progressing(
                    reason::ORGANIZATION_NOT_VERIFIED,
                    "the organization is not verified yet: until a platform admin sets spec.verified, only owners are members",
                ),
                Some(MemberState::InvitationPending) => Outcome::progressing(
                    reason::INVITATION_PENDING,
                    format!(
                        "waiting for {} to accept: kubectl annotate membership {} -n {ns} {}=true",
                        m.spec.subject.name,
                        m.name_any(),
                        labels::ACCEPTED
                    ),
                ),
                Some(MemberState::Expired { at }) => Outcome::stalled(
                    reason::EXPIRED,
                    format!(
                        "expired at {at}: it grants nothing; to renew, set spec.expiresAt to a later time"
                    ),
                ),
                Some(MemberState::Granted) => {
                    if grants::needs_grandfather_mark(org, &m) {
                        mark_grandfathered(&m, &ns, &ctx).await?;
                    }
                    let outcome = granted(&view, &m, &ns, &ctx, &mut found).await?;
                    if ctx.settings.personal_organizations
                        && m.spec.subject.kind == SubjectKind::User
                        && !m.spec.subject.name.starts_with("system:")
                    {
                        personal_organization(&m.spec.subject.name, &ctx).await?;
                    }
                    match org.spec.personal_workspaces() {
                        Some(policy) if m.spec.subject.kind == SubjectKind::User => {
                            match personal_workspace(org, &m, &ns, &ctx, policy).await? {
                                Ok(name) => {
                                    found.personal_workspace = Some(name);
                                    outcome
                                }
                                Err(why) => outcome.noted(&format!("; {why}")),
                            }
                        }
                        _ => outcome,
                    }
                }
                None => Outcome::progressing(reason::PROGRESSING, "waiting for the cache"),
            }
        }
    };

    let old = m.status.clone().unwrap_or_default();
    let new = MembershipStatus {
        workspaces: found.workspaces,
        workspaces_digest: None,
        all_workspaces: found.all_workspaces,
        client: found.client,
        personal_workspace: found.personal_workspace,
        expires_at: expires_at.map(Time),
        observed_generation: m.meta().generation,
        conditions: status::conditions(&old.conditions, &outcome, m.meta().generation),
    };
    // The first status of a Membership whose workspaces are being provisioned waits a
    // little ([`first_status_hold`]): most turn Ready within seconds, and their one status
    // write is then Ready. The workspace turning Ready brings this Membership back.
    let first_hold = first_status_hold(
        m.meta().creation_timestamp.as_ref().map(|t| t.0),
        k8s_openapi::jiff::Timestamp::now(),
        found
            .first_status_grace
            .filter(|_| old.conditions.is_empty()),
    );
    let held = if first_hold.is_some() {
        first_hold
    } else if !old.same_workspaces(&new.workspaces)
        || old.all_workspaces != new.all_workspaces
        || old.client != new.client
        || old.expires_at != new.expires_at
        || old.personal_workspace != new.personal_workspace
        || old.observed_generation != new.observed_generation
        || !status::same_conditions(&old.conditions, &new.conditions)
    {
        ctx.write_status(
            &Api::<Membership>::namespaced(ctx.client.clone(), &ns),
            m.as_ref(),
            &old.conditions,
            &new.conditions,
            &new,
        )
        .await?
    } else {
        None
    };
    // Back when it expires: its grants end then, with no object changing.
    let at_expiry =
        expires_at.and_then(|at| crate::view::until(at, k8s_openapi::jiff::Timestamp::now()));
    Ok(ctx
        .conclude(
            m.as_ref(),
            &old.conditions,
            &outcome,
            Duration::from_secs(10),
            super::soonest(held, at_expiry),
        )
        .await)
}

/// User `user`'s own organization (`--personal-organizations`): created once, the user its
/// only owner, and from then on theirs: never changed or deleted by Tenantry. An
/// organization of that name that exists (the user's, or anyone's) is left alone.
async fn personal_organization(user: &str, ctx: &Context) -> Result<()> {
    let name = names::personal_organization(user);
    if ctx
        .stores
        .organizations
        .get(&ObjectRef::new(&name))
        .is_some()
    {
        return Ok(());
    }
    let mut org = Organization::new(
        &name,
        OrganizationSpec {
            display_name: user.chars().take(256).collect(),
            owners: vec![Subject::user(user)],
            ..Default::default()
        },
    );
    org.metadata.labels = Some(provision::org_labels(
        &name,
        Component::PersonalOrganization,
    ));
    org.metadata.annotations = Some([(labels::PERSONAL_USER.to_string(), user.to_string())].into());
    if provision::create(&Api::<Organization>::all(ctx.client.clone()), &org).await? {
        info!(organization = %name, user = %names::printable(user, 256), "created a personal organization");
    }
    Ok(())
}

/// Member `m`'s personal workspace (`spec.membership.personalWorkspaces`), created once the
/// Membership grants. Its owner reference to the Membership follows the organization's
/// `whenMemberLeaves` as it is now (present: the workspace goes with the member; absent:
/// it stays, as an ordinary workspace), so the policy that counts is the one in force when
/// the member leaves. `Ok(Err(why))` when another Workspace has its name.
async fn personal_workspace(
    org: &Organization,
    m: &Membership,
    ns: &str,
    ctx: &Context,
    policy: &PersonalWorkspaces,
) -> Result<std::result::Result<String, String>> {
    let name = names::personal_workspace(&m.name_any());
    let uid = m
        .uid()
        .ok_or_else(|| Error::MissingKey(format!("Membership {}", m.name_any())))?;
    let owner = if policy.when_member_leaves == WhenMemberLeaves::Delete {
        provision::owner_ref(m, false)
    } else {
        None
    };
    let api = Api::<Workspace>::namespaced(ctx.client.clone(), ns);
    match ctx.stores.workspaces.get(&ObjectRef::new(&name).within(ns)) {
        Some(ws) if ws.labels().get(labels::PERSONAL_FOR) != Some(&uid) => Ok(Err(format!(
            "no personal workspace: a Workspace named {name} exists and is not this member's"
        ))),
        Some(ws) => {
            let goes_with_member = ws.owner_references().iter().any(|r| r.uid == uid);
            if goes_with_member != owner.is_some() {
                let patch = serde_json::json!({"metadata": {
                    "resourceVersion": ws.resource_version(),
                    "ownerReferences": owner.map(|o| vec![o]),
                }});
                provision::merge_patch(&api, &name, &patch, || {
                    format!("following whenMemberLeaves on Workspace {ns}/{name}")
                })
                .await?;
            }
            Ok(Ok(name))
        }
        None => {
            let mut l = provision::membership_labels(
                &org.name_any(),
                &m.name_any(),
                Component::PersonalWorkspace,
            );
            l.insert(labels::PERSONAL_FOR.into(), uid);
            let display: String = format!("Personal workspace of {}", m.spec.subject.name)
                .chars()
                .take(200)
                .collect();
            let ws = Workspace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.to_string()),
                    labels: Some(l),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: WorkspaceSpec {
                    display_name: Some(display),
                    ..Default::default()
                },
                status: None,
            };
            if provision::create(&api, &ws).await? {
                info!(workspace = %name, "created a personal workspace");
            }
            Ok(Ok(name))
        }
    }
}

/// Marks a member granted before its organization required acceptance
/// (`tenantry.dev/accepted: grandfathered`), so that it stays granted by a durable fact and
/// not by its status ([`grants::needs_grandfather_mark`]). Conditional on the version read:
/// an invitee accepting meanwhile wins, and this reconcile runs again.
async fn mark_grandfathered(m: &Membership, ns: &str, ctx: &Context) -> Result<()> {
    let name = m.name_any();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": m.resource_version(),
        "annotations": {labels::ACCEPTED: labels::GRANDFATHERED},
    }});
    let api = Api::<Membership>::namespaced(ctx.client.clone(), ns);
    provision::merge_patch(&api, &name, &patch, || {
        format!("marking Membership {ns}/{name} granted before acceptance was required")
    })
    .await?;
    info!(membership = %name, namespace = %ns, "granted before the organization required acceptance: marked {}={}", labels::ACCEPTED, labels::GRANDFATHERED);
    Ok(())
}

/// How long after its creation a Membership's first status may wait while the workspaces
/// it is granted are being provisioned.
pub(crate) const FIRST_STATUS_GRACE: Duration = Duration::from_secs(30);

/// How long after its creation a Membership's first status may wait while every workspace
/// it waits for is still queued (no status yet: the workspace reconciler has not come to
/// it) or provisioned with its bindings of this member yet to come (the same queue's
/// next pass), and while only the organization's bindings are to come. A tenancy applied
/// at once queues thousands of workspaces: at 5x the benchmark size the last ones were
/// provisioned 2.5 minutes after they were created, and with 30 s most Memberships
/// wrote `WorkspacePending`, then `Granted` (18,696 status writes for 11,000; waiting 30 s
/// for bindings, 1,836 more than one each). Once a workspace it waits for is being
/// provisioned (a status, not Ready) the shorter [`FIRST_STATUS_GRACE`] applies.
pub(crate) const QUEUED_GRACE: Duration = Duration::from_secs(300);

/// How long a Membership's first status may wait for `pending`, the workspaces it waits
/// for (each exists and is not going away): none when there are none or one is stalled
/// (that is reported at once), [`QUEUED_GRACE`] when each has no status yet or is Ready
/// (its bindings of this member are to come), [`FIRST_STATUS_GRACE`] otherwise.
fn provisioning_grace(pending: &[Arc<Workspace>]) -> Option<Duration> {
    if pending.is_empty() || pending.iter().any(|w| workspace_is(w, status::STALLED)) {
        return None;
    }
    let queued = |w: &Arc<Workspace>| {
        w.status.as_ref().is_none_or(|s| s.conditions.is_empty()) || workspace_ready(w)
    };
    Some(if pending.iter().all(queued) {
        QUEUED_GRACE
    } else {
        FIRST_STATUS_GRACE
    })
}

/// Whether to hold back a Membership's first status write, and for how long: only with a
/// `grace` (it has no status yet and every workspace it still waits for exists and is
/// being provisioned, [`provisioning_grace`]), and only until `grace` after its creation
/// (a durable fact, not Tenantry's own earlier status). A tenancy applied at once
/// otherwise writes `WorkspacePending`, then `Granted`, for most of its members (measured
/// at the 1x benchmark size: 1,330 of 2,200). Until the first write kstatus and Argo CD
/// read the Membership as in progress (the CRD defaults `status.observedGeneration` to 0);
/// a workspace that is missing or going away is reported at once.
pub(crate) fn first_status_hold(
    created: Option<k8s_openapi::jiff::Timestamp>,
    now: k8s_openapi::jiff::Timestamp,
    grace: Option<Duration>,
) -> Option<Duration> {
    let (created, grace) = created.zip(grace)?;
    // From API data: a creation time ahead of this clock (skew) is no reason to wait, or
    // the wait would last as long as the skew.
    let age = now.as_millisecond().checked_sub(created.as_millisecond())?;
    let age = Duration::from_millis(u64::try_from(age).ok()?);
    grace.checked_sub(age).filter(|left| !left.is_zero())
}

/// The Role and RoleBinding that let the invited user read and annotate their own
/// Membership (the admission policy allows them to change nothing but the acceptance
/// annotation): built when `pending`, and converged (what carries this Membership's
/// invitation labels and was not built goes).
async fn invitations(
    org: &Organization,
    m: &Membership,
    ns: &str,
    ctx: &Context,
    pending: bool,
) -> Result<()> {
    let owner = provision::membership_labels(&org.name_any(), &m.name_any(), Component::Invitation);
    let (roles, bindings) = if pending {
        let (role, binding) = invitation(m, ns, &owner);
        (vec![role], vec![binding])
    } else {
        (Vec::new(), Vec::new())
    };
    let s = &ctx.stores;
    provision::converge(&ctx.client, &s.roles, ns, &owner, &roles).await?;
    provision::converge(&ctx.client, &s.role_bindings, ns, &owner, &bindings).await?;
    Ok(())
}

/// The invitation's Role and RoleBinding, labelled `labels`.
fn invitation(m: &Membership, ns: &str, labels: &BTreeMap<String, String>) -> (Role, RoleBinding) {
    let name = names::invitation(&m.name_any());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(ns.to_string()),
        labels: Some(labels.clone()),
        owner_references: provision::owner_ref(m, true).map(|r| vec![r]),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![crate::api::GROUP.into()]),
            resources: Some(vec!["memberships".into()]),
            resource_names: Some(vec![m.name_any()]),
            verbs: vec!["get".into(), "patch".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some(crate::rbac::API_GROUP.into()),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![grants::rbac_subject(
            &m.spec.subject,
            &m.name_any(),
            ns,
        )]),
    };
    (role, binding)
}

async fn granted(
    view: &OrgView,
    m: &Membership,
    ns: &str,
    ctx: &Context,
    found: &mut Found,
) -> Result<Outcome> {
    let org = view.org.as_ref();
    let mut secret_missing = false;
    let mut refused = None;
    let mut conflict = None;
    if m.spec.subject.kind == SubjectKind::Client {
        let client = ensure_client(org, m, ns, ctx).await?;
        found.client = Some(Box::new(ClientStatus {
            client_id: client.client_id,
            service_account: Some(client.service_account),
            rotation: client.rotation,
            revocation: client.revocation,
        }));
        secret_missing = client.secret_missing;
        refused = client.refused;
        conflict = client.conflict;
    }

    // The organization's workspace of that name, unless it is going away.
    let live = |name: &str| {
        ctx.stores
            .workspaces
            .get(&ObjectRef::new(name).within(ns))
            .filter(|w| w.meta().deletion_timestamp.is_none())
    };
    // Granted in a workspace once it is provisioned and its bindings name the member:
    // whoever reads `Granted` and acts is not refused.
    let binds = Binds::new(view, m, ns, ctx);
    let provisioned =
        |w: &Workspace| -> Result<bool> { Ok(workspace_ready(w) && binds.in_workspace(w)?) };
    let mut unbound = Vec::new();
    if m.spec.role.reaches_all_workspaces() {
        // Not a list of the organization's workspaces: that list would change with every
        // workspace added, in the status of every Owner, Admin and Manager (measured: a
        // third of all status writes while a tenancy converges). The provisioned ones
        // that do not bind it yet are pending.
        found.all_workspaces = true;
        for w in &view.workspaces {
            if w.meta().deletion_timestamp.is_none()
                && workspace_ready(w)
                && !binds.in_workspace(w)?
            {
                unbound.push(w.name_any());
            }
        }
    } else {
        found.workspaces = m
            .spec
            .workspaces
            .iter()
            .map(|g| {
                let granted = match live(&g.name) {
                    Some(w) => provisioned(&w)?,
                    None => false,
                };
                Ok(WorkspaceAccess {
                    name: g.name.clone(),
                    role: g.role,
                    state: if granted {
                        AccessState::Granted
                    } else {
                        AccessState::Pending
                    },
                })
            })
            .collect::<Result<_>>()?;
    }
    let pending: Vec<&str> = found
        .workspaces
        .iter()
        .filter(|w| w.state == AccessState::Pending)
        .map(|w| w.name.as_str())
        .chain(unbound.iter().map(String::as_str))
        .collect();
    // The organization's own bindings (its role in the organization namespace, access to
    // the Organization object).
    let org_unbound = binds.in_organization()?;
    // Each still pending workspace, if every one exists; an organization binding not in
    // place yet is on its way (the Organization reconciler was woken by the same change).
    let waiting: Option<Vec<Arc<Workspace>>> = pending.iter().map(|name| live(name)).collect();
    found.first_status_grace = waiting.and_then(|w| {
        if w.is_empty() && !org_unbound.is_empty() {
            Some(QUEUED_GRACE)
        } else {
            provisioning_grace(&w)
        }
    });
    // A deleted credentials Secret is a supported choice (copy the secret, delete the
    // Secret, as SaaS consoles show a secret once): the member stays Ready, and the
    // message says how to get a new secret.
    let delivered = if secret_missing {
        format!(
            "; Secret {} was deleted after issuance: the secret still works for whoever holds it, and cannot be shown again (to issue a new one: kubectl annotate membership {} -n {ns} {}=<a new value>)",
            names::client_secret_name(&m.name_any()),
            m.name_any(),
            credentials::ROTATE
        )
    } else {
        String::new()
    };
    Ok(if let Some(why) = conflict {
        Outcome::stalled(reason::CREDENTIALS_CONFLICT, why)
    } else if let Some(why) = refused {
        Outcome::stalled(
            reason::INVALID_ANNOTATION,
            format!(
                "{why}; no rotation happens until it is fixed, the current secret keeps working"
            ),
        )
    } else if !pending.is_empty() {
        Outcome::progressing(
            reason::WORKSPACE_PENDING,
            format!(
                "granted as soon as these workspaces exist, are provisioned and bind it: {}",
                pending.join(", ")
            ),
        )
    } else if !org_unbound.is_empty() {
        Outcome::progressing(
            reason::BINDING,
            format!(
                "granted as soon as these bindings name it: {}",
                org_unbound.join(", ")
            ),
        )
    } else {
        let reach = if found.all_workspaces {
            "every workspace, as Admin".to_string()
        } else {
            format!("{} workspaces", found.workspaces.len())
        };
        Outcome::ready(
            reason::GRANTED,
            format!(
                "{:?} of the organization, in {reach}{delivered}",
                m.spec.role
            ),
        )
    })
}

/// Whether the bindings that grant member `m` are in place: each binding built from the
/// organization's view (the builders the Workspace and Organization reconcilers apply)
/// that names the member is held by the live object in the cache (the applier's own
/// test, [`provision::in_place`]). Both reconcilers are woken by the change that grants
/// the member, and run concurrently with this one; a member told `Granted` before their
/// RoleBinding was written would be refused for a moment (measured in a test: the status
/// came before every binding). A binding's change wakes the Memberships it names
/// ([`named_by`]).
///
/// A member already `Granted` for its current generation is not checked again: a newer
/// member changes the same bindings (the Admins' of every workspace), and a member bound
/// before stays bound while they are rewritten (one PUT replaces the list).
struct Binds<'a> {
    view: &'a OrgView,
    ctx: &'a Context,
    /// The organization namespace.
    ns: &'a str,
    /// The member as bindings name it; `None`: already granted, nothing to check.
    subject: Option<RbacSubject>,
}

impl<'a> Binds<'a> {
    fn new(view: &'a OrgView, m: &Membership, ns: &'a str, ctx: &'a Context) -> Self {
        let granted_before = m.status.as_ref().is_some_and(|s| {
            s.observed_generation == m.meta().generation
                && status::is_true(&s.conditions, status::READY)
        });
        Self {
            view,
            ctx,
            ns,
            subject: (!granted_before)
                .then(|| grants::rbac_subject(&m.spec.subject, &m.name_any(), ns)),
        }
    }

    /// Whether workspace `w`, provisioned, binds the member.
    fn in_workspace(&self, w: &Workspace) -> Result<bool> {
        let Some(subject) = &self.subject else {
            return Ok(true);
        };
        let Some(namespace) = w.status.as_ref().and_then(|s| s.namespace.as_deref()) else {
            return Ok(false);
        };
        let built = crate::build::workspace::bindings(
            (&self.view.org.name_any(), self.ns),
            &w.name_any(),
            namespace,
            &self.view.grantees(w),
        );
        Ok(unheld(&self.ctx.stores.role_bindings, &built, subject)?.is_empty())
    }

    /// The organization's bindings that name the member and are not in place yet.
    fn in_organization(&self) -> Result<Vec<String>> {
        let Some(subject) = &self.subject else {
            return Ok(Vec::new());
        };
        let org = &self.view.org;
        let s = &self.ctx.stores;
        let built = crate::build::organization::children(
            org,
            self.view,
            self.ns,
            org.uid().as_deref().unwrap_or_default(),
            &super::organization::credentials(s, self.ns),
        );
        let mut out = unheld(&s.role_bindings, &built.role_bindings, subject)?;
        out.extend(unheld(
            &s.role_bindings,
            &built.credentials_bindings,
            subject,
        )?);
        out.extend(unheld(
            &s.cluster_role_bindings,
            &built.cluster_role_bindings,
            subject,
        )?);
        Ok(out)
    }
}

/// The names of the bindings in `built` that name `subject` and that the live objects in
/// `store` do not hold yet.
fn unheld<K: crate::slim::Projected + Binding>(
    store: &crate::slim::Children<K>,
    built: &[K],
    subject: &RbacSubject,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in built {
        if b.names(subject) && !provision::in_place(store, b)? {
            out.push(b.name_any());
        }
    }
    Ok(out)
}

/// A RoleBinding or a ClusterRoleBinding.
trait Binding {
    fn subjects(&self) -> &[RbacSubject];

    /// Whether it names `s` (by kind, name and namespace).
    fn names(&self, s: &RbacSubject) -> bool {
        self.subjects()
            .iter()
            .any(|b| b.kind == s.kind && b.name == s.name && b.namespace == s.namespace)
    }
}

impl Binding for RoleBinding {
    fn subjects(&self) -> &[RbacSubject] {
        self.subjects.as_deref().unwrap_or_default()
    }
}

impl Binding for ClusterRoleBinding {
    fn subjects(&self) -> &[RbacSubject] {
        self.subjects.as_deref().unwrap_or_default()
    }
}

/// A Client's ServiceAccount and its credentials Secret. The secret is generated once,
/// when the Secret is first created, and never rewritten. Returns the ServiceAccount's
/// name and the client id.
async fn ensure_client(
    org: &Organization,
    m: &Membership,
    ns: &str,
    ctx: &Context,
) -> Result<ClientState> {
    let name = m.name_any();
    let uid = m
        .uid()
        .ok_or_else(|| Error::MissingKey(format!("Membership {name}")))?;
    let client_id = names::client_id(&org.name_any(), &name, &uid);
    let meta = |object: String, component: Component| ObjectMeta {
        name: Some(object),
        namespace: Some(ns.to_string()),
        labels: Some(provision::membership_labels(
            &org.name_any(),
            &name,
            component,
        )),
        owner_references: provision::owner_ref(m, true).map(|r| vec![r]),
        ..Default::default()
    };
    let sa_name = names::client_service_account(&name);
    let request = client::Request::of(m);
    // The verifier and the last rotation and revocation handled live on the
    // ServiceAccount, written together. Before issuing, confirm on the live object: the
    // cache may not have our last write yet, and a secret must never be issued twice.
    let cached = ctx.stores.service_accounts.get(Some(ns), &sa_name);
    let now = k8s_openapi::jiff::Timestamp::now();
    // Whose the ServiceAccount is: this Membership's (the annotation only Tenantry writes
    // names its UID), or an earlier Membership's of the same name (removed with
    // `--cascade=orphan`, or replaced before the garbage collector came). An earlier
    // one's is never taken over: its verifier would let the removed client's secret, and
    // its tokens, act with this Membership's rights.
    let settled = cached.as_ref().is_some_and(|sa| {
        sa.annotation(labels::OWNER_UID) == Some(uid.as_str())
            && client::plan(&request, &sa.annotations(), now)
                .issue
                .is_none()
    });
    // Its uid, annotations (the verifier, the rotation state), and whether it is ours.
    let live_sa = if settled {
        cached.map(|sa| {
            (
                sa.uid().map(str::to_string),
                sa.annotations(),
                client::Whose::Ours,
            )
        })
    } else {
        Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns)
            .get_opt(&sa_name)
            .await
            .context(|| format!("reading ServiceAccount {ns}/{sa_name}"))?
            .map(|sa| {
                let ours = client::whose(&sa, &org.name_any(), &name, &uid);
                (sa.uid(), sa.annotations().clone(), ours)
            })
    };
    // One Tenantry did not make: never written, deleted or bound to a secret (whoever
    // holds the client's secret would act as it, with whatever rights it has elsewhere).
    let foreign = live_sa
        .as_ref()
        .is_some_and(|(_, _, whose)| *whose == client::Whose::Foreign);
    if foreign {
        return Ok(ClientState {
            conflict: Some(format!(
                "ServiceAccount {ns}/{sa_name} exists and was not made by Tenantry for this client: nothing is written to it and no secret is issued for it; once it is deleted or renamed, the client's credentials are issued"
            )),
            service_account: sa_name,
            client_id,
            rotation: None,
            revocation: None,
            secret_missing: false,
            refused: None,
        });
    }
    let live_uid = live_sa.as_ref().and_then(|(uid, _, _)| uid.clone());
    // An earlier Membership's: replaced (its tokens die with it), after a first issuance.
    let earlier = live_sa
        .as_ref()
        .is_some_and(|(_, _, whose)| *whose == client::Whose::Earlier);
    let live_verifier = live_sa
        .as_ref()
        .filter(|(_, _, whose)| *whose == client::Whose::Ours)
        .map(|(_, annotations, _)| client::verifier_of(annotations))
        .unwrap_or_default();
    let plan = client::plan(&request, &live_verifier, now);
    let secret_name = names::client_secret_name(&name);
    let mut new_hash = None;
    // Why no secret can be issued: the Secret's name is taken.
    let mut conflict = None;
    if let Some(issue) = plan.issue {
        'issue: {
            // An issuance cut short after the Secret and before the verifier (the process
            // was killed, the API server went away) left a delivered secret that no verifier
            // accepts yet: finish that issuance instead of issuing another, so a secret once
            // delivered is never replaced by a restart.
            let found = live_secret(
                ctx,
                ns,
                &secret_name,
                &provision::membership_labels(&org.name_any(), &name, Component::ClientCredentials),
                &uid,
                live_verifier.get(credentials::HASH),
            )
            .await?;
            let (secret_value, adopted, replace) = match found {
                LiveSecret::Foreign => {
                    // Nothing is issued; an earlier Membership's ServiceAccount goes all the
                    // same (its tokens, and its secret, must not act for this one).
                    if let (true, Some(sa_uid)) = (earlier, &live_uid) {
                        delete_service_account(ctx, ns, &sa_name, sa_uid).await?;
                    }
                    conflict = Some(format!(
                        "Secret {ns}/{secret_name} exists and was not made by Tenantry for this client: nothing is written into it, and nobody is given access to it through Tenantry; once it is deleted or renamed, the client's credentials are issued"
                    ));
                    break 'issue;
                }
                LiveSecret::Interrupted(value) => (value, true, None),
                LiveSecret::Nothing => (
                    credentials::generate().map_err(|e| Error::Random(e.to_string()))?,
                    false,
                    None,
                ),
                LiveSecret::Ours(version) => (
                    credentials::generate().map_err(|e| Error::Random(e.to_string()))?,
                    false,
                    Some(version),
                ),
            };
            // Microseconds: SHA-256 of a salt and 256 random bits (credentials' module doc).
            let hash = credentials::hash(&secret_value).map_err(Error::Random)?;
            new_hash = Some(hash.clone());
            // The Secret first: if writing the verifier fails, the next pass finds the
            // Secret (above) and writes the verifier of the same secret. It says, in
            // annotations only Tenantry may write (the admission policy
            // `tenantry-tracking-labels`), for which Membership and with which secret's hash
            // Tenantry wrote it: a value written there by anyone else is never taken up.
            let mut metadata = meta(secret_name.clone(), Component::ClientCredentials);
            metadata.annotations = Some(
                [
                    (labels::OWNER_UID.to_string(), uid.clone()),
                    (credentials::HASH.to_string(), hash),
                ]
                .into(),
            );
            metadata.resource_version = replace.clone();
            let secret = Secret {
                metadata,
                type_: Some("tenantry.dev/client-credentials".into()),
                data: Some(
                    [
                        (
                            "client-id".to_string(),
                            ByteString(client_id.clone().into_bytes()),
                        ),
                        (
                            "client-secret".to_string(),
                            ByteString(secret_value.into_bytes()),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            };
            let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
            if !adopted {
                match replace {
                    // None there: created, never written over. One that appeared since it was
                    // read is a conflict (409); the next pass reads it and decides again.
                    None => {
                        crate::metrics::write("create", "Secret");
                        secrets
                            .create(&provision::post_params(), &secret)
                            .await
                            .context(|| format!("creating Secret {ns}/{secret_name}"))?;
                    }
                    // Tenantry's Secret (the secret being rotated, or a value Tenantry did not
                    // write): rewritten whole, at the version read, so that nothing another
                    // writer added to it (an annotation that copies it elsewhere, an owner)
                    // stays on an object that holds the new secret. Changed since: a conflict.
                    Some(_) => {
                        crate::metrics::write("replace", "Secret");
                        secrets
                            .replace(&secret_name, &provision::post_params(), &secret)
                            .await
                            .context(|| format!("writing Secret {ns}/{secret_name}"))?;
                    }
                }
            }
            // A revocation replaces the ServiceAccount: tokens are bound to its UID, so every
            // token issued before is rejected from now on. The Secret above comes first: a
            // pass cut short after it finds the new secret there and finishes this one.
            // An earlier Membership's ServiceAccount goes the same way.
            if let (true, Some(sa_uid)) = (plan.replaces_service_account() || earlier, &live_uid) {
                delete_service_account(ctx, ns, &sa_name, sa_uid).await?;
            }
            let what = match (issue, adopted) {
                _ if earlier => {
                    "issued client credentials, replacing an earlier Membership's ServiceAccount"
                }
                (client::Issue::Revoke, _) => "revoked the client: new secret and ServiceAccount",
                (_, true) => "completed an interrupted issuance of the client secret",
                (client::Issue::Rotate, false) => "rotated the client secret",
                (client::Issue::First, false) => "issued client credentials",
            };
            info!(secret = %secret_name, client_id = %client_id, "{what}");
        }
    }
    // Nothing issued because of a conflict: the verifier stays as it is (none, for a new
    // client: it cannot authenticate until it is issued its credentials).
    let verifier = match conflict {
        Some(_) => live_verifier,
        None => plan.verifier_with(new_hash),
    };
    let mut sa_meta = meta(sa_name.clone(), Component::ClientServiceAccount);
    let mut annotations = verifier.clone();
    annotations.insert(labels::OWNER_UID.to_string(), uid.clone());
    sa_meta.annotations = Some(annotations);
    let sa = ServiceAccount {
        metadata: sa_meta,
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    provision::apply(
        &ctx.client,
        &ctx.stores.service_accounts,
        &sa,
        ChangedBy::Apply,
    )
    .await?;
    // Issued before, and the Secret is gone (confirmed on the live object when the cache
    // lacks it): the value cannot be shown again.
    let secret_missing = plan.issue.is_none()
        && ctx.stores.secrets.get(Some(ns), &secret_name).is_none()
        && Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .get_opt(&secret_name)
            .await
            .context(|| format!("reading Secret {ns}/{secret_name}"))?
            .is_none();
    Ok(ClientState {
        service_account: sa_name,
        client_id,
        rotation: verifier.get(credentials::ROTATION).cloned(),
        revocation: verifier.get(credentials::REVOCATION).cloned(),
        secret_missing,
        refused: plan.refused,
        conflict,
    })
}

/// Deletes the client ServiceAccount `name` of uid `uid` (a precondition: never a newer
/// one of the same name). Gone already, or replaced since it was read: the next pass sees.
async fn delete_service_account(ctx: &Context, ns: &str, name: &str, uid: &str) -> Result<()> {
    crate::metrics::write("delete", "ServiceAccount");
    match Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns)
        .delete(
            name,
            &DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            },
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("replacing ServiceAccount {ns}/{name}"),
            source,
        }),
    }
}

/// What `ensure_client` found and made.
struct ClientState {
    service_account: String,
    client_id: String,
    rotation: Option<String>,
    revocation: Option<String>,
    /// The credentials Secret was deleted after the secret was issued.
    secret_missing: bool,
    /// Why an annotation of the Membership cannot be honoured (a rotation asked for waits).
    refused: Option<String>,
    /// Why no secret can be issued: a Secret Tenantry did not make holds the name.
    conflict: Option<String>,
}

/// What the live credentials Secret holds before an issuance.
enum LiveSecret {
    /// No Secret.
    Nothing,
    /// A Secret Tenantry did not make for a client of this Membership's name (it lacks
    /// the labels only Tenantry may set): never written, never made readable to anyone.
    Foreign,
    /// An issuance whose verifier was never written: the secret Tenantry wrote there for
    /// this very Membership (its annotations say so, and hold that secret's hash), which
    /// the current verifier, if any, does not accept. Its secret, to finish the issuance
    /// with.
    Interrupted(String),
    /// Tenantry's Secret for a client of this name, holding anything else: the secret
    /// being rotated, a previous Membership's, or a value Tenantry did not write. Its
    /// resourceVersion: it is rewritten whole, at that version.
    Ours(String),
}

/// Reads the live credentials Secret (never the cache: it may not have Tenantry's last
/// write yet, and a secret must never be issued twice) and says whose it is and what it
/// holds. `ours`: the labels Tenantry gives this client's Secret.
async fn live_secret(
    ctx: &Context,
    ns: &str,
    secret_name: &str,
    ours: &BTreeMap<String, String>,
    membership_uid: &str,
    current_hash: Option<&String>,
) -> Result<LiveSecret> {
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(secret_name)
        .await
        .context(|| format!("reading Secret {ns}/{secret_name}"))?
    else {
        return Ok(LiveSecret::Nothing);
    };
    // Made by Tenantry for a client of this name, or not.
    if !provision::carries_labels(&secret.metadata, ours) {
        return Ok(LiveSecret::Foreign);
    }
    let version = secret.resource_version().unwrap_or_default();
    let annotations = secret.annotations();
    let written = annotations.get(credentials::HASH).cloned();
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get("client-secret"))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        // Never a value Tenantry could not have generated, whatever the annotations say.
        .filter(|v| credentials::looks_generated(v));
    let (Some(value), Some(written), true) = (
        value,
        written,
        annotations.get(labels::OWNER_UID).map(String::as_str) == Some(membership_uid),
    ) else {
        return Ok(LiveSecret::Ours(version));
    };
    let current = current_hash.cloned();
    ctx.hashing
        .run(move |memory| {
            // Not the secret Tenantry wrote there (someone wrote the data since), or the
            // one the verifier already accepts (a rotation replaces it).
            if !credentials::verify(&value, &written)
                || current.is_some_and(|c| credentials::verify_with_memory(&value, &c, memory))
            {
                LiveSecret::Ours(version)
            } else {
                LiveSecret::Interrupted(value)
            }
        })
        .await
        .map_err(|e| Error::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Outcome, conditions};

    fn ws(generation: i64, outcome: Outcome) -> Workspace {
        let mut w = Workspace::new("w", Default::default());
        w.metadata.namespace = Some("org-a".into());
        w.metadata.generation = Some(generation);
        w.status = Some(crate::api::WorkspaceStatus {
            conditions: conditions(&[], &outcome, Some(generation)),
            ..Default::default()
        });
        w
    }

    #[test]
    fn a_first_status_waits_for_provisioning_only_within_the_grace() {
        use k8s_openapi::jiff::{SignedDuration, Timestamp};
        let created = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |secs: i64| {
            created
                .checked_add(SignedDuration::from_secs(secs))
                .unwrap()
        };
        let grace = Some(FIRST_STATUS_GRACE);
        assert_eq!(
            first_status_hold(Some(created), at(0), grace),
            Some(FIRST_STATUS_GRACE)
        );
        assert_eq!(
            first_status_hold(Some(created), at(12), grace),
            Some(FIRST_STATUS_GRACE - Duration::from_secs(12))
        );
        assert_eq!(
            first_status_hold(Some(created), at(100), Some(QUEUED_GRACE)),
            Some(QUEUED_GRACE - Duration::from_secs(100))
        );
        // Past the grace, not waiting for provisioning (a missing workspace, a status
        // already written), no creation time, or a creation time ahead of this clock:
        // written at once.
        assert_eq!(first_status_hold(Some(created), at(30), grace), None);
        assert_eq!(first_status_hold(Some(created), at(3_600), grace), None);
        assert_eq!(first_status_hold(Some(created), at(1), None), None);
        assert_eq!(first_status_hold(None, at(1), grace), None);
        assert_eq!(first_status_hold(Some(created), at(-3_600), grace), None);
    }

    #[test]
    fn a_first_status_waits_longer_while_its_workspaces_are_only_queued() {
        let queued = || {
            let mut w = ws(1, Outcome::ready("Provisioned", "ok"));
            w.status = None;
            Arc::new(w)
        };
        let progressing = Arc::new(ws(1, Outcome::progressing("Progressing", "x")));
        let stalled = Arc::new(ws(1, Outcome::stalled("NamespaceConflict", "x")));
        assert_eq!(provisioning_grace(&[]), None, "nothing to wait for");
        assert_eq!(
            provisioning_grace(&[queued(), queued()]),
            Some(QUEUED_GRACE)
        );
        assert_eq!(
            provisioning_grace(&[queued(), progressing.clone()]),
            Some(FIRST_STATUS_GRACE),
            "one is being provisioned"
        );
        let ready = Arc::new(ws(1, Outcome::ready("Provisioned", "ok")));
        assert_eq!(
            provisioning_grace(&[queued(), ready]),
            Some(QUEUED_GRACE),
            "a ready workspace's bindings come with its reconciler's next pass"
        );
        assert_eq!(
            provisioning_grace(&[queued(), stalled]),
            None,
            "a stalled workspace is reported at once"
        );
    }

    #[test]
    fn members_wake_only_when_a_workspace_comes_goes_or_turns_ready() {
        let ready = ws(1, Outcome::ready("Provisioned", "ok"));
        let waiting = ws(1, Outcome::progressing("Progressing", "x"));
        let changed = |old: &Workspace, new: &Workspace| {
            workspace_came_or_went(&Change::Applied {
                old: Some(old),
                new,
            })
        };
        assert!(changed(&waiting, &ready), "became ready");
        assert!(changed(&ready, &waiting), "stopped being ready");
        assert!(
            !changed(&ready, &ws(2, Outcome::ready("Provisioned", "ok"))),
            "spec"
        );
        let mut deleting = ready.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(changed(&ready, &deleting), "going away");
        assert!(workspace_came_or_went(&Change::Applied {
            old: None,
            new: &ready
        }));
        assert!(workspace_came_or_went(&Change::Deleted(&ready)));
        assert!(workspace_came_or_went(&Change::Listed(&ready)));
    }
}
