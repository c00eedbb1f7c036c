//! The queue of a reconciler's triggers, in front of kube's.
//!
//! kube's controller takes every trigger into its scheduler as soon as it comes, whether
//! or not a reconcile is free to take it: during a large apply, or after a restart when
//! the initial lists trigger every object at once, nearly every object of a kind waited
//! there, and the scheduler's hash maps and delay queue keep the capacity of the largest
//! backlog they ever held (measured with `make profile-heap`: about 210 bytes per
//! Membership, 1.4 KiB per Organization, held for as long as the process lives).
//!
//! A [`Gate`] holds that backlog instead, as one deduplicated queue given back when it
//! empties, and lets through to kube at most `limit` objects not yet reconciled
//! ([`Gate::done`] when a reconcile of one ends). A trigger of an object already let
//! through goes on at once: kube's scheduler merges it with the waiting one (its
//! debounce), as it did before. Nothing is dropped: each object triggered is reconciled
//! once at least after its last trigger.
//!
//! What waits in the gate is one string per object (`namespace/name`), shared by the
//! queue and its index: about 90 bytes an object, where a kube `ObjectRef` queued and its
//! key indexed took about 300. The objects a reconciler starts with (every object of its
//! kind, [`super::feed::controller`]) wait as the cache's own objects, 8 bytes each, and
//! are taken one by one as room frees: at a restart at 25x the three queues had held
//! 85,000 references at once.
//!
//! The wake-ups a reconcile asks for (`retry` while progressing, a status held back by
//! the pacer) wait in the gate too ([`Gate::after`]), not as kube's delayed entries: one
//! per object, the soonest kept, dropped when the object is let through earlier (as
//! kube's scheduler merged them); once due, a wake-up is a trigger like any other.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use futures::stream::{BoxStream, SelectAll, Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;

/// The key of an object: `namespace/name`, or `name` (cluster-scoped). Neither a
/// namespace nor a name holds a `/`, so the key says which the object is.
type Key = Arc<str>;

fn key_of(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn key<K: Resource<DynamicType = ()>>(r: &ObjectRef<K>) -> String {
    key_of(r.namespace.as_deref(), &r.name)
}

/// The reference `k` is the key of.
fn reference<K: Resource<DynamicType = ()>>(k: &str) -> ObjectRef<K> {
    match k.split_once('/') {
        Some((ns, name)) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(k),
    }
}

/// The objects let through and not reconciled yet, shared by the gate's stream and the
/// reconciler that reports each reconcile's end.
#[derive(Default)]
struct Through {
    keys: HashSet<Key>,
    /// Wake-ups asked for, soonest first, and each object's.
    timers: BTreeSet<(Instant, Key)>,
    due: HashMap<Key, Instant>,
    /// The gate's stream, waiting for room, a wake-up or a trigger.
    waker: Option<Waker>,
}

impl Through {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Lets `k` through: in kube's scheduler until its reconcile ends, its wake-up dropped.
    fn admit(&mut self, k: Key) {
        self.cancel(&k);
        self.keys.insert(k);
    }

    /// Drops the wake-up of `k`: it is let through now.
    fn cancel(&mut self, k: &str) {
        if let Some((k, at)) = self.due.remove_entry(k) {
            self.timers.remove(&(at, k));
            if self.due.is_empty() {
                self.due.shrink_to(0);
            }
        }
    }

    /// The first wake-up due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Key> {
        let first = self.timers.first()?;
        if first.0 > now {
            return None;
        }
        let (_, k) = self.timers.pop_first()?;
        self.due.remove(&k);
        if self.due.is_empty() {
            self.due.shrink_to(0);
        }
        Some(k)
    }
}

/// One reconciler's gate (see the module): [`Gate::gated`] makes its one stream.
#[derive(Default)]
pub struct Gate {
    through: Arc<Mutex<Through>>,
}

