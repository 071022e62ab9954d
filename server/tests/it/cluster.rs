//! Multi-member scenarios on real processes: formation, leader failure,
//! learners, membership changes under load, a cold restart, removal, and
//! etcdctl's member commands; and in [`guards`], what keeps a cluster safe.
//!
//! Each scenario is one `async fn(Flavor)`, run on etcd 3.4 (the reference)
//! by `<name>_on_etcd` and on `cairn` by `<name>_on_cairn`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{MoveLeaderRequest, PutRequest, RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;
use tokio::sync::watch;

use crate::support::cluster::{Cluster, Flavor, Member};
use crate::support::writer::{Report, Writer};
use crate::support::Etcdctl;

/// How long a change may take to reach every member.
const CONVERGE: Duration = Duration::from_secs(10);
/// The longest a writer may go without an acknowledgement while members
/// are added and removed one at a time ("a few seconds").
const MAX_WRITE_GAP: Duration = Duration::from_secs(5);
/// What etcd answers a learner asked for anything but serializable reads
/// and a few maintenance calls.
const LEARNER_REFUSES: &str = "etcdserver: rpc not supported for learner";
/// What etcd answers MemberPromote while the learner is behind.
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
/// What etcd answers a membership change until every voter has been
/// connected for 5 s (`--strict-reconfig-check`).
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";

macro_rules! on_both {
    ($scenario:ident, $etcd:ident, $cairn:ident) => {
        #[tokio::test]
        async fn $etcd() {
            $scenario(Flavor::Etcd).await;
        }

        #[tokio::test]
        async fn $cairn() {
            $scenario(Flavor::Cairn).await;
        }
    };
}

// After the macro, which it uses.
mod guards;

on_both!(formation_3, formation_3_on_etcd, formation_3_on_cairn);
on_both!(formation_5, formation_5_on_etcd, formation_5_on_cairn);
on_both!(
    leader_failure,
    leader_failure_on_etcd,
    leader_failure_on_cairn
);
on_both!(
    learner_add_and_promote,
    learner_add_and_promote_on_etcd,
    learner_add_and_promote_on_cairn
);
on_both!(
    grow_and_shrink,
    grow_and_shrink_on_etcd,
    grow_and_shrink_on_cairn
);
on_both!(cold_restart, cold_restart_on_etcd, cold_restart_on_cairn);
on_both!(
    removed_member_stops,
    removed_member_stops_on_etcd,
    removed_member_stops_on_cairn
);
on_both!(
    etcdctl_member_commands,
    etcdctl_member_commands_on_etcd,
    etcdctl_member_commands_on_cairn
);

on_both!(
    two_voters_read_together,
    two_voters_read_together_on_etcd,
    two_voters_read_together_on_cairn
);
on_both!(
    concurrent_writes_through_a_follower,
    concurrent_writes_through_a_follower_on_etcd,
    concurrent_writes_through_a_follower_on_cairn
);
on_both!(move_leader, move_leader_on_etcd, move_leader_on_cairn);
// Cairn only for now: on etcd 3.4 the first member added back to the
// forced cluster stayed one revision behind in this scenario, which needs
// a closer look before it can serve as the reference.
#[tokio::test]
async fn force_new_cluster_on_cairn() {
    force_new_cluster(Flavor::Cairn).await;
}

/// `etcdctl move-leader` hands leadership to a follower of our choice.
async fn move_leader(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let target = (0..3).find(|&i| i != leader).expect("a follower");
    let (from, to) = (cluster.member(leader).id(), cluster.member(target).id());
    // etcdctl 3.5: 3.4 dials with the URL as `:authority` (see
    // etcdctl_member_commands).
    let out = Etcdctl::v35(cluster.endpoints()).ok(&["move-leader", &format!("{to:x}")]);
    assert_eq!(
        out.trim(),
        format!("Leadership transferred from {from:x} to {to:x}")
    );
    assert_eq!(cluster.leader().await, target);
    put(cluster.member(leader), "ml/after", "v").await;
}

