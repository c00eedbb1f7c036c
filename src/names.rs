//! Deterministic names: namespaces, codes and client ids.

use sha2::{Digest, Sha256};

/// Longest DNS-1123 label (a namespace name).
pub const MAX_LABEL: usize = 63;

/// Prefix of every organization namespace; no workspace namespace may start with it.
pub const ORG_NAMESPACE_PREFIX: &str = "org-";

/// The default template of a workspace namespace's name. The separator `--` cannot occur
/// in an organization name (the CRD refuses it), so no two organizations can produce the
/// same namespace: org `a` cannot claim a namespace of org `a-b`, nor org `cert` the
/// namespace `cert-manager`.
pub const DEFAULT_NAMESPACE_TEMPLATE: &str = "{org}--{workspace}";

/// The template before 0.2, kept to find the namespaces workspaces made under it (they
/// keep them).
pub const LEGACY_NAMESPACE_TEMPLATE: &str = "{org}-{workspace}";

/// Namespaces no workspace may have by default: Kubernetes' own and those of common
/// platform software (a workspace there could read what the platform installs). A trailing
/// `*` matches a prefix. Operators extend the list with `--reserved-namespaces`.
pub const DEFAULT_RESERVED_NAMESPACES: &[&str] = &[
    "kube-*",
    "default",
    "cert-manager",
    "ingress-nginx",
    "flux-system",
    "argocd",
    "istio-system",
    "monitoring",
    "gatekeeper-system",
    "kyverno",
    "linkerd",
    "cattle-system",
    "capsule-system",
    "openshift-*",
    "tigera-operator",
    "calico-system",
    "metallb-system",
    "velero",
    "vault",
    "external-secrets",
    "prometheus",
    "logging",
];

/// Whether a namespace template keeps organizations apart: exactly one `{org}` and one
/// `{workspace}`, joined by `--` (which organization names cannot contain).
pub fn check_template(template: &str) -> Result<(), String> {
    let once = |p: &str| template.matches(p).count() == 1;
    if !once("{org}") || !once("{workspace}") {
        return Err(format!(
            "namespace template {template:?} must contain {{org}} and {{workspace}} once each"
        ));
    }
    if !template.contains("{org}--{workspace}") && !template.contains("{workspace}--{org}") {
        return Err(format!(
            "namespace template {template:?} must join {{org}} and {{workspace}} with \"--\" (e.g. {DEFAULT_NAMESPACE_TEMPLATE}): organization names cannot contain \"--\", so no organization can take another's namespaces"
        ));
    }
    Ok(())
}

/// Whether `name` is on the `reserved` list (entries ending in `*` are prefixes).
pub fn is_reserved(name: &str, reserved: &[String]) -> bool {
    reserved.iter().any(|r| match r.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == r,
    })
}

fn hex_digest(input: &str) -> String {
    hex(&Sha256::digest(input.as_bytes()))
}

/// `bytes` in lowercase hexadecimal, two characters a byte.
pub fn hex<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> String {
    bytes
        .into_iter()
        .flat_map(|b| [b >> 4, b & 0x0f])
        .filter_map(|n| char::from_digit(u32::from(n), 16))
        .collect()
}

/// `name` if it fits in `max` characters, else a prefix of it and 8 hex characters of
/// its SHA-256, so that different long names stay different.
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let digest = hex_digest(name);
    let hash = digest.get(..8).unwrap_or(&digest);
    let mut keep = max.saturating_sub(hash.len().saturating_add(1));
    // Names from the API are ASCII; a cut inside a character is moved back all the same.
    while !name.is_char_boundary(keep) {
        keep = keep.saturating_sub(1);
    }
    let prefix = name.get(..keep).unwrap_or_default().trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// `s` made safe for a log line, a terminal or a condition message: control characters
/// (newlines, escape sequences) shown escaped, at most `max` characters kept (then `...`).
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= max {
            out.push_str("...");
            break;
        }
        // Control characters, and the invisible ones that reorder or hide text (bidi
        // overrides, zero-width characters).
        let hidden = matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
        if c.is_control() || hidden {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `s` is a DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting
/// and ending with an alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.chars().all(|c| ok_char(c) || c == '-')
        && s.starts_with(ok_char)
        && s.ends_with(ok_char)
}

