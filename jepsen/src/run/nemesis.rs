//! Faults: what the nemesis does, and when.
//!
//! The schedule is drawn from the seed before the run starts, so the same
//! seed gives the same faults at the same offsets. Which member "the
//! leader" is can only be known when the fault starts; everything else
//! (the kind, the timing, the random choice of members) is in the
//! schedule.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::cluster::{Cluster, Membership};
use super::net::Firewall;
use crate::rng::Rng;

/// A family of faults, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// kill -9 and restart: a random member, the leader, or a majority.
    Kill,
    /// SIGSTOP and SIGCONT: a random member or the leader.
    Pause,
    /// nftables partitions: halves, an isolated leader, a majority ring,
    /// a bridge.
    Partition,
    /// Membership changes under load: remove a member and add it back
    /// (fresh data dir), or add it back as a learner and promote it.
    Membership,
    /// kill -9 and restart at once (within the election timeout, so a
    /// restarted leader may come back as leader of the same term): the
    /// leader or a random member.
    Restart,
    /// Restart a member with a storage crash point armed (needs a `cairn`
    /// built with `--features failpoints`): it aborts before or after an
    /// apply or a log flush.
    Failpoint,
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SIGKILL one random member, restart it when the fault ends.
    KillRandom,
    /// SIGKILL the leader.
    KillLeader,
    /// SIGKILL a random majority.
    KillMajority,
    /// SIGSTOP one random member.
    PauseRandom,
    /// SIGSTOP the leader.
    PauseLeader,
    /// Two random halves, the smaller without a quorum.
    PartitionHalves,
    /// The leader alone on one side.
    PartitionLeader,
    /// Each member sees its two ring neighbours only: each has a majority,
    /// no two the same one (5 members; with 3 it cuts nothing).
    PartitionRing,
    /// Two halves joined by one member that sees both.
    PartitionBridge,
    /// MemberRemove a random member (killed, data wiped); MemberAdd it
    /// back with a fresh data dir when the fault ends.
    MemberRemoveReadd,
    /// MemberRemove a random member, MemberAdd it back at once as a learner
    /// (fresh data dir); MemberPromote it when the fault ends.
    MemberLearnerPromote,
    /// SIGKILL the leader and start it again at once.
    RestartLeader,
    /// SIGKILL a random member and start it again at once.
    RestartRandom,
    /// Crash a random member before it applies a batch.
    CrashBeforeApply,
    /// Crash it after applying a batch, before answering openraft.
    CrashAfterApply,
    /// Crash it before the log flush's fsync.
    CrashBeforeFlush,
    /// Crash it after the fsync, before the appends are acknowledged.
    CrashAfterFlush,
}

impl Kind {
    /// The failpoint a crash kind arms.
    pub fn failpoint(self) -> Option<&'static str> {
        Some(match self {
            Kind::CrashBeforeApply => "raft-storage::before-apply",
            Kind::CrashAfterApply => "raft-storage::after-apply",
            Kind::CrashBeforeFlush => "raft-storage::before-log-flush",
            Kind::CrashAfterFlush => "raft-storage::after-log-flush",
            _ => return None,
        })
    }
}

impl Kind {
    fn of(family: Family) -> &'static [Kind] {
        match family {
            Family::Kill => &[Kind::KillRandom, Kind::KillLeader, Kind::KillMajority],
            Family::Pause => &[Kind::PauseRandom, Kind::PauseLeader],
            Family::Partition => &[
                Kind::PartitionHalves,
                Kind::PartitionLeader,
                Kind::PartitionRing,
                Kind::PartitionBridge,
            ],
            Family::Membership => &[Kind::MemberRemoveReadd, Kind::MemberLearnerPromote],
            Family::Restart => &[Kind::RestartLeader, Kind::RestartRandom],
            Family::Failpoint => &[
                Kind::CrashBeforeApply,
                Kind::CrashAfterApply,
                Kind::CrashBeforeFlush,
                Kind::CrashAfterFlush,
            ],
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Milliseconds from the start of the run.
    pub start_ms: u64,
    /// How long it lasts, in milliseconds.
    pub duration_ms: u64,
    /// What it is.
    pub kind: Kind,
    /// A random permutation of the members, from which random choices are
    /// taken (the first k).
    pub order: Vec<usize>,
}

/// The faults of a run of `time_limit` on `n` members, from `seed`: a quiet
/// spell of 2–5 s, then a fault of 3–8 s, over and over, ending before the
/// time limit.
pub fn schedule(families: &[Family], n: usize, time_limit: Duration, seed: u64) -> Vec<Fault> {
    let mut rng = Rng::new(seed ^ 0x006e_656d_6573_6973);
    let kinds: Vec<Kind> = families
        .iter()
        .flat_map(|f| Kind::of(*f))
        .copied()
        .collect();
    let end = u64::try_from(time_limit.as_millis()).unwrap_or(u64::MAX);
    let mut faults = Vec::new();
    let mut t = 0;
    if kinds.is_empty() {
        return faults;
    }
    loop {
        t += rng.between(2_000, 5_000);
        let duration_ms = rng.between(3_000, 8_000);
        if t + duration_ms > end.saturating_sub(1_000) {
            return faults;
        }
        let kind = kinds[rng.index(kinds.len())];
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.index(i + 1));
        }
        faults.push(Fault {
            start_ms: t,
            duration_ms,
            kind,
            order,
        });
        t += duration_ms;
    }
}

