//! Fuzz entry points: each takes arbitrary bytes, as a tenant's YAML, an annotation or an
//! anonymous request would bring them, runs the parsers and the pure rules on them, and
//! must return without a panic. `make fuzz` runs them under libFuzzer (`fuzz/`, cargo fuzz,
//! nightly); `make test` replays the checked-in corpus (`fuzz/corpus/`) and a stream of
//! generated inputs through the same functions on stable, so a crash found once stays
//! found.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::{Membership, Organization, PodSecurityLevel, Workspace, WorkspacePolicy};
use crate::{credentials, grants, names, status, token};

/// The names and values of annotations and labels: Tenantry's annotation parsers and
/// every name it derives from a tenant's name.
pub fn annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (a, b, c) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if let Ok(seconds) = credentials::rotation_grace(Some(a)) {
        let _ = credentials::grace_ends(k8s_openapi::jiff::Timestamp::MAX, seconds);
        let _ = credentials::grace_ends(k8s_openapi::jiff::Timestamp::now(), seconds);
    }
    let _ = names::printable(a, 64);
    let _ = names::printable(c, 0);
    let _ = names::shorten(a, 63);
    let _ = names::shorten(a, 0);
    let _ = names::label_value(a);
    let _ = names::invitation(a);
    let _ = names::client_service_account(a);
    let _ = names::client_secret_name(a);
    let _ = names::client_id(a, b, c);
    let _ = names::org_code(a);
    let _ = names::org_namespace(a);
    let _ = names::check_template(a);
    let reserved = vec![c.to_string()];
    let _ = names::is_reserved(b, &reserved);
    let _ = names::workspace_namespace(a, b, c, "tenantry-system", &reserved);
    let _ = names::workspace_namespace(names::DEFAULT_NAMESPACE_TEMPLATE, b, c, a, &reserved);
    let _ = token::client_id_parts(a);
    let _ = crate::quantity::nanos(a);
}

/// A token request: the first line is the Authorization header, the rest the form body.
/// The stored verifier is fuzzed too (a PHC string: its cost parameters are bounded).
pub fn token_request(data: &[u8]) {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            data.get(..i).unwrap_or_default(),
            data.get(i..).unwrap_or_default(),
        ),
        None => (data, &[][..]),
    };
    let header = std::str::from_utf8(header).ok();
    let _ = token::request_credentials(header, body);
    if let Some(phc) = header {
        let mut memory = Vec::new();
        let _ = credentials::verify_with_memory("secret", phc, &mut memory);
    }
}

