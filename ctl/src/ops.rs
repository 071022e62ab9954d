//! Cluster operations: lease, member, endpoint, alarm, defrag,
//! move-leader, lock and elect.

use std::time::Instant;

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use cairn_client::{AlarmKind, Client, Get, KeepAliveState, LeaseId, LeaseLost, MemberId, Session};
use futures::StreamExt;
use serde_json::json;

use crate::cli::{
    AlarmCommand, ClusterFlag, DefragArgs, ElectArgs, EndpointCommand, Format, Global,
    LeaseCommand, LockArgs, MemberCommand, MoveLeaderArgs,
};
use crate::kv::{connect, lease_id};
use crate::output::{header_json, human_bytes, print_json, table, text};
use crate::Quiet;

fn member_id(s: &str) -> Result<MemberId> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(MemberId::new)
        .with_context(|| format!("bad member ID {s:?} (want hex, as `member list` prints it)"))
}

pub(crate) async fn lease(g: &Global, cmd: LeaseCommand) -> Result<()> {
    let client = connect(g).await?;
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let r = client.lease_grant(ttl, None).await?;
            match g.write_out {
                Format::Json => print_json(&json!({
                    "header": header_json(&r.header), "ID": r.id.get(), "TTL": r.ttl,
                })),
                _ => println!("lease {} granted with TTL({}s)", hex16(r.id), r.ttl),
            }
        }
        LeaseCommand::Revoke { id } => {
            let id = lease_id(&id)?;
            client.lease_revoke(id).await?;
            println!("lease {} revoked", hex16(id));
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = lease_id(&id)?;
            match client.lease_time_to_live(id, keys).await? {
                None => {
                    eprintln!("Error: lease {} not found (expired or revoked)", hex16(id));
                    return Err(Quiet(1).into());
                }
                Some(t) => match g.write_out {
                    Format::Json => print_json(&json!({
                        "header": header_json(&t.header), "id": t.id.get(), "ttl": t.ttl,
                        "granted-ttl": t.granted_ttl,
                        "keys": t.keys.iter().map(|k| crate::output::b64(k)).collect::<Vec<_>>(),
                    })),
                    _ if keys => println!(
                        "lease {} granted with TTL({}s), remaining({}s), attached keys({:?})",
                        hex16(t.id),
                        t.granted_ttl,
                        t.ttl,
                        t.keys.iter().map(|k| text(k)).collect::<Vec<_>>()
                    ),
                    _ => println!(
                        "lease {} granted with TTL({}s), remaining({}s)",
                        hex16(t.id),
                        t.granted_ttl,
                        t.ttl
                    ),
                },
            }
        }
        LeaseCommand::List => {
            let ids = client.leases().await?;
            match g.write_out {
                Format::Json => print_json(
                    &json!({ "leases": ids.iter().map(|l| l.get()).collect::<Vec<_>>() }),
                ),
                _ => {
                    println!("found {} leases", ids.len());
                    for id in ids {
                        println!("{}", hex16(id));
                    }
                }
            }
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = lease_id(&id)?;
            let not_found = || anyhow!("lease {} not found (expired or revoked)", hex16(id));
            if once {
                let ttl = match client.lease_keep_alive_once(id).await {
                    Err(cairn_client::Error::LeaseNotFound) => return Err(not_found()),
                    r => r?,
                };
                println!("lease {} keepalived with TTL({ttl})", hex16(id));
                return Ok(());
            }
            let mut keeper = match client.lease_keep_alive(id).await {
                Err(cairn_client::Error::LeaseNotFound) => return Err(not_found()),
                r => r?,
            };
            // One line per renewal, as etcdctl prints them, until killed or
            // the lease is lost.
            let mut state = keeper.state();
            loop {
                match state {
                    KeepAliveState::Alive { ttl } => {
                        println!("lease {} keepalived with TTL({ttl})", hex16(id));
                        std::io::stdout().flush()?;
                    }
                    KeepAliveState::Lost(LeaseLost::NotFound) => {
                        bail!("lease {} expired or revoked", hex16(id))
                    }
                    KeepAliveState::Lost(LeaseLost::Unreachable) => bail!(
                        "lease {} lost: no member renewed it before its TTL ran out",
                        hex16(id)
                    ),
                }
                state = keeper.renewed().await;
            }
        }
    }
    Ok(())
}

