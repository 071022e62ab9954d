//! Cairn driven by the real etcdctl 3.4, the way operators use it.
//!
//! Each scenario runs twice: `on_cairn::<scenario>` is the test of Cairn,
//! and `on_etcd::<scenario>` runs the same assertions against Debian's etcd
//! 3.4, which proves the expected values are etcd's and not our guess. A
//! failure in `on_cairn` alone is a difference in Cairn; a failure in both
//! is a mistake in the scenario.
//!
//! Each scenario starts from a fresh store, which is at revision 1, so
//! revisions are spelled out.
//!
//! Not covered here: `get --count-only` (etcdctl 3.5 added it; count_only is
//! in the differential tests) and `lease("k")` compares (etcdctl 3.4 panics
//! parsing them; also in the differential tests).

use std::time::{Duration, Instant};

use crate::support::{Etcdctl, Kv, ServerProc};

/// Generates `on_cairn::<scenario>` and `on_etcd::<scenario>` for each
/// `async fn <scenario>(node: &mut impl ServerProc)` in this module.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod on_cairn {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let mut node = crate::support::CairnProc::start().await;
                    super::$scenario(&mut node).await;
                }
            )*
        }
        mod on_etcd {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let mut node = crate::support::EtcdProc::start().await;
                    super::$scenario(&mut node).await;
                }
            )*
        }
    };
}

on_both!(
    put_and_get,
    get_sorted,
    delete,
    txn,
    compaction,
    errors,
    survives_sigkill,
    watch_prefix_from_a_revision,
    watch_interactive_progress,
    lease_lifecycle,
    lease_expiry_and_keep_alive,
    lease_survives_a_restart,
    lock_and_elect
);

fn ctl(node: &impl ServerProc) -> Etcdctl {
    Etcdctl::new(node.endpoint())
}

/// `lease grant <ttl>`, returning the lease ID in hex as etcdctl prints it.
fn grant(ctl: &Etcdctl, ttl: &str) -> String {
    let out = ctl.ok(&["lease", "grant", ttl]);
    // "lease 694da20212e6f506 granted with TTL(60s)"
    let id = out.split_whitespace().nth(1).expect("a lease ID");
    assert_eq!(out.trim(), format!("lease {id} granted with TTL({ttl}s)"));
    id.to_owned()
}