/// What a fault did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The scheduled fault.
    pub fault: Fault,
    /// Milliseconds from the start when it actually began.
    pub began_ms: u64,
    /// The members it hit (killed, paused, or isolated), by name.
    pub targets: Vec<String>,
    /// The partition's sides, by member name, for partitions.
    pub sides: Vec<Vec<String>>,
    /// Why it did nothing, if it did nothing.
    pub skipped: Option<String>,
    /// Members that crashed by themselves at an armed failpoint.
    pub crashed: Vec<String>,
}

/// Starts `fault`: kills, pauses or cuts. Returns what was done.
///
/// # Errors
/// nft refuses.
pub async fn start(
    fault: &Fault,
    cluster: &mut Cluster,
    firewall: &Firewall,
    began_ms: u64,
) -> anyhow::Result<Applied> {
    let n = cluster.members.len();
    let name = |i: usize, c: &Cluster| c.members[i].name.clone();
    let mut applied = Applied {
        fault: fault.clone(),
        began_ms,
        targets: Vec::new(),
        sides: Vec::new(),
        skipped: None,
        crashed: Vec::new(),
    };
    let leader = match fault.kind {
        Kind::KillLeader | Kind::PauseLeader | Kind::PartitionLeader | Kind::RestartLeader => {
            let leader = cluster.any_leader().await;
            if leader.is_none() {
                applied.skipped = Some("no leader known".into());
                return Ok(applied);
            }
            leader
        }
        _ => None,
    };
    let majority = n / 2 + 1;
    if let Some(point) = fault.kind.failpoint() {
        // The pass that crashes: 11–410, drawn from the schedule, so that
        // the crash comes a second or a few into the fault under load.
        let pass = 11 + fault.start_ms.wrapping_mul(7919) % 400;
        let i = fault.order[0];
        cluster.arm(i, format!("{point}={}*off->return", pass - 1))?;
        applied.targets.push(name(i, cluster));
        return Ok(applied);
    }
    match fault.kind {
        Kind::MemberRemoveReadd | Kind::MemberLearnerPromote => {
            let i = fault.order[0];
            applied.targets.push(name(i, cluster));
            if cluster
                .members
                .iter()
                .any(|m| m.membership != Membership::Voter)
            {
                applied.skipped = Some("a member is still out of the cluster".into());
                return Ok(applied);
            }
            let changed = async {
                cluster.remove(i).await?;
                if fault.kind == Kind::MemberLearnerPromote {
                    cluster.add(i, true).await?;
                }
                anyhow::Ok(())
            };
            if let Err(e) = changed.await {
                eprintln!("cairn-jepsen: membership change failed: {e:#}");
                applied.skipped = Some(format!("{e:#}"));
            }
        }
        Kind::RestartLeader | Kind::RestartRandom => {
            let i = leader.unwrap_or(fault.order[0]);
            cluster.kill(i);
            cluster.restart(i)?;
            applied.targets.push(name(i, cluster));
        }
        Kind::CrashBeforeApply
        | Kind::CrashAfterApply
        | Kind::CrashBeforeFlush
        | Kind::CrashAfterFlush => {}
        Kind::KillRandom | Kind::KillLeader | Kind::KillMajority => {
            let targets: Vec<usize> = match fault.kind {
                Kind::KillRandom => vec![fault.order[0]],
                Kind::KillLeader => leader.into_iter().collect(),
                _ => fault.order[..majority].to_vec(),
            };
            for &i in &targets {
                cluster.kill(i);
                applied.targets.push(name(i, cluster));
            }
        }
        Kind::PauseRandom | Kind::PauseLeader => {
            let i = leader.unwrap_or(fault.order[0]);
            cluster.pause(i);
            applied.targets.push(name(i, cluster));
        }
        Kind::PartitionHalves | Kind::PartitionLeader | Kind::PartitionBridge => {
            let (a, b, bridge): (Vec<usize>, Vec<usize>, Option<usize>) = match fault.kind {
                Kind::PartitionHalves => {
                    let (a, b) = fault.order.split_at(n / 2);
                    (a.to_vec(), b.to_vec(), None)
                }
                Kind::PartitionLeader => {
                    let l = leader.expect("invariant: leader kinds return early without one");
                    (vec![l], (0..n).filter(|&i| i != l).collect(), None)
                }
                _ => {
                    let (bridge, rest) = fault.order.split_first().expect("at least one member");
                    let (a, b) = rest.split_at(rest.len() / 2);
                    (a.to_vec(), b.to_vec(), Some(*bridge))
                }
            };
            let ips = |s: &[usize]| -> Vec<Ipv4Addr> {
                s.iter().map(|&i| cluster.members[i].ip).collect()
            };
            let mut pairs = Vec::new();
            for x in ips(&a) {
                for y in ips(&b) {
                    pairs.push((x, y));
                }
            }
            firewall.cut(&pairs)?;
            let names = |s: &[usize]| s.iter().map(|&i| name(i, cluster)).collect::<Vec<_>>();
            applied.targets = names(&a);
            let mut side_b = names(&b);
            if let Some(bridge) = bridge {
                applied.sides.push(vec![name(bridge, cluster)]);
                side_b.sort();
            }
            applied.sides.insert(0, names(&a));
            applied.sides.insert(1, side_b);
        }
        Kind::PartitionRing => {
            // Member order[k] talks to order[k±1] only.
            let pos = |i: usize| {
                fault
                    .order
                    .iter()
                    .position(|&x| x == i)
                    .expect("a permutation")
            };
            let mut pairs = Vec::new();
            for i in 0..n {
                for j in (i + 1)..n {
                    let d = pos(i).abs_diff(pos(j));
                    if d != 1 && d != n - 1 {
                        pairs.push((cluster.members[i].ip, cluster.members[j].ip));
                    }
                }
            }
            if pairs.is_empty() {
                applied.skipped = Some("a ring of 3 cuts nothing".into());
            }
            firewall.cut(&pairs)?;
            applied.sides = vec![fault.order.iter().map(|&i| name(i, cluster)).collect()];
        }
    }
    Ok(applied)
}