/// A lease ID as etcdctl prints it: 16 hex digits.
pub(crate) fn hex16(id: LeaseId) -> String {
    format!("{:016x}", id.get())
}

pub(crate) async fn member(g: &Global, cmd: MemberCommand) -> Result<()> {
    let client = connect(g).await?;
    let members = match cmd {
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            let r = client.member_add(peer_urls.clone(), learner).await?;
            println!(
                "Member {:>16} added to cluster {:>16}",
                r.member.id, r.header.cluster_id
            );
            let mut initial: Vec<String> = r
                .members
                .iter()
                .filter(|m| !m.name.is_empty() || m.id == r.member.id)
                .flat_map(|m| {
                    let n = if m.id == r.member.id { &name } else { &m.name };
                    m.peer_urls.iter().map(move |u| format!("{n}={u}"))
                })
                .collect();
            initial.sort();
            println!();
            println!("ETCD_NAME=\"{name}\"");
            println!("ETCD_INITIAL_CLUSTER=\"{}\"", initial.join(","));
            println!(
                "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"",
                peer_urls.join(",")
            );
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
            return Ok(());
        }
        MemberCommand::Remove { id } => {
            let id = member_id(&id)?;
            let r = client.member_remove(id).await?;
            println!("Member {id} removed from cluster {:x}", r.header.cluster_id);
            return Ok(());
        }
        MemberCommand::Update { id, peer_urls } => {
            let id = member_id(&id)?;
            let r = client.member_update(id, peer_urls).await?;
            println!("Member {id} updated in cluster {:x}", r.header.cluster_id);
            return Ok(());
        }
        MemberCommand::Promote { id } => {
            let id = member_id(&id)?;
            let r = client.member_promote(id).await?;
            println!("Member {id} promoted in cluster {:x}", r.header.cluster_id);
            return Ok(());
        }
        MemberCommand::List => client.member_list().await?,
    };
    let rows: Vec<Vec<String>> = members
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                }
                .to_owned(),
                m.name.clone(),
                m.peer_urls.join(","),
                m.client_urls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    match g.write_out {
        Format::Json => print_json(&json!({
            "header": header_json(&members.header),
            "members": members.members.iter().map(|m| json!({
                "ID": m.id.get(), "name": m.name, "peerURLs": m.peer_urls,
                "clientURLs": m.client_urls, "isLearner": m.is_learner,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => print!(
            "{}",
            table(
                &[
                    "ID",
                    "STATUS",
                    "NAME",
                    "PEER ADDRS",
                    "CLIENT ADDRS",
                    "IS LEARNER"
                ],
                &rows
            )
        ),
        Format::Simple => {
            for r in rows {
                println!("{}", r.join(", "));
            }
        }
    }
    Ok(())
}

/// The endpoints a command addresses: --endpoints, or with --cluster every
/// member's client URLs.
async fn endpoints(g: &Global, cluster: &ClusterFlag) -> Result<Vec<String>> {
    if !cluster.cluster {
        return Ok(g.endpoints.clone());
    }
    let list = connect(g).await?.member_list().await?;
    let mut urls: Vec<String> = list
        .members
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    urls.sort();
    urls.dedup();
    if urls.is_empty() {
        bail!("no member has published client URLs yet");
    }
    Ok(urls)
}

pub(crate) async fn endpoint(g: &Global, cmd: EndpointCommand) -> Result<()> {
    match cmd {
        EndpointCommand::Health(c) => health(g, &endpoints(g, &c).await?).await,
        EndpointCommand::Status(c) => status(g, &endpoints(g, &c).await?).await,
        EndpointCommand::Hashkv { cluster, rev } => {
            hashkv(g, &endpoints(g, &cluster).await?, rev).await
        }
    }
}

async fn health(g: &Global, eps: &[String]) -> Result<()> {
    let mut unhealthy = 0;
    let mut rows = Vec::new();
    for ep in eps {
        let started = Instant::now();
        let result = async {
            let c = crate::kv::connect_to(g, std::slice::from_ref(ep)).await?;
            c.get(Get::one("health")).await?;
            anyhow::Ok(())
        }
        .await;
        let took = started.elapsed();
        let (ok, msg) = match &result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, format!("{e:#}")),
        };
        if !ok {
            unhealthy += 1;
        }
        rows.push((ep.clone(), ok, took, msg));
    }
    match g.write_out {
        Format::Json => print_json(&json!(rows
            .iter()
            .map(|(ep, ok, took, msg)| json!({
                "endpoint": ep, "health": ok, "took": format!("{took:?}"), "error": msg,
            }))
            .collect::<Vec<_>>())),
        Format::Table => print!(
            "{}",
            table(
                &["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
                &rows
                    .iter()
                    .map(|(ep, ok, took, msg)| vec![
                        ep.clone(),
                        ok.to_string(),
                        format!("{took:.3?}"),
                        msg.clone()
                    ])
                    .collect::<Vec<_>>()
            )
        ),
        Format::Simple => {
            for (ep, ok, took, msg) in &rows {
                if *ok {
                    println!("{ep} is healthy: successfully committed proposal: took = {took:.3?}");
                } else {
                    eprintln!("{ep} is unhealthy: failed to commit proposal: {msg}");
                }
            }
        }
    }
    if unhealthy > 0 {
        bail!("unhealthy cluster: {unhealthy} of {} endpoints", eps.len());
    }
    Ok(())
}

async fn status(g: &Global, eps: &[String]) -> Result<()> {
    let client = crate::kv::connect_to(g, eps).await?;
    let mut rows = Vec::new();
    let mut jsons = Vec::new();
    for ep in eps {
        let s = client
            .maintenance_at(ep)?
            .status()
            .await
            .with_context(|| format!("status of {ep}"))?;
        jsons.push(json!({
            "Endpoint": ep, "header": header_json(&s.header), "version": s.version,
            "dbSize": s.db_size, "dbSizeInUse": s.db_size_in_use,
            "leader": s.leader.map(|l| l.get()), "raftIndex": s.raft_index,
            "raftTerm": s.raft_term, "raftAppliedIndex": s.raft_applied_index,
            "errors": s.errors, "isLearner": s.is_learner,
        }));
        rows.push(vec![
            ep.clone(),
            s.header.member_id.to_string(),
            s.version.clone(),
            human_bytes(u64::try_from(s.db_size).unwrap_or(0)),
            human_bytes(u64::try_from(s.db_size_in_use).unwrap_or(0)),
            s.is_leader().to_string(),
            s.is_learner.to_string(),
            s.raft_term.to_string(),
            s.raft_index.to_string(),
            s.raft_applied_index.to_string(),
            s.errors.join(", "),
        ]);
    }
    match g.write_out {
        Format::Json => print_json(&json!(jsons)),
        Format::Table => print!(
            "{}",
            table(
                &[
                    "ENDPOINT",
                    "ID",
                    "VERSION",
                    "DB SIZE",
                    "DB SIZE IN USE",
                    "IS LEADER",
                    "IS LEARNER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "RAFT APPLIED INDEX",
                    "ERRORS"
                ],
                &rows
            )
        ),
        Format::Simple => {
            for r in rows {
                println!("{}", r.join(", "));
            }
        }
    }
    Ok(())
}

async fn hashkv(g: &Global, eps: &[String], rev: i64) -> Result<()> {
    let client = crate::kv::connect_to(g, eps).await?;
    let at = (rev > 0).then(|| cairn_client::Revision::new(rev));
    let mut rows = Vec::new();
    for ep in eps {
        let h = client
            .maintenance_at(ep)?
            .hash_kv(at)
            .await
            .with_context(|| format!("hashkv of {ep}"))?;
        rows.push((ep.clone(), h.hash, h.compact_revision.get()));
    }
    match g.write_out {
        Format::Json => print_json(&json!(rows
            .iter()
            .map(|(ep, h, c)| json!({"Endpoint": ep, "hash": h, "compact_revision": c}))
            .collect::<Vec<_>>())),
        Format::Table => print!(
            "{}",
            table(
                &["ENDPOINT", "HASH", "COMPACT REVISION"],
                &rows
                    .iter()
                    .map(|(ep, h, c)| vec![ep.clone(), h.to_string(), c.to_string()])
                    .collect::<Vec<_>>()
            )
        ),
        Format::Simple => {
            for (ep, h, c) in &rows {
                println!("{ep}, {h}, {c}");
            }
        }
    }
    Ok(())
}

fn alarm_name(k: AlarmKind) -> &'static str {
    match k {
        AlarmKind::NoSpace => "NOSPACE",
        AlarmKind::Corrupt => "CORRUPT",
    }
}

pub(crate) async fn alarm(g: &Global, cmd: AlarmCommand) -> Result<()> {
    let client = connect(g).await?;
    let m = client.maintenance();
    let alarms = m.alarms().await?;
    let shown = match cmd {
        AlarmCommand::List => alarms,
        AlarmCommand::Disarm => {
            let mut disarmed = Vec::new();
            for a in alarms {
                disarmed.extend(m.alarm_disarm(a).await?);
            }
            disarmed
        }
    };
    match g.write_out {
        Format::Json => print_json(&json!(shown
            .iter()
            .map(|a| json!({"memberID": a.member_id.get(), "alarm": alarm_name(a.kind)}))
            .collect::<Vec<_>>())),
        _ => {
            for a in &shown {
                println!(
                    "memberID:{} alarm:{}",
                    a.member_id.get(),
                    alarm_name(a.kind)
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn defrag(g: &Global, a: DefragArgs) -> Result<()> {
    let eps = endpoints(g, &a.cluster).await?;
    let client = crate::kv::connect_to(g, &eps).await?;
    let mut failed = 0;
    // One member at a time, as etcdctl: each may stall while it runs.
    for ep in &eps {
        let started = Instant::now();
        match client.maintenance_at(ep)?.defragment().await {
            Ok(_) => println!(
                "Finished defragmenting etcd member[{ep}]. took {:.3?}",
                started.elapsed()
            ),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({e})");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Quiet(1).into());
    }
    Ok(())
}

pub(crate) async fn move_leader(g: &Global, a: MoveLeaderArgs) -> Result<()> {
    let target = member_id(&a.target)?;
    connect(g).await?.move_leader(target).await?;
    println!("Leadership transferred to {target}");
    Ok(())
}

/// A client whose requests may wait as long as a lock or election does.
async fn waiting_client(g: &Global) -> Result<Client> {
    Ok(connect(g)
        .await?
        .with_request_timeout(std::time::Duration::from_secs(24 * 3600)))
}

pub(crate) async fn lock(g: &Global, a: LockArgs) -> Result<()> {
    let client = waiting_client(g).await?;
    let session = Session::new(&client, a.ttl).await?;
    let key = client.lock(a.name.as_str(), &session).await?;
    println!("{}", text(&key.key));
    if a.command.is_empty() {
        // Hold the lock until interrupted, as etcdctl does.
        tokio::signal::ctrl_c().await?;
    } else {
        let status = tokio::process::Command::new(&a.command[0])
            .args(&a.command[1..])
            .status()
            .await
            .with_context(|| format!("running {}", a.command[0]))?;
        client.unlock(&key).await?;
        session.close().await?;
        if !status.success() {
            return Err(Quiet(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)).into());
        }
        return Ok(());
    }
    client.unlock(&key).await?;
    session.close().await?;
    Ok(())
}

pub(crate) async fn elect(g: &Global, a: ElectArgs) -> Result<()> {
    let client = waiting_client(g).await?;
    if a.listen {
        let mut leaders = Box::pin(client.observe(a.name.as_str()).await?);
        while let Some(kv) = leaders.next().await {
            let kv = kv?;
            println!("{}\n{}", text(&kv.key), text(&kv.value));
        }
        bail!("observe stream ended");
    }
    let Some(proposal) = a.proposal else {
        bail!("a proposal is needed to campaign (or --listen to observe)");
    };
    let session = Session::new(&client, a.ttl).await?;
    let leader = client
        .campaign(a.name.as_str(), proposal.as_str(), &session)
        .await?;
    println!("{}\n{}", text(&leader.key), proposal);
    tokio::signal::ctrl_c().await?;
    client.resign(leader).await?;
    session.close().await?;
    Ok(())
}