/// Polls `get key` until it is gone; returns how long that took.
fn wait_gone(ctl: &Etcdctl, key: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while !ctl.ok(&["get", key]).is_empty() {
        assert!(start.elapsed() < limit, "{key} still there after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

async fn put_and_get(node: &mut impl ServerProc) {
    let ctl = ctl(node);

    // An empty store is at revision 1; each put raises it by one.
    assert_eq!(ctl.json(&["get", "foo"]).revision(), 1);
    assert_eq!(ctl.json(&["put", "foo", "bar"]).revision(), 2);
    let put = ctl.json(&["put", "foo", "baz", "--prev-kv"]);
    assert_eq!(put.revision(), 3);
    assert_eq!(put.prev_kv(), Some(Kv::new("foo", "bar", 2, 2, 1)));
    assert_eq!(ctl.json(&["put", "fop", "1"]).revision(), 4);
    assert_eq!(ctl.json(&["put", "fo", "2"]).revision(), 5);
    assert_eq!(ctl.json(&["put", "g", "3"]).revision(), 6);

    let get = ctl.json(&["get", "foo"]);
    assert_eq!(get.revision(), 6);
    assert_eq!(get.kvs(), [Kv::new("foo", "baz", 2, 3, 2)]);
    assert_eq!(get.count(), 1);
    assert!(!get.more());

    let missing = ctl.json(&["get", "nothing"]);
    assert_eq!(missing.revision(), 6);
    assert_eq!(missing.kvs(), []);
    assert_eq!(missing.count(), 0);

    // --prefix, in key order.
    let prefix = ctl.json(&["get", "--prefix", "fo"]);
    assert_eq!(
        prefix.kvs(),
        [
            Kv::new("fo", "2", 5, 5, 1),
            Kv::new("foo", "baz", 2, 3, 2),
            Kv::new("fop", "1", 4, 4, 1),
        ]
    );
    assert_eq!(prefix.count(), 3);

    // --limit cuts the result but not the count, and sets `more`.
    let limited = ctl.json(&["get", "--prefix", "fo", "--limit", "2"]);
    assert_eq!(limited.keys(), ["fo", "foo"]);
    assert_eq!(limited.count(), 3);
    assert!(limited.more());
    let exact = ctl.json(&["get", "--prefix", "fo", "--limit", "3"]);
    assert_eq!(exact.keys(), ["fo", "foo", "fop"]);
    assert!(!exact.more());

    // An explicit range end is exclusive; --from-key has none.
    assert_eq!(ctl.json(&["get", "fo", "fop"]).keys(), ["fo", "foo"]);
    assert_eq!(
        ctl.json(&["get", "--from-key", "foo"]).keys(),
        ["foo", "fop", "g"]
    );

    // --rev reads history; the header still carries the current revision.
    let old = ctl.json(&["get", "foo", "--rev", "2"]);
    assert_eq!(old.revision(), 6);
    assert_eq!(old.kvs(), [Kv::new("foo", "bar", 2, 2, 1)]);
    assert_eq!(ctl.json(&["get", "fop", "--rev", "3"]).kvs(), []);
    let before_fo = ctl.json(&["get", "--prefix", "fo", "--rev", "4"]);
    assert_eq!(before_fo.keys(), ["foo", "fop"]);
    assert_eq!(before_fo.count(), 2);

    // --keys-only drops values and keeps the rest.
    let keys_only = ctl.json(&["get", "--prefix", "fo", "--keys-only"]);
    assert_eq!(
        keys_only.kvs(),
        [
            Kv::new("fo", "", 5, 5, 1),
            Kv::new("foo", "", 2, 3, 2),
            Kv::new("fop", "", 4, 4, 1),
        ]
    );

    // A serializable read sees the same single-member state.
    let serializable = ctl.json(&["get", "--prefix", "fo", "--consistency=s"]);
    assert_eq!(serializable.kvs(), prefix.kvs());
    assert_eq!(serializable.revision(), 6);
}

async fn get_sorted(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    // Chosen so no sort target has ties: versions 1, 2, 3; create
    // revisions 2, 4, 5; mod revisions 3, 4, 7; values "1" < "2" < "baz".
    for (key, value) in [
        ("foo", "bar"),
        ("foo", "baz"),
        ("fop", "1"),
        ("fo", "2"),
        ("fo", "2"),
        ("fo", "2"),
    ] {
        ctl.json(&["put", key, value]);
    }
    let sorted = |by: &str, order: &str| {
        let get = ctl.json(&["get", "--prefix", "fo", "--sort-by", by, "--order", order]);
        assert_eq!(get.count(), 3, "sort by {by} {order}");
        get.keys()
    };
    assert_eq!(sorted("KEY", "ASCEND"), ["fo", "foo", "fop"]);
    assert_eq!(sorted("KEY", "DESCEND"), ["fop", "foo", "fo"]);
    assert_eq!(sorted("VERSION", "ASCEND"), ["fop", "foo", "fo"]);
    assert_eq!(sorted("VERSION", "DESCEND"), ["fo", "foo", "fop"]);
    assert_eq!(sorted("CREATE", "ASCEND"), ["foo", "fop", "fo"]);
    assert_eq!(sorted("CREATE", "DESCEND"), ["fo", "fop", "foo"]);
    assert_eq!(sorted("MODIFY", "ASCEND"), ["foo", "fop", "fo"]);
    assert_eq!(sorted("MODIFY", "DESCEND"), ["fo", "fop", "foo"]);
    assert_eq!(sorted("VALUE", "ASCEND"), ["fop", "fo", "foo"]);
    assert_eq!(sorted("VALUE", "DESCEND"), ["foo", "fo", "fop"]);

    // --sort-by alone sorts ascending.
    let by_value = ctl.json(&["get", "--prefix", "fo", "--sort-by", "VALUE"]);
    assert_eq!(by_value.keys(), ["fop", "fo", "foo"]);

    // The limit applies after sorting; count and more still describe the
    // whole range.
    let top = ctl.json(&[
        "get",
        "--prefix",
        "fo",
        "--sort-by",
        "MODIFY",
        "--order",
        "DESCEND",
        "--limit",
        "2",
    ]);
    assert_eq!(
        top.kvs(),
        [Kv::new("fo", "2", 5, 7, 3), Kv::new("fop", "1", 4, 4, 1)]
    );
    assert_eq!(top.count(), 3);
    assert!(top.more());
}

async fn delete(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    for key in ["a", "b1", "b2", "c", "d"] {
        ctl.json(&["put", key, key]);
    }
    // Revisions: a=2, b1=3, b2=4, c=5, d=6.

    let del = ctl.json(&["del", "a", "--prev-kv"]);
    assert_eq!(del.revision(), 7);
    assert_eq!(del.deleted(), 1);
    assert_eq!(del.prev_kvs(), [Kv::new("a", "a", 2, 2, 1)]);

    // One delete of many keys is one revision.
    let del = ctl.json(&["del", "--prefix", "b"]);
    assert_eq!(del.revision(), 8);
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs(), []);

    // Deleting nothing does not raise the revision.
    let del = ctl.json(&["del", "nothing"]);
    assert_eq!(del.revision(), 8);
    assert_eq!(del.deleted(), 0);
    assert_eq!(ctl.json(&["del", "a"]).deleted(), 0);

    // An explicit range end is exclusive.
    let del = ctl.json(&["del", "c", "d", "--prev-kv"]);
    assert_eq!(del.revision(), 9);
    assert_eq!(del.prev_kvs(), [Kv::new("c", "c", 5, 5, 1)]);
    assert_eq!(ctl.json(&["get", "--from-key", "a"]).keys(), ["d"]);

    // A delete ends the key's generation: a new put starts at version 1
    // with a new create revision.
    ctl.json(&["put", "a", "again"]);
    assert_eq!(
        ctl.json(&["get", "a"]).kvs(),
        [Kv::new("a", "again", 10, 10, 1)]
    );
    // History before the delete is still readable.
    assert_eq!(
        ctl.json(&["get", "a", "--rev", "6"]).kvs(),
        [Kv::new("a", "a", 2, 2, 1)]
    );
    assert_eq!(ctl.json(&["get", "a", "--rev", "7"]).kvs(), []);

    let del = ctl.json(&["del", "--from-key", "a"]);
    assert_eq!(del.revision(), 11);
    assert_eq!(del.deleted(), 2);
    assert_eq!(ctl.json(&["get", "--from-key", ""]).count(), 0);
}

async fn txn(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    ctl.json(&["put", "k", "1"]); // revision 2

    // Both compares hold: the success branch runs as one revision, and a
    // get after a put in the same txn sees the put.
    let txn = ctl.txn(
        "mod(\"k\") > \"0\"\nvalue(\"k\") = \"1\"\n\nput k 2\nput other x\nget k\n\nput k failed\n\n",
    );
    assert!(txn.succeeded());
    assert_eq!(txn.revision(), 3);
    let responses = txn.responses();
    let kinds: Vec<&str> = responses.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["ResponsePut", "ResponsePut", "ResponseRange"]);
    assert_eq!(responses[0].1.revision(), 3);
    assert_eq!(responses[2].1.kvs(), [Kv::new("k", "2", 2, 3, 2)]);
    assert_eq!(responses[2].1.revision(), 3);
    assert_eq!(
        ctl.json(&["get", "other"]).kvs(),
        [Kv::new("other", "x", 3, 3, 1)]
    );

    // The value compare fails now: the failure branch runs.
    let txn = ctl.txn("value(\"k\") = \"1\"\n\nput k never\n\nput k failed\nget k\n\n");
    assert!(!txn.succeeded());
    assert_eq!(txn.revision(), 4);
    let responses = txn.responses();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[1].0, "ResponseRange");
    assert_eq!(responses[1].1.kvs(), [Kv::new("k", "failed", 2, 4, 3)]);

    // Version and create revision compares, and a delete in a txn.
    let txn = ctl.txn(
        "version(\"k\") = \"3\"\ncreate(\"k\") = \"2\"\nmod(\"k\") < \"5\"\n\ndel other\n\n\n",
    );
    assert!(txn.succeeded());
    assert_eq!(txn.revision(), 5);
    let responses = txn.responses();
    assert_eq!(responses[0].0, "ResponseDeleteRange");
    assert_eq!(responses[0].1.deleted(), 1);

    // A compare on a missing key sees version 0.
    let txn = ctl.txn("version(\"other\") = \"0\"\n\nget k\n\n\n");
    assert!(txn.succeeded());
    // A read-only txn does not raise the revision.
    assert_eq!(txn.revision(), 5);

    // No compares at all: success.
    let txn = ctl.txn("\nput empty-compare yes\n\n\n");
    assert!(txn.succeeded());
    assert_eq!(txn.revision(), 6);

    // A failing txn whose failure branch is empty changes nothing.
    let txn = ctl.txn("value(\"k\") != \"failed\"\n\nput k no\n\n\n");
    assert!(!txn.succeeded());
    assert_eq!(txn.responses().len(), 0);
    assert_eq!(txn.revision(), 6);
    assert_eq!(
        ctl.json(&["get", "k"]).kvs(),
        [Kv::new("k", "failed", 2, 4, 3)]
    );
}

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

