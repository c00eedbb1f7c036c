//! `make bench`: Tenantry at scale on the local control plane, against the limit a direct
//! client reaches on the same API server.
//!
//! For each size (multiples of the default 200 organizations x 5 workspaces x 10 members
//! + 1 machine client), on a fresh control plane:
//!
//! 1. start `tenantry run` (this build, release profile) and apply the generated tenancy
//!    (`tenantry::synthetic`) with `--concurrency` parallel creates; measure apply to
//!    Ready per object (p50/p99) and in total, the controller's API requests by verb
//!    (`tenantry_api_requests_total`), its peak RSS and CPU seconds, and the control
//!    plane's CPU seconds;
//! 2. idle for `--idle-seconds`: count the controller's writes (target 0), settled RSS;
//! 3. restart the controller with everything converged: time until every object has been
//!    reconciled and the controller is quiet, and the writes it made (target 0);
//! 4. on a second fresh control plane, create the same final namespaces, quotas, limit
//!    ranges, network policies, roles, role bindings, ServiceAccounts and Secrets directly,
//!    with the same client (no QPS limit) and the controller's total concurrency: the raw
//!    limit. Report Tenantry's convergence time as a ratio to it;
//! 5. on a third fresh control plane, the fair limit: the same CRDs and admission policies
//!    installed, the direct client creates the custom resources too (with every child) and
//!    writes each custom resource's final status once, as a controller that knew the
//!    answer in advance would. Report the ratio to it as well.
//!
//! Results: a Markdown table on standard output and in `target/bench/report.md`, raw
//! numbers in `target/bench/results.jsonl`. Benchmarks measure; nothing here asserts a
//! timing.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, Resource, ResourceExt};
use serde::Serialize;
use tenantry::api::{Membership, Organization, Workspace};
use tenantry::synthetic::{Size, Tenancy};

#[derive(Parser)]
#[command(about = "Tenantry at scale on the local control plane")]
struct Args {
    /// Sizes to run, as multiples of the base size (e.g. 1,5,25).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    scales: Vec<usize>,
    #[command(flatten)]
    size: Size,
    /// Reconciles in flight per kind (`tenantry run --concurrency`); the apply and the
    /// direct-client baseline use three times this (the three controllers together).
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Seconds of idle after convergence in which writes are counted.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Give up on one size after this many seconds.
    #[arg(long, default_value_t = 7200)]
    timeout_seconds: u64,
    /// Restart the converged controller this many times, one after the other: a
    /// restart's time varies by half from one to the next on this machine (the API
    /// server's garbage collections), so one restart is not a measurement to compare.
    #[arg(long, default_value_t = 1)]
    restarts: usize,
    /// Skip the direct-client limits (raw and fair).
    #[arg(long)]
    no_baseline: bool,
    /// How the direct client writes each object for the limits: `create` (one POST) or
    /// `apply` (a server-side apply, as Tenantry writes): what the choice costs.
    #[arg(long, value_enum, default_value_t = WriteVerb::Create)]
    limit_writes: WriteVerb,
    /// Declare each organization's namespace in the same apply, labelled for its
    /// organization (the one-sync GitOps flow of docs/gitops.md), instead of leaving it to
    /// Tenantry (the Workspaces and Memberships are then refused with 404 and retried until
    /// it exists).
    #[arg(long)]
    declare_namespaces: bool,
    /// Remove Tenantry's MutatingAdmissionPolicy (`tenantry-finalizers`) after the install,
    /// for Tenantry and the fair limit: the reconcilers add their finalizers themselves, as
    /// on a cluster older than 1.36 (what the policy saves).
    #[arg(long)]
    without_mutating_policy: bool,
    /// An extra kube-apiserver flag for the control planes (repeatable), e.g.
    /// `--apiserver-arg=--profiling=true` to take a CPU profile during a run.
    #[arg(long)]
    apiserver_arg: Vec<String>,
    /// CPU profiles of the API server (it runs with `--profiling=true`): during Tenantry's
    /// run (from the apply to all Ready) and the fair limit's replay, one 5-second profile
    /// after another, in `target/bench/x<scale>/profiles/{tenantry,fair}-NNN.pprof`
    /// (`go tool pprof -top -cum target/bench/x1/profiles/tenantry-*.pprof` merges them).
    /// Needs kubectl on the PATH.
    #[arg(long)]
    apiserver_profile: bool,
    // `cargo bench` passes --bench.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Successive 5-second CPU profiles of a control plane's API server, each one file, until
/// [`Profiler::stop`] (which waits for the window in progress).
struct Profiler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Profiler {
    fn start(kubeconfig: &Path, dir: &Path, name: &'static str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, dir, flag) = (kubeconfig.to_path_buf(), dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut taken = 0;
            for i in 1.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let file = dir.join(format!("{name}-{i:03}.pprof"));
                let ok = std::fs::File::create(&file).ok().and_then(|out| {
                    Command::new("kubectl")
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(["get", "--raw", "/debug/pprof/profile?seconds=5"])
                        .stdout(out)
                        .stderr(Stdio::null())
                        .status()
                        .ok()
                });
                if ok.is_some_and(|s| s.success()) {
                    taken += 1;
                } else {
                    let _ = std::fs::remove_file(&file);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            taken
        });
        Ok(Self { stop, thread })
    }

