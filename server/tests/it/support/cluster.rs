//! A cluster of server processes on loopback, for multi-member scenarios.
//!
//! [`Cluster`] runs N members of one [`Flavor`] (the reference etcd, or
//! `cairn`) with etcd's clustering flags. Member `i` listens on its own
//! address, 127.0.0.(11+i) (Linux routes all of 127/8 to `lo`), on a client
//! port and a peer port that were free a moment before, so a log line or an
//! etcdctl table tells the members apart at a glance. Each member has its
//! own data dir and log file under the cluster's temp dir, and its child is
//! run by the same [`Runner`] as the one-member servers: SIGKILL on drop,
//! the log's tail quoted when a test fails.
//!
//! Membership changes are the gRPC Cluster calls etcdctl makes, sent to
//! the leader, and are retried only on the answers etcd gives when a change
//! is refused *for now* (see [`RETRY_ADD_REMOVE`],
//! [`RETRY_PROMOTE`]). A new member is then started with
//! `--initial-cluster-state existing` and the `--initial-cluster` that
//! `etcdctl member add` prints.
//!
//! Indices are stable: a removed member keeps its slot (and address), and
//! an added one takes the next.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    Member as MemberInfo, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
    MemberRemoveRequest, StatusRequest, StatusResponse,
};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

use super::process::{self, Probe, Runner};

/// The last octet of member 0's address; member `i` is 127.0.0.(11+i).
const FIRST_HOST: u8 = 11;
/// Raft timing every member gets: 100 ms heartbeats, 1 s elections, so a
/// leader failure is over in about a second.
const TIMING_FLAGS: [&str; 4] = ["--heartbeat-interval", "100", "--election-timeout", "1000"];
/// Bound on one admin or status call.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Cluster::leader`] waits for the members to agree on one.
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a refused membership change is retried.
const RECONFIG_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between polls and retries.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Answers to MemberAdd and MemberRemove that mean "not yet": with
/// `--strict-reconfig-check` (on by default) etcd refuses a change until
/// the voters have been connected to the leader for 5 s (all of them for an
/// add, a quorum of those left for a remove).
const RETRY_ADD_REMOVE: &[&str] = &["etcdserver: unhealthy cluster"];
/// The answers to MemberPromote while the learner has not caught up, or
/// (as for MemberAdd) the voters have not been connected long enough.
const RETRY_PROMOTE: &[&str] = &[
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: unhealthy cluster",
];

/// Which server the members run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Debian's etcd 3.4, the reference.
    Etcd,
    /// The `cairn` binary this package builds.
    Cairn,
}

impl Flavor {
    fn program(self) -> PathBuf {
        match self {
            Flavor::Etcd => {
                process::assert_etcd_installed();
                process::ETCD_BIN.into()
            }
            Flavor::Cairn => process::cairn_bin(),
        }
    }
}

/// `--initial-cluster-state`: whether a member bootstraps a cluster with
/// the others of `--initial-cluster`, or joins one that lists it already.
#[derive(Clone, Copy)]
enum InitialState {
    New,
    Existing,
}

impl InitialState {
    fn flag(self) -> &'static str {
        match self {
            InitialState::New => "new",
            InitialState::Existing => "existing",
        }
    }
}

/// A member's name and addresses, chosen before it exists; see
/// [`Cluster::reserve`].
#[derive(Clone, Debug)]
pub struct Reserved {
    index: usize,
    name: String,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
}

impl Reserved {
    /// Picks free ports on member `index`'s own address.
    ///
    /// # Panics
    ///
    /// If that address cannot be bound (not a Linux loopback).
    fn new(index: usize, name: &str) -> Self {
        let host = u8::try_from(usize::from(FIRST_HOST) + index)
            .ok()
            .filter(|&h| h < 255)
            .expect("at most 243 members");
        let ip = Ipv4Addr::new(127, 0, 0, host);
        // Both listeners are held together so the two ports differ.
        let bind = || {
            TcpListener::bind((ip, 0)).unwrap_or_else(|e| {
                panic!("bind {ip}:0 ({e}); the cluster tests need all of 127/8 on lo")
            })
        };
        let (client, peer) = (bind(), bind());
        Self {
            index,
            name: name.to_owned(),
            ip,
            client_port: client.local_addr().expect("bound").port(),
            peer_port: peer.local_addr().expect("bound").port(),
        }
    }

    /// `http://127.0.0.x:<peer port>`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }
}

/// One member: its addresses, what the cluster knows of it, its process.
pub struct Member {
    addr: Reserved,
    /// Learned from the member itself (Status) or from MemberAdd.
    id: u64,
    learner: bool,
    /// Removed from the cluster; its process may still be running.
    removed: bool,
    runner: Runner,
}

impl Member {
    /// `--name`.
    pub fn name(&self) -> &str {
        &self.addr.name
    }

