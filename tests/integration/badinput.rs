//! The bad-input corpus (`tests/corpus/bad/`): every manifest is applied to the real API
//! server, and must be either rejected at apply with a clear message, or accepted and
//! reported in a condition (with an Event), as its `# expect:` line says. Afterwards the
//! controller must still be alive and reconciling: a new Workspace and Membership of a
//! healthy organization, which lives next to the corpus all along, become Ready.
//!
//! Corpus format: one file per case, `NN-short-description.yaml`. The first line is
//!
//! - `# expect: rejected: <text>`: the last document is refused (a 4xx) with a message
//!   containing `<text>`;
//! - `# expect: condition: <Reason>`: the last document is accepted, then its `Ready`
//!   condition becomes False with that reason, and an Event with that reason exists;
//! - `# expect: ready`: the last document is accepted and becomes Ready.
//!
//! Every document before the last one is setup: it must be accepted (and, for Tenantry's
//! kinds, become Ready). `${ORG}` is replaced by the name of the healthy organization,
//! created fresh for the run; names of other cluster-scoped objects start with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tenantry::api::*;

use crate::core::{
    create_org, create_ws, membership, org_spec, unprotect, wait_member_reason, wait_org_ready,
    wait_ws_ready,
};
use crate::harness::{TIMEOUT, admin, controller, unique, wait_for, wait_reconciled};

/// The field manager the corpus is applied with.
const MANAGER: &str = "badinput-corpus";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad")
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Rejected(String),
    Condition(String),
    Ready,
}

impl Expect {
    fn parse(line: &str) -> Result<Expect, String> {
        let rest = line
            .strip_prefix("# expect:")
            .ok_or("the first line is not `# expect: ...`")?
            .trim();
        if rest == "ready" {
            Ok(Expect::Ready)
        } else if let Some(text) = rest.strip_prefix("rejected:") {
            Ok(Expect::Rejected(text.trim().to_string()))
        } else if let Some(reason) = rest.strip_prefix("condition:") {
            Ok(Expect::Condition(reason.trim().to_string()))
        } else {
            Err(format!("unknown expectation {rest:?}"))
        }
    }
}

struct Case {
    file: String,
    expect: Expect,
    docs: Vec<Value>,
}

/// Reads every corpus file, with `${ORG}` replaced.
fn load(org: &str) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus/bad exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                file.len() > 3
                    && file[..2].bytes().all(|b| b.is_ascii_digit())
                    && &file[2..3] == "-",
                "{file}: corpus files are named NN-short-description.yaml"
            );
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let first = text.lines().next().unwrap_or_default();
            let expect = Expect::parse(first).unwrap_or_else(|e| panic!("{file}: {e}"));
            let text = text.replace("${ORG}", org);
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            assert!(!docs.is_empty(), "{file}: no document");
            Case { file, expect, docs }
        })
        .collect()
}

/// The API resource of a corpus document, and whether it is namespaced.
fn resource(kind: &str) -> (ApiResource, bool) {
    match kind {
        "Organization" => (ApiResource::erase::<Organization>(&()), false),
        "Workspace" => (ApiResource::erase::<Workspace>(&()), true),
        "Membership" => (ApiResource::erase::<Membership>(&()), true),
        "Namespace" => (ApiResource::erase::<Namespace>(&()), false),
        other => panic!("the corpus has no use for kind {other}"),
    }
}

/// Where a document goes: its API, name and kind.
struct Target {
    api: Api<DynamicObject>,
    name: String,
    kind: String,
    namespace: Option<String>,
}

fn target(client: &Client, doc: &Value) -> Target {
    let kind = doc["kind"].as_str().expect("a kind").to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .expect("a metadata.name")
        .to_string();
    let namespace = doc["metadata"]["namespace"].as_str().map(str::to_string);
    let (ar, namespaced) = resource(&kind);
    let api = match (&namespace, namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
        (None, false) => Api::all_with(client.clone(), &ar),
        _ => panic!("{kind} {name}: namespace does not match the kind's scope"),
    };
    Target {
        api,
        name,
        kind,
        namespace,
    }
}

