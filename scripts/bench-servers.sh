# Sourced by the compare-* scripts: starts cairn, etcd (Debian's 3.4) or
# etcd35 (3.5, /opt/etcd-3.5) as a cluster of $nodes members (default 1)
# with fresh data dirs under $work.
# One member listens on 127.0.0.1:23790 (peer port 23800); with more,
# member i listens on 127.0.0.(21+i), same ports. Heartbeat and election
# timeout are both servers' defaults; $server_flags (split on spaces) are
# added to every member's flags.
# After `start NAME`, $pids are the members' pids, $pid the first one's,
# and $endpoints their client URLs, comma-separated. $cairn_bin picks the
# cairn binary (default target/release/cairn), for A/B runs.
# `run SERVER NAME ARGS...` does one measured run: a fresh cluster, then
# the load loop `$load` against it (with `--pid` when `$pass_pid` is set,
# `--server-pids` with every member's when `$pass_server_pids` is), as one
# JSON line tagged with $round and NAME.

for bin in etcd /opt/etcd-3.5/etcd /opt/etcd-3.5/etcdctl; do
  command -v "$bin" >/dev/null || { echo "$bin missing: run scripts/test.sh first" >&2; exit 1; }
done
nodes=${nodes:-1}
# Ports, overridable so that runs of different scripts can share the box.
client_port=${client_port:-23790}
peer_port=${peer_port:-23800}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

host() { # member index -> its address
  if ((nodes == 1)); then echo 127.0.0.1; else echo "127.0.0.$((21 + $1))"; fi
}

start() { # name -> starts the members in the background
  local initial=() urls=() i
  for ((i = 0; i < nodes; i++)); do
    initial+=("m$i=http://$(host "$i"):$peer_port")
    urls+=("http://$(host "$i"):$client_port")
  done
  endpoints=$(IFS=,; echo "${urls[*]}")
  pids=()
  for ((i = 0; i < nodes; i++)); do
    rm -rf "$work/m$i"
    local h; h=$(host "$i")
    local flags=(--name "m$i" --data-dir "$work/m$i"
      --listen-client-urls "http://$h:$client_port" --advertise-client-urls "http://$h:$client_port"
      --listen-peer-urls "http://$h:$peer_port" --initial-advertise-peer-urls "http://$h:$peer_port"
      --initial-cluster "$(IFS=,; echo "${initial[*]}")" --log-level error)
    local more; read -ra more <<<"${server_flags:-}"
    flags+=("${more[@]}")
    case $1 in
      cairn) "${cairn_bin:-target/release/cairn}" "${flags[@]}" >"$work/m$i.log" 2>&1 & ;;
      etcd) etcd "${flags[@]}" >"$work/m$i.log" 2>&1 & ;;
      etcd35) /opt/etcd-3.5/etcd "${flags[@]}" >"$work/m$i.log" 2>&1 & ;;
    esac
    pids+=($!)
  done
  pid=${pids[0]}
  # Ready once every member answers a linearizable read.
  local url
  for url in "${urls[@]}"; do
    for _ in $(seq 300); do
      /opt/etcd-3.5/etcdctl --endpoints "$url" get /ready >/dev/null 2>&1 && continue 2
      sleep 0.1
    done
    echo "$1 did not start ($url did not answer):" >&2; tail -n 20 "$work"/m*.log >&2
    kill "${pids[@]}" 2>/dev/null; exit 1
  done
  # An answer from a server left over from an earlier run is no answer.
  if ! kill -0 "${pids[@]}" 2>/dev/null; then
    echo "$1 exited at start (is a port taken?):" >&2; tail -n 20 "$work"/m*.log >&2
    kill "${pids[@]}" 2>/dev/null; exit 1
  fi
}

run() { # server name loader-args...
  local server=$1 name=$2; shift 2
  start "$server"
  local extra=()
  if [[ -n ${pass_pid:-} ]]; then extra+=(--pid "$pid"); fi
  if [[ -n ${pass_server_pids:-} ]]; then extra+=(--server-pids "$(IFS=,; echo "${pids[*]}")"); fi
  printf '{"server":"%s","nodes":%d,"round":%d,"run":"%s","result":' "$server" "$nodes" "$round" "$name"
  "$load" --endpoints "$endpoints" "${extra[@]}" "$@" | tr -d '\n'
  echo "}"
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}