async fn compaction(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    for value in ["1", "2", "3", "4", "5"] {
        ctl.json(&["put", "a", value]);
    }
    // Revisions 2..=6 hold a=1..=5.

    assert_eq!(ctl.ok(&["compaction", "4"]), "compacted revision 4\n");
    let stderr = ctl.fails(&["get", "a", "--rev", "3"]);
    assert!(stderr.contains(COMPACTED), "{stderr}");
    // The compaction revision itself stays readable.
    assert_eq!(
        ctl.json(&["get", "a", "--rev", "4"]).kvs(),
        [Kv::new("a", "3", 2, 4, 3)]
    );
    let stderr = ctl.fails(&["get", "a", "--rev", "7"]);
    assert!(stderr.contains(FUTURE), "{stderr}");

    assert_eq!(
        ctl.ok(&["compaction", "--physical", "5"]),
        "compacted revision 5\n"
    );
    let stderr = ctl.fails(&["get", "a", "--rev", "4"]);
    assert!(stderr.contains(COMPACTED), "{stderr}");

    // Compacting again at or below the compacted revision, or beyond the
    // current one, is an error.
    let stderr = ctl.fails(&["compaction", "5"]);
    assert!(stderr.contains(COMPACTED), "{stderr}");
    let stderr = ctl.fails(&["compaction", "3"]);
    assert!(stderr.contains(COMPACTED), "{stderr}");
    let stderr = ctl.fails(&["compaction", "100"]);
    assert!(stderr.contains(FUTURE), "{stderr}");

    // Compaction keeps the latest state and the revision.
    let get = ctl.json(&["get", "a"]);
    assert_eq!(get.revision(), 6);
    assert_eq!(get.kvs(), [Kv::new("a", "5", 2, 6, 5)]);
    assert_eq!(ctl.ok(&["compaction", "6"]), "compacted revision 6\n");
    assert_eq!(ctl.json(&["put", "a", "6"]).revision(), 7);
}

