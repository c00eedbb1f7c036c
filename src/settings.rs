//! Operator settings: flags, each also read from an environment variable (the Helm
//! chart sets those).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::{PodSecurityLevel, WorkspacePolicy};
use crate::names::DEFAULT_NAMESPACE_TEMPLATE;

#[derive(clap::Args, Clone, Debug)]
pub struct Settings {
    /// The namespace Tenantry runs in; never handed to a workspace.
    #[arg(long, env = "TENANTRY_NAMESPACE", default_value = "tenantry-system")]
    pub operator_namespace: String,

    /// Name of workspace namespaces, with `{org}` and `{workspace}` placeholders. Names
    /// over 63 characters are shortened with a hash.
    #[arg(long, env = "TENANTRY_NAMESPACE_TEMPLATE", default_value = DEFAULT_NAMESPACE_TEMPLATE)]
    pub namespace_template: String,

    /// Namespaces no workspace may have, besides Kubernetes' own and the built-in list of
    /// common platform namespaces (cert-manager, ingress-nginx, flux-system, argocd,
    /// istio-system, monitoring, ...): comma-separated, a trailing `*` matches a prefix.
    #[arg(long, env = "TENANTRY_RESERVED_NAMESPACES", value_delimiter = ',')]
    pub reserved_namespaces: Vec<String>,

    /// Pod Security level of workspaces that set none (and whose organization sets none).
    #[arg(long, env = "TENANTRY_DEFAULT_POD_SECURITY", default_value = "baseline", value_parser = parse_level)]
    pub default_pod_security: PodSecurityLevel,

    /// The least restrictive Pod Security level any workspace may have, unless a platform
    /// admin sets an organization's `spec.limits.podSecurity` (e.g. `privileged` for one
    /// trusted organization). Tenants choose at most this.
    #[arg(long, env = "TENANTRY_POD_SECURITY_CEILING", default_value = "baseline", value_parser = parse_level)]
    pub pod_security_ceiling: PodSecurityLevel,

    /// ResourceQuota hard limits of workspaces that set none (and whose organization sets
    /// none), as `name=quantity` pairs: `pods=50,requests.cpu=4,requests.memory=8Gi`.
    #[arg(long, env = "TENANTRY_DEFAULT_QUOTA", value_parser = parse_quota)]
    pub default_quota: Option<crate::api::ResourceList>,

    /// Network isolation of workspaces that set none.
    #[arg(long, env = "TENANTRY_DEFAULT_NETWORK_ISOLATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub default_network_isolation: bool,