/// The organization's own namespace: `org-<name>`.
pub fn org_namespace(org: &str) -> String {
    shorten(&format!("{ORG_NAMESPACE_PREFIX}{org}"), MAX_LABEL)
}

/// Why a workspace namespace name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("namespace name {0:?} is not a DNS-1123 label")]
    NotALabel(String),
    #[error("namespace name {0:?} is reserved ({1})")]
    Reserved(String, &'static str),
}

/// The namespace of workspace `ws` of organization `org`, from a template with `{org}`
/// and `{workspace}` placeholders; shortened with a hash when longer than 63 characters.
pub fn workspace_namespace(
    template: &str,
    org: &str,
    ws: &str,
    operator_namespace: &str,
    reserved: &[String],
) -> Result<String, NameError> {
    let full = template.replace("{org}", org).replace("{workspace}", ws);
    let name = shorten(&full, MAX_LABEL);
    if !is_dns_label(&name) {
        return Err(NameError::NotALabel(name));
    }
    if name.starts_with("kube-") {
        return Err(NameError::Reserved(name, "kube-* belongs to Kubernetes"));
    }
    if name == "default" {
        return Err(NameError::Reserved(name, "the default namespace"));
    }
    if name == operator_namespace {
        return Err(NameError::Reserved(name, "Tenantry's own namespace"));
    }
    // `org-<org>`: an organization namespace (organization names never start with '-').
    if name
        .strip_prefix(ORG_NAMESPACE_PREFIX)
        .is_some_and(|rest| !rest.starts_with('-'))
    {
        return Err(NameError::Reserved(
            name,
            "org-* is for organization namespaces",
        ));
    }
    if is_reserved(&name, reserved) {
        return Err(NameError::Reserved(
            name,
            "on the platform's reserved list (--reserved-namespaces)",
        ));
    }
    Ok(name)
}

/// The organization code: derived from the object's UID, so it never changes and
/// survives a status wipe or a controller restart. Eight characters of Crockford base32
/// in two groups, e.g. `7K3F-9Q2M`.
pub fn org_code(uid: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let digest = Sha256::digest(uid.as_bytes());
    let bits = digest
        .iter()
        .take(5)
        .fold(0u64, |bits, b| (bits << 8) | u64::from(*b));
    let chars: Vec<char> = [35u32, 30, 25, 20, 15, 10, 5, 0]
        .iter()
        .map(|shift| {
            let index = (bits >> shift) & 31;
            ALPHABET
                .get(usize::try_from(index).unwrap_or(0))
                .map_or('0', |c| char::from(*c))
        })
        .collect();
    let (a, b) = chars.split_at(4);
    format!(
        "{}-{}",
        a.iter().collect::<String>(),
        b.iter().collect::<String>()
    )
}

/// A machine client's id: `<org>.<membership>.<6 hex of the membership UID>`. Readable,
/// unique across the cluster, and different for a re-created membership of the same name.
pub fn client_id(org: &str, membership: &str, membership_uid: &str) -> String {
    format!("{org}.{membership}.{}", &hex_digest(membership_uid)[..6])
}

/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// `name` as a label value: object names may be up to 253 characters, label values 63;
/// longer names are shortened with a hash (the label is informational: owner references
/// link the objects).
pub fn label_value(name: &str) -> String {
    shorten(name, MAX_LABEL_VALUE)
}

/// The Role and RoleBinding that let the invited user of Membership `membership` accept
/// (object names may be up to 253 characters).
pub fn invitation(membership: &str) -> String {
    shorten(&format!("tenantry-invitation-{membership}"), 253)
}

