#!/usr/bin/env bash
# benches/passthrough.sh: does influx-tee stream pass-through bodies, or hold them?
# A large InfluxQL answer is downloaded and a large body uploaded, straight from
# InfluxDB and through the proxy, while the proxy's memory is sampled. A proxy
# that buffered would grow by the size of the body; one that streams stays flat.
#
# Usage: benches/passthrough.sh       (from anywhere; ~1 min on 2 cores once built)
#        ROWS=200000 UPLOAD_MIB=64 benches/passthrough.sh     (a quicker, smaller run)
#
# What it does:
#   1. deploy/local/stack up kafka influxdb, unless `stack status` says they run;
#   2. builds the release influx-tee (honours CARGO_TARGET_DIR) and copies it to
#      a temp dir so a concurrent rebuild cannot swap it mid-run;
#   3. drops and recreates the database passthrough_bench on InfluxDB 1.6
#      (http://127.0.0.1:18086) and writes ROWS points into it, straight to
#      InfluxDB, in bodies of CHUNK lines: measurement m, 10 series, a MSG_BYTES
#      string field and two numbers, so `SELECT * FROM m` answers ~ROWS x (MSG_BYTES
#      + 60) bytes of JSON (the default: ~230 MB);
#   4. starts the proxy on 127.0.0.1:18387 (admin 127.0.0.1:19487) in front of that
#      InfluxDB and waits for /readyz; reads its VmRSS / VmHWM (/proc/<pid>/status);
#   5. one unmeasured query warms InfluxDB's caches, then, for each transfer,
#      straight and through the proxy (direct first in odd rounds, proxied first
#      in even ones, so neither always gets the warmer InfluxDB):
#        query         GET /query?q=SELECT * FROM m            (chunked=false: one JSON document)
#        query-chunked GET /query?q=SELECT * FROM m&chunked=true  (a JSON document per 10,000 rows)
#        upload        POST /query multipart/form-data: q=SHOW MEASUREMENTS plus a
#                      UPLOAD_MIB file part, which InfluxDB reads to the end
#                      (Go's ParseMultipartForm spills it to a temp file)
#      curl writes the answer to /dev/null; a sampler reads the proxy's VmRSS every
#      50 ms during each transfer. The status and size must match between the two
#      modes (the upload's answer bodies must be equal), or the script fails;
#   6. prints a Markdown table and drops the database (KEEP_DB=1 keeps it). Exits 1
#      if the proxy's RSS grew by more than MAX_GROWTH_MIB during a proxied
#      transfer: with bodies of 200+ MiB, that means it held one in memory.
#
# Knobs (defaults): ROWS=600000 MSG_BYTES=320 CHUNK=40000 UPLOAD_MIB=256 ROUNDS=2
#   MAX_GROWTH_MIB=64 PROXY_LISTEN=127.0.0.1:18387 PROXY_ADMIN=127.0.0.1:19487 KEEP_DB=0
# Proxy log, RSS samples and raw results: $OUT_DIR (default: a temp dir, printed).
# Takes the lock ${TMPDIR:-/tmp}/influx-tee-bench.lock, as benches/load.sh does.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

ROWS=${ROWS:-600000}
MSG_BYTES=${MSG_BYTES:-320}
CHUNK=${CHUNK:-40000}
UPLOAD_MIB=${UPLOAD_MIB:-256}
ROUNDS=${ROUNDS:-2}
MAX_GROWTH_MIB=${MAX_GROWTH_MIB:-64}
KEEP_DB=${KEEP_DB:-0}
PROXY_LISTEN=${PROXY_LISTEN:-127.0.0.1:18387}
PROXY_ADMIN=${PROXY_ADMIN:-127.0.0.1:19487}
KAFKA=127.0.0.1:19092
INFLUXDB=http://127.0.0.1:18086
DB=passthrough_bench

BENCH_NAME=passthrough.sh
# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"
bench_lock
bench_out_dir passthrough
sampler_pid=

