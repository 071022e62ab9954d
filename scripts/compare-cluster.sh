#!/usr/bin/env bash
# Measures 3-member clusters: puts with 1 and with 64 clients, and
# linearizable and serializable point ranges with 64 clients, against
# cairn and etcd (Debian's 3.4), alternating A B A B on fresh data dirs,
# with the same load loop (benches/examples/kvload.rs) spreading its
# connections over all three members. Prints one JSON line a run.
#
# usage: scripts/compare-cluster.sh [rounds] [total]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
total=${2:-20000}
nodes=3
source scripts/bench-servers.sh
cargo build --release -q --bin cairn --example kvload -p cairn-server -p cairn-benches
load=target/release/examples/kvload

for round in $(seq "$rounds"); do
  for server in cairn etcd; do
    run "$server" put-1 --op put --clients 1 --conns 1 --total $((total / 10))
    run "$server" put-64 --op put --clients 64 --conns 8 --total "$total"
    run "$server" get-64 --op get --clients 64 --conns 8 --total "$total"
    run "$server" get-serializable-64 --op get-serializable --clients 64 --conns 8 --total "$total"
  done
done
