//! Watches of the built-in child kinds in protobuf, the API server's own wire format.
//!
//! Measured (docs/benchmarks.md): a restart's time is the API server writing every cached
//! object once, and writing a RoleBinding as JSON costs it about twice what writing it as
//! protobuf does (Go's `encoding/json` walks each object by reflection, then compacts
//! what `json.Marshaler`s return). kube-rs speaks JSON only (kube-rs/kube#725), so the
//! built-in kinds Tenantry caches most of (RoleBindings, Namespaces, quotas, limit ranges,
//! network policies, cluster roles and their bindings) are watched here: the same
//! streaming list kube's watcher makes (`sendInitialEvents`, then a watch resumed from the
//! last resourceVersion, a new list after `410 Gone`), asked for in protobuf, each object
//! decoded with `k8s-pb`'s messages and turned into its `k8s-openapi` type
//! ([`kinds`]), so that everything after the watch (projections, feeds) is the same for
//! both wire formats. Custom resources have no protobuf form; they stay on kube's watcher.
//!
//! The stream: frames of a 4-byte big-endian length, each a `WatchEvent` message whose
//! object is the `k8s\0`-prefixed `runtime.Unknown` envelope of the object's message.

mod kinds;

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt, stream::BoxStream};
use http_body_util::BodyExt;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pbmeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use kube::api::WatchParams;
use kube::core::{Request, Status};
use kube::runtime::watcher::{Error, Event};
use kube::{Client, Resource, ResourceExt};
use prost::Message;

/// A built-in kind whose watch Tenantry reads in protobuf.
pub trait Proto: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// Its protobuf message.
    type Message: Message + Default;
    /// The `k8s-openapi` object of a message, as the same object read as JSON would be:
    /// an empty string, list or map (which protobuf cannot tell from an absent one, and
    /// the API server leaves out of its JSON) is absent.
    fn from_message(m: Self::Message) -> Self;
}

/// The prefix of every protobuf-encoded object (before its `runtime.Unknown`).
const MAGIC: &[u8] = b"k8s\0";

/// The media type asked for; the API server answers watches with `;stream=watch`.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// No frame is larger: the API server refuses objects over 1.5 MiB (etcd's limit); this
/// only stops a corrupt length from allocating.
const MAX_FRAME: usize = 64 << 20;

/// With no event (not even a bookmark, sent about once a minute) for this long, the
/// connection is taken as dead and the watch starts again from its resourceVersion.
const IDLE: Duration = Duration::from_secs(330);

/// The annotation of the bookmark that ends a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The watch of every `K` matching `labels`, as kube's `watcher` with streaming lists
/// gives it: `Init`, an `InitApply` per object, `InitDone`, then `Apply` and `Delete`;
/// after an error (yielded, so that the caller's backoff waits) it carries on from where
/// it was, or lists again after `410 Gone`.
pub fn watcher<K: Proto>(
    client: Client,
    labels: Option<String>,
) -> impl Stream<Item = Result<Event<K>, Error>> + Send {
    futures::stream::unfold(
        (client, labels, State::Empty),
        |(client, labels, state)| async move {
            let mut state = state;
            loop {
                let (event, next) = step::<K>(&client, labels.as_deref(), state).await;
                state = next;
                if let Some(event) = event {
                    return Some((event, (client, labels, state)));
                }
            }
        },
    )
}

enum State {
    /// Nothing listed yet, or a list to make again.
    Empty,
    /// Receiving a streaming list's initial events.
    Initial(Frames),
    /// Listed; the watch to start again from this resourceVersion.
    Resume(String),
    /// Watching, at this resourceVersion.
    Watching(String, Frames),
}

