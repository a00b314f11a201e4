# benches/lib.sh: what the load scripts (load.sh, spool.sh, passthrough.sh) share.
# Source it after setting BENCH_NAME; it defines log/die, takes the bench lock, makes
# OUT_DIR, and manages the one proxy process a script runs at a time ($proxy_pid).
# shellcheck shell=bash

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

# Benches share ports and CPUs: one at a time.
bench_lock() {
  exec 9>"${TMPDIR:-/tmp}/influx-tee-bench.lock"
  if ! flock -n 9; then
    log "another bench holds ${TMPDIR:-/tmp}/influx-tee-bench.lock; waiting (up to 10 min)"
    flock -w 600 9 || die "the bench lock stayed busy for 10 min"
  fi
}

# Sets OUT_DIR (kept after the run) and an empty $results file in it.
bench_out_dir() {
  OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/influx-tee-$1.XXXXXX")}
  mkdir -p "$OUT_DIR"
  results="$OUT_DIR/results.jsonl"
  : >"$results"
}

# Copies the release influx-tee (and, with `load`, the load generator of benches/load.rs)
# into $OUT_DIR, so a concurrent rebuild cannot swap them mid-run. Honours CARGO_TARGET_DIR.
bench_build() {
  local built
  log "building influx-tee${1:+ and the load generator} (release)"
  built=$(cargo build --release --bin influx-tee --message-format=json |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "influx-tee" and .executable != null) | .executable' |
    tail -n1)
  [[ -x $built ]] || die "could not find the built influx-tee"
  cp "$built" "$OUT_DIR/influx-tee"
  [[ ${1:-} == load ]] || return 0
  built=$(cargo bench --bench load --no-run --message-format=json |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "load" and .executable != null) | .executable' |
    tail -n1)
  [[ -x $built ]] || die "could not find the compiled load generator"
  cp "$built" "$OUT_DIR/load"
}

proxy_pid=

# Fails if something already answers on an address the proxy is about to take:
# it would be measured instead of ours.
ensure_free() {
  local addr
  for addr in "$@"; do
    if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
      die "$addr is already in use; stop whatever listens there or set PROXY_LISTEN/PROXY_ADMIN"
    fi
  done
}

# Starts "$OUT_DIR/influx-tee" serve with the given arguments (log: $OUT_DIR/proxy.log),
# waits until $PROXY_ADMIN/readyz answers 200, and checks that both listeners belong
# to this process (a /readyz could come from someone else's proxy on the same port).
start_proxy() {
  ensure_free "$PROXY_LISTEN" "$PROXY_ADMIN"
  "$OUT_DIR/influx-tee" serve "$@" >>"$OUT_DIR/proxy.log" 2>&1 &
  proxy_pid=$!
  local ready= addr
  for _ in $(seq 600); do
    kill -0 "$proxy_pid" 2>/dev/null || { tail -n 20 "$OUT_DIR/proxy.log" >&2; die "the proxy exited"; }
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$PROXY_ADMIN/readyz") == 200 ]]; then
      ready=1
      break
    fi
    sleep 0.1
  done
  [[ -n $ready ]] || die "the proxy was not ready within 60 s"
  for addr in "$PROXY_LISTEN" "$PROXY_ADMIN"; do
    ss -Hltnp "sport = :${addr##*:}" | grep -q "pid=$proxy_pid," ||
      die "$addr is not served by the proxy this script started (pid $proxy_pid)"
  done
}

# SIGTERM (the proxy drains writes and flushes Kafka), SIGKILL after 30 s.
stop_proxy() {
  [[ -n $proxy_pid ]] || return 0
  kill -TERM "$proxy_pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$proxy_pid" 2>/dev/null; then
    log "proxy did not stop within 30 s; SIGKILL"
    kill -KILL "$proxy_pid" 2>/dev/null || true
  fi
  wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=
}

# Sum of a proxy metric's samples whose labels contain $2 (e.g. outcome="delivered").
metric() {
  curl -sf "http://$PROXY_ADMIN/metrics" |
    awk -v name="$1" -v label="$2" '
      index($0, name "{") == 1 && index($0, label) { sum += $NF }
      END { printf "%d\n", sum }'
}

# A field of the proxy's /proc/<pid>/status, in kB.
status_kb() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$proxy_pid/status"; }
