//! GitOps: the Argo CD health checks shipped in deploy/argocd, run in Lua 5.4 and in
//! gopher-lua (the Lua 5.1 interpreter Argo CD embeds), and kstatus (what Flux reads),
//! all on objects from the real API server.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use serde_json::Value;
use tenantry::api::*;

use crate::core::{
    add_member, create_org, create_ws, membership, org_spec, wait_member_reason, wait_ws_reason,
};
use crate::harness::{admin, controller, unique};

/// A JSON value as a Lua table constructor.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => {
            format!(
                "{{{}}}",
                map.iter()
                    .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// Runs an Argo CD health script on `obj`: its status (Healthy, Progressing, Degraded).
fn health(script: &str, obj: &Value) -> String {
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nprint(hs.status)\n",
        lua(obj)
    );
    let out = std::process::Command::new("lua5.4")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(program.as_bytes())?;
            child.wait_with_output()
        })
        .expect("lua5.4 is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The scripts of deploy/argocd/argocd-cm.yaml, by kind, checked equal to health.lua.
fn scripts() -> Vec<(String, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let cm: ConfigMap = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/argocd/argocd-cm.yaml")).unwrap(),
    )
    .expect("argocd-cm.yaml parses");
    let source = std::fs::read_to_string(format!("{root}/deploy/argocd/health.lua")).unwrap();
    let data = cm.data.expect("data");
    ["Organization", "Workspace", "Membership"]
        .iter()
        .map(|kind| {
            let script =
                data[&format!("resource.customizations.health.tenantry.dev_{kind}")].clone();
            assert_eq!(
                script.trim(),
                source.trim(),
                "argocd-cm.yaml carries deploy/argocd/health.lua for {kind}"
            );
            (kind.to_string(), script)
        })
        .collect()
}