async fn errors(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    let cases: [(&[&str], &str); 5] = [
        (&["put", "", "v"], "etcdserver: key is not provided"),
        (&["get", ""], "etcdserver: key is not provided"),
        // etcdctl reads --lease as hex.
        (
            &["put", "--lease=1234", "k", "v"],
            "etcdserver: requested lease not found",
        ),
        (&["put", "--ignore-value", "k"], "etcdserver: key not found"),
        (
            &["put", "--ignore-lease", "k", "v"],
            "etcdserver: key not found",
        ),
    ];
    for (args, message) in cases {
        let stderr = ctl.fails(args);
        assert!(
            stderr.contains(&format!("Error: {message}")),
            "etcdctl {args:?}: expected {message:?} in {stderr}"
        );
    }
    // None of them wrote anything.
    assert_eq!(ctl.json(&["get", "k"]).revision(), 1);
}

async fn survives_sigkill(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
        ctl.json(&["put", key, value]);
    }
    ctl.json(&["del", "b"]);
    // Revisions: a=1 at 2, b=2 at 3, a=3 at 4, b deleted at 5. Every
    // acknowledged write must survive a crash.

    node.kill_and_restart().await;

    let get = ctl.json(&["get", "--from-key", ""]);
    assert_eq!(get.revision(), 5);
    assert_eq!(get.kvs(), [Kv::new("a", "3", 2, 4, 2)]);
    assert_eq!(
        ctl.json(&["get", "b", "--rev", "4"]).kvs(),
        [Kv::new("b", "2", 3, 3, 1)]
    );
    // The revision carries on where it was.
    assert_eq!(ctl.json(&["put", "c", "4"]).revision(), 6);
}

