//! Events: what a person should see or act on, decided by a pure rule and published off
//! the reconcile path (a reconcile never waits on an Event's write).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
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
    let was_stalled = status::is_true(old, status::STALLED);
    let tell = match outcome {
        Outcome::Stalled { .. } => true,
        Outcome::Progressing { reason, .. } => !matches!(
            *reason,
            reason::PROGRESSING | reason::WORKSPACE_PENDING | reason::BINDING
        ),
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
        let task = tokio::spawn(async move {
            while let Some((event, reference)) = rx.recv().await {
                crate::metrics::write("create", "Event");
                let object = event_object(&event, &reference, &reporter, Timestamp::now());
                let ns = object.metadata.namespace.as_deref().unwrap_or("default");
                let api = Api::<K8sEvent>::namespaced(client.clone(), ns);
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => {}
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

/// The longest name of an Event: a name of the API (253 characters).
const MAX_NAME: usize = 253;

/// The Event object for `event` about `reference` at `now`. Named `<object>.<time in
/// hex>`, as kube's recorder names it, but with the object's name shortened (with a hash,
/// so that it stays unique) to keep the whole within [`MAX_NAME`]: kube's recorder gave an
/// object whose name has the maximum length an Event name the API server refused, so
/// such objects had no Events. Events are rare (problems, waits on a person, recoveries),
/// so each is written once, without series.
fn event_object(
    event: &Event,
    reference: &ObjectReference,
    reporter: &Reporter,
    now: Timestamp,
) -> K8sEvent {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let object = reference.name.as_deref().unwrap_or(&reporter.controller);
    let name = format!(
        "{}{suffix}",
        crate::names::shorten(object, MAX_NAME.saturating_sub(suffix.len()))
    );
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(
                reference
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string()),
            ),
            ..Default::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_name_fits_whatever_the_object_name() {
        let reporter = Reporter {
            controller: "tenantry".into(),
            instance: None,
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "R".into(),
            note: None,
            action: "Reconcile".into(),
            secondary: None,
        };
        let now = Timestamp::now();
        let named = |name: &str| ObjectReference {
            name: Some(name.to_string()),
            namespace: Some("org-a".into()),
            ..Default::default()
        };
        let short = event_object(&event, &named("bob"), &reporter, now);
        let short_name = short.metadata.name.unwrap();
        assert!(short_name.starts_with("bob."), "{short_name}");
        for len in [200, 240, 253] {
            let long = "m".repeat(len);
            let e = event_object(&event, &named(&long), &reporter, now);
            let name = e.metadata.name.unwrap();
            assert!(name.len() <= MAX_NAME, "{len}: {}", name.len());
            // A DNS-1123 subdomain, as the API server checks it (no length per part).
            let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            assert!(
                name.split('.').all(|p| {
                    p.starts_with(alnum)
                        && p.ends_with(alnum)
                        && p.chars().all(|c| alnum(c) || c == '-')
                }),
                "{name}"
            );
            assert_eq!(e.regarding.unwrap().name.as_deref(), Some(long.as_str()));
        }
        // Two objects whose names differ only past the cut get different Events.
        let (a, b) = ("x".repeat(252) + "a", "x".repeat(252) + "b");
        assert_ne!(
            event_object(&event, &named(&a), &reporter, now)
                .metadata
                .name,
            event_object(&event, &named(&b), &reporter, now)
                .metadata
                .name
        );
        let cluster = ObjectReference {
            name: Some("acme".into()),
            ..Default::default()
        };
        let e = event_object(&event, &cluster, &reporter, now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }

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
