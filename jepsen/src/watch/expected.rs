//! The events one watcher must receive, walked in order with a cursor.

use super::history::Record;
use super::range::KeyRange;
use super::{EventKind, History, WatchSpec};

/// Up to this many keys in its range, a watcher merges the per-key lists of
/// its keys; above it, it scans the whole log. A merge step costs one
/// comparison a key, a scan step one record of any key, so a merge wins for
/// narrow ranges over a long history and a scan for wide ones.
const MERGE_LIMIT: usize = 32;

/// A cursor over the history's changes that one watcher must see: those of
/// its keys, of the types it does not filter, from its start revision on,
/// in (revision, sub-index) order. Items are positions in
/// [`History::log`], which is that order.
pub(crate) struct Expected<'h> {
    log: &'h [Record],
    range: KeyRange,
    filter: Filter,
    source: Source<'h>,
    /// The next expected change, kept so that a peek costs nothing.
    next: Option<usize>,
}

/// The event types a watch drops.
#[derive(Clone, Copy)]
struct Filter {
    no_put: bool,
    no_delete: bool,
}

impl Filter {
    fn wants(self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// Where the cursor finds the next expected change.
enum Source<'h> {
    /// Per-key lists of log positions, each non-empty and starting at a
    /// wanted record.
    Merge(Vec<&'h [usize]>),
    /// The next log position to look at; always at a wanted record or the
    /// end of the log.
    Scan(usize),
}

impl<'h> Expected<'h> {
    /// The cursor for a watch of `spec` starting at revision `start`.
    pub(crate) fn new(history: &'h History, spec: &WatchSpec, start: i64) -> Self {
        let log = history.log();
        let range = KeyRange::of(spec);
        let keys = range.entries(history.keys());
        let source = if keys.clone().nth(MERGE_LIMIT).is_none() {
            Source::Merge(
                keys.map(|(_, positions)| {
                    let from = positions.partition_point(|&i| log[i].revision < start);
                    &positions[from..]
                })
                .collect(),
            )
        } else {
            Source::Scan(log.partition_point(|r| r.revision < start))
        };
        let mut expected = Expected {
            log,
            range,
            filter: Filter {
                no_put: spec.no_put,
                no_delete: spec.no_delete,
            },
            source,
            next: None,
        };
        if let Source::Merge(lists) = &mut expected.source {
            let filter = expected.filter;
            lists.retain_mut(|list| skip_filtered(log, filter, list));
        }
        expected.settle();
        expected
    }

    /// Whether the watch covers `key`.
    pub(crate) fn covers(&self, key: &[u8]) -> bool {
        self.range.contains(key)
    }

    /// Whether the watch delivers events of type `kind`.
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.filter.wants(kind)
    }

    /// The next expected change, as a log position.
    pub(crate) fn peek(&self) -> Option<usize> {
        self.next
    }

    /// Moves past the change [`Expected::peek`] returns.
    pub(crate) fn advance(&mut self) {
        let Some(next) = self.next else {
            return;
        };
        match &mut self.source {
            Source::Merge(lists) => {
                if let Some(at) = lists.iter().position(|l| l.first() == Some(&next)) {
                    let list = &mut lists[at];
                    *list = &list[1..];
                    if !skip_filtered(self.log, self.filter, list) {
                        lists.swap_remove(at);
                    }
                }
            }
            Source::Scan(at) => *at += 1,
        }
        self.settle();
    }

    /// Restores the invariant of [`Source::Scan`] after a move, and finds
    /// the next expected change. The lists of [`Source::Merge`] hold keys
    /// of the range only, and each is settled as it moves.
    fn settle(&mut self) {
        self.next = match &mut self.source {
            Source::Merge(lists) => lists.iter().filter_map(|l| l.first().copied()).min(),
            Source::Scan(at) => {
                let log = self.log;
                while *at < log.len()
                    && !(self.filter.wants(log[*at].kind) && self.range.contains(&log[*at].kv.key))
                {
                    *at += 1;
                }
                (*at < log.len()).then_some(*at)
            }
        };
    }
}

/// Drops the changes at the head of one key's `list` that the filter drops;
/// returns whether any are left.
fn skip_filtered(log: &[Record], filter: Filter, list: &mut &[usize]) -> bool {
    let unwanted = list
        .iter()
        .take_while(|&&i| !filter.wants(log[i].kind))
        .count();
    *list = &list[unwanted..];
    !list.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Change;

    /// Keys k00..k39, each put at its own revision, then each deleted; then
    /// k05 and k35 put again together.
    fn history() -> History {
        let mut h = History::new();
        let mut revision = 1;
        for op in 0..2 {
            for k in 0..40 {
                revision += 1;
                let key = format!("k{k:02}");
                let change = if op == 0 {
                    Change::put(key, "v")
                } else {
                    Change::delete(key)
                };
                h.commit(revision, [change]).unwrap();
            }
        }
        h.commit(
            revision + 1,
            [Change::put("k35", "w"), Change::put("k05", "w")],
        )
        .unwrap();
        h
    }

    fn walk(h: &History, spec: &WatchSpec, start: i64) -> Vec<(i64, String)> {
        let mut e = Expected::new(h, spec, start);
        let mut out = Vec::new();
        while let Some(i) = e.peek() {
            let r = &h.log()[i];
            out.push((r.revision, String::from_utf8_lossy(&r.kv.key).into_owned()));
            e.advance();
        }
        out
    }

    /// The same walk by brute force over the log.
    fn brute(h: &History, spec: &WatchSpec, start: i64) -> Vec<(i64, String)> {
        let range = KeyRange::of(spec);
        h.log()
            .iter()
            .filter(|r| r.revision >= start && range.contains(&r.kv.key))
            .filter(|r| match r.kind {
                EventKind::Put => !spec.no_put,
                EventKind::Delete => !spec.no_delete,
            })
            .map(|r| (r.revision, String::from_utf8_lossy(&r.kv.key).into_owned()))
            .collect()
    }

    #[test]
    fn merge_and_scan_walk_the_same_events() {
        let h = history();
        // (spec, start, merges?, events expected)
        for (spec, start, merges, count) in [
            (WatchSpec::key("k05"), 0, true, 3),
            (WatchSpec::key("k05"), 43, true, 2),
            (WatchSpec::key("zz"), 0, true, 0),
            (WatchSpec::range("k00", "k10"), 0, true, 21),
            (
                WatchSpec::range("k00", "k10").without_deletes(),
                0,
                true,
                11,
            ),
            (WatchSpec::range("k00", "k10").without_puts(), 30, true, 10),
            (WatchSpec::range("k30", "k10"), 0, true, 0),
            (WatchSpec::from_key("k00"), 0, false, 82),
            (WatchSpec::from_key("k00"), 82, false, 2),
            (WatchSpec::from_key("k00").without_puts(), 0, false, 40),
            (WatchSpec::range("", "\0").without_deletes(), 50, false, 2),
            (WatchSpec::prefix("k"), 0, false, 82),
        ] {
            let e = Expected::new(&h, &spec, start);
            assert_eq!(matches!(e.source, Source::Merge(_)), merges, "{spec:?}");
            let got = walk(&h, &spec, start);
            assert_eq!(got, brute(&h, &spec, start), "{spec:?} from {start}");
            assert_eq!(got.len(), count, "{spec:?} from {start}");
        }
    }

    #[test]
    fn txn_order_is_sub_order_not_key_order() {
        let h = history();
        let got = walk(&h, &WatchSpec::from_key("k00"), 82);
        assert_eq!(got, vec![(82, "k35".to_string()), (82, "k05".to_string())]);
        let merged = WatchSpec::range("k05", "k36");
        assert!(matches!(
            Expected::new(&h, &merged, 82).source,
            Source::Merge(_)
        ));
        let got = walk(&h, &merged, 82);
        assert_eq!(got, vec![(82, "k35".to_string()), (82, "k05".to_string())]);
    }
}
