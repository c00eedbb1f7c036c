//! Resilience of the real `tenantry run` binary, each test on a control plane of its own
//! (the binary must be the only controller writing, and one test takes the API server
//! down): `kill -9` at random points while a tenancy converges, and an API server outage
//! in the middle of convergence. After either, the world must match the spec exactly:
//! every object Ready, exactly the expected namespaces and RoleBindings, and every
//! machine-client secret the one first issued.
//!
//! Bounded in time ([`BOUND`] per test); the measured durations are printed. The kill
//! schedule comes from a seeded generator: the seed is printed, and
//! `TENANTRY_RESILIENCE_SEED=<seed>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tenantry::api::{Membership, OrgRole, Organization, SubjectKind, Workspace, WorkspaceRole};
use tenantry::synthetic::{Size, Tenancy};
use tenantry::{grants, labels, names, rbac};

use crate::harness::{Dedicated, dedicated};

/// How long one test may take, from its control plane's start to its last check.
const BOUND: Duration = Duration::from_secs(240);

/// The tests here each run a control plane, the binary and a tenancy of a few hundred
/// objects: one at a time, so that their timings mean something on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------- a seeded schedule ----------

/// xorshift64*: enough to pick kill delays, and replayable from its seed.
struct Prng(u64);

impl Prng {
    /// Seeded from `TENANTRY_RESILIENCE_SEED`, else from the clock; prints the seed.
    fn from_env_or_clock() -> Self {
        let seed = std::env::var("TENANTRY_RESILIENCE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("resilience: seed {seed} (replay with TENANTRY_RESILIENCE_SEED={seed})");
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi]` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

// ---------- the binary ----------

/// `tenantry run` as a child process, alone on a dedicated control plane, without leader
/// election (nothing else writes). Its logs go to `log` (appended across restarts): info,
/// and at debug which objects it found different from the desired ones and applied.
pub(crate) struct Operator {
    child: tokio::process::Child,
    port: u16,
    started: Instant,
}

impl Operator {
    fn start(kubeconfig: &Path, log: &Path) -> Self {
        Self::start_with(kubeconfig, log, &[])
    }

    /// `tenantry run` with `flags` (operator settings) on `kubeconfig`, ready to serve;
    /// its log in `target/controlplane/<log>.log`, started afresh.
    pub(crate) async fn ready_with(kubeconfig: &Path, log: &str, flags: &[&str]) -> Self {
        let log = operator_log(log);
        let operator = Self::start_with(kubeconfig, &log, flags);
        operator
            .wait_ready(Instant::now() + crate::harness::TIMEOUT)
            .await;
        operator
    }

    /// `start`, with more `tenantry run` flags (operator settings).
    pub(crate) fn start_with(kubeconfig: &Path, log: &Path, flags: &[&str]) -> Self {
        let port = crate::harness::free_port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args([
                "run",
                "--leader-election=false",
                "--admin-address",
                &format!("127.0.0.1:{port}"),
                "--log-format",
                "json",
            ])
            .args(flags)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,tenantry::provision=debug")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start tenantry run");
        Self {
            child,
            port,
            started: Instant::now(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("a running process")
    }

    /// `kill -9`, and reap it.
    pub(crate) async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = self.child.wait().await.expect("reaped");
        assert!(!status.success(), "killed, not exited: {status}");
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let status = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    }

    pub(crate) async fn wait_ready(&self, deadline: Instant) {
        while self.get("/readyz").await.map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "/readyz never turned 200");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits, `windows` times at most, for a `window` in which this process writes
    /// nothing; the window it was quiet in.
    async fn quiet(&self, window: Duration, windows: u32) -> Option<u32> {
        let mut before = self.metrics().await.writes();
        for n in 1..=windows {
            tokio::time::sleep(window).await;
            let now = self.metrics().await.writes();
            if now == before {
                return Some(n);
            }
            before = now;
        }
        None
    }

    async fn metrics(&self) -> Metrics {
        match self.get("/metrics").await {
            Some((200, body)) => Metrics(body),
            other => panic!("/metrics: {other:?}"),
        }
    }
}

/// A `/metrics` page.
struct Metrics(String);

impl Metrics {
    /// The samples of `name` (without labels' braces: `verb="apply",kind="Secret"`).
    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
    }

    /// The sum of the samples of `name` whose labels contain every one of `with`.
    fn sum(&self, name: &str, with: &[&str]) -> f64 {
        self.samples(name)
            .filter(|(l, _)| with.iter().all(|w| l.split(',').any(|kv| kv == *w)))
            .fold(0.0, |sum, (_, v)| sum + v)
    }

    /// Writes by any means: Tenantry's own count, and the requests that change something.
    fn writes(&self) -> (f64, f64) {
        let requests = ["create", "patch", "update", "delete"]
            .iter()
            .map(|v| self.sum("tenantry_api_requests_total", &[&format!("verb=\"{v}\"")]))
            .sum();
        (self.sum("tenantry_api_writes_total", &[]), requests)
    }

    /// Every write sample, for a failure message.
    fn write_lines(&self) -> String {
        self.0
            .lines()
            .filter(|l| {
                l.starts_with("tenantry_api_writes_total")
                    || (l.starts_with("tenantry_api_requests_total")
                        && !["get", "list", "watch"]
                            .iter()
                            .any(|v| l.contains(&format!("verb=\"{v}\""))))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------- applying a tenancy ----------

/// Creates `obj`, retrying while its namespace does not exist yet (404: the organization
/// namespace is the controller's to create) and while the API server is away; an object
/// that already exists (a create whose answer was lost) counts as created.
async fn create<K>(api: Api<K>, obj: K, deadline: Instant)
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let what = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    loop {
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(kube::Error::Api(s)) if s.code < 500 && s.code != 404 && s.code != 429 => {
                panic!("creating {what}: {s:?}")
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "could not create {what} in time: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Applies a tenancy: the Organizations first, then each organization's Workspaces and
/// Memberships once its namespace exists.
async fn apply(client: Client, t: Tenancy, deadline: Instant) {
    let orgs: Api<Organization> = Api::all(client.clone());
    for org in &t.organizations {
        create(orgs.clone(), org.clone(), deadline).await;
    }
    let per_org = t.organizations.iter().map(|org| {
        let ns = names::org_namespace(&org.name_any());
        let wss: Vec<Workspace> = t
            .workspaces
            .iter()
            .filter(|w| w.namespace().as_deref() == Some(ns.as_str()))
            .cloned()
            .collect();
        let mbs: Vec<Membership> = t
            .memberships
            .iter()
            .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
            .cloned()
            .collect();
        let client = client.clone();
        async move {
            for ws in wss {
                create(Api::namespaced(client.clone(), &ns), ws, deadline).await;
            }
            for m in mbs {
                create(Api::namespaced(client.clone(), &ns), m, deadline).await;
            }
        }
    });
    futures::future::join_all(per_org).await;
}

// ---------- client secrets, as first seen ----------

type SecretData = BTreeMap<String, Vec<u8>>;

/// Every machine-client Secret's data the first time it was seen, and every later
/// change to it (there must be none: a secret is issued once).
#[derive(Default)]
struct Issued {
    first: BTreeMap<(String, String), SecretData>,
    changes: Vec<String>,
}

fn data_of(s: &Secret) -> SecretData {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Watches the client Secrets (through outages: the watch retries) into an [`Issued`].
fn record_secrets(client: Client) -> (Arc<Mutex<Issued>>, tokio::task::JoinHandle<()>) {
    let issued = Arc::new(Mutex::new(Issued::default()));
    let record = issued.clone();
    let api: Api<Secret> = Api::all(client);
    let selector = format!("{}=client-credentials", labels::COMPONENT);
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let Ok(secret) = event else { continue };
            let key = (secret.namespace().unwrap_or_default(), secret.name_any());
            let data = data_of(&secret);
            let mut issued = record.lock().unwrap();
            match issued.first.get(&key) {
                None => {
                    issued.first.insert(key, data);
                }
                Some(first) if *first != data => {
                    let change = format!(
                        "Secret {}/{} changed (resourceVersion {:?}): keys {:?}",
                        key.0,
                        key.1,
                        secret.resource_version(),
                        data.keys().collect::<Vec<_>>()
                    );
                    issued.changes.push(change);
                }
                Some(_) => {}
            }
        }
    });
    (issued, task)
}

// ---------- the world the spec describes ----------

/// A subject as `Kind:namespace:name`.
fn subject_key(s: &RbacSubject) -> String {
    format!(
        "{}:{}:{}",
        s.kind,
        s.namespace.clone().unwrap_or_default(),
        s.name
    )
}

/// A RoleBinding or ClusterRoleBinding: the role it binds and its subjects.
type Binding = (String, BTreeSet<String>);

/// A workspace's namespace and members (`Kind:name`, role).
type WorkspaceWorld = (String, BTreeSet<(String, WorkspaceRole)>);

/// What the spec says must exist once everything is Ready.
struct Expected {
    /// Every namespace Tenantry manages: organization and workspace namespaces.
    namespaces: BTreeSet<String>,
    /// RoleBindings by (namespace, name).
    bindings: BTreeMap<(String, String), Binding>,
    /// The per-organization ClusterRoleBindings (`tenantry:org:<org>:<tier>`).
    cluster_bindings: BTreeMap<String, Binding>,
    /// Workspace (org namespace, name) -> its namespace and members (kind:name, role).
    workspaces: BTreeMap<(String, String), WorkspaceWorld>,
    /// Organization -> (workspaces, members) its status counts.
    counts: BTreeMap<String, (i32, i32)>,
    /// Client Memberships: (org namespace, membership).
    clients: BTreeSet<(String, String)>,
}

/// Computes the expected world with the rules the controller uses (`grants`, `rbac`):
/// every Membership of the generated tenancy is granted (no duplicates, no limits).
fn expected(t: &Tenancy) -> Expected {
    let settings = tenantry::settings::Settings::default();
    let mut e = Expected {
        namespaces: BTreeSet::new(),
        bindings: BTreeMap::new(),
        cluster_bindings: BTreeMap::new(),
        workspaces: BTreeMap::new(),
        counts: BTreeMap::new(),
        clients: BTreeSet::new(),
    };
    let keys = |subjects: Vec<RbacSubject>| subjects.iter().map(subject_key).collect();
    for org in &t.organizations {
        let name = org.name_any();
        let ns = names::org_namespace(&name);
        e.namespaces.insert(ns.clone());
        let members: Vec<&Membership> = t
            .memberships
            .iter()
            .filter(|m| m.namespace().as_deref() == Some(ns.as_str()))
            .collect();
        let wss: Vec<&Workspace> = t
            .workspaces
            .iter()
            .filter(|w| w.namespace().as_deref() == Some(ns.as_str()))
            .collect();
        e.counts
            .insert(name.clone(), (wss.len() as i32, members.len() as i32));
        let states = grants::member_states(org, &members, grants::Gates::default());
        assert!(
            states.values().all(|s| *s == grants::MemberState::Granted),
            "the generated tenancy grants every membership: {states:?}"
        );
        for m in &members {
            if m.spec.subject.kind == SubjectKind::Client {
                e.clients.insert((ns.clone(), m.name_any()));
            }
        }
        let holders = grants::org_role_holders(org, &members, &states);
        let subjects_of = |roles: &[OrgRole]| -> Vec<RbacSubject> {
            roles
                .iter()
                .flat_map(|r| holders.get(r).cloned().unwrap_or_default())
                .map(|(s, m)| grants::rbac_subject(&s, m.as_deref().unwrap_or(""), &ns))
                .collect()
        };
        for role in OrgRole::ALL {
            let subjects = subjects_of(&[role]);
            if !subjects.is_empty() {
                let binding = rbac::org_cluster_role(role);
                e.bindings
                    .insert((ns.clone(), binding.clone()), (binding, keys(subjects)));
            }
        }
        // Admins read the credentials of clients below Owner, by name.
        let admins = subjects_of(&[OrgRole::Admin]);
        if !admins.is_empty() && !grants::admin_readable_credentials(&members, |_| true).is_empty()
        {
            let binding = rbac::CLIENT_CREDENTIALS.to_string();
            e.bindings
                .insert((ns.clone(), binding.clone()), (binding, keys(admins)));
        }
        for (tier, roles) in [
            ("reader", OrgRole::ALL.to_vec()),
            ("editor", vec![OrgRole::Owner, OrgRole::Admin]),
            ("owner", vec![OrgRole::Owner]),
        ] {
            let binding = format!("tenantry:org:{name}:{tier}");
            e.cluster_bindings
                .insert(binding.clone(), (binding, keys(subjects_of(&roles))));
        }
        for ws in wss {
            let ws_name = ws.name_any();
            let ws_ns = names::workspace_namespace(
                &settings.namespace_template,
                &name,
                &ws_name,
                &settings.operator_namespace,
                &settings.reserved(),
            )
            .expect("a valid workspace namespace");
            e.namespaces.insert(ws_ns.clone());
            let grantees = grants::workspace_grantees(org, ws, &members, &states);
            for role in WorkspaceRole::ALL {
                let subjects: Vec<RbacSubject> = grantees
                    .iter()
                    .filter(|g| g.role == role)
                    .map(|g| {
                        grants::rbac_subject(&g.subject, g.membership.as_deref().unwrap_or(""), &ns)
                    })
                    .collect();
                if !subjects.is_empty() {
                    let binding = rbac::workspace_cluster_role(role);
                    e.bindings
                        .insert((ws_ns.clone(), binding.clone()), (binding, keys(subjects)));
                }
            }
            let members = grantees
                .iter()
                .map(|g| (format!("{:?}:{}", g.subject.kind, g.subject.name), g.role))
                .collect();
            e.workspaces.insert((ns.clone(), ws_name), (ws_ns, members));
        }
    }
    e
}

/// Ready=True for the current generation, in the conditions and in `observedGeneration`.
fn ready(conditions: &[Condition], observed: Option<i64>, generation: Option<i64>) -> bool {
    observed == generation
        && conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation
        })
}

/// How far the world is from the spec: every difference, or none.
async fn differences(client: &Client, t: &Tenancy, e: &Expected, issued: &Issued) -> Vec<String> {
    let mut diff = Vec::new();
    let all = ListParams::default();

    // The three kinds: Ready, current, and the status the spec implies.
    let orgs: BTreeMap<String, Organization> =
        match Api::<Organization>::all(client.clone()).list(&all).await {
            Ok(l) => l.items.into_iter().map(|o| (o.name_any(), o)).collect(),
            Err(e) => return vec![format!("listing Organizations: {e}")],
        };
    for org in &t.organizations {
        let name = org.name_any();
        let Some(live) = orgs.get(&name) else {
            diff.push(format!("Organization {name} missing"));
            continue;
        };
        let status = live.status.clone().unwrap_or_default();
        if !ready(
            &status.conditions,
            status.observed_generation,
            live.meta().generation,
        ) {
            diff.push(format!(
                "Organization {name} not Ready: {:?}",
                status.conditions
            ));
        } else if Some(&(status.workspaces, status.members)) != e.counts.get(&name) {
            diff.push(format!(
                "Organization {name} counts {} workspaces, {} members; expected {:?}",
                status.workspaces,
                status.members,
                e.counts.get(&name)
            ));
        }
    }
    let wss: BTreeMap<(String, String), Workspace> =
        match Api::<Workspace>::all(client.clone()).list(&all).await {
            Ok(l) => l
                .items
                .into_iter()
                .map(|w| ((w.namespace().unwrap_or_default(), w.name_any()), w))
                .collect(),
            Err(e) => return vec![format!("listing Workspaces: {e}")],
        };
    for (key, (ws_ns, members)) in &e.workspaces {
        let Some(live) = wss.get(key) else {
            diff.push(format!("Workspace {key:?} missing"));
            continue;
        };
        let status = live.status.clone().unwrap_or_default();
        let got: BTreeSet<(String, WorkspaceRole)> = status
            .members
            .iter()
            .map(|m| (format!("{:?}:{}", m.kind, m.name), m.role))
            .collect();
        if !ready(
            &status.conditions,
            status.observed_generation,
            live.meta().generation,
        ) {
            diff.push(format!(
                "Workspace {key:?} not Ready: {:?}",
                status.conditions
            ));
        } else if status.namespace.as_ref() != Some(ws_ns) || &got != members {
            diff.push(format!(
                "Workspace {key:?} status: namespace {:?}, members {got:?}; expected {ws_ns}, {members:?}",
                status.namespace
            ));
        }
    }
    if wss.len() != e.workspaces.len() {
        diff.push(format!(
            "{} Workspaces exist, {} expected",
            wss.len(),
            e.workspaces.len()
        ));
    }
    let mbs: BTreeMap<(String, String), Membership> =
        match Api::<Membership>::all(client.clone()).list(&all).await {
            Ok(l) => l
                .items
                .into_iter()
                .map(|m| ((m.namespace().unwrap_or_default(), m.name_any()), m))
                .collect(),
            Err(e) => return vec![format!("listing Memberships: {e}")],
        };
    for m in &t.memberships {
        let key = (m.namespace().unwrap_or_default(), m.name_any());
        let Some(live) = mbs.get(&key) else {
            diff.push(format!("Membership {key:?} missing"));
            continue;
        };
        let status = live.status.clone().unwrap_or_default();
        if !ready(
            &status.conditions,
            status.observed_generation,
            live.meta().generation,
        ) {
            diff.push(format!(
                "Membership {key:?} not Ready: {:?}",
                status.conditions
            ));
        } else if e.clients.contains(&key) && status.client_id().is_none() {
            diff.push(format!("Membership {key:?}: no status.clientId"));
        }
    }

    // Exactly the expected namespaces.
    let managed = ListParams::default().labels(&labels::managed_selector());
    match Api::<Namespace>::all(client.clone()).list(&managed).await {
        Ok(l) => {
            let got: BTreeSet<String> = l.items.iter().map(|n| n.name_any()).collect();
            for missing in e.namespaces.difference(&got) {
                diff.push(format!("namespace {missing} missing"));
            }
            for extra in got.difference(&e.namespaces) {
                diff.push(format!("namespace {extra} is not in the spec"));
            }
            for ns in &l.items {
                if ns.meta().deletion_timestamp.is_some() {
                    diff.push(format!("namespace {} is terminating", ns.name_any()));
                }
            }
        }
        Err(e) => diff.push(format!("listing namespaces: {e}")),
    }

    // Exactly the expected RoleBindings in every managed namespace (and none of
    // Tenantry's anywhere else), and the per-organization ClusterRoleBindings.
    match Api::<RoleBinding>::all(client.clone()).list(&all).await {
        Ok(l) => {
            let got: BTreeMap<(String, String), Binding> = l
                .items
                .into_iter()
                .filter(|rb| {
                    e.namespaces.contains(&rb.namespace().unwrap_or_default())
                        || rb.labels().get(labels::MANAGED_BY).map(String::as_str)
                            == Some(labels::MANAGED_BY_VALUE)
                })
                .map(|rb| {
                    let subjects = rb.subjects.iter().flatten().map(subject_key).collect();
                    (
                        (rb.namespace().unwrap_or_default(), rb.name_any()),
                        (rb.role_ref.name, subjects),
                    )
                })
                .collect();
            compare("RoleBinding", &e.bindings, &got, &mut diff);
        }
        Err(e) => diff.push(format!("listing RoleBindings: {e}")),
    }
    let per_org = ListParams::default().labels(labels::ORGANIZATION);
    match Api::<ClusterRoleBinding>::all(client.clone())
        .list(&per_org)
        .await
    {
        Ok(l) => {
            let got: BTreeMap<String, Binding> = l
                .items
                .into_iter()
                .map(|b| {
                    let subjects = b.subjects.iter().flatten().map(subject_key).collect();
                    (b.name_any(), (b.role_ref.name, subjects))
                })
                .collect();
            compare("ClusterRoleBinding", &e.cluster_bindings, &got, &mut diff);
        }
        Err(e) => diff.push(format!("listing ClusterRoleBindings: {e}")),
    }

    // Every client's Secret is the one first issued, and its ServiceAccount's verifier
    // accepts it.
    for (ns, m) in &e.clients {
        let secret_name = names::client_secret_name(m);
        let secret = match Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&secret_name)
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => {
                diff.push(format!("Secret {ns}/{secret_name} missing"));
                continue;
            }
            Err(e) => {
                diff.push(format!("reading Secret {ns}/{secret_name}: {e}"));
                continue;
            }
        };
        let data = data_of(&secret);
        match issued.first.get(&(ns.clone(), secret_name.clone())) {
            Some(first) if *first != data => diff.push(format!(
                "Secret {ns}/{secret_name} is not the one first issued"
            )),
            Some(_) => {}
            None => diff.push(format!(
                "Secret {ns}/{secret_name} was never seen by the watch"
            )),
        }
        let sa_name = names::client_service_account(m);
        let hash = Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .get_opt(&sa_name)
            .await
            .ok()
            .flatten()
            .and_then(|sa| sa.annotations().get(tenantry::credentials::HASH).cloned());
        let value = data
            .get("client-secret")
            .map(|v| String::from_utf8_lossy(v).to_string());
        match (hash, value) {
            (Some(hash), Some(value)) if tenantry::credentials::verify(&value, &hash) => {}
            (hash, value) => diff.push(format!(
                "client {ns}/{m}: the verifier on ServiceAccount {sa_name} (present: {}) does not accept the secret in {secret_name} (present: {})",
                hash.is_some(),
                value.is_some()
            )),
        }
    }
    diff.extend(issued.changes.iter().cloned());
    diff
}

/// Adds the differences between two maps of bindings to `diff`.
fn compare<K: Ord + std::fmt::Debug>(
    kind: &str,
    want: &BTreeMap<K, Binding>,
    got: &BTreeMap<K, Binding>,
    diff: &mut Vec<String>,
) {
    for (key, w) in want {
        match got.get(key) {
            None => diff.push(format!("{kind} {key:?} missing")),
            Some(g) if g != w => diff.push(format!("{kind} {key:?} is {g:?}, expected {w:?}")),
            Some(_) => {}
        }
    }
    for key in got.keys().filter(|k| !want.contains_key(*k)) {
        diff.push(format!("{kind} {key:?} is not in the spec"));
    }
}

/// Waits (polling once a second) until the world matches the spec exactly; panics with
/// the remaining differences at `deadline`.
async fn converge(
    client: &Client,
    t: &Tenancy,
    e: &Expected,
    issued: &Mutex<Issued>,
    deadline: Instant,
) {
    // A copy: the lock is never held across an await.
    let snapshot = || {
        let i = issued.lock().unwrap();
        Issued {
            first: i.first.clone(),
            changes: i.changes.clone(),
        }
    };
    let mut said = Instant::now();
    loop {
        let seen = snapshot();
        let mut diff = differences(client, t, e, &seen).await;
        if diff
            .iter()
            .any(|d| d.ends_with("was never seen by the watch"))
        {
            // Written just now: the watch sees it within moments of the lists.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let seen = snapshot();
            diff = differences(client, t, e, &seen).await;
        }
        if diff.is_empty() {
            return;
        }
        if said.elapsed() > Duration::from_secs(15) {
            said = Instant::now();
            println!(
                "resilience: converging: {} differences left, e.g. {}",
                diff.len(),
                diff[0]
            );
        }
        if Instant::now() > deadline {
            let n = diff.len();
            diff.truncate(40);
            panic!(
                "the world does not match the spec ({n} differences; first ones):\n{}",
                diff.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn operator_log(test: &str) -> PathBuf {
    let log = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/controlplane/resilience-{test}.log"));
    let _ = std::fs::remove_file(&log);
    log
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The objects of a tenancy by kind, as the reconcile metrics count them.
fn kinds(t: &Tenancy) -> [(&'static str, usize); 3] {
    [
        ("Organization", t.organizations.len()),
        ("Workspace", t.workspaces.len()),
        ("Membership", t.memberships.len()),
    ]
}

/// Waits until `operator` has reconciled every object of `t` at least once.
async fn full_pass(operator: &Operator, t: &Tenancy, deadline: Instant) {
    loop {
        let m = operator.metrics().await;
        let done = kinds(t).iter().all(|(kind, n)| {
            m.sum(
                "tenantry_reconciles_total",
                &[&format!("kind=\"{kind}\""), "result=\"ok\""],
            ) >= *n as f64
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the binary did not reconcile every object:\n{}",
            m.0
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------- the tests ----------

/// Runs one test, one at a time, and fails it if it outlives its bound (with a margin for
/// starting and stopping its control plane).
async fn bounded(test: impl std::future::Future<Output = ()>) {
    let _one = ONE_AT_A_TIME.lock().await;
    let limit = BOUND + Duration::from_secs(30);
    if tokio::time::timeout(limit, test).await.is_err() {
        panic!("the test did not end within {limit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_leaves_the_world_exactly_as_specified() {
    bounded(kill_9_at_random_points()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_mid_convergence_is_survived_by_the_same_process() {
    bounded(api_server_outage_mid_convergence()).await
}

async fn kill_9_at_random_points() {
    let began = Instant::now();
    let deadline = began + BOUND;
    let mut rng = Prng::from_env_or_clock();
    let cp: Dedicated = dedicated().await;
    let client = cp.admin().await;
    let t = tenantry::synthetic::tenancy(
        "k",
        Size {
            organizations: 20,
            workspaces: 3,
            members: 4,
            clients: 1,
        },
    );
    let e = expected(&t);
    let (issued, recorder) = record_secrets(client.clone());
    let log = operator_log("kill");
    println!(
        "resilience: {} organizations, {} workspaces, {} memberships; operator log {}",
        t.organizations.len(),
        t.workspaces.len(),
        t.memberships.len(),
        log.display()
    );

    let mut operator = Operator::start(&cp.kubeconfig, &log);
    let applying = tokio::spawn(apply(client.clone(), t.clone(), deadline));
    let kills = 3 + (rng.next() % 2) as usize;
    for k in 1..=kills {
        let delay = rng.millis(500, 4000);
        tokio::time::sleep(delay).await;
        let pid = operator.pid();
        operator.kill9().await;
        println!(
            "resilience: kill -9 #{k} of pid {pid} after {} (test time {})",
            secs(delay),
            secs(began.elapsed())
        );
        operator = Operator::start(&cp.kubeconfig, &log);
    }
    let last_start = operator.started;
    applying.await.expect("applying the tenancy");
    converge(&client, &t, &e, &issued, deadline).await;
    let converged = last_start.elapsed();
    println!(
        "resilience: converged {} after the last restart ({} kills; {} since the first start)",
        secs(converged),
        kills,
        secs(began.elapsed())
    );

    // Converged objects are not yet a quiet controller: a status detail the pacer held
    // back (written at most every 5 s per object, longer while it keeps changing) may
    // still be due, and the next process would rightly write it (a CI run failed so: the
    // last process was killed 0.2 s after its start, before its first pass, and the one
    // before it had held back six Organizations' usage). Wait for a full pass of this
    // process and a 15 s window without a write.
    operator.wait_ready(deadline).await;
    full_pass(&operator, &t, deadline).await;
    assert!(
        operator.quiet(Duration::from_secs(15), 4).await.is_some(),
        "the controller kept writing after the world converged"
    );

    // One more restart on the converged world: a full pass that writes nothing.
    operator.kill9().await;
    let operator = Operator::start(&cp.kubeconfig, &log);
    operator.wait_ready(deadline).await;
    let pass = Instant::now();
    full_pass(&operator, &t, deadline).await;
    let full_pass = pass.elapsed();
    // Idle: nothing may be written, from the restart on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = operator.metrics().await;
    let (writes, changing_requests) = m.writes();
    println!(
        "resilience: restart on the converged world: a full pass in {} (after /readyz), then 5s idle: {writes} writes, {changing_requests} changing requests, {} GETs, {} LISTs, {} WATCHes",
        secs(full_pass),
        m.sum("tenantry_api_requests_total", &["verb=\"get\""]),
        m.sum("tenantry_api_requests_total", &["verb=\"list\""]),
        m.sum("tenantry_api_requests_total", &["verb=\"watch\""]),
    );
    assert_eq!(
        (writes, changing_requests),
        (0.0, 0.0),
        "a restart on a converged world writes nothing:\n{}",
        m.write_lines()
    );
    // Still exactly the world of the spec, with the same secrets.
    converge(&client, &t, &e, &issued, deadline).await;
    assert_eq!(
        issued.lock().unwrap().first.len(),
        e.clients.len(),
        "one Secret per client"
    );
    recorder.abort();
    println!("resilience: kill test done in {}", secs(began.elapsed()));
}

async fn api_server_outage_mid_convergence() {
    let began = Instant::now();
    let deadline = began + BOUND;
    let cp = dedicated().await;
    let client = cp.admin().await;
    let t = tenantry::synthetic::tenancy(
        "o",
        Size {
            organizations: 15,
            workspaces: 3,
            members: 4,
            clients: 1,
        },
    );
    let e = expected(&t);
    let (issued, recorder) = record_secrets(client.clone());
    let log = operator_log("outage");
    let mut operator = Operator::start(&cp.kubeconfig, &log);
    let pid = operator.pid();
    operator.wait_ready(deadline).await;
    println!(
        "resilience: operator pid {pid} ready; applying {} organizations; operator log {}; control plane log {}",
        t.organizations.len(),
        log.display(),
        cp.log.display()
    );
    let applying = tokio::spawn(apply(client.clone(), t.clone(), deadline));

    // Mid-convergence: once a third of the organizations are Ready.
    let orgs: Api<Organization> = Api::all(client.clone());
    let third = t.organizations.len() / 3;
    let ready_orgs = loop {
        let n = orgs
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|o| {
                        o.status.as_ref().is_some_and(|s| {
                            ready(&s.conditions, s.observed_generation, o.meta().generation)
                        })
                    })
                    .count()
            })
            .unwrap_or(0);
        if n >= third {
            break n;
        }
        assert!(Instant::now() < deadline, "no organization got Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ready_wss = Api::<Workspace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|w| {
                    w.status.as_ref().is_some_and(|s| {
                        ready(&s.conditions, s.observed_generation, w.meta().generation)
                    })
                })
                .count()
        })
        .unwrap_or(0);
    cp.signal("USR1");
    let down_at = Instant::now();
    println!(
        "resilience: SIGUSR1 to the control plane at {} ({ready_orgs}/{} organizations and {ready_wss}/{} workspaces Ready)",
        secs(began.elapsed()),
        t.organizations.len(),
        t.workspaces.len()
    );
    // Wait until the API server is really gone, then keep it down for ~8 s.
    while client.apiserver_version().await.is_ok() {
        assert!(
            down_at.elapsed() < Duration::from_secs(60),
            "the API server did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = down_at.elapsed();
    tokio::time::sleep(Duration::from_secs(8)).await;
    cp.signal("USR2");
    let up_at = Instant::now();
    while client.apiserver_version().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the API server did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = up_at.elapsed();
    println!(
        "resilience: API server gone {} after SIGUSR1, down {} in all; answering {} after SIGUSR2",
        secs(gone),
        secs(up_at - down_at),
        secs(back)
    );
    assert!(
        operator.child.try_wait().expect("try_wait").is_none(),
        "the binary exited during the outage (see {})",
        log.display()
    );

    applying.await.expect("applying the tenancy");
    converge(&client, &t, &e, &issued, deadline).await;
    let recovered = up_at.elapsed();
    assert_eq!(operator.pid(), pid, "the same process");
    assert!(
        operator.child.try_wait().expect("try_wait").is_none(),
        "the same process, still running"
    );
    println!(
        "resilience: every object Ready and the world as specified {} after SIGUSR2 (the same process, pid {pid})",
        secs(recovered)
    );

    // Settled: no write loop after the outage. The world may still tell something new for
    // a few seconds (the controller manager, back from the same outage, fills in the
    // ResourceQuotas' usage late, which the organizations' status.usage reports); a loop
    // never stops writing, so the test waits for one quiet 5 s window, at most six.
    let quiet = operator.quiet(Duration::from_secs(5), 6).await;
    if let Some(window) = quiet {
        println!("resilience: quiet in idle window {window} of 5 s");
    }
    let quiet = quiet.is_some();
    let m = operator.metrics().await;
    assert!(
        quiet,
        "nothing written while idle after recovery (still writing after 30 s):\n{}",
        m.write_lines()
    );
    let errors = m.sum("tenantry_reconciles_total", &["result=\"error\""]);
    println!(
        "resilience: {errors} failed reconciles in all (the outage's); outage test done in {}",
        secs(began.elapsed())
    );
    recorder.abort();
}

/// What `kill -9` between writing a client's Secret and writing its verifier leaves
/// behind, made on purpose (the random kills hit that window now and then): the next
/// pass finishes that issuance with the secret already delivered, never a new one.
#[tokio::test]
async fn an_issuance_cut_short_before_the_verifier_keeps_its_secret() {
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    use tenantry::api::Subject;

    let _ = crate::harness::controller();
    let client = crate::harness::admin().await;
    let name = crate::harness::unique("cut");
    crate::core::create_org(&client, &name, crate::core::org_spec("o@x.example")).await;
    crate::core::add_member(
        &client,
        &name,
        crate::core::membership(
            "ci",
            Subject::client("ci"),
            OrgRole::Member,
            &[("default", WorkspaceRole::Editor)],
        ),
    )
    .await;
    crate::core::wait_member_reason(&client, &name, "ci", "Granted").await;
    let org_ns = names::org_namespace(&name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &org_ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &org_ns);
    let value = |s: &Secret| String::from_utf8(data_of(s)["client-secret"].clone()).unwrap();
    let hash_of = |sa: &ServiceAccount| {
        sa.annotations()
            .get(tenantry::credentials::HASH)
            .cloned()
            .unwrap_or_default()
    };
    let issued = secrets.get("ci-credentials").await.unwrap();
    let first = value(&issued);

    // The first issuance, cut short: the Secret is there, the verifier is not.
    sas.patch(
        "ci-client",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {tenantry::credentials::HASH: null}}})),
    )
    .await
    .unwrap();
    let sa = crate::harness::wait_for(
        &sas,
        "ci-client",
        "a verifier again",
        |sa: Option<&ServiceAccount>| {
            sa.is_some_and(|sa| sa.annotations().contains_key(tenantry::credentials::HASH))
        },
    )
    .await
    .unwrap();
    let now = secrets.get("ci-credentials").await.unwrap();
    assert_eq!(value(&now), first, "the delivered secret stays");
    assert_eq!(now.resource_version(), issued.resource_version());
    assert!(
        tenantry::credentials::verify(&first, &hash_of(&sa)),
        "the new verifier accepts the secret delivered before the cut"
    );

    // A rotation, cut short: the Secret holds the new secret (with its hash, in the
    // annotation only Tenantry writes), the verifier is the old one.
    let rotated = tenantry::credentials::generate().unwrap();
    let written = tenantry::credentials::hash(&rotated).unwrap();
    secrets
        .patch(
            "ci-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {tenantry::credentials::HASH: written}},
                "stringData": {"client-secret": rotated},
            })),
        )
        .await
        .unwrap();
    Api::<Membership>::namespaced(client.clone(), &org_ns)
        .patch(
            "ci",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {tenantry::credentials::ROTATE: "r1"}}}),
            ),
        )
        .await
        .unwrap();
    let sa = crate::harness::wait_for(
        &sas,
        "ci-client",
        "rotation r1 handled",
        |sa: Option<&ServiceAccount>| {
            sa.and_then(|sa| {
                sa.annotations()
                    .get(tenantry::credentials::ROTATION)
                    .cloned()
            })
            .as_deref()
                == Some("r1")
        },
    )
    .await
    .unwrap();
    let now = secrets.get("ci-credentials").await.unwrap();
    assert_eq!(
        value(&now),
        rotated,
        "the rotated secret already delivered stays"
    );
    assert!(tenantry::credentials::verify(&rotated, &hash_of(&sa)));
    assert!(!tenantry::credentials::verify(&first, &hash_of(&sa)));
    crate::core::delete_org(&client, &name).await;
}