    /// Stops after the profile in progress; says how many were taken.
    fn stop(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let taken = self.thread.join().unwrap_or(0);
        eprintln!("bench: {taken} API server CPU profiles of 5 s for {what}");
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------- the control plane and the controller as processes ----------

struct ControlPlane {
    child: Child,
    stdin: Option<ChildStdin>,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start(dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let bin = root().join("target/controlplane/bin/controlplane");
        if !bin.exists() {
            bail!("{} is missing: run `make controlplane`", bin.display());
        }
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("up.log"))?;
        let mut child = Command::new(&bin)
            .args(["up", "--lifeline", "--dir"])
            .arg(dir)
            .args(extra.iter().map(|a| format!("--apiserver-arg={a}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            if let Some(k) = line?.strip_prefix("READY ") {
                return Ok(Self {
                    child,
                    stdin,
                    kubeconfig: PathBuf::from(k),
                });
            }
        }
        bail!(
            "the control plane exited before it was ready; see {}",
            dir.join("up.log").display()
        )
    }

    /// CPU seconds used so far by each part of the control plane: the supervisor (etcd runs
    /// inside it), the API server and the controller-manager (children named by their
    /// first argument).
    fn cpu_by_part(&self) -> BTreeMap<String, f64> {
        self.pids()
            .into_iter()
            .map(|pid| {
                let part = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .and_then(|c| {
                        let arg = c.split(|b| *b == 0).nth(1)?.to_vec();
                        String::from_utf8(arg).ok()
                    })
                    .unwrap_or_default();
                let part = match part.as_str() {
                    "kube-apiserver" => "API server",
                    "kube-controller-manager" => "controller-manager",
                    _ => "etcd",
                };
                (part.to_string(), cpu_seconds(pid))
            })
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(k).or_insert(0.0) += v;
                m
            })
    }

    /// The supervisor and its children (etcd runs inside the supervisor).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let mut pids = vec![pid];
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            pids.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
        pids
    }

    async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(true).await
    }

    /// A client; `retry`: kube's default retry of 429, 503 and 504 answers.
    async fn client_with(&self, retry: bool) -> anyhow::Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        config.read_timeout = Some(Duration::from_secs(300));
        config.default_retry = retry;
        Ok(Client::try_from(config)?)
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

struct Controller {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Controller {
    /// `log_env`: the variable whose value is the controller's RUST_LOG (`warn` if unset).
    async fn start(
        kubeconfig: &Path,
        concurrency: u16,
        log: &Path,
        log_env: &str,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["run", "--leader-election=false", "--log-format=json"])
            .arg(format!("--admin-address=127.0.0.1:{port}"))
            .arg(format!("--concurrency={concurrency}"))
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var(log_env).unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::inherit())
            .spawn()?;
        let c = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(300);
        while http_get(port, "/readyz").await.map(|(s, _)| s) != Some(200) {
            if Instant::now() > deadline {
                bail!("the controller was not ready within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(c)
    }

    /// The controller's own series (what the benchmark reads, polled every 100-250 ms):
    /// not the per-organization ones, 3.4 MB of text at 25x (0.7 MB at 5x took the
    /// controller 2.6 ms to write), parsed again on each poll, on the same two cores as
    /// the run it measures.
    async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.text("/metrics?collect[]=controller").await)
    }

    /// Seconds from `since` to the last reconcile, once all `total` objects have been
    /// reconciled and none has been for 3 s (none: not by `since` + `deadline`).
    async fn settled(&self, since: Instant, total: usize, deadline: Duration) -> Option<f64> {
        let mut last = (0.0, Instant::now());
        loop {
            let n = self.metrics().await.sum("tenantry_reconciles_total", &[]);
            if n != last.0 {
                last = (n, Instant::now());
            } else if n >= total as f64 && last.1.elapsed() > Duration::from_secs(3) {
                return Some(last.1.duration_since(since).as_secs_f64());
            }
            if since.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every series (kept in files for a reader of the run).
    async fn metrics_text(&self) -> String {
        self.text("/metrics").await
    }

    async fn text(&self, path: &str) -> String {
        http_get(self.port, path)
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Keeps the controller's metrics as they are now in `file` (for a reader of the run).
    async fn save_metrics(&self, file: &Path) {
        let _ = std::fs::write(file, self.metrics_text().await);
    }

    /// What its caches hold now (`/debug/caches`).
    async fn caches(&self) -> anyhow::Result<BTreeMap<String, CacheSize>> {
        http_get(self.port, "/debug/caches")
            .await
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .context("the controller's /debug/caches")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_string()))
}

/// A Prometheus text exposition: sample name with labels -> value.
#[derive(Default, Clone)]
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        )
    }
    /// Sum of samples of `name` whose labels contain every `label="value"` given.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{name}{{")) && labels.iter().all(|l| k.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
    /// `tenantry_api_requests_total` by verb, minus `before`.
    fn requests_by_verb(&self, before: &Metrics) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for verb in [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ] {
            let l = format!("verb=\"{verb}\"");
            let n = self.sum("tenantry_api_requests_total", &[&l])
                - before.sum("tenantry_api_requests_total", &[&l]);
            out.insert(verb.to_string(), n.max(0.0) as u64);
        }
        out
    }
}

/// Keeps the API server's own request counts (`apiserver_request_total`: every client,
/// by verb, resource and code) in `file`, and all its metrics beside it
/// (`apiserver-metrics.txt`: storage, watch cache and admission), for a reader of the run.
async fn save_apiserver_requests(client: &Client, file: &Path) {
    let req = http::Request::get("/metrics").body(Vec::new());
    let Ok(req) = req else { return };
    if let Ok(text) = client.request_text(req).await {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .collect();
        let _ = std::fs::write(file, lines.join("\n"));
        let _ = std::fs::write(file.with_file_name("apiserver-metrics.txt"), text);
    }
}

/// Each part's CPU seconds from `before` to `after` ([`ControlPlane::cpu_by_part`]).
fn cpu_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

fn writes(by_verb: &BTreeMap<String, u64>) -> u64 {
    ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| by_verb.get(*v).copied().unwrap_or(0))
        .sum()
}

