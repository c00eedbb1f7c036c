//! `kubectl tenantry`: the kubectl plugin (binary `kubectl-tenantry`) for members and
//! platform engineers. Every command is a plain API call made as the caller (their
//! kubeconfig, or `--as`/`--as-group`): the plugin grants nothing, and shows what the
//! caller may read. Output as tables, or `-o json` / `-o yaml`.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::{
    Membership, MembershipSpec, OrgRole, Organization, Subject, SubjectKind, Workspace,
    WorkspaceRole,
};
use crate::{credentials, labels, names};

#[derive(Parser)]
#[command(
    name = "kubectl-tenantry",
    bin_name = "kubectl tenantry",
    version,
    about = "Tenantry for members and platform engineers: your organizations, who reaches a workspace, invitations, machine clients"
)]
pub struct Cli {
    #[command(flatten)]
    connection: Connection,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Connection {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Act as this user (impersonation, as kubectl --as).
    #[arg(long = "as", global = true, value_name = "USER")]
    as_user: Option<String>,
    /// Act in this group (impersonation, as kubectl --as-group); repeatable.
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    as_groups: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// An organization at a glance: its namespace, bindings, workspaces and members.
    Tree { organization: String },
    /// Who reaches a workspace, with which role, and through which Membership.
    WhoCan {
        organization: String,
        workspace: String,
    },
    /// Who you are, and your role in each of your organizations.
    Whoami {
        /// Only these organizations (needed unless you may list organizations).
        #[arg(long = "org", value_name = "ORGANIZATION")]
        organizations: Vec<String>,
    },
    /// Invite a member: creates a Membership in the organization.
    Invite {
        organization: String,
        /// The subject's name: a user name, a group, a ServiceAccount (namespace/name) or a
        /// client's name.
        subject: String,
        /// The subject's kind.
        #[arg(long, value_enum, default_value = "user")]
        kind: Kind,
        /// The organization role.
        #[arg(long, value_parser = org_role)]
        role: OrgRole,
        /// A workspace and the role in it, `NAME=Admin|Editor|Viewer`; repeatable.
        #[arg(long = "workspace", value_name = "NAME=ROLE", value_parser = workspace_grant)]
        workspaces: Vec<(String, WorkspaceRole)>,
        /// The Membership's name (default: made from the subject's name).
        #[arg(long)]
        name: Option<String>,
        /// When the membership ends (RFC 3339, e.g. 2027-03-31T00:00:00Z).
        #[arg(long, value_parser = timestamp)]
        expires_at: Option<Time>,
    },
    /// Accept your invitation to an organization.
    Accept {
        organization: String,
        /// The Membership named in your invitation.
        membership: String,
    },
    /// Rotate a machine client's secret; the previous one keeps working for the grace.
    Rotate {
        organization: String,
        membership: String,
        /// Seconds the previous secret keeps working (at most a day).
        #[arg(long)]
        grace_seconds: Option<u32>,
    },
    /// A token for a machine client: its credentials Secret, exchanged at the token
    /// endpoint. Prints only the token (for `$(...)`); -o json prints the whole answer.
    Token {
        organization: String,
        membership: String,
        /// The token endpoint's base URL (the chart's tenantry-token Service or Ingress).
        #[arg(long, env = "TENANTRY_TOKEN_URL")]
        endpoint: String,
        /// A PEM file with the CA certificate(s) of an HTTPS endpoint (default: the
        /// system's roots).
        #[arg(long)]
        cacert: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    User,
    Group,
    ServiceAccount,
    Client,
}

fn org_role(s: &str) -> Result<OrgRole, String> {
    OrgRole::ALL
        .into_iter()
        .find(|r| format!("{r:?}").eq_ignore_ascii_case(s) || r.slug() == s)
        .ok_or_else(|| {
            format!("unknown role {s:?}: Owner, Admin, Manager, UserAdmin, BillingAdmin, Member or Viewer")
        })
}

fn workspace_role(s: &str) -> Result<WorkspaceRole, String> {
    WorkspaceRole::ALL
        .into_iter()
        .find(|r| format!("{r:?}").eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown workspace role {s:?}: Admin, Editor or Viewer"))
}

fn workspace_grant(s: &str) -> Result<(String, WorkspaceRole), String> {
    let (name, role) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=ROLE, e.g. staging=Editor"))?;
    Ok((name.to_string(), workspace_role(role)?))
}

fn timestamp(s: &str) -> Result<Time, String> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .map(Time)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (2027-03-31T00:00:00Z): {e}"))
}

/// What a command shows: a table (header, rows) or text, and the same as data.
pub struct Report {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    text: Option<String>,
    data: Value,
}

impl Report {
    fn table(header: Vec<&'static str>, rows: Vec<Vec<String>>, data: Value) -> Self {
        Self {
            header,
            rows,
            text: None,
            data,
        }
    }

    fn text(text: String, data: Value) -> Self {
        Self {
            header: Vec::new(),
            rows: Vec::new(),
            text: Some(text),
            data,
        }
    }

    fn render(&self, output: Output) -> anyhow::Result<String> {
        Ok(match output {
            Output::Json => format!("{}\n", serde_json::to_string_pretty(&self.data)?),
            Output::Yaml => serde_saphyr::to_string(&self.data)?,
            Output::Table => match &self.text {
                Some(text) => text.clone(),
                None => table(&self.header, &self.rows),
            },
        })
    }
}

/// Columns aligned, names from the API made printable (no escape sequences).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(
            rows.iter()
                .map(|r| r.iter().map(|c| names::printable(c, 256)).collect()),
        )
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs the plugin with `args` (the program name first); returns what to print.
pub async fn run(args: impl IntoIterator<Item = String>) -> anyhow::Result<String> {
    execute(Cli::try_parse_from(args).map_err(|e| anyhow!("{e}"))?).await
}

/// Runs a parsed command line; returns what to print.
pub async fn execute(cli: Cli) -> anyhow::Result<String> {
    let client = connect(&cli.connection).await?;
    let report = match cli.command {
        Command::Tree { organization } => tree(&client, &organization).await?,
        Command::WhoCan {
            organization,
            workspace,
        } => who_can(&client, &organization, &workspace).await?,
        Command::Whoami { organizations } => whoami(&client, organizations).await?,
        Command::Invite {
            organization,
            subject,
            kind,
            role,
            workspaces,
            name,
            expires_at,
        } => {
            let subject = subject_of(kind, &subject)?;
            let grants: Vec<(&str, WorkspaceRole)> =
                workspaces.iter().map(|(n, r)| (n.as_str(), *r)).collect();
            let mut spec = MembershipSpec::new(subject, role, &grants);
            spec.expires_at = expires_at;
            invite(&client, &organization, name, spec).await?
        }
        Command::Accept {
            organization,
            membership,
        } => accept(&client, &organization, &membership).await?,
        Command::Rotate {
            organization,
            membership,
            grace_seconds,
        } => rotate(&client, &organization, &membership, grace_seconds).await?,
        Command::Token {
            organization,
            membership,
            endpoint,
            cacert,
        } => token(&client, &organization, &membership, &endpoint, cacert).await?,
    };
    report.render(cli.output)
}

async fn connect(c: &Connection) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: c.context.clone(),
        ..Default::default()
    };
    let mut config = match &c.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if c.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no cluster: set KUBECONFIG or pass --kubeconfig")?,
    };
    if let Some(user) = &c.as_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!c.as_groups.is_empty()).then(|| c.as_groups.clone());
    }
    Ok(Client::try_from(config)?)
}