/// One step of the watch: at most one event, and the state after it.
async fn step<K: Proto>(
    client: &Client,
    labels: Option<&str>,
    state: State,
) -> (Option<Result<Event<K>, Error>>, State) {
    match state {
        State::Empty => match open::<K>(client, labels, None).await {
            Ok(frames) => (Some(Ok(Event::Init)), State::Initial(frames)),
            Err(e) => (Some(Err(Error::WatchStartFailed(e))), State::Empty),
        },
        State::Resume(rv) => match open::<K>(client, labels, Some(&rv)).await {
            Ok(frames) => (None, State::Watching(rv, frames)),
            Err(e) => {
                let next = if gone(&e) {
                    State::Empty
                } else {
                    State::Resume(rv)
                };
                (Some(Err(Error::WatchStartFailed(e))), next)
            }
        },
        State::Initial(mut frames) => match frames.next::<K>().await {
            Some(Ok(Decoded::Object(kind, o))) => match kind {
                Kind::Added | Kind::Modified => {
                    (Some(Ok(Event::InitApply(o))), State::Initial(frames))
                }
                // Not sent during the initial events; nothing to do with one.
                Kind::Deleted => (None, State::Initial(frames)),
                Kind::Bookmark => {
                    let end = o.annotations().contains_key(INITIAL_EVENTS_END);
                    match o.resource_version().filter(|rv| !rv.is_empty()) {
                        Some(rv) if end => (Some(Ok(Event::InitDone)), State::Watching(rv, frames)),
                        _ => (None, State::Initial(frames)),
                    }
                }
            },
            Some(Ok(Decoded::Error(status))) => watch_error(status, State::Initial(frames)),
            // A broken stream lists again: the initial events were not all there.
            Some(Err(e)) => (Some(Err(Error::WatchFailed(e))), State::Empty),
            None => (None, State::Empty),
        },
        State::Watching(rv, mut frames) => match frames.next::<K>().await {
            Some(Ok(Decoded::Object(kind, o))) => {
                let Some(at) = o.resource_version().filter(|rv| !rv.is_empty()) else {
                    return (Some(Err(Error::NoResourceVersion)), State::Empty);
                };
                let event = match kind {
                    Kind::Added | Kind::Modified => Some(Ok(Event::Apply(o))),
                    Kind::Deleted => Some(Ok(Event::Delete(o))),
                    Kind::Bookmark => None,
                };
                (event, State::Watching(at, frames))
            }
            // The API server ends a watch after its error: start it again.
            Some(Ok(Decoded::Error(status))) => watch_error(status, State::Resume(rv)),
            Some(Err(e)) => (Some(Err(Error::WatchFailed(e))), State::Resume(rv)),
            None => (None, State::Resume(rv)),
        },
    }
}

/// An error event of the API server's: a new list after `410 Gone` (the resourceVersion
/// is too old), else `otherwise`.
fn watch_error<K>(
    status: Box<Status>,
    otherwise: State,
) -> (Option<Result<Event<K>, Error>>, State) {
    let next = if status.code == 410 {
        State::Empty
    } else {
        otherwise
    };
    (Some(Err(Error::WatchError(status))), next)
}

/// Whether an error is the API server's `410 Gone` (the resourceVersion is too old).
fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// One object of `K`, read in protobuf as the watches read it (for tests and tools).
pub async fn get<K: Proto>(
    client: &Client,
    namespace: Option<&str>,
    name: &str,
) -> kube::Result<K> {
    let request = Request::new(K::url_path(&(), namespace))
        .get(name, &kube::api::GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    let bytes = send(client, request)
        .await?
        .collect()
        .await
        .map_err(|e| invalid(format!("reading a {}: {e}", K::kind(&()))))?
        .to_bytes();
    object::<K>(&envelope(&bytes)?)
}

/// Sends `request` asking for protobuf; the response's body, or the API server's error.
async fn send(
    client: &Client,
    mut request: http::Request<Vec<u8>>,
) -> kube::Result<kube::client::Body> {
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(PROTOBUF),
    );
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let body = response.into_body();
    if status.is_success() {
        return Ok(body);
    }
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(kube::Error::Api(Box::new(error_status(
        status.as_u16(),
        &bytes,
    ))))
}

/// The object's message in `raw`: the `k8s\0` prefix, then a `runtime.Unknown` holding it.
fn envelope(raw: &[u8]) -> kube::Result<Vec<u8>> {
    let unknown = raw
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid("an object that is not protobuf".into()))
        .and_then(|b| {
            Unknown::decode(b).map_err(|e| invalid(format!("an object's envelope: {e}")))
        })?;
    Ok(unknown.raw.unwrap_or_default())
}

/// A `K` from its message's bytes.
fn object<K: Proto>(message: &[u8]) -> kube::Result<K> {
    K::Message::decode(message)
        .map(K::from_message)
        .map_err(|e| invalid(format!("a {}: {e}", K::kind(&()))))
}