/// The ServiceAccount of a Client membership.
/// `s` in the characters of a DNS label: lowercase letters and digits, every other run of
/// characters one dash, none at either end (possibly empty).
pub fn label_chars(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The name of User `user`'s personal Organization: `user-<user, made a label>-<hash>`,
/// at most 40 characters (an organization name's limit), never with `--`; the hash of
/// the whole user name keeps two users apart whose names read alike.
pub fn personal_organization(user: &str) -> String {
    let readable: String = label_chars(user).chars().take(26).collect();
    let readable = readable.trim_end_matches('-');
    let digest = hex_digest(user);
    let hash = digest.get(..8).unwrap_or(&digest);
    if readable.is_empty() {
        format!("user-{hash}")
    } else {
        format!("user-{readable}-{hash}")
    }
}

/// The name of Membership `membership`'s personal Workspace: `personal-<membership>`
/// (dots made dashes), shortened to a DNS label.
pub fn personal_workspace(membership: &str) -> String {
    shorten(
        &format!("personal-{}", membership.replace('.', "-")),
        MAX_LABEL,
    )
}

pub fn client_service_account(membership: &str) -> String {
    format!("{membership}-client")
}

/// The Secret holding a Client membership's credentials.
pub fn client_secret_name(membership: &str) -> String {
    format!("{membership}-credentials")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(shorten("acme-prod", 63), "acme-prod");
        assert_eq!(org_namespace("acme"), "org-acme");
    }

    #[test]
    fn long_names_are_shortened_deterministically_and_distinctly() {
        let a = "a".repeat(40) + "-" + &"b".repeat(40);
        let b = "a".repeat(40) + "-" + &"c".repeat(40);
        let sa = shorten(&a, 63);
        assert_eq!(sa.len(), 63);
        assert!(is_dns_label(&sa), "{sa}");
        assert_eq!(sa, shorten(&a, 63), "deterministic");
        assert_ne!(sa, shorten(&b, 63), "distinct inputs stay distinct");
    }

    #[test]
    fn personal_organization_names_are_organization_names() {
        for user in [
            "alice@x.example",
            "Bob.Smith@Corp",
            "!!!",
            &"z".repeat(300),
            "a--b",
        ] {
            let name = personal_organization(user);
            assert!(
                name.len() <= 40 && is_dns_label(&name) && !name.contains("--"),
                "{user}: {name}"
            );
        }
        assert_eq!(
            personal_organization("alice@x.example"),
            format!(
                "user-alice-x-example-{}",
                &hex_digest("alice@x.example")[..8]
            )
        );
        assert_ne!(personal_organization("a.b"), personal_organization("a-b"));
    }

    #[test]
    fn shortening_never_ends_with_a_dash_before_the_hash() {
        let name = format!("{}-{}", "x".repeat(53), "y".repeat(20));
        let s = shorten(&name, 63);
        assert!(is_dns_label(&s) && !s.contains("--"), "{s}");
    }

    fn reserved() -> Vec<String> {
        DEFAULT_RESERVED_NAMESPACES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn ws_ns(template: &str, org: &str, ws: &str) -> Result<String, NameError> {
        workspace_namespace(template, org, ws, "tenantry-system", &reserved())
    }

    #[test]
    fn workspace_namespaces_follow_the_template() {
        let t = DEFAULT_NAMESPACE_TEMPLATE;
        assert_eq!(ws_ns(t, "acme", "prod").unwrap(), "acme--prod");
        let ns = ws_ns("t-{workspace}--{org}", "acme", "prod");
        assert_eq!(ns.unwrap(), "t-prod--acme");
        let long = ws_ns(t, &"o".repeat(40), &"w".repeat(63));
        assert!(long.unwrap().len() <= 63);
    }

    /// Organization names cannot contain "--" (a CRD rule): then the default template
    /// maps different (organization, workspace) pairs to different namespaces, and no
    /// workspace namespace is anyone else's.
    #[test]
    fn organizations_cannot_take_each_others_namespaces() {
        let t = DEFAULT_NAMESPACE_TEMPLATE;
        // org "a" with workspace "b-c" vs org "a-b" with workspace "c".
        assert_ne!(ws_ns(t, "a", "b-c").unwrap(), ws_ns(t, "a-b", "c").unwrap());
        assert_ne!(
            ws_ns(t, "a", "b--c").unwrap(),
            ws_ns(t, "a-b", "c").unwrap()
        );
        // org "cert" cannot reach "cert-manager", nor any platform namespace.
        assert_ne!(ws_ns(t, "cert", "manager").unwrap(), "cert-manager");
        let orgs = ["a", "a-b", "cert", "org", "x1", "kube"];
        let wss = ["b", "b-c", "c", "manager", "default", "b--c", "system"];
        let mut seen = std::collections::BTreeMap::new();
        for o in orgs {
            for w in wss {
                if let Ok(ns) = ws_ns(t, o, w) {
                    assert!(!is_reserved(&ns, &reserved()), "{ns}");
                    assert_ne!(ns, org_namespace(o));
                    if let Some(prev) = seen.insert(ns.clone(), (o, w)) {
                        assert_eq!(prev.0, o, "{ns} of {prev:?} and of {o}/{w}");
                    }
                }
            }
        }
        // org "org": its workspaces are fine ("org--x" can be no organization namespace).
        assert_eq!(ws_ns(t, "org", "x").unwrap(), "org--x");
    }

    #[test]
    fn templates_must_keep_organizations_apart() {
        assert!(check_template(DEFAULT_NAMESPACE_TEMPLATE).is_ok());
        assert!(check_template("t-{workspace}--{org}").is_ok());
        assert!(check_template("{org}-{workspace}").is_err());
        assert!(check_template("{org}{workspace}").is_err());
        assert!(check_template("{workspace}").is_err());
        assert!(check_template("{org}--{workspace}--{org}").is_err());
    }

    #[test]
    fn reserved_namespaces_are_refused() {
        let t = "{workspace}--{org}";
        let custom = |template: &str, org: &str, ws: &str| {
            workspace_namespace(template, org, ws, "op", &reserved())
        };
        assert!(matches!(
            custom("{org}-{workspace}", "kube", "system"),
            Err(NameError::Reserved(..))
        ));
        assert!(matches!(
            custom("{workspace}", "a", "default"),
            Err(NameError::Reserved(..))
        ));
        assert!(matches!(
            workspace_namespace(
                "{org}-{workspace}",
                "tenantry",
                "system",
                "tenantry-system",
                &[]
            ),
            Err(NameError::Reserved(..))
        ));
        assert!(matches!(
            custom("{org}-{workspace}", "org", "acme"),
            Err(NameError::Reserved(..))
        ));
        for platform in ["cert-manager", "flux-system", "argocd", "openshift-ingress"] {
            assert!(matches!(
                custom("{workspace}", "a", platform),
                Err(NameError::Reserved(..))
            ));
        }
        assert!(matches!(
            custom("{org}_{workspace}", "a", "b"),
            Err(NameError::NotALabel(_))
        ));
        assert!(custom(t, "a", "b").is_ok());
    }

    #[test]
    fn org_codes_are_stable_and_formatted() {
        let c = org_code("5f1c7a9e-0000-4000-8000-000000000001");
        assert_eq!(c, org_code("5f1c7a9e-0000-4000-8000-000000000001"));
        assert_ne!(c, org_code("5f1c7a9e-0000-4000-8000-000000000002"));
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
        assert!(
            c.chars()
                .all(|ch| ch == '-' || ch.is_ascii_digit() || ch.is_ascii_uppercase())
        );
    }

    #[test]
    fn names_derived_from_long_membership_names_stay_valid() {
        let long = "m".repeat(252);
        let label = label_value(&long);
        assert!(
            label.len() <= MAX_LABEL_VALUE && is_dns_label(&label),
            "{label}"
        );
        assert_ne!(label, label_value(&"m".repeat(251)));
        assert!(invitation(&long).len() <= 253);
        assert_eq!(invitation("eve"), "tenantry-invitation-eve");
        assert_eq!(label_value("eve"), "eve");
    }

    #[test]
    fn printable_escapes_what_a_terminal_or_a_log_would_obey() {
        assert_eq!(printable("acme", 10), "acme");
        assert_eq!(printable("a\nb", 10), "a\\nb");
        assert!(!printable("\u{1b}[2J\u{1b}]0;pwned\u{7}", 64).contains('\u{1b}'));
        assert!(!printable("abc\u{202E}fed", 64).contains('\u{202E}'));
        assert_eq!(printable("abcdef", 3), "abc...");
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("a"));
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("é"));
    }
}
