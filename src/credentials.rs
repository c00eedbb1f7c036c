//! Machine-client credentials: the secret (256 bits from the OS generator), and the
//! verifier Tenantry keeps, an Argon2id hash with a random salt. The hash lives in an
//! annotation of the client's ServiceAccount, so the delivered Secret may be deleted once
//! copied and the client still authenticates; removing the Membership removes the
//! ServiceAccount, and with it the verifier and every token issued for it.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;

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
/// Seconds the previous secret keeps working after a rotation (annotation on the
/// Membership; default 0).
pub const ROTATION_GRACE: &str = "tenantry.dev/rotation-grace-seconds";

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
    }
}
