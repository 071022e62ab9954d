//! What keeps a cluster safe and its answers honest: pre-vote, the
//! `hasleader` metadata, `--strict-reconfig-check`, the cluster id; and two
//! requests a follower hands to the leader (leases, MemberUpdate).

use std::net::Ipv4Addr;

use cairn_proto::cairnpeer::peer_client::PeerClient;
use cairn_proto::cairnpeer::SnapshotChunk;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, MemberAddRequest,
    MemberRemoveRequest, MemberUpdateRequest,
};
use openraft::{SnapshotMeta, Vote};
use tokio_stream::StreamExt;

use super::*;
use crate::support::partition::Partition;

/// The harness's `--election-timeout`.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// What etcd answers when a request needs a leader and there is none.
const NO_LEADER: &str = "etcdserver: no leader";

on_both!(
    has_leader_metadata,
    has_leader_metadata_on_etcd,
    has_leader_metadata_on_cairn
);
on_both!(
    strict_reconfig_check,
    strict_reconfig_check_on_etcd,
    strict_reconfig_check_on_cairn
);
on_both!(member_update, member_update_on_etcd, member_update_on_cairn);
on_both!(
    other_cluster_refused,
    other_cluster_refused_on_etcd,
    other_cluster_refused_on_cairn
);
on_both!(
    lease_through_follower,
    lease_through_follower_on_etcd,
    lease_through_follower_on_cairn
);

/// Pre-vote: a follower cut off from the others for five election
/// timeouts neither raises its term nor, once back, deposes the leader.
///
/// Cairn only: the partition names members by source address, and etcd's
/// peer calls all leave from 127.0.0.1 (see [`Partition`]).
#[tokio::test]
async fn cut_off_follower_rejoins_quietly_on_cairn() {
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let leader = cluster.leader().await;
    let term = cluster
        .member(leader)
        .status()
        .await
        .expect("Status")
        .raft_term;
    let cut = (0..3).find(|&i| i != leader).expect("a follower");
    let rest: Vec<Ipv4Addr> = (0..3)
        .filter(|&i| i != cut)
        .map(|i| cluster.member(i).ip())
        .collect();
    let partition = Partition::between(&[cluster.member(cut).ip()], &rest);

    put(cluster.member(leader), "pv/during", "x").await;
    tokio::time::sleep(5 * ELECTION_TIMEOUT).await;
    let member = cluster.member(cut);
    let status = member.status().await.expect("Status of the cut-off member");
    assert_eq!(
        status.raft_term, term,
        "the cut-off member campaigned: its term went up"
    );
    let seen = get(member, "pv/during", Read::serializable()).await;
    assert!(
        matches!(seen, Ok(None)),
        "the partition let a write through: {seen:?}"
    );

    drop(partition);
    until_served("the follower catches up", member, "pv/during").await;
    assert_eq!(cluster.leader().await, leader, "the leader was deposed");
    for i in 0..3 {
        let status = cluster.member(i).status().await.expect("Status");
        assert_eq!(status.raft_term, term, "m{i}'s term");
    }
}