    /// The member ID the cluster assigned.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Added as a learner and not promoted since.
    pub fn is_learner(&self) -> bool {
        self.learner
    }

    /// The client URL, `http://127.0.0.x:<port>`.
    pub fn endpoint(&self) -> String {
        self.addr.client_url()
    }

    /// The peer URL, `http://127.0.0.x:<port>`.
    pub fn peer_url(&self) -> String {
        self.addr.peer_url()
    }

    /// The member's own address, 127.0.0.x.
    pub fn ip(&self) -> Ipv4Addr {
        self.addr.ip
    }

    /// A lazily connecting channel to [`Member::endpoint`] whose calls time
    /// out after 5 s.
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .expect("endpoints are well-formed URLs")
            .connect_timeout(RPC_TIMEOUT)
            .timeout(RPC_TIMEOUT)
            .connect_lazy()
    }

    /// A KV client for this member.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel())
    }

    /// A Lease client for this member.
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel())
    }

    /// A Cluster (membership) client for this member.
    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel())
    }

    /// A Maintenance client for this member.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel())
    }

    /// Maintenance Status of this member.
    pub async fn status(&self) -> Result<StatusResponse, tonic::Status> {
        let status = self.maintenance().status(StatusRequest {}).await?;
        Ok(status.into_inner())
    }

    /// MemberList as this member sees it (not linearizable).
    pub async fn member_list(&self) -> Result<Vec<MemberInfo>, tonic::Status> {
        let list = self
            .cluster()
            .member_list(MemberListRequest::default())
            .await?;
        Ok(list.into_inner().members)
    }

    /// Learners answer only serializable reads.
    fn probe(&self) -> Probe {
        if self.learner {
            Probe::Serializable
        } else {
            Probe::Linearizable
        }
    }
}

/// N server processes forming one cluster; every child is SIGKILLed on
/// drop.
pub struct Cluster {
    flavor: Flavor,
    /// `--initial-cluster-token`, unique per cluster so two tests' members
    /// can never join each other.
    token: String,
    /// Flags every member gets after the harness's own, added ones too.
    extra: Vec<String>,
    members: Vec<Member>,
    /// Data dirs and logs. Declared last, so it is removed only after every
    /// member's child has been killed.
    dir: TempDir,
}

