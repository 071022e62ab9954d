//! `cairnctl lease keep-alive`: it keeps a lease alive past its TTL while
//! it runs, printing etcdctl's line per renewal; once it is killed the
//! lease expires; a missing lease, or one revoked under it, is an error.

use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_client::{Get, Put};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::support::{self, cairnctl, run_program, ETCDCTL35};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_outlives_the_ttl_until_killed() {
    let root = tempfile::tempdir().expect("temp dir");
    let members = support::reserve(5, 1, root.path(), "l");
    let node = support::start_all(&members, "lease").await;
    let client = support::client(&members).await;
    let ep = members[0].client_url();

    let granted = cairnctl(&["--endpoints", &ep, "lease", "grant", "2"])
        .await
        .ok();
    let hex = granted
        .strip_prefix("lease ")
        .and_then(|r| r.split_once(' '))
        .map(|(id, _)| id.to_owned())
        .expect("lease ID");
    assert_eq!(granted, format!("lease {hex} granted with TTL(2s)\n"));
    assert_eq!(hex.len(), 16, "16 hex digits, as etcdctl: {hex}");
    let id = cairn_client::LeaseId::new(i64::from_str_radix(&hex, 16).expect("hex"));
    client
        .put(Put::new("held", "v").with_lease(id))
        .await
        .expect("put");
    let line = format!("lease {hex} keepalived with TTL(2)");

    // --once, and etcdctl's --once on the same server, print the same line.
    let once = cairnctl(&["--endpoints", &ep, "lease", "keep-alive", "--once", &hex])
        .await
        .ok();
    assert_eq!(once, format!("{line}\n"));
    let theirs = run_program(
        ETCDCTL35,
        &["--endpoints", &ep, "lease", "keep-alive", "--once", &hex],
        "",
    )
    .await;
    assert_eq!((theirs.code, theirs.stdout.as_str()), (0, once.as_str()));

    // Kept alive for 3 TTLs: a line per renewal, the key still there.
    let (mut keeper, mut lines) = keep_alive(&ep, &hex);
    let started = Instant::now();
    let mut renewals = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let next = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
            .await
            .expect("a renewal within the TTL")
            .expect("read")
            .expect("still running");
        assert_eq!(next, line);
        renewals += 1;
    }
    // etcdctl renews every TTL/3: about 9 renewals in 6 s.
    assert!(renewals >= 6, "{renewals} renewals in 6 s");
    let ttl = client
        .lease_time_to_live(id, false)
        .await
        .expect("ttl")
        .expect("alive past 3 TTLs");
    assert!(ttl.ttl > 0, "{ttl:?}");
    let held = client.get(Get::one("held")).await.expect("get");
    assert_eq!(held.kvs.len(), 1, "the leased key outlived its TTL");

    // Killed: the lease expires within its TTL (plus the lessor's tick).
    keeper.start_kill().expect("killed");
    keeper.wait().await.expect("reaped");
    let killed = Instant::now();
    support::eventually(
        "the lease expires",
        Duration::from_secs(10),
        async || match client.lease_time_to_live(id, false).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let gone = client.get(Get::one("held")).await.expect("get");
    assert!(gone.kvs.is_empty(), "its key went with it");

    // A missing lease: one line, non-zero, with or without --once.
    for args in [
        vec!["lease", "keep-alive", "--once", &hex],
        vec!["lease", "keep-alive", &hex],
    ] {
        let mut all = vec!["--endpoints", ep.as_str()];
        all.extend(args);
        let r = cairnctl(&all).await;
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (
                1,
                "",
                format!("Error: lease {hex} not found (expired or revoked)\n").as_str()
            ),
            "{all:?}"
        );
    }

    // Revoked while kept alive: it says so and exits non-zero.
    let other = client.lease_grant(2, None).await.expect("grant").id;
    let other_hex = format!("{:016x}", other.get());
    let (mut keeper, mut lines) = keep_alive(&ep, &other_hex);
    let first = lines.next_line().await.expect("read").expect("a renewal");
    assert_eq!(first, format!("lease {other_hex} keepalived with TTL(2)"));
    client.lease_revoke(other).await.expect("revoke");
    let status = tokio::time::timeout(Duration::from_secs(5), keeper.wait())
        .await
        .expect("exits once the lease is gone")
        .expect("reaped");
    let mut stderr = String::new();
    keeper
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .await
        .expect("read");
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr,
        format!("Error: lease {other_hex} expired or revoked\n")
    );

    drop(client);
    for n in node {
        n.shutdown().await;
    }
}

/// `cairnctl lease keep-alive` of lease `hex`, running, and its stdout's
/// lines.
fn keep_alive(
    ep: &str,
    hex: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut keeper = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["--endpoints", ep, "lease", "keep-alive", hex])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cairnctl runs");
    let lines = BufReader::new(keeper.stdout.take().expect("piped")).lines();
    (keeper, lines)
}
