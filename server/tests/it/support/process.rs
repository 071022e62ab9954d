//! Server child processes: `cairn` and the reference etcd, run the same way.
//!
//! Both flavours share one runner, [`Runner`]: it spawns the binary
//! with etcd's flags, sends its output to a log file next to the data dir
//! (quoted in panics), polls until a Range answers, and kills the child with
//! SIGKILL when dropped. SIGKILL rather than SIGTERM because a test's cleanup
//! must not depend on the server's shutdown path;
//! [`ServerProc::kill_and_restart`] uses the same to model a crash. The
//! runner owns no directory and waits apart from spawning, so that the
//! members of a [`super::cluster::Cluster`] share a temp dir and start in
//! parallel.

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::RangeRequest;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

/// Debian's etcd 3.4, the reference (package `etcd-server`).
pub(super) const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long a fresh or restarted server may take to answer its first Range.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on one readiness probe, so a hung server fails by the deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of the server's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 60;

/// A running server that speaks the etcd v3 API: [`CairnProc`] or [`EtcdProc`].
pub trait ServerProc {
    /// The client URL, `http://127.0.0.1:<port>`.
    fn endpoint(&self) -> String;

    /// SIGKILLs the server, starts it again on the same data dir and ports,
    /// and waits until it answers a Range.
    async fn kill_and_restart(&mut self);

    /// A KV client for [`ServerProc::endpoint`]; it connects on first use.
    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(channel(&self.endpoint()))
    }

    /// A channel to [`ServerProc::endpoint`]; it connects on first use.
    fn channel(&self) -> Channel {
        channel(&self.endpoint())
    }

    /// A Lease client for [`ServerProc::endpoint`]; it connects on first use.
    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(channel(&self.endpoint()))
    }
}

/// The `cairn` binary built from this package, as a one-member cluster.
pub struct CairnProc(Single);

impl CairnProc {
    /// Starts `cairn` on a fresh data dir and free ports.
    ///
    /// # Panics
    ///
    /// If it exits or does not answer a Range within 20 s.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`CairnProc::start`] with extra flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        let ports = Ports::free();
        let dir = TempDir::with_prefix("cairn-it-").expect("create a temp dir");
        let mut args = vec!["--data-dir".into(), path_arg(&dir.path().join("data"))];
        args.extend(ports.cluster_args());
        args.extend(extra.iter().map(|a| a.to_string()));
        Self(Single::start("cairn", cairn_bin(), args, dir, ports).await)
    }
}

impl ServerProc for CairnProc {
    fn endpoint(&self) -> String {
        self.0.runner.client_url.clone()
    }

    async fn kill_and_restart(&mut self) {
        self.0.runner.kill();
        self.0.runner.spawn_and_wait(Probe::Linearizable).await;
    }
}

/// Debian's etcd 3.4 as a one-member cluster: the reference Cairn is
/// compared against.
pub struct EtcdProc(Single);

impl EtcdProc {
    /// Starts etcd on a fresh data dir and free ports.
    ///
    /// # Panics
    ///
    /// If `/usr/bin/etcd` is missing (run `scripts/test.sh`), or if etcd
    /// exits or does not answer a Range within 20 s.
    pub async fn start() -> Self {
        assert_etcd_installed();
        let ports = Ports::free();
        let dir = TempDir::with_prefix("etcd-it-").expect("create a temp dir");
        let mut args = vec![
            "--name".into(),
            "default".into(),
            "--data-dir".into(),
            path_arg(&dir.path().join("data")),
        ];
        args.extend(ports.cluster_args());
        Self(Single::start("etcd", ETCD_BIN.into(), args, dir, ports).await)
    }
}

impl ServerProc for EtcdProc {
    fn endpoint(&self) -> String {
        self.0.runner.client_url.clone()
    }

    async fn kill_and_restart(&mut self) {
        self.0.runner.kill();
        self.0.runner.spawn_and_wait(Probe::Linearizable).await;
    }
}

/// The `cairn` binary this package builds.
pub(super) fn cairn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

/// # Panics
///
/// If `/usr/bin/etcd` is missing, with a pointer to `scripts/test.sh`.
pub(super) fn assert_etcd_installed() {
    assert!(
        Path::new(ETCD_BIN).exists(),
        "{ETCD_BIN} is missing: run scripts/test.sh, which installs Debian's etcd-server \
         (the reference these tests compare Cairn against)"
    );
}

/// A one-member server: its runner and the temp dir holding its data and
/// log.
struct Single {
    /// Dropped first, so the child is killed (and its log quoted) before
    /// the temp dir is removed.
    runner: Runner,
    _dir: TempDir,
}

impl Single {
    async fn start(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        dir: TempDir,
        ports: Ports,
    ) -> Self {
        let log = dir.path().join(format!("{name}.log"));
        let mut runner = Runner::new(name, program, args, log, ports.client_url());
        runner.spawn_and_wait(Probe::Linearizable).await;
        Self { runner, _dir: dir }
    }
}

