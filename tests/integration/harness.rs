//! Test harness: one real control plane per test run, shared by every test.
//!
//! - With `TENANTRY_TEST_KUBECONFIG` set, the tests use that cluster (e.g. kind, or the
//!   one `make up` started).
//! - Otherwise the harness starts `target/controlplane/bin/controlplane up --lifeline`
//!   once (building it with `make controlplane` when it is missing). The control plane
//!   stops when this test process exits: its standard input is a pipe we hold open.
//!
//! If the control plane cannot be built or started, every test fails with the reason.
//! Nothing is skipped. Tests get their own objects through [`unique`] names, so they run
//! in parallel.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Config, Resource};

/// How long a test waits for the cluster or the controller to converge.
pub const TIMEOUT: Duration = Duration::from_secs(90);

pub struct Cluster {
    pub kubeconfig: PathBuf,
    /// Kept so the pipe (the control plane's lifeline) stays open until the process exits.
    _lifeline: Option<Mutex<(Child, ChildStdin)>>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster every test talks to; started on first use.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(why) => panic!("no Kubernetes control plane for the integration tests: {why}"),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start() -> Result<Cluster, String> {
    let cluster = match std::env::var_os("TENANTRY_TEST_KUBECONFIG") {
        Some(path) if !path.is_empty() => {
            let kubeconfig = PathBuf::from(path);
            if !kubeconfig.exists() {
                return Err(format!(
                    "TENANTRY_TEST_KUBECONFIG names {}, which does not exist",
                    kubeconfig.display()
                ));
            }
            Cluster {
                kubeconfig,
                _lifeline: None,
            }
        }
        _ => start_local()?,
    };
    // Install the CRDs and the shipped ClusterRoles once, on a runtime of our own (the
    // tests' runtimes come and go with each test).
    let kubeconfig = cluster.kubeconfig.clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())?
            .block_on(install(&kubeconfig))
    })
    .join()
    .map_err(|_| "installing the CRDs panicked".to_string())??;
    Ok(cluster)
}

fn start_local() -> Result<Cluster, String> {
    let bin = controlplane_bin()?;
    // The control plane keeps its state in a temporary folder it removes on exit; its own
    // progress lines (and the reason, if it fails) go to this log.
    let log = repo_root().join("target/controlplane/test-run.log");
    let (child, stdin, kubeconfig) = launch(&bin, &log)?;
    eprintln!(
        "harness: control plane ready, kubeconfig {}",
        kubeconfig.display()
    );
    Ok(Cluster {
        kubeconfig,
        _lifeline: Some(Mutex::new((child, stdin))),
    })
}

/// `target/controlplane/bin/controlplane`, built with `make controlplane` when missing.
fn controlplane_bin() -> Result<PathBuf, String> {
    let root = repo_root();
    let bin = root.join("target/controlplane/bin/controlplane");
    if !bin.exists() {
        eprintln!(
            "harness: {} is missing, running `make controlplane`",
            bin.display()
        );
        let status = Command::new("make")
            .arg("-C")
            .arg(&root)
            .arg("controlplane")
            .status()
            .map_err(|e| format!("could not run `make controlplane` (is make installed?): {e}"))?;
        if !status.success() || !bin.exists() {
            return Err(format!(
                "`make controlplane` failed ({status}); it needs Go and the Go module proxy"
            ));
        }
    }
    Ok(bin)
}

/// Starts `controlplane up --lifeline` (stderr to `log`) and waits for its READY line:
/// the process, its lifeline and the kubeconfig.
fn launch(bin: &Path, log: &Path) -> Result<(Child, ChildStdin, PathBuf), String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(bin)
        .arg("up")
        .arg("--lifeline")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", bin.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    // The control plane prints `READY <kubeconfig>` once etcd, the API server and the
    // controller manager are up; it exits with the reason on stderr otherwise.
    let mut kubeconfig = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(path) = line.strip_prefix("READY ") {
            kubeconfig = Some(PathBuf::from(path));
            break;
        }
    }
    let Some(kubeconfig) = kubeconfig else {
        let _ = child.wait();
        let log = std::fs::read_to_string(log).unwrap_or_default();
        return Err(format!(
            "the control plane exited before it was ready:\n{log}"
        ));
    };
    Ok((child, stdin, kubeconfig))
}