/// Applies a document as `kubectl apply` does, with strict field validation: creates it
/// (POST) when it does not exist yet, else merges it into the live object.
async fn apply(client: &Client, t: &Target, doc: &Value) -> Result<DynamicObject, kube::Error> {
    if t.api.get_opt(&t.name).await?.is_some() {
        let pp = PatchParams::default().validation_strict();
        return t.api.patch(&t.name, &pp, &Patch::Merge(doc)).await;
    }
    let request = http::Request::post(format!(
        "{}?fieldManager={MANAGER}&fieldValidation=Strict",
        t.api.resource_url()
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(serde_json::to_vec(doc).expect("JSON"))
    .expect("a request");
    client.request(request).await
}

/// A server-side apply of the document, as a dry run: it must be refused too. (The API
/// server answers some of these with a 500, "failed to create typed patch object", where
/// a create gets a 422: that is upstream behavior, so only the refusal is checked.)
async fn server_side_dry_run(t: &Target, doc: &Value) -> Result<(), u16> {
    let pp = PatchParams::apply(MANAGER).validation_strict().dry_run();
    match t.api.patch(&t.name, &pp, &Patch::Apply(doc)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.code),
        Err(_) => Err(0),
    }
}

fn ready_condition(obj: &DynamicObject) -> Option<Condition> {
    let conditions: Vec<Condition> =
        serde_json::from_value(obj.data["status"]["conditions"].clone()).ok()?;
    conditions.into_iter().find(|c| c.type_ == "Ready")
}

fn current(obj: &DynamicObject, c: &Condition) -> bool {
    c.observed_generation == obj.meta().generation
}

/// Waits until the object is Ready, or its Ready condition is False with `reason`.
async fn wait_state(t: &Target, want: &Expect) -> Result<DynamicObject, String> {
    let want = want.clone();
    let cond = move |o: Option<&DynamicObject>| {
        o.and_then(|o| ready_condition(o).map(|c| (o, c)))
            .is_some_and(|(o, c)| {
                current(o, &c)
                    && match &want {
                        Expect::Ready => c.status == "True",
                        Expect::Condition(r) => c.status == "False" && &c.reason == r,
                        Expect::Rejected(_) => false,
                    }
            })
    };
    match tokio::time::timeout(TIMEOUT, await_condition(t.api.clone(), &t.name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err("the object disappeared".into()),
        Ok(Err(e)) => Err(format!("watching it failed: {e}")),
        Err(_) => {
            let now = t.api.get_opt(&t.name).await.ok().flatten();
            let seen = now.as_ref().and_then(ready_condition).map(|c| {
                format!(
                    "Ready={} reason={} message={}",
                    c.status,
                    c.reason,
                    clip(&c.message, 300)
                )
            });
            Err(format!(
                "timed out after {TIMEOUT:?}; last seen: {}",
                seen.unwrap_or_else(|| "no Ready condition".into())
            ))
        }
    }
}

/// Waits for an Event about `obj` with `reason` (Events of cluster-scoped objects go to
/// `default`).
async fn wait_event(client: &Client, obj: &DynamicObject, reason: &str) -> Result<(), String> {
    let uid = obj.uid().unwrap_or_default();
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let matches = |e: &Event| {
        e.reason.as_deref() == Some(reason)
            && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str())
    };
    let stream = watcher(api, watcher::Config::default())
        .applied_objects()
        .try_filter(|e| futures::future::ready(matches(e)));
    futures::pin_mut!(stream);
    match tokio::time::timeout(TIMEOUT, stream.try_next()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err("the event watch ended".into()),
        Ok(Err(e)) => Err(format!("watching events failed: {e}")),
        Err(_) => Err(format!("no Event with reason {reason} within {TIMEOUT:?}")),
    }
}

/// The namespace a `NamespaceConflict` message names ("namespace <name> ...") was not
/// taken over by the object reporting the conflict.
async fn not_adopted(client: &Client, obj: &DynamicObject, message: &str) -> Result<(), String> {
    let name = message
        .strip_prefix("namespace ")
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("the message names no namespace: {message}"))?;
    let ns = Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| format!("reading namespace {name}: {e}"))?;
    let owner = ns.annotations().get(tenantry::labels::OWNER_UID);
    if owner.is_some() && owner == obj.uid().as_ref() {
        return Err(format!("namespace {name} was adopted"));
    }
    Ok(())
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// What a case left behind, for the cleanup.
#[derive(Default)]
struct Created {
    organizations: Vec<String>,
    namespaces: Vec<String>,
    /// Namespaced objects outside an organization created by the corpus.
    others: Vec<Target>,
}

