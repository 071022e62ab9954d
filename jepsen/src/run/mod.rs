//! The runner: a cluster, clients, faults, recovery, checks, results.
//!
//! 1. Start `--nodes` members of the `cairn` binary ([`cluster`]).
//! 2. Run the workload's clients ([`client`]) for `--time-limit` seconds
//!    while the nemesis ([`nemesis`]) plays the seed's fault schedule.
//! 3. Heal every fault (rules flushed, members continued and restarted) and
//!    wait for an agreed leader and a successful write: a cluster that does
//!    not recover is itself a failure.
//! 4. Read every key linearizably (the final reads join the history), and
//!    compare every member's full serializable range and HashKV at one revision.
//! 5. Check, and write the results dir: `history.jsonl`, `faults.json`,
//!    `report.json`, `summary.txt` and the members' logs.

mod append;
mod cleanup;
mod client;
mod cluster;
mod lease;
mod lock;
mod nemesis;
mod net;
mod register;
mod watcher;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};
use serde::Serialize;

pub use nemesis::Family;

use crate::checks::{self, Anomaly, Final};
use crate::history::{Call, Micro, Op, Outcome, Return};
use crate::rng::Rng;
use crate::{elle, leases, linear, locks, watchers};
use cluster::Cluster;
use net::Firewall;

/// How long the cluster has to recover after the faults are healed.
const RECOVERY: Duration = Duration::from_secs(30);

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Per-key get, put and CAS, checked for linearizability.
    Register,
    /// Multi-key txns appending to lists, checked for strict
    /// serializability by dependency cycles.
    Append,
    /// The register workload's ops under `w/`, with watchers that
    /// reconnect across members; the streams are checked against the KV
    /// history.
    Watch,
    /// Keys attached to leases, some kept alive, some abandoned; keys must
    /// vanish only after expiry.
    Lease,
    /// Sessions contending for one lock through the Lock service; mutual
    /// exclusion and fencing by the lock key's create_revision.
    Lock,
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// The `cairn` binary.
    pub cairn: PathBuf,
    /// 3 or 5.
    pub nodes: usize,
    /// How long the clients run.
    pub time_limit: Duration,
    /// The workload.
    pub workload: Workload,
    /// The fault families, empty for none.
    pub nemesis: Vec<Family>,
    /// Seeds the fault schedule and the clients' choices.
    pub seed: u64,
    /// Concurrent clients.
    pub concurrency: usize,
    /// The last octet of member 0's address.
    pub first_host: u8,
    /// Where the results go; created.
    pub results: PathBuf,
}

/// The report of a run, `report.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether no anomaly was found.
    pub valid: bool,
    /// What ran.
    pub options: Options,
    /// The command line that replays it.
    pub command: String,
    /// Ops by outcome.
    pub ops: BTreeMap<&'static str, usize>,
    /// Errors by message, for the indeterminate and failed ops.
    pub errors: BTreeMap<String, usize>,
    /// The faults, as applied.
    pub faults: Vec<nemesis::Applied>,
    /// Why the cluster did not recover after healing, if it did not.
    pub recovery_failure: Option<String>,
    /// The linearizability search (register).
    pub linearizability: linear::Report,
    /// The dependency-cycle search (append).
    pub serializability: elle::Report,
    /// Acknowledged writes missing at the end, and phantom values.
    pub lost_writes: Vec<Anomaly>,
    /// Revisions going backwards, per client and in real time.
    pub revisions: Vec<Anomaly>,
    /// Values seen with two mod_revisions.
    pub value_revisions: Vec<Anomaly>,
    /// Members whose final state differs from the leader's, with why.
    pub divergence: Vec<String>,
    /// The revision the members' states were compared at.
    pub compared_at: Option<i64>,
    /// The watchers' streams against the KV history (watch).
    pub watch: watchers::Report,
    /// Keys against their leases (lease).
    pub leases: leases::Report,
    /// Mutual exclusion and fencing (lock).
    pub locks: locks::Report,
    /// Lock sessions that failed, by error (lock).
    pub lock_failures: BTreeMap<String, usize>,
}