// ---------- process accounting from /proc ----------

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Waits until every ResourceQuota Tenantry made has a status from the control plane's
/// quota controller; returns how many had none at first.
async fn quotas_without_status(client: &Client, within: Duration) -> anyhow::Result<usize> {
    let api = Api::<ResourceQuota>::all(client.clone());
    let params = ListParams::default().labels(&tenantry::labels::managed_selector());
    let t = Instant::now();
    let mut first = None;
    loop {
        let mut missing = 0;
        let mut page = params.clone().limit(500);
        loop {
            let list = api.list(&page).await?;
            missing += list
                .items
                .iter()
                .filter(|q| q.status.as_ref().is_none_or(|s| s.hard.is_none()))
                .count();
            match list.metadata.continue_ {
                Some(c) if !c.is_empty() => page = page.continue_token(&c),
                _ => break,
            }
        }
        let first = *first.get_or_insert(missing);
        if missing == 0 {
            return Ok(first);
        }
        if t.elapsed() > within {
            bail!("{missing} quotas still have no status");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A `/proc/<pid>/status` value in MiB (VmRSS, VmHWM).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

// ---------- readiness ----------

fn ready(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation;
    obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"].as_i64() == generation
        })
}

type Key = (String, String, String);

fn key(kind: &str, obj: &DynamicObject) -> Key {
    (
        kind.to_string(),
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}

/// Records when each object is first seen Ready.
fn watch_ready(
    client: &Client,
    seen: Arc<Mutex<HashMap<Key, Instant>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (kind, ar) in [
        ("Organization", ApiResource::erase::<Organization>(&())),
        ("Workspace", ApiResource::erase::<Workspace>(&())),
        ("Membership", ApiResource::erase::<Membership>(&())),
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let objs = match ev {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                    _ => vec![],
                };
                let now = Instant::now();
                let mut seen = seen.lock().unwrap();
                for o in objs.iter().filter(|o| ready(o)) {
                    seen.entry(key(kind, o)).or_insert(now);
                }
            }
        }));
    }
    tasks
}

// ---------- applying ----------

/// Installs Tenantry's CRDs, roles and admission policies, and returns once the API server
/// admits Organizations: with `tenantry-finalizers`, it refuses them (503) for up to about
/// 10 s after the CRDs ([`tenantry::policy::await_admission`]), and the apply's clock
/// must not count that (kube's client retried those 503s with a backoff: 117 of them in
/// a 1x run, seconds before the first Organization was created).
async fn install(cp: &ControlPlane, client: &Client, mutating_policy: bool) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("tenantry-bench").force();
    for crd in tenantry::api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        await_condition(crds.clone(), &name, conditions::is_crd_established()).await?;
    }
    tenantry::rbac::install(client, &tenantry::settings::Settings::default()).await?;
    if !mutating_policy {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
        };
        for b in tenantry::policy::mutating_bindings() {
            Api::<MutatingAdmissionPolicyBinding>::all(client.clone())
                .delete(&b.name_any(), &Default::default())
                .await?;
        }
        for p in tenantry::policy::mutating_policies() {
            Api::<MutatingAdmissionPolicy>::all(client.clone())
                .delete(&p.name_any(), &Default::default())
                .await?;
        }
    }
    let ns = Namespace {
        metadata: kube::core::ObjectMeta {
            name: Some("tenantry-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    if mutating_policy {
        let probe = cp.client_with(false).await?;
        let took = tenantry::policy::await_admission(&probe, Duration::from_secs(120))
            .await
            .context("the API server did not admit an Organization")?;
        eprintln!(
            "bench: Organizations admitted {:.1} s after the install",
            took.as_secs_f64()
        );
    }
    Ok(())
}

/// Creates `objs` with `concurrency` requests in flight, retrying while the namespace is
/// missing (the controller creates `org-<org>`); returns when each was created.
async fn create_all<K>(
    client: &Client,
    kind: &'static str,
    objs: Vec<K>,
    concurrency: usize,
) -> anyhow::Result<Vec<(Key, Instant)>>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let ar = ApiResource::erase::<K>(&());
    let objs: Vec<DynamicObject> = objs
        .iter()
        .map(|o| serde_json::from_value(serde_json::to_value(o)?))
        .collect::<Result<_, _>>()?;
    futures::stream::iter(objs.into_iter().map(|obj| {
        let client = client.clone();
        let ar = ar.clone();
        async move {
            let ns = obj.namespace();
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(client, ns, &ar),
                None => Api::all_with(client, &ar),
            };
            let key = (kind.to_string(), ns.unwrap_or_default(), obj.name_any());
            loop {
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => return Ok((key, Instant::now())),
                    // The controller has not made the organization's namespace yet.
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(anyhow::anyhow!("creating {kind} {key:?}: {e}")),
                }
            }
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect()
    .await
}

// ---------- the direct-client baseline ----------

/// The managed objects of a converged cluster, ready to be created elsewhere.
struct Snapshot {
    cluster: Vec<(ApiResource, DynamicObject)>,
    namespaces: Vec<DynamicObject>,
    namespaced: Vec<(ApiResource, DynamicObject)>,
    /// Tenantry's custom resources with their final status: the Organizations (created
    /// with the namespaces), then the Workspaces and Memberships.
    organizations: Vec<(ApiResource, DynamicObject, serde_json::Value)>,
    members: Vec<(ApiResource, DynamicObject, serde_json::Value)>,
}

impl Snapshot {
    fn len(&self) -> usize {
        self.cluster.len() + self.namespaces.len() + self.namespaced.len()
    }
}

/// How `replay` writes each object.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum WriteVerb {
    Create,
    Apply,
}

/// Which limit `replay` measures.
#[derive(Clone, Copy, PartialEq)]
enum Limit {
    /// Tenantry's children only, on a bare control plane.
    Raw,
    /// The custom resources too, each with one status write, on a control plane with
    /// Tenantry's CRDs and admission policies installed.
    Fair,
}

fn clean(mut o: DynamicObject) -> DynamicObject {
    let m = &mut o.metadata;
    m.annotations
        .get_or_insert_default()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
    m.uid = None;
    m.resource_version = None;
    m.creation_timestamp = None;
    m.managed_fields = None;
    m.owner_references = None;
    m.generation = None;
    m.finalizers = None;
    if let Some(obj) = o.data.as_object_mut() {
        obj.remove("status");
    }
    o
}

/// Every object of `ar` (Tenantry's own kinds) or every object labelled as Tenantry's.
async fn list_raw(client: &Client, ar: &ApiResource) -> anyhow::Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    if ar.group != tenantry::api::GROUP {
        lp = lp.labels(&tenantry::labels::managed_selector());
    }
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(out),
        }
    }
}

