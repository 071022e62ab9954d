# Sourced by the compare-* scripts: starts cairn or etcd (Debian's 3.4) as a
# one-member cluster on 127.0.0.1:23790 with a fresh data dir under $work.
# After `start NAME`, $pid is the server's pid; the caller kills it.
# `run SERVER NAME ARGS...` does one measured run: a fresh server, then the
# load loop `$load` against it (with `--pid` when `$pass_pid` is set), as one
# JSON line tagged with $round and NAME.

command -v etcd >/dev/null || { echo "etcd missing: run scripts/test.sh first" >&2; exit 1; }
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

run() { # server name loader-args...
  local server=$1 name=$2; shift 2
  start "$server"
  local extra=()
  if [[ -n ${pass_pid:-} ]]; then extra=(--pid "$pid"); fi
  printf '{"server":"%s","round":%d,"run":"%s","result":' "$server" "$round" "$name"
  "$load" --endpoint http://127.0.0.1:23790 "${extra[@]}" "$@" | tr -d '\n'
  echo "}"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