/// Two MoveLeader calls at once, to different followers: both end, one of
/// the members leads and takes writes, and the old leader, made leader
/// again, takes writes too: its transfer ended with the last call (a count
/// left above zero would refuse every proposal there).
///
/// Cairn only: which call wins, and how the other fails, is each server's
/// own business.
#[tokio::test]
async fn concurrent_move_leader_on_cairn() {
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let old = cluster.leader().await;
    let call = |to: usize| {
        let mut maintenance = cluster.member(old).maintenance();
        let target_id = cluster.member(to).id();
        async move {
            maintenance
                .move_leader(MoveLeaderRequest { target_id })
                .await
        }
    };
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let (a, b) = tokio::join!(call(others[0]), call(others[1]));
    eprintln!("move-leader answers: {a:?} / {b:?}");
    let now = cluster.leader().await;
    put(cluster.member(now), "cml/after", "v").await;
    if now != old {
        let target_id = cluster.member(old).id();
        cluster
            .member(now)
            .maintenance()
            .move_leader(MoveLeaderRequest { target_id })
            .await
            .expect("leadership back to the old leader");
        assert_eq!(cluster.leader().await, old);
    }
    put(cluster.member(old), "cml/back", "v").await;
}

/// Disaster recovery: two of three members are lost for good; the
/// survivor restarts with --force-new-cluster, keeps every key, and two new
/// members join it.
async fn force_new_cluster(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let mut acked = BTreeMap::new();
    for k in 0..30 {
        let (key, value) = (format!("fnc/{k:02}"), format!("v{k}"));
        put(cluster.member(k % 3), &key, &value).await;
        acked.insert(key, value);
    }
    // An operator recovers from the most up-to-date survivor: make sure
    // member 0 has applied every acknowledged write.
    range(cluster.member(0), "fnc/", Read::linearizable())
        .await
        .expect("a linearizable read on the survivor");
    cluster.stop_all();
    cluster.forget(1);
    cluster.forget(2);
    cluster.restart_with(0, &["--force-new-cluster"]).await;
    assert_eq!(cluster.leader().await, 0);
    let list = cluster.member(0).member_list().await.expect("MemberList");
    assert_eq!(list.len(), 1, "the survivor alone: {list:?}");
    let kept = |answer: RangeResponse| -> BTreeMap<String, String> {
        answer
            .kvs
            .iter()
            .map(|kv| (utf8(&kv.key), utf8(&kv.value)))
            .collect()
    };
    let got = range(cluster.member(0), "fnc/", Read::linearizable())
        .await
        .expect("range on the survivor");
    assert_eq!(kept(got), acked, "the survivor keeps every key");

    let a = cluster.add_member("m3", false).await;
    let b = cluster.add_member("m4", false).await;
    let revision = put(cluster.member(0), "fnc/grown", "v").await;
    acked.insert("fnc/grown".into(), "v".into());
    for i in [0, a, b] {
        eventually(
            "a member of the regrown cluster has every key",
            async || {
                let got = range(cluster.member(i), "fnc/", Read::serializable())
                    .await
                    .map_err(|e| e.to_string())?;
                if header_revision(&got) < revision {
                    return Err(format!("m{i} at {}", header_revision(&got)));
                }
                let got = kept(got);
                if got == acked {
                    Ok(())
                } else {
                    Err(format!("m{i} has {} keys", got.len()))
                }
            },
        )
        .await;
    }
}

/// A member added after the log was compacted catches up from a snapshot
/// streamed by the leader (etcd 3.4 has no --experimental-snapshot-catchup-entries
/// to make that happen in a short test).
#[tokio::test]
async fn snapshot_catch_up_on_cairn() {
    let small = [
        "--snapshot-count",
        "100",
        "--experimental-snapshot-catchup-entries",
        "10",
    ];
    let mut cluster = Cluster::start(Flavor::Cairn, 3, &small).await;
    let leader = cluster.leader().await;
    let mut last = 0;
    for k in 0..400 {
        last = put(cluster.member(leader), &format!("sc/{k:03}"), "v").await;
    }
    let learner = cluster.add_member("m3", true).await;
    eventually("the learner has every key", async || {
        let got = range(cluster.member(learner), "sc/", Read::serializable())
            .await
            .map_err(|e| e.to_string())?;
        if got.kvs.len() == 400 && header_revision(&got) == last {
            Ok(())
        } else {
            Err(format!(
                "{} keys at {}",
                got.kvs.len(),
                header_revision(&got)
            ))
        }
    })
    .await;
    assert!(
        cluster.log_tail(learner).contains("received a snapshot"),
        "the learner caught up by snapshot:\n{}",
        cluster.log_tail(learner)
    );
}