impl Cluster {
    /// Starts `n` members named `m0`, `m1`, … in parallel as a new cluster,
    /// each with `extra` flags after the harness's own, and waits until each
    /// answers a linearizable Range and they agree on a leader.
    ///
    /// # Panics
    ///
    /// If a member exits or does not answer within 20 s, or there is no
    /// leader within 15 s.
    pub async fn start(flavor: Flavor, n: usize, extra: &[&str]) -> Self {
        let program = flavor.program();
        let dir = TempDir::with_prefix("cluster-it-").expect("create a temp dir");
        let token = format!(
            "it-{}",
            dir.path()
                .file_name()
                .expect("temp dirs have a name")
                .to_string_lossy()
        );
        let mut cluster = Self {
            flavor,
            token,
            extra: extra.iter().map(|f| f.to_string()).collect(),
            members: Vec::new(),
            dir,
        };
        let addrs: Vec<Reserved> = (0..n).map(|i| Reserved::new(i, &format!("m{i}"))).collect();
        let initial_cluster = addrs
            .iter()
            .map(|a| format!("{}={}", a.name, a.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for addr in addrs {
            let args = cluster.args(&addr, &initial_cluster, InitialState::New);
            let mut member = cluster.new_member(addr, args, program.clone(), false);
            member.runner.spawn();
            cluster.members.push(member);
        }
        for member in &mut cluster.members {
            member.runner.wait_ready(Probe::Linearizable).await;
            member.id = member_id(&must(member.status().await, "Status"));
        }
        cluster.leader().await;
        cluster
    }

    fn new_member(
        &self,
        addr: Reserved,
        args: Vec<String>,
        program: PathBuf,
        learner: bool,
    ) -> Member {
        let log = self.dir.path().join(format!("{}.log", addr.name));
        let runner = Runner::new(&addr.name, program, args, log, addr.client_url());
        Member {
            addr,
            id: 0,
            learner,
            removed: false,
            runner,
        }
    }

    /// The flags of member `addr`: etcd's clustering flags, the harness's
    /// timing, then the cluster's extra flags.
    fn args(&self, addr: &Reserved, initial_cluster: &str, state: InitialState) -> Vec<String> {
        let data = self.dir.path().join(&addr.name);
        let (client, peer) = (addr.client_url(), addr.peer_url());
        let mut args: Vec<String> = [
            "--name",
            &addr.name,
            "--data-dir",
            &process::path_arg(&data),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state.flag(),
            "--initial-cluster-token",
            &self.token,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(TIMING_FLAGS.iter().map(|a| a.to_string()));
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Member `i`, removed or not.
    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Indices of the members in the cluster (not removed) whose process
    /// runs (not killed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| !self.members[i].removed && self.members[i].runner.is_spawned())
            .collect()
    }

    /// The client URLs of [`Cluster::running`], comma-joined, for
    /// etcdctl's `--endpoints`.
    pub fn endpoints(&self) -> String {
        self.endpoint_list().join(",")
    }

    /// The client URLs of [`Cluster::running`].
    pub fn endpoint_list(&self) -> Vec<String> {
        self.running()
            .into_iter()
            .map(|i| self.members[i].endpoint())
            .collect()
    }

    /// The index of the leader, once every running member names the same
    /// one and it is running (`status.leader == status.header.member_id`
    /// on it).
    ///
    /// # Panics
    ///
    /// If they do not agree within 15 s.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let why = match self.agreed_leader().await {
                Ok(i) => return i,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {LEADER_TIMEOUT:?}: {why}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn agreed_leader(&self) -> Result<usize, String> {
        let mut seen = BTreeSet::new();
        for i in self.running() {
            let status = self.members[i]
                .status()
                .await
                .map_err(|e| format!("{}: {}", self.members[i].name(), e.message()))?;
            seen.insert((status.leader, member_id(&status)));
        }
        let leaders: BTreeSet<u64> = seen.iter().map(|&(leader, _)| leader).collect();
        let [leader] = leaders.into_iter().collect::<Vec<_>>()[..] else {
            return Err(format!("(leader, member) pairs: {seen:?}"));
        };
        let self_reported = seen.iter().any(|&(l, m)| l == leader && m == leader);
        let index = self
            .running()
            .into_iter()
            .find(|&i| self.members[i].id == leader);
        match index {
            Some(i) if self_reported => Ok(i),
            _ => Err(format!(
                "leader {leader:x} is not a running member: {seen:?}"
            )),
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].runner.kill();
    }

    /// Starts member `i` again with the same data dir and flags (a restart
    /// ignores `--initial-cluster*`), and waits until it answers a Range.
    pub async fn restart(&mut self, i: usize) {
        let member = &mut self.members[i];
        let probe = member.probe();
        member.runner.spawn_and_wait(probe).await;
    }

    /// Starts member `i` again with `extra` flags added for this and later
    /// starts, and waits until it answers a Range.
    pub async fn restart_with(&mut self, i: usize, extra: &[&str]) {
        self.members[i].runner.add_args(extra);
        self.restart(i).await;
    }

    /// Starts member `i` again with `extra` flags added for this and later
    /// starts, without waiting for it to answer.
    pub fn spawn_with(&mut self, i: usize, extra: &[&str]) {
        self.members[i].runner.add_args(extra);
        self.members[i].runner.spawn();
    }

    /// Deletes the data dir of member `i`, which must not be running.
    pub fn wipe(&mut self, i: usize) {
        assert!(!self.members[i].runner.is_spawned(), "kill it first");
        let data = self.dir.path().join(self.members[i].name());
        std::fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("remove {data:?}: {e}"));
    }

    /// Marks member `i` as gone for good (its data dir is abandoned), so
    /// that leader and endpoint lookups skip it.
    pub fn forget(&mut self, i: usize) {
        self.members[i].runner.kill();
        self.members[i].removed = true;
    }

    /// SIGKILLs every member in the cluster, one right after another: a
    /// power cut.
    pub fn stop_all(&mut self) {
        for member in self.members.iter_mut().filter(|m| !m.removed) {
            member.runner.kill();
        }
    }

    /// Starts every member in the cluster again, all before waiting for any
    /// (a quorum must be up before any answers a Range), then waits until
    /// each answers and they agree on a leader.
    pub async fn restart_all(&mut self) {
        for member in self.members.iter_mut().filter(|m| !m.removed) {
            member.runner.spawn();
        }
        for member in self.members.iter_mut().filter(|m| !m.removed) {
            let probe = member.probe();
            member.runner.wait_ready(probe).await;
        }
        self.leader().await;
    }

    /// Picks the name and addresses of the next member, for a MemberAdd
    /// sent by other means (etcdctl) before [`Cluster::join`].
    pub fn reserve(&self, name: &str) -> Reserved {
        Reserved::new(self.members.len(), name)
    }

    /// MemberAdd (as a learner or a voter) through the leader, then starts
    /// the member; returns its index.
    ///
    /// # Panics
    ///
    /// If MemberAdd fails other than with "unhealthy cluster", or that goes
    /// on for 20 s, or the member does not come up (see [`Cluster::join`]).
    pub async fn add_member(&mut self, name: &str, learner: bool) -> usize {
        let addr = self.reserve(name);
        let leader = self.leader().await;
        let admin = &self.members[leader];
        let request = MemberAddRequest {
            peer_ur_ls: vec![addr.peer_url()],
            is_learner: learner,
        };
        retry("MemberAdd", RETRY_ADD_REMOVE, async || {
            admin.cluster().member_add(request.clone()).await
        })
        .await;
        self.join(addr).await
    }

    /// Starts a member that was added (and not yet started) under `addr`'s
    /// peer URL: `--initial-cluster-state existing` and, as etcdctl prints
    /// it, `--initial-cluster` listing every member's peer URLs under their
    /// names (empty for members not started yet) and this one's under
    /// `addr`'s name. Waits until it answers a Range (serializable for a
    /// learner) and returns its index.
    ///
    /// # Panics
    ///
    /// If `addr` was not the latest reservation, no member has its peer
    /// URL, or it does not come up within 20 s.
    pub async fn join(&mut self, addr: Reserved) -> usize {
        assert_eq!(
            addr.index,
            self.members.len(),
            "join the latest reservation only"
        );
        let leader = self.leader().await;
        let list = must(self.members[leader].member_list().await, "MemberList");
        let peer_url = addr.peer_url();
        let added = list
            .iter()
            .find(|m| m.peer_ur_ls.contains(&peer_url))
            .unwrap_or_else(|| panic!("no member has peer URL {peer_url}: {list:?}"))
            .clone();
        let initial_cluster = list
            .iter()
            .flat_map(|m| {
                let name = if m.id == added.id {
                    &addr.name
                } else {
                    &m.name
                };
                m.peer_ur_ls.iter().map(move |url| format!("{name}={url}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        let args = self.args(&addr, &initial_cluster, InitialState::Existing);
        let mut member = self.new_member(addr, args, self.flavor.program(), added.is_learner);
        member.id = added.id;
        let probe = member.probe();
        member.runner.spawn_and_wait(probe).await;
        self.members.push(member);
        self.members.len() - 1
    }

    /// MemberRemove of member `i`, through the leader (another running
    /// member if `i` leads). The process is left alone: etcd exits by
    /// itself once it learns of its removal.
    ///
    /// # Panics
    ///
    /// If MemberRemove fails other than with "unhealthy cluster", or that
    /// goes on for 20 s.
    pub async fn remove_member(&mut self, i: usize) {
        let leader = self.leader().await;
        let via = if leader == i {
            *self
                .running()
                .iter()
                .find(|&&j| j != i)
                .expect("another running member")
        } else {
            leader
        };
        let admin = &self.members[via];
        let id = self.members[i].id;
        retry("MemberRemove", RETRY_ADD_REMOVE, async || {
            admin
                .cluster()
                .member_remove(MemberRemoveRequest { id })
                .await
        })
        .await;
        self.members[i].removed = true;
    }

    /// MemberPromote of learner `i` through the leader, retried while the
    /// learner is not in sync.
    ///
    /// # Panics
    ///
    /// If it fails otherwise, or is not in sync within 20 s.
    pub async fn promote(&mut self, i: usize) {
        let leader = self.leader().await;
        let admin = &self.members[leader];
        let id = self.members[i].id;
        retry("MemberPromote", RETRY_PROMOTE, async || {
            admin
                .cluster()
                .member_promote(MemberPromoteRequest { id })
                .await
        })
        .await;
        self.members[i].learner = false;
    }

    /// Waits up to `timeout` for member `i`'s process to exit by itself.
    pub async fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.members[i].runner.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        self.members[i].runner.log_tail()
    }
}

/// `header.member_id` of a Status answer: the member that answered.
fn member_id(status: &StatusResponse) -> u64 {
    status
        .header
        .as_ref()
        .expect("Status has a header")
        .member_id
}

fn must<T>(result: Result<T, tonic::Status>, what: &str) -> T {
    result.unwrap_or_else(|status| panic!("{what}: {status:?}"))
}

/// Calls `call` until it succeeds, retrying while its error message is one
/// of `retry_on`, for at most [`RECONFIG_TIMEOUT`].
async fn retry<T>(
    what: &str,
    retry_on: &[&str],
    mut call: impl AsyncFnMut() -> Result<T, tonic::Status>,
) -> T {
    let start = Instant::now();
    let mut retries = 0;
    loop {
        match call().await {
            Ok(answer) => {
                if retries > 0 {
                    eprintln!(
                        "cluster: {what} succeeded after {retries} retries in {:?}",
                        start.elapsed()
                    );
                }
                return answer;
            }
            Err(status) if retry_on.contains(&status.message()) => {
                assert!(
                    start.elapsed() < RECONFIG_TIMEOUT,
                    "{what} still refused after {RECONFIG_TIMEOUT:?}: {status:?}"
                );
                retries += 1;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(status) => panic!("{what}: {status:?}"),
        }
    }
}