/// A snapshot that arrives damaged, or shorter than its sender said, is
/// refused with InvalidArgument before openraft is asked to install it (a
/// failed install would stop the member), and the member goes on
/// following and applying.
#[tokio::test]
async fn damaged_snapshot_refused_on_cairn() {
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let leader = cluster.leader().await;
    let target = (0..3).find(|&i| i != leader).expect("a follower");
    let before = cluster.member(target).status().await.expect("Status");
    let cluster_id = before.header.as_ref().expect("a header").cluster_id;
    let from = cluster.member(leader).id();
    let header: (Vote<u64>, SnapshotMeta<u64, cairn_raft_storage::Member>) =
        (Vote::new(before.raft_term, from), SnapshotMeta::default());
    let header = postcard::to_stdvec(&header).expect("encodes");
    let mut peer = PeerClient::connect(cluster.member(target).peer_url())
        .await
        .expect("the peer port answers");
    let cases = [
        (b"not a snapshot".to_vec(), 0, "refusing a snapshot"),
        (
            b"short".to_vec(),
            1000,
            "snapshot cut short: 5 of 1000 bytes",
        ),
    ];
    for (data, total_bytes, want) in cases {
        let chunk = SnapshotChunk {
            cluster_id,
            from,
            header: header.clone(),
            data,
            total_bytes,
        };
        let refused = peer
            .install_snapshot(tokio_stream::iter([chunk]))
            .await
            .expect_err("a damaged snapshot is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(want), "{refused:?}");
    }

    put(cluster.member(leader), "ds/after", "x").await;
    let member = cluster.member(target);
    until_served("the follower applies a later write", member, "ds/after").await;
    let after = member.status().await.expect("Status");
    assert_eq!(
        (after.leader, after.raft_term),
        (before.leader, before.raft_term)
    );
}

/// `hasleader: true` metadata makes a member without a leader refuse
/// even a serializable read, which it answers without it.
async fn has_leader_metadata(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let survivor = (0..3).find(|&i| i != leader).expect("a follower");
    put(cluster.member(leader), "hl/k", "v").await;
    let member = cluster.member(survivor);
    until_served("the survivor has the key", member, "hl/k").await;
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.kill(i);
    }

    let member = cluster.member(survivor);
    eventually(
        "the survivor refuses reads that want a leader",
        async || {
            let read = RangeRequest {
                key: b"hl/k".to_vec(),
                serializable: true,
                ..RangeRequest::default()
            };
            match member.kv().range(wants_leader(read)).await {
                Err(s) if s.code() == tonic::Code::Unavailable && s.message() == NO_LEADER => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let write = PutRequest {
        key: b"hl/k".to_vec(),
        value: b"w".to_vec(),
        ..PutRequest::default()
    };
    let refused = member
        .kv()
        .put(wants_leader(write))
        .await
        .expect_err("a put that wants a leader");
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::Unavailable, NO_LEADER)
    );
    let kv = get(member, "hl/k", Read::serializable())
        .await
        .expect("a serializable read without the metadata")
        .expect("the key");
    assert_eq!(kv.value, b"v");
}

/// `request` with the metadata etcd's clients send to want a leader.
fn wants_leader<T>(request: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// With one of three members down, `--strict-reconfig-check` refuses to
/// remove a running voter or add one (either would leave too few voters
/// connected), and changes nothing; removing the member that is down is
/// allowed.
async fn strict_reconfig_check(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let mut followers = (0..3).filter(|&i| i != leader);
    let (down, up) = (
        followers.next().expect("a follower"),
        followers.next().expect("another"),
    );
    let everyone = listed(&cluster, &[0, 1, 2]);
    cluster.kill(down);
    // Give the leader a moment to see the connection go.
    tokio::time::sleep(ELECTION_TIMEOUT).await;

    let admin = cluster.member(leader).cluster();
    let remove = MemberRemoveRequest {
        id: cluster.member(up).id(),
    };
    let refused = admin.clone().member_remove(remove).await.map(drop);
    let add = MemberAddRequest {
        peer_ur_ls: vec![cluster.reserve("m3").peer_url()],
        is_learner: false,
    };
    let refused_add = admin.clone().member_add(add).await.map(drop);
    for (call, refused) in [("remove", refused), ("add", refused_add)] {
        let refused = refused.expect_err(call);
        assert_eq!(
            (refused.code(), refused.message()),
            (tonic::Code::Unavailable, UNHEALTHY),
            "{call} with a member down"
        );
    }
    every_member_lists(&cluster, &everyone).await;

    cluster.remove_member(down).await;
    every_member_lists(&cluster, &listed(&cluster, &[leader, up])).await;
}

/// MemberUpdate through a follower changes a member's peer URLs in every
/// member's list; the member keeps working on its first URL.
async fn member_update(flavor: Flavor) {
    let cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let subject = cluster.member(leader);
    let extra = cluster.reserve("spare").peer_url();
    let peer_urls = vec![subject.peer_url(), extra];
    let update = MemberUpdateRequest {
        id: subject.id(),
        peer_ur_ls: peer_urls.clone(),
    };
    let answer = cluster
        .member(follower)
        .cluster()
        .member_update(update)
        .await
        .expect("MemberUpdate")
        .into_inner();
    let listed_subject = answer
        .members
        .iter()
        .find(|m| m.id == subject.id())
        .expect("the answer lists the member");
    assert_eq!(listed_subject.peer_ur_ls, peer_urls);

    let mut expected = listed(&cluster, &[0, 1, 2]);
    expected.get_mut(&subject.id()).expect("listed").1 = peer_urls;
    every_member_lists(&cluster, &expected).await;
    for i in 0..3 {
        put(cluster.member(i), &format!("mu/{i}"), "x").await;
    }
}

/// A member wiped and started again as a new cluster of its own (another
/// `--initial-cluster-token`, so another cluster id) at the same address
/// is refused by the others: it never learns their leader and their term
/// and leader stay as they were.
async fn other_cluster_refused(flavor: Flavor) {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let before = cluster.member(leader).status().await.expect("Status");
    let stranger = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.kill(stranger);
    cluster.wipe(stranger);
    cluster.spawn_with(stranger, &["--initial-cluster-token", "another-cluster"]);

    // Five election timeouts: time for the stranger to campaign.
    tokio::time::sleep(5 * ELECTION_TIMEOUT).await;
    eventually("a log tells of the mismatch", async || {
        let logs: Vec<String> = (0..3).map(|i| cluster.log_tail(i)).collect();
        logs.iter()
            .any(|log| log.contains("cluster ID mismatch"))
            .then_some(())
            .ok_or(logs.join("\n"))
    })
    .await;
    for i in (0..3).filter(|&i| i != stranger) {
        let status = cluster.member(i).status().await.expect("Status");
        assert_eq!(
            (status.leader, status.raft_term),
            (before.leader, before.raft_term),
            "m{i}'s leader and term"
        );
    }
    if let Ok(status) = cluster.member(stranger).status().await {
        assert_ne!(
            status.leader, before.leader,
            "the stranger follows the leader"
        );
    }
    put(cluster.member(leader), "oc/after", "x").await;
}

/// A lease granted, kept alive and asked about through a follower lives
/// past its TTL while kept alive, with its key; once keepalives stop it
/// expires on every member, and its key goes with it.
async fn lease_through_follower(flavor: Flavor) {
    const TTL: i64 = 3;
    let cluster = Cluster::start(flavor, 3, &[]).await;
    let leader = cluster.leader().await;
    let follower = cluster.member((0..3).find(|&i| i != leader).expect("a follower"));
    let grant = LeaseGrantRequest { ttl: TTL, id: 0 };
    let lease = follower
        .lease()
        .lease_grant(grant)
        .await
        .expect("LeaseGrant through a follower")
        .into_inner();
    assert_eq!(lease.error, "");
    let put_with_lease = PutRequest {
        key: b"lf/k".to_vec(),
        value: b"v".to_vec(),
        lease: lease.id,
        ..PutRequest::default()
    };
    follower
        .kv()
        .put(put_with_lease)
        .await
        .expect("a put with the lease through a follower");

    // Keep it alive through the follower for twice its TTL.
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    // etcd sends the response headers only with the first answer, so the
    // call returns only once a request is on its way.
    let keep_alive = LeaseKeepAliveRequest { id: lease.id };
    requests.send(keep_alive).await.expect("room for one");
    let mut answers = follower
        .lease()
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("LeaseKeepAlive through a follower")
        .into_inner();
    let kept_until = Instant::now() + Duration::from_secs(2 * TTL as u64);
    loop {
        let answer = answers
            .next()
            .await
            .expect("an answer")
            .expect("a keepalive");
        assert_eq!((answer.id, answer.ttl), (lease.id, TTL));
        if Instant::now() >= kept_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        requests
            .send(LeaseKeepAliveRequest { id: lease.id })
            .await
            .expect("the stream is open");
    }
    let ttl = time_to_live(follower, lease.id).await;
    assert!(
        ttl > 0 && ttl <= TTL,
        "TimeToLive through the follower: {ttl}"
    );
    let on_leader = time_to_live(cluster.member(leader), lease.id).await;
    assert!(on_leader > 0, "TimeToLive on the leader: {on_leader}");
    assert!(get(follower, "lf/k", Read::linearizable())
        .await
        .expect("a read")
        .is_some());

    drop(requests);
    for i in 0..3 {
        let member = cluster.member(i);
        eventually(&format!("the lease expires on m{i}"), async || {
            match (
                time_to_live(member, lease.id).await,
                get(member, "lf/k", Read::linearizable()).await,
            ) {
                (-1, Ok(None)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}

/// The TTL left of lease `id` as `member` tells it: -1 once it is gone.
async fn time_to_live(member: &Member, id: i64) -> i64 {
    let request = LeaseTimeToLiveRequest { id, keys: false };
    member
        .lease()
        .lease_time_to_live(request)
        .await
        .expect("LeaseTimeToLive")
        .into_inner()
        .ttl
}

/// ★ `--experimental-auto-promote-learners`: a learner is promoted once it
/// has caught up, with no MemberPromote.
#[tokio::test]
async fn learner_promoted_automatically_on_cairn() {
    let mut cluster =
        Cluster::start(Flavor::Cairn, 3, &["--experimental-auto-promote-learners"]).await;
    for k in 0..20 {
        put(cluster.member(k % 3), &format!("ap/{k}"), "x").await;
    }
    let l = cluster.add_member("m3", true).await;
    let learner = cluster.member(l);
    let mut expected = listed(&cluster, &[0, 1, 2, l]);
    expected.get_mut(&learner.id()).expect("listed").3 = false;
    every_member_lists(&cluster, &expected).await;
    let everything = range(learner, "ap/", Read::linearizable())
        .await
        .expect("the promoted member serves linearizable reads");
    assert_eq!(everything.kvs.len(), 20);
}
