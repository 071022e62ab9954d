//! The cluster under test: `cairn` processes on loopback aliases.
//!
//! Member `i` listens on 127.0.0.(first_host+i), by default .61 and up
//! (Linux routes all of 127/8 to lo; the server's tests use .11 and up,
//! the client's .41 and up), on a client
//! and a peer port that were free a moment before. Each has its own data
//! dir and log under the results dir. Children run in their own process
//! group, so a Ctrl-C reaches only the runner, which then kills them.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, StatusRequest,
    StatusResponse,
};
use tonic::transport::{Channel, Endpoint};

use super::cleanup;

/// Bound on one status call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(100);

/// How long a membership change is retried ("unhealthy cluster", a
/// learner not yet in sync, no leader).
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(20);

/// Raft timing: 100 ms heartbeats and 1 s elections, so a failover takes
/// about a second and a run of a minute sees several.
const TIMING: [&str; 4] = ["--heartbeat-interval", "100", "--election-timeout", "1000"];

/// One member.
pub struct Member {
    /// `m0`, `m1`, …
    pub name: String,
    /// 127.0.0.(first_host+i).
    pub ip: Ipv4Addr,
    client_port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// SIGSTOPped and not continued.
    paused: bool,
    /// Where a membership change left it.
    pub membership: Membership,
    /// The FAILPOINTS it was last started with, while armed.
    failpoints: Option<String>,
    /// The channel the runner's clients share; it reconnects by itself.
    channel: Channel,
}

impl Member {
    /// `http://127.0.0.x:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// A shared, lazily connecting channel to the member.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A KV client on [`Member::channel`].
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel())
    }

    /// Status, bounded by a short timeout.
    pub async fn status(&self) -> anyhow::Result<StatusResponse> {
        let mut client = MaintenanceClient::new(self.channel());
        let status = tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {}))
            .await
            .context("status timed out")??;
        Ok(status.into_inner())
    }

    fn spawn(&mut self, program: &Path) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut command = Command::new(program);
        match &self.failpoints {
            Some(spec) => command.env("FAILPOINTS", spec),
            None => command.env_remove("FAILPOINTS"),
        };
        let child = command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        cleanup::add_pid(child.id());
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok()) {
            // SAFETY: kill(2) has no memory effects; the child is ours and
            // not yet reaped, so the pid is still its.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// A member's place in the cluster, as the membership nemesis left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A voter (as started).
    Voter,
    /// Removed, its process killed and its data dir wiped: to be added
    /// again before it restarts.
    Removed,
    /// Added again as the learner with this ID, running: to be promoted.
    Learner(u64),
}

impl Member {
    fn arg_mut(&mut self, flag: &str) -> Option<&mut String> {
        let at = self.args.iter().position(|a| a == flag)?;
        self.args.get_mut(at + 1)
    }

