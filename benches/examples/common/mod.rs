//! What the load loops share: connections and percentiles.

use std::time::Duration;

use anyhow::Context;
use etcd_client::Client;

/// `conns` (at least one) separate connections, spread round-robin over
/// `endpoints` (comma-separated), each to one endpoint only.
pub async fn connect(endpoints: &str, conns: usize) -> anyhow::Result<Vec<Client>> {
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    let mut out = Vec::new();
    for i in 0..conns.max(1) {
        let endpoint = endpoints[i % endpoints.len()];
        let client = Client::connect([endpoint], None)
            .await
            .with_context(|| format!("connect to {endpoint}"))?;
        out.push(client);
    }
    Ok(out)
}

/// The `p` quantile of sorted latencies, in milliseconds (0 when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    cairn_benches::report::percentile(sorted, p).as_secs_f64() * 1000.0
}
