//! When to write a status and when to look again: paced status writes of details, and
//! the growing retry of objects that wait.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The longest wait before an object that is progressing is looked at again.
const MAX_PROGRESSING_RETRY: Duration = Duration::from_secs(300);

/// When to look again at an object that is progressing: `retry` at first, then half as
/// long as it has been progressing (from its `Reconciling` condition), at most five
/// minutes. What it waits for (a workspace, its organization, a namespace going away) is
/// watched and brings it back at once; the requeue is only a safety net. A fixed retry
/// made that net the controller's main cost at scale: at 25x, Memberships waited up to 40
/// minutes for their workspaces and were looked at every 10 s, 78 reconciles each.
pub fn progressing_retry(old: &[Condition], retry: Duration) -> Duration {
    let since = old
        .iter()
        .find(|c| c.type_ == crate::status::RECONCILING && c.status == "True")
        .map(|c| {
            let now = k8s_openapi::jiff::Timestamp::now();
            // From API data (a condition's time): saturating, never negative.
            let secs = now
                .as_second()
                .saturating_sub(c.last_transition_time.0.as_second());
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        })
        .unwrap_or_default();
    since
        .checked_div(2)
        .unwrap_or_default()
        .clamp(retry, MAX_PROGRESSING_RETRY.max(retry))
}

/// Paces status writes that change only details.
///
/// A tenancy applied at once changes the details of many statuses many times while it
/// converges: each workspace that becomes ready is one more entry in the status of every
/// Owner and Admin Membership, one more member in a workspace's status, one more count in
/// the organization's. At the 1x benchmark size that was 10,174 status writes for 3,400
/// objects (3.4 per Membership), the most expensive requests the API server served. A
/// change of the `Ready` condition (its status or reason), of the set of conditions, or of
/// `observedGeneration` is written at once: that is what kubectl wait, kstatus, Argo CD and
/// Flux read. A change of details only is written at most once per interval per object;
/// the reconcile that held it back comes again when the interval is over, and writes the
/// status as it is then (level-based: nothing is queued but the next look).
///
/// The interval grows while an object's details keep changing: a details write that comes
/// less than two intervals after the object's previous write doubles the next interval,
/// up to [`MAX_INTERVAL_FACTOR`] times the base; a write after a quieter spell starts again
/// from the base. An organization whose members and workspaces arrive for minutes (a
/// tenancy applied at 5x the benchmark size) wrote its counts every 5 s, 7.8 writes each;
/// a change after a quiet spell is still written at once.
pub struct StatusPacer {
    interval: Duration,
    last: std::sync::Mutex<(HashMap<String, Paced>, usize)>,
}

/// The most an object's details interval grows to, in base intervals.
pub const MAX_INTERVAL_FACTOR: u32 = 8;

/// An object's last status write and its current details interval.
#[derive(Clone, Copy)]
struct Paced {
    at: std::time::Instant,
    interval: Duration,
}

impl StatusPacer {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Default::default(),
        }
    }

    /// `None`: write now (and it is recorded as written); `Some(wait)`: not before `wait`.
    pub fn admit(&self, key: &str, significant: bool) -> Option<Duration> {
        self.admit_at(key, significant, std::time::Instant::now())
    }

    fn admit_at(&self, key: &str, significant: bool, now: std::time::Instant) -> Option<Duration> {
        let mut guard = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (last, pruned_at) = &mut *guard;
        let previous = last.get(key).copied();
        let interval = match previous {
            None => self.interval,
            Some(p) => {
                let since = now.saturating_duration_since(p.at);
                if !significant && since < p.interval {
                    return Some(p.interval.saturating_sub(since));
                }
                if significant {
                    p.interval
                } else if since < p.interval.saturating_mul(2) {
                    // Still changing: the next details wait longer.
                    p.interval
                        .saturating_mul(2)
                        .min(self.interval.saturating_mul(MAX_INTERVAL_FACTOR))
                } else {
                    self.interval
                }
            }
        };
        last.insert(key.to_string(), Paced { at: now, interval });
        // Forget writes older than twice the longest interval once the map has doubled
        // since the last time: it holds only objects written recently, not every object
        // ever written.
        if last.len() > pruned_at.saturating_mul(2).saturating_add(1024) {
            let keep = self.interval.saturating_mul(2 * MAX_INTERVAL_FACTOR);
            last.retain(|_, p| now.saturating_duration_since(p.at) < keep);
            *pruned_at = last.len();
        }
        None
    }
}

/// Whether a status change is one to write at once (see [`StatusPacer`]): `Ready`'s status
/// or reason, the set of conditions, or the observed generation changed.
pub fn significant_change(old: &[Condition], new: &[Condition]) -> bool {
    let key = |cs: &[Condition]| {
        let mut k: Vec<(String, String, String, Option<i64>)> = cs
            .iter()
            .map(|c| {
                let reason = if c.type_ == crate::status::READY {
                    c.reason.clone()
                } else {
                    String::new()
                };
                (
                    c.type_.clone(),
                    c.status.clone(),
                    reason,
                    c.observed_generation,
                )
            })
            .collect();
        k.sort();
        k
    };
    key(old) != key(new)
}

