#!/usr/bin/env bash
# Measures leases against cairn and etcd (Debian's 3.4) with the same load
# loop (benches/examples/leaseload.rs), alternating A B A B on fresh data
# dirs. Prints one JSON line a run:
#   cycles   grant + put with the lease + one keep-alive + revoke, 32 clients
#   expiry   put p99 while 10,000 leases (TTL 5 s, one key each) expire at
#            once, against the quiet seconds before
#
# usage: scripts/compare-lease.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
source scripts/bench-servers.sh
cargo build --release -q --bin cairn --example leaseload -p cairn-server -p cairn-benches
load=target/release/examples/leaseload

for round in $(seq "$rounds"); do
  for server in cairn etcd; do
    for op in cycles expiry; do
      run "$server" "$op" --op "$op" --clients 32 --total 10000
    done
  done
done
