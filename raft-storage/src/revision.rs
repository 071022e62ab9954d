//! Revisions and their on-disk encoding.
//!
//! A revision is a (main, sub) pair: `main` is the store revision a txn
//! created, `sub` the op's index within that txn. On disk, in the `mvcc`
//! tree, a revision's key is
//!
//! ```text
//! b'r' | main: u64 big-endian | sub: u64 big-endian | [b't' if tombstone]
//! ```
//!
//! so sled's byte order is revision order, and a scan of `b'r'..` walks
//! history from oldest to newest.

/// One revision: the main revision of a txn and the op's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The store revision that the txn created.
    pub main: i64,
    /// The change's index within its txn, from 0.
    pub sub: i64,
}

/// The prefix of every revision key in the `mvcc` tree.
pub const PREFIX: u8 = b'r';
const TOMBSTONE: u8 = b't';
/// Length of an encoded revision key without the tombstone mark.
pub const KEY_LEN: usize = 17;

impl Revision {
    /// A revision.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The sled key of this revision, with the tombstone mark when asked.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut k = Vec::with_capacity(KEY_LEN + 1);
        k.push(PREFIX);
        k.extend_from_slice(&(self.main as u64).to_be_bytes());
        k.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            k.push(TOMBSTONE);
        }
        k
    }

    /// Decodes a sled key: the revision and whether it is a tombstone.
    pub fn from_key(k: &[u8]) -> Option<(Revision, bool)> {
        if k.len() < KEY_LEN || k[0] != PREFIX {
            return None;
        }
        let main = u64::from_be_bytes(k[1..9].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(k[9..17].try_into().ok()?) as i64;
        let tombstone = match &k[KEY_LEN..] {
            [] => false,
            [TOMBSTONE] => true,
            _ => return None,
        };
        Some((Revision { main, sub }, tombstone))
    }

    /// The first sled key of main revision `main` (inclusive bound).
    pub fn lower_bound(main: i64) -> Vec<u8> {
        Revision::new(main, 0).to_key(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let cases = [
            (Revision::new(1, 0), false),
            (Revision::new(2, 5), true),
            (Revision::new(i64::MAX, 3), false),
        ];
        for (rev, t) in cases {
            assert_eq!(Revision::from_key(&rev.to_key(t)), Some((rev, t)));
        }
        // Byte order is revision order, tombstone or not.
        let a = Revision::new(2, 9).to_key(true);
        let b = Revision::new(3, 0).to_key(false);
        assert!(a < b);
        assert!(Revision::new(255, 0).to_key(false) < Revision::new(256, 0).to_key(false));
    }

    #[test]
    fn rejects_foreign_keys() {
        assert_eq!(Revision::from_key(b"m/applied"), None);
        let mut k = Revision::new(1, 1).to_key(false);
        k.push(b'x');
        assert_eq!(Revision::from_key(&k), None);
    }
}
