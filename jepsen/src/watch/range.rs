//! Which keys a watch covers, with etcd's encoding of ranges decoded once.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::WatchSpec;

/// The keys a watch covers.
///
/// etcd encodes them in `key` and `range_end`: an empty `range_end` means the
/// one key, `range_end == "\0"` means every key from `key` on, and an empty
/// `key` means `"\0"`, the smallest key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// Exactly this key.
    One(Vec<u8>),
    /// `[start, end)`, with `start < end`.
    Range(Vec<u8>, Vec<u8>),
    /// Every key `>= start`.
    From(Vec<u8>),
    /// No key: a `range_end` at or below `key`.
    Empty,
}

impl KeyRange {
    /// Decodes a watch's `key` and `range_end`.
    pub(crate) fn of(spec: &WatchSpec) -> Self {
        let key = if spec.key.is_empty() {
            vec![0]
        } else {
            spec.key.clone()
        };
        match spec.range_end.as_slice() {
            [] => KeyRange::One(key),
            [0] => KeyRange::From(key),
            end if end > key.as_slice() => KeyRange::Range(key, end.to_vec()),
            _ => KeyRange::Empty,
        }
    }

    /// Whether the watch covers `key`.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::One(k) => key == k.as_slice(),
            KeyRange::Range(start, end) => start.as_slice() <= key && key < end.as_slice(),
            KeyRange::From(start) => start.as_slice() <= key,
            KeyRange::Empty => false,
        }
    }

    /// The entries of `map` whose keys the watch covers, in key order.
    pub(crate) fn entries<'m, V>(
        &self,
        map: &'m BTreeMap<Vec<u8>, V>,
    ) -> impl Iterator<Item = (&'m Vec<u8>, &'m V)> + Clone + 'm {
        // `BTreeMap::range` panics on an inverted range or on two equal
        // excluded bounds; `Range` holds start < end, and `Empty` uses the
        // empty but legal `[x, x)`.
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match self {
            KeyRange::One(k) => (Bound::Included(k), Bound::Included(k)),
            KeyRange::Range(start, end) => (Bound::Included(start), Bound::Excluded(end)),
            KeyRange::From(start) => (Bound::Included(start), Bound::Unbounded),
            KeyRange::Empty => (Bound::Included(&[]), Bound::Excluded(&[])),
        };
        map.range::<[u8], _>(bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, range_end: &str) -> WatchSpec {
        WatchSpec::range(key, range_end)
    }

    #[test]
    fn decodes_and_matches() {
        // (key, range_end, decoded, keys covered out of ["\0", "a", "ab", "b", "c"])
        let keys: [&[u8]; 5] = [b"\0", b"a", b"ab", b"b", b"c"];
        for (key, end, decoded, covered) in [
            ("a", "", KeyRange::One(b"a".to_vec()), vec![1]),
            ("", "", KeyRange::One(vec![0]), vec![0]),
            (
                "a",
                "b",
                KeyRange::Range(b"a".to_vec(), b"b".to_vec()),
                vec![1, 2],
            ),
            ("a", "\0", KeyRange::From(b"a".to_vec()), vec![1, 2, 3, 4]),
            ("", "\0", KeyRange::From(vec![0]), vec![0, 1, 2, 3, 4]),
            ("b", "a", KeyRange::Empty, vec![]),
            ("b", "b", KeyRange::Empty, vec![]),
        ] {
            let range = KeyRange::of(&spec(key, end));
            assert_eq!(range, decoded, "{key:?}..{end:?}");
            let got: Vec<usize> = (0..keys.len())
                .filter(|&i| range.contains(keys[i]))
                .collect();
            assert_eq!(got, covered, "contains {key:?}..{end:?}");
            let map: BTreeMap<Vec<u8>, usize> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.to_vec(), i))
                .collect();
            let got: Vec<usize> = range.entries(&map).map(|(_, &i)| i).collect();
            assert_eq!(got, covered, "entries {key:?}..{end:?}");
        }
    }
}