#[tokio::test]
async fn argo_cd_and_flux_read_live_status_right() {
    let _ = controller();
    let client = admin().await;
    let name = unique("argo");
    let org = create_org(&client, &name, org_spec("o@x.example")).await;
    // A Workspace whose namespace is taken: Stalled.
    let taken = format!("{name}--taken");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(taken.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    create_ws(&client, &name, "taken", Default::default()).await;
    let stalled = wait_ws_reason(&client, &name, "taken", "NamespaceConflict").await;
    // A Membership waiting for a workspace: Reconciling.
    add_member(
        &client,
        &name,
        membership(
            "waits",
            Subject::user("w@x.example"),
            OrgRole::Member,
            &[("later", WorkspaceRole::Viewer)],
        ),
    )
    .await;
    let waiting = wait_member_reason(&client, &name, "waits", "WorkspacePending").await;
    let ready = crate::core::wait_ws_ready(&client, &name, "default").await;

    let mut ahead = serde_json::to_value(&org).unwrap();
    ahead["metadata"]["generation"] = Value::from(org.metadata.generation.unwrap_or(1) + 1);
    let mut no_status = serde_json::to_value(&org).unwrap();
    no_status.as_object_mut().unwrap().remove("status");

    let mut table =
        String::from("| sample | Organization | Workspace | Membership |\n|---|---|---|---|");
    let samples: [(&str, Value, &str); 6] = [
        ("Organization Ready", json(&org), "Healthy"),
        ("Workspace Ready", json(&ready), "Healthy"),
        (
            "Workspace Stalled (NamespaceConflict)",
            json(&stalled),
            "Degraded",
        ),
        (
            "Membership Reconciling (WorkspacePending)",
            json(&waiting),
            "Progressing",
        ),
        ("generation not yet observed", ahead, "Progressing"),
        ("no status yet", no_status, "Progressing"),
    ];
    let scripts = scripts();
    for (what, obj, want) in &samples {
        table.push_str(&format!("\n| {what} |"));
        for (kind, script) in &scripts {
            let got = health(script, obj);
            assert_eq!(&got, want, "{kind} script on {what} (lua5.4)");
            // And in the interpreter Argo CD embeds (gopher-lua, Lua 5.1), as Argo CD
            // runs it: `obj` a global, the returned table the health.
            let argo = argo_health(script, obj);
            assert_eq!(
                argo.split('\t').next(),
                Some(*want),
                "{kind} script on {what} (gopher-lua): {argo}"
            );
            table.push_str(&format!(" {got} |"));
        }
    }
    println!("{table}");

    // Flux reads health with kstatus: the library's verdict on the same live objects.
    for (what, obj, want) in [
        ("Organization Ready", &samples[0].1, "Current"),
        ("Workspace Ready", &samples[1].1, "Current"),
        ("Membership Reconciling", &samples[3].1, "InProgress"),
        ("generation not yet observed", &samples[4].1, "InProgress"),
        ("Workspace Stalled", &samples[2].1, "Failed"),
    ] {
        let got = kstatus(obj);
        println!("kstatus {what}: {got}");
        assert!(
            got.starts_with(&format!("{want}\t")),
            "kstatus on {what}: {got}"
        );
    }
    Api::<Namespace>::all(client.clone())
        .delete(&taken, &Default::default())
        .await
        .unwrap();
    crate::core::delete_org(&client, &name).await;
}

/// An Argo CD health script's verdict (`<status>\t<message>`) in gopher-lua, the Lua 5.1
/// interpreter Argo CD embeds, from the control plane binary's `lua` command.
fn argo_health(script: &str, obj: &Value) -> String {
    let file = std::env::temp_dir().join(format!("{}.lua", unique("health")));
    std::fs::write(&file, script).unwrap();
    let out = controlplane(&["lua", file.to_str().unwrap()], obj);
    let _ = std::fs::remove_file(&file);
    out
}

/// kstatus's verdict (`<status>\t<message>`), from the control plane binary's
/// `kstatus` command (Go, sigs.k8s.io/cli-utils).
fn kstatus(obj: &Value) -> String {
    controlplane(&["kstatus"], obj)
}

/// Runs the control plane binary's command `args` with `obj` as JSON on standard input:
/// its standard output, trimmed.
fn controlplane(args: &[&str], obj: &Value) -> String {
    use std::io::Write;
    let bin = format!(
        "{}/target/controlplane/bin/controlplane",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the control plane binary (make controlplane)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(obj.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "controlplane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Any object as JSON.
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// examples/ with organization `acme` renamed to `org` (its users and groups too), in a
/// fresh directory: a whole tenancy, as a platform team keeps it in Git.
pub fn tenancy_dir(org: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("tenancy"));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap().replace("acme", org);
            std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    dir
}

/// Waits until the Organization, every Workspace and every Membership of `org` is Ready
/// (the Workspaces and Memberships listed from `dir`'s manifests, and the default
/// workspace).
pub async fn wait_tenancy_ready(client: &kube::Client, org: &str, dir: &std::path::Path) {
    crate::core::wait_org_ready(client, org).await;
    crate::core::wait_ws_ready(client, org, "default").await;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let docs = serde_saphyr::from_multiple::<Value>(&text).expect("examples/ is YAML");
        for obj in docs {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            match obj["kind"].as_str() {
                Some("Workspace") => {
                    crate::core::wait_ws_ready(client, org, name).await;
                }
                Some("Membership") => {
                    let api: Api<Membership> =
                        Api::namespaced(client.clone(), &format!("org-{org}"));
                    crate::harness::wait_for(
                        &api,
                        name,
                        "Membership Ready",
                        |m: Option<&Membership>| {
                            m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
                                s.conditions
                                    .iter()
                                    .any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                        },
                    )
                    .await;
                }
                _ => {}
            }
        }
    }
}

/// Issue 14: a whole tenancy (the organization's namespace declared with it, the
/// Organization, its Workspaces and Memberships) converges from one `kubectl apply -f
/// dir/`, with no retry and no ordering by hand; the declared namespace is adopted: it
/// becomes the organization's (its UID, its owner reference) and goes with it.
#[tokio::test]
async fn a_whole_tenancy_converges_from_one_kubectl_apply() {
    let _ = controller();
    let client = admin().await;
    let org = unique("gitops");
    let dir = tenancy_dir(&org);
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&crate::harness::cluster().kubeconfig)
        .args(["apply", "-f"])
        .arg(&dir)
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "one kubectl apply of the whole tenancy: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_tenancy_ready(&client, &org, &dir).await;
    let o = Api::<Organization>::all(client.clone())
        .get(&org)
        .await
        .unwrap();
    let ns = Api::<Namespace>::all(client.clone())
        .get(&format!("org-{org}"))
        .await
        .unwrap();
    assert_eq!(
        ns.metadata
            .annotations
            .unwrap_or_default()
            .get("tenantry.dev/owner-uid"),
        o.metadata.uid.as_ref(),
        "the declared namespace is the organization's now"
    );
    let owners = ns.metadata.owner_references.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|r| Some(&r.uid) == o.metadata.uid.as_ref()),
        "it goes with the organization: {owners:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs hack/flux (Flux's apply engine, `make flux`): `flux apply DIR` against the test
/// cluster. Its success and its output.
fn flux_apply(dir: &std::path::Path) -> (bool, String) {
    let bin = format!("{}/target/tools/flux", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(&bin)
        .arg("apply")
        .arg("--kubeconfig")
        .arg(&crate::harness::cluster().kubeconfig)
        .args(["--timeout", "90s"])
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{bin} (make flux): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 14: one Flux Kustomization holding a whole tenancy becomes Ready. Flux's own
/// apply engine (fluxcd/pkg/ssa's ApplyAllStaged, what kustomize-controller runs) applies
/// the declared namespace first, dry-runs and applies the rest, and its kstatus wait
/// passes; before the declared namespace, its dry run failed on every Workspace and
/// Membership and nothing was ever applied. A second sync (Flux's interval) changes
/// nothing Tenantry owns and leaves the tenancy Ready.
#[tokio::test]
async fn a_whole_tenancy_converges_from_one_flux_kustomization() {
    let _ = controller();
    let client = admin().await;
    let org = unique("flux");
    let dir = tenancy_dir(&org);
    let (ok, out) = flux_apply(&dir);
    assert!(ok, "one Flux apply of the whole tenancy:\n{out}");
    wait_tenancy_ready(&client, &org, &dir).await;
    let (ok, out) = flux_apply(&dir);
    assert!(ok, "the next sync:\n{out}");
    assert!(
        out.lines()
            .filter(|l| l.contains('/'))
            .all(|l| l.ends_with("unchanged")),
        "the next sync finds nothing to change (Tenantry's own fields are not Flux's):\n{out}"
    );
    wait_tenancy_ready(&client, &org, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The object as the API server first stored it (its first watch event, before any
/// status write) after `create` makes it.
async fn as_first_stored<K>(
    api: &Api<K>,
    name: &str,
    create: impl std::future::Future<Output = ()>,
) -> Value
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
{
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::watcher::{Config, Event, watcher};
    let config = Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), config).boxed();
    // The watch is open (its first list done) before the object is made.
    while !matches!(events.try_next().await.unwrap(), Some(Event::InitDone)) {}
    create.await;
    while let Some(event) = events.try_next().await.unwrap() {
        if let Event::Apply(o) | Event::InitApply(o) = event {
            return json(&o);
        }
    }
    panic!("no event for {name}")
}

/// Issue 14: health is true from the first second. A new Organization, Workspace or
/// Membership, as first stored and before Tenantry writes its status, reads as not
/// reconciled (the CRDs default `status.observedGeneration` to 0): kstatus (Flux) says
/// InProgress, not Current, and Argo CD's script Progressing, so a Flux `wait: true` or an
/// Argo CD sync does not pass before Tenantry has looked at the objects.
#[tokio::test]
async fn a_new_object_is_in_progress_until_tenantry_has_looked() {
    let _ = controller();
    let client = admin().await;
    let name = unique("fresh");
    let orgs = Api::<Organization>::all(client.clone());
    let org = as_first_stored(&orgs, &name, async {
        orgs.create(
            &PostParams::default(),
            &Organization::new(&name, org_spec("o@x.example")),
        )
        .await
        .unwrap();
    })
    .await;
    crate::core::wait_org_ready(&client, &name).await;
    let ns = format!("org-{name}");
    let workspaces = Api::<Workspace>::namespaced(client.clone(), &ns);
    let ws = as_first_stored(&workspaces, "fresh", async {
        create_ws(&client, &name, "fresh", Default::default()).await;
    })
    .await;
    let memberships = Api::<Membership>::namespaced(client.clone(), &ns);
    let m = as_first_stored(&memberships, "fresh", async {
        add_member(
            &client,
            &name,
            membership("fresh", Subject::user("f@x.example"), OrgRole::Viewer, &[]),
        )
        .await;
    })
    .await;
    let scripts = scripts();
    for (what, obj) in [
        ("Organization", &org),
        ("Workspace", &ws),
        ("Membership", &m),
    ] {
        assert_eq!(obj["status"]["observedGeneration"], 0, "{what}: {obj}");
        let got = kstatus(obj);
        assert!(
            got.starts_with("InProgress\t"),
            "kstatus on a new {what}: {got}"
        );
        for (kind, script) in &scripts {
            assert!(
                argo_health(script, obj).starts_with("Progressing"),
                "{kind} script on a new {what}"
            );
        }
    }
}

/// Issue 14: docs/gitops.md runs as written. Its `sh` blocks, in order, in one scratch
/// directory, against the test cluster with Tenantry running (`$TENANTRY` is the
/// repository); each block must succeed.
#[tokio::test]
async fn the_gitops_walkthrough_runs_as_written() {
    let _ = controller();
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/gitops.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 8, "the walkthrough's steps: {blocks:?}");
    let work = std::env::temp_dir().join(unique("walkthrough"));
    std::fs::create_dir_all(&work).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let out = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(&work)
            .env("KUBECONFIG", &crate::harness::cluster().kubeconfig)
            .env("TENANTRY", root)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "docs/gitops.md, sh block {} failed:\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            i + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