async fn formation_3(flavor: Flavor) {
    formation(flavor, 3).await;
}

async fn formation_5(flavor: Flavor) {
    formation(flavor, 5).await;
}

/// Every member lists every member, a write through any member is visible
/// to a linearizable read on every other at once, and to a serializable
/// read on each soon after.
async fn formation(flavor: Flavor, n: usize) {
    let cluster = Cluster::start(flavor, n, &[]).await;
    let all: Vec<usize> = (0..n).collect();

    let expected = listed(&cluster, &all);
    assert_eq!(expected.len(), n, "distinct member ids: {expected:?}");
    for &i in &all {
        let member = cluster.member(i);
        eventually(
            &format!("{} lists every member", member.name()),
            async || {
                let got = list_of(member).await?;
                (got == expected).then_some(()).ok_or(format!("{got:?}"))
            },
        )
        .await;
    }
    let mut cluster_ids = BTreeSet::new();
    for &i in &all {
        let status = cluster.member(i).status().await.expect("Status");
        cluster_ids.insert(status.header.expect("header").cluster_id);
    }
    assert_eq!(cluster_ids.len(), 1, "one cluster id: {cluster_ids:?}");

    // Serializable reads catch up on their own.
    let first = put(cluster.member(0), "formation/first", "1").await;
    for &i in &all {
        let member = cluster.member(i);
        eventually(
            &format!("{} serves the write serializably", member.name()),
            async || match get(member, "formation/first", Read::serializable()).await {
                Ok(Some(kv)) if kv.mod_revision == first && kv.value == b"1" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }

    // Linearizable reads see a write through another member at once.
    let last = put(cluster.member(n - 1), "formation/last", "2").await;
    for &i in &all {
        let kv = get(cluster.member(i), "formation/last", Read::linearizable())
            .await
            .expect("linearizable get");
        let kv = kv.unwrap_or_else(|| panic!("m{i} misses a committed write"));
        assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"2"[..], last));
    }
}

/// Many puts at once through one follower (which may forward them to the
/// leader together): each answer is its own put's, by its prev_kv and
/// revision, and a put naming an unknown lease fails alone.
async fn concurrent_writes_through_a_follower(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let follower = cluster.member((leader + 1) % 3);
    const N: usize = 60;
    for i in 0..N {
        put(follower, &format!("cw/{i:02}"), &format!("old{i}")).await;
    }
    let kv = follower.kv();
    let answers = futures::future::join_all((0..N).map(|i| {
        let mut kv = kv.clone();
        async move {
            let request = PutRequest {
                key: format!("cw/{i:02}").into_bytes(),
                value: format!("new{i}").into_bytes(),
                prev_kv: true,
                // Every fifth names a lease that does not exist.
                lease: if i % 5 == 0 { 0x1234_5678 } else { 0 },
                ..PutRequest::default()
            };
            kv.put(request).await.map(|a| a.into_inner())
        }
    }))
    .await;
    let mut revisions = BTreeSet::new();
    for (i, answer) in answers.into_iter().enumerate() {
        if i % 5 == 0 {
            let status = answer.expect_err("an unknown lease");
            assert_eq!(status.code(), tonic::Code::NotFound, "put {i}: {status:?}");
            assert_eq!(status.message(), "etcdserver: requested lease not found");
            continue;
        }
        let answer = answer.unwrap_or_else(|e| panic!("put {i}: {e:?}"));
        let prev = answer.prev_kv.expect("prev_kv");
        assert_eq!(utf8(&prev.value), format!("old{i}"), "put {i}'s answer");
        let revision = answer.header.expect("header").revision;
        assert!(revisions.insert(revision), "revision {revision} twice");
    }
    let everything = range(follower, "cw/", Read::linearizable())
        .await
        .expect("range");
    for kv in &everything.kvs {
        let i: usize = utf8(&kv.key[3..]).parse().expect("a number");
        let expected = if i % 5 == 0 { "old" } else { "new" };
        assert_eq!(utf8(&kv.value), format!("{expected}{i}"));
        if i % 5 != 0 {
            assert!(revisions.contains(&kv.mod_revision), "cw/{i:02}");
        }
    }
    assert_eq!(everything.kvs.len(), N);
}

