//! Which watchers a key concerns: watch spans, and a group of watchers
//! indexed by span.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A watcher, node-wide: a sequential id the hub assigns.
pub(crate) type Key = u64;

/// Hashes [`Key`]s: a multiply-xorshift, much cheaper than SipHash on the
/// publish path. Safe because keys are the hub's own sequential ids, never
/// chosen by a client (client-chosen bytes, such as watched keys, keep the
/// standard hasher).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type KeyHash = BuildHasherDefault<KeyHasher>;
/// A map keyed by watcher.
pub(crate) type KeyMap<V> = HashMap<Key, V, KeyHash>;
/// A set of watchers.
pub(crate) type KeySet = HashSet<Key, KeyHash>;

/// The keys a watcher covers, decided once from etcd's (key, range_end).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Span {
    /// `range_end` empty: just this key.
    Key(Vec<u8>),
    /// `range_end` = `"\0"`: every key at or after this one.
    From(Vec<u8>),
    /// `[key, range_end)`, with `key < range_end`.
    Between(Vec<u8>, Vec<u8>),
}

impl Span {
    /// Reads a create request's (key, range_end) as etcd does: an empty key
    /// means `"\0"`, the smallest key. None when the range is empty
    /// (`range_end <= key`), which etcd refuses.
    pub(crate) fn new(key: &[u8], range_end: &[u8]) -> Option<Span> {
        let key = if key.is_empty() {
            vec![0]
        } else {
            key.to_vec()
        };
        match range_end {
            [] => Some(Span::Key(key)),
            [0] => Some(Span::From(key)),
            end if key.as_slice() < end => Some(Span::Between(key, end.to_vec())),
            _ => None,
        }
    }

    /// Whether `key` is in the span.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self {
            Span::Key(k) => k.as_slice() == key,
            Span::From(k) => k.as_slice() <= key,
            Span::Between(k, end) => k.as_slice() <= key && key < end.as_slice(),
        }
    }
}

/// A set of watchers, found by key: single keys by hash, ranges by span.
/// Watchers of one span share an entry, so many watchers of the same
/// prefix (the usual controller pattern) cost one comparison per event.
#[derive(Debug, Default)]
pub(crate) struct Group {
    keys: HashMap<Vec<u8>, KeySet>,
    ranges: HashMap<Span, KeySet>,
}

impl Group {
    pub(crate) fn insert(&mut self, span: &Span, w: Key) {
        match span {
            Span::Key(k) => self.keys.entry(k.clone()).or_default().insert(w),
            _ => self.ranges.entry(span.clone()).or_default().insert(w),
        };
    }

    pub(crate) fn remove(&mut self, span: &Span, w: Key) {
        let (set, gone) = match span {
            Span::Key(k) => match self.keys.get_mut(k) {
                Some(set) => (set.remove(&w), set.is_empty()),
                None => return,
            },
            _ => match self.ranges.get_mut(span) {
                Some(set) => (set.remove(&w), set.is_empty()),
                None => return,
            },
        };
        if set && gone {
            match span {
                Span::Key(k) => self.keys.remove(k),
                _ => self.ranges.remove(span),
            };
        }
    }

    /// Calls `f` for each watcher whose span contains `key`.
    pub(crate) fn for_each_match(&self, key: &[u8], mut f: impl FnMut(Key)) {
        if let Some(set) = self.keys.get(key) {
            set.iter().copied().for_each(&mut f);
        }
        for (span, set) in &self.ranges {
            if span.contains(key) {
                set.iter().copied().for_each(&mut f);
            }
        }
    }

    /// Whether any watcher's span contains `key`.
    pub(crate) fn any_match(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key) || self.ranges.keys().any(|s| s.contains(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_etcd_conventions() {
        let table: [(&[u8], &[u8], Option<Span>); 6] = [
            (b"a", b"", Some(Span::Key(b"a".to_vec()))),
            (b"", b"", Some(Span::Key(vec![0]))),
            (b"a", b"\0", Some(Span::From(b"a".to_vec()))),
            (
                b"a",
                b"c",
                Some(Span::Between(b"a".to_vec(), b"c".to_vec())),
            ),
            (b"c", b"a", None),
            (b"a", b"a", None),
        ];
        for (key, end, want) in table {
            assert_eq!(Span::new(key, end), want, "{key:?} {end:?}");
        }
        let between = Span::new(b"a", b"c").unwrap();
        assert!(between.contains(b"a") && between.contains(b"bz"));
        assert!(!between.contains(b"c") && !between.contains(b""));
        let from = Span::new(b"", b"\0").unwrap();
        assert!(from.contains(b"\0") && from.contains(b"zzz"));
    }

    #[test]
    fn group_finds_watchers_by_key_and_range() {
        let mut g = Group::default();
        let key = Span::new(b"a", b"").unwrap();
        let prefix = Span::new(b"a", b"b").unwrap();
        g.insert(&key, 1);
        g.insert(&prefix, 2);
        g.insert(&prefix, 3);
        let matches = |g: &Group, k: &[u8]| {
            let mut v = Vec::new();
            g.for_each_match(k, |w| v.push(w));
            v.sort();
            v
        };
        assert_eq!(matches(&g, b"a"), [1, 2, 3]);
        assert_eq!(matches(&g, b"ab"), [2, 3]);
        assert_eq!(matches(&g, b"b"), Vec::<Key>::new());
        g.remove(&prefix, 2);
        g.remove(&key, 1);
        assert_eq!(matches(&g, b"a"), [3]);
        assert!(g.any_match(b"a") && !g.any_match(b"b"));
        g.remove(&prefix, 3);
        assert!(g.keys.is_empty() && g.ranges.is_empty());
    }
}