/// A failed API call, said so that the reader knows what to do.
fn explain(e: kube::Error, what: &str, forbidden_hint: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 403 => {
            anyhow!("{what}: forbidden ({}). {forbidden_hint}", s.message)
        }
        kube::Error::Api(s) if s.code == 404 => anyhow!("{what}: not found ({})", s.message),
        kube::Error::Api(s) => anyhow!("{what}: {} ({})", s.message, s.reason),
        _ => anyhow!("{what}: {e} (is the cluster reachable? check your kubeconfig)"),
    }
}

fn ready(conditions: &[Condition]) -> (String, String) {
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) => (c.status.clone(), c.reason.clone()),
        None => ("Unknown".into(), "Pending".into()),
    }
}

async fn get_org(client: &Client, org: &str) -> anyhow::Result<Organization> {
    Api::<Organization>::all(client.clone())
        .get(org)
        .await
        .map_err(|e| {
            explain(
                e,
                &format!("organization {org}"),
                "Only its members may read an organization: `kubectl tenantry whoami` lists yours.",
            )
        })
}

async fn tree(client: &Client, org: &str) -> anyhow::Result<Report> {
    let o = get_org(client, org).await?;
    let ns = names::org_namespace(org);
    let hint = "Reading an organization's workspaces and members needs an organization role.";
    let mut workspaces = Api::<Workspace>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(e, &format!("workspaces of {org}"), hint))?
        .items;
    workspaces.sort_by_key(|w| w.name_any());
    let mut members = Api::<Membership>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(e, &format!("memberships of {org}"), hint))?
        .items;
    members.sort_by_key(|m| m.name_any());
    let status = o.status.clone().unwrap_or_default();
    let data = json!({
        "organization": org,
        "displayName": o.display_name(),
        "code": status.code,
        "ready": ready(&status.conditions).0,
        "namespace": ns,
        "owners": o.spec.owners,
        "workspaces": workspaces.iter().map(|w| {
            let st = w.status.clone().unwrap_or_default();
            json!({"name": w.name_any(), "namespace": st.namespace, "ready": ready(&st.conditions).0, "members": st.members})
        }).collect::<Vec<_>>(),
        "memberships": members.iter().map(|m| {
            let st = m.status.clone().unwrap_or_default();
            let (ready, reason) = ready(&st.conditions);
            json!({"name": m.name_any(), "subject": m.spec.subject, "role": m.spec.role, "ready": ready, "reason": reason, "expiresAt": st.expires_at})
        }).collect::<Vec<_>>(),
    });
    // The full tree reads bindings and Secrets' names too; whoever may not read them
    // gets the tree of what they may read.
    let text = match crate::tree::render(client, org).await {
        Ok(text) => text,
        Err(_) => summary_tree(org, &o, &workspaces, &members),
    };
    Ok(Report::text(text, data))
}