/// Two voters: a linearizable read needs both, so with the follower killed
/// it fails on the leader, where a serializable read still answers; with
/// the follower back, linearizable reads answer again.
async fn two_voters_read_together(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 2, &[]).await;
    let leader = cluster.leader().await;
    let follower = 1 - leader;
    put(cluster.member(leader), "tv/a", "1").await;
    cluster.kill(follower);
    let refused = get(cluster.member(leader), "tv/a", Read::linearizable()).await;
    assert!(
        refused.is_err(),
        "a linearizable read without the other voter: {refused:?}"
    );
    let local = get(cluster.member(leader), "tv/a", Read::serializable()).await;
    assert_eq!(local.expect("serializable").expect("tv/a").value, b"1");

    cluster.restart(follower).await;
    eventually("a linearizable read with both voters", async || {
        let leader = cluster.leader().await;
        match get(cluster.member(leader), "tv/a", Read::linearizable()).await {
            Ok(Some(kv)) if kv.value == b"1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// SIGKILL the leader under a stream of writes from a client that fails
/// over: the other two elect a leader and go on taking writes, and the
/// killed member, restarted, catches up to every acknowledged one.
async fn leader_failure(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    // The writer starts on the leader, so the kill makes it fail over.
    let old = cluster.leader().await;
    let mut endpoints = cluster.endpoint_list();
    endpoints.rotate_left(old);
    let (_endpoints, endpoint_list) = watch::channel(endpoints);
    let writer = Writer::spawn("lf/", endpoint_list);
    writer.wait_for_more(50, CONVERGE).await;

    cluster.kill(old);
    let new = cluster.leader().await;
    assert_ne!(new, old, "a killed member cannot lead");
    writer.wait_for_more(100, CONVERGE).await;
    for i in cluster.running() {
        let key = format!("lf-direct/{i}");
        put(cluster.member(i), &key, "x").await;
    }
    let report = writer.stop().await;
    eprintln!("leader_failure: {}", summary(&report));
    assert!(report.errors > 0, "the writer never noticed the kill");

    cluster.restart(old).await;
    let leader = cluster.leader().await;
    let everything = range(cluster.member(leader), "lf", Read::linearizable())
        .await
        .expect("range on the leader");
    assert_acked(&report, &everything);
    converged(&cluster, &everything, "lf").await;
}

/// A learner joins, follows while not voting, is promoted once in sync,
/// and then serves linearizable reads like any voter.
async fn learner_add_and_promote(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    for k in 0..10 {
        put(cluster.member(k % 3), &format!("la/before/{k}"), "b").await;
    }

    let l = cluster.add_member("m3", true).await;
    let learner = cluster.member(l);
    assert!(
        learner.status().await.expect("Status").is_learner,
        "Status on the learner says isLearner"
    );
    let mut expected = listed(&cluster, &[0, 1, 2]);
    expected.insert(
        learner.id(),
        (
            "m3".into(),
            vec![learner.peer_url()],
            vec![learner.endpoint()],
            true,
        ),
    );
    every_member_lists(&cluster, &expected).await;

    // A learner serves serializable reads and Status, and nothing else.
    eventually("the learner serves what it has", async || {
        match get(learner, "la/before/9", Read::serializable()).await {
            Ok(Some(kv)) if kv.value == b"b" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let refusals = [
        get(learner, "la/before/0", Read::linearizable())
            .await
            .map(drop),
        learner
            .kv()
            .put(PutRequest {
                key: b"la/through-learner".to_vec(),
                value: b"x".to_vec(),
                ..PutRequest::default()
            })
            .await
            .map(drop),
        learner.member_list().await.map(drop),
    ];
    for (call, refused) in ["linearizable Range", "Put", "MemberList"]
        .iter()
        .zip(refusals)
    {
        let refused = refused.expect_err(call);
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::Unavailable, LEARNER_REFUSES),
            "{call} on a learner: {refused:?}"
        );
    }

    for k in 0..10 {
        put(cluster.member(k % 3), &format!("la/after/{k}"), "a").await;
    }
    cluster.promote(l).await;
    let learner = cluster.member(l);
    expected.get_mut(&learner.id()).expect("listed").3 = false;
    every_member_lists(&cluster, &expected).await;
    assert!(!learner.status().await.expect("Status").is_learner);

    let leader = cluster.leader().await;
    let on_leader = range(cluster.member(leader), "la/", Read::linearizable())
        .await
        .expect("range on the leader");
    assert_eq!(on_leader.kvs.len(), 20);
    let on_promoted = range(learner, "la/", Read::linearizable())
        .await
        .expect("the promoted member serves linearizable reads");
    assert_eq!(on_promoted.kvs, on_leader.kvs);
}

/// 3 → 5 → 3 voters, one change at a time, under a writer that never goes
/// more than a few seconds without an acknowledgement. The leader is never
/// the one removed.
async fn grow_and_shrink(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let (endpoints, endpoint_list) = watch::channel(cluster.endpoint_list());
    let writer = Writer::spawn("gs/", endpoint_list);
    writer.wait_for_more(20, CONVERGE).await;

    for name in ["m3", "m4"] {
        cluster.add_member(name, false).await;
        endpoints.send_replace(cluster.endpoint_list());
        writer.wait_for_more(20, CONVERGE).await;
    }
    let five: Vec<usize> = (0..5).collect();
    every_member_lists(&cluster, &listed(&cluster, &five)).await;

    let mut removed = Vec::new();
    for _ in 0..2 {
        let leader = cluster.leader().await;
        let victim = cluster
            .running()
            .into_iter()
            .find(|&i| i != leader)
            .expect("a follower");
        cluster.remove_member(victim).await;
        removed.push(victim);
        endpoints.send_replace(cluster.endpoint_list());
        writer.wait_for_more(20, CONVERGE).await;
    }
    let report = writer.stop().await;
    eprintln!("grow_and_shrink: removed {removed:?}; {}", summary(&report));
    assert!(
        report.longest_gap < MAX_WRITE_GAP,
        "the writer went {:?} without an acknowledgement: {}",
        report.longest_gap,
        summary(&report)
    );

    let remaining = cluster.running();
    assert_eq!(remaining.len(), 3);
    every_member_lists(&cluster, &listed(&cluster, &remaining)).await;
    let leader = cluster.leader().await;
    let everything = range(cluster.member(leader), "gs/", Read::linearizable())
        .await
        .expect("range on the leader");
    assert_acked(&report, &everything);
    converged(&cluster, &everything, "gs/").await;
}

/// SIGKILL every member at once: after a restart, every acknowledged key
/// is there at its revision, and the revision goes on from where it was.
async fn cold_restart(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let mut acked = BTreeMap::new();
    for k in 0..60 {
        let (key, value) = (format!("cr/{k:02}"), format!("v{k}"));
        let revision = put(cluster.member(k % 3), &key, &value).await;
        acked.insert(key, (value, revision));
    }
    let last = acked.values().map(|&(_, r)| r).max().expect("writes");

    cluster.stop_all();
    cluster.restart_all().await;

    for i in 0..3 {
        let got = range(cluster.member(i), "cr/", Read::linearizable())
            .await
            .expect("range after the restart");
        assert_eq!(header_revision(&got), last, "m{i}'s revision");
        let found: BTreeMap<String, (String, i64)> = got
            .kvs
            .iter()
            .map(|kv| (utf8(&kv.key), (utf8(&kv.value), kv.mod_revision)))
            .collect();
        assert_eq!(found, acked, "m{i}'s keys");
    }
    let leader = cluster.leader().await;
    let next = put(cluster.member(leader), "cr/next", "n").await;
    assert_eq!(next, last + 1, "the revision goes on");
}

/// A removed follower's process exits by itself; the other two list only
/// each other and take writes.
async fn removed_member_stops(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.remove_member(victim).await;
    let removed_at = Instant::now();
    let status = cluster.wait_exit(victim, CONVERGE).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "the removed member still runs after {CONVERGE:?}\n{}",
            cluster.log_tail(victim)
        )
    });
    eprintln!(
        "removed_member_stops: exited {:?} after removal: {status}",
        removed_at.elapsed()
    );

    let remaining = cluster.running();
    assert_eq!(remaining.len(), 2);
    every_member_lists(&cluster, &listed(&cluster, &remaining)).await;
    for i in remaining {
        put(cluster.member(i), &format!("rm/{i}"), "x").await;
    }
}

/// etcdctl's member list, add, promote and remove, and endpoint status
/// --cluster, with their output checked: ids in hex, names, URLs, the
/// leader column.
async fn etcdctl_member_commands(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let ctl = Etcdctl::new(cluster.endpoints());
    let status = cluster.member(0).status().await.expect("Status");
    let cluster_id = status.header.expect("header").cluster_id;

    // `-w json`: the response struct, ids as JSON numbers.
    let json = ctl.json(&["member", "list"]).0;
    assert_eq!(json["header"]["cluster_id"].as_u64(), Some(cluster_id));
    let members = json["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{json}");
    for i in 0..3 {
        let m = cluster.member(i);
        let entry = members
            .iter()
            .find(|e| e["ID"].as_u64() == Some(m.id()))
            .unwrap_or_else(|| panic!("{} ({:x}) missing from {json}", m.name(), m.id()));
        assert_eq!(entry["name"], m.name(), "{entry}");
        assert_eq!(entry["peerURLs"], serde_json::json!([m.peer_url()]));
        assert_eq!(entry["clientURLs"], serde_json::json!([m.endpoint()]));
        assert!(
            entry.get("isLearner").is_none(),
            "false is omitted: {entry}"
        );
    }

    // The simple format: hex id, status, name, peer URLs, client URLs,
    // is-learner.
    let simple = ctl.ok(&["member", "list"]);
    assert_eq!(simple.lines().count(), 3, "{simple}");
    for i in 0..3 {
        let m = cluster.member(i);
        let line = format!(
            "{:x}, started, {}, {}, {}, false",
            m.id(),
            m.name(),
            m.peer_url(),
            m.endpoint()
        );
        assert!(simple.lines().any(|l| l == line), "{line:?} in\n{simple}");
    }

    // member add --learner, retried while etcd finds the cluster too young.
    let x = cluster.reserve("x");
    let peer_url = format!("--peer-urls={}", x.peer_url());
    let added = etcdctl_eventually(&ctl, &["member", "add", "x", &peer_url, "--learner"]).await;
    let mut lines = added.lines();
    let first = lines.next().expect("a first line");
    let x_id = hex_between(first, "Member ", " added to cluster ");
    assert_eq!(
        first,
        format!("Member {x_id:16x} added to cluster {cluster_id:16x}")
    );
    let env: BTreeMap<&str, &str> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    assert_eq!(env.get("ETCD_NAME"), Some(&"x"), "{added}");
    assert_eq!(
        env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS").copied(),
        Some(x.peer_url().as_str())
    );
    assert_eq!(env.get("ETCD_INITIAL_CLUSTER_STATE"), Some(&"existing"));
    let initial: BTreeSet<String> = env["ETCD_INITIAL_CLUSTER"]
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut want: BTreeSet<String> = (0..3)
        .map(|i| {
            format!(
                "{}={}",
                cluster.member(i).name(),
                cluster.member(i).peer_url()
            )
        })
        .collect();
    want.insert(format!("x={}", x.peer_url()));
    assert_eq!(initial, want);

    // Not started: listed without name or client URLs, and not promotable.
    let simple = ctl.ok(&["member", "list"]);
    let line = format!("{x_id:x}, unstarted, , {}, , true", x.peer_url());
    assert!(simple.lines().any(|l| l == line), "{line:?} in\n{simple}");
    let x_hex = format!("{x_id:x}");
    let refused = ctl.fails(&["member", "promote", &x_hex]);
    assert!(refused.contains(LEARNER_NOT_READY), "{refused}");

    // Started, it catches up and can be promoted.
    let j = cluster.join(x).await;
    assert_eq!(cluster.member(j).id(), x_id);
    let promoted = etcdctl_eventually(&ctl, &["member", "promote", &x_hex]).await;
    assert_eq!(
        promoted.trim(),
        format!("Member {x_id:16x} promoted in cluster {cluster_id:16x}")
    );

    // endpoint status --cluster: one row per member, found through the
    // member list, exactly one of them the leader. etcdctl 3.5: 3.4 dials
    // each member with its whole client URL as the HTTP/2 `:authority`
    // ("http://host:port"), which grpc-go servers accept and Cairn's
    // (h2's) refuse as malformed; see docs/compatibility.md.
    let leader = cluster.leader().await;
    let table =
        Etcdctl::v35(cluster.endpoints()).ok(&["endpoint", "status", "--cluster", "-w", "table"]);
    let rows = table_rows(&table);
    assert_eq!(
        rows[0],
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS"
        ],
        "{table}"
    );
    let rows: BTreeMap<String, Vec<String>> = rows[1..]
        .iter()
        .map(|row| (row[0].clone(), row.clone()))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for i in 0..4 {
        let m = cluster.member(i);
        let row = rows
            .get(&m.endpoint())
            .unwrap_or_else(|| panic!("no row for {}\n{table}", m.endpoint()));
        assert_eq!(row[1], format!("{:x}", m.id()), "{table}");
        let is_leader = if i == leader { "true" } else { "false" };
        assert_eq!(
            (row[4].as_str(), row[5].as_str()),
            (is_leader, "false"),
            "{table}"
        );
        assert_eq!(row[9], "", "no errors: {table}");
    }

    // member remove: the member's process exits, the list is back to three.
    let removed = etcdctl_eventually(&ctl, &["member", "remove", &x_hex]).await;
    assert_eq!(
        removed.trim(),
        format!("Member {x_id:16x} removed from cluster {cluster_id:16x}")
    );
    assert!(
        cluster.wait_exit(j, CONVERGE).await.is_some(),
        "the removed member exits\n{}",
        cluster.log_tail(j)
    );
    let simple = ctl.ok(&["member", "list"]);
    assert_eq!(simple.lines().count(), 3, "{simple}");
    assert!(!simple.contains(&x_hex), "{simple}");
}

