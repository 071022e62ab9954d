//! Watch: differential scripts against etcd 3.4, the `etcd-client` crate,
//! and etcdctl.

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::WatchCreateRequest;

use crate::support::diff::{compact, del, del_span, put, txn, IntoOp};
use crate::support::watch_diff::{Step, WatchScript};

fn watch(key: &str, range_end: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
        start_revision,
        ..Default::default()
    }
}

/// Puts, deletes, txns, compaction, cancel and progress, watched through
/// two streams; every response must match etcd's.
#[tokio::test]
async fn watch_script_matches_etcd() {
    use Step::*;
    let mut s = WatchScript::new();
    s.step("put a", Write(put("a", "1").into())); // 2
    s.step("put b", Write(put("b", "1").into())); // 3
    s.step("put a again", Write(put("a", "2").into())); // 4
    s.step("watch a from now", Watch(0, watch("a", "", 0)));
    s.step(
        "watch everything from 2 with prev_kv",
        Watch(
            0,
            WatchCreateRequest {
                prev_kv: true,
                ..watch("", "\0", 2)
            },
        ),
    );
    s.step(
        "watch [a, c) from 3 without puts",
        Watch(
            1,
            WatchCreateRequest {
                filters: vec![FilterType::Noput as i32],
                ..watch("a", "c", 3)
            },
        ),
    );
    s.step(
        "watch b with id 7 without deletes",
        Watch(
            1,
            WatchCreateRequest {
                watch_id: 7,
                filters: vec![FilterType::Nodelete as i32],
                ..watch("b", "", 0)
            },
        ),
    );
    s.step(
        "duplicate watch id",
        Watch(
            1,
            WatchCreateRequest {
                watch_id: 7,
                ..watch("b", "", 0)
            },
        ),
    );
    s.step("empty range", Watch(1, watch("b", "a", 0)));
    s.step("auto id after an explicit one", Watch(1, watch("c", "", 0)));
    s.step("put a a third time", Write(put("a", "3").into())); // 5
    s.step(
        "txn: put a, put c, delete b",
        Write(
            txn(
                vec![],
                vec![put("a", "4").op(), put("c", "1").op(), del("b").op()],
                vec![],
            )
            .into(),
        ),
    ); // 6
    s.step("delete [a, z)", Write(del_span("a", "z").into())); // 7
    s.step("progress on stream 0", Progress(0));
    s.step("progress on stream 1", Progress(1));
    s.step("cancel a watcher", Cancel(0, 0));
    s.step("cancel an unknown id", Cancel(0, 99));
    s.step("put after cancel", Write(put("a", "5").into())); // 8
    s.step("compact at 5", Write(compact(5).into()));
    s.step(
        "watch below the compact revision",
        Watch(1, watch("a", "", 3)),
    );
    s.step("watch at the compact revision", Watch(1, watch("a", "", 5)));
    s.step("watch from the future", Watch(1, watch("a", "", 10)));
    s.step("put 9", Write(put("a", "6").into())); // 9
    s.step("put 10", Write(put("a", "7").into())); // 10
    s.step("progress after the future watch fired", Progress(1));
    s.run().await;
}