    /// Members of this group are platform admins: they may do everything in Tenantry,
    /// including verifying organizations.
    #[arg(
        long,
        env = "TENANTRY_PLATFORM_ADMIN_GROUP",
        default_value = "tenantry:platform-admins"
    )]
    pub platform_admin_group: String,

    /// New organizations add no members beyond their owners until a platform admin sets
    /// `spec.verified: true`.
    #[arg(long, env = "TENANTRY_REQUIRE_VERIFICATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_verification: bool,

    /// Every User granted in some organization also gets an organization of their own
    /// (`user-<name>-<hash>`, the User its only owner), created once and never deleted by
    /// Tenantry.
    #[arg(long, env = "TENANTRY_PERSONAL_ORGANIZATIONS", default_value_t = false, action = clap::ArgAction::Set)]
    pub personal_organizations: bool,

    /// How many organizations one owner (a subject in `spec.owners`) may have; the
    /// oldest win. Unlimited when unset.
    #[arg(long, env = "TENANTRY_MAX_ORGANIZATIONS_PER_OWNER")]
    pub max_organizations_per_owner: Option<usize>,

    /// How often every object is reconciled even when nothing changed, in seconds.
    #[arg(long, env = "TENANTRY_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,

    /// Reconciles running at once, per kind.
    #[arg(long, env = "TENANTRY_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Milliseconds an object's reconcile waits for more changes to the same object
    /// (trailing-edge debounce): a burst of triggers becomes one reconcile and one status
    /// write. 0 turns it off.
    #[arg(long, env = "TENANTRY_DEBOUNCE_MS", default_value_t = 250)]
    pub debounce_ms: u64,

    /// Milliseconds between two status writes of one object that change only details
    /// (counts, lists of workspaces or members, messages), doubled while an object's
    /// details keep changing, up to 8 times (controller::pacing). A change of `Ready`, of
    /// its reason or of `observedGeneration` is written at once. 0 writes every change at
    /// once.
    #[arg(long, env = "TENANTRY_STATUS_INTERVAL_MS", default_value_t = 5000)]
    pub status_interval_ms: u64,

    /// How the caches load what exists when the controller starts: `streaming` (one watch
    /// that sends every object, then a bookmark: the API server's WatchList, on by default
    /// from Kubernetes 1.34), `paged` (lists of 500, then a watch), or `auto` (streaming
    /// where the API server is 1.34 or newer). Measured on Kubernetes 1.37
    /// (docs/benchmarks.md): pages cost the API server less at 5x the benchmark's size, but
    /// each page costs more the more objects there are of the kind (a 25x restart's caches
    /// loaded in 46.5 s in pages, 17.9 s streamed), so `auto` streams.
    #[arg(long, env = "TENANTRY_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,

    /// Watch the built-in kinds Tenantry caches (RoleBindings, Namespaces, quotas, limit
    /// ranges, network policies, cluster roles and their bindings) in protobuf, where the
    /// caches stream (`--initial-list`): the API server writes protobuf for about half the
    /// CPU JSON costs it (docs/benchmarks.md). `false`: JSON, as kube's watcher reads.
    #[arg(long, env = "TENANTRY_PROTOBUF_WATCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub protobuf_watches: bool,
}

/// How the caches load what exists when the controller starts ([`Settings::initial_list`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialList {
    Auto,
    Streaming,
    Paged,
}

impl InitialList {
    /// Whether to stream, given the API server's version (`major`, `minor` as
    /// `/version` gives them: a minor may end in `+`).
    pub fn streams(self, major: &str, minor: &str) -> bool {
        match self {
            InitialList::Streaming => true,
            InitialList::Paged => false,
            InitialList::Auto => {
                let minor = minor.trim_end_matches('+').parse::<u32>();
                major == "1" && minor.is_ok_and(|m| m >= 34)
            }
        }
    }
}

impl Settings {
    /// The kube-runtime controller configuration every reconciler uses.
    /// How often every object is reconciled even when nothing changed.
    pub fn resync(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.resync_seconds.max(1))
    }

    pub fn controller_config(&self) -> kube::runtime::controller::Config {
        kube::runtime::controller::Config::default()
            .concurrency(self.concurrency)
            .debounce(std::time::Duration::from_millis(self.debounce_ms))
    }
}

fn parse_quota(s: &str) -> Result<crate::api::ResourceList, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Ok((k.trim().to_string(), Quantity(v.trim().to_string())))
            }
            _ => Err(format!("{pair:?} is not name=quantity")),
        })
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map(Into::into)
}

fn parse_level(s: &str) -> Result<PodSecurityLevel, String> {
    match s {
        "privileged" => Ok(PodSecurityLevel::Privileged),
        "baseline" => Ok(PodSecurityLevel::Baseline),
        "restricted" => Ok(PodSecurityLevel::Restricted),
        other => Err(format!(
            "{other:?} is not privileged, baseline or restricted"
        )),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operator_namespace: "tenantry-system".into(),
            namespace_template: DEFAULT_NAMESPACE_TEMPLATE.into(),
            reserved_namespaces: Vec::new(),
            default_pod_security: PodSecurityLevel::Baseline,
            pod_security_ceiling: PodSecurityLevel::Baseline,
            default_network_isolation: true,
            default_quota: None,
            platform_admin_group: "tenantry:platform-admins".into(),
            require_verification: false,
            personal_organizations: false,
            max_organizations_per_owner: None,
            resync_seconds: 600,
            concurrency: 8,
            debounce_ms: 250,
            status_interval_ms: 5000,
            initial_list: InitialList::Auto,
            protobuf_watches: true,
        }
    }
}

