//! Conditions as the Kubernetes API conventions and kstatus read them: `Ready`, plus
//! `Reconciling` while work is under way and `Stalled` when only a change of spec (or of
//! the world) can help. Transition times only move when a status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// The verdict of one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is as the spec asks.
    Ready {
        reason: &'static str,
        message: String,
    },
    /// Work is under way or waits for something that will come by itself.
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// Cannot proceed until the spec or the world changes.
    Stalled {
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Outcome::Ready {
            reason,
            message: message.into(),
        }
    }
    pub fn progressing(reason: &'static str, message: impl Into<String>) -> Self {
        Outcome::Progressing {
            reason,
            message: message.into(),
        }
    }
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Outcome::Stalled {
            reason,
            message: message.into(),
        }
    }
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Ready { reason, .. }
            | Outcome::Progressing { reason, .. }
            | Outcome::Stalled { reason, .. } => reason,
        }
    }
    /// The same outcome with `note` added to its message.
    pub fn noted(self, note: &str) -> Self {
        match self {
            Outcome::Ready { reason, message } => Outcome::Ready {
                reason,
                message: message + note,
            },
            Outcome::Progressing { reason, message } => Outcome::Progressing {
                reason,
                message: message + note,
            },
            Outcome::Stalled { reason, message } => Outcome::Stalled {
                reason,
                message: message + note,
            },
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Ready { message, .. }
            | Outcome::Progressing { message, .. }
            | Outcome::Stalled { message, .. } => message,
        }
    }
    pub fn is_ready(&self) -> bool {
        matches!(self, Outcome::Ready { .. })
    }
    pub fn is_stalled(&self) -> bool {
        matches!(self, Outcome::Stalled { .. })
    }
}

/// The conditions for `outcome`, keeping each transition time from `old` when that
/// condition's status did not change.
pub fn conditions(old: &[Condition], outcome: &Outcome, generation: Option<i64>) -> Vec<Condition> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let make = |type_: &str, status: bool, reason: &str, message: &str| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time,
        }
    };
    let mut out = vec![make(
        READY,
        outcome.is_ready(),
        outcome.reason(),
        outcome.message(),
    )];
    match outcome {
        Outcome::Ready { .. } => {}
        Outcome::Progressing { reason, message } => {
            out.push(make(RECONCILING, true, reason, message))
        }
        Outcome::Stalled { reason, message } => out.push(make(STALLED, true, reason, message)),
    }
    out
}

/// Whether condition `type_` is True in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether two condition lists say the same, transition times aside (a message a cache
/// forgot, [`forget_messages`], is compared by its digest).
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let matches = |x: &Condition, y: &Condition| {
        x.type_ == y.type_
            && x.status == y.status
            && x.reason == y.reason
            && x.observed_generation == y.observed_generation
            && same_message(&x.message, &y.message)
    };
    a.len() == b.len()
        && a.iter().all(|x| b.iter().any(|y| matches(x, y)))
        && b.iter().all(|y| a.iter().any(|x| matches(x, y)))
}

/// What a forgotten message begins with: a control character no message Tenantry writes
/// holds.
const FORGOTTEN: char = '\u{1}';

/// The digest a cache keeps of a condition's message, under a key drawn at start (as
/// `slim`'s leaves: nobody outside the process can make two messages collide).
fn message_digest(message: &str) -> String {
    use std::hash::BuildHasher;
    static KEY: std::sync::LazyLock<std::hash::RandomState> =
        std::sync::LazyLock::new(std::hash::RandomState::new);
    format!("{FORGOTTEN}{:016x}", KEY.hash_one(message))
}

/// Replaces each condition's message by its digest (17 bytes): a cached condition's
/// message is only ever compared with the one a reconcile builds ([`same_conditions`]),
/// and a sentence per cached object is, at 85,000 custom resources, megabytes.
pub fn forget_messages(conditions: &mut [Condition]) {
    for c in conditions {
        if !c.message.is_empty() && !c.message.starts_with(FORGOTTEN) {
            c.message = message_digest(&c.message);
        }
    }
}

/// Whether two messages are the same, either of them perhaps forgotten.
fn same_message(a: &str, b: &str) -> bool {
    match (a.starts_with(FORGOTTEN), b.starts_with(FORGOTTEN)) {
        (true, false) => !b.is_empty() && a == message_digest(b),
        (false, true) => !a.is_empty() && b == message_digest(a),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_message_still_compares() {
        let ready = conditions(
            &[],
            &Outcome::ready("Provisioned", "namespace ws-a ready"),
            Some(3),
        );
        let mut cached = ready.clone();
        forget_messages(&mut cached);
        assert!(cached[0].message.len() < ready[0].message.len());
        assert!(same_conditions(&cached, &ready));
        assert!(same_conditions(&ready, &cached));
        let other = conditions(
            &[],
            &Outcome::ready("Provisioned", "namespace ws-b ready"),
            Some(3),
        );
        assert!(!same_conditions(&cached, &other));
        // Forgetting twice keeps the first digest; an empty message stays empty.
        let again = cached.clone();
        forget_messages(&mut cached);
        assert_eq!(cached, again);
        let mut empty = conditions(&[], &Outcome::ready("Provisioned", ""), Some(3));
        forget_messages(&mut empty);
        assert!(empty[0].message.is_empty());
        assert!(!same_conditions(&empty, &cached));
        // Different lists: a condition more, a reason changed.
        let progressing = conditions(
            &[],
            &Outcome::progressing("Creating", "namespace ws-a ready"),
            Some(3),
        );
        assert!(!same_conditions(&cached, &progressing));
    }

    #[test]
    fn ready_has_only_ready() {
        let c = conditions(&[], &Outcome::ready("Provisioned", "ok"), Some(3));
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(c[0].observed_generation, Some(3));
    }

    #[test]
    fn stalled_and_reconciling_are_abnormal_true() {
        let s = conditions(&[], &Outcome::stalled("NamespaceConflict", "x"), Some(1));
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].status.as_str(),
                s[1].type_.as_str(),
                s[1].status.as_str()
            ),
            ("False", "Stalled", "True")
        );
        let p = conditions(&[], &Outcome::progressing("Progressing", "y"), Some(1));
        assert_eq!(
            (p[1].type_.as_str(), p[1].status.as_str()),
            ("Reconciling", "True")
        );
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let first = conditions(&[], &Outcome::ready("A", "a"), Some(1));
        let mut old = first.clone();
        old[0].last_transition_time = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let again = conditions(&old, &Outcome::ready("B", "b"), Some(2));
        assert_eq!(again[0].last_transition_time, old[0].last_transition_time);
        let flipped = conditions(&old, &Outcome::progressing("C", "c"), Some(2));
        assert_ne!(flipped[0].last_transition_time, old[0].last_transition_time);
        assert!(same_conditions(
            &first,
            &conditions(&first, &Outcome::ready("A", "a"), Some(1))
        ));
    }
}
