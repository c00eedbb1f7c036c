//! Machine-client credentials: the secret (256 bits from the OS generator), and the
//! verifier Tenantry keeps, an Argon2id hash with a random salt. The hash lives in an
//! annotation of the client's ServiceAccount, so the delivered Secret may be deleted once
//! copied and the client still authenticates; removing the Membership removes the
//! ServiceAccount, and with it the verifier and every token issued for it.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use k8s_openapi::jiff;

/// The current verifier (annotation on the client's ServiceAccount).
pub const HASH: &str = "tenantry.dev/client-secret-hash";
/// The verifier of the secret before the last rotation, while its grace period lasts.
pub const PREVIOUS_HASH: &str = "tenantry.dev/previous-client-secret-hash";
/// Until when (RFC 3339) the previous secret is still accepted.
pub const PREVIOUS_EXPIRES: &str = "tenantry.dev/previous-client-secret-expires";
/// The last rotation value acted on (annotation on the client's ServiceAccount, written
/// with the verifier).
pub const ROTATION: &str = "tenantry.dev/rotation";
/// Set on a Membership to any new value to rotate its client secret.
pub const ROTATE: &str = "tenantry.dev/rotate";
/// Set on a Membership to any new value to revoke its client: a new secret (the previous
/// one refused at once, whatever the grace) and a new ServiceAccount, so every token
/// issued before is rejected by the API server.
pub const REVOKE: &str = "tenantry.dev/revoke";
/// The last revocation value acted on (annotation on the client's ServiceAccount).
pub const REVOCATION: &str = "tenantry.dev/revocation";
/// Seconds the previous secret keeps working after a rotation (annotation on the
/// Membership; default 0, at most [`MAX_ROTATION_GRACE_SECONDS`]).
pub const ROTATION_GRACE: &str = "tenantry.dev/rotation-grace-seconds";
/// The longest grace a rotation gives the previous secret: one day. A rotation is often
/// a response to a leak; a longer overlap would keep a leaked secret alive.
pub const MAX_ROTATION_GRACE_SECONDS: u32 = 24 * 3600;

/// The grace period `value` (the annotation [`ROTATION_GRACE`], absent means 0) asks for,
/// or why it is refused: a whole number of seconds from 0 to
/// [`MAX_ROTATION_GRACE_SECONDS`], digits only.
pub fn rotation_grace(value: Option<&str>) -> Result<u32, String> {
    let Some(raw) = value else { return Ok(0) };
    let refused = || {
        format!(
            "annotation {ROTATION_GRACE}: \"{}\" is not a whole number of seconds from 0 to {MAX_ROTATION_GRACE_SECONDS}",
            crate::names::printable(raw, 40)
        )
    };
    let v = raw.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    match v.parse::<u32>() {
        Ok(n) if n <= MAX_ROTATION_GRACE_SECONDS => Ok(n),
        _ => Err(refused()),
    }
}

/// When a grace of `seconds` that starts at `now` ends; `None` if it cannot be
/// represented (never for a grace [`rotation_grace`] accepted).
pub fn grace_ends(now: jiff::Timestamp, seconds: u32) -> Option<jiff::Timestamp> {
    now.checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)))
        .ok()
}

/// A new client secret: 32 random bytes, base64url (43 characters).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The verifier of `secret`: an Argon2id PHC string with a random salt.
pub fn hash(secret: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `secret` matches the verifier `phc` (constant-time comparison inside).
pub fn verify(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// The most memory a verifier may ask Argon2 for, in KiB (Tenantry's own verifiers use the
/// default, 19 MiB): a verifier is only ever Tenantry's, but a bound costs nothing.
const MAX_MEMORY_KIB: u32 = 64 * 1024;
/// The most passes a verifier may ask for (Tenantry's own use the default, 2).
const MAX_TIME_COST: u32 = 8;

/// [`verify`], with Argon2's working memory supplied by the caller and reused across
/// calls: no 19 MiB allocation per attempt (measured: the token server's peak memory
/// grew by 19 MiB with each verification, which a flood of attempts turned into an OOM).
pub fn verify_with_memory(secret: &str, phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    if h.algorithm != argon2::Algorithm::Argon2id.ident() {
        return false;
    }
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&h) else {
        return false;
    };
    // Time and lanes bounded too: a verifier with t=2^32 would hold a verification thread
    // for hours (`crate::fuzz::token_request` reaches this path with any PHC string).
    if params.m_cost() > MAX_MEMORY_KIB || params.t_cost() > MAX_TIME_COST || params.p_cost() > 4 {
        return false;
    }
    let version = match h.version.map(argon2::Version::try_from) {
        None => argon2::Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    let argon = Argon2::new(argon2::Algorithm::Argon2id, version, params);
    memory.resize(blocks, argon2::Block::default());
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let Some(work) = memory.get_mut(..blocks) else {
        return false;
    };
    argon
        .hash_password_into_with_memory(secret.as_bytes(), salt, &mut out, work)
        .is_ok()
        // Output's equality is constant-time.
        && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// A verifier no secret matches, to spend the same time on unknown clients.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy, never a client's secret").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_verify_only_themselves() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        let h = hash(&a).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(&a));
        assert!(verify(&a, &h));
        assert!(!verify(&b, &h));
        assert!(!verify(&a, "not a hash"));
        assert_ne!(hash(&a).unwrap(), h, "salted");
        let mut memory = Vec::new();
        assert!(verify_with_memory(&a, &h, &mut memory));
        assert!(!verify_with_memory(&b, &h, &mut memory));
        assert!(!verify_with_memory(&a, "not a hash", &mut memory));
        assert!(verify_with_memory(&a, &h, &mut memory), "memory reused");
        let greedy = h.replace("m=19456", "m=4194304");
        assert!(
            !verify_with_memory(&a, &greedy, &mut memory),
            "bounded memory"
        );
    }

    #[test]
    fn rotation_grace_is_bounded() {
        assert_eq!(rotation_grace(None), Ok(0));
        assert_eq!(rotation_grace(Some("0")), Ok(0));
        assert_eq!(rotation_grace(Some("3600")), Ok(3600));
        assert_eq!(
            rotation_grace(Some("86400")),
            Ok(MAX_ROTATION_GRACE_SECONDS)
        );
        for bad in [
            "86401",
            "9223372036854775807",
            "-1",
            "-9223372036854775808",
            "1e9",
            "",
            " ",
            "+5",
            "0x10",
            "3600.5",
            "99999999999999999999999999",
            "\u{1b}[2J",
        ] {
            let e = rotation_grace(Some(bad)).unwrap_err();
            assert!(e.contains(ROTATION_GRACE), "{e}");
            assert!(!e.contains('\u{1b}'), "the value is shown escaped: {e}");
        }
        let now = jiff::Timestamp::MAX;
        assert_eq!(grace_ends(now, 1), None, "no overflow panic");
        assert!(grace_ends(jiff::Timestamp::UNIX_EPOCH, MAX_ROTATION_GRACE_SECONDS).is_some());
    }

    /// Any string: a value or a refusal, never a panic.
    #[test]
    fn rotation_grace_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let s: String = (0..len)
                .map(|i| {
                    let b = (seed >> (i % 8 * 8)) as u8;
                    if i % 3 == 0 {
                        char::from(b'0' + b % 10)
                    } else {
                        char::from(b % 128)
                    }
                })
                .collect();
            if let Ok(n) = rotation_grace(Some(&s)) {
                assert!(n <= MAX_ROTATION_GRACE_SECONDS);
                assert!(grace_ends(jiff::Timestamp::now(), n).is_some());
            }
        }
    }
}
