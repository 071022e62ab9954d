#!/usr/bin/env bash
# Measures single-node puts and point ranges with 64 clients against cairn
# and etcd (Debian's 3.4), alternating A B A B on fresh data dirs, with the
# same load loop (benches/examples/kvload.rs). Prints one JSON line a run.
#
# usage: scripts/compare-kv.sh [rounds] [total]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
total=${2:-50000}
source scripts/bench-servers.sh
cargo build --release -q --bin cairn --example kvload -p cairn-server -p cairn-benches
load=target/release/examples/kvload

for round in $(seq "$rounds"); do
  for server in cairn etcd; do
    for op in put get; do
      run "$server" "$op" --op "$op" --clients 64 --total "$total"
    done
  done
done