/// A lazily connecting channel to `endpoint`.
pub(super) fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoints are well-formed URLs")
        .connect_lazy()
}

pub(super) fn path_arg(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_owned()
}

/// The two loopback ports of a one-member cluster.
#[derive(Clone, Copy)]
struct Ports {
    client: u16,
    peer: u16,
}

impl Ports {
    /// Two ports no other server in this test process has been given.
    fn free() -> Self {
        Self {
            client: unused_port(),
            peer: unused_port(),
        }
    }

    fn client_url(self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn peer_url(self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    /// The flags both servers take, with etcd's names.
    fn cluster_args(self) -> Vec<String> {
        let (client, peer) = (self.client_url(), self.peer_url());
        vec![
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("default={peer}"),
        ]
    }
}

/// The first port [`unused_port`] may hand out, and one past its last. The
/// range lies below Linux's ephemeral range (32768–60999), where the kernel
/// picks the local port of every outgoing connection and of every bind to
/// port 0. A port from that range, checked free and released, could be
/// taken by a test client's connection before the server binds it; CI saw
/// etcd exit with "address already in use" that way.
const PORTS: (u16, u16) = (20_000, 32_000);

/// A loopback port that was free a moment ago and is handed out once per
/// test process. Processes start at different points of [`PORTS`], so two
/// test runs on one machine are unlikely to meet either; the bind check
/// skips a port something else holds.
fn unused_port() -> u16 {
    static NEXT: LazyLock<AtomicU16> = LazyLock::new(|| {
        let span = u32::from(PORTS.1 - PORTS.0);
        let offset = std::process::id() % span;
        AtomicU16::new(PORTS.0 + u16::try_from(offset).expect("below the span"))
    });
    loop {
        let port = NEXT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(if p + 1 >= PORTS.1 { PORTS.0 } else { p + 1 })
            })
            .expect("the update always succeeds");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// How a readiness probe reads: a voter answers a linearizable Range once
/// the cluster has a leader; a learner answers only serializable ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    Linearizable,
    Serializable,
}

/// One server child process and everything needed to start it again.
pub(super) struct Runner {
    /// "cairn", "etcd" or a cluster member's name, for messages.
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// Appended to by every run, so a restart keeps the previous output.
    log: PathBuf,
    /// Where the readiness probe connects.
    client_url: String,
    child: Option<Child>,
}

impl Runner {
    /// A runner that has not spawned anything yet.
    pub(super) fn new(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        client_url: String,
    ) -> Self {
        Self {
            name: name.to_owned(),
            program,
            args,
            log,
            client_url,
            child: None,
        }
    }

    /// [`Runner::spawn`], then [`Runner::wait_ready`].
    /// Adds `extra` to the arguments of every later spawn.
    pub(super) fn add_args(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(ToString::to_string));
    }

    pub(super) async fn spawn_and_wait(&mut self, probe: Probe) {
        self.spawn();
        self.wait_ready(probe).await;
    }

    /// Spawns the child, its output appended to the log.
    pub(super) fn spawn(&mut self) {
        assert!(self.child.is_none(), "the previous child was not reaped");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        // The servers read ETCD_* variables as flags; a stray one in the
        // test's environment must not change what is under test.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(var);
            }
        }
        // The log is quoted in panics; keep colour codes out of it.
        command.env("NO_COLOR", "1");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// Polls until the child answers a Range read the `probe` way.
    ///
    /// # Panics
    ///
    /// If the child exits first, or does not answer within 20 s.
    pub(super) async fn wait_ready(&mut self, probe: Probe) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before answering a Range\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let error = match self.probe(probe).await {
                Ok(()) => return,
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                panic!(
                    "{} did not answer a {probe:?} Range on {} within {READY_TIMEOUT:?}; last error: {error}\n{}",
                    self.name,
                    self.client_url,
                    self.log_tail()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// One Range on a fresh connection, bounded by [`PROBE_TIMEOUT`].
    async fn probe(&self, probe: Probe) -> Result<(), String> {
        let endpoint = Endpoint::from_shared(self.client_url.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let request = RangeRequest {
            key: b"readiness-probe".to_vec(),
            serializable: probe == Probe::Serializable,
            ..RangeRequest::default()
        };
        KvClient::new(channel)
            .range(request)
            .await
            .map(drop)
            .map_err(|status| format!("{status:?}"))
    }

    /// Whether a child was spawned and not killed or seen to exit since.
    pub(super) fn is_spawned(&self) -> bool {
        self.child.is_some()
    }

    /// The child's exit status if it has exited on its own; the child is
    /// then reaped and forgotten.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("poll the child")?;
        self.child = None;
        Some(status)
    }

    /// SIGKILLs the child, if any, and reaps it.
    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the log, headed by its path.
    pub(super) fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- last {} lines of {} ---\n{}",
            tail.len(),
            self.log.display(),
            tail.join("\n")
        )
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill();
        // The test failed: show what the server said, before the temp dir
        // and its log are removed. The test harness prints captured output
        // only for failed tests.
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