#[cfg(test)]
mod tests {
    #[test]
    fn progressing_objects_are_looked_at_less_often_the_longer_they_wait() {
        use crate::status::{Outcome, conditions};
        use std::time::Duration;
        let retry = Duration::from_secs(10);
        let progressing_since = |secs: i64| {
            let mut c = conditions(&[], &Outcome::progressing("WorkspacePending", "a"), Some(1));
            for c in &mut c {
                c.last_transition_time.0 = k8s_openapi::jiff::Timestamp::now()
                    - k8s_openapi::jiff::SignedDuration::from_secs(secs);
            }
            c
        };
        assert_eq!(super::progressing_retry(&[], retry), retry, "first look");
        assert_eq!(
            super::progressing_retry(&progressing_since(4), retry),
            retry
        );
        let after_a_minute = super::progressing_retry(&progressing_since(60), retry);
        assert!(
            (29..=31).contains(&after_a_minute.as_secs()),
            "{after_a_minute:?}"
        );
        assert_eq!(
            super::progressing_retry(&progressing_since(3600), retry),
            Duration::from_secs(300),
            "at most five minutes"
        );
        let ready = conditions(&[], &Outcome::ready("Granted", "x"), Some(1));
        assert_eq!(
            super::progressing_retry(&ready, retry),
            retry,
            "was Ready until now"
        );
    }

    #[test]
    fn details_wait_for_the_interval_and_ready_changes_do_not() {
        use std::time::Duration;
        let pacer = super::StatusPacer::new(Duration::from_secs(60));
        assert_eq!(pacer.admit("a", false), None, "a first write is never held");
        let wait = pacer
            .admit("a", false)
            .expect("details again at once are held");
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        assert_eq!(
            pacer.admit("a", true),
            None,
            "a Ready change is written at once"
        );
        assert!(pacer.admit("a", false).is_some());
        assert_eq!(
            pacer.admit("b", false),
            None,
            "objects are paced one by one"
        );
        let off = super::StatusPacer::new(Duration::ZERO);
        assert_eq!(off.admit("a", false), None);
        assert_eq!(
            off.admit("a", false),
            None,
            "an interval of 0 holds nothing"
        );
    }

    #[test]
    fn the_interval_grows_while_details_keep_changing_and_starts_again_after_quiet() {
        use std::time::{Duration, Instant};
        let s = Duration::from_secs;
        let pacer = super::StatusPacer::new(s(5));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + s(secs);
        assert_eq!(pacer.admit_at("o", true, at(0)), None, "Ready");
        assert_eq!(pacer.admit_at("o", false, at(1)), Some(s(4)));
        assert_eq!(pacer.admit_at("o", false, at(5)), None, "after 5 s");
        assert_eq!(
            pacer.admit_at("o", false, at(6)),
            Some(s(9)),
            "still changing: 10 s"
        );
        assert_eq!(pacer.admit_at("o", false, at(15)), None);
        assert_eq!(pacer.admit_at("o", false, at(16)), Some(s(19)), "20 s");
        assert_eq!(pacer.admit_at("o", false, at(35)), None);
        assert_eq!(pacer.admit_at("o", false, at(75)), None);
        assert_eq!(
            pacer.admit_at("o", false, at(76)),
            Some(s(39)),
            "at most 8 intervals (40 s)"
        );
        assert_eq!(pacer.admit_at("o", true, at(77)), None, "Ready at once");
        assert_eq!(
            pacer.admit_at("o", false, at(78)),
            Some(s(39)),
            "a Ready write keeps the interval"
        );
        assert_eq!(
            pacer.admit_at("o", false, at(300)),
            None,
            "after a quiet spell"
        );
        assert_eq!(
            pacer.admit_at("o", false, at(301)),
            Some(s(4)),
            "from the base again"
        );
    }

    #[test]
    fn only_ready_reason_conditions_and_generation_are_significant() {
        use crate::status::{Outcome, conditions};
        let progressing = conditions(
            &[],
            &Outcome::progressing("WorkspacePending", "a, b"),
            Some(1),
        );
        let fewer = conditions(
            &progressing,
            &Outcome::progressing("WorkspacePending", "b"),
            Some(1),
        );
        let ready = conditions(
            &fewer,
            &Outcome::ready("Granted", "in 2 workspaces"),
            Some(1),
        );
        let more = conditions(
            &ready,
            &Outcome::ready("Granted", "in 3 workspaces"),
            Some(1),
        );
        let next = conditions(
            &more,
            &Outcome::ready("Granted", "in 3 workspaces"),
            Some(2),
        );
        let stalled = conditions(&more, &Outcome::stalled("MemberLimitReached", "x"), Some(1));
        assert!(
            !super::significant_change(&progressing, &fewer),
            "a message"
        );
        assert!(!super::significant_change(&ready, &more), "a message");
        assert!(super::significant_change(&fewer, &ready), "Ready");
        assert!(
            super::significant_change(&more, &next),
            "observedGeneration"
        );
        assert!(
            super::significant_change(&more, &stalled),
            "reason and conditions"
        );
        assert!(
            super::significant_change(&[], &progressing),
            "the first status"
        );
    }
}
