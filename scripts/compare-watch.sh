#!/usr/bin/env bash
# Measures watch fan-out against cairn and etcd (Debian's 3.4) with the same
# load loop (benches/examples/watchload.rs), alternating A B A B on fresh data
# dirs. Prints one JSON line a run:
#   fanout   200 watchers (one stream each) x 500 puts by 8 writers
#   wide     10,000 watchers over 100 streams x 100 puts, 4 writers; also
#            RSS before and after creating them (memory per idle watcher)
#   writes   4,000 puts by 8 writers, 100 watchers, without and with a
#            stalled stream of 100 watchers
#
# usage: scripts/compare-watch.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
source scripts/bench-servers.sh
cargo build --release -q --bin cairn --example watchload -p cairn-server -p cairn-benches
load=target/release/examples/watchload
pass_pid=1

for round in $(seq "$rounds"); do
  for server in cairn etcd; do
    run "$server" fanout --watchers 200 --streams 200 --puts 500 --writers 8
    run "$server" wide --watchers 10000 --streams 100 --puts 100 --writers 4
    run "$server" writes --watchers 100 --streams 10 --puts 4000 --writers 8
    run "$server" writes-stalled --watchers 100 --streams 10 --puts 4000 --writers 8 --stalled 100
  done
done
