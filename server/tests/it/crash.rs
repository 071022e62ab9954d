//! SIGKILL during concurrent writes: every acknowledged write is there
//! after the restart, at the revision it was acknowledged with. Batched
//! proposals make this worth checking: one log entry answers many clients.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};

use crate::support::{CairnProc, ServerProc};

#[tokio::test]
async fn kill_during_concurrent_writes_loses_no_acknowledged_write() {
    let mut server = CairnProc::start().await;
    let acked = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let mut writers = Vec::new();
    for w in 0..16 {
        let mut kv = server.kv();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w:02}-{i:05}");
                let put = PutRequest {
                    key: key.clone().into(),
                    value: key.clone().into(),
                    ..Default::default()
                };
                // Once the server is killed, writes fail: the writer stops.
                let Ok(resp) = kv.put(put).await else { return };
                let rev = resp.into_inner().header.expect("header").revision;
                acked.lock().unwrap().push((key, rev));
            }
        }));
    }
    // Let writes pile up, then kill in the middle of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 2000 {
        assert!(tokio::time::Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_and_restart().await;
    for w in writers {
        w.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let mut kv = server.kv();
    let current = kv
        .range(RangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let current = current.into_inner().header.unwrap().revision;
    let mut revs: Vec<i64> = acked.iter().map(|(_, r)| *r).collect();
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), acked.len(), "every put got its own revision");
    assert!(
        current >= *revs.last().unwrap(),
        "revision {current} went back"
    );
    for (key, rev) in &acked {
        let r = kv
            .range(RangeRequest {
                key: key.clone().into(),
                revision: *rev,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.kvs.len(), 1, "{key} acknowledged at {rev} is missing");
        assert_eq!(
            (r.kvs[0].mod_revision, r.kvs[0].value.as_slice()),
            (*rev, key.as_bytes())
        );
    }
}
