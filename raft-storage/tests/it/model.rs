//! Property tests: the store against a plain in-memory model of etcd's
//! revision model, through random puts, deletes, txns, compactions and
//! reopenings.

use std::collections::BTreeMap;

use cairn_proto::etcdserverpb::compare::CompareResult;
use cairn_proto::etcdserverpb::{request_op, CompactionRequest, DeleteRangeRequest, RequestOp};
use cairn_raft_storage::{ApplyError, Error, Request, Response};
use proptest::prelude::*;

use crate::support::{cmp_version, put_op, txn, Harness};

#[derive(Debug, Clone, PartialEq)]
struct Kv {
    create: i64,
    modified: i64,
    version: i64,
    value: Vec<u8>,
}

/// The state at every revision: `states[r]` is the store at revision r.
struct Model {
    states: Vec<BTreeMap<Vec<u8>, Kv>>,
    compact: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![BTreeMap::new(), BTreeMap::new()],
            compact: 0,
        }
    }
    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn now(&self) -> &BTreeMap<Vec<u8>, Kv> {
        self.states.last().unwrap()
    }
    fn put(next: &mut BTreeMap<Vec<u8>, Kv>, rev: i64, key: &[u8], value: &[u8]) {
        let kv = match next.get(key) {
            Some(old) => Kv {
                create: old.create,
                modified: rev,
                version: old.version + 1,
                value: value.to_vec(),
            },
            None => Kv {
                create: rev,
                modified: rev,
                version: 1,
                value: value.to_vec(),
            },
        };
        next.insert(key.to_vec(), kv);
    }
    fn commit(&mut self, next: BTreeMap<Vec<u8>, Kv>, changed: bool) {
        if changed {
            self.states.push(next);
        }
    }
}

#[derive(Debug, Clone)]
enum End {
    Single,
    Prefix,
    All,
}

fn range_end(key: &[u8], end: &End) -> Vec<u8> {
    match end {
        End::Single => vec![],
        End::Prefix => {
            let mut e = key.to_vec();
            *e.last_mut().unwrap() += 1;
            e
        }
        End::All => vec![0],
    }
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        e => k >= key && k < e,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(String, u8),
    Delete(String, End),
    /// If key's version equals v, put a key, else delete another.
    Txn(String, i64, String, String),
    /// Compact `back` revisions below the current one.
    Compact(i64),
    Reopen,
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "ab", "abc", "b", "ba", "c"]).prop_map(String::from)
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Single), Just(End::Prefix), Just(End::All)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (key(), end()).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (key(), 0..3i64, key(), key()).prop_map(|(k, v, a, b)| Op::Txn(k, v, a, b)),
        1 => (0..6i64).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

async fn check_reads(h: &Harness, m: &Model, probe_key: &str, probe_end: &End, back: i64) {
    let cur = m.current();
    assert_eq!(h.opened.store.revision(), cur);
    let at = (cur - back).max(1);
    let end = range_end(probe_key.as_bytes(), probe_end);
    let got = h
        .opened
        .store
        .range(&cairn_proto::etcdserverpb::RangeRequest {
            key: probe_key.into(),
            range_end: end.clone(),
            revision: at,
            ..Default::default()
        });
    if at < m.compact {
        assert!(
            matches!(got, Err(Error::Compacted)),
            "read at {at} below compact {}",
            m.compact
        );
        return;
    }
    let got = got.expect("range");
    let want: Vec<(Vec<u8>, Kv)> = m.states[at as usize]
        .iter()
        .filter(|(k, _)| in_range(k, probe_key.as_bytes(), &end))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let got_kvs: Vec<(Vec<u8>, Kv)> = got
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                Kv {
                    create: kv.create_revision,
                    modified: kv.mod_revision,
                    version: kv.version,
                    value: kv.value.clone(),
                },
            )
        })
        .collect();
    assert_eq!(got_kvs, want, "range {probe_key:?} {probe_end:?} at {at}");
    assert_eq!(got.count as usize, want.len());
    assert_eq!(got.header.unwrap().revision, cur);
}

async fn run(ops: Vec<(Op, String, End, i64)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Some(Harness::new(dir.path()));
    let mut m = Model::new();
    for (op, pk, pe, back) in ops {
        let hh = h.as_mut().unwrap();
        let rev = m.current() + 1;
        match op {
            Op::Put(k, v) => {
                hh.put(&k, &v.to_string()).await;
                let mut next = m.now().clone();
                Model::put(&mut next, rev, k.as_bytes(), v.to_string().as_bytes());
                m.commit(next, true);
            }
            Op::Delete(k, e) => {
                let end = range_end(k.as_bytes(), &e);
                let r = hh
                    .apply(Request::DeleteRange(DeleteRangeRequest {
                        key: k.clone().into(),
                        range_end: end.clone(),
                        ..Default::default()
                    }))
                    .await;
                let mut next = m.now().clone();
                next.retain(|key, _| !in_range(key, k.as_bytes(), &end));
                let deleted = m.now().len() - next.len();
                let Response::DeleteRange(d) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(d.deleted as usize, deleted);
                m.commit(next, deleted > 0);
            }
            Op::Txn(k, v, a, b) => {
                let del = RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: b.clone().into(),
                            ..Default::default()
                        },
                    )),
                };
                let r = hh
                    .apply(txn(
                        vec![cmp_version(&k, CompareResult::Equal, v)],
                        vec![put_op(&a, "t")],
                        vec![del],
                    ))
                    .await;
                let version = m.now().get(k.as_bytes()).map_or(0, |kv| kv.version);
                let Response::Txn(t) = r else { panic!("{r:?}") };
                assert_eq!(t.succeeded, version == v);
                let mut next = m.now().clone();
                let changed = if version == v {
                    Model::put(&mut next, rev, a.as_bytes(), b"t");
                    true
                } else {
                    next.remove(b.as_bytes()).is_some()
                };
                m.commit(next, changed);
            }
            Op::Compact(back) => {
                let at = m.current() - back;
                let r = hh
                    .apply(Request::Compaction(CompactionRequest {
                        revision: at,
                        physical: false,
                    }))
                    .await;
                if at <= m.compact {
                    assert_eq!(r, Response::Rejected(ApplyError::Compacted));
                } else {
                    assert!(matches!(r, Response::Compaction(_)), "{r:?}");
                    m.compact = at;
                }
            }
            Op::Reopen => {
                drop(h.take());
                h = Some(Harness::new(dir.path()));
            }
        }
        check_reads(h.as_ref().unwrap(), &m, &pk, &pe, back).await;
    }
    // Finally every revision still readable agrees with the model.
    let hh = h.as_ref().unwrap();
    for back in 0..m.current() {
        check_reads(hh, &m, "\0", &End::All, back).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec((op(), key(), end(), 0..8i64), 1..60)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(ops));
    }
}