/// Runs everything and writes the results.
///
/// # Errors
/// A harness failure (cannot start the cluster, nft refuses, cannot write
/// results); anomalies are in the report, not errors.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    cleanup::install();
    std::fs::create_dir_all(&options.results)
        .with_context(|| format!("create {}", options.results.display()))?;
    let firewall = Firewall::new()?;
    let nodes_dir = options.results.join("nodes");
    eprintln!(
        "cairn-jepsen: starting {} members of {}",
        options.nodes,
        options.cairn.display()
    );
    let mut cluster = Cluster::start(
        &options.cairn,
        options.nodes,
        options.first_host,
        &nodes_dir,
    )
    .await?;
    for m in &cluster.members {
        eprintln!("cairn-jepsen: {} at {}", m.name, m.endpoint());
    }
    let schedule = nemesis::schedule(
        &options.nemesis,
        options.nodes,
        options.time_limit,
        options.seed,
    );

    let start = Instant::now();
    let deadline = start + options.time_limit;
    let channels = cluster
        .members
        .iter()
        .map(cluster::Member::channel)
        .collect();
    let ctx = Arc::new(client::Ctx::new(start, channels, options.concurrency));
    let mut rng = Rng::new(options.seed);
    let mut workers = Vec::new();
    let lease_log = Arc::new(lease::Log::default());
    let lock_log = Arc::new(lock::Log::default());
    for id in 0..options.concurrency {
        workers.push(match options.workload {
            Workload::Lease => tokio::spawn(lease::worker(
                ctx.clone(),
                lease_log.clone(),
                id,
                rng.fork(),
                deadline.into(),
            )),
            Workload::Lock => tokio::spawn(lock::worker(
                ctx.clone(),
                lock_log.clone(),
                id,
                rng.fork(),
                deadline.into(),
            )),
            w => tokio::spawn(client::worker(ctx.clone(), w, id, rng.fork(), deadline)),
        });
    }
    // The watchers run until told the head revision, after recovery.
    let (stop_watchers, stop) = tokio::sync::watch::channel(None);
    let mut watcher_tasks = Vec::new();
    if options.workload == Workload::Watch {
        for id in 0..WATCHERS {
            let channels = cluster
                .members
                .iter()
                .map(cluster::Member::channel)
                .collect();
            let task = watcher::run(channels, id, rng.fork(), stop.clone());
            watcher_tasks.push(tokio::spawn(task));
        }
    }

    eprintln!(
        "cairn-jepsen: running {:?} for {:?} with {} fault(s) scheduled",
        options.workload,
        options.time_limit,
        schedule.len()
    );
    let mut faults = Vec::new();
    for fault in &schedule {
        tokio::time::sleep_until((start + Duration::from_millis(fault.start_ms)).into()).await;
        // Slow heals (membership changes retry) can push the schedule past
        // the clients' end; a fault without load tests nothing.
        if Instant::now() + Duration::from_millis(fault.duration_ms) > deadline {
            eprintln!("cairn-jepsen: the schedule slipped past the time limit; no more faults");
            break;
        }
        let began = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let applied = nemesis::start(fault, &mut cluster, &firewall, began).await?;
        eprintln!(
            "cairn-jepsen: {:>6} ms {:?} {:?} {:?}",
            began, fault.kind, applied.targets, applied.sides
        );
        tokio::time::sleep(Duration::from_millis(fault.duration_ms)).await;
        let mut applied = applied;
        applied.crashed = nemesis::heal(&mut cluster, &firewall).await?;
        if fault.kind.failpoint().is_some() && applied.crashed.is_empty() {
            applied.skipped = Some(
                "no crash: a cairn without --features failpoints, or the point was not reached"
                    .into(),
            );
        }
        faults.push(applied);
    }
    for worker in workers {
        worker.await.context("a client task failed")?;
    }
    nemesis::heal(&mut cluster, &firewall).await?;
    eprintln!("cairn-jepsen: healed; waiting for recovery");

    let recovery_failure = recover(&mut cluster).await.err().map(|e| format!("{e:#}"));
    let mut history = ctx.take_history();
    let mut at_end = Final::new();
    let mut lists = BTreeMap::new();
    let mut divergence = Vec::new();
    let mut compared_at = None;
    if recovery_failure.is_none() {
        (at_end, lists) = final_reads(&ctx, &mut cluster, &history).await?;
        history.extend(ctx.take_history());
        match compare_members(&mut cluster).await {
            Ok((revision, diffs)) => {
                compared_at = Some(revision);
                divergence = diffs;
            }
            Err(e) => divergence.push(format!("could not compare: {e:#}")),
        }
    }
    // The lease workload's ops, counted with the others'.
    let mut lease_ops = BTreeMap::new();
    let mut lease_errors = BTreeMap::new();
    let leases = if options.workload == Workload::Lease {
        let remaining = match (&recovery_failure, cluster.await_leader(RECOVERY).await) {
            (None, Ok(leader)) => {
                eprintln!("cairn-jepsen: waiting for every lease to expire");
                Some(lease::remaining(&ctx, &lease_log, leader, LEASE_PATIENCE).await)
            }
            _ => None,
        };
        let ops = lease_log.take();
        write_jsonl(&options.results.join("leases.jsonl"), &ops)?;
        for op in &ops {
            if let leases::Outcome::Fail { error } | leases::Outcome::Info { error } = &op.outcome {
                *lease_errors.entry(error.clone()).or_insert(0) += 1;
            }
            let kind = match op.outcome {
                leases::Outcome::Fail { .. } => "fail",
                leases::Outcome::Info { .. } => "info",
                _ => "ok",
            };
            *lease_ops.entry(kind).or_insert(0) += 1;
        }
        leases::check(&ops, remaining.as_deref())
    } else {
        leases::Report::default()
    };
    let holds = lock_log.take();
    if options.workload == Workload::Lock {
        write_jsonl(&options.results.join("holds.jsonl"), &holds)?;
    }
    let locks = locks::check(&holds);
    let lock_failures =
        std::mem::take(&mut *lock_log.failed.lock().unwrap_or_else(|p| p.into_inner()));
    let watch = if options.workload == Workload::Watch {
        check_watchers(
            &mut cluster,
            compared_at,
            &history,
            stop_watchers,
            watcher_tasks,
        )
        .await?
    } else {
        watchers::Report::default()
    };
    history.sort_by_key(|op| (op.invoke, op.complete));
    drop(cluster);
    drop(firewall);

    let linearizability = linear::check(&history);
    let serializability = elle::check(&history, recovery_failure.is_none().then_some(&lists));
    let lost_writes = if recovery_failure.is_none() {
        checks::lost_writes(&history, &at_end)
    } else {
        Vec::new()
    };
    let revisions = checks::revisions(&history);
    let value_revisions = checks::value_revisions(&history);
    let mut ops = lease_ops;
    let mut errors = lease_errors;
    for op in &history {
        let (kind, error) = match &op.outcome {
            Outcome::Ok { .. } => ("ok", None),
            Outcome::Fail { error } => ("fail", Some(error)),
            Outcome::Info { error } => ("info", Some(error)),
        };
        *ops.entry(kind).or_insert(0) += 1;
        if let Some(error) = error {
            *errors.entry(error.clone()).or_insert(0) += 1;
        }
    }
    let valid = recovery_failure.is_none()
        && linearizability.valid()
        && serializability.valid()
        && lost_writes.is_empty()
        && revisions.is_empty()
        && value_revisions.is_empty()
        && divergence.is_empty()
        && watch.valid()
        && leases.valid()
        && locks.valid();
    let report = Report {
        valid,
        command: command(&options),
        options,
        ops,
        errors,
        faults,
        recovery_failure,
        linearizability,
        serializability,
        lost_writes,
        revisions,
        value_revisions,
        divergence,
        compared_at,
        watch,
        leases,
        locks,
        lock_failures,
    };
    write_results(&report, &history)?;
    Ok(report)
}

