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
command -v etcd >/dev/null || { echo "etcd missing: run scripts/test.sh first" >&2; exit 1; }
cargo build --release -q --bin cairn --example kvload -p cairn-server -p cairn-benches
kvload=target/release/examples/kvload
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # name -> starts the server on 127.0.0.1:23790 in the background
  rm -rf "$work/data"
  local flags=(--name default --data-dir "$work/data"
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800
    --initial-cluster default=http://127.0.0.1:23800)
  case $1 in
    cairn) target/release/cairn "${flags[@]}" --log-level error >"$work/log" 2>&1 & ;;
    etcd) etcd "${flags[@]}" --log-level error >"$work/log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:23790 put /ready x >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$1 did not start:" >&2; cat "$work/log" >&2; exit 1
}

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