async fn list_all(client: &Client, ar: &ApiResource) -> anyhow::Result<Vec<DynamicObject>> {
    Ok(list_raw(client, ar).await?.into_iter().map(clean).collect())
}

/// The custom resources of `K`, each with its status.
async fn list_custom<K: Resource<DynamicType = ()>>(
    client: &Client,
) -> anyhow::Result<Vec<(ApiResource, DynamicObject, serde_json::Value)>> {
    let ar = ApiResource::erase::<K>(&());
    Ok(list_raw(client, &ar)
        .await?
        .into_iter()
        .map(|o| {
            let status = o.data["status"].clone();
            (ar.clone(), clean(o), status)
        })
        .collect())
}

async fn snapshot(client: &Client) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot {
        cluster: Vec::new(),
        namespaces: list_all(client, &ApiResource::erase::<Namespace>(&())).await?,
        namespaced: Vec::new(),
        organizations: list_custom::<Organization>(client).await?,
        members: list_custom::<Workspace>(client).await?,
    };
    s.members.extend(list_custom::<Membership>(client).await?);
    for ar in [
        ApiResource::erase::<ClusterRole>(&()),
        ApiResource::erase::<ClusterRoleBinding>(&()),
    ] {
        for o in list_all(client, &ar).await? {
            s.cluster.push((ar.clone(), o));
        }
    }
    for ar in [
        ApiResource::erase::<ResourceQuota>(&()),
        ApiResource::erase::<LimitRange>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Secret>(&()),
    ] {
        for o in list_all(client, &ar).await? {
            s.namespaced.push((ar.clone(), o));
        }
    }
    Ok(s)
}

/// Creates the snapshot directly: cluster objects and namespaces (and, for the fair limit,
/// the Organizations), then what is in them (and the Workspaces and Memberships). For the
/// fair limit each custom resource's status is written right after its create. Returns
/// the number of requests.
async fn replay(
    client: &Client,
    s: &Snapshot,
    concurrency: usize,
    limit: Limit,
    write: WriteVerb,
) -> anyhow::Result<u64> {
    type Item = (ApiResource, DynamicObject, Option<serde_json::Value>);
    let plain = |v: &[(ApiResource, DynamicObject)]| -> Vec<Item> {
        v.iter()
            .map(|(a, o)| (a.clone(), o.clone(), None))
            .collect()
    };
    let custom = |v: &[(ApiResource, DynamicObject, serde_json::Value)]| -> Vec<Item> {
        match limit {
            Limit::Raw => Vec::new(),
            Limit::Fair => v
                .iter()
                .map(|(a, o, st)| (a.clone(), o.clone(), Some(st.clone())))
                .collect(),
        }
    };
    let ns_ar = ApiResource::erase::<Namespace>(&());
    let mut first = plain(&s.cluster);
    first.extend(
        s.namespaces
            .iter()
            .map(|n| (ns_ar.clone(), n.clone(), None)),
    );
    first.extend(custom(&s.organizations));
    let mut second = plain(&s.namespaced);
    second.extend(custom(&s.members));
    let mut requests = 0u64;
    for batch in [first, second] {
        requests += batch
            .iter()
            .map(|(_, _, st)| if st.is_some() { 2 } else { 1 })
            .sum::<u64>();
        futures::stream::iter(batch.into_iter().map(|(ar, o, status)| {
            let client = client.clone();
            async move {
                let api: Api<DynamicObject> = match o.namespace() {
                    Some(ns) => Api::namespaced_with(client, &ns, &ar),
                    None => Api::all_with(client, &ar),
                };
                let created = match write {
                    WriteVerb::Create => api.create(&PostParams::default(), &o).await,
                    WriteVerb::Apply => {
                        let mut o = o.clone();
                        o.types = Some(kube::core::TypeMeta {
                            api_version: ar.api_version.clone(),
                            kind: ar.kind.clone(),
                        });
                        let pp = PatchParams::apply("tenantry-bench").force();
                        api.patch(&o.name_any(), &pp, &Patch::Apply(&o)).await
                    }
                };
                match created {
                    Ok(_) => {}
                    // The namespace controller makes some ServiceAccounts itself, and the
                    // fair limit's install made the platform's ClusterRoles.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => bail!("creating {} {}: {e}", ar.kind, o.name_any()),
                }
                if let Some(status) = status {
                    api.patch_status(
                        &o.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "status": status })),
                    )
                    .await
                    .with_context(|| format!("status of {} {}", ar.kind, o.name_any()))?;
                }
                Ok(())
            }
        }))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    }
    Ok(requests)
}

// ---------- one size ----------

