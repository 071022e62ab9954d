#!/usr/bin/env bash
# The project's one test command: format, lints and every test.
#
# The compatibility tests drive Cairn with real etcd binaries (etcd as the
# reference in differential tests, etcdctl as a client), so this installs
# Debian's etcd-server and etcd-client first when they are missing. Running it
# again is a no-op apart from the cargo steps.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
# The first line of a command's output. Not `| head -n 1`: head exits
# early, the writer gets SIGPIPE, and pipefail turns that into a failure.
first_line() {
    local out
    out="$("$@")"
    printf '%s\n' "${out%%$'\n'*}"
}

# The tests look for these exact paths (see server/tests/it/support).
# protoc: the etcd-client dev-dependency's build script needs it (Cairn's
# own protos build with protox and need none).
missing=()
[[ -x /usr/bin/etcd ]] || missing+=(etcd-server)
[[ -x /usr/bin/etcdctl ]] || missing+=(etcd-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if ((${#missing[@]} > 0)); then
    step "installing ${missing[*]}"
    sudo=""
    if [[ "$(id -u)" -ne 0 ]]; then
        sudo="sudo"
    fi
    # `env` carries DEBIAN_FRONTEND through sudo, which resets the environment.
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "versions"
protoc --version
first_line /usr/bin/etcd --version
ETCDCTL_API=3 first_line /usr/bin/etcdctl version
cargo --version
rustc --version

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings

step "cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --quiet --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for every test binary together (cargo's own last line is
# whichever binary ran last, often a crate with no doc tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if ((status != 0)); then
    exit "$status"
fi

