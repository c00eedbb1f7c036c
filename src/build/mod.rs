//! The build step of every reconcile: the desired objects and status, from the spec and
//! what the caches hold, computed by pure functions (no API call, no clock). Reconcilers
//! read the caches, call a builder, apply what it built, and write status. Builders are
//! tested against YAML fixtures in `tests/fixtures/build/`.

pub mod client;
pub mod organization;
pub mod shared;
pub mod workspace;

#[cfg(test)]
pub(crate) mod fixtures {
    //! Golden-file tests: each `<name>.yaml` holds the input objects (and, on a first
    //! line `# flags: ...`, operator settings); `<name>.expected.yaml` what the builder
    //! makes of them. `TENANTRY_BLESS=1` rewrites the expected files.

    use std::path::Path;

    use clap::Parser;

    use crate::api::{Membership, Organization, Workspace};
    use crate::settings::Settings;

    #[derive(Default)]
    pub struct Docs {
        pub organizations: Vec<Organization>,
        pub workspaces: Vec<Workspace>,
        pub memberships: Vec<Membership>,
        pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
    }

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: Settings,
    }

    fn load(text: &str) -> (Docs, Settings) {
        let flags: Vec<&str> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# flags:"))
            .map(|f| f.split_whitespace().collect())
            .unwrap_or_default();
        let settings = Flags::try_parse_from(std::iter::once("tenantry").chain(flags))
            .unwrap_or_else(|e| panic!("fixture flags: {e}"))
            .settings;
        let mut docs = Docs::default();
        for doc in serde_saphyr::from_multiple::<serde_json::Value>(text).expect("YAML") {
            match doc["kind"].as_str() {
                Some("Organization") => docs
                    .organizations
                    .push(serde_json::from_value(doc).unwrap()),
                Some("Workspace") => docs.workspaces.push(serde_json::from_value(doc).unwrap()),
                Some("Membership") => docs.memberships.push(serde_json::from_value(doc).unwrap()),
                Some("Secret") => docs.secrets.push(serde_json::from_value(doc).unwrap()),
                other => panic!("unexpected kind {other:?}"),
            }
        }
        (docs, settings)
    }

    /// Runs `build` on every fixture of `builder` and compares with the expected output.
    pub fn check(builder: &str, build: impl Fn(&Docs, &Settings) -> String) {
        check_text(builder, |text| {
            let (docs, settings) = load(text);
            build(&docs, &settings)
        });
    }

    /// [`check`] for builders whose fixtures are not Tenantry objects: `build` gets each
    /// fixture's text.
    pub fn check_text(builder: &str, build: impl Fn(&str) -> String) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/build")
            .join(builder);
        let bless = std::env::var_os("TENANTRY_BLESS").is_some();
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "yaml")
                    && !p.to_string_lossy().ends_with(".expected.yaml")
            })
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "fixtures in {}", dir.display());
        let mut failed = Vec::new();
        for input in inputs {
            let got = build(&std::fs::read_to_string(&input).unwrap());
            let expected_path = input.with_extension("expected.yaml");
            if bless {
                std::fs::write(&expected_path, &got).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != got {
                failed.push(format!(
                    "{}: the build differs from {}:\n{got}",
                    input.display(),
                    expected_path.display()
                ));
            }
        }
        assert!(
            failed.is_empty(),
            "{}\n(TENANTRY_BLESS=1 rewrites them)",
            failed.join("\n")
        );
    }

    /// A workspace's build as YAML documents, headed by its name.
    pub fn render_workspace(name: &str, c: &super::workspace::Children) -> String {
        let mut out = format!("# workspace {name}\n");
        let mut doc = |kind: &str, v: String| {
            out.push_str(&format!("--- # {kind}\n{v}"));
        };
        doc("Namespace", y(&c.namespace));
        if let Some(q) = &c.quota {
            doc("ResourceQuota", y(q));
        }
        if let Some(l) = &c.limits {
            doc("LimitRange", y(l));
        }
        if let Some(n) = &c.isolation {
            doc("NetworkPolicy", y(n));
        }
        for b in &c.bindings {
            doc("RoleBinding", y(b));
        }
        doc("status.members", y(&c.members));
        if !c.capped.is_empty() {
            doc("capped", format!("{:?}\n", c.capped));
        }
        out
    }

    /// An organization's build as YAML documents.
    pub fn render_organization(c: &super::organization::Children) -> String {
        let mut out = String::new();
        let mut doc = |kind: &str, v: String| {
            out.push_str(&format!("--- # {kind}\n{v}"));
        };
        doc("Namespace", y(&c.namespace));
        for b in &c.role_bindings {
            doc("RoleBinding", y(b));
        }
        for r in &c.credentials_roles {
            doc("Role", y(r));
        }
        for b in &c.credentials_bindings {
            doc("RoleBinding", y(b));
        }
        for r in &c.cluster_roles {
            doc("ClusterRole", y(r));
        }
        for b in &c.cluster_role_bindings {
            doc("ClusterRoleBinding", y(b));
        }
        out
    }

    fn y<T: serde::Serialize>(v: &T) -> String {
        serde_saphyr::to_string(v).unwrap()
    }
}