    fn arg(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|a| a == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// The peer URL it advertises.
    pub fn peer_url(&self) -> String {
        self.arg("--initial-advertise-peer-urls")
            .unwrap_or_default()
            .to_owned()
    }
}

/// Retries `call` while the error is one etcd asks clients to retry, or the
/// member is away, for [`MEMBERSHIP_PATIENCE`].
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + MEMBERSHIP_PATIENCE;
    loop {
        let why = match tokio::time::timeout(STATUS_TIMEOUT * 3, call()).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(status)) => status.message().to_owned(),
            Err(_) => "timeout".to_owned(),
        };
        if Instant::now() > deadline {
            bail!("{what}: still failing after {MEMBERSHIP_PATIENCE:?}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// N members of one cluster.
pub struct Cluster {
    program: PathBuf,
    /// The members, by index.
    pub members: Vec<Member>,
    /// Member IDs from Status, by index, once known.
    ids: Vec<u64>,
}

impl Cluster {
    /// Starts `n` members of `program` as a new cluster with data dirs and
    /// logs under `dir`, and waits until they agree on a leader.
    ///
    /// # Errors
    /// An address cannot be bound, a member cannot start, or there is no
    /// leader within 30 s.
    pub async fn start(
        program: &Path,
        n: usize,
        first_host: u8,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let token = format!("jepsen-{}", std::process::id());
        let mut reserved = Vec::new();
        for i in 0..n {
            let host = u8::try_from(i)
                .ok()
                .and_then(|i| first_host.checked_add(i))
                .filter(|&h| h < 255)
                .context("member addresses beyond 127.0.0.254")?;
            let ip = Ipv4Addr::new(127, 0, 0, host);
            // Both listeners are held together so the two ports differ.
            let client = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
            let peer = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
            reserved.push((ip, client.local_addr()?.port(), peer.local_addr()?.port()));
        }
        let initial: Vec<String> = reserved
            .iter()
            .enumerate()
            .map(|(i, (ip, _, peer))| format!("m{i}=http://{ip}:{peer}"))
            .collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (i, (ip, client_port, peer_port)) in reserved.into_iter().enumerate() {
            let name = format!("m{i}");
            let data = dir.join(&name);
            fs::create_dir_all(dir)?;
            let client = format!("http://{ip}:{client_port}");
            let peer = format!("http://{ip}:{peer_port}");
            let mut args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                data.to_string_lossy().into_owned(),
                "--listen-client-urls".into(),
                client.clone(),
                "--advertise-client-urls".into(),
                client.clone(),
                "--listen-peer-urls".into(),
                peer.clone(),
                "--initial-advertise-peer-urls".into(),
                peer,
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                token.clone(),
            ];
            args.extend(TIMING.iter().map(|s| s.to_string()));
            let channel = Endpoint::from_shared(client)
                .context("member URL")?
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy();
            members.push(Member {
                log: dir.join(format!("{name}.log")),
                name,
                ip,
                client_port,
                args,
                child: None,
                paused: false,
                membership: Membership::Voter,
                failpoints: None,
                channel,
            });
        }
        let mut cluster = Cluster {
            program: program.to_owned(),
            members,
            ids: vec![0; n],
        };
        for member in &mut cluster.members {
            member.spawn(program)?;
        }
        cluster
            .await_leader(Duration::from_secs(30))
            .await
            .context("the new cluster elected no leader")?;
        Ok(cluster)
    }

    /// Indices of members whose process runs and is not paused.
    pub fn live(&mut self) -> Vec<usize> {
        let mut live = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(child) = &mut m.child {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("cairn-jepsen: {} exited by itself: {status}", m.name);
                    cleanup::remove_pid(child.id());
                    m.child = None;
                    continue;
                }
                if !m.paused {
                    live.push(i);
                }
            }
        }
        live
    }

    /// The leader as the live members report it, if they agree and it is
    /// one of them.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut leaders = BTreeSet::new();
        for i in self.live() {
            let status = self.members[i].status().await.ok()?;
            if let Some(header) = &status.header {
                self.ids[i] = header.member_id;
            }
            leaders.insert(status.leader);
        }
        let [leader] = leaders.into_iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        self.ids.iter().position(|&id| id == leader && id != 0)
    }

    /// Some member's view of the leader, without requiring agreement: for
    /// leader-targeted faults in the middle of chaos.
    pub async fn any_leader(&mut self) -> Option<usize> {
        for i in self.live() {
            if let Ok(status) = self.members[i].status().await {
                if let Some(header) = &status.header {
                    self.ids[i] = header.member_id;
                }
                if let Some(l) = self
                    .ids
                    .iter()
                    .position(|&id| id == status.leader && id != 0)
                {
                    return Some(l);
                }
            }
        }
        None
    }

    /// Waits until every live member names the same leader.
    ///
    /// # Errors
    /// None within `timeout`.
    pub async fn await_leader(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs member `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            cleanup::remove_pid(child.id());
        }
        m.paused = false;
    }

    /// Starts member `i` again on its data dir, if it is not running.
    ///
    /// # Errors
    /// It cannot be started.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.members[i].child.is_none() {
            let program = self.program.clone();
            self.members[i].spawn(&program)?;
        }
        Ok(())
    }

    /// SIGSTOPs member `i`.
    pub fn pause(&mut self, i: usize) {
        self.members[i].signal(libc::SIGSTOP);
        self.members[i].paused = true;
    }

    /// SIGCONTs member `i`.
    pub fn resume(&mut self, i: usize) {
        self.members[i].signal(libc::SIGCONT);
        self.members[i].paused = false;
    }

    /// Every member running and continued.
    ///
    /// # Errors
    /// A member cannot be restarted.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.resume(i);
            }
            if self.members[i].membership == Membership::Removed {
                continue;
            }
            self.restart(i)?;
        }
        Ok(())
    }
}

impl Cluster {
    /// Restarts member `i` with the failpoints `spec` armed
    /// (`FAILPOINTS`, read by a `cairn` built with `--features failpoints`).
    ///
    /// # Errors
    /// It cannot be started.
    pub fn arm(&mut self, i: usize, spec: String) -> anyhow::Result<()> {
        self.kill(i);
        self.members[i].failpoints = Some(spec);
        self.restart(i)
    }

    /// Disarms every armed member: each is killed if it still runs and
    /// started again without failpoints (by [`Cluster::heal`]). Returns the
    /// names of those that had crashed by themselves.
    pub fn disarm(&mut self) -> Vec<String> {
        let mut crashed = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].failpoints.is_none() {
                continue;
            }
            let exited = match &mut self.members[i].child {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited {
                crashed.push(self.members[i].name.clone());
            }
            self.kill(i);
            self.members[i].failpoints = None;
        }
        crashed
    }

    /// A member other than `i` that runs, to send membership changes to:
    /// the leader if known.
    async fn other(&mut self, i: usize) -> anyhow::Result<usize> {
        if let Some(l) = self.any_leader().await.filter(|&l| l != i) {
            return Ok(l);
        }
        self.live()
            .into_iter()
            .find(|&j| j != i && self.members[j].membership != Membership::Removed)
            .context("no other live member")
    }

    /// Member `i`'s ID, from the member list (by peer URL).
    async fn member_id(&mut self, i: usize) -> anyhow::Result<u64> {
        let via = self.other(i).await?;
        let url = self.members[i].peer_url();
        let client = ClusterClient::new(self.members[via].channel());
        let list = retrying("member list", || {
            let mut c = client.clone();
            async move {
                c.member_list(MemberListRequest { linearizable: true })
                    .await
            }
        })
        .await?
        .into_inner();
        list.members
            .iter()
            .find(|m| m.peer_ur_ls.contains(&url))
            .map(|m| m.id)
            .with_context(|| format!("{url} is not in the member list"))
    }

    /// Removes member `i` from the cluster (MemberRemove through another
    /// member), kills it and wipes its data dir.
    ///
    /// # Errors
    /// The removal kept failing.
    pub async fn remove(&mut self, i: usize) -> anyhow::Result<()> {
        let id = self.member_id(i).await?;
        let via = self.other(i).await?;
        let client = ClusterClient::new(self.members[via].channel());
        retrying("member remove", || {
            let mut c = client.clone();
            async move { c.member_remove(MemberRemoveRequest { id }).await }
        })
        .await?;
        self.kill(i);
        let m = &mut self.members[i];
        m.membership = Membership::Removed;
        if let Some(data) = m.arg("--data-dir") {
            let _ = fs::remove_dir_all(data);
        }
        Ok(())
    }

    /// Adds removed member `i` again (as a learner if asked), with a fresh
    /// data dir and `--initial-cluster-state existing`, and starts it.
    ///
    /// # Errors
    /// The add kept failing, or the process cannot start.
    pub async fn add(&mut self, i: usize, learner: bool) -> anyhow::Result<()> {
        let via = self.other(i).await?;
        let url = self.members[i].peer_url();
        let client = ClusterClient::new(self.members[via].channel());
        let added = retrying("member add", || {
            let mut c = client.clone();
            let request = MemberAddRequest {
                peer_ur_ls: vec![url.clone()],
                is_learner: learner,
            };
            async move { c.member_add(request).await }
        })
        .await?
        .into_inner();
        let id = added.member.map_or(0, |m| m.id);
        let initial: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(j, m)| *j == i || m.membership != Membership::Removed)
            .map(|(_, m)| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let m = &mut self.members[i];
        if let Some(v) = m.arg_mut("--initial-cluster") {
            *v = initial.join(",");
        }
        if let Some(v) = m.arg_mut("--initial-cluster-state") {
            "existing".clone_into(v);
        }
        m.membership = if learner {
            Membership::Learner(id)
        } else {
            Membership::Voter
        };
        self.ids[i] = id;
        let program = self.program.clone();
        self.members[i].spawn(&program)
    }

    /// Promotes learner `i`, retrying while it is not in sync.
    ///
    /// # Errors
    /// Still not promoted after the retries.
    pub async fn promote(&mut self, i: usize) -> anyhow::Result<()> {
        let Membership::Learner(id) = self.members[i].membership else {
            return Ok(());
        };
        let via = self.other(i).await?;
        let client = ClusterClient::new(self.members[via].channel());
        retrying("member promote", || {
            let mut c = client.clone();
            async move { c.member_promote(MemberPromoteRequest { id }).await }
        })
        .await?;
        self.members[i].membership = Membership::Voter;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
