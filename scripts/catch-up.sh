#!/usr/bin/env bash
# How long a new member takes to catch up with a 3-member cluster holding
# many keys, on cairn and on etcd (Debian's 3.4) in turn: fill the cluster,
# MemberAdd a fourth member, start it, and time until it serves every key
# in a serializable read. Both servers snapshot every 100 entries and cairn
# keeps only 100 entries after a snapshot (etcd 3.4 keeps 5000 and has no
# flag for it; 1M keys are 7813 Txns), so the new member catches up from a
# snapshot, not from the log.
#
# usage: scripts/catch-up.sh [keys] [value size] [servers...]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
val_size=${2:-100}
shift $(($# > 2 ? 2 : $#))
servers=("${@:-cairn}")
(($# > 0)) || servers=(cairn etcd)
nodes=3
source scripts/bench-servers.sh
cargo build --release -q --bin cairn --bin cairn-bench -p cairn-server -p cairn-benches
load=target/release/cairn-bench
# etcdctl 3.5: 3.4 sends the URL as :authority, which cairn's HTTP/2 refuses
# (docs/compatibility.md).
ctl=/opt/etcd-3.5/etcdctl

for server in "${servers[@]}"; do
  server_flags="--snapshot-count 100"
  [[ $server == cairn ]] && server_flags+=" --experimental-snapshot-catchup-entries 100"
  start "$server"
  fill=$("$load" --endpoints "$endpoints" --key-space-size "$keys" --val-size "$val_size" --clients 16 --conns 3 --json fill)
  new=127.0.0.24
  until $ctl --endpoints "$endpoints" member add m3 --peer-urls "http://$new:23800" >"$work/add" 2>&1; do
    grep -q "unhealthy cluster" "$work/add" || { cat "$work/add" >&2; exit 1; }
    sleep 0.5
  done
  initial=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' "$work/add")
  began=$(date +%s.%N)
  case $server in
    cairn) bin=${cairn_bin:-target/release/cairn} ;;
    etcd) bin=etcd ;;
  esac
  rm -rf "$work/m3"
  $bin --name m3 --data-dir "$work/m3" \
    --listen-client-urls "http://$new:23790" --advertise-client-urls "http://$new:23790" \
    --listen-peer-urls "http://$new:23800" --initial-advertise-peer-urls "http://$new:23800" \
    --initial-cluster "$initial" --initial-cluster-state existing \
    $server_flags --log-level error >"$work/m3.log" 2>&1 &
  pids+=($!)
  count=0
  until [[ $count == "$keys" ]]; do
    sleep 0.2
    count=$($ctl --endpoints "http://$new:23790" get b/ --prefix --count-only \
      --consistency s -w fields 2>/dev/null | sed -n 's/^"Count" : \([0-9]*\)$/\1/p') || true
  done
  ended=$(date +%s.%N)
  rss=$(ps -o rss= -p "${pids[3]}")
  printf '{"server":"%s","keys":%d,"fill":%s,"catch_up_s":%.2f,"new_member_rss_mib":%d}\n' \
    "$server" "$keys" "$fill" "$(awk -v a="$began" -v b="$ended" 'BEGIN { print b - a }')" $((rss / 1024))
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
done