impl Clone for Gate {
    fn clone(&self) -> Self {
        Self {
            through: self.through.clone(),
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Through> {
        self.through.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reconcile of the object `name` in `namespace` ended (or it was gone when its
    /// turn came): room for another.
    pub fn done(&self, namespace: Option<&str>, name: &str) {
        let mut through = self.lock();
        if through.keys.remove(key_of(namespace, name).as_str()) {
            if through.keys.is_empty() {
                through.keys.shrink_to(0);
            }
            through.wake();
        }
    }

    /// Triggers the object `name` in `namespace` again `after` from now (sooner if it
    /// asked for sooner already, or is triggered meanwhile).
    pub fn after(&self, namespace: Option<&str>, name: &str, after: Duration) {
        // Beyond what an Instant holds: the resync walk comes by long before.
        let Some(at) = Instant::now().checked_add(after) else {
            return;
        };
        let k: Key = key_of(namespace, name).into();
        let mut through = self.lock();
        match through.due.get(&k) {
            Some(&sooner) if sooner <= at => return,
            Some(&later) => {
                through.timers.remove(&(later, k.clone()));
            }
            None => {}
        }
        through.due.insert(k.clone(), at);
        through.timers.insert((at, k));
        through.wake();
    }
}

impl Gate {
    /// The gate's stream over `triggers` (all of a reconciler's) and `seed` (objects to
    /// reconcile once, taken only when nothing else waits), for kube's controller
    /// (`reconcile_on`): at most `limit` objects let through and not reconciled yet.
    pub fn gated<K>(
        &self,
        triggers: Vec<BoxStream<'static, ObjectRef<K>>>,
        seed: Vec<Arc<K>>,
        limit: usize,
    ) -> Gated<K>
    where
        K: Resource<DynamicType = ()> + 'static,
    {
        Gated {
            triggers: futures::stream::select_all(triggers),
            seed: seed.into_iter(),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            ended: false,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            limit: limit.max(1),
            gate: self.clone(),
        }
    }
}

/// The stream of a [`gate`].
pub struct Gated<K: Resource<DynamicType = ()> + 'static> {
    triggers: SelectAll<BoxStream<'static, ObjectRef<K>>>,
    /// Objects to reconcile once, not yet taken.
    seed: std::vec::IntoIter<Arc<K>>,
    /// Until the soonest wake-up (`armed`).
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    ended: bool,
    /// Triggered, waiting for room, in the order they came (`queued`: the same keys).
    queue: VecDeque<Key>,
    queued: HashSet<Key>,
    limit: usize,
    gate: Gate,
}

impl<K: Resource<DynamicType = ()> + 'static> Gated<K> {
    /// Takes a trigger: on at once if its object is through already (or there is room),
    /// else queued once.
    fn take(&mut self, r: ObjectRef<K>, through: &mut Through) -> Option<ObjectRef<K>> {
        let k = key(&r);
        if through.keys.contains(k.as_str()) {
            through.cancel(&k);
            return Some(r);
        }
        if self.queued.contains(k.as_str()) {
            return None;
        }
        let k: Key = k.into();
        if self.queue.is_empty() && through.keys.len() < self.limit {
            through.admit(k);
            return Some(r);
        }
        self.queued.insert(k.clone());
        self.queue.push_back(k);
        None
    }

    /// The next object of the seed that is not through already, while nothing is queued
    /// and there is room.
    fn next_seeded(&mut self, through: &mut Through) -> Option<ObjectRef<K>> {
        while self.queue.is_empty() && through.keys.len() < self.limit {
            let o = self.seed.next()?;
            let Some(name) = o.meta().name.as_deref() else {
                continue;
            };
            let k = key_of(o.meta().namespace.as_deref(), name);
            if through.keys.contains(k.as_str()) {
                // Let through already: its reconcile is yet to come.
                continue;
            }
            let r = reference(&k);
            through.admit(k.into());
            return Some(r);
        }
        None
    }

    /// The next queued object, if there is room for it.
    fn next_queued(&mut self, through: &mut Through) -> Option<ObjectRef<K>> {
        if through.keys.len() >= self.limit {
            return None;
        }
        let k = self.queue.pop_front()?;
        self.queued.remove(&k);
        let r = reference(&k);
        through.admit(k);
        if self.queue.is_empty() {
            // Given back once the backlog is gone.
            self.queue.shrink_to(0);
            self.queued.shrink_to(0);
        }
        Some(r)
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Stream for Gated<K> {
    type Item = ObjectRef<K>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let shared = this.gate.through.clone();
        let mut through = shared.lock().unwrap_or_else(|e| e.into_inner());
        // Room first for what waited longest.
        if let Some(r) = this.next_queued(&mut through) {
            return Poll::Ready(Some(r));
        }
        // Wake-ups due are triggers.
        let now = Instant::now();
        while let Some(k) = through.pop_due(now) {
            if let Some(r) = this.take(reference(&k), &mut through) {
                return Poll::Ready(Some(r));
            }
        }
        while !this.ended {
            match this.triggers.poll_next_unpin(cx) {
                Poll::Ready(Some(r)) => {
                    if let Some(r) = this.take(r, &mut through) {
                        return Poll::Ready(Some(r));
                    }
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => break,
            }
        }
        // The seed last: what changed goes first.
        if let Some(r) = this.next_seeded(&mut through) {
            return Poll::Ready(Some(r));
        }
        if this.ended
            && this.queue.is_empty()
            && through.timers.is_empty()
            && this.seed.as_slice().is_empty()
        {
            return Poll::Ready(None);
        }
        // Until the soonest wake-up; `done` (room) and `after` (a sooner one) wake it too.
        if let Some(&(at, _)) = through.timers.first() {
            if this.armed != Some(at) {
                this.sleep.as_mut().reset(at);
                this.armed = Some(at);
            }
            if this.sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        through.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Workspace;

    fn r(name: &str) -> ObjectRef<Workspace> {
        ObjectRef::new(name).within("org-a")
    }

    fn names(v: &[ObjectRef<Workspace>]) -> Vec<&str> {
        v.iter().map(|r| r.name.as_str()).collect()
    }

    /// Whether the gated stream has ended.
    fn ended(g: &mut Gated<Workspace>) -> bool {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        matches!(Pin::new(g).poll_next(&mut cx), Poll::Ready(None))
    }

    /// Everything the gated stream yields now, without waiting.
    fn ready(g: &mut Gated<Workspace>) -> Vec<ObjectRef<Workspace>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(r)) = Pin::new(&mut *g).poll_next(&mut cx) {
            out.push(r);
        }
        out
    }

    #[tokio::test]
    async fn at_most_the_limit_waits_in_kube_and_the_rest_in_order() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let gate = Gate::default();
        let mut g = gate.gated(vec![rx.boxed()], Vec::new(), 2);
        for n in ["a", "b", "c", "d", "c", "a"] {
            tx.unbounded_send(r(n)).unwrap();
        }
        // a, b let through; c, d queued once; a again goes on (kube merges it).
        assert_eq!(names(&ready(&mut g)), ["a", "b", "a"]);
        assert_eq!(g.queue.len(), 2);
        gate.done(Some("org-a"), "b");
        assert_eq!(names(&ready(&mut g)), ["c"]);
        // A reconcile's end for an object not through (a requeue of kube's) changes nothing.
        gate.done(Some("org-a"), "zz");
        assert!(ready(&mut g).is_empty());
        gate.done(Some("org-a"), "a");
        gate.done(Some("org-a"), "c");
        assert_eq!(names(&ready(&mut g)), ["d"]);
        assert_eq!(g.queue.capacity(), 0, "given back once empty");
        // Once the triggers end and nothing waits, the stream ends.
        drop(tx);
        assert!(ended(&mut g));
    }

    #[tokio::test]
    async fn the_seed_is_taken_when_nothing_else_waits_and_there_is_room() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let gate = Gate::default();
        let seed = ["s1", "c", "s2", "s3"]
            .map(|n| {
                let mut w = Workspace::new(n, Default::default());
                w.metadata.namespace = Some("org-a".into());
                Arc::new(w)
            })
            .to_vec();
        let mut g = gate.gated(vec![rx.boxed()], seed, 2);
        // A change first, then the seed up to the limit.
        tx.unbounded_send(r("c")).unwrap();
        let first = ready(&mut g);
        assert_eq!(names(&first), ["c", "s1"]);
        assert_eq!(first[1], r("s1"), "by namespace and name");
        assert!(first[1].extra.resource_version.is_none() && first[1].extra.uid.is_none());
        // Room: c, through already, is skipped; s2 comes.
        gate.done(Some("org-a"), "s1");
        assert_eq!(names(&ready(&mut g)), ["s2"]);
        // A change waiting goes before the rest of the seed.
        tx.unbounded_send(r("d")).unwrap();
        assert!(ready(&mut g).is_empty());
        gate.done(Some("org-a"), "s2");
        assert_eq!(names(&ready(&mut g)), ["d"]);
        gate.done(Some("org-a"), "c");
        assert_eq!(names(&ready(&mut g)), ["s3"]);
        // The seed taken and the triggers ended: the stream ends once nothing waits.
        drop(tx);
        assert!(ended(&mut g));
        assert_eq!(g.seed.len(), 0);
    }

    #[tokio::test]
    async fn a_reconcile_that_ends_wakes_the_waiting_stream() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let gate = Gate::default();
        let mut g = gate.gated(vec![rx.boxed()], Vec::new(), 1);
        tx.unbounded_send(r("a")).unwrap();
        tx.unbounded_send(r("b")).unwrap();
        assert_eq!(names(&ready(&mut g)), ["a"]);
        assert!(gate.lock().waker.is_some(), "waits for room");
        gate.done(Some("org-a"), "a");
        assert!(gate.lock().waker.is_none(), "woken");
        assert_eq!(names(&ready(&mut g)), ["b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_is_a_trigger_once_due_and_gone_once_triggered_sooner() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let gate = Gate::default();
        let mut g = gate.gated(vec![rx.boxed()], Vec::new(), 4);
        gate.after(Some("org-a"), "x", Duration::from_secs(10));
        gate.after(Some("org-a"), "x", Duration::from_secs(30));
        gate.after(Some("org-a"), "y", Duration::from_secs(20));
        assert!(ready(&mut g).is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(names(&ready(&mut g)), ["x"], "the sooner wake-up of x");
        // y triggered before its wake-up: through now, its wake-up dropped.
        tx.unbounded_send(r("y")).unwrap();
        assert_eq!(names(&ready(&mut g)), ["y"]);
        {
            let through = gate.lock();
            assert!(through.timers.is_empty());
            assert_eq!(through.due.capacity(), 0, "given back");
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(ready(&mut g).is_empty());
    }
}
