//! Test clusters of either flavour: Cairn members in-process, or Debian's
//! etcd 3.4 (`/usr/bin/etcd`) as child processes.
//!
//! Member `i` listens on its own address, 127.0.0.(41+i) (Linux routes all of
//! 127/8 to `lo`; the server's own tests use .11 and up), on a client and a
//! peer port that were free a moment before. Raft timing is 100 ms
//! heartbeats and 1 s elections for both flavours, so a leader failure is
//! over in about a second. Members are stopped when the cluster is dropped:
//! etcd by SIGKILL, Cairn by dropping the test's runtime (or
//! [`Cluster::kill`], which shuts the node down).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::{Client, ConnectOptions, MemberId};
use cairn_server::{Config, Node, Scheme, Url};
use tempfile::TempDir;

/// Debian's etcd 3.4, the reference.
const ETCD_BIN: &str = "/usr/bin/etcd";
/// The last octet of member 0's address.
const FIRST_HOST: u8 = 41;
/// How long a cluster may take to elect a leader everyone agrees on.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// Which server the members run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Cairn, in-process.
    Cairn,
    /// etcd 3.4, as processes.
    Etcd,
}

enum Running {
    Cairn(Box<Node>),
    Etcd(Child),
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    running: Option<Running>,
    id: Option<MemberId>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }
}

