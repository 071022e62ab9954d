#!/usr/bin/env bash
# Defragment under a writer, on one member of cairn and of etcd 3.4 in the
# same run: fill with $puts puts of 1 KiB over $keys keys, compact at the
# current revision, then defragment while one client puts at $rate/s.
# Prints, per server: how long defragment took, the writer's slowest put
# (the writer runs for $window s from 1 s before the defragment, and once
# alone before, for comparison), and the database size (Status's dbSize)
# and the data dir on disk, before and after. $extra_flags go to both
# servers.
# Ports 24790 and 24800 by default (client_port, peer_port), apart from
# the other compare scripts.
# Needs target/release/cairn and cairn-bench (cargo build --release -p
# cairn-server -p cairn-benches).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
puts=${puts:-200000}
keys=${keys:-50000}
rate=${rate:-200}
window=${window:-6}
servers=${servers:-cairn etcd}
client_port=${client_port:-24790}
peer_port=${peer_port:-24800}
bench=target/release/cairn-bench
ctl=/opt/etcd-3.5/etcdctl
server_flags="--quota-backend-bytes 8589934592 ${extra_flags:-}"
# shellcheck source=bench-servers.sh
source scripts/bench-servers.sh

status() { # field of the first endpoint's status
  "$ctl" --endpoints "$endpoints" endpoint status -w json |
    python3 -c "import json,sys; print(json.load(sys.stdin)[0]['Status']$1)"
}

for server in $servers; do
  start "$server"
  "$bench" --endpoints "$endpoints" --conns 8 --clients 64 --total "$puts" \
    --key-size 16 --val-size 1024 --key-space-size "$keys" put >/dev/null
  rev=$(status "['header']['revision']")
  "$ctl" --endpoints "$endpoints" compaction --physical "$rev" >/dev/null
  sleep 1
  db_before=$(status "['dbSize']"); du_before=$(du -sb "$work/m0" | cut -f1)
  # The writer, $window s at $rate puts/s: once alone (the baseline), then
  # with the defragment starting 1 s in.
  writer() {
    "$bench" --endpoints "$endpoints" --clients 1 --total $((rate * window)) --rate "$rate" \
      --key-prefix w/ --key-space-size 1000 --val-size 1024 --json put >"$work/$1.json"
  }
  slowest() {
    python3 -c "import json; r=json.load(open('$work/$1.json'))['latency_ms']; print('%.1f ms (p99 %.1f ms)' % (r['max'], r['percentiles']['p99']))"
  }
  writer baseline
  writer during &
  w=$!
  sleep 1
  t0=$(date +%s%N)
  "$ctl" --endpoints "$endpoints" --command-timeout 600s defrag >/dev/null
  t1=$(date +%s%N)
  wait "$w"
  (( (t1 - t0) / 1000000000 + 1 < window )) || echo "warning: the defragment outlasted the writer" >&2
  db_after=$(status "['dbSize']"); du_after=$(du -sb "$work/m0" | cut -f1)
  printf '%s: defrag %d ms; writer slowest %s during, %s alone; dbSize %d -> %d MB; data dir %d -> %d MB\n' \
    "$server" $(((t1 - t0) / 1000000)) "$(slowest during)" "$(slowest baseline)" \
    $((db_before >> 20)) $((db_after >> 20)) $((du_before >> 20)) $((du_after >> 20))
  grep -h defragmented "$work"/m0.log || true
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
done