/// The tree from the organization, its workspaces and members only.
fn summary_tree(
    org: &str,
    o: &Organization,
    workspaces: &[Workspace],
    members: &[Membership],
) -> String {
    let p = |s: &str| names::printable(s, 256);
    let mut out = format!("Organization {org} \"{}\"\n", p(&o.display_name()));
    out.push_str(&format!("├─ workspaces ({})\n", workspaces.len()));
    for w in workspaces {
        let st = w.status.clone().unwrap_or_default();
        out.push_str(&format!(
            "│  ├─ {} → namespace {} {}\n",
            w.name_any(),
            st.namespace.as_deref().unwrap_or("-"),
            ready(&st.conditions).1
        ));
    }
    out.push_str(&format!("└─ members ({})\n", members.len()));
    for owner in &o.spec.owners {
        out.push_str(&format!(
            "   ├─ {} Owner (spec.owners)\n",
            p(&owner.to_string())
        ));
    }
    for m in members {
        let st = m.status.clone().unwrap_or_default();
        out.push_str(&format!(
            "   ├─ {} {} {:?} {}\n",
            m.name_any(),
            p(&m.spec.subject.to_string()),
            m.spec.role,
            ready(&st.conditions).1
        ));
    }
    out
}

async fn who_can(client: &Client, org: &str, workspace: &str) -> anyhow::Result<Report> {
    let ns = names::org_namespace(org);
    let w = Api::<Workspace>::namespaced(client.clone(), &ns)
        .get(workspace)
        .await
        .map_err(|e| {
            explain(
                e,
                &format!("workspace {workspace} of {org}"),
                "Reading an organization's workspaces needs an organization role.",
            )
        })?;
    let st = w.status.unwrap_or_default();
    if ready(&st.conditions).0 != "True" {
        bail!(
            "workspace {workspace} of {org} is not provisioned yet ({}): nobody reaches it",
            ready(&st.conditions).1
        );
    }
    let mut members = st.members;
    members.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    let rows = members
        .iter()
        .map(|m| {
            vec![
                format!("{:?}", m.kind),
                match &m.namespace {
                    Some(ns) => format!("{ns}/{}", m.name),
                    None => m.name.clone(),
                },
                format!("{:?}", m.role),
                m.membership
                    .as_ref()
                    .map_or("spec.owners".into(), |n| format!("membership/{n}")),
            ]
        })
        .collect();
    Ok(Report::table(
        vec!["KIND", "SUBJECT", "ROLE", "THROUGH"],
        rows,
        json!({"organization": org, "workspace": workspace, "namespace": st.namespace, "members": members}),
    ))
}

