//! Events: what a person should see or act on, decided by a pure rule and published off
//! the reconcile path (a reconcile never waits on an Event's write).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tracing::warn;

use crate::api::reason;
use crate::status::{self, Outcome};

/// Events waiting to be written; beyond this, new ones are dropped (and counted): the
/// conditions on the objects say the same, and a burst must not grow memory.
const QUEUE: usize = 1024;

/// The Event for an outcome, given the conditions the object had: a problem (Stalled, a
/// Warning) when its reason is new; a wait on a person (an invitation, verification, a
/// namespace terminating) when new; Ready only when it ends a problem (was Stalled).
/// Plain progress and a first Ready are in the conditions only: at scale, an Event per
/// object turning Ready was a fifth of all the API requests Tenantry made.
pub fn event_for(old: &[Condition], outcome: &Outcome) -> Option<Event> {
    let condition = |t: &str| old.iter().find(|c| c.type_ == t);
    let previous = condition(status::READY).map(|c| c.reason.as_str());
    if previous == Some(outcome.reason()) {
        return None;
    }
    let was_stalled = condition(status::STALLED).is_some_and(|c| c.status == "True");
    let tell = match outcome {
        Outcome::Stalled { .. } => true,
        Outcome::Progressing { reason, .. } => {
            !matches!(*reason, reason::PROGRESSING | reason::WORKSPACE_PENDING)
        }
        Outcome::Ready { .. } => was_stalled,
    };
    tell.then(|| Event {
        type_: if outcome.is_stalled() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: outcome.reason().to_string(),
        note: Some(note(outcome.message())),
        action: "Reconcile".into(),
        secondary: None,
    })
}

/// The Event API refuses a note over 1024 bytes (not characters): a message quoting a
/// long unicode name is cut at a character boundary within that.
fn note(message: &str) -> String {
    const MAX: usize = 1024;
    let mut end = message.len().min(MAX);
    while !message.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    message.get(..end).unwrap_or_default().to_string()
}

/// Where reconcilers hand their Events; one task writes them.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl Events {
    /// The sink, and the task that writes what it receives (until every sink is dropped).
    pub fn start(client: Client, reporter: Reporter) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let recorder = Recorder::new(client, reporter);
        let task = tokio::spawn(async move {
            while let Some((event, reference)) = rx.recv().await {
                crate::metrics::write("create", "Event");
                match recorder.publish(&event, &reference).await {
                    Ok(()) => {}
                    // The object's namespace is going away with it.
                    Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {
                        tracing::debug!(error = %s, "publishing an event failed")
                    }
                    Err(e) => warn!(error = %e, "publishing an event failed"),
                }
            }
        });
        (Self { tx }, task)
    }

    /// Queues `event` about `reference`; never waits.
    pub fn publish(&self, event: Event, reference: ObjectReference) {
        if self.tx.try_send((event, reference)).is_err() {
            tracing::debug!("event queue full: an Event was dropped (the conditions say the same)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(outcome: &Outcome) -> Vec<Condition> {
        status::conditions(&[], outcome, Some(1))
    }

    #[test]
    fn event_notes_fit_the_event_api_in_bytes() {
        assert_eq!(note("short"), "short");
        let long = "😀".repeat(300); // 1200 bytes
        let n = note(&long);
        assert!(n.len() <= 1024 && n.len() > 1020, "{}", n.len());
        assert!(long.starts_with(&n));
    }

    #[test]
    fn events_are_for_problems_waits_and_recoveries() {
        let ready = Outcome::ready(reason::PROVISIONED, "ok");
        let stalled = Outcome::stalled(reason::NAMESPACE_CONFLICT, "taken");
        let creating = Outcome::progressing(reason::PROGRESSING, "creating");
        let invited = Outcome::progressing(reason::INVITATION_PENDING, "waiting for bob");
        // A first Ready: conditions only.
        assert!(event_for(&[], &ready).is_none());
        assert!(event_for(&conditions(&creating), &ready).is_none());
        // Plain progress: conditions only.
        assert!(event_for(&[], &creating).is_none());
        // A wait on a person, and a problem: told once.
        assert_eq!(event_for(&[], &invited).unwrap().type_, EventType::Normal);
        assert!(event_for(&conditions(&invited), &invited).is_none());
        let warning = event_for(&conditions(&ready), &stalled).unwrap();
        assert_eq!(warning.type_, EventType::Warning);
        assert_eq!(warning.reason, reason::NAMESPACE_CONFLICT);
        assert!(event_for(&conditions(&stalled), &stalled).is_none());
        // The end of a problem is told.
        assert_eq!(
            event_for(&conditions(&stalled), &ready).unwrap().reason,
            reason::PROVISIONED
        );
        // Notes fit the Event API, cut at a character boundary.
        let long = Outcome::stalled(reason::NAMESPACE_CONFLICT, "é".repeat(1000));
        let n = event_for(&[], &long).unwrap().note.unwrap();
        assert!(n.len() <= 1024 && n.chars().all(|c| c == 'é'));
    }
}