cleanup() {
  [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null
  stop_proxy
  rm -f "$OUT_DIR/upload.bin"
  if [[ $KEEP_DB != 1 ]]; then
    curl -sf -XPOST "$INFLUXDB/query" --data-urlencode "q=DROP DATABASE $DB" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# ---- 1. stack ------------------------------------------------------------------
if ! deploy/local/stack status kafka influxdb >/dev/null 2>&1; then
  log "stack up: kafka influxdb"
  deploy/local/stack up kafka influxdb >&2
fi

# ---- 2. build ------------------------------------------------------------------
bench_build

# ---- 3. data set ---------------------------------------------------------------
for q in "DROP DATABASE $DB" "CREATE DATABASE $DB"; do
  curl -sf -XPOST "$INFLUXDB/query" --data-urlencode "q=$q" >/dev/null || die "InfluxDB refused: $q"
done
log "writing $ROWS points (${MSG_BYTES}-byte string field) into $DB, $CHUNK lines a request"
pad=$(head -c "$MSG_BYTES" /dev/zero | tr '\0' 'x')
write_started=$(date +%s%N)
for ((start = 0; start < ROWS; start += CHUNK)); do
  # 10 series; one point per series and second, all within one shard (7 days).
  code=$(awk -v start="$start" -v n="$CHUNK" -v rows="$ROWS" -v pad="$pad" 'BEGIN {
      for (i = start; i < start + n && i < rows; i++)
        printf "m,host=h%d msg=\"r%d %s\",value=%d.25,n=%di %d\n", i % 10, i, pad, i % 1000, i, 1700000000 + int(i / 10)
    }' |
    curl -sS -o "$OUT_DIR/write-answer" -w '%{http_code}' -XPOST "$INFLUXDB/write?db=$DB&precision=s" --data-binary @-)
  [[ $code == 204 ]] || die "InfluxDB answered $code to a write: $(cat "$OUT_DIR/write-answer")"
done
write_s=$(awk -v ns="$(($(date +%s%N) - write_started))" 'BEGIN { printf "%.1f", ns / 1e9 }')
stored=$(curl -sf "$INFLUXDB/query" --data-urlencode "db=$DB" --data-urlencode 'q=SELECT count(n) FROM m' | jq '.results[0].series[0].values[0][1]')
[[ $stored == "$ROWS" ]] || die "InfluxDB holds $stored points, expected $ROWS"
log "wrote $ROWS points in ${write_s} s"

# ---- 4. proxy ------------------------------------------------------------------
log "starting influx-tee on $PROXY_LISTEN -> $INFLUXDB (log: $OUT_DIR/proxy.log)"
start_proxy \
  --listen "$PROXY_LISTEN" --admin-listen "$PROXY_ADMIN" \
  --upstream "$INFLUXDB" \
  --kafka-brokers "$KAFKA" --kafka-topic 'passthrough_bench.{bucket}' \
  --spool-dir "$OUT_DIR/spool" \
  --log-level warn
ready_rss=$(status_kb VmRSS)
ready_hwm=$(status_kb VmHWM)

# ---- 5. transfers --------------------------------------------------------------
select_url() { echo "$1/query?db=$DB&q=SELECT%20*%20FROM%20m$2"; }
truncate -s "${UPLOAD_MIB}M" "$OUT_DIR/upload.bin" # sparse: no disk, no page cache to fill

log "warm-up: one query straight to InfluxDB"
curl -sSf -o /dev/null "$(select_url "$INFLUXDB" '')"

transfer() { # name mode
  local name=$1 mode=$2 base=$INFLUXDB args
  [[ $mode == proxied ]] && base=http://$PROXY_LISTEN
  case $name in
    query) args=("$(select_url "$base" '')") ;;
    query-chunked) args=("$(select_url "$base" '&chunked=true')") ;;
    upload)
      # No `Expect: 100-continue` wait: time the bytes, not curl's handshake.
      args=(-H 'Expect:' -F 'q=SHOW MEASUREMENTS' -F "pad=@$OUT_DIR/upload.bin;type=application/octet-stream"
        "$base/query?db=$DB")
      ;;
  esac
  local body=/dev/null
  [[ $name == upload ]] && body="$OUT_DIR/upload-answer-$mode"
  local rss_before hwm_before samples="$OUT_DIR/rss-$name-$mode.txt"
  rss_before=$(status_kb VmRSS)
  hwm_before=$(status_kb VmHWM)
  # The proxy's VmRSS every 50 ms while the transfer runs.
  (while read -r kb < <(status_kb VmRSS) && [[ -n $kb ]]; do echo "$kb"; sleep 0.05; done) >"$samples" &
  sampler_pid=$!
  log "$name, $mode"
  local out
  out=$(curl -sS -o "$body" -w '%{http_code} %{size_download} %{size_upload} %{time_total}' "${args[@]}") ||
    die "$name ($mode): curl failed"
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=
  local code down up seconds peak
  read -r code down up seconds <<<"$out"
  [[ $code == 200 ]] || die "$name ($mode): HTTP $code"
  peak=$(sort -n "$samples" | tail -n1)
  jq -nc --arg name "$name" --arg mode "$mode" --argjson down "$down" --argjson up "$up" \
    --argjson seconds "$seconds" --argjson rss_before "$rss_before" --argjson hwm_before "$hwm_before" \
    --argjson rss_peak "${peak:-0}" --argjson hwm_after "$(status_kb VmHWM)" \
    --argjson samples "$(wc -l <"$samples")" \
    '{name: $name, mode: $mode, down: $down, up: $up, seconds: $seconds, rss_before_kb: $rss_before,
      hwm_before_kb: $hwm_before, rss_peak_kb: $rss_peak, hwm_after_kb: $hwm_after, samples: $samples}' >>"$results"
}