/// A control plane of one test's own (for tests that run the real binary and must be the
/// only controller writing, or that take the API server down): started with its own
/// `controlplane up --lifeline`, with the CRDs and roles installed as for the shared one.
/// Dropping it stops it.
pub struct Dedicated {
    pub kubeconfig: PathBuf,
    /// The `controlplane up` process: SIGUSR1 takes the API server and etcd down,
    /// SIGUSR2 brings them back (see `hack/controlplane/up.go`).
    pub pid: u32,
    /// Its progress lines (outages included).
    pub log: PathBuf,
    child: Child,
    lifeline: Option<ChildStdin>,
}

/// Starts a dedicated control plane; panics with the reason if it cannot (never skips).
pub async fn dedicated() -> Dedicated {
    let name = unique("dedicated");
    let started = tokio::task::spawn_blocking(move || {
        let bin = controlplane_bin()?;
        let log = repo_root().join(format!("target/controlplane/{name}.log"));
        launch(&bin, &log).map(|(child, stdin, kubeconfig)| (child, stdin, kubeconfig, log))
    })
    .await
    .expect("starting a dedicated control plane panicked");
    let (child, stdin, kubeconfig, log) = match started {
        Ok(started) => started,
        Err(why) => panic!("no dedicated Kubernetes control plane for this test: {why}"),
    };
    let cluster = Dedicated {
        pid: child.id(),
        kubeconfig,
        log,
        child,
        lifeline: Some(stdin),
    };
    eprintln!(
        "harness: dedicated control plane {} ready, kubeconfig {}",
        cluster.pid,
        cluster.kubeconfig.display()
    );
    if let Err(why) = install(&cluster.kubeconfig).await {
        panic!("installing the CRDs and roles on the dedicated control plane: {why}");
    }
    cluster
}

impl Dedicated {
    /// A cluster-admin client of this control plane.
    pub async fn admin(&self) -> Client {
        client_for(&self.kubeconfig, None, &[]).await
    }

    /// A client of this control plane acting as `user` (impersonation by the admin).
    pub async fn as_user(&self, user: &str) -> Client {
        client_for(&self.kubeconfig, Some(user), &[]).await
    }

