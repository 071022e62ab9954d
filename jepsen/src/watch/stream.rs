//! What a client recorded on one watch stream: the creates it sent and the
//! responses it received, in etcd's wire encoding.
//!
//! The fields keep etcd's sentinels (watch_id -1, start_revision 0,
//! compact_revision 0, lease 0) on purpose: they are what the server sent,
//! and part of what is checked.

use super::{EventKind, Kv};

/// One event of a watch response, etcd's `mvccpb.Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PUT or DELETE.
    pub kind: EventKind,
    /// The key's kv after the change; for a DELETE only `key` and
    /// `mod_revision` are set.
    pub kv: Kv,
    /// The key's kv before the change, if the watch asked for it and the key
    /// existed.
    pub prev_kv: Option<Kv>,
}

/// A watch create request, etcd's `WatchCreateRequest`, as far as it
/// decides what the watcher must receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    /// The key, or the start of the range; empty means `"\0"`.
    pub key: Vec<u8>,
    /// Empty for the one key `key`, `"\0"` for every key from `key` on, else
    /// the exclusive end of the range.
    pub range_end: Vec<u8>,
    /// The first revision to deliver; 0 for the revision after the Created
    /// response's header revision.
    pub start_revision: i64,
    /// Drop PUT events.
    pub no_put: bool,
    /// Drop DELETE events.
    pub no_delete: bool,
    /// Deliver each event with the key's kv before the change.
    pub prev_kv: bool,
}

impl WatchSpec {
    /// A watch of the one key `key`, from now on.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        WatchSpec {
            key: key.into(),
            ..WatchSpec::default()
        }
    }

    /// A watch of the keys in `[key, range_end)`, from now on; `range_end`
    /// `"\0"` means every key from `key` on.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        WatchSpec {
            key: key.into(),
            range_end: range_end.into(),
            ..WatchSpec::default()
        }
    }

    /// A watch of every key `>= key`, from now on.
    pub fn from_key(key: impl Into<Vec<u8>>) -> Self {
        WatchSpec::range(key, [0])
    }

    /// A watch of every key starting with `prefix`, from now on; the range
    /// end is computed as etcd's clients do (`clientv3.GetPrefixRangeEnd`).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let mut end = key.clone();
        // Drop trailing 0xff bytes, then increment the last byte; a prefix of
        // only 0xff bytes (or the empty prefix) has no end: every key from it.
        while end.last() == Some(&0xff) {
            end.pop();
        }
        match end.last_mut() {
            Some(last) => *last += 1,
            None => end = vec![0],
        }
        WatchSpec::range(key, end)
    }

    /// The same watch, delivering events from `revision` on.
    pub fn starting_at(self, revision: i64) -> Self {
        WatchSpec {
            start_revision: revision,
            ..self
        }
    }

    /// The same watch, with `prev_kv` on each event.
    pub fn with_prev_kv(self) -> Self {
        WatchSpec {
            prev_kv: true,
            ..self
        }
    }

    /// The same watch, without PUT events.
    pub fn without_puts(self) -> Self {
        WatchSpec {
            no_put: true,
            ..self
        }
    }

    /// The same watch, without DELETE events.
    pub fn without_deletes(self) -> Self {
        WatchSpec {
            no_delete: true,
            ..self
        }
    }
}

/// One watch response, etcd's `WatchResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The watcher it concerns; -1 in a progress notification for every
    /// watcher on the stream and in a failed create.
    pub watch_id: i64,
    /// The header's revision.
    pub header_revision: i64,
    /// The answer to a create request.
    pub created: bool,
    /// The watcher ended; nothing more comes for it.
    pub canceled: bool,
    /// Non-zero: the watcher was canceled because the revision it needed is
    /// compacted; this is the compact revision.
    pub compact_revision: i64,
    /// More events of this same logical response follow in the next
    /// response(s) for `watch_id`.
    pub fragment: bool,
    /// The events, in order.
    pub events: Vec<Event>,
}

/// One recorded watch stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// The create requests, in the order they were sent. etcd answers
    /// creates in order, so the n-th Created response answers the n-th
    /// create and names its watch id.
    pub creates: Vec<WatchSpec>,
    /// Every response received, in order.
    pub responses: Vec<Response>,
}

#[cfg(test)]
mod tests {
    use super::WatchSpec;

    #[test]
    fn prefix_range_end() {
        for (prefix, end) in [
            (&b"a"[..], &b"b"[..]),
            (b"a/", b"a0"),
            (b"a\xff", b"b"),
            (b"a\xfe\xff\xff", b"a\xff"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ] {
            let spec = WatchSpec::prefix(prefix);
            assert_eq!(spec.key, prefix, "{prefix:?}");
            assert_eq!(spec.range_end, end, "{prefix:?}");
        }
    }
}