async fn watch_prefix_from_a_revision(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    ctl.json(&["put", "k/a", "1"]); // 2
    ctl.json(&["put", "other", "1"]); // 3
    ctl.json(&["put", "k/b", "1"]); // 4
    ctl.json(&["put", "k/a", "2"]); // 5
    ctl.json(&["del", "k/b"]); // 6

    // History from revision 3, then live events, each PUT with its previous
    // value first when there is one.
    let mut watch = ctl.spawn(&["watch", "--prefix", "k/", "--rev", "3", "--prev-kv"]);
    assert_eq!(
        watch.lines(10),
        ["PUT", "k/b", "1", "PUT", "k/a", "1", "k/a", "2", "DELETE", "k/b"]
    );
    // The DELETE's previous value, then the empty value of the tombstone.
    assert_eq!(watch.lines(3), ["1", "k/b", ""]);
    ctl.json(&["put", "k/c", "3"]); // 7
    ctl.json(&["put", "other", "2"]); // 8: not under k/
    ctl.json(&["put", "k/a", "3"]); // 9
    assert_eq!(
        watch.lines(8),
        ["PUT", "k/c", "3", "PUT", "k/a", "2", "k/a", "3"]
    );
}

async fn watch_interactive_progress(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    ctl.json(&["put", "a", "1"]); // 2
    let mut watch = ctl.spawn(&["watch", "-i"]);
    watch.send("watch a");
    // A progress request reports the current revision once the watcher is
    // up to date.
    watch.send("progress");
    assert_eq!(watch.lines(1), ["progress notify: 2"]);
    ctl.json(&["put", "a", "2"]); // 3
    assert_eq!(watch.lines(3), ["PUT", "a", "2"]);
    watch.send("progress");
    assert_eq!(watch.lines(1), ["progress notify: 3"]);
}

/// etcdctl 3.5's `watch --progress-notify` (3.4 lacks the flag) with the
/// server's progress interval shortened.
#[tokio::test]
async fn watch_progress_notify() {
    let node = crate::support::CairnProc::start_with(&[
        "--experimental-watch-progress-notify-interval",
        "200ms",
    ])
    .await;
    let ctl = Etcdctl::v35(node.endpoint());
    ctl.json(&["put", "a", "1"]); // 2
    let mut watch = ctl.spawn(&["watch", "a", "--progress-notify"]);
    assert_eq!(watch.lines(1), ["progress notify: 2"]);
    ctl.json(&["put", "a", "2"]); // 3
    ctl.json(&["put", "b", "2"]); // 4: another key still moves progress
                                  // The event, then (once a tick passes without events) progress at 4.
    let lines = watch.lines(4);
    assert_eq!(lines[..3], ["PUT", "a", "2"]);
    assert!(
        ["progress notify: 3", "progress notify: 4"].contains(&lines[3].as_str()),
        "{lines:?}"
    );
}

async fn lease_lifecycle(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    let id = grant(&ctl, "60");
    ctl.ok(&["put", "k", "v", &format!("--lease={id}")]);
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.trim().ends_with("attached keys([k])"), "{ttl}");
    assert_eq!(
        ctl.ok(&["lease", "keep-alive", "--once", &id]).trim(),
        format!("lease {id} keepalived with TTL(60)")
    );
    assert!(ctl.ok(&["lease", "list"]).lines().any(|l| l == id));
    assert_eq!(
        ctl.ok(&["lease", "revoke", &id]).trim(),
        format!("lease {id} revoked")
    );
    assert_eq!(ctl.ok(&["get", "k"]), "");
    assert_eq!(
        ctl.ok(&["lease", "timetolive", &id]).trim(),
        format!("lease {id} already expired")
    );
    let err = ctl.fails(&["lease", "revoke", &id]);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
    let err = ctl.fails(&["lease", "grant", "9000000001"]);
    assert!(err.contains("etcdserver: too large lease TTL"), "{err}");
}

