#![forbid(unsafe_code)]
//! The `tenantry` binary: the controller and its helper commands.

use clap::{Parser, Subcommand, ValueEnum};
use tenantry::settings::Settings;
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// jemalloc returns freed memory to the system; measured against glibc and mimalloc in
/// docs/benchmarks.md.
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--features dhat-heap` (`make profile-heap`): every allocation counted by its site; the
/// profile (dhat-heap-<pid>.json, for dh_view or `hack/dhat-top.py`) is written at exit.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

#[derive(Parser)]
#[command(
    name = "tenantry",
    version,
    about = "SaaS-style tenancy for Kubernetes, as YAML"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (in a cluster, or with KUBECONFIG).
    Run {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        leader: tenantry::leader::LeaderSettings,
        /// Address of the admin server (/livez, /readyz, /metrics).
        #[arg(long, env = "TENANTRY_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
        admin_address: std::net::SocketAddr,
        /// Log format.
        #[arg(long, env = "TENANTRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Serve the OAuth 2.0 token endpoint for machine clients (client credentials grant).
    TokenServer {
        #[command(flatten)]
        settings: tenantry::token::TokenSettings,
    },
    /// Serve the discovery API (`kubectl get myorganizations`, `myworkspaces`) behind the
    /// API server's aggregation layer.
    DiscoveryServer {
        #[command(flatten)]
        settings: tenantry::discovery::DiscoverySettings,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the cluster objects Tenantry needs besides its CRDs, as YAML: the roles it
    /// binds, the platform-admin and operator roles and bindings, the admission policies.
    Manifests {
        #[command(flatten)]
        settings: Settings,
        /// Also print the ClusterRoleBindings of the platform-admin group and the operator's
        /// ServiceAccount (the Helm chart templates those itself).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        bindings: bool,
        /// The MutatingAdmissionPolicy that creates Organizations and Workspaces with
        /// their finalizer (Kubernetes 1.36 and newer, where the kind is served; so not
        /// by default here): `exclude`d, `include`d, or `only` it. For a few seconds after
        /// the CRDs are installed the API server refuses the kinds it matches: run
        /// `tenantry await-admission` before creating tenants.
        #[arg(long, value_enum, default_value_t = tenantry::Mutating::Exclude)]
        mutating: tenantry::Mutating,
    },
    /// Wait until the API server admits Organizations (a dry-run create), then exit 0;
    /// 1 after `--timeout-seconds`. Right after the CRDs are installed it refuses them
    /// for a few seconds: 404 until the CRDs are served, and with `tenantry-finalizers`
    /// 503 until its admission has their schema. Run it between the install and the
    /// first tenants (`make demo` and the chart's post-install hook do).
    AwaitAdmission {
        /// How long to wait at most.
        #[arg(long, default_value_t = 120)]
        timeout_seconds: u64,
    },
    /// Print a generated tenancy as YAML (load tests, demos): organizations with their
    /// declared namespaces, workspaces, members and machine clients, in one stream that
    /// `kubectl apply -f -` applies in one go.
    Generate {
        #[command(flatten)]
        size: tenantry::synthetic::Size,
        /// Names start with this (organizations are `<prefix>00000`, ...).
        #[arg(long, default_value = "load")]
        prefix: String,
    },
    /// Show an organization's namespaces, workspaces, bindings, members and client
    /// Secrets (by name; never their values).
    Tree {
        /// The organization.
        organization: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer()).init(),
        LogFormat::Json => registry.with(fmt::layer().json()).init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = profile_heap();
    let cli = Cli::parse();
    match cli.command {
        Command::TokenServer { settings } => {
            init_tracing(LogFormat::Text);
            let client = kube::Client::try_default().await?;
            tenantry::token::serve(client, settings, shutdown_signal()).await?;
        }
        Command::DiscoveryServer { settings } => {
            init_tracing(LogFormat::Text);
            let client = kube::Client::try_default().await?;
            tenantry::discovery::serve(client, settings, shutdown_signal()).await?;
        }
        Command::Generate { size, prefix } => print!(
            "{}",
            tenantry::synthetic::to_yaml(&tenantry::synthetic::tenancy(&prefix, size))?
        ),
        Command::Crd => print!("{}", tenantry::api::crds_yaml()?),
        Command::AwaitAdmission { timeout_seconds } => {
            // kube's default retry would retry the 503 itself, with a backoff that
            // overshoots the moment it ends.
            let mut config = kube::Config::infer().await?;
            config.default_retry = false;
            let client = kube::Client::try_from(config)?;
            let within = std::time::Duration::from_secs(timeout_seconds);
            match tenantry::policy::await_admission(&client, within).await {
                Ok(took) => eprintln!(
                    "tenantry: the API server admits Organizations (waited {:.1} s)",
                    took.as_secs_f64()
                ),
                Err(e) => anyhow::bail!(
                    "the API server did not admit an Organization within {timeout_seconds} s: {e}"
                ),
            }
        }
        Command::Manifests {
            settings,
            bindings,
            mutating,
        } => print!(
            "{}",
            tenantry::manifests_yaml(&settings, bindings, mutating)?
        ),
        Command::Tree { organization } => {
            let client = kube::Client::try_default().await?;
            print!("{}", tenantry::tree::render(&client, &organization).await?);
        }
        Command::Run {
            settings,
            leader,
            admin_address,
            log_format,
        } => {
            init_tracing(log_format);
            let client = tenantry::metrics::counted_client(kube::Config::infer().await?)?;
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                info!("shutting down");
                let _ = stop_tx.send(true);
            });
            let health = tenantry::admin::Health::default();
            let mut admin_stop = stop_rx.clone();
            let admin = tokio::spawn(tenantry::admin::serve(
                admin_address,
                health.clone(),
                async move {
                    let _ = admin_stop.wait_for(|stop| *stop).await;
                },
            ));
            if !leader.enabled() {
                info!(
                    "leader election is off (not in a pod; --leader-election=true turns it on): run one replica only"
                );
            }
            let elector = leader.enabled().then(|| {
                tenantry::leader::Elector::new(
                    client.clone(),
                    &settings.operator_namespace,
                    &leader,
                )
            });
            if let Some(elector) = &elector {
                // A standby is healthy and ready: it is waiting, as it should.
                health.set_ready(true);
                let mut stopped = stop_rx.clone();
                tokio::select! {
                    _ = elector.acquire() => {}
                    _ = stopped.wait_for(|stop| *stop) => {
                        admin.await??;
                        return Ok(());
                    }
                }
                health.set_ready(false);
            }
            let run = tenantry::controller::run(client, settings, stop_rx, None, Some(health));
            match &elector {
                None => run.await?,
                Some(elector) => tokio::select! {
                    r = run => {
                        r?;
                        elector.release().await;
                    }
                    _ = elector.hold() => {
                        tracing::error!("lost the leader lease: exiting, so that only one replica writes");
                        std::process::exit(1);
                    }
                },
            }
            admin.await??;
        }
    }
    Ok(())
}

/// Starts dhat's profile; it is written at exit, or at once on SIGUSR1 (then `t-end` is
/// the heap at that moment: a settled controller's, say), after which the process goes on
/// unprofiled.
#[cfg(feature = "dhat-heap")]
fn profile_heap() -> std::sync::Arc<std::sync::Mutex<Option<dhat::Profiler>>> {
    let profiler = std::sync::Arc::new(std::sync::Mutex::new(Some(
        dhat::Profiler::builder()
            .file_name(format!("dhat-heap-{}.json", std::process::id()))
            .trim_backtraces(Some(24))
            .build(),
    )));
    let on_signal = profiler.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
            usr1.recv().await;
            if let Ok(mut p) = on_signal.lock() {
                drop(p.take());
            }
        }
    });
    profiler
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