impl Settings {
    /// Refuses settings Tenantry cannot run safely with (a namespace template that lets
    /// organizations collide).
    pub fn check(&self) -> Result<(), String> {
        crate::names::check_template(&self.namespace_template)
    }

    /// Every namespace a workspace may not have: the built-in list and the operator's.
    pub fn reserved(&self) -> Vec<String> {
        crate::names::DEFAULT_RESERVED_NAMESPACES
            .iter()
            .map(|s| s.to_string())
            .chain(
                self.reserved_namespaces
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            )
            .collect()
    }

    /// What decides whether a Membership grants besides the Memberships, now.
    pub fn gates(&self) -> crate::grants::Gates {
        crate::grants::Gates {
            require_verification: self.require_verification,
            now: k8s_openapi::jiff::Timestamp::now(),
        }
    }

    /// The operator-wide workspace defaults, the last fallback of every field.
    pub fn workspace_defaults(&self) -> WorkspacePolicy {
        WorkspacePolicy {
            quota: self.default_quota.clone(),
            limit_range: None,
            pod_security: Some(self.default_pod_security),
            network_isolation: Some(self.default_network_isolation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_stream_where_the_api_server_has_watch_list() {
        let auto = InitialList::Auto;
        assert!(auto.streams("1", "34") && auto.streams("1", "37+"));
        assert!(!auto.streams("1", "33") && !auto.streams("1", "") && !auto.streams("2", "40"));
        assert!(InitialList::Streaming.streams("1", "30"));
        assert!(!InitialList::Paged.streams("1", "37"));
    }

    /// The settings a command line gives.
    fn parsed(args: &[&str]) -> Result<Settings, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("tenantry").chain(args.iter().copied()))
            .map(|c| c.settings)
    }

    #[test]
    fn caches_stream_unless_told_otherwise() {
        let given = |args: &[&str]| parsed(args).map(|s| s.initial_list);
        // The command line's default and the library's are the same: streaming where
        // the API server has it (pages are quadratic at scale: docs/benchmarks.md).
        assert_eq!(Settings::default().initial_list, InitialList::Auto);
        if std::env::var_os("TENANTRY_INITIAL_LIST").is_none() {
            assert_eq!(given(&[]).unwrap(), InitialList::Auto);
        }
        assert_eq!(
            given(&["--initial-list", "paged"]).unwrap(),
            InitialList::Paged
        );
        assert!(given(&["--initial-list", "sometimes"]).is_err());
    }

    #[test]
    fn built_in_kinds_are_watched_in_protobuf_unless_told_otherwise() {
        let given = |args: &[&str]| parsed(args).map(|s| s.protobuf_watches);
        assert!(Settings::default().protobuf_watches);
        if std::env::var_os("TENANTRY_PROTOBUF_WATCHES").is_none() {
            assert!(given(&[]).unwrap());
        }
        assert!(!given(&["--protobuf-watches", "false"]).unwrap());
        assert!(given(&["--protobuf-watches", "sometimes"]).is_err());
    }

    #[test]
    fn quotas_parse_from_pairs() {
        let q = parse_quota("pods=50, requests.cpu=4").unwrap();
        assert_eq!(q.get("pods").unwrap().0, "50");
        assert_eq!(q.get("requests.cpu").unwrap().0, "4");
        assert!(parse_quota("pods").is_err());
        assert!(parse_quota("=3").is_err());
        assert!(parse_quota("").unwrap().is_empty());
    }
}