/// Whether `subject` of organization namespace `org_ns` (Membership `membership`) is the
/// caller `user` in `groups`.
fn is_me(
    subject: &Subject,
    membership: Option<&str>,
    org_ns: &str,
    user: &str,
    groups: &[String],
) -> bool {
    // A Client is only ever a Membership's subject.
    if subject.kind == SubjectKind::Client && membership.is_none() {
        return false;
    }
    crate::discovery::listing::is_subject(user, groups, subject, membership.unwrap_or(""), org_ns)
}

/// The caller's organizations from the discovery API (`kubectl get myorganizations`);
/// `None` when it does not answer (not installed).
async fn my_organizations(client: &Client) -> Option<Vec<String>> {
    use crate::discovery::listing::{GROUP, ORGANIZATIONS, VERSION};
    let req = http::Request::get(format!("/apis/{GROUP}/{VERSION}/{ORGANIZATIONS}"))
        .body(Vec::new())
        .ok()?;
    let list: serde_json::Value = client.request(req).await.ok()?;
    Some(
        list.get("items")?
            .as_array()?
            .iter()
            .filter_map(|i| Some(i.get("metadata")?.get("name")?.as_str()?.to_string()))
            .collect(),
    )
}

async fn whoami(client: &Client, organizations: Vec<String>) -> anyhow::Result<Report> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| explain(e, "asking the API server who you are", ""))?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let user = info.username.unwrap_or_default();
    let groups = info.groups.unwrap_or_default();
    let organizations = if organizations.is_empty() {
        match Api::<Organization>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list.items.iter().map(|o| o.name_any()).collect(),
            // A member may not list organizations: the discovery API lists theirs.
            Err(kube::Error::Api(s)) if s.code == 403 => match my_organizations(client).await {
                Some(mine) => mine,
                None => bail!(
                    "you are {user}; listing organizations is for platform admins, and the discovery API (kubectl get myorganizations) does not answer here: name yours with --org <organization> (kubectl tenantry whoami --org acme)"
                ),
            },
            Err(e) => return Err(explain(e, "listing organizations", "")),
        }
    } else {
        organizations
    };
    let mut rows = Vec::new();
    let mut data = Vec::new();
    for org in &organizations {
        let org_ns = names::org_namespace(org);
        let Ok(o) = Api::<Organization>::all(client.clone()).get(org).await else {
            continue;
        };
        for owner in o
            .spec
            .owners
            .iter()
            .filter(|s| is_me(s, None, &org_ns, &user, &groups))
        {
            rows.push(vec![
                org.clone(),
                "Owner".into(),
                "spec.owners".into(),
                "True".into(),
                "all".into(),
                "-".into(),
            ]);
            data.push(json!({"organization": org, "role": "Owner", "through": "spec.owners", "subject": owner, "ready": "True", "workspaces": "all"}));
        }
        let Ok(members) = Api::<Membership>::namespaced(client.clone(), &org_ns)
            .list(&ListParams::default())
            .await
        else {
            continue;
        };
        for m in members.items.iter().filter(|m| {
            is_me(
                &m.spec.subject,
                Some(&m.name_any()),
                &org_ns,
                &user,
                &groups,
            )
        }) {
            let st = m.status.clone().unwrap_or_default();
            let (ready, reason) = ready(&st.conditions);
            let workspaces = if st.all_workspaces {
                "all".to_string()
            } else {
                st.workspaces
                    .iter()
                    .map(|w| format!("{}:{:?}", w.name, w.role))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let expires = st
                .expires_at
                .as_ref()
                .map_or("-".to_string(), |t| t.0.to_string());
            rows.push(vec![
                org.clone(),
                format!("{:?}", m.spec.role),
                format!("membership/{}", m.name_any()),
                format!("{ready} ({reason})"),
                workspaces.clone(),
                expires,
            ]);
            data.push(json!({"organization": org, "role": m.spec.role, "through": format!("membership/{}", m.name_any()), "subject": m.spec.subject, "ready": ready, "reason": reason, "workspaces": workspaces, "expiresAt": st.expires_at}));
        }
    }
    let mut report = Report::table(
        vec![
            "ORGANIZATION",
            "ROLE",
            "THROUGH",
            "READY",
            "WORKSPACES",
            "EXPIRES",
        ],
        rows,
        json!({"user": user, "groups": groups, "organizations": data}),
    );
    let table = report.render(Output::Table)?;
    report.text = Some(format!(
        "user: {}\ngroups: {}\n\n{table}",
        names::printable(&user, 256),
        names::printable(&groups.join(", "), 1024)
    ));
    Ok(report)
}