/// How long abandoned leases' keys may linger after every TTL passed:
/// a new leader refreshes every lease to its full TTL.
const LEASE_PATIENCE: Duration = Duration::from_secs(15);

/// Writes one JSON value a line.
fn write_jsonl<T: Serialize>(path: &std::path::Path, items: &[T]) -> anyhow::Result<()> {
    let mut lines = String::new();
    for item in items {
        lines.push_str(&serde_json::to_string(item)?);
        lines.push('\n');
    }
    std::fs::write(path, lines).with_context(|| format!("write {}", path.display()))
}

/// Watchers in the watch workload.
const WATCHERS: usize = 4;

/// Tells the watchers the head, collects them, reads the reference from
/// the leader, and checks. Without a head (no recovery) the watchers are
/// checked against nothing and the run is already invalid.
async fn check_watchers(
    cluster: &mut Cluster,
    head: Option<i64>,
    history: &[Op],
    stop: tokio::sync::watch::Sender<Option<i64>>,
    tasks: Vec<tokio::task::JoinHandle<watchers::Watcher>>,
) -> anyhow::Result<watchers::Report> {
    let Some(head) = head else {
        return Ok(watchers::Report::default());
    };
    eprintln!("cairn-jepsen: watchers catching up to revision {head}");
    let _ = stop.send(Some(head));
    let mut collected = Vec::new();
    for task in tasks {
        collected.push(task.await.context("a watcher task failed")?);
    }
    let leader = cluster.await_leader(RECOVERY).await?;
    let reference = watcher::reference(cluster.members[leader].channel(), head);
    let reference = tokio::time::timeout(watcher::CATCH_UP * 2, reference)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
    match reference {
        Ok(reference) => Ok(watchers::check(history, &reference, &collected)),
        Err(e) => Ok(watchers::Report {
            anomalies: vec![watchers::Anomaly::Unusable {
                why: format!("reading the reference: {e:#}"),
            }],
            ..watchers::Report::default()
        }),
    }
}