#[derive(Serialize, Default, Debug)]
struct SizeResult {
    scale: usize,
    organizations: usize,
    workspaces: usize,
    memberships: usize,
    managed_objects: usize,
    apply_seconds: f64,
    converge_seconds: f64,
    quiet_seconds: f64,
    p50_seconds: f64,
    p99_seconds: f64,
    requests: BTreeMap<String, u64>,
    controller_cpu_seconds: f64,
    controlplane_cpu_seconds: f64,
    /// `controlplane_cpu_seconds` by part: API server, etcd, controller-manager.
    controlplane_cpu_by_part: BTreeMap<String, f64>,
    peak_rss_mib: f64,
    settled_rss_mib: f64,
    /// jemalloc's allocated (live) and resident bytes once settled, in MiB
    /// (`tenantry_heap_bytes`).
    heap_allocated_mib: f64,
    heap_resident_mib: f64,
    idle_seconds: u64,
    idle_writes: u64,
    /// The median of `restart_settles`.
    restart_settle_seconds: f64,
    /// Each restart's time until the controller settled, in order.
    restart_settles: Vec<f64>,
    /// Summed over the restarts.
    restart_writes: u64,
    /// The restarted controller's peak RSS (VmHWM, the highest of the restarts) and CPU
    /// until it settled (the median): the initial lists of every kind at once.
    restart_peak_rss_mib: f64,
    restart_cpu_seconds: f64,
    /// After Tenantry was done: how long the control plane's quota controller took to give
    /// every quota a status, how many had none, and the controller's writes meanwhile.
    catch_up_seconds: f64,
    catch_up_unobserved: usize,
    catch_up_writes: u64,
    restart_requests: BTreeMap<String, u64>,
    baseline_seconds: Option<f64>,
    baseline_requests: Option<u64>,
    baseline_cpu_seconds: Option<f64>,
    ratio: Option<f64>,
    fair_seconds: Option<f64>,
    fair_requests: Option<u64>,
    fair_cpu_seconds: Option<f64>,
    fair_ratio: Option<f64>,
    /// `fair_cpu_seconds` by part.
    fair_cpu_by_part: Option<BTreeMap<String, f64>>,
    /// Per cached kind: objects held, their JSON-encoded bytes and the projections
    /// still whole (`/debug/caches`), once settled.
    caches: BTreeMap<String, CacheSize>,
    /// The same once the restarted controller settled.
    restart_caches: BTreeMap<String, CacheSize>,
}