    /// Sends `signal` (e.g. `"USR1"`) to the `controlplane up` process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid);
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        // Closing the lifeline stops it cleanly; wait (bounded) so that its memory is back
        // before the next test starts another.
        drop(self.lifeline.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its log is kept when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

async fn install(kubeconfig: &Path) -> Result<(), String> {
    let client = client_for(kubeconfig, None, &[]).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("tenantry-tests").force();
    for crd in tenantry::api::crds() {
        let name = crd.meta().name.clone().unwrap_or_default();
        crds.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .map_err(|e| format!("installing CRD {name}: {e}"))?;
        tokio::time::timeout(
            TIMEOUT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} was not established within {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    }
    tenantry::rbac::install(&client, &tenantry::settings::Settings::default())
        .await
        .map_err(|e| format!("installing the roles and admission policies: {e}"))?;
    // The API server loads new admission policies a moment after they are created: until
    // then a test of what they refuse would see it allowed. One of them refusing its
    // probe (a Workspace outside an organization namespace) says they are loaded.
    let probe = tenantry::api::Workspace::new("probe", Default::default());
    let workspaces = Api::<tenantry::api::Workspace>::namespaced(client, "default");
    let dry = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    while workspaces.create(&dry, &probe).await.is_ok() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the admission policies did not take effect within {TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn client_for(kubeconfig: &Path, user: Option<&str>, groups: &[&str]) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    if let Some(user) = user {
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
    }
    Client::try_from(config).expect("a client")
}

/// A cluster-admin client. Create one per test: a client belongs to the test's runtime.
pub async fn admin() -> Client {
    client_for(&cluster().kubeconfig, None, &[]).await
}

/// A client acting as `user` in `groups` (impersonation by the admin).
pub async fn as_user(user: &str, groups: &[&str]) -> Client {
    client_for(&cluster().kubeconfig, Some(user), groups).await
}

/// A name no other test (or earlier run against the same cluster) uses: `prefix-<pid><n>`.
/// Sleeps into the next second of the clock (the API server's, on this machine). Places
/// (duplicates, limits) go by creation time, whose resolution is one second, then by uid:
/// a test that means "the younger one" creates it in a later second.
pub async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let rest = 1000 - u64::from(now.subsec_millis());
    tokio::time::sleep(std::time::Duration::from_millis(rest + 20)).await;
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut seed = [0u8; 3];
    getrandom::fill(&mut seed).expect("OS randomness");
    format!(
        "{prefix}-{:02x}{:02x}{:02x}{}",
        seed[0],
        seed[1],
        seed[2],
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP port of 127.0.0.1 free a moment ago (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (by watching, not polling) until `cond` holds for the named object.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> Option<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(TIMEOUT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!("timed out after {TIMEOUT:?} waiting for {name}: {what}\nlast seen: {now:#?}")
        }
    }
}

/// Waits until the named object is gone (404).
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let Some(obj) = api.get_opt(name).await.expect("get") else {
        return;
    };
    let uid = obj.meta().uid.clone().unwrap_or_default();
    wait_for(api, name, "deleted", conditions::is_deleted(&uid)).await;
}

/// The HTTP status of a failed API call, or 0 when it succeeded or failed otherwise.
pub fn status_of<T>(r: &Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        _ => 0,
    }
}

/// The controller under test: one instance in this process, on a thread and runtime of
/// its own, shared by every test (each test uses its own organizations). Its reconciles
/// are published on a channel that outlives restarts.
struct RunningController {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

static CONTROLLER: Mutex<Option<RunningController>> = Mutex::new(None);

fn observer() -> &'static tenantry::controller::Observer {
    static OBSERVER: OnceLock<tenantry::controller::Observer> = OnceLock::new();
    OBSERVER.get_or_init(|| tokio::sync::broadcast::channel(65536).0)
}

fn start_controller() -> RunningController {
    // Controller logs go to stderr; RUST_LOG picks what (default: warnings).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let kubeconfig = cluster().kubeconfig.clone();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let observer = observer().clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("a runtime for the controller");
        rt.block_on(async move {
            // The controller runs as the operator's ServiceAccount, with exactly the
            // rights of the shipped `tenantry-operator` ClusterRole.
            let settings = tenantry::settings::Settings::default();
            let sa = format!(
                "system:serviceaccount:{}:{}",
                settings.operator_namespace,
                tenantry::rbac::OPERATOR_SERVICE_ACCOUNT
            );
            let sa_ns_group = format!("system:serviceaccounts:{}", settings.operator_namespace);
            let client = client_for(
                &kubeconfig,
                Some(&sa),
                &["system:serviceaccounts", &sa_ns_group],
            )
            .await;
            let settings = tenantry::settings::Settings {
                resync_seconds: 3600,
                ..Default::default()
            };
            if let Err(e) =
                tenantry::controller::run(client, settings, stop_rx, Some(observer), None).await
            {
                eprintln!("harness: controller stopped with an error: {e:#}");
            }
        });
    });
    RunningController { stop, thread }
}

/// Makes sure the controller runs; returns a receiver of the reconciles from now on.
pub fn controller() -> tokio::sync::broadcast::Receiver<tenantry::controller::Reconciled> {
    let rx = observer().subscribe();
    let mut running = CONTROLLER.lock().unwrap_or_else(|e| e.into_inner());
    if running.is_none() {
        *running = Some(start_controller());
    }
    rx
}

/// Stops the controller (gracefully) and starts a new instance: a restart, with empty
/// caches and no memory of what it did.
pub fn restart_controller() {
    let mut running = CONTROLLER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = running.take() {
        let _ = old.stop.send(true);
        let _ = old.thread.join();
    }
    *running = Some(start_controller());
}

/// Waits until every `(kind, namespace, name)` in `wanted` has been reconciled
/// successfully (after `rx` was subscribed).
pub async fn wait_reconciled(
    rx: &mut tokio::sync::broadcast::Receiver<tenantry::controller::Reconciled>,
    wanted: &[(&str, Option<&str>, &str)],
) {
    let mut left: std::collections::BTreeSet<(String, Option<String>, String)> = wanted
        .iter()
        .map(|(k, ns, n)| (k.to_string(), ns.map(str::to_string), n.to_string()))
        .collect();
    let wait = async {
        while !left.is_empty() {
            match rx.recv().await {
                Ok(r) if r.ok => {
                    left.remove(&(r.kind.to_string(), r.namespace.clone(), r.name.clone()));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the controller's reconcile channel closed: {e}"),
            }
        }
    };
    if tokio::time::timeout(TIMEOUT, wait).await.is_err() {
        panic!("timed out waiting for reconciles of {left:?}");
    }
}
