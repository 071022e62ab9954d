//! The membership runbooks of docs/operations.md, step by step through
//! cairnctl: rolling restart under a writer, growing 3 → 5, and recovery
//! from one survivor with `--force-new-cluster`.
//!
//! Members run in this process; "stop (SIGTERM)" is `Node::shutdown`,
//! which is what `cairn` does on SIGTERM, and "start" builds the member's
//! config from its command line, as `cairn` does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Get, Put};
use cairn_server::Node;

use crate::support::{self, ctl_at, eventually, hashkv, Member};

const WITHIN: Duration = Duration::from_secs(20);

/// What a steady writer was told: each key's acknowledged revision, and
/// its longest run of failed puts.
#[derive(Default)]
struct Writes {
    acked: BTreeMap<String, i64>,
    longest_outage: Duration,
    failures: u32,
}

/// Puts `w/<n>` = `<n>` for n = 0, 1, ... until `stop`, through a client
/// of every member.
fn steady_writer(
    client: cairn_client::Client,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Writes>>, tokio::task::JoinHandle<()>) {
    let writes = Arc::new(Mutex::new(Writes::default()));
    let task = {
        let writes = writes.clone();
        tokio::spawn(async move {
            let mut failing_since: Option<Instant> = None;
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("w/{n:06}");
                let result = client.put(Put::new(key.as_str(), n.to_string())).await;
                let failed = {
                    let mut w = writes.lock().expect("invariant: not poisoned");
                    match result {
                        Ok(r) => {
                            w.acked.insert(key, r.header.revision.get());
                            if let Some(since) = failing_since.take() {
                                w.longest_outage = w.longest_outage.max(since.elapsed());
                            }
                            false
                        }
                        Err(_) => {
                            w.failures += 1;
                            failing_since.get_or_insert_with(Instant::now);
                            true
                        }
                    }
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    (writes, task)
}

/// Every acknowledged write is there, with its value and revision.
async fn assert_kept(client: &cairn_client::Client, acked: &BTreeMap<String, i64>) {
    let got = client.get(Get::prefix("w/")).await.expect("read back");
    let found: BTreeMap<String, (String, i64)> = got
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                (
                    String::from_utf8_lossy(&kv.value).into_owned(),
                    kv.mod_revision.get(),
                ),
            )
        })
        .collect();
    for (key, rev) in acked {
        let n: u64 = key.trim_start_matches("w/").parse().expect("numbered");
        assert_eq!(
            found.get(key),
            Some(&(n.to_string(), *rev)),
            "acknowledged write {key} at {rev}"
        );
    }
}

/// The leader's member ID, as every member in `members` reports it.
async fn leader(members: &[&Member]) -> Result<u64, String> {
    let s = support::status(members, false).await?;
    let l = s[0].leader;
    if l == 0 || s.iter().any(|m| m.leader != l) {
        return Err(format!("no agreed leader: {s:?}"));
    }
    Ok(l)
}

/// Step 4 of the rolling restart, and the wait after a member add: `m`
/// is healthy and has applied what the leader had committed when asked.
async fn wait_caught_up(all: &[&Member], m: &Member) {
    eventually("endpoint health", WITHIN, async || {
        let r = ctl_at(&[m], &["endpoint", "health"]).await;
        (r.code == 0).then_some(()).ok_or(r.stderr)
    })
    .await;
    let target = eventually("the leader's index", WITHIN, async || {
        let s = support::status(all, false).await?;
        let leader = s
            .iter()
            .find(|x| x.id == x.leader)
            .ok_or(format!("no leader: {s:?}"))?;
        Ok(leader.raft_index)
    })
    .await;
    eventually("applied index", WITHIN, async || {
        let s = support::status(&[m], false).await?;
        (s[0].applied_index >= target)
            .then_some(())
            .ok_or(format!("{} < {target}", s[0].applied_index))
    })
    .await;
}

/// `member add NAME --peer-urls URL [--learner]`, retried while the cluster
/// answers "unhealthy cluster" (a voter connected for less than 5 s), and
/// the flags it prints for the new member: `(id hex, flags)`.
async fn member_add(via: &[&Member], m: &Member, learner: bool) -> (String, Vec<String>) {
    let peer = m.peer_url();
    let mut args = vec!["member", "add", m.name.as_str(), "--peer-urls", &peer];
    if learner {
        args.push("--learner");
    }
    let out = eventually("member add", WITHIN, async || {
        let r = ctl_at(via, &args).await;
        match r.code {
            0 => Ok(r.stdout),
            _ if r.stderr.contains("unhealthy cluster") => Err(r.stderr),
            _ => panic!("member add: {r:?}"),
        }
    })
    .await;
    let id = out
        .strip_prefix("Member ")
        .and_then(|r| r.split_whitespace().next())
        .expect("Member ID added to cluster ...")
        .to_owned();
    // ETCD_X="v" lines, as flags: --x v.
    let mut flags = Vec::new();
    for line in out.lines().filter(|l| l.starts_with("ETCD_")) {
        let (var, value) = line.split_once('=').expect("VAR=value");
        let flag = format!(
            "--{}",
            var.trim_start_matches("ETCD_")
                .to_lowercase()
                .replace('_', "-")
        );
        flags.push(flag);
        flags.push(value.trim_matches('"').to_owned());
    }
    assert_eq!(
        flags
            .iter()
            .step_by(2)
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [
            "--name",
            "--initial-cluster",
            "--initial-advertise-peer-urls",
            "--initial-cluster-state"
        ],
        "{out}"
    );
    assert_eq!(flags[1], m.name);
    assert_eq!(flags[5], peer);
    assert_eq!(flags[7], "existing");
    (id, flags)
}

/// The names, and whether each is a learner, from `member list`.
async fn roster(via: &[&Member]) -> Vec<(String, bool)> {
    support::member_list(via)
        .await
        .into_iter()
        .map(|(_, name, _, learner)| (name, learner))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_under_a_writer() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(6, 3, root.path(), "r");
    let all: Vec<&Member> = members.iter().collect();
    let mut nodes: Vec<Option<Node>> = support::start_all(&members, "rolling")
        .await
        .into_iter()
        .map(Some)
        .collect();
    let client = support::client(&members).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, writer) = steady_writer(client.clone(), stop.clone());

    // The leader last.
    let first_leader = eventually("a leader", WITHIN, async || leader(&all).await).await;
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by_key(|&i| nodes[i].as_ref().expect("running").member_id() == first_leader);
    for i in order {
        let m = &members[i];
        let id = nodes[i].as_ref().expect("running").member_id();
        // 1. All members healthy, raft indexes close.
        let s = eventually("status of every member", WITHIN, async || {
            support::status(&all, true).await
        })
        .await;
        assert_eq!(s.len(), 3, "{s:?}");
        let top = s.iter().map(|x| x.raft_index).max().expect("3 rows");
        assert!(
            s.iter().all(|x| top - x.raft_index < 1000),
            "indexes close: {s:?}"
        );
        // 2. If it leads, move leadership away.
        if leader(&all).await == Ok(id) {
            let to = nodes[(i + 1) % 3].as_ref().expect("running").member_id();
            let out = ctl_at(&all, &["move-leader", &format!("{to:x}")])
                .await
                .ok();
            assert_eq!(out, format!("Leadership transferred to {to:x}\n"));
            let now = eventually("the new leader", WITHIN, async || leader(&all).await).await;
            assert_ne!(now, id, "leadership moved away");
        }
        // 3. Stop it, start it on the same data dir with the same flags.
        nodes[i].take().expect("running").shutdown().await;
        let node = support::start_with_flags(
            m,
            &[
                "--initial-cluster".into(),
                support::initial_cluster(&members),
            ],
        )
        .await;
        assert_eq!(node.member_id(), id, "same identity");
        nodes[i] = Some(node);
        // 4. Healthy, and caught up, before the next one.
        wait_caught_up(&all, m).await;
    }

    // The writer went on through all three restarts.
    let before = writes.lock().expect("not poisoned").acked.len();
    eventually("more writes after the last restart", WITHIN, async || {
        let now = writes.lock().expect("not poisoned").acked.len();
        (now > before + 20).then_some(()).ok_or(now.to_string())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let w = std::mem::take(&mut *writes.lock().expect("not poisoned"));
    eprintln!(
        "rolling restart: {} writes acknowledged, {} failed, longest outage {:?}",
        w.acked.len(),
        w.failures,
        w.longest_outage
    );
    assert!(w.acked.len() > 100, "{} writes", w.acked.len());
    assert!(
        w.longest_outage < Duration::from_secs(5),
        "brief errors only: {:?}",
        w.longest_outage
    );
    assert_kept(&client, &w.acked).await;
    // Every member holds the same history.
    let rev = *w.acked.values().max().expect("writes");
    let hashes = hashkv(&all, rev).await.expect("hashkv");
    assert!(
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0]),
        "{hashes:?}"
    );

    drop(client);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_three_to_five() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(7, 5, root.path(), "m");
    let three: Vec<&Member> = members[..3].iter().collect();
    let mut nodes = support::start_all(&members[..3], "grow").await;
    let client = support::client(&members[..3]).await;
    for i in 0..20 {
        client
            .put(Put::new(format!("g/{i:02}"), format!("v{i}")))
            .await
            .expect("put");
    }

    // m3: a plain add, started with the printed flags on an empty data dir.
    let (_, flags) = member_add(&three, &members[3], false).await;
    assert_eq!(
        flags[3],
        support::initial_cluster(&members[..4]),
        "ETCD_INITIAL_CLUSTER names every member"
    );
    nodes.push(support::start_with_flags(&members[3], &flags).await);
    let four: Vec<&Member> = members[..4].iter().collect();
    // Until `endpoint status --cluster` shows it with the leader's index.
    eventually("m3 at the leader's raft index", WITHIN, async || {
        let s = support::status(&three, true).await?;
        let leader = s.iter().find(|x| x.id == x.leader).ok_or("no leader")?;
        let m3 = s
            .iter()
            .find(|x| x.endpoint == members[3].client_url())
            .ok_or(format!("m3 not listed: {s:?}"))?;
        (m3.raft_index == leader.raft_index && !m3.is_learner)
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;

    // m4: the gentler way, as a learner, then promoted once caught up.
    let (id, flags) = member_add(&four, &members[4], true).await;
    nodes.push(support::start_with_flags(&members[4], &flags).await);
    // A learner answers no linearizable read, so no `endpoint health`:
    // its raft index tells when it caught up.
    let five: Vec<&Member> = members.iter().collect();
    eventually("m4 at the leader's raft index", WITHIN, async || {
        let s = support::status(&five, false).await?;
        let leader = s.iter().find(|x| x.id == x.leader).ok_or("no leader")?;
        (s[4].raft_index == leader.raft_index && s[4].is_learner)
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert!(
        roster(&four).await.contains(&("m4".to_owned(), true)),
        "a learner until promoted"
    );
    let promoted = eventually("member promote", WITHIN, async || {
        let r = ctl_at(&four, &["member", "promote", &id]).await;
        match r.code {
            0 => Ok(r.stdout),
            _ if r.stderr.contains("in sync with leader")
                || r.stderr.contains("unhealthy cluster") =>
            {
                Err(r.stderr)
            }
            _ => panic!("member promote: {r:?}"),
        }
    })
    .await;
    assert!(promoted.contains(&id), "{promoted}");

    let list = support::member_list(&five).await;
    assert_eq!(
        list.iter()
            .map(|(_, name, peers, learner)| (name.as_str(), peers.clone(), *learner))
            .collect::<Vec<_>>(),
        members
            .iter()
            .map(|m| (m.name.as_str(), vec![m.peer_url()], false))
            .collect::<Vec<_>>(),
        "five started voters"
    );
    // The new members hold the data...
    let got = ctl_at(
        &[&members[4]],
        &[
            "get",
            "g/",
            "--prefix",
            "--consistency",
            "s",
            "--count-only",
        ],
    )
    .await
    .ok();
    assert_eq!(got, "20\n");
    // ...and vote: with two of the first three gone, three of five commit.
    for n in nodes.drain(..2) {
        n.shutdown().await;
    }
    let rest: Vec<&Member> = members[2..].iter().collect();
    eventually("a write with m0 and m1 down", WITHIN, async || {
        let r = ctl_at(&rest, &["put", "g/after", "grown"]).await;
        (r.code == 0).then_some(()).ok_or(r.stderr)
    })
    .await;
    let got = ctl_at(&[&members[3]], &["get", "g/after", "--print-value-only"])
        .await
        .ok();
    assert_eq!(got, "grown\n");

    drop(client);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recover_from_one_survivor_then_grow_back() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(8, 3, root.path(), "m");
    let all: Vec<&Member> = members.iter().collect();
    let nodes = support::start_all(&members, "survivor").await;
    let client = support::client(&members).await;
    let lease = client.lease_grant(3600, None).await.expect("grant").id;
    for i in 0..30 {
        let put = Put::new(format!("s/{:02}", i % 20), format!("v{i}"));
        let put = if i % 5 == 0 {
            put.with_lease(lease)
        } else {
            put
        };
        client.put(put).await.expect("put");
    }
    // The survivor has applied everything (a linearizable read through it).
    let before = ctl_at(&[&members[0]], &["-w", "json", "get", "s/", "--prefix"])
        .await
        .ok();
    drop(client);

    // m1 and m2 are lost for good.
    let mut nodes = nodes.into_iter();
    let survivor = nodes.next().expect("m0");
    for n in nodes {
        n.shutdown().await;
    }
    for m in &members[1..] {
        std::fs::remove_dir_all(&m.data_dir).expect("wiped");
    }

    // 1. Stop the survivor; keep a copy of its data dir.
    survivor.shutdown().await;
    let copy = root.path().join("m0-copy");
    copy_dir(&members[0].data_dir, &copy);
    // 2. Start it once with its usual flags plus --force-new-cluster.
    let usual = vec![
        "--initial-cluster".to_owned(),
        support::initial_cluster(&members),
    ];
    let mut forced = usual.clone();
    forced.push("--force-new-cluster".into());
    let node = support::start_with_flags(&members[0], &forced).await;
    let m0 = node.member_id();
    let survivor = [&members[0]];
    assert_eq!(
        eventually("a leader", WITHIN, async || leader(&survivor).await).await,
        m0,
        "it leads"
    );
    assert_eq!(roster(&survivor).await, [("m0".to_owned(), false)]);
    let after = ctl_at(&survivor, &["-w", "json", "get", "s/", "--prefix"])
        .await
        .ok();
    assert_eq!(
        kvs(&after),
        kvs(&before),
        "every key, value and revision kept"
    );
    // 3. Restart it without the flag.
    node.shutdown().await;
    let node = support::start_with_flags(&members[0], &usual).await;
    assert_eq!(node.member_id(), m0);
    let mut nodes = vec![node];
    eventually("a leader", WITHIN, async || leader(&survivor).await).await;
    assert_eq!(roster(&survivor).await, [("m0".to_owned(), false)]);

    // 4. Grow back one member at a time, on the old machines, wiped.
    for i in 1..3 {
        let via: Vec<&Member> = members[..i].iter().collect();
        let (_, flags) = member_add(&via, &members[i], false).await;
        nodes.push(support::start_with_flags(&members[i], &flags).await);
        let now: Vec<&Member> = members[..=i].iter().collect();
        wait_caught_up(&now, &members[i]).await;
        // A voter added to a lone member joins as a learner and is
        // promoted once caught up.
        eventually("every member a voter", WITHIN, async || {
            let r = roster(&now).await;
            r.iter()
                .all(|(_, learner)| !learner)
                .then_some(())
                .ok_or(format!("{r:?}"))
        })
        .await;
    }
    let list = support::member_list(&all).await;
    assert_eq!(
        list.iter()
            .map(|(_, n, p, _)| (n.clone(), p.clone()))
            .collect::<Vec<_>>(),
        members
            .iter()
            .map(|m| (m.name.clone(), vec![m.peer_url()]))
            .collect::<Vec<_>>()
    );
    // The regrown members hold the survivor's data and its lease, and
    // commit without it.
    let got = ctl_at(
        &[&members[2]],
        &["-w", "json", "get", "s/", "--prefix", "--consistency", "s"],
    )
    .await
    .ok();
    assert_eq!(kvs(&got), kvs(&before));
    let ttl = ctl_at(
        &[&members[1]],
        &["lease", "timetolive", &format!("{:x}", lease.get())],
    )
    .await
    .ok();
    assert!(ttl.contains("granted with TTL(3600s)"), "{ttl}");
    nodes.remove(0).shutdown().await;
    let rest: Vec<&Member> = members[1..].iter().collect();
    eventually("a write with m0 down", WITHIN, async || {
        let r = ctl_at(&rest, &["put", "s/after", "regrown"]).await;
        (r.code == 0).then_some(()).ok_or(r.stderr)
    })
    .await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// The kvs of a `get -w json`, without the header.
fn kvs(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    assert!(v["count"].as_i64().unwrap_or(0) > 0, "{json}");
    v["kvs"].clone()
}

/// `cp -a`, as an operator keeps a copy of a data dir.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
