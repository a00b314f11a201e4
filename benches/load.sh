#!/usr/bin/env bash
# benches/load.sh: write throughput and latency of influx-tee versus writing
# straight to the same upstream, measured in one run on the local stack.
#
# Usage: benches/load.sh            (from anywhere; takes ~1-2 min on 2 cores)
#        WRITERS=8 BATCHES=100 benches/load.sh
#        UPSTREAM=victoria benches/load.sh
#
# What it does:
#   1. deploy/local/stack up (Kafka 127.0.0.1:19092 + the chosen upstream),
#      unless `stack status` says they already run;
#   2. builds target/release/influx-tee and the load generator benches/load.rs
#      (`cargo bench --bench load --no-run`), and copies both to a temp dir so
#      a concurrent rebuild cannot swap them mid-run;
#   3. drops and recreates the databases load_direct and load_proxy on InfluxDB
#      (each mode writes to its own database, so no run overwrites another's points);
#   4. starts the proxy on 127.0.0.1:18187 (admin 127.0.0.1:19287), Kafka topic
#      load.{bucket}, one record per point, and waits for /readyz;
#   5. runs the generator ROUNDS times: direct then proxy, then (round 2)
#      proxy then direct, so neither mode always gets the warmer upstream;
#   6. waits for Kafka deliveries to settle, reads the proxy's peak RSS (VmHWM
#      of /proc/<pid>/status), its /metrics counters, stops it with SIGTERM;
#   7. prints a Markdown table, and exits 1 if fewer records reached Kafka
#      than points were written through the proxy.
#
# Each generator run: WRITERS concurrent writers (keep-alive connections), each
# posting WARMUP unmeasured then BATCHES measured batches of LINES Telegraf-like
# lines (~170 B, explicit unique ns timestamps). Bodies are generated before the
# clock starts. Latency is per request; points/s is measured points / wall time.
#
# Environment knobs (defaults):
#   WRITERS=4 BATCHES=50 LINES=5000 WARMUP=2 ROUNDS=2
#   UPSTREAM=influxdb   InfluxDB 1.6 at http://127.0.0.1:18086, v1 /write?db=load_<mode>
#           =victoria   VictoriaMetrics at http://127.0.0.1:18428,
#                       /api/v2/write?org=o&bucket=load_<mode> (VM ignores the bucket)
#   PROXY_LISTEN=127.0.0.1:18187 PROXY_ADMIN=127.0.0.1:19287
# Proxy log and raw JSON results: kept in $OUT_DIR (default: a temp dir, printed).
# Only loopback addresses are used; the generator refuses anything else.
#
# Isolation: benches on this machine share these ports (benches/spool.sh uses
# the same defaults), so the script takes the lock ${TMPDIR:-/tmp}/influx-tee-bench.lock
# (flock, waits up to 10 min), checks that the proxy port's listener is the
# process it started, and fails if the proxy's point counter moves by anything
# but this script's own writes (another client would skew every figure).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

WRITERS=${WRITERS:-4}
BATCHES=${BATCHES:-50}
LINES=${LINES:-5000}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
UPSTREAM=${UPSTREAM:-influxdb}
PROXY_LISTEN=${PROXY_LISTEN:-127.0.0.1:18187}
PROXY_ADMIN=${PROXY_ADMIN:-127.0.0.1:19287}
KAFKA=127.0.0.1:19092

case $UPSTREAM in
  influxdb)
    upstream_url=http://127.0.0.1:18086
    services=(kafka influxdb)
    write_path() { echo "/write?db=load_$1"; }
    ;;
  victoria)
    upstream_url=http://127.0.0.1:18428
    services=(kafka victoriametrics)
    write_path() { echo "/api/v2/write?org=o&bucket=load_$1"; }
    ;;
  *)
    echo "load.sh: UPSTREAM must be influxdb or victoria, not '$UPSTREAM'" >&2
    exit 2
    ;;
esac

BENCH_NAME=load.sh
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"
bench_lock
bench_out_dir load
trap stop_proxy EXIT

peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$proxy_pid/status"
}

# ---- 1. stack ------------------------------------------------------------
# `stack up` runs install-deps first (slow when it has tools to build); skip it
# when the services already answer.
if ! deploy/local/stack status "${services[@]}" >/dev/null 2>&1; then
  log "stack up: ${services[*]}"
  deploy/local/stack up "${services[@]}" >&2
fi

# ---- 2. build ------------------------------------------------------------
bench_build load

# ---- 3. databases ----------------------------------------------------------
if [[ $UPSTREAM == influxdb ]]; then
  for db in load_direct load_proxy; do
    for q in "DROP DATABASE $db" "CREATE DATABASE $db"; do
      curl -sf -XPOST "$upstream_url/query" --data-urlencode "q=$q" >/dev/null ||
        die "InfluxDB refused: $q"
    done
  done
fi