/// A key on a lease whose keep-alives stop vanishes after the TTL, and
/// not before; while kept alive, it stays.
async fn lease_expiry_and_keep_alive(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    let start = Instant::now();
    let id = grant(&ctl, "2");
    ctl.ok(&["put", "short", "v", &format!("--lease={id}")]);
    let gone = start.elapsed() + wait_gone(&ctl, "short", Duration::from_secs(10));
    assert!(gone >= Duration::from_secs(2), "expired after {gone:?}");

    let kept = grant(&ctl, "2");
    ctl.ok(&["put", "kept", "v", &format!("--lease={kept}")]);
    let keep_alive = ctl.spawn(&["lease", "keep-alive", &kept]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(ctl.ok(&["get", "kept", "--print-value-only"]).trim(), "v");
    let stopped = Instant::now();
    drop(keep_alive);
    let gone = stopped.elapsed() + wait_gone(&ctl, "kept", Duration::from_secs(10));
    assert!(
        gone <= Duration::from_secs(6),
        "expired {gone:?} after the last keep-alive"
    );
}

/// A restart (a new leader) neither drops a lease nor prolongs it beyond
/// its TTL plus an election.
async fn lease_survives_a_restart(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    let id = grant(&ctl, "6");
    ctl.ok(&["put", "k", "v", &format!("--lease={id}")]);
    let restarted = Instant::now();
    node.kill_and_restart().await;
    assert_eq!(ctl.ok(&["get", "k", "--print-value-only"]).trim(), "v");
    let gone = restarted.elapsed() + wait_gone(&ctl, "k", Duration::from_secs(20));
    // At most the full TTL again, plus an election timeout and a tick.
    assert!(
        gone <= Duration::from_secs(10),
        "expired {gone:?} after the restart"
    );
}

/// Remaining TTLs are checkpointed through Raft: after a restart a lease
/// resumes from its checkpoint, not from a fresh TTL (etcd #9888).
#[tokio::test]
async fn lease_checkpoint_survives_a_restart() {
    let mut node = crate::support::CairnProc::start_with(&[
        "--experimental-lease-checkpoint-interval",
        "500ms",
    ])
    .await;
    let ctl = ctl(&node);
    let id = grant(&ctl, "20");
    // Several checkpoints pass.
    std::thread::sleep(Duration::from_secs(6));
    node.kill_and_restart().await;
    let ttl = ctl.ok(&["lease", "timetolive", &id]);
    let remaining: u64 = ttl
        .split("remaining(")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no remaining TTL in {ttl:?}"));
    // 20 s granted, about 6 s spent, at most one checkpoint interval and an
    // election timeout added back: well below a fresh 20.
    assert!((10..=17).contains(&remaining), "{ttl}");
}

async fn lock_and_elect(node: &mut impl ServerProc) {
    let ctl = ctl(node);
    // With a command, the lock is held while it runs.
    assert_eq!(ctl.ok(&["lock", "job", "echo", "held"]).trim(), "held");

    let mut first = ctl.spawn(&["lock", "--ttl", "2", "job"]);
    let key = first.lines(1).remove(0);
    assert!(key.starts_with("job/"), "{key}");
    let mut second = ctl.spawn(&["lock", "job"]);
    assert_eq!(second.try_line(Duration::from_secs(1)), None, "two holders");
    // SIGKILL: the first holder's session ends when its lease expires.
    drop(first);
    let next = second.lines(1).remove(0);
    assert!(next.starts_with("job/") && next != key, "{next}");

    let mut leader = ctl.spawn(&["elect", "e", "p1"]);
    let lines = leader.lines(2);
    assert!(lines[0].starts_with("e/"), "{lines:?}");
    assert_eq!(lines[1], "p1");
    let mut observer = ctl.spawn(&["elect", "-l", "e"]);
    assert_eq!(observer.lines(2), lines);
    let mut candidate = ctl.spawn(&["elect", "e", "p2"]);
    assert_eq!(
        candidate.try_line(Duration::from_secs(1)),
        None,
        "two leaders"
    );
}