fn subject_of(kind: Kind, name: &str) -> anyhow::Result<Subject> {
    Ok(match kind {
        Kind::User => Subject::user(name),
        Kind::Group => Subject::group(name),
        Kind::Client => Subject::client(name),
        Kind::ServiceAccount => {
            let (ns, sa) = name.split_once('/').ok_or_else(|| {
                anyhow!("a ServiceAccount is NAMESPACE/NAME (e.g. ci/deployer), not {name:?}")
            })?;
            Subject {
                kind: SubjectKind::ServiceAccount,
                name: sa.to_string(),
                namespace: Some(ns.to_string()),
            }
        }
    })
}

/// A Membership name made from a subject's name: lowercase letters, digits and dashes,
/// at most 50 characters (a Client's names its ServiceAccount and Secret).
pub fn membership_name(subject: &str) -> String {
    let name = names::label_chars(subject);
    let name = if name.is_empty() { "member" } else { &name };
    names::shorten(name, 50)
}

async fn invite(
    client: &Client,
    org: &str,
    name: Option<String>,
    spec: MembershipSpec,
) -> anyhow::Result<Report> {
    let name = name.unwrap_or_else(|| membership_name(&spec.subject.name));
    let ns = names::org_namespace(org);
    let mut m = Membership::new(&name, spec);
    m.metadata.namespace = Some(ns.clone());
    let created = Api::<Membership>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &m)
        .await
        .map_err(|e| {
            explain(
                e,
                &format!("inviting {} to {org}", m.spec.subject),
                "Memberships are created by an organization's Owners, Admins and UserAdmins (Admin, Manager and workspace Admin roles by Owners and Admins; Owner by Owners).",
            )
        })?;
    let acceptance = get_org(client, org)
        .await
        .map(|o| o.spec.require_acceptance())
        .unwrap_or(false);
    let next = if acceptance && created.spec.subject.kind == SubjectKind::User {
        format!(
            "{} accepts with: kubectl tenantry accept {org} {name}",
            created.spec.subject.name
        )
    } else {
        format!("kubectl get membership {name} -n {ns} shows when it is granted")
    };
    Ok(Report::text(
        format!("membership/{name} created in {ns}\n{next}\n"),
        serde_json::to_value(&created)?,
    ))
}

/// Sets `annotations` on Membership `membership` of `org` (a merge patch, as the caller);
/// a failure is `what` failed, with `hint`.
async fn annotate(
    client: &Client,
    org: &str,
    membership: &str,
    annotations: Value,
    what: &str,
    hint: &str,
) -> anyhow::Result<Membership> {
    let patch = json!({"metadata": {"annotations": annotations}});
    Api::<Membership>::namespaced(client.clone(), &names::org_namespace(org))
        .patch(membership, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| explain(e, what, hint))
}

async fn accept(client: &Client, org: &str, membership: &str) -> anyhow::Result<Report> {
    let m = annotate(
        client,
        org,
        membership,
        json!({labels::ACCEPTED: "true"}),
        &format!("accepting membership {membership} of {org}"),
        "Only the invited user may accept, and only while the invitation is pending (its status says InvitationPending).",
    )
    .await?;
    Ok(Report::text(
        format!("membership/{membership} of {org} accepted\n"),
        serde_json::to_value(&m)?,
    ))
}