/// Ends every fault: rules flushed, members continued and restarted,
/// removed members added back, learners promoted. A membership change that
/// keeps failing is logged and tried again at the next heal; a member still
/// out at the end makes the final comparison fail.
///
/// # Errors
/// nft refuses, or a member cannot be restarted.
/// Returns the members that crashed at an armed failpoint.
pub async fn heal(cluster: &mut Cluster, firewall: &Firewall) -> anyhow::Result<Vec<String>> {
    firewall.heal()?;
    let crashed = cluster.disarm();
    cluster.heal()?;
    for i in 0..cluster.members.len() {
        let changed = match cluster.members[i].membership {
            Membership::Voter => Ok(()),
            Membership::Removed => cluster.add(i, false).await,
            Membership::Learner(_) => cluster.promote(i).await,
        };
        if let Err(e) = changed {
            eprintln!(
                "cairn-jepsen: healing {}'s membership: {e:#}",
                cluster.members[i].name
            );
        }
    }
    Ok(crashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let families = [Family::Kill, Family::Partition];
        let limit = Duration::from_secs(120);
        let a = serde_json::to_string(&schedule(&families, 5, limit, 42)).expect("json");
        let b = serde_json::to_string(&schedule(&families, 5, limit, 42)).expect("json");
        let c = serde_json::to_string(&schedule(&families, 5, limit, 43)).expect("json");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn faults_fit_the_time_limit() {
        let faults = schedule(&[Family::Pause], 3, Duration::from_secs(60), 1);
        assert!(faults.len() >= 3, "{faults:?}");
        for pair in faults.windows(2) {
            assert!(pair[0].start_ms + pair[0].duration_ms < pair[1].start_ms);
        }
        let last = faults.last().expect("some faults");
        assert!(last.start_ms + last.duration_ms <= 59_000);
        assert!(schedule(&[], 3, Duration::from_secs(60), 1).is_empty());
    }
}
