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
IT_INFLUX_AUTH_USER=admin
IT_INFLUX_AUTH_PASSWORD=admin-password
IT_VM_ADDR=127.0.0.1:18428

it_log() { printf '%s\n' "$*" >&2; }
it_die() { printf 'error: %s\n' "$*" >&2; exit 1; }
it_section() { printf '\n==== %s ====\n' "$*"; }

# sha256 of the given files' contents (one digest for all)
it_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