/// A cluster of `n` members of one flavour.
pub struct Cluster {
    pub flavor: Flavor,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    /// Data dirs and etcd logs; dropped last.
    dir: TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until they agree on a leader.
    pub async fn start(flavor: Flavor, n: usize) -> Cluster {
        if flavor == Flavor::Etcd {
            assert!(
                Path::new(ETCD_BIN).exists(),
                "{ETCD_BIN} is missing: run scripts/test.sh, which installs Debian's etcd-server"
            );
        }
        let dir = TempDir::with_prefix("cairn-client-it-").expect("create a temp dir");
        let token = format!(
            "client-it-{}",
            dir.path()
                .file_name()
                .expect("temp dirs have names")
                .to_string_lossy()
        );
        let members: Vec<Member> = (0..n).map(reserve).collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            flavor,
            members,
            initial_cluster,
            token,
            dir,
        };
        let starts: Vec<_> = (0..n).map(|i| cluster.launch(i)).collect();
        let started = futures::future::join_all(starts).await;
        for (member, running) in cluster.members.iter_mut().zip(started) {
            member.running = Some(running);
        }
        cluster.leader().await;
        cluster
    }

    /// Starts member `i`'s server (data dir kept across restarts).
    fn launch(&self, i: usize) -> impl std::future::Future<Output = Running> + use<> {
        let member = &self.members[i];
        let data_dir = self.dir.path().join(&member.name);
        let (name, client, peer) = (member.name.clone(), member.client_url(), member.peer_url());
        let (ip, client_port, peer_port) = (member.ip, member.client_port, member.peer_port);
        let initial_cluster = self.initial_cluster.clone();
        let token = self.token.clone();
        let log = self.dir.path().join(format!("{name}.log"));
        let flavor = self.flavor;
        async move {
            match flavor {
                Flavor::Cairn => {
                    let mut config = Config::default_for_tests(data_dir);
                    config.name = name;
                    let url = |port| Url::new(Scheme::Http, ip.to_string(), port);
                    config.listen_client_urls = vec![url(client_port)];
                    config.advertise_client_urls = vec![url(client_port)];
                    config.listen_peer_urls = vec![url(peer_port)];
                    config.initial_advertise_peer_urls = vec![url(peer_port)];
                    config.initial_cluster = Some(initial_cluster.parse().expect("valid"));
                    config.initial_cluster_token = token;
                    Running::Cairn(Box::new(
                        Node::start(config).await.expect("cairn member starts"),
                    ))
                }
                Flavor::Etcd => Running::Etcd(spawn_etcd(
                    &name,
                    &data_dir,
                    &client,
                    &peer,
                    &initial_cluster,
                    &token,
                    &log,
                )),
            }
        }
    }

    /// Every member's client URL, running or not, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// A client over every member's endpoint.
    pub async fn client(&self) -> Client {
        self.client_with(ConnectOptions::default()).await
    }

    /// A client over every member's endpoint, with `options`.
    pub async fn client_with(&self, options: ConnectOptions) -> Client {
        Client::connect(self.endpoints(), options)
            .await
            .expect("client connects")
    }

    /// The index of the leader, once every running member names the same
    /// running one.
    pub async fn leader(&mut self) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            match self.agreed_leader().await {
                Ok(i) => return i,
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "no agreed leader within {LEADER_TIMEOUT:?}: {why}\n{}",
                    self.logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&mut self) -> Result<usize, String> {
        let mut leaders = Vec::new();
        for i in 0..self.members.len() {
            if self.members[i].running.is_none() {
                continue;
            }
            let url = self.members[i].client_url();
            let client = Client::connect([url.as_str()], ConnectOptions::default())
                .await
                .map_err(|e| e.to_string())?
                .with_request_timeout(Duration::from_secs(1));
            let status = client
                .maintenance()
                .status()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            self.members[i].id = Some(status.header.member_id);
            leaders.push(status.leader);
        }
        let first = leaders.first().copied().flatten().ok_or("no leader yet")?;
        if leaders.iter().any(|l| *l != Some(first)) {
            return Err(format!("leaders disagree: {leaders:?}"));
        }
        self.members
            .iter()
            .position(|m| m.id == Some(first) && m.running.is_some())
            .ok_or_else(|| format!("leader {first} is not a running member"))
    }

    /// Member `i`'s ID (known once a leader was agreed on).
    pub fn member_id(&self, i: usize) -> MemberId {
        self.members[i]
            .id
            .expect("member ids are learned by leader()")
    }

    /// Stops member `i`: SIGKILL for etcd, shutdown for Cairn (which ends
    /// its streams and connections, as a crash would for a client).
    pub async fn kill(&mut self, i: usize) {
        match self.members[i].running.take() {
            Some(Running::Cairn(node)) => node.shutdown().await,
            Some(Running::Etcd(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }

    /// Starts member `i` again on its data dir.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.members[i].running.is_none(), "member {i} is running");
        let running = self.launch(i).await;
        self.members[i].running = Some(running);
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let path = self.dir.path().join(format!("{}.log", m.name));
            if let Ok(log) = std::fs::read_to_string(&path) {
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    path.display(),
                    tail.join("\n")
                ));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for member in &mut self.members {
            if let Some(Running::Etcd(child)) = &mut member.running {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Picks member `i`'s name, address and two free ports.
fn reserve(i: usize) -> Member {
    let host = u8::try_from(usize::from(FIRST_HOST) + i).expect("few members");
    let ip = Ipv4Addr::new(127, 0, 0, host);
    let bind = || TcpListener::bind((ip, 0)).expect("bind 127.0.0.x:0 (Linux loopback)");
    // Both held at once so that they differ.
    let (client, peer) = (bind(), bind());
    Member {
        name: format!("m{i}"),
        ip,
        client_port: client.local_addr().expect("bound").port(),
        peer_port: peer.local_addr().expect("bound").port(),
        running: None,
        id: None,
    }
}

fn spawn_etcd(
    name: &str,
    data_dir: &PathBuf,
    client: &str,
    peer: &str,
    initial_cluster: &str,
    token: &str,
    log: &Path,
) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the etcd log");
    let mut command = Command::new(ETCD_BIN);
    command
        .args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
        ])
        .args([
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
        ])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-cluster-token", token])
        .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("ETCD_") {
            command.env_remove(var);
        }
    }
    command.spawn().expect("spawn etcd")
}

/// Defines `#[tokio::test]`s `<name>_cairn` and `<name>_etcd` running the
/// async fn `<name>(Flavor)`.
#[macro_export]
macro_rules! both_flavors {
    ($($name:ident),* $(,)?) => {
        mod cairn {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Flavor::Cairn).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Flavor::Etcd).await;
                }
            )*
        }
    };
}

/// A TCP proxy in front of one endpoint that can be told to swallow the
/// server's bytes and then cut every connection: a request that reached
/// the server, whose answer never comes back.
pub struct Proxy {
    url: String,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.40 in front of `target` (`http://ip:port`).
    pub async fn start(target: &str) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};

        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 40), 0))
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let swallow = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let swallowing = Arc::clone(&swallow);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let swallowing = Arc::clone(&swallowing);
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    let upstream = tokio::io::copy(&mut client_rx, &mut server_tx);
                    let downstream = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = server_rx.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if !swallowing.load(Ordering::SeqCst) {
                                client_tx.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    // Dropping both halves closes both connections.
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Proxy { url, swallow, cut }
    }

    /// The proxy's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, the server's bytes are dropped.
    pub fn swallow_responses(&self) {
        self.swallow
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection through the proxy.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}