/// One line of the report.
struct Outcome {
    file: String,
    expect: Expect,
    result: Result<String, String>,
    elapsed: Duration,
}

async fn run_case(client: &Client, case: &Case, created: &mut Created) -> Result<String, String> {
    let (last, setup) = case.docs.split_last().expect("a document");
    for doc in setup {
        let t = target(client, doc);
        let what = format!("setup {} {}", t.kind, t.name);
        apply(client, &t, doc)
            .await
            .map_err(|e| format!("{what} was refused: {e}"))?;
        remember(created, &t);
        if t.kind != "Namespace" {
            wait_state(&t, &Expect::Ready)
                .await
                .map_err(|e| format!("{what} did not become Ready: {e}"))?;
        }
        // Places (duplicates, limits) go by creation time, which has a resolution of one
        // second, then by uid: the next document comes in a later second, so that the
        // corpus's "the second one" is the younger one.
        crate::harness::next_second().await;
    }
    let t = target(client, last);
    let applied = apply(client, &t, last).await;
    if applied.is_ok() {
        remember(created, &t);
    }
    match (&case.expect, applied) {
        (Expect::Rejected(text), Err(kube::Error::Api(s))) => {
            if !(400..500).contains(&s.code) {
                Err(format!(
                    "refused with {} (not a 4xx): {}",
                    s.code, s.message
                ))
            } else if !s.message.contains(text.as_str()) {
                Err(format!(
                    "refused ({} {}), but the message does not say {text:?}: {}",
                    s.code,
                    s.reason,
                    clip(&s.message, 600)
                ))
            } else if let Ok(()) = server_side_dry_run(&t, last).await {
                Err(format!(
                    "created: refused ({}), but a server-side apply (dry run) accepts it",
                    s.code
                ))
            } else {
                Ok(format!(
                    "{} {}: {}",
                    s.code,
                    s.reason,
                    clip(&s.message, 200)
                ))
            }
        }
        (Expect::Rejected(_), Ok(_)) => Err(format!("{} {} was accepted", t.kind, t.name)),
        (_, Err(e)) => Err(format!("{} {} was refused: {e}", t.kind, t.name)),
        (expect, Ok(_)) => {
            let obj = wait_state(&t, expect).await?;
            let c = ready_condition(&obj).expect("a Ready condition");
            if let Expect::Condition(reason) = expect {
                // Plain progress is reported in the condition only (no Event).
                if !matches!(reason.as_str(), "Progressing" | "WorkspacePending") {
                    wait_event(client, &obj, reason).await?;
                }
                if reason == "NamespaceConflict" {
                    not_adopted(client, &obj, &c.message).await?;
                }
            }
            Ok(format!(
                "Ready={} {}: {}",
                c.status,
                c.reason,
                clip(&c.message, 160)
            ))
        }
    }
}

fn remember(created: &mut Created, t: &Target) {
    match (t.kind.as_str(), &t.namespace) {
        ("Organization", _) => created.organizations.push(t.name.clone()),
        ("Namespace", _) => created.namespaces.push(t.name.clone()),
        (_, Some(_)) => created.others.push(Target {
            api: t.api.clone(),
            name: t.name.clone(),
            kind: t.kind.clone(),
            namespace: t.namespace.clone(),
        }),
        _ => {}
    }
}

