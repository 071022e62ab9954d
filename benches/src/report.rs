//! What a run measured, and how it is printed: throughput, a latency
//! histogram and percentiles, as text in etcd benchmark's layout or as one
//! JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

/// The percentiles every report lists.
const PERCENTILES: [f64; 8] = [0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.999];
/// Bars in the text histogram.
const BUCKETS: usize = 10;
/// Width of the longest bar.
const BAR_WIDTH: usize = 40;

/// The outcome of one workload run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The workload's name, as on the command line.
    pub workload: String,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// One latency per successful operation, in any order.
    pub latencies: Vec<Duration>,
    /// Failed operations.
    pub errors: usize,
    /// The first failure, to tell why.
    pub first_error: Option<String>,
    /// Workload-specific figures (name, value), printed after the summary.
    pub extra: Vec<(String, f64)>,
}

impl Report {
    /// A report of `latencies` over `elapsed`.
    pub fn new(workload: &str, elapsed: Duration, latencies: Vec<Duration>) -> Self {
        Report {
            workload: workload.to_owned(),
            elapsed,
            latencies,
            errors: 0,
            first_error: None,
            extra: Vec::new(),
        }
    }

    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.latencies.len() as f64 / secs
        } else {
            0.0
        }
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        sorted
    }

    /// The report as one JSON object; latencies in milliseconds.
    pub fn json(&self) -> serde_json::Value {
        let sorted = self.sorted();
        let mut percentiles = serde_json::Map::new();
        for p in PERCENTILES {
            percentiles.insert(label(p), json!(ms(percentile(&sorted, p))));
        }
        let histogram: Vec<_> = histogram(&sorted)
            .into_iter()
            .map(|(upper, count)| json!({ "le_ms": ms(upper), "count": count }))
            .collect();
        let extra: serde_json::Map<_, _> = self
            .extra
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect();
        json!({
            "workload": self.workload,
            "requests": self.latencies.len(),
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.elapsed.as_secs_f64(),
            "rps": self.throughput(),
            "latency_ms": {
                "min": ms(sorted.first().copied().unwrap_or_default()),
                "mean": ms(mean(&sorted)),
                "max": ms(sorted.last().copied().unwrap_or_default()),
                "percentiles": percentiles,
            },
            "histogram": histogram,
            "extra": extra,
        })
    }

    /// The report as text, in the layout of etcd's benchmark tool.
    pub fn text(&self) -> String {
        let sorted = self.sorted();
        let mut out = String::new();
        let secs = |d: Duration| d.as_secs_f64();
        let _ = writeln!(out, "\nSummary ({}):", self.workload);
        let _ = writeln!(out, "  Total:\t{:.4} secs.", secs(self.elapsed));
        let _ = writeln!(out, "  Requests:\t{}", sorted.len());
        if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
            let _ = writeln!(out, "  Slowest:\t{:.4} secs.", secs(*last));
            let _ = writeln!(out, "  Fastest:\t{:.4} secs.", secs(*first));
            let _ = writeln!(out, "  Average:\t{:.4} secs.", secs(mean(&sorted)));
        }
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.throughput());
        for (name, value) in &self.extra {
            let _ = writeln!(out, "  {name}:\t{value:.4}");
        }
        if self.errors > 0 {
            let _ = writeln!(
                out,
                "  Errors:\t{} (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        let buckets = histogram(&sorted);
        let most = buckets.iter().map(|&(_, n)| n).max().unwrap_or(0).max(1);
        let _ = writeln!(out, "\nResponse time histogram:");
        for (upper, count) in buckets {
            let bar = "∎".repeat(count * BAR_WIDTH / most);
            let _ = writeln!(out, "  {:.4} [{count}]\t|{bar}", secs(upper));
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for p in PERCENTILES {
            let at = percentile(&sorted, p);
            let _ = writeln!(out, "  {}% in {:.4} secs.", p * 100.0, secs(at));
        }
        out
    }
}

/// "p50", "p99", "p99.9".
fn label(p: f64) -> String {
    format!("p{}", p * 100.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mean(sorted: &[Duration]) -> Duration {
    match u32::try_from(sorted.len()) {
        Ok(n) if n > 0 => sorted.iter().sum::<Duration>() / n,
        _ => Duration::ZERO,
    }
}

/// The `p` quantile of `sorted` (nearest rank; zero when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// [`BUCKETS`] equal-width buckets from the fastest to the slowest
/// latency: (upper bound, count).
fn histogram(sorted: &[Duration]) -> Vec<(Duration, usize)> {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let width = (last - first) / BUCKETS as u32;
    let mut buckets: Vec<(Duration, usize)> = (1..=BUCKETS)
        .map(|i| (first + width * i as u32, 0))
        .collect();
    buckets[BUCKETS - 1].0 = last;
    let mut i = 0;
    for &d in sorted {
        while d > buckets[i].0 && i < BUCKETS - 1 {
            i += 1;
        }
        buckets[i].1 += 1;
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 0.999), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn histogram_counts_every_latency_once() {
        let sorted = millis(&[1, 1, 2, 5, 10, 10, 11]);
        let buckets = histogram(&sorted);
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<usize>(), sorted.len());
        assert_eq!(buckets[0], (Duration::from_millis(2), 3));
        assert_eq!(buckets[BUCKETS - 1], (Duration::from_millis(11), 1));
    }

    #[test]
    fn json_has_the_figures() {
        let report = Report::new("put", Duration::from_secs(2), millis(&[1, 2, 3, 4]));
        let json = report.json();
        assert_eq!(json["requests"], 4);
        assert_eq!(json["rps"], 2.0);
        assert_eq!(json["latency_ms"]["percentiles"]["p50"], 2.0);
        assert_eq!(json["latency_ms"]["max"], 4.0);
    }
}