for round in $(seq "$ROUNDS"); do
  if ((round % 2)); then order=(direct proxied); else order=(proxied direct); fi
  for name in query query-chunked upload; do
    for mode in "${order[@]}"; do transfer "$name" "$mode"; done
  done
done
cmp -s "$OUT_DIR/upload-answer-direct" "$OUT_DIR/upload-answer-proxied" ||
  die "the upload's answers differ: $(cat "$OUT_DIR/upload-answer-direct") / $(cat "$OUT_DIR/upload-answer-proxied")"
jq -se 'group_by(.name)[] | select((map(.down) | unique | length) > 1 or (map(.up) | unique | length) > 1) | .[0].name' \
  "$results" >/dev/null && die "a transfer moved a different number of bytes straight and through the proxy: see $results"
passthrough=$(curl -sf "http://$PROXY_ADMIN/metrics" |
  awk 'index($0, "influx_tee_passthrough_requests_total{") == 1 { sum += $NF } END { printf "%d\n", sum }')
final_hwm=$(status_kb VmHWM)

# ---- 6. report -----------------------------------------------------------------
echo
echo "### influx-tee pass-through bench: InfluxDB 1.6 ($INFLUXDB), $ROWS rows, $UPLOAD_MIB MiB upload, $(nproc) CPUs"
echo
echo "| transfer | bytes | direct s | proxied s | direct MB/s | proxied MB/s | proxy RSS before MiB | proxy peak RSS during MiB | proxy VmHWM after MiB | growth MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
jq -rs '
  def mib: . / 1024 * 10 | round / 10;
  def growth: ([.rss_peak_kb, .hwm_after_kb] | max) - .rss_before_kb;
  group_by(.name) | sort_by({"query": 0, "query-chunked": 1, "upload": 2}[.[0].name])[] |
  (map(select(.mode == "direct"))) as $d | (map(select(.mode == "proxied"))) as $p |
  (if .[0].name == "upload" then $d[0].up else $d[0].down end) as $bytes |
  ($d | map(.seconds) | add / length) as $ds | ($p | map(.seconds) | add / length) as $ps |
  "| \(.[0].name) | \($bytes) | \($ds * 100 | round / 100) | \($ps * 100 | round / 100) | \($bytes / $ds / 1e6 | round) | \($bytes / $ps / 1e6 | round) | \($p | map(.rss_before_kb) | max | mib) | \($p | map(.rss_peak_kb) | max | mib) | \($p | map(.hwm_after_kb) | max | mib) | \($p | map(growth) | max | mib) |"
' "$results"
echo
echo "- data set: $ROWS points written straight to InfluxDB in ${write_s} s; bytes = answer size (query) or request body size (upload), equal straight and through the proxy"
echo "- proxy when ready: VmRSS $(mib "$ready_rss") MiB, VmHWM $(mib "$ready_hwm") MiB; VmHWM at the end: $(mib "$final_hwm") MiB (peak over the whole run)"
echo "- proxy peak RSS during: highest VmRSS sampled every 50 ms during the proxied transfer; pass-through requests counted by the proxy: $passthrough"
echo "- growth: highest of (sampled VmRSS, VmHWM after) minus VmRSS before, for the proxied transfer"
echo "- raw results: $results; RSS samples and proxy log: $OUT_DIR"

worst=$(jq -s 'map(select(.mode == "proxied") | ([.rss_peak_kb, .hwm_after_kb] | max) - .rss_before_kb) | max' "$results")
((worst <= MAX_GROWTH_MIB * 1024)) ||
  die "the proxy's RSS grew by $(mib "$worst") MiB during a transfer (limit $MAX_GROWTH_MIB MiB): it holds bodies in memory"