/// Waits for an agreed leader and a successful write through it.
async fn recover(cluster: &mut Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let why = match cluster.await_leader(RECOVERY).await {
            Ok(leader) => {
                let mut kv = cluster.members[leader].kv();
                let put = kv.put(PutRequest {
                    key: b"jepsen/recovered".to_vec(),
                    value: b"1".to_vec(),
                    ..PutRequest::default()
                });
                match tokio::time::timeout(client::OP_TIMEOUT, put).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(status)) => format!("write failed: {}", status.message()),
                    Err(_) => "write timed out".into(),
                }
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            anyhow::bail!("not recovered within {RECOVERY:?} of healing: {why}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads every key of the history through the leader, linearizably: the
/// registers (recorded as reads in the history) and the lists.
async fn final_reads(
    ctx: &client::Ctx,
    cluster: &mut Cluster,
    history: &[Op],
) -> anyhow::Result<(Final, BTreeMap<String, Vec<u64>>)> {
    let mut lists = BTreeMap::new();
    let list_keys: BTreeSet<String> = history
        .iter()
        .filter_map(|op| match &op.call {
            Call::Txn { ops } => Some(ops),
            _ => None,
        })
        .flatten()
        .map(|m| match m {
            Micro::Read { key, .. } | Micro::Append { key, .. } => key.clone(),
        })
        .collect();
    for key in list_keys {
        let mut tries = 0;
        loop {
            let leader = cluster.await_leader(RECOVERY).await?;
            let mut kv = cluster.members[leader].kv();
            let read = kv.range(RangeRequest {
                key: key.clone().into_bytes(),
                ..RangeRequest::default()
            });
            match tokio::time::timeout(client::OP_TIMEOUT, read).await {
                Ok(Ok(resp)) => {
                    let list = match resp.into_inner().kvs.first() {
                        Some(kv) => append::parse_list(&kv.value)?,
                        None => Vec::new(),
                    };
                    lists.insert(key, list);
                    break;
                }
                _ if tries < 20 => tries += 1,
                other => anyhow::bail!("final read of {key} failed 20 times: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let keys: BTreeSet<String> = history
        .iter()
        .filter_map(|op| op.call.key().map(str::to_owned))
        .collect();
    let mut at_end = Final::new();
    let process = u64::MAX / 2;
    for key in keys {
        let mut tries = 0;
        loop {
            let leader = cluster.await_leader(RECOVERY).await?;
            let op = client::invoke(ctx, process, leader, Call::Read { key: key.clone() }).await;
            if let Outcome::Ok {
                result: Return::Read { value },
                ..
            } = op.outcome
            {
                at_end.insert(key, value);
                break;
            }
            tries += 1;
            if tries > 20 {
                anyhow::bail!("final read of {key} failed 20 times: {:?}", op.outcome);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok((at_end, lists))
}

/// Compares every member's whole keyspace at the leader's current revision,
/// read serializably from each, and then their HashKV at that revision
/// (members whose compaction stands at different revisions hash different
/// spans, so those are compared by the keyspace only, as etcd's checker
/// does). Returns the revision and the differences.
async fn compare_members(cluster: &mut Cluster) -> anyhow::Result<(i64, Vec<String>)> {
    let leader = cluster.await_leader(RECOVERY).await?;
    let all = |revision: i64, serializable: bool| RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        serializable,
        ..RangeRequest::default()
    };
    let head = cluster.members[leader]
        .kv()
        .range(all(0, false))
        .await?
        .into_inner();
    let revision = register::revision(head.header);
    let mut states = Vec::new();
    for member in &cluster.members {
        let deadline = Instant::now() + RECOVERY;
        let state = loop {
            let mut kv = member.kv();
            let answer =
                tokio::time::timeout(client::OP_TIMEOUT, kv.range(all(revision, true))).await;
            match answer {
                Ok(Ok(resp)) => {
                    let kvs: Vec<_> = resp
                        .into_inner()
                        .kvs
                        .into_iter()
                        .map(|kv| {
                            (
                                kv.key,
                                kv.value,
                                kv.create_revision,
                                kv.mod_revision,
                                kv.version,
                                kv.lease,
                            )
                        })
                        .collect();
                    break Ok(kvs);
                }
                // Not caught up yet ("future revision") or briefly away.
                Ok(Err(_)) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Err(status)) => break Err(format!("{}: {}", member.name, status.message())),
                Err(_) => break Err(format!("{}: timed out", member.name)),
            }
        };
        states.push((member.name.clone(), state));
    }
    let mut diffs = Vec::new();
    let mut hashes = Vec::new();
    for member in &cluster.members {
        let mut maintenance = MaintenanceClient::new(member.channel());
        let request = HashKvRequest { revision };
        match tokio::time::timeout(client::OP_TIMEOUT, maintenance.hash_kv(request)).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                hashes.push((member.name.clone(), answer.compact_revision, answer.hash));
            }
            Ok(Err(status)) => diffs.push(format!("{}: HashKV: {}", member.name, status.message())),
            Err(_) => diffs.push(format!("{}: HashKV timed out", member.name)),
        }
    }
    for (name, compacted, hash) in &hashes {
        let same_span = hashes.iter().find(|(_, c, _)| c == compacted);
        if let Some((first, _, expected)) = same_span.filter(|(_, _, h)| h != hash) {
            diffs.push(format!(
                "{name}'s HashKV at revision {revision} is {hash:#x}, {first}'s {expected:#x}"
            ));
        }
    }
    let reference = states[leader].1.clone();
    for (name, state) in &states {
        match (state, &reference) {
            (Err(e), _) => diffs.push(e.clone()),
            (Ok(s), Ok(r)) if s != r => {
                let differing = s.iter().zip(r).find(|(a, b)| a != b);
                diffs.push(format!(
                    "{name} differs from the leader {} at revision {revision}: {} keys vs {}; first difference {:?}",
                    cluster.members[leader].name,
                    s.len(),
                    r.len(),
                    differing.map(|(a, b)| (String::from_utf8_lossy(&a.0).into_owned(), a.3, b.3))
                ));
            }
            _ => {}
        }
    }
    Ok((revision, diffs))
}

/// The command line that replays `options`.
fn command(options: &Options) -> String {
    let nemesis: Vec<String> = options
        .nemesis
        .iter()
        .map(|f| format!("{f:?}").to_lowercase())
        .collect();
    format!(
        "cairn-jepsen run --cairn {} --nodes {} --time-limit {} --workload {} --nemesis {} --seed {} --concurrency {} --first-host {}",
        options.cairn.display(),
        options.nodes,
        options.time_limit.as_secs(),
        format!("{:?}", options.workload).to_lowercase(),
        if nemesis.is_empty() { "none".into() } else { nemesis.join(",") },
        options.seed,
        options.concurrency,
        options.first_host
    )
}

/// Writes history.jsonl, faults.json, report.json and summary.txt.
fn write_results(report: &Report, history: &[Op]) -> anyhow::Result<()> {
    let dir = &report.options.results;
    let mut lines = String::new();
    for op in history {
        lines.push_str(&serde_json::to_string(op)?);
        lines.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), lines)?;
    std::fs::write(
        dir.join("faults.json"),
        serde_json::to_string_pretty(&report.faults)?,
    )?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("summary.txt"), summary(report, history))?;
    Ok(())
}

/// The human summary.
pub fn summary(report: &Report, history: &[Op]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}",
        if report.valid {
            "VALID"
        } else {
            "ANOMALY FOUND"
        }
    );
    let _ = writeln!(s, "replay: {}", report.command);
    let _ = writeln!(s, "ops: {:?}", report.ops);
    let mut errors: Vec<_> = report.errors.iter().collect();
    errors.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    for (e, n) in errors.iter().take(8) {
        let _ = writeln!(s, "  {n:>6} × {e}");
    }
    let _ = writeln!(s, "faults: {}", report.faults.len());
    for f in &report.faults {
        let _ = writeln!(
            s,
            "  {:>6} ms +{} ms {:?} targets {:?} sides {:?}{}{}",
            f.began_ms,
            f.fault.duration_ms,
            f.fault.kind,
            f.targets,
            f.sides,
            if f.crashed.is_empty() {
                String::new()
            } else {
                format!(" crashed {:?}", f.crashed)
            },
            f.skipped
                .as_deref()
                .map(|w| format!(" (skipped: {w})"))
                .unwrap_or_default()
        );
    }
    if let Some(why) = &report.recovery_failure {
        let _ = writeln!(s, "NO RECOVERY: {why}");
    }
    let l = &report.linearizability;
    let _ = writeln!(
        s,
        "linearizability: {} keys, {} ops, {} anomalous, {} unknown (search limit)",
        l.keys,
        l.ops,
        l.anomalies.len(),
        l.unknown.len()
    );
    for (key, verdict) in l.anomalies.iter().take(5) {
        let _ = writeln!(s, "  key {key}: {verdict:?}");
        if let linear::Verdict::Anomaly {
            prefix_tail, stuck, ..
        } = verdict
        {
            for &i in prefix_tail.iter().chain([stuck]) {
                if let Some(op) = history.get(i) {
                    let _ = writeln!(
                        s,
                        "    #{i} {}",
                        serde_json::to_string(op).unwrap_or_default()
                    );
                }
            }
        }
    }
    let e = &report.serializability;
    let _ = writeln!(
        s,
        "serializability: {} txns, {} edges, {} anomalies",
        e.txns,
        e.edges,
        e.anomalies.len()
    );
    for a in e.anomalies.iter().take(5) {
        let _ = writeln!(s, "  {a:?}");
        if let elle::Anomaly::Cycle { steps } = a {
            for (i, dep) in steps {
                if let Some(op) = history.get(*i) {
                    let _ = writeln!(
                        s,
                        "    #{i} -{dep:?}-> {}",
                        serde_json::to_string(op).unwrap_or_default()
                    );
                }
            }
        }
    }
    let w = &report.watch;
    if w.watchers > 0 || !w.anomalies.is_empty() {
        let _ = writeln!(
            s,
            "watch: {} watchers ({} caught up), {} segments, {} events, {} progress, head {}, {} anomalies",
            w.watchers,
            w.caught_up,
            w.segments,
            w.events,
            w.progress,
            w.head,
            w.anomalies.len()
        );
        for a in w.anomalies.iter().take(10) {
            let _ = writeln!(s, "  {a:?}");
        }
    }
    let l = &report.leases;
    if l.leases > 0 || !l.anomalies.is_empty() {
        let _ = writeln!(
            s,
            "leases: {} granted, {} keys, {} seen expiring, {} keepalives, {} anomalies",
            l.leases,
            l.keys,
            l.expired,
            l.keepalives,
            l.anomalies.len()
        );
        for a in l.anomalies.iter().take(10) {
            let _ = writeln!(s, "  {a:?}");
        }
    }
    let k = &report.locks;
    if k.holds > 0 || !k.anomalies.is_empty() {
        let _ = writeln!(
            s,
            "locks: {} holds, {} confirmed, {} anomalies; failed sessions {:?}",
            k.holds,
            k.confirmed,
            k.anomalies.len(),
            report.lock_failures
        );
        for a in k.anomalies.iter().take(10) {
            let _ = writeln!(s, "  {a:?}");
        }
    }
    for (name, list) in [
        ("lost writes", &report.lost_writes),
        ("revisions backwards", &report.revisions),
        ("values with two revisions", &report.value_revisions),
    ] {
        let _ = writeln!(s, "{name}: {}", list.len());
        for a in list.iter().take(5) {
            let _ = writeln!(s, "  {a:?}");
        }
    }
    let _ = writeln!(
        s,
        "members equal at revision {:?}: {}",
        report.compared_at,
        if report.divergence.is_empty() {
            "yes"
        } else {
            "NO"
        }
    );
    for d in &report.divergence {
        let _ = writeln!(s, "  {d}");
    }
    s
}
