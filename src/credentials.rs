//! Machine-client credentials: the secret (256 bits from the OS generator), and the
//! verifier Tenantry keeps, SHA-256 of a random salt and the secret. The verifier lives in
//! an annotation of the client's ServiceAccount, so the delivered Secret may be deleted
//! once copied and the client still authenticates; removing the Membership removes the
//! ServiceAccount, and with it the verifier and every token issued for it.
//!
//! Why not a password hash: Argon2 (what releases before wrote, and still verified: see
//! [`verify_with_memory`]) makes guessing a *low-entropy* password from its verifier
//! slow. A client secret is 256 random bits, never chosen by a person: no guess, slow or
//! fast, finds it, so the slowness bought nothing, while it cost 19 MiB and about 15 ms
//! of CPU per issuance in the controller (measured: 28 % of the controller's CPU in the
//! benchmark) and per attempt in the token endpoint (a flood of attempts was a CPU and
//! memory load to bound). This is the practice for machine credentials of that size
//! (API tokens are stored as their SHA-256).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, Block};
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

/// The algorithm of the verifiers Tenantry writes, in their PHC string
/// (`$sha256$<salt>$<digest>`, both base64 without padding).
const SHA256: &str = "sha256";

/// Whether `value` is a secret [`generate`] could have made: 43 base64url characters
/// holding 32 bytes. A value found in a credentials Secret is adopted as the client's
/// secret only if it is one: a short or chosen value would be guessable from its
/// verifier.
pub fn looks_generated(value: &str) -> bool {
    value.len() == 43
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .is_ok_and(|raw| raw.len() == 32)
}

/// The verifier of `secret`: SHA-256 of a random 16-byte salt and the secret, as a PHC
/// string (`$sha256$<salt>$<digest>`). For secrets from [`generate`] only (see the
/// module's documentation).
pub fn hash(secret: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt_string = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let digest = salted_sha256(&salt, secret);
    let phc = PasswordHash {
        algorithm: argon2::password_hash::Ident::new(SHA256).map_err(|e| e.to_string())?,
        version: None,
        params: argon2::password_hash::ParamsString::new(),
        salt: Some(salt_string.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&digest).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

fn salted_sha256(salt: &[u8], secret: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// The verifier releases before this one wrote: an Argon2id PHC string (the default
/// parameters: 19 MiB, two passes) with a random salt, computed in `memory`. Tenantry
/// writes none any more; [`verify_with_memory`] still accepts them (a client issued
/// before an upgrade keeps working until its next rotation), and the tests make them.
pub fn argon2_hash_with_memory(secret: &str, memory: &mut Vec<Block>) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt_string = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let params = argon2::Params::default();
    let version = argon2::Version::V0x13;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, version, params.clone());
    let blocks = params.block_count();
    memory.resize(blocks, Block::default());
    let work = memory
        .get_mut(..blocks)
        .ok_or("Argon2 working memory too short")?;
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(secret.as_bytes(), &salt, &mut out, work)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(version.into()),
        params: argon2::password_hash::ParamsString::try_from(&params)
            .map_err(|e| e.to_string())?,
        salt: Some(salt_string.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// The controller's verifications of an interrupted issuance's secret (Argon2 when the
/// verifier is one an earlier release wrote): one at a time, on a blocking thread rather
/// than an async worker, in one working memory that is kept while more work waits and
/// given back when the last is done. Measured before: each hash allocated its own 19 MiB on an async worker, so
/// the Membership reconciles in flight held up to 8 x 19 MiB at once (38 of the 53 MiB
/// peak heap at the benchmark's 1x).
#[derive(Default, Clone)]
pub struct Hashing {
    memory: Arc<Mutex<Vec<Block>>>,
    pending: Arc<AtomicUsize>,
}

impl Hashing {
    /// Runs `f` with the working memory, after the work queued before it.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = this.memory.lock().unwrap_or_else(PoisonError::into_inner);
            // Counted down even if `f` panicked, so the memory is still given back.
            let done = Done(&this.pending, &mut memory);
            f(&mut *done.1)
        })
        .await
    }

    /// Whether the working memory is held now (tests).
    pub fn holds_memory(&self) -> bool {
        !self
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// Counts one piece of work done; the last one gives the working memory back.
struct Done<'a>(&'a AtomicUsize, &'a mut Vec<Block>);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.1 = Vec::new();
        }
    }
}

/// Whether `secret` matches the verifier `phc` (constant-time comparison inside).
pub fn verify(secret: &str, phc: &str) -> bool {
    verify_with_memory(secret, phc, &mut Vec::new())
}

/// The most memory a verifier may ask Argon2 for, in KiB (Tenantry's own verifiers use the
/// default, 19 MiB): a verifier is only ever Tenantry's, but a bound costs nothing.
const MAX_MEMORY_KIB: u32 = 64 * 1024;
/// The most passes a verifier may ask for (Tenantry's own use the default, 2).
const MAX_TIME_COST: u32 = 8;