/// Starts a watch of `K`: a streaming list when `rv` is none, else a watch from `rv`.
async fn open<K: Proto>(
    client: &Client,
    labels: Option<&str>,
    rv: Option<&str>,
) -> kube::Result<Frames> {
    let params = WatchParams {
        label_selector: labels.map(str::to_string),
        send_initial_events: rv.is_none(),
        ..WatchParams::default()
    };
    // "0": any resourceVersion, served from the API server's watch cache (kube's watcher
    // with `any_semantic`, as the other caches' watches are).
    let request = Request::new(K::url_path(&(), None))
        .watch(&params, rv.unwrap_or("0"))
        .map_err(kube::Error::BuildRequest)?;
    Ok(Frames {
        body: send(client, request)
            .await?
            .into_data_stream()
            .map(|chunk| chunk.map_err(|e| invalid(format!("reading the watch: {e}"))))
            .boxed(),
        buf: BytesMut::new(),
    })
}

/// The `Status` of a failed request: the API server's own (protobuf, as asked, or JSON),
/// else one made of the HTTP code.
fn error_status(code: u16, body: &[u8]) -> Status {
    if let Ok(s) = serde_json::from_slice::<Status>(body) {
        return s;
    }
    if let Some(s) = envelope(body)
        .ok()
        .and_then(|m| pbmeta::Status::decode(m.as_slice()).ok())
    {
        return status_of(s, code);
    }
    Status::failure(&String::from_utf8_lossy(body), "").with_code(code)
}

fn status_of(s: pbmeta::Status, fallback: u16) -> Status {
    let code = s
        .code
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(fallback);
    Status::failure(
        &s.message.unwrap_or_default(),
        &s.reason.unwrap_or_default(),
    )
    .with_code(code)
}

