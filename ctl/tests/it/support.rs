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

/// `m`'s etcd flags as an operator writes them: name, data dir, and its
/// client and peer URLs, without the bootstrap flags.
pub fn flags(m: &Member) -> Vec<String> {
    let data_dir = m.data_dir.to_str().expect("utf-8").to_owned();
    [
        ("--name", m.name.clone()),
        ("--data-dir", data_dir),
        ("--listen-client-urls", m.client_url()),
        ("--advertise-client-urls", m.client_url()),
        ("--listen-peer-urls", m.peer_url()),
        ("--initial-advertise-peer-urls", m.peer_url()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// Starts a member from a command line, as `cairn FLAGS...` would
/// (`flags(m)` followed by `extra`; a later flag overrides an earlier one).
pub async fn start_with_flags(m: &Member, extra: &[String]) -> Node {
    use clap::Parser;
    let args = std::iter::once("cairn".to_owned())
        .chain(flags(m))
        .chain(extra.iter().cloned());
    let config = Config::try_parse_from(args).expect("valid flags");
    config.validate().expect("consistent flags");
    Node::start(config).await.expect("member starts")
}

/// Waits until `check` answers `Ok`, for at most `within`; the panic names
/// `what` and the last `Err`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(t) => return t,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// cairnctl with `--endpoints` of `members` (comma separated) before `args`.
pub async fn ctl_at(members: &[&Member], args: &[&str]) -> Run {
    let eps = members
        .iter()
        .map(|m| m.client_url())
        .collect::<Vec<_>>()
        .join(",");
    let all: Vec<&str> = ["--endpoints", eps.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    cairnctl(&all).await
}

/// `endpoint hashkv --rev REV -w json` of `members`: each one's hash, in
/// order, or the failed run.
pub async fn hashkv(members: &[&Member], rev: i64) -> Result<Vec<serde_json::Value>, Run> {
    let rev = rev.to_string();
    let out = ctl_at(
        members,
        &["-w", "json", "endpoint", "hashkv", "--rev", &rev],
    )
    .await;
    if out.code != 0 {
        return Err(out);
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    Ok(v.as_array()
        .expect("array")
        .iter()
        .map(|h| h["hash"].clone())
        .collect())
}

/// `endpoint status -w json` of `members` (or, with `--cluster`, of every
/// member it lists), by client URL: (member id, leader id, raft index,
/// applied index, learner).
pub async fn status(members: &[&Member], cluster: bool) -> Result<Vec<Status>, String> {
    let mut args = vec!["-w", "json", "endpoint", "status"];
    if cluster {
        args.push("--cluster");
    }
    let r = ctl_at(members, &args).await;
    if r.code != 0 {
        return Err(r.stderr);
    }
    let v: serde_json::Value = serde_json::from_str(&r.stdout).map_err(|e| e.to_string())?;
    let n = |s: &serde_json::Value, f: &str| s[f].as_u64().unwrap_or(0);
    Ok(v.as_array()
        .expect("an array")
        .iter()
        .map(|s| Status {
            endpoint: s["Endpoint"].as_str().expect("endpoint").to_owned(),
            id: n(&s["header"], "member_id"),
            leader: n(s, "leader"),
            raft_index: n(s, "raftIndex"),
            applied_index: n(s, "raftAppliedIndex"),
            is_learner: s["isLearner"].as_bool().expect("isLearner"),
        })
        .collect())
}

/// One row of `endpoint status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub endpoint: String,
    pub id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
}

/// `member list -w json`: (id, name, peer URLs, client URLs, learner).
pub async fn member_list(members: &[&Member]) -> Vec<(u64, String, Vec<String>, bool)> {
    let out = ctl_at(members, &["-w", "json", "member", "list"])
        .await
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let strings = |a: &serde_json::Value| -> Vec<String> {
        a.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut list: Vec<_> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().expect("ID"),
                m["name"].as_str().unwrap_or_default().to_owned(),
                strings(&m["peerURLs"]),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list
}