/// Runs `etcdctl <args>` until it succeeds, retrying while etcd refuses a
/// membership change as premature; returns stdout.
async fn etcdctl_eventually(ctl: &Etcdctl, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = ctl.run(args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return String::from_utf8(output.stdout).expect("etcdctl prints UTF-8");
        }
        let premature = stderr.contains(UNHEALTHY) || stderr.contains(LEARNER_NOT_READY);
        assert!(
            premature && Instant::now() < deadline,
            "etcdctl {args:?} failed ({}): {stderr}",
            output.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The hex number between `before` and `after` in `line`.
fn hex_between(line: &str, before: &str, after: &str) -> u64 {
    let rest = line
        .strip_prefix(before)
        .unwrap_or_else(|| panic!("{line:?} does not start with {before:?}"));
    let (hex, _) = rest
        .split_once(after)
        .unwrap_or_else(|| panic!("{line:?} lacks {after:?}"));
    let hex = hex.trim_start();
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{hex:?} in {line:?}: {e}"))
}

/// The cells of an etcdctl `-w table` (header first), borders dropped.
fn table_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// A member as MemberList shows it: name, peer URLs, client URLs, learner.
type Listed = (String, Vec<String>, Vec<String>, bool);

/// What MemberList should show for members `indices` of `cluster`.
fn listed(cluster: &Cluster, indices: &[usize]) -> BTreeMap<u64, Listed> {
    indices
        .iter()
        .map(|&i| {
            let m = cluster.member(i);
            let entry = (
                m.name().to_owned(),
                vec![m.peer_url()],
                vec![m.endpoint()],
                false,
            );
            (m.id(), entry)
        })
        .collect()
}

/// MemberList on `member`, keyed by id.
async fn list_of(member: &Member) -> Result<BTreeMap<u64, Listed>, String> {
    let list = member.member_list().await.map_err(|e| format!("{e:?}"))?;
    Ok(list
        .into_iter()
        .map(|m| (m.id, (m.name, m.peer_ur_ls, m.client_ur_ls, m.is_learner)))
        .collect())
}

/// Waits until every running voter's MemberList is `expected` (learners
/// refuse MemberList).
async fn every_member_lists(cluster: &Cluster, expected: &BTreeMap<u64, Listed>) {
    let voters = cluster.running().into_iter();
    for i in voters.filter(|&i| !cluster.member(i).is_learner()) {
        let member = cluster.member(i);
        eventually(
            &format!("{} lists {expected:?}", member.name()),
            async || {
                let got = list_of(member).await?;
                (&got == expected).then_some(()).ok_or(format!("{got:?}"))
            },
        )
        .await;
    }
}

/// Every acknowledged put of `report` is in `everything`, with its value,
/// at its revision or later.
fn assert_acked(report: &Report, everything: &RangeResponse) {
    let found: BTreeMap<String, (String, i64)> = everything
        .kvs
        .iter()
        .map(|kv| (utf8(&kv.key), (utf8(&kv.value), kv.mod_revision)))
        .collect();
    assert!(!report.acks.is_empty(), "nothing was acknowledged");
    for ack in &report.acks {
        let (value, revision) = found
            .get(&ack.key)
            .unwrap_or_else(|| panic!("acknowledged {ack:?} is lost"));
        assert_eq!(value, &ack.value, "{ack:?}");
        assert!(*revision >= ack.revision, "{ack:?} found at {revision}");
    }
}

/// Every running member serves exactly `everything` (a range over
/// `prefix` on the leader) in a serializable read at its revision, once it
/// has caught up.
async fn converged(cluster: &Cluster, everything: &RangeResponse, prefix: &str) {
    let revision = header_revision(everything);
    for i in cluster.running() {
        let member = cluster.member(i);
        eventually(
            &format!("{} catches up to {revision}", member.name()),
            async || {
                let read = Read {
                    serializable: true,
                    revision,
                };
                let got = range(member, prefix, read)
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                if got.kvs == everything.kvs {
                    Ok(())
                } else {
                    Err(format!(
                        "{} keys, not {}",
                        got.kvs.len(),
                        everything.kvs.len()
                    ))
                }
            },
        )
        .await;
    }
}

fn summary(report: &Report) -> String {
    format!(
        "{} acks, {} errors, longest gap {:?}, errors {:?}",
        report.acks.len(),
        report.errors,
        report.longest_gap,
        report.error_kinds
    )
}

/// How a read is served.
#[derive(Clone, Copy)]
struct Read {
    serializable: bool,
    /// 0 for the latest.
    revision: i64,
}

impl Read {
    fn linearizable() -> Self {
        Self {
            serializable: false,
            revision: 0,
        }
    }

    fn serializable() -> Self {
        Self {
            serializable: true,
            revision: 0,
        }
    }
}

/// Puts `key` = `value` through `member`; returns the revision.
async fn put(member: &Member, key: &str, value: &str) -> i64 {
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    };
    let answer = member
        .kv()
        .put(request)
        .await
        .unwrap_or_else(|e| panic!("put {key} through {}: {e:?}", member.name()));
    answer.into_inner().header.expect("header").revision
}

async fn get(member: &Member, key: &str, read: Read) -> Result<Option<KeyValue>, tonic::Status> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable: read.serializable,
        revision: read.revision,
        ..RangeRequest::default()
    };
    let answer = member.kv().range(request).await?.into_inner();
    Ok(answer.kvs.into_iter().next())
}

/// Every key starting with `prefix`.
async fn range(member: &Member, prefix: &str, read: Read) -> Result<RangeResponse, tonic::Status> {
    let mut range_end = prefix.as_bytes().to_vec();
    *range_end.last_mut().expect("a non-empty prefix") += 1;
    let request = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end,
        serializable: read.serializable,
        revision: read.revision,
        ..RangeRequest::default()
    };
    Ok(member.kv().range(request).await?.into_inner())
}

fn header_revision(answer: &RangeResponse) -> i64 {
    answer.header.as_ref().expect("header").revision
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 test data")
}

/// Polls `check` until it passes.
///
/// # Panics
///
/// With `what` and the last failure, if it does not pass within
/// [`CONVERGE`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let why = match check().await {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            Instant::now() < deadline,
            "not within {CONVERGE:?}: {what}; last: {why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `member` serves `key` in a serializable read ([`eventually`]).
async fn until_served(what: &str, member: &Member, key: &str) {
    eventually(what, async || {
        match get(member, key, Read::serializable()).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