# ---- 4. proxy --------------------------------------------------------------
log "starting influx-tee on $PROXY_LISTEN -> $upstream_url (log: $OUT_DIR/proxy.log)"
start_proxy \
  --listen "$PROXY_LISTEN" --admin-listen "$PROXY_ADMIN" \
  --upstream "$upstream_url" \
  --kafka-brokers "$KAFKA" --kafka-topic 'load.{bucket}' --kafka-format line \
  --spool-dir "$OUT_DIR/spool" \
  --log-level warn
idle_rss=$(peak_rss_mib)

# ---- 5. runs ---------------------------------------------------------------
run() { # mode round
  local base=$upstream_url out
  [[ $1 == proxy ]] && base=http://$PROXY_LISTEN
  log "round $2: $1 ($WRITERS writers x $BATCHES batches x $LINES lines)"
  local parsed_before expected_delta=0 delta
  [[ $1 == proxy ]] && expected_delta=$((WRITERS * (BATCHES + WARMUP) * LINES))
  parsed_before=$(metric influx_tee_points_total 'outcome="parsed"')
  out=$("$OUT_DIR/load" --bench --url "$base$(write_path "$1")" --label "$1" \
    --writers "$WRITERS" --batches "$BATCHES" --lines "$LINES" --warmup "$WARMUP" --json) ||
    die "the $1 run failed"
  grep -v '^{' <<<"$out" >&2
  delta=$(($(metric influx_tee_points_total 'outcome="parsed"') - parsed_before))
  ((delta == expected_delta)) ||
    die "the proxy parsed $delta points during the $1 run, expected $expected_delta: another client is writing to $PROXY_LISTEN"
  # VmHWM is monotonic, so reading it after each run tracks the peak as it grows.
  grep '^{' <<<"$out" |
    jq -c --argjson round "$2" --argjson rss "$(peak_rss_mib)" '. + {round: $round, proxy_peak_rss_mib: $rss}' >>"$results"
}
for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then order=(direct proxy); else order=(proxy direct); fi
  for mode in "${order[@]}"; do run "$mode" "$round"; done
done

# ---- 6. Kafka delivery and proxy figures ----------------------------------------
expected=$((ROUNDS * WRITERS * (BATCHES + WARMUP) * LINES))
# With ack=influx the proxy answers before Kafka acknowledges; wait until every
# enqueued record is delivered (or failed) before reading the counters.
for _ in $(seq 600); do
  enqueued=$(metric influx_tee_kafka_records_total 'outcome="enqueued"')
  settled=$(($(metric influx_tee_kafka_records_total 'outcome="delivered"') + $(metric influx_tee_kafka_records_total 'outcome="failed"')))
  ((settled >= enqueued)) && break
  sleep 0.1
done
delivered=$(metric influx_tee_kafka_records_total 'outcome="delivered"')
failed=$(metric influx_tee_kafka_records_total 'outcome="failed"')
teed=$(metric influx_tee_points_total 'outcome="teed"')
peak_rss=$(peak_rss_mib)
stop_proxy

# ---- 7. report ---------------------------------------------------------------
echo
echo "### influx-tee load bench: upstream $UPSTREAM ($upstream_url), $WRITERS writers x $BATCHES batches x $LINES lines, $(nproc) CPUs"
echo
echo "| mode | round | writers | points | points/s | MB/s | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|---|---|---|"
jq -r '"| \(.label) | \(.round) | \(.writers) | \(.points) | \(.points_per_sec | round) | \(.mb_per_sec * 10 | round / 10) | \(.p50_ms * 10 | round / 10) | \(.p99_ms * 10 | round / 10) | \(.max_ms * 10 | round / 10) |"' "$results"
# Aggregate over rounds: total points / total wall time, and the mean of the percentiles.
jq -rs 'group_by(.label) | sort_by(.[0].label) | .[] |
  "| **\(.[0].label)** | all | \(.[0].writers) | \(map(.points) | add) | \((map(.points) | add) / (map(.seconds) | add) | round) | \((map(.bytes) | add) / 1e6 / (map(.seconds) | add) * 10 | round / 10) | \(map(.p50_ms) | add / length * 10 | round / 10) | \(map(.p99_ms) | add / length * 10 | round / 10) | \(map(.max_ms) | max * 10 | round / 10) |"' "$results"
ratio=$(jq -rs '[group_by(.label)[] | {(.[0].label): ((map(.points) | add) / (map(.seconds) | add))}] | add |
  (.proxy / .direct * 100 | round)' "$results")
echo
echo "- proxy throughput: ${ratio}% of direct"
echo "- proxy peak RSS (VmHWM): ${peak_rss} MiB (${idle_rss} MiB when ready)"
echo "- Kafka records delivered: $delivered of $expected points written through the proxy (teed $teed, failed $failed; warm-up included)"
echo "- raw results: $results; proxy log: $OUT_DIR/proxy.log"

((delivered == expected)) || die "Kafka got $delivered records, expected $expected"
