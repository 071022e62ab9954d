//! In-process Cairn members for cairnctl's tests, and running cairnctl.
//!
//! Member `i` of cluster `c` listens on 127.0.0.(61 + 4c + i) (Linux routes
//! all of 127/8 to `lo`; the server's tests use .11 and up, the client's
//! .41 and up), on a client and a peer port that were free a moment before.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_client::{Client, ConnectOptions};
use cairn_server::{Config, Node, Scheme, Url};

/// etcdctl 3.5 (3.4 sends the whole URL as :authority, which Cairn's h2
/// refuses; see docs/compatibility.md).
pub const ETCDCTL35: &str = "/opt/etcd-3.5/etcdctl";

/// One member's address and data dir.
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }
}

/// The addresses and data dirs of `n` members of test cluster `c`.
pub fn reserve(c: u8, n: usize, root: &Path, prefix: &str) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 0, 61 + 4 * c + i as u8);
            let bind = || TcpListener::bind((ip, 0)).expect("bind 127.0.0.x:0");
            let (client, peer) = (bind(), bind());
            let name = format!("{prefix}{i}");
            Member {
                data_dir: root.join(&name),
                name,
                ip,
                client_port: client.local_addr().expect("bound").port(),
                peer_port: peer.local_addr().expect("bound").port(),
            }
        })
        .collect()
}

/// `--initial-cluster` for `members`.
pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The config of `m` in a cluster of `members`.
pub fn config(m: &Member, members: &[Member], token: &str) -> Config {
    let mut config = Config::default_for_tests(&m.data_dir);
    config.name = m.name.clone();
    let url = |port| Url::new(Scheme::Http, m.ip.to_string(), port);
    config.listen_client_urls = vec![url(m.client_port)];
    config.advertise_client_urls = vec![url(m.client_port)];
    config.listen_peer_urls = vec![url(m.peer_port)];
    config.initial_advertise_peer_urls = vec![url(m.peer_port)];
    config.initial_cluster = Some(initial_cluster(members).parse().expect("valid"));
    config.initial_cluster_token = token.to_owned();
    config
}

/// Starts every member (concurrently: each waits for the others).
pub async fn start_all(members: &[Member], token: &str) -> Vec<Node> {
    let starts = members
        .iter()
        .map(|m| Node::start(config(m, members, token)));
    futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("member starts"))
        .collect()
}

/// A client of `members`, once one of them answers a linearizable read.
pub async fn client(members: &[Member]) -> Client {
    let urls: Vec<String> = members.iter().map(Member::client_url).collect();
    let client = Client::connect(urls, ConnectOptions::default())
        .await
        .expect("client connects");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(cairn_client::Get::one("x")).await.is_err() {
        assert!(Instant::now() < deadline, "no leader within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
}

/// What a command printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            code: o.status.code().unwrap_or(-1),
        }
    }
}

impl Run {
    /// Asserts a zero exit, and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "failed: {self:?}");
        self.stdout
    }
}

/// Runs `program` with `args` and `stdin`, off the runtime.
pub async fn run_program(program: &str, args: &[&str], stdin: &str) -> Run {
    let (program, stdin) = (program.to_owned(), stdin.to_owned());
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(&program)
            .args(&args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(stdin.as_bytes())
            .expect("stdin written");
        Run::from(child.wait_with_output().expect("exits"))
    })
    .await
    .expect("joined")
}

/// Runs cairnctl.
pub async fn cairnctl(args: &[&str]) -> Run {
    run_program(env!("CARGO_BIN_EXE_cairnctl"), args, "").await
}

/// Runs cairnctl with `stdin`.
pub async fn cairnctl_stdin(args: &[&str], stdin: &str) -> Run {
    run_program(env!("CARGO_BIN_EXE_cairnctl"), args, stdin).await
}
