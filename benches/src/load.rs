//! The load loop every workload shares: connections, keys, pacing, and
//! `clients` workers taking operations from one counter until `total`
//! have been sent.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use crate::report::Report;

/// How many connections, to where, and how hard to push.
#[derive(Debug, Clone)]
pub struct Load {
    /// Client URLs; connections are spread over them round-robin.
    pub endpoints: Vec<String>,
    /// gRPC connections (HTTP/2), at least one.
    pub conns: usize,
    /// Concurrent workers, each with one request in flight.
    pub clients: usize,
    /// Operations in all.
    pub total: usize,
    /// Operations per second in all; 0 for as fast as they go.
    pub rate: u64,
    /// The server's processes, whose CPU time each run reports.
    pub server_pids: Vec<u32>,
}

impl Load {
    /// Opens the connections: connection `i` goes to endpoint
    /// `i % endpoints`.
    pub async fn connect(&self) -> anyhow::Result<Vec<Channel>> {
        anyhow::ensure!(!self.endpoints.is_empty(), "no endpoints");
        let mut channels = Vec::new();
        for i in 0..self.conns.max(1) {
            let url = &self.endpoints[i % self.endpoints.len()];
            let channel = Endpoint::from_shared(url.clone())
                .with_context(|| format!("bad endpoint {url}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connect to {url}"))?;
            channels.push(channel);
        }
        Ok(channels)
    }

    /// Runs `op(client, n)` for n in 0..total, spread over the clients and
    /// paced by `rate`; times each call. Client `c` is handed `c` so it can
    /// pick its connection and state.
    pub async fn drive<F, Fut>(&self, workload: &str, op: F) -> Report
    where
        F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let next = Arc::new(AtomicUsize::new(0));
        let cpu = CpuTimes::now(&self.server_pids);
        let pacer = Arc::new(Pacer::new(self.rate));
        let started = Instant::now();
        let mut workers = Vec::new();
        for client in 0..self.clients.max(1) {
            let (next, pacer, op, total) = (next.clone(), pacer.clone(), op.clone(), self.total);
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut first_error) = (0, None);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    pacer.wait().await;
                    let sent = Instant::now();
                    match op(client, n).await {
                        Ok(()) => latencies.push(sent.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            }));
        }
        let mut report = Report::new(workload, Duration::ZERO, Vec::new());
        for worker in workers {
            match worker.await {
                Ok((latencies, errors, first_error)) => {
                    report.latencies.extend(latencies);
                    report.errors += errors;
                    if report.first_error.is_none() {
                        report.first_error = first_error;
                    }
                }
                Err(e) => {
                    report.errors += 1;
                    report
                        .first_error
                        .get_or_insert(format!("a worker panicked: {e}"));
                }
            }
        }
        report.elapsed = started.elapsed();
        let ops = report.latencies.len() + report.errors;
        report.extra = CpuTimes::now(&self.server_pids).per_op_since(&cpu, ops);
        report
    }
}

/// CPU time (user and system) used so far by the server's processes and by
/// this one, from `/proc`. It tells what an operation costs each side, which
/// throughput alone hides when both share the machine's cores.
struct CpuTimes {
    server: Option<Duration>,
    client: Option<Duration>,
}

impl CpuTimes {
    fn now(server_pids: &[u32]) -> Self {
        // No pids, no figure (an empty sum would be zero).
        let server = if server_pids.is_empty() {
            None
        } else {
            server_pids
                .iter()
                .map(|pid| cpu_time(&pid.to_string()))
                .sum()
        };
        CpuTimes {
            server,
            client: cpu_time("self"),
        }
    }

    /// Microseconds of CPU per operation since `before`, as report extras.
    fn per_op_since(&self, before: &CpuTimes, ops: usize) -> Vec<(String, f64)> {
        let per_op = |now: Option<Duration>, then: Option<Duration>| {
            let used = now?.checked_sub(then?)?;
            (ops > 0).then(|| used.as_secs_f64() * 1e6 / ops as f64)
        };
        [
            ("server_cpu_us_per_op", per_op(self.server, before.server)),
            ("client_cpu_us_per_op", per_op(self.client, before.client)),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?)))
        .collect()
    }
}

/// Ticks a second in `/proc/<pid>/stat`: Linux's USER_HZ, 100 on every
/// architecture it exports times for.
const USER_HZ: u64 = 100;

/// User plus system CPU time of process `pid` ("self" for this one), or
/// `None` if it is gone.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; after it come the
    // state (field 3) and the rest, so utime (field 14) is the 12th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// Spaces operations `1 / rate` apart, whoever sends them.
