//! What the validator checks, taken from what the wire carried: etcd's
//! watch messages turned into the validator's plain types, field for field.

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use cairn_proto::mvccpb::{self, event::EventType};

use super::{Event, EventKind, Kv, Response, WatchSpec};

/// The watch a create request asked for.
pub fn spec(c: &WatchCreateRequest) -> WatchSpec {
    WatchSpec {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        start_revision: c.start_revision,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: c.prev_kv,
    }
}

/// One response as received. An event without a kv is recorded with an
/// empty one, which the validator reports as not in the history.
pub fn response(r: &WatchResponse) -> Response {
    Response {
        watch_id: r.watch_id,
        header_revision: r.header.as_ref().map_or(0, |h| h.revision),
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        fragment: r.fragment,
        events: r
            .events
            .iter()
            .map(|e| Event {
                kind: if e.r#type == EventType::Delete as i32 {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                kv: e.kv.as_ref().map(kv).unwrap_or_default(),
                prev_kv: e.prev_kv.as_ref().map(kv),
            })
            .collect(),
    }
}

/// A key-value as received.
pub fn kv(kv: &mvccpb::KeyValue) -> Kv {
    Kv {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}