#[derive(Serialize, serde::Deserialize, Default, Debug)]
struct CacheSize {
    objects: u64,
    bytes: u64,
    /// Projections not verified (kept whole: no build found held by them yet).
    #[serde(default)]
    whole: u64,
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The restarts' settle times as the report shows them: one, or the median and range.
fn settles(r: &SizeResult) -> String {
    let mut sorted = r.restart_settles.clone();
    sorted.sort_by(f64::total_cmp);
    match sorted.as_slice() {
        [first, .., last] => format!(
            "{:.1} s (median of {}: {first:.1}-{last:.1} s)",
            r.restart_settle_seconds,
            sorted.len()
        ),
        _ => format!("{:.1} s", r.restart_settle_seconds),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run_size(args: &Args, scale: usize) -> anyhow::Result<SizeResult> {
    let size = args.size.times(scale);
    let tenancy: Tenancy = tenantry::synthetic::tenancy("b", size);
    let total = tenancy.organizations.len() + tenancy.workspaces.len() + tenancy.memberships.len();
    let dir = root().join(format!(
        "target/{}/x{scale}",
        if args.bench { "bench" } else { "bench-smoke" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let parallel = 3 * args.concurrency as usize;
    let deadline = Duration::from_secs(args.timeout_seconds);
    eprintln!(
        "bench x{scale}: {} organizations, {} workspaces, {} memberships",
        tenancy.organizations.len(),
        tenancy.workspaces.len(),
        tenancy.memberships.len()
    );

    let mut apiserver_args = args.apiserver_arg.clone();
    if args.apiserver_profile {
        apiserver_args.push("--profiling=true".to_string());
    }
    let cp = ControlPlane::start(&dir.join("controlplane"), &apiserver_args)?;
    let client = cp.client().await?;
    install(&cp, &client, !args.without_mutating_policy).await?;
    let controller = Controller::start(
        &cp.kubeconfig,
        args.concurrency,
        &dir.join("controller.log"),
        "TENANTRY_BENCH_LOG",
    )
    .await?;
    let pid = controller.child.id();
    let cp_parts0 = cp.cpu_by_part();
    let cpu0 = cpu_seconds(pid);
    let m0 = controller.metrics().await;

    let seen = Arc::new(Mutex::new(HashMap::new()));
    let watchers = watch_ready(&client, seen.clone());
    let profiler = args
        .apiserver_profile
        .then(|| Profiler::start(&cp.kubeconfig, &dir.join("profiles"), "tenantry"))
        .transpose()?;
    let t0 = Instant::now();
    if args.declare_namespaces {
        let declared: Vec<Namespace> = tenancy
            .organizations
            .iter()
            .map(|o| {
                let name = o.name_any();
                let mut ns = Namespace::default();
                ns.metadata.name = Some(tenantry::names::org_namespace(&name));
                ns.metadata.labels =
                    Some([(tenantry::labels::ORGANIZATION.to_string(), name)].into());
                ns
            })
            .collect();
        create_all(&client, "Namespace", declared, parallel).await?;
    }
    let mut created = create_all(
        &client,
        "Organization",
        tenancy.organizations.clone(),
        parallel,
    )
    .await?;
    let (ws, ms) = futures::join!(
        create_all(
            &client,
            "Workspace",
            tenancy.workspaces.clone(),
            parallel / 2
        ),
        create_all(
            &client,
            "Membership",
            tenancy.memberships.clone(),
            parallel / 2
        ),
    );
    created.extend(ws?);
    created.extend(ms?);
    let apply_seconds = t0.elapsed().as_secs_f64();
    eprintln!("bench x{scale}: applied {total} objects in {apply_seconds:.1} s; waiting for Ready");

    let mut last_report = Instant::now();
    loop {
        let n = seen.lock().unwrap().len();
        if n >= total {
            break;
        }
        if t0.elapsed() > deadline {
            bail!("x{scale}: only {n} of {total} objects Ready after {deadline:?}");
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "bench x{scale}: {n}/{total} Ready after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = Instant::now();
    if let Some(p) = profiler {
        p.stop("Tenantry's run, from the apply to all Ready");
    }
    watchers.iter().for_each(|w| w.abort());
    let converge_seconds = {
        let seen = seen.lock().unwrap();
        seen.values()
            .max()
            .map(|t| t.duration_since(t0).as_secs_f64())
            .unwrap_or(0.0)
    };
    let mut latencies: Vec<f64> = {
        let seen = seen.lock().unwrap();
        created
            .iter()
            .filter_map(|(k, at)| {
                seen.get(k)
                    .map(|r| r.saturating_duration_since(*at).as_secs_f64())
            })
            .collect()
    };
    latencies.sort_by(|a, b| a.total_cmp(b));
    // The critical path by kind: when each kind's last create and last Ready happened,
    // and how long its objects waited from create to Ready on average.
    {
        let seen = seen.lock().unwrap();
        // kind -> (last create, last Ready, summed create-to-Ready, objects)
        let mut by_kind: BTreeMap<&str, (f64, f64, f64, usize)> = BTreeMap::new();
        for (k, at) in &created {
            let e = by_kind.entry(k.0.as_str()).or_default();
            let created_at = at.duration_since(t0).as_secs_f64();
            e.0 = e.0.max(created_at);
            e.3 += 1;
            if let Some(r) = seen.get(k) {
                e.1 = e.1.max(r.duration_since(t0).as_secs_f64());
                e.2 += r.saturating_duration_since(*at).as_secs_f64();
            }
        }
        for (kind, (created_at, ready_at, waited, n)) in by_kind {
            eprintln!(
                "bench x{scale}: {kind}: last created at {created_at:.1} s, last Ready at {ready_at:.1} s, mean create-to-Ready {:.2} s",
                waited / n.max(1) as f64
            );
        }
    }
    // Writes may follow the last Ready: status details the controller holds back for up to
    // `--status-interval-ms`. Convergence ends with the last write (none for 5 s after it).
    let mut last = (
        writes(&controller.metrics().await.requests_by_verb(&m0)),
        Instant::now(),
    );
    let quiet_seconds = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = writes(&controller.metrics().await.requests_by_verb(&m0));
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(5) {
            break last
                .1
                .duration_since(t0)
                .as_secs_f64()
                .max(converge_seconds);
        }
        if t0.elapsed() > deadline {
            bail!("x{scale}: the controller kept writing after everything was Ready");
        }
    };
    controller
        .save_metrics(&dir.join("metrics-converged.txt"))
        .await;
    save_apiserver_requests(&client, &dir.join("apiserver-requests.txt")).await;
    let m1 = controller.metrics().await;
    let controller_cpu_seconds = cpu_seconds(pid) - cpu0;
    let controlplane_cpu_by_part = cpu_between(&cp_parts0, &cp.cpu_by_part());
    let controlplane_cpu_seconds = controlplane_cpu_by_part.values().sum::<f64>();
    let requests = m1.requests_by_verb(&m0);
    let peak_rss_mib = status_mib(pid, "VmHWM:");
    eprintln!(
        "bench x{scale}: all Ready in {converge_seconds:.1} s (waited {:.1} s after the apply), last write at {quiet_seconds:.1} s; idling {} s",
        converged.duration_since(t0).as_secs_f64() - apply_seconds,
        args.idle_seconds
    );

    // Idle means nothing changes: the control plane's quota controller may still be giving
    // the quotas their first status (at 25x it lagged Tenantry by thousands), and an
    // organization's usage follows its quotas. Wait for it, and for the writes that follow.
    let t_catch_up = Instant::now();
    let unobserved = quotas_without_status(&client, deadline.saturating_sub(t0.elapsed())).await?;
    let catch_up_seconds = t_catch_up.elapsed().as_secs_f64();
    let mut last = (
        writes(&controller.metrics().await.requests_by_verb(&m1)),
        Instant::now(),
    );
    while last.1.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = writes(&controller.metrics().await.requests_by_verb(&m1));
        if n != last.0 {
            last = (n, Instant::now());
        }
        if t0.elapsed() > deadline {
            bail!("x{scale}: the controller kept writing after the quotas had their status");
        }
    }
    let catch_up_writes = last.0;
    eprintln!(
        "bench x{scale}: the control plane's quota status caught up in {catch_up_seconds:.1} s ({unobserved} quotas had none when Tenantry was done); {catch_up_writes} writes followed"
    );
    let m1 = controller.metrics().await;

    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    controller.save_metrics(&dir.join("metrics-idle.txt")).await;
    let m2 = controller.metrics().await;
    let idle_writes = writes(&m2.requests_by_verb(&m1));
    let settled_rss_mib = status_mib(pid, "VmRSS:");
    let heap_mib = |state: &str| {
        m2.sum("tenantry_heap_bytes", &[&format!("state=\"{state}\"")]) / (1024.0 * 1024.0)
    };
    let (heap_allocated_mib, heap_resident_mib) = (heap_mib("allocated"), heap_mib("resident"));
    // `make profile-heap`: the controller (built with dhat) writes its profile now, so its
    // `t-end` is the settled heap.
    if std::env::var_os("TENANTRY_BENCH_PROFILE_SETTLED").is_some() {
        let _ = Command::new("kill")
            .args(["-USR1", &pid.to_string()])
            .status();
    }
    let caches = controller.caches().await?;
    // What Tenantry made: every cached kind but the three it is given.
    let managed_objects = (m2.sum("tenantry_managed_objects", &[])
        - ["Organization", "Workspace", "Membership"]
            .iter()
            .map(|k| m2.sum("tenantry_managed_objects", &[&format!("kind=\"{k}\"")]))
            .sum::<f64>()) as usize;

    // Restart with everything converged, `--restarts` times (the first one's log and
    // metrics are kept; the others' logs are controller-restart-<n>.log).
    controller.stop();
    let mut restart_settles = Vec::new();
    let mut restart_cpus = Vec::new();
    let mut restart_writes = 0;
    let mut restart_peak_rss_mib: f64 = 0.0;
    let mut restart_requests = BTreeMap::new();
    let mut restart_caches = BTreeMap::new();
    for i in 1..=args.restarts.max(1) {
        let log = match i {
            1 => "controller-restart.log".to_string(),
            n => format!("controller-restart-{n}.log"),
        };
        let t_restart = Instant::now();
        let controller = Controller::start(
            &cp.kubeconfig,
            args.concurrency,
            &dir.join(log),
            "TENANTRY_BENCH_RESTART_LOG",
        )
        .await?;
        let settle = controller
            .settled(t_restart, total, deadline)
            .await
            .with_context(|| format!("x{scale}: the restarted controller did not settle"))?;
        let requests = controller
            .metrics()
            .await
            .requests_by_verb(&Metrics::default());
        restart_writes += writes(&requests);
        let pid = controller.child.id();
        restart_peak_rss_mib = restart_peak_rss_mib.max(status_mib(pid, "VmHWM:"));
        restart_cpus.push(cpu_seconds(pid));
        restart_settles.push(settle);
        eprintln!("bench x{scale}: restart {i}: settled in {settle:.1} s");
        if i == 1 {
            controller
                .save_metrics(&dir.join("metrics-restart.txt"))
                .await;
            restart_caches = controller.caches().await?;
            restart_requests = requests;
        }
        controller.stop();
    }
    let restart_settle_seconds = median(&restart_settles);
    let restart_cpu_seconds = median(&restart_cpus);

    let mut result = SizeResult {
        scale,
        organizations: tenancy.organizations.len(),
        workspaces: tenancy.workspaces.len(),
        memberships: tenancy.memberships.len(),
        managed_objects,
        apply_seconds,
        converge_seconds,
        quiet_seconds,
        p50_seconds: percentile(&latencies, 0.5),
        p99_seconds: percentile(&latencies, 0.99),
        requests,
        controller_cpu_seconds,
        controlplane_cpu_seconds,
        controlplane_cpu_by_part,
        peak_rss_mib,
        settled_rss_mib,
        heap_allocated_mib,
        heap_resident_mib,
        idle_seconds: args.idle_seconds,
        idle_writes,
        restart_settle_seconds,
        restart_settles,
        restart_writes,
        restart_peak_rss_mib,
        restart_cpu_seconds,
        catch_up_seconds,
        catch_up_unobserved: unobserved,
        catch_up_writes,
        restart_requests,
        caches,
        restart_caches,
        ..Default::default()
    };

    if !args.no_baseline {
        let snap = snapshot(&client).await?;
        cp.stop();
        for limit in [Limit::Raw, Limit::Fair] {
            let name = match limit {
                Limit::Raw => "baseline",
                Limit::Fair => "fair",
            };
            eprintln!(
                "bench x{scale}: {name} limit: creating {} objects directly{}",
                snap.len(),
                if limit == Limit::Fair {
                    " with the custom resources and their status"
                } else {
                    ""
                }
            );
            let cp = ControlPlane::start(&dir.join(name), &apiserver_args)?;
            let client = cp.client().await?;
            if limit == Limit::Fair {
                install(&cp, &client, !args.without_mutating_policy).await?;
            }
            let parts0 = cp.cpu_by_part();
            let profiler = (args.apiserver_profile && limit == Limit::Fair)
                .then(|| Profiler::start(&cp.kubeconfig, &dir.join("profiles"), "fair"))
                .transpose()?;
            let t = Instant::now();
            let n = replay(&client, &snap, parallel, limit, args.limit_writes).await?;
            let secs = t.elapsed().as_secs_f64();
            let parts = cpu_between(&parts0, &cp.cpu_by_part());
            if let Some(p) = profiler {
                p.stop("the fair limit's replay");
            }
            let cpu = parts.values().sum::<f64>();
            save_apiserver_requests(&client, &dir.join(name).join("apiserver-requests.txt")).await;
            cp.stop();
            match limit {
                Limit::Raw => {
                    result.baseline_seconds = Some(secs);
                    result.baseline_requests = Some(n);
                    result.baseline_cpu_seconds = Some(cpu);
                    result.ratio = Some(converge_seconds / secs);
                }
                Limit::Fair => {
                    result.fair_seconds = Some(secs);
                    result.fair_requests = Some(n);
                    result.fair_cpu_seconds = Some(cpu);
                    result.fair_ratio = Some(converge_seconds / secs);
                    result.fair_cpu_by_part = Some(parts);
                }
            }
        }
    } else {
        cp.stop();
    }
    Ok(result)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = status_mem_total();
    format!(
        "{cores} cores ({cpu}), {mem:.0} GiB memory, Linux {}",
        kernel()
    )
}

fn status_mem_total() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A limit's cell: time, requests, and the control plane's CPU seconds.
fn limit(seconds: Option<f64>, requests: Option<u64>, cpu: Option<f64>) -> String {
    match (seconds, requests, cpu) {
        (Some(s), Some(n), Some(c)) => format!("{s:.1} s ({n} requests, {c:.1} s CPU)"),
        _ => "-".into(),
    }
}

fn report(args: &Args, results: &[SizeResult]) -> String {
    let mut out = String::new();
    let size = args.size;
    out.push_str(&format!(
        "Machine: {}. Kubernetes v1.37.2 (local control plane, etcd embedded). Base size: {} organizations x {} workspaces x {} members + {} client(s); controller concurrency {} per kind, apply and limits' concurrency {}; the limits write with {}; the organizations' namespaces are {}.\n\n",
        machine(),
        size.organizations,
        size.workspaces,
        size.members,
        size.clients,
        args.concurrency,
        3 * args.concurrency,
        match args.limit_writes {
            WriteVerb::Create => "POST (create)",
            WriteVerb::Apply => "server-side apply",
        },
        if args.declare_namespaces {
            "declared in the apply (--declare-namespaces)"
        } else {
            "made by Tenantry (the apply retries on 404 until each exists)"
        }
    ));
    out.push_str("| scale | orgs / workspaces / members | objects Tenantry made | apply to all Ready | last write | p50 / p99 per object | raw limit | ratio | fair limit | fair ratio | controller requests (get/list/watch/create/patch/update/delete) | controller CPU | control plane CPU | peak / settled RSS | writes in idle | restart: settle / writes |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let q = |v: &str| r.requests.get(v).copied().unwrap_or(0);
        out.push_str(&format!(
            "| {}x | {} / {} / {} | {} | {:.1} s | {:.1} s | {:.2} s / {:.2} s | {} | {} | {} | {} | {}/{}/{}/{}/{}/{}/{} | {:.1} s | {:.1} s | {:.0} / {:.0} MiB | {} in {} s | {} / {} |\n",
            r.scale,
            r.organizations,
            r.workspaces,
            r.memberships,
            r.managed_objects,
            r.converge_seconds,
            r.quiet_seconds,
            r.p50_seconds,
            r.p99_seconds,
            limit(r.baseline_seconds, r.baseline_requests, r.baseline_cpu_seconds),
            r.ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
            limit(r.fair_seconds, r.fair_requests, r.fair_cpu_seconds),
            r.fair_ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            q("get"),
            q("list"),
            q("watch"),
            q("create"),
            q("patch"),
            q("update"),
            q("delete"),
            r.controller_cpu_seconds,
            r.controlplane_cpu_seconds,
            r.peak_rss_mib,
            r.settled_rss_mib,
            r.idle_writes,
            r.idle_seconds,
            settles(r),
            r.restart_writes,
        ));
    }
    out.push_str("\nThe control plane's CPU by part (Tenantry's run until its last write; the fair limit's replay): the API server is the machine's limit.\n\n| scale | run | API server | etcd | controller-manager |\n|---|---|---|---|---|\n");
    for r in results {
        let row = |run: &str, parts: &BTreeMap<String, f64>| {
            let p = |k: &str| parts.get(k).copied().unwrap_or(0.0);
            format!(
                "| {}x | {run} | {:.1} s | {:.1} s | {:.1} s |\n",
                r.scale,
                p("API server"),
                p("etcd"),
                p("controller-manager")
            )
        };
        out.push_str(&row("Tenantry", &r.controlplane_cpu_by_part));
        if let Some(fair) = &r.fair_cpu_by_part {
            out.push_str(&row("fair limit", fair));
        }
    }
    out.push_str("\nThe controller's heap once settled (`tenantry_heap_bytes`: what jemalloc holds allocated for live objects, and resident):\n\n| scale | allocated | resident | RSS | restarted controller: peak RSS / CPU to settle |\n|---|---|---|---|---|\n");
    for r in results {
        out.push_str(&format!(
            "| {}x | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB / {:.1} s |\n",
            r.scale,
            r.heap_allocated_mib,
            r.heap_resident_mib,
            r.settled_rss_mib,
            r.restart_peak_rss_mib,
            r.restart_cpu_seconds
        ));
    }
    out.push_str("\nAfter Tenantry was done, before the idle window: the control plane's quota controller giving every quota its first status (an organization's usage follows), and the controller's writes meanwhile:\n\n| scale | quotas without status | caught up in | writes meanwhile |\n|---|---|---|---|\n");
    for r in results {
        out.push_str(&format!(
            "| {}x | {} | {:.1} s | {} |\n",
            r.scale, r.catch_up_unobserved, r.catch_up_seconds, r.catch_up_writes
        ));
    }
    out.push_str("\nWhat the controller's caches hold once settled (`/debug/caches`: objects, and their JSON-encoded bytes as a proxy for the heap they take), and how many projections are whole (not verified against a build: settled, and once the restarted controller settled):\n\n| kind |");
    for r in results {
        out.push_str(&format!(
            " {}x objects | {}x bytes per object | {}x whole: settled / restarted |",
            r.scale, r.scale, r.scale
        ));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|---|---|".repeat(results.len()));
    out.push('\n');
    let kinds: std::collections::BTreeSet<&String> =
        results.iter().flat_map(|r| r.caches.keys()).collect();
    for kind in kinds {
        out.push_str(&format!("| {kind} |"));
        for r in results {
            match r.caches.get(kind) {
                Some(c) => out.push_str(&format!(
                    " {} | {} | {} / {} |",
                    c.objects,
                    c.bytes.checked_div(c.objects).unwrap_or(0),
                    c.whole,
                    r.restart_caches.get(kind).map_or(0, |c| c.whole)
                )),
                None => out.push_str(" - | - | - |"),
            }
        }
        out.push('\n');
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // `cargo test --all-targets` runs this without `--bench`: a small smoke run, so that
    // the benchmark keeps working (it fails on any error, as a test does).
    let smoke = !args.bench;
    if smoke {
        args.scales = vec![1];
        args.size = Size {
            organizations: 3,
            workspaces: 2,
            members: 3,
            clients: 1,
        };
        args.idle_seconds = 3;
        args.timeout_seconds = 300;
    }
    let dir = root().join(if smoke {
        "target/bench-smoke"
    } else {
        "target/bench"
    });
    std::fs::create_dir_all(&dir)?;
    let mut results = Vec::new();
    for &scale in &args.scales {
        let r = run_size(&args, scale).await?;
        if smoke && (r.idle_writes != 0 || r.restart_writes != 0) {
            bail!(
                "a converged controller wrote: {} writes in idle, {} after a restart (see {})",
                r.idle_writes,
                r.restart_writes,
                dir.join("x1").display()
            );
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("results.jsonl"))?;
        writeln!(f, "{}", serde_json::to_string(&r)?)?;
        results.push(r);
        let md = report(&args, &results);
        std::fs::write(dir.join("report.md"), &md)?;
        println!("{md}");
    }
    Ok(())
}