#[tokio::test]
async fn the_bad_input_corpus_is_rejected_or_reported_and_the_controller_survives_it() {
    let _ = controller();
    let client = admin().await;
    let org = unique("bad");
    let org_ns = format!("org-{org}");
    create_org(&client, &org, org_spec("owner@healthy.example")).await;
    wait_ws_ready(&client, &org, "default").await;

    let cases = load(&org);
    assert!(
        cases.len() >= 30,
        "the corpus has {} cases; it should have at least 30",
        cases.len()
    );

    // Cases run a few at a time: the controller sees them together, as it would in a
    // busy cluster. They never share names or subjects.
    let outcomes: Vec<(Outcome, Created)> = futures::stream::iter(&cases)
        .map(|case| {
            let client = client.clone();
            async move {
                let start = Instant::now();
                let mut created = Created::default();
                let result = run_case(&client, case, &mut created).await;
                let outcome = Outcome {
                    file: case.file.clone(),
                    expect: case.expect.clone(),
                    result,
                    elapsed: start.elapsed(),
                };
                (outcome, created)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut outcomes = outcomes;
    outcomes.sort_by(|a, b| a.0.file.cmp(&b.0.file));

    let (mut rejected, mut reported, mut ready) = (0, 0, 0);
    let mut failures = Vec::new();
    eprintln!("\nbad-input corpus ({} cases):", outcomes.len());
    for (o, _) in &outcomes {
        let kind = match &o.expect {
            Expect::Rejected(_) => "rejected",
            Expect::Condition(_) => "condition",
            Expect::Ready => "ready",
        };
        match &o.result {
            Ok(what) => {
                match o.expect {
                    Expect::Rejected(_) => rejected += 1,
                    Expect::Condition(_) => reported += 1,
                    Expect::Ready => ready += 1,
                }
                eprintln!(
                    "  ok   {:<52} {kind:<9} {:>5.1}s  {what}",
                    o.file,
                    o.elapsed.as_secs_f64()
                );
            }
            Err(why) => {
                eprintln!(
                    "  FAIL {:<52} {kind:<9} {:>5.1}s  {why}",
                    o.file,
                    o.elapsed.as_secs_f64()
                );
                failures.push(format!("{}: {why}", o.file));
            }
        }
    }
    eprintln!(
        "  {rejected} rejected at apply, {reported} reported in a condition, {ready} accepted and Ready, {} failed\n",
        failures.len()
    );

    // The controller is alive and still reconciles the healthy organization: a new
    // Workspace and a new Membership there become Ready, and the organization reconciles
    // successfully (its bindings apply, with the corpus's Memberships around) and stays
    // Ready.
    let mut rx = controller();
    create_ws(&client, &org, "after-corpus", Default::default()).await;
    crate::core::add_member(
        &client,
        &org,
        membership(
            "after-corpus",
            Subject::user("after@healthy.example"),
            OrgRole::Member,
            &[("after-corpus", WorkspaceRole::Editor)],
        ),
    )
    .await;
    wait_reconciled(
        &mut rx,
        &[
            ("Organization", None, org.as_str()),
            ("Workspace", Some(org_ns.as_str()), "after-corpus"),
            ("Membership", Some(org_ns.as_str()), "after-corpus"),
        ],
    )
    .await;
    wait_ws_ready(&client, &org, "after-corpus").await;
    wait_member_reason(&client, &org, "after-corpus", "Granted").await;
    // Status details (who a workspace reaches, an organization's counts) follow within
    // --status-interval-ms of the change; Ready comes at once.
    wait_for(
        &Api::<Workspace>::namespaced(client.clone(), &org_ns),
        "after-corpus",
        "the new member reaches the new workspace",
        |w: Option<&Workspace>| {
            w.and_then(|w| w.status.as_ref()).is_some_and(|s| {
                s.members
                    .iter()
                    .any(|m| m.name == "after@healthy.example" && m.role == WorkspaceRole::Editor)
            })
        },
    )
    .await;
    wait_org_ready(&client, &org).await;
    let listed = Api::<Membership>::namespaced(client.clone(), &org_ns)
        .list(&Default::default())
        .await
        .expect("list memberships")
        .items
        .len();
    crate::core::wait_org_status(
        &client,
        &org,
        "the healthy organization's status counts every Membership, the corpus's included",
        move |s| s.members as usize == listed,
    )
    .await;

    // Cleanup (not awaited to the end: the control plane goes with the test run).
    for (_, created) in &outcomes {
        for t in &created.others {
            let _ = t.api.delete(&t.name, &DeleteParams::default()).await;
        }
        for name in &created.organizations {
            let _ = Api::<Organization>::all(client.clone())
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"deletionProtection": false}})),
                )
                .await;
            let _ = Api::<Organization>::all(client.clone())
                .delete(name, &DeleteParams::default())
                .await;
        }
        for name in &created.namespaces {
            let _ = Api::<Namespace>::all(client.clone())
                .delete(name, &DeleteParams::default())
                .await;
        }
    }
    unprotect(&client, &org).await;
    Api::<Organization>::all(client.clone())
        .delete(&org, &DeleteParams::default())
        .await
        .expect("delete the healthy organization");

    assert!(
        failures.is_empty(),
        "{} corpus cases did not behave as their `# expect:` line says:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