/// A tenant's YAML (any number of documents): every Organization, Workspace and
/// Membership in it that deserializes, run through the rules that decide who gets what,
/// the workspace builder and the status conditions.
pub fn resources(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = serde_saphyr::from_multiple::<serde_json::Value>(text) else {
        return;
    };
    let mut orgs = Vec::new();
    let mut workspaces = Vec::new();
    let mut memberships = Vec::new();
    for doc in docs {
        match doc.get("kind").and_then(|k| k.as_str()) {
            Some("Organization") => orgs.extend(serde_json::from_value::<Organization>(doc).ok()),
            Some("Workspace") => workspaces.extend(serde_json::from_value::<Workspace>(doc).ok()),
            Some("Membership") => {
                memberships.extend(serde_json::from_value::<Membership>(doc).ok())
            }
            _ => {}
        }
    }
    let org_refs: Vec<&Organization> = orgs.iter().collect();
    let ws_refs: Vec<&Workspace> = workspaces.iter().collect();
    let m_refs: Vec<&Membership> = memberships.iter().collect();
    let _ = grants::admin_readable_credentials(&m_refs, |_| true);
    for org in &orgs {
        for require_verification in [false, true] {
            let states = grants::member_states(
                org,
                &m_refs,
                grants::Gates {
                    require_verification,
                    ..Default::default()
                },
            );
            let _ = grants::org_role_holders(org, &m_refs, &states);
            for ws in &workspaces {
                let _ = grants::workspace_grantees(org, ws, &m_refs, &states);
            }
        }
        let _ = grants::provisionable_workspaces(org, &ws_refs);
        let _ = grants::owner_limit_reached(org, &org_refs, 1, |_| false);
        let _ = org.spec.max_workspaces();
        let _ = names::printable(&org.spec.display_name, 80);
        let states = grants::member_states(org, &m_refs, grants::Gates::default());
        // The pooled quota's plan over every workspace (any quantities the API may hold).
        let view = crate::view::OrgView::new(
            std::sync::Arc::new(org.clone()),
            memberships
                .iter()
                .cloned()
                .map(std::sync::Arc::new)
                .collect(),
            workspaces
                .iter()
                .cloned()
                .map(std::sync::Arc::new)
                .collect(),
            grants::Gates::default(),
            None,
        );
        for ws in &workspaces {
            let _ = crate::build::workspace::children(&crate::build::workspace::Input {
                org,
                ws,
                namespace: "acme--ws",
                uid: "uid",
                memberships: &m_refs,
                states: &states,
                operator_defaults: &WorkspacePolicy::default(),
                pod_security_ceiling: PodSecurityLevel::Baseline,
                share: view.share(&ws.name_any()),
            });
            let _ = names::workspace_namespace(
                names::DEFAULT_NAMESPACE_TEMPLATE,
                &org.name_any(),
                &ws.name_any(),
                "tenantry-system",
                &[],
            );
        }
    }
    for m in &memberships {
        let annotations: &BTreeMap<String, String> = m.annotations();
        let _ = credentials::rotation_grace(
            annotations
                .get(credentials::ROTATION_GRACE)
                .map(String::as_str),
        );
        let _ = grants::rbac_subject(&m.spec.subject, &m.name_any(), "org-x");
        let old = m.status.clone().unwrap_or_default().conditions;
        let outcome = status::Outcome::progressing("Fuzzed", names::printable(&m.name_any(), 80));
        let _ = status::conditions(&old, &outcome, m.metadata.generation);
        let _ = status::same_conditions(&old, &old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input a fuzzer has kept (the seeds and anything it found) replayed, then a
    /// stream of mutations of them: the same functions as `make fuzz`, on stable, in every
    /// `make test`.
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        // Mutations per target: a well-formed verifier costs a real Argon2 pass.
        type Target = (&'static str, fn(&[u8]), usize);
        let targets: [Target; 3] = [
            ("annotations", annotations, 5_000),
            ("token_request", token_request, 300),
            ("resources", resources, 2_000),
        ];
        // xorshift: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (target, run, mutations) in targets {
            let started = std::time::Instant::now();
            let dir = root.join(target);
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|f| std::fs::read(f.unwrap().path()).unwrap())
                .collect();
            assert!(!seeds.is_empty(), "{target}: a corpus to replay");
            seeds.sort();
            for seed in &seeds {
                run(seed);
            }
            for _ in 0..mutations {
                let mut input = seeds[(next() as usize) % seeds.len()].clone();
                for _ in 0..(next() % 8) {
                    let op = next() % 4;
                    let at = if input.is_empty() {
                        0
                    } else {
                        (next() as usize) % input.len()
                    };
                    let byte = (next() % 256) as u8;
                    match op {
                        0 if !input.is_empty() => input[at] = byte,
                        1 => input.insert(at, byte),
                        2 if !input.is_empty() => {
                            input.remove(at);
                        }
                        _ => {
                            let digits = b"99999999999999999999";
                            for (i, d) in digits.iter().enumerate().take((next() % 20) as usize) {
                                input.insert(at + i, *d);
                            }
                        }
                    }
                }
                run(&input);
            }
            eprintln!(
                "{target}: {} seeds, {mutations} mutations in {:?}",
                seeds.len(),
                started.elapsed()
            );
        }
    }
}
