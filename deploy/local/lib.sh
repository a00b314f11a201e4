# shellcheck shell=bash
# Shared settings for deploy/local/{install-deps,stack,test}. Source it; don't run it.
# shellcheck disable=SC2034  # the variables are used by the scripts sourcing this

IT_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IT_LOCAL="$IT_REPO/deploy/local"
IT_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/influx-tee"
IT_STACK="${INFLUX_TEE_STACK_DIR:-$IT_REPO/.stack}"
IT_KAFKA_CLASSPATH="$IT_CACHE/kafka.classpath"
IT_VENV="$IT_CACHE/venv"

# fixed loopback addresses (see the header of deploy/local/stack)
IT_KAFKA_ADDR=127.0.0.1:19092
IT_KAFKA_CONTROLLER_ADDR=127.0.0.1:19093
IT_INFLUX_ADDR=127.0.0.1:18086
IT_INFLUX_RPC_ADDR=127.0.0.1:18088
IT_INFLUX_AUTH_ADDR=127.0.0.1:18096
IT_INFLUX_AUTH_RPC_ADDR=127.0.0.1:18098
IT_INFLUX_AUTH_USER="admin"
IT_INFLUX_AUTH_PASSWORD=admin-password
IT_VM_ADDR=127.0.0.1:18428

# three-node KRaft cluster (service kafka-cluster = nodes kafka-cluster-1..3):
# node N listens on PLAINTEXT 127.0.0.1:1920N and CONTROLLER 127.0.0.1:1921N
IT_KAFKA_CLUSTER_NODES=(1 2 3)
IT_KAFKA_CLUSTER_ADDR=127.0.0.1:19201,127.0.0.1:19202,127.0.0.1:19203
it_kafka_cluster_port() { echo $((19200 + $1)); }
it_kafka_cluster_controller_port() { echo $((19210 + $1)); }

# InfluxDB OSS 2.7 (optional service `influxdb2`), built from the Go module
# source by deploy/local/build-influxdb2 (not a Debian package). Onboarded by
# `stack up influxdb2` with these loopback-only test credentials.
IT_INFLUX2_VERSION=v2.7.12
IT_INFLUX2_ADDR=127.0.0.1:18097
IT_INFLUX2_USER="admin"
IT_INFLUX2_PASSWORD=admin-password
IT_INFLUX2_ORG=influx-tee
IT_INFLUX2_BUCKET=it
IT_INFLUX2_TOKEN=influx-tee-test-token
IT_INFLUXD2="$IT_CACHE/influxdb2/$IT_INFLUX2_VERSION/influxd"

# client binaries built from the Go module proxy, cached by version / source hash
IT_TELEGRAF_VERSION=v1.37.2
IT_TELEGRAF="$IT_CACHE/telegraf/$IT_TELEGRAF_VERSION/telegraf"  # deploy/local/build-telegraf
IT_GO_WRITER="$IT_CACHE/go-client/writer"                        # deploy/local/build-go-client

it_log() { printf '%s\n' "$*" >&2; }
it_die() { printf 'error: %s\n' "$*" >&2; exit 1; }
it_section() { printf '\n==== %s ====\n' "$*"; }

# sha256 of the given files' contents (one digest for all)
it_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Go builds of the deploy/local/build-* scripts: fail early with a clear word
it_need_go() {
  command -v go >/dev/null 2>&1 || it_die "go not found on PATH (needed by $(basename "$0"))"
}

# directory of module $1@$2 in the Go module cache (downloads it if needed)
it_go_mod_dir() {
  local tmp dir
  tmp=$(mktemp -d)
  # outside any module, so the project's own go.mod/GOFLAGS don't interfere
  dir=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1@$2" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  rmdir "$tmp"
  [[ -n $dir && -d $dir ]] || return 1
  printf '%s\n' "$dir"
}