fn invalid(why: String) -> kube::Error {
    kube::Error::ReadEvents(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
}

/// The frames of a watch's response body.
struct Frames {
    body: BoxStream<'static, kube::Result<Bytes>>,
    buf: BytesMut,
}

/// What a watch event says.
enum Kind {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

enum Decoded<K> {
    Object(Kind, K),
    Error(Box<Status>),
}

impl Frames {
    /// The next event (`None`: the stream ended, or nothing came for [`IDLE`]).
    async fn next<K: Proto>(&mut self) -> Option<kube::Result<Decoded<K>>> {
        let frame = loop {
            match frame(&mut self.buf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match tokio::time::timeout(IDLE, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => return Some(Err(e)),
                // A partial frame at the end is a connection cut mid-event: the watch
                // goes on from its last resourceVersion, as after any end.
                Ok(None) | Err(_) => return None,
            }
        };
        Some(decode(&frame))
    }
}

/// Takes one whole frame off the front of `buf`, if it holds one.
fn frame(buf: &mut BytesMut) -> kube::Result<Option<Bytes>> {
    let Some(head) = buf.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(head)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(invalid(format!("a watch frame of {len} bytes")));
    }
    if buf.len() < len.saturating_add(4) {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// A watch event's type and object.
fn decode<K: Proto>(frame: &[u8]) -> kube::Result<Decoded<K>> {
    let event =
        pbmeta::WatchEvent::decode(frame).map_err(|e| invalid(format!("a watch event: {e}")))?;
    let message = envelope(&event.object.and_then(|o| o.raw).unwrap_or_default())?;
    let kind = match event.r#type.as_deref() {
        Some("ADDED") => Kind::Added,
        Some("MODIFIED") => Kind::Modified,
        Some("DELETED") => Kind::Deleted,
        Some("BOOKMARK") => Kind::Bookmark,
        Some("ERROR") => {
            let status = pbmeta::Status::decode(message.as_slice())
                .map_err(|e| invalid(format!("a watch error: {e}")))?;
            return Ok(Decoded::Error(Box::new(status_of(status, 500))));
        }
        other => return Err(invalid(format!("a watch event of type {other:?}"))),
    };
    Ok(Decoded::Object(kind, object::<K>(&message)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use k8s_pb::api::rbac::v1 as pbrbac;
    use k8s_pb::apimachinery::pkg::runtime::RawExtension;

    /// `object` as the API server frames it in a watch: its message in an `Unknown`
    /// after the magic prefix, in a `WatchEvent`, after the frame's length.
    fn framed(kind: &str, object: Vec<u8>) -> Vec<u8> {
        let mut raw = MAGIC.to_vec();
        Unknown {
            raw: Some(object),
            ..Default::default()
        }
        .encode(&mut raw)
        .unwrap();
        let event = pbmeta::WatchEvent {
            r#type: Some(kind.into()),
            object: Some(RawExtension { raw: Some(raw) }),
        }
        .encode_to_vec();
        let mut out = u32::try_from(event.len()).unwrap().to_be_bytes().to_vec();
        out.extend(event);
        out
    }

    fn binding(rv: &str, annotations: &[(&str, &str)]) -> Vec<u8> {
        pbrbac::RoleBinding {
            metadata: Some(pbmeta::ObjectMeta {
                name: Some("tenantry-workspace-viewer".into()),
                namespace: Some("acme--dev".into()),
                resource_version: Some(rv.into()),
                // Go writes every non-pointer field, empty or not.
                generate_name: Some(String::new()),
                generation: Some(0),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                labels: [("app.kubernetes.io/managed-by".into(), "tenantry".into())].into(),
                creation_timestamp: Some(pbmeta::Time {
                    seconds: Some(1_764_950_400),
                    nanos: Some(0),
                }),
                ..Default::default()
            }),
            subjects: vec![pbrbac::Subject {
                kind: Some("User".into()),
                api_group: Some("rbac.authorization.k8s.io".into()),
                name: Some("ann@acme.example".into()),
                namespace: Some(String::new()),
            }],
            role_ref: Some(pbrbac::RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("ClusterRole".into()),
                name: Some("tenantry-workspace-viewer".into()),
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn frames_are_taken_whole_however_the_bytes_arrive() {
        let mut stream = framed("ADDED", binding("7", &[]));
        stream.extend(framed(
            "BOOKMARK",
            binding("9", &[(INITIAL_EVENTS_END, "true")]),
        ));
        // Byte by byte: a frame comes out only once all of it is there.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in &stream {
            buf.extend_from_slice(&[*b]);
            if let Some(f) = frame(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert!(buf.is_empty());
        let Decoded::Object(Kind::Added, rb) = decode::<RoleBinding>(&frames[0]).unwrap() else {
            panic!("an ADDED RoleBinding")
        };
        let Decoded::Object(Kind::Bookmark, bm) = decode::<RoleBinding>(&frames[1]).unwrap() else {
            panic!("a BOOKMARK")
        };
        assert_eq!(bm.resource_version().as_deref(), Some("9"));
        assert!(bm.annotations().contains_key(INITIAL_EVENTS_END));
        // As the JSON of the same object reads: what is empty is absent.
        let json: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "tenantry-workspace-viewer",
                "namespace": "acme--dev",
                "resourceVersion": "7",
                "creationTimestamp": "2025-12-05T16:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "tenantry"}
            },
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ann@acme.example"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tenantry-workspace-viewer"}
        }))
        .unwrap();
        assert_eq!(rb, json);
    }

    #[test]
    fn a_watch_error_is_its_status_and_garbage_is_an_error_not_a_panic() {
        let status = pbmeta::Status {
            code: Some(410),
            reason: Some("Expired".into()),
            message: Some("too old resource version".into()),
            ..Default::default()
        }
        .encode_to_vec();
        let mut buf = BytesMut::from(framed("ERROR", status).as_slice());
        let f = frame(&mut buf).unwrap().unwrap();
        let Decoded::Error(s) = decode::<RoleBinding>(&f).unwrap() else {
            panic!("an ERROR")
        };
        assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));

        // A length no frame has, a frame that is not a WatchEvent, an object without the
        // prefix, an event of no known type: errors, each.
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        assert!(frame(&mut huge).is_err());
        assert!(decode::<RoleBinding>(&[0xff, 0x01, 0x02]).is_err());
        let event = pbmeta::WatchEvent {
            r#type: Some("ADDED".into()),
            object: Some(RawExtension {
                raw: Some(b"{\"kind\":\"RoleBinding\"}".to_vec()),
            }),
        }
        .encode_to_vec();
        assert!(decode::<RoleBinding>(&event).is_err());
        let mut buf = BytesMut::from(framed("SURPRISE", binding("1", &[])).as_slice());
        let f = frame(&mut buf).unwrap().unwrap();
        assert!(decode::<RoleBinding>(&f).is_err());
        // Fuzz-ish: no slice of a real stream panics.
        let stream = framed("ADDED", binding("7", &[]));
        for end in 0..stream.len() {
            let _ = decode::<RoleBinding>(stream.get(4..end).unwrap_or_default());
        }
    }

    #[test]
    fn an_integer_or_a_string_port_reads_as_json_has_it() {
        use k8s_pb::apimachinery::pkg::util::intstr::IntOrString as Pb;
        assert_eq!(
            kinds::int_or_string(Pb {
                r#type: Some(0),
                int_val: Some(443),
                str_val: Some(String::new()),
            }),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(443)
        );
        assert_eq!(
            kinds::int_or_string(Pb {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some("https".into()),
            }),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into())
        );
    }
}
