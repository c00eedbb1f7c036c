//! The Helm chart, rendered by helm and applied to the real API server: every object is
//! valid (server-side validation, schemas and admission), and the operator's
//! ServiceAccount has the rights it needs and no more.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::harness::{admin, cluster};

async fn sa_can(
    client: &kube::Client,
    ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
    name: Option<&str>,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:tenantry")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    r.status.map(|s| s.allowed).unwrap_or(false)
}

#[tokio::test]
async fn the_rendered_chart_installs_and_its_rbac_is_least_privilege() {
    let root = env!("CARGO_MANIFEST_DIR");
    let helm = format!("{root}/target/tools/helm");
    assert!(
        std::path::Path::new(&helm).exists(),
        "helm is missing: run `make helm` (make test does)"
    );
    // The release namespace is the operator namespace the rest of the suite uses, so the
    // chart's bindings are the very ones the in-process controller runs under. Plain
    // `helm template`, as a newcomer or a GitOps tool runs it: no --kube-version.
    let ns = "tenantry-system".to_string();
    // The discovery API's APIService would point the shared cluster's discovery at a
    // server that never runs (and the discovery test registers its own): the chart is
    // applied without it, and validated whole with a server-side dry run.
    let render = |discovery: bool| {
        let rendered = std::process::Command::new(&helm)
            .args([
                "template",
                "tenantry",
                &format!("{root}/charts/tenantry"),
                "-n",
                &ns,
            ])
            .args([
                "--set",
                &format!("tokenServer.enabled=true,tokenServer.tlsSecretName=tenantry-token-tls,discovery.enabled={discovery},mutatingAdmissionPolicy={discovery}"),
            ])
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let file = std::env::temp_dir().join(format!("{}.yaml", crate::harness::unique("chart")));
        std::fs::write(&file, &rendered.stdout).unwrap();
        file
    };
    let file = render(false);
    let whole = render(true);
    assert!(
        std::fs::read_to_string(&whole)
            .unwrap()
            .contains("kind: APIService"),
        "the chart registers the discovery API by default"
    );
    // Plain `helm template` does not know the cluster serves MutatingAdmissionPolicies
    // (`auto`); the whole render asks for it, and the server-side dry run checks it.
    assert!(
        std::fs::read_to_string(&whole)
            .unwrap()
            .contains("kind: MutatingAdmissionPolicy\n"),
        "the chart renders tenantry-finalizers when asked"
    );
    let whole_text = std::fs::read_to_string(&whole).unwrap();
    assert!(
        whole_text.contains("name: tenantry-await-admission")
            && whole_text.contains("helm.sh/hook: post-install,post-upgrade")
            && whole_text.contains(r#"args: ["await-admission""#),
        "with the policy comes the hook that waits for it to take effect"
    );
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains("tenantry-await-admission"),
        "no hook without the policy"
    );
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .env("KUBECONFIG", &cluster().kubeconfig)
            .args(args)
            .output()
            .expect("kubectl is installed")
    };
    let created = kubectl(&["create", "namespace", &ns]);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(
        created.status.success() || stderr.contains("AlreadyExists"),
        "{stderr}"
    );
    // Applied for real: the API server validates every object against its schema and
    // admission. (Without a kubelet its pods never start.)
    let applied = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "helm-test",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(
        applied.status.success(),
        "the rendered chart applies:\n{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let dry = kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager",
        "helm-test",
        "-f",
        whole.to_str().unwrap(),
    ]);
    assert!(
        dry.status.success(),
        "the whole chart (discovery API included) passes a server-side dry run:\n{}",
        String::from_utf8_lossy(&dry.stderr)
    );

    let client = admin().await;
    // What the operator needs...
    for (verb, group, resource, name) in [
        ("create", "", "namespaces", None),
        ("patch", "rbac.authorization.k8s.io", "rolebindings", None),
        (
            "update",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
        ),
        // (the hook Job: a dry-run create of an Organization)
        ("create", "tenantry.dev", "organizations", None),
        (
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
            Some("tenantry-workspace-admin"),
        ),
        ("patch", "tenantry.dev", "workspaces", None),
        ("manage", "tenantry.dev", "tenancy", None),
        ("create", "", "serviceaccounts/token", None),
    ] {
        assert!(
            sa_can(&client, &ns, verb, group, resource, name).await,
            "the operator may {verb} {resource}"
        );
    }
    // ...and nothing that would make it a cluster-admin in disguise.
    for (verb, group, resource, name) in [
        (
            "bind",
            "rbac.authorization.k8s.io",
            "clusterroles",
            Some("cluster-admin"),
        ),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
        ),
        ("create", "apps", "deployments", None),
        ("create", "", "pods", None),
        ("verify", "tenantry.dev", "organizations", None),
        ("impersonate", "", "users", None),
        ("update", "", "nodes", None),
    ] {
        assert!(
            !sa_can(&client, &ns, verb, group, resource, name).await,
            "the operator may not {verb} {resource}"
        );
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&whole);
}