/// [`verify`], with Argon2's working memory supplied by the caller and reused across
/// calls: no 19 MiB allocation per attempt (measured: the token server's peak memory
/// grew by 19 MiB with each verification, which a flood of attempts turned into an OOM).
///
/// A SHA-256 verifier ([`hash`]) takes microseconds and no working memory; an Argon2id
/// one (written by releases before, [`argon2_hash_with_memory`]) takes `memory`.
pub fn verify_with_memory(secret: &str, phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    if h.algorithm.as_str() == SHA256 {
        let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        // Output's equality is constant-time.
        return argon2::password_hash::Output::new(&salted_sha256(salt, secret))
            .is_ok_and(|o| o == expected);
    }
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

#[cfg(test)]
mod hashing_tests {
    use super::*;

    #[tokio::test]
    async fn shared_memory_is_reused_and_given_back_when_idle() {
        let hashing = Hashing::default();
        let secret = generate().unwrap();
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let (hashing, secret) = (hashing.clone(), secret.clone());
                tokio::spawn(async move {
                    hashing
                        .run(move |memory| {
                            let h = argon2_hash_with_memory(&secret, memory).unwrap();
                            (memory.len(), verify_with_memory(&secret, &h, memory), h)
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut hashes = Vec::new();
        for run in runs {
            let (blocks, verified, h) = run.await.unwrap();
            assert_eq!(blocks, 19456, "19 MiB of 1 KiB blocks");
            assert!(verified);
            assert!(verify(&secret, &h), "the usual verifier accepts it");
            hashes.push(h);
        }
        hashes.dedup();
        assert_eq!(hashes.len(), 3, "salted each time");
        assert!(!hashing.holds_memory(), "given back after the last");
    }
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
        assert!(looks_generated(&a) && looks_generated(&b));
        let h = hash(&a).unwrap();
        assert!(h.starts_with("$sha256$"), "{h}");
        assert_eq!(h.split('$').count(), 4, "$sha256$<salt>$<digest>: {h}");
        assert!(!h.contains(&a));
        assert!(verify(&a, &h));
        assert!(!verify(&b, &h));
        assert!(!verify(&a, "not a hash"));
        assert_ne!(hash(&a).unwrap(), h, "salted");
        let mut memory = Vec::new();
        assert!(verify_with_memory(&a, &h, &mut memory));
        assert!(!verify_with_memory(&b, &h, &mut memory));
        assert!(
            memory.is_empty(),
            "no working memory for a SHA-256 verifier"
        );
        // Tampered verifiers match nothing: another digest, no salt, no digest.
        let (head, digest) = h.rsplit_once('$').unwrap();
        let other = hash(&b).unwrap();
        let (_, other_digest) = other.rsplit_once('$').unwrap();
        assert!(!verify(&a, &format!("{head}${other_digest}")));
        assert!(!verify(&a, head), "no digest");
        assert!(!verify(&a, &format!("$sha256${digest}")), "no salt");
        assert!(!verify(&a, &h.replace("$sha256$", "$sha512$")));
    }

    #[test]
    fn verifiers_of_earlier_releases_still_verify_within_bounds() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        let mut memory = Vec::new();
        let h = argon2_hash_with_memory(&a, &mut memory).unwrap();
        assert!(
            h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "the default parameters: {h}"
        );
        assert!(verify(&a, &h));
        assert!(!verify(&b, &h));
        assert!(verify_with_memory(&a, &h, &mut memory));
        assert!(!verify_with_memory(&b, &h, &mut memory));
        assert!(!verify_with_memory(&a, "not a hash", &mut memory));
        assert!(verify_with_memory(&a, &h, &mut memory), "memory reused");
        let greedy = h.replace("m=19456", "m=4194304");
        assert!(
            !verify_with_memory(&a, &greedy, &mut memory),
            "bounded memory"
        );
        assert!(
            !verify(&a, &h.replace("t=2", "t=4294967295")),
            "bounded time"
        );
    }

    #[test]
    fn the_format_is_sha256_of_salt_then_secret() {
        // fuzz/corpus/token_request/phc-sha256, computed outside Rust (Python's hashlib):
        // the verifier of "secret" with the salt "saltsaltsaltsalt".
        let seed = include_str!("../fuzz/corpus/token_request/phc-sha256");
        assert!(verify("secret", seed.trim()));
        assert!(!verify("secreT", seed.trim()));
    }

    #[test]
    fn only_generated_values_look_generated() {
        assert!(!looks_generated(""));
        assert!(!looks_generated("password"));
        assert!(!looks_generated(&"a".repeat(42)));
        assert!(!looks_generated(&"a".repeat(44)));
        // 43 characters, one outside base64url.
        assert!(!looks_generated(&format!("{}+", "A".repeat(42))));
        assert!(looks_generated(&"A".repeat(43)));
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