struct Pacer {
    started: Instant,
    every: Option<Duration>,
    tickets: AtomicU64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Pacer {
            started: Instant::now(),
            every: (rate > 0)
                .then(|| Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX)),
            tickets: AtomicU64::new(0),
        }
    }

    async fn wait(&self) {
        if let Some(every) = self.every {
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            let at = self.started + every * u32::try_from(ticket).unwrap_or(u32::MAX);
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// The keys a workload writes and reads: `key_space` of them, each
/// `key_size` bytes (decimal, zero-padded, longer only if the number needs
/// it), picked in order or at random.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Bytes per key.
    pub size: usize,
    /// Distinct keys.
    pub space: usize,
    /// In order rather than at random.
    pub sequential: bool,
    /// Put before every key, to keep workloads apart.
    pub prefix: String,
}

impl Keys {
    /// Key number `n`.
    pub fn nth(&self, n: usize) -> Vec<u8> {
        let digits = self.size.saturating_sub(self.prefix.len());
        format!("{}{n:0digits$}", self.prefix).into_bytes()
    }

    /// The key operation `n` uses.
    pub fn for_op(&self, n: usize) -> Vec<u8> {
        self.nth(self.index_for_op(n))
    }

    /// `count` distinct keys (if the space holds that many) for operation
    /// `n`: the one [`Keys::for_op`] picks and those after it.
    pub fn run_for_op(&self, n: usize, count: usize) -> Vec<Vec<u8>> {
        let (first, space) = (self.index_for_op(n), self.space.max(1));
        (0..count).map(|i| self.nth((first + i) % space)).collect()
    }

    fn index_for_op(&self, n: usize) -> usize {
        let space = self.space.max(1);
        if self.sequential {
            n % space
        } else {
            // SplitMix64 of the operation number: reproducible, spread out.
            let mut z = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % space as u64) as usize
        }
    }

    /// The end of the range holding every key: the prefix's successor.
    pub fn range_end(&self) -> Vec<u8> {
        let mut end = self.prefix.clone().into_bytes();
        match end.last_mut() {
            Some(last) if *last < 0xff => *last += 1,
            _ => end = vec![0],
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_size_asked_for_and_stay_in_the_space() {
        let keys = Keys {
            size: 8,
            space: 100,
            sequential: false,
            prefix: "k/".into(),
        };
        assert_eq!(keys.nth(7), b"k/000007");
        for n in 0..1000 {
            let key = keys.for_op(n);
            assert_eq!(key.len(), 8);
            let number: usize = std::str::from_utf8(&key[2..]).unwrap().parse().unwrap();
            assert!(number < 100);
        }
        assert_eq!(keys.range_end(), b"k0");
        let sequential = Keys {
            sequential: true,
            ..keys
        };
        assert_eq!(sequential.for_op(101), b"k/000001");
        assert_eq!(
            sequential.run_for_op(99, 3),
            [
                b"k/000099".to_vec(),
                b"k/000000".to_vec(),
                b"k/000001".to_vec()
            ]
        );
    }

    #[test]
    fn cpu_time_counts_what_this_process_spends() {
        let before = cpu_time("self").unwrap();
        // Spin until the clock moves (a few ticks), however busy the box.
        let started = Instant::now();
        let mut x = 0u64;
        while cpu_time("self").unwrap() < before + Duration::from_millis(50)
            && started.elapsed() < Duration::from_secs(30)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_time("self").unwrap() >= before + Duration::from_millis(50));
        assert_eq!(cpu_time(&u32::MAX.to_string()), None);
    }

    #[tokio::test]
    async fn drive_runs_every_operation_once_at_the_rate() {
        let load = Load {
            endpoints: vec![],
            conns: 1,
            clients: 4,
            total: 20,
            rate: 100,
            server_pids: vec![std::process::id()],
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let report = load
            .drive("test", move |_, n| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(n);
                    if n == 3 {
                        Err("three".to_owned())
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        assert_eq!((report.latencies.len(), report.errors), (19, 1));
        assert_eq!(report.first_error.as_deref(), Some("three"));
        // The "server" here is this process: both figures are there.
        let names: Vec<_> = report.extra.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["server_cpu_us_per_op", "client_cpu_us_per_op"]);
        // 20 operations at 100/s: the last goes out 190 ms after the first.
        assert!(
            report.elapsed >= Duration::from_millis(190),
            "{:?}",
            report.elapsed
        );
    }
}