async fn rotate(
    client: &Client,
    org: &str,
    membership: &str,
    grace: Option<u32>,
) -> anyhow::Result<Report> {
    if let Some(g) = grace {
        credentials::rotation_grace(Some(&g.to_string())).map_err(|e| anyhow!("{e}"))?;
    }
    let ns = names::org_namespace(org);
    let what = format!("rotating the secret of client {membership} of {org}");
    let hint = "Rotating a client's secret needs the right to change the organization's Memberships (Owners, Admins, UserAdmins).";
    let m = Api::<Membership>::namespaced(client.clone(), &ns)
        .get(membership)
        .await
        .map_err(|e| explain(e, &what, hint))?;
    if m.spec.subject.kind != SubjectKind::Client {
        bail!("membership {membership} of {org} is not a Client: it has no secret to rotate");
    }
    let value = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut annotations = serde_json::Map::new();
    annotations.insert(credentials::ROTATE.into(), json!(value));
    if let Some(g) = grace {
        annotations.insert(credentials::ROTATION_GRACE.into(), json!(g.to_string()));
    }
    annotate(
        client,
        org,
        membership,
        Value::Object(annotations),
        &what,
        hint,
    )
    .await?;
    Ok(Report::text(
        format!(
            "rotation {value} requested: the new secret will be in Secret {} of {ns}\n",
            names::client_secret_name(membership)
        ),
        json!({"organization": org, "membership": membership, "rotation": value, "secret": names::client_secret_name(membership)}),
    ))
}

async fn token(
    client: &Client,
    org: &str,
    membership: &str,
    endpoint: &str,
    cacert: Option<PathBuf>,
) -> anyhow::Result<Report> {
    let ns = names::org_namespace(org);
    let secret_name = names::client_secret_name(membership);
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&secret_name)
        .await
        .map_err(|e| {
            explain(
                e,
                &format!("reading Secret {secret_name} of {org}"),
                "A client's credentials are readable by the organization's Owners and Admins (give the id and secret to the client itself).",
            )
        })?;
    let field = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| anyhow!("Secret {secret_name} of {org} has no {k}"))
    };
    let (id, secret) = (field("client-id")?, field("client-secret")?);
    let answer = exchange(endpoint, &id, &secret, cacert).await?;
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the token endpoint answered without a token"))?
        .to_string();
    Ok(Report::text(format!("{token}\n"), answer))
}

/// POSTs the client credentials grant to `endpoint` (`/oauth2/token` added when missing).
async fn exchange(
    endpoint: &str,
    id: &str,
    secret: &str,
    cacert: Option<PathBuf>,
) -> anyhow::Result<Value> {
    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/oauth2/token") {
        base.to_string()
    } else {
        format!("{base}/oauth2/token")
    };
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{endpoint:?} is not a URL"))?;
    let mut roots = rustls::RootCertStore::empty();
    match &cacert {
        Some(path) => {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("a certificate in {}", path.display()))?)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                roots.add(cert).ok();
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let http_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, Full<Bytes>>(https);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let request = http::Request::post(uri)
        .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from_static(
            b"grant_type=client_credentials",
        )))?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        http_client.request(request),
    )
    .await
    .map_err(|_| anyhow!("the token endpoint {url} did not answer within 30 s"))?
    .with_context(|| format!("calling the token endpoint {url}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let field = |k: &str| answer.get(k).and_then(Value::as_str);
        let why = field("error_description")
            .or(field("error"))
            .unwrap_or("no explanation");
        bail!(
            "the token endpoint refused ({status}): {}; an expired or deleted membership, or a rotated secret past its grace, gets no token",
            names::printable(why, 256)
        );
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_names_are_dns_labels_made_from_the_subject() {
        assert_eq!(membership_name("Alice@Example.com"), "alice-example-com");
        assert_eq!(membership_name("acme:developers"), "acme-developers");
        assert_eq!(membership_name("!!!"), "member");
        let long = membership_name(&"x".repeat(300));
        assert!(long.len() <= 50 && names::is_dns_label(&long), "{long}");
    }

    #[test]
    fn arguments_are_checked_with_what_to_type() {
        assert_eq!(org_role("useradmin"), Ok(OrgRole::UserAdmin));
        assert_eq!(org_role("user-admin"), Ok(OrgRole::UserAdmin));
        assert!(org_role("boss").unwrap_err().contains("Owner, Admin"));
        assert_eq!(
            workspace_grant("staging=editor"),
            Ok(("staging".to_string(), WorkspaceRole::Editor))
        );
        assert!(
            workspace_grant("staging")
                .unwrap_err()
                .contains("NAME=ROLE")
        );
        assert!(timestamp("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn tables_align_and_escape_what_the_api_sent() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["x\u{1b}[31m".into(), "y".into()],
                vec!["zz".into(), "w".into()],
            ],
        );
        assert!(!t.contains('\u{1b}'), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].find("LONGER"), lines[1].find('y'));
    }
}
