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
kvload=target/release/examples/kvload

for round in $(seq "$rounds"); do
  for server in cairn etcd; do
    for op in put get; do
      start "$server"
      printf '{"server":"%s","round":%d,"result":' "$server" "$round"
      "$kvload" --endpoint http://127.0.0.1:23790 --op "$op" --clients 64 --total "$total" | tr -d '\n'
      echo "}"
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
done
