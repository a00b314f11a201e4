#!/usr/bin/env bash
# benches/spool.sh: what the durable spool costs. Write throughput and latency
# of influx-tee without the spool, with `fsync = "interval"` and with
# `fsync = "always"`, measured in one run on the local stack.
#
# Usage: benches/spool.sh                      (~2-3 min on 2 cores)
#        UPSTREAMS="none" LINES=5000 benches/spool.sh
#
# For each upstream in UPSTREAMS (default "influxdb none"):
#   influxdb  InfluxDB 1.6 at http://127.0.0.1:18086 answers the writes;
#   none      Kafka-only gateway (no upstream): nothing hides the proxy's own cost.
# and each mode (off, interval, always), ROUNDS times in alternating order, it
# starts target/release/influx-tee with a fresh spool dir, runs the load
# generator of benches/load.rs (WRITERS concurrent writers x BATCHES batches x
# LINES lines), waits until Kafka acknowledged every record, stops the proxy,
# and finally prints a Markdown table plus each mode's throughput relative to
# `off`. Exits 1 if Kafka got fewer records than points were written.
#
# Knobs (defaults): WRITERS=8 BATCHES=40 LINES=1000 WARMUP=2 ROUNDS=2
#   UPSTREAMS="influxdb none" PROXY_LISTEN=127.0.0.1:18287 PROXY_ADMIN=127.0.0.1:19387
# (ports apart from benches/load.sh's; benches take turns through a lock, and a port
# already answering aborts the run)
# Raw JSON results and proxy logs: $OUT_DIR (default: a temp dir, printed).
# Only loopback addresses are used.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

WRITERS=${WRITERS:-8}
BATCHES=${BATCHES:-40}
LINES=${LINES:-1000}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
UPSTREAMS=${UPSTREAMS:-influxdb none}
PROXY_LISTEN=${PROXY_LISTEN:-127.0.0.1:18287}
PROXY_ADMIN=${PROXY_ADMIN:-127.0.0.1:19387}
KAFKA=127.0.0.1:19092
INFLUXDB=http://127.0.0.1:18086

BENCH_NAME=spool.sh
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"
bench_lock
bench_out_dir spool-bench
trap stop_proxy EXIT

if ! deploy/local/stack status kafka influxdb >/dev/null; then
  log "stack up: kafka influxdb"
  deploy/local/stack up kafka influxdb >&2
fi

bench_build load

run() { # upstream mode round
  local upstream=$1 mode=$2 round=$3 db="spool_bench_$2" url spool_block
  local dir="$OUT_DIR/spool-$upstream-$mode-$round"
  case $upstream in
    influxdb)
      url=$INFLUXDB
      for q in "DROP DATABASE $db" "CREATE DATABASE $db"; do
        curl -sf -XPOST "$INFLUXDB/query" --data-urlencode "q=$q" >/dev/null || die "InfluxDB refused: $q"
      done
      ;;
    none) url=none ;;
    *) die "unknown upstream $upstream" ;;
  esac
  case $mode in
    off) spool_block="enabled = false" ;;
    *) spool_block="enabled = true
dir = \"$dir\"
fsync = \"$mode\"" ;;
  esac
  cat >"$OUT_DIR/config.toml" <<EOF
listen = "$PROXY_LISTEN"
admin_listen = "$PROXY_ADMIN"
[upstream]
url = "$url"
[kafka]
brokers = "$KAFKA"
topic = "spool_bench.{bucket}"
format = "line"
[spool]
$spool_block
[log]
level = "warn"
EOF
  start_proxy -c "$OUT_DIR/config.toml"
  log "$upstream / spool $mode / round $round: $WRITERS writers x $BATCHES batches x $LINES lines"
  local out
  out=$("$OUT_DIR/load" --bench --url "http://$PROXY_LISTEN/write?db=$db" --label "$mode" \
    --writers "$WRITERS" --batches "$BATCHES" --lines "$LINES" --warmup "$WARMUP" --json) ||
    die "the $mode run failed"
  grep -v '^{' <<<"$out" >&2 || true
  # With the spool the 2xx comes before Kafka's ack: the time until Kafka has
  # everything counts too (end-to-end rate), as does the CPU the proxy burnt.
  local expected=$((WRITERS * (BATCHES + WARMUP) * LINES)) delivered=0 waited_from
  waited_from=$(date +%s%N)
  for _ in $(seq 1200); do
    delivered=$(metric influx_tee_kafka_records_total 'outcome="delivered"')
    ((delivered >= expected)) && break
    sleep 0.05
  done
  local drain_ms=$((($(date +%s%N) - waited_from) / 1000000))
  local cpu_ticks fsyncs
  cpu_ticks=$(awk '{ print $14 + $15 }' "/proc/$proxy_pid/stat")
  fsyncs=$(curl -sf "http://$PROXY_ADMIN/metrics" | awk '/^influx_tee_spool_fsync_duration_seconds_count/ { print $NF }')
  stop_proxy
  ((delivered >= expected)) || die "$upstream/$mode: Kafka acknowledged $delivered of $expected records"
  grep '^{' <<<"$out" |
    jq -c --arg upstream "$upstream" --argjson round "$round" --argjson fsyncs "${fsyncs:-0}" \
      --argjson drain "$drain_ms" --argjson cpu "$(awk -v t="$cpu_ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')" \
      --argjson sent "$expected" \
      '. + {upstream: $upstream, round: $round, fsyncs: $fsyncs, drain_s: ($drain / 1000), cpu_s: $cpu, sent: $sent}' >>"$results"
  rm -rf "$dir"
}

for upstream in $UPSTREAMS; do
  for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order=(off interval always); else order=(always interval off); fi
    for mode in "${order[@]}"; do run "$upstream" "$mode" "$round"; done
  done
done

echo
echo "### influx-tee spool bench: $WRITERS writers x $BATCHES batches x $LINES lines, $ROUNDS rounds, $(nproc) CPUs"
echo
echo "| upstream | spool | points | 2xx points/s | vs off | in Kafka points/s | vs off | proxy CPU µs/point | vs off | p50 ms | p99 ms | max ms | fsyncs |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
jq -rs '
  def rate: (map(.points) | add) / (map(.seconds) | add);
  def e2e: (map(.points) | add) / (map(.seconds + .drain_s) | add);
  def cpu: (map(.cpu_s) | add) / (map(.sent) | add) * 1e6;
  def pct(a; b): "\(a / b * 100 | round)%";
  group_by(.upstream)[] as $u
  | ($u | map(select(.label == "off"))) as $off
  | ($u | group_by(.label) | sort_by(({off: 0, interval: 1, always: 2})[.[0].label]))[]
  | "| \(.[0].upstream) | \(.[0].label) | \(map(.points) | add) | \(rate | round) | \(pct(rate; $off | rate)) | \(e2e | round) | \(pct(e2e; $off | e2e)) | \(cpu * 10 | round / 10) | \(pct(cpu; $off | cpu)) | \(map(.p50_ms) | add / length * 100 | round / 100) | \(map(.p99_ms) | add / length * 100 | round / 100) | \(map(.max_ms) | max * 10 | round / 10) | \(map(.fsyncs) | add) |"
' "$results"
echo
echo "- 2xx points/s: measured points / wall time of the load; in Kafka points/s: the same points / (wall time + time until Kafka acknowledged every record)"
echo "- proxy CPU µs/point: user+system CPU of the proxy process over its whole run / points sent (warm-up included); the least noise-prone figure on a shared machine"
echo "- p50/p99: mean over the rounds; every record reached Kafka in every run"
echo "- raw results: $results; proxy log: $OUT_DIR/proxy.log"
