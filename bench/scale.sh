#!/usr/bin/env bash
# A node with a big cache: startup, memory, index size and eviction with SCALE_BLOBS blobs.
#
# 1. `examples/scale_data.rs` builds a data directory of SCALE_BLOBS small blobs (200 bytes)
#    plus SCALE_LARGE blobs of SCALE_LARGE_MIB MiB and one image manifest, all indexed and
#    linked to docker.io/library/scale, through berth's storage API (no HTTP). It ends without
#    berth's clean-shutdown mark, as after a crash.
# 2. berth serves it offline (no upstream); "ready" is the first 200 to a cache-hit GET of a
#    small blob, timed from spawning the process (bench/scale_client.py polls every 5 ms).
#    a. first start on the fresh data (as after a crash); hit latency right away (during any
#       background reconciliation) and once reconciliation is done (quiet); RssAnon;
#       SCALE_LOAD_SECS of mixed load (4 threads: small blob GET/HEAD, manifest GET, now and
#       then a whole large blob), RssAnon after it
#    b. SIGTERM (clean stop); index bytes on disk per blob entry; `berth cache stats` time
#    c. start after the clean stop: ready time, RssAnon
#    d. kill -9, start again: ready time, hit latency during reconciliation and quiet
#    e. clean stop, start with storage.max_size just under the usage and low_water_percent 90:
#       the time until 10% of the bytes are evicted (the `berth_storage_used_bytes` gauge at
#       the target), with hit latency of blobs eviction does not take while it runs
#
# Usage: bench/scale.sh   (env: SCALE_BLOBS=1000000 SCALE_LARGE=2 SCALE_LARGE_MIB=16
#        SCALE_LOAD_SECS=60 SCALE_LATENCY_N=200 SCALE_DATA=bench/out/scale-data
#        SCALE_KEEP_DATA=1 (keep, and reuse, the data dir) SCALE_EVICT_WAIT=300 (seconds)
#        BERTH_BIN=... SCALE_DATA_BIN=...)
# Output: bench/out/scale.txt. The data dir takes about 4.5 KiB per small blob on disk.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE_BLOBS=${SCALE_BLOBS:-1000000}
SCALE_LARGE=${SCALE_LARGE:-2}
SCALE_LARGE_MIB=${SCALE_LARGE_MIB:-16}
SCALE_LOAD_SECS=${SCALE_LOAD_SECS:-60}
SCALE_LATENCY_N=${SCALE_LATENCY_N:-200}
SCALE_DATA=${SCALE_DATA:-$OUT_DIR/scale-data}
CLIENT="python3 $BENCH_DIR/scale_client.py"
REPORT="$OUT_DIR/scale.txt"

need python3 python3
build_berth
if [[ -z ${SCALE_DATA_BIN:-} ]]; then
    SCALE_DATA_BIN="$ROOT_DIR/target/release/examples/scale_data"
    if [[ ${BERTH_NO_BUILD:-0} != 1 ]]; then
        log "cargo build --release --example scale_data"
        (cd "$ROOT_DIR" && cargo build --release --example scale_data >"$WORK/data-build.log" 2>&1) ||
            { tail -20 "$WORK/data-build.log" >&2; die "building scale_data failed"; }
    fi
fi
[[ -x $SCALE_DATA_BIN ]] || die "no scale_data binary at $SCALE_DATA_BIN"

DIGESTS="$SCALE_DATA.digests"
SHAPE="$SCALE_BLOBS $SCALE_LARGE $SCALE_LARGE_MIB"
if [[ ${SCALE_KEEP_DATA:-0} == 1 && -f $DIGESTS && $(cat "$SCALE_DATA.shape" 2>/dev/null) == "$SHAPE" ]]; then
    log "reusing $SCALE_DATA"
    BUILD_SECS="(reused)"
    INDEX_FRESH=""
else
    rm -rf "$SCALE_DATA" "$DIGESTS"
    log "building $SCALE_DATA: $SCALE_BLOBS small blobs, $SCALE_LARGE x $SCALE_LARGE_MIB MiB"
    t0=$(now)
    "$SCALE_DATA_BIN" "$SCALE_DATA" "$SCALE_BLOBS" "$SCALE_LARGE" "$SCALE_LARGE_MIB" >"$DIGESTS"
    sync
    BUILD_SECS=$(elapsed "$t0" "$(now)")
    INDEX_FRESH=$(du -sb "$SCALE_DATA/index" | cut -f1)
    echo "$SHAPE" >"$SCALE_DATA.shape"
fi
[[ ${SCALE_KEEP_DATA:-0} == 1 ]] || trap 'rc=$?; rm -rf "$SCALE_DATA" "$DIGESTS" "$SCALE_DATA.shape"; (exit $rc); cleanup' EXIT
ENTRIES=$((SCALE_BLOBS + SCALE_LARGE + 1))
PROBE="/v2/library/scale/blobs/$(awk '$1 == "small" { d = $2 } END { print d }' "$DIGESTS")"
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"

# config [EXTRA_STORAGE_LINES]
config() {
    cat >"$WORK/berth.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
[storage]
data_dir = "$SCALE_DATA"
${1:-}
[log]
level = "warn,berth=info,berth::access=warn"
[mirror]
offline = true
[[upstreams]]
name = "docker.io"
url = "http://127.0.0.1:9"
EOF
}

# start_scale: spawn berth, wait for the first 200; sets PID and READY (seconds).
start_scale() {
    local out
    out=$($CLIENT start "$URL" "$PROBE" 600 -- "$BERTH_BIN" --config "$WORK/berth.toml" serve)
    PID=${out%% *}
    READY=${out#* }
    BENCH_PIDS+=("$PID")
    [[ $READY =~ ^[0-9.]+$ ]] || { tail -20 "$WORK/berth.log" >&2; die "berth did not become ready: $READY"; }
}

rss_anon_mib() { awk '/^RssAnon:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# wait_reconciled: until berth logs that background reconciliation is done (a berth that
# reconciles before serving never logs it: then 0). Prints the seconds it took, from its log.
wait_reconciled() {
    for _ in $(seq 1 6000); do
        if grep -q 'storage reconciled' "$WORK/berth.log" 2>/dev/null; then
            grep 'storage reconciled' "$WORK/berth.log" | tail -1 | grep -o 'secs=[0-9.]*' | cut -d= -f2
            return
        fi
        grep -q 'storage ready' "$WORK/berth.log" && ! grep -q 'in the background' "$WORK/berth.log" && { echo 0; return; }
        sleep 0.1
    done
    echo "timeout"
}

stop_clean() {
    kill "$PID"
    for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && die "berth did not stop within 60 s of SIGTERM"
    wait "$PID" 2>/dev/null || true
}

wait_quiet
: >"$WORK/berth.log"

log "a. first start on the fresh data"
config
start_scale
FIRST_READY=$READY
sleep 1
RSS_START_FIRST=$(rss_anon_mib "$PID")
LAT_FIRST_DURING=$($CLIENT latency "$URL" "$DIGESTS" "$SCALE_LATENCY_N")
RECON_FIRST=$(wait_reconciled)
LAT_QUIET=$($CLIENT latency "$URL" "$DIGESTS" "$SCALE_LATENCY_N")
log "mixed load for ${SCALE_LOAD_SECS}s"
LOAD=$($CLIENT load "$URL" "$DIGESTS" "$SCALE_LOAD_SECS" 4)
RSS_LOAD=$(rss_anon_mib "$PID")
USED=$($CLIENT gauge "$URL" berth_storage_used_bytes)

log "b. clean stop"
stop_clean
INDEX_BYTES=$(du -sb "$SCALE_DATA/index" | cut -f1)
PER_ENTRY=$((INDEX_BYTES / ENTRIES))
t0=$(now)
STATS=$("$BERTH_BIN" --config "$WORK/berth.toml" cache stats 2>&1 | sed -n 1,2p | paste -sd' ')
STATS_SECS=$(elapsed "$t0" "$(now)")

log "c. start after the clean stop"
: >"$WORK/berth.log"
start_scale
CLEAN_READY=$READY
sleep 1
RSS_START=$(rss_anon_mib "$PID")

log "d. kill -9, start again"
kill -9 "$PID"
wait "$PID" 2>/dev/null || true
: >"$WORK/berth.log"
start_scale
KILL_READY=$READY
LAT_DURING=$($CLIENT latency "$URL" "$DIGESTS" "$SCALE_LATENCY_N")
RECON=$(wait_reconciled)
RSS_AFTER_RECON=$(rss_anon_mib "$PID")
LAT_QUIET2=$($CLIENT latency "$URL" "$DIGESTS" "$SCALE_LATENCY_N")
stop_clean

log "e. eviction of 10%"
TARGET=$((USED - 1))
TARGET=$((TARGET / 100 * 90))
config "max_size = \"$((USED - 1))\"
low_water_percent = 90"
: >"$WORK/berth.log"
start_scale
EVICT_READY=$READY
$CLIENT latency "$URL" "$DIGESTS" "$SCALE_LATENCY_N" >"$WORK/lat-evict" &
LAT_PID=$!
# polled from one process: a python start every 100 ms would take CPU from the eviction
EVICT_SECS=$($CLIENT wait_gauge "$URL" berth_storage_used_bytes "$TARGET" "${SCALE_EVICT_WAIT:-300}")
[[ $EVICT_SECS == timeout ]] || EVICT_SECS=$(python3 -c "import sys; print(f'{float(sys.argv[1]) + float(sys.argv[2]):.1f}')" "$EVICT_READY" "$EVICT_SECS")
wait "$LAT_PID"
LAT_EVICT=$(cat "$WORK/lat-evict")
EVICTED=$($CLIENT gauge "$URL" berth_evictions_total)
RSS_EVICTING=$(rss_anon_mib "$PID")
# the run's end (its last removals, the index flush, the heap handed back), then a second
for _ in $(seq 1 300); do
    grep -q "evicted least recently used blobs" "$WORK/berth.log" && break
    sleep 0.1
done
sleep 1
RSS_EVICT=$(rss_anon_mib "$PID")
stop_clean

{
    echo "# bench/scale.sh $(date -u '+%F %T') UTC"
    echo "# berth: $BERTH_BIN_INFO"
    echo "# data: $SCALE_BLOBS small blobs (200 B) + $SCALE_LARGE x $SCALE_LARGE_MIB MiB + 1 manifest; built in ${BUILD_SECS}s"
    load_note
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| ready, first start on fresh data (no clean mark) | ${FIRST_READY} s |"
    echo "| ready after a clean stop | ${CLEAN_READY} s |"
    echo "| ready after kill -9 | ${KILL_READY} s |"
    echo "| background reconciliation after kill -9 (0: none) | ${RECON} s |"
    echo "| background reconciliation on first start (0: none) | ${RECON_FIRST} s |"
    echo "| RssAnon 1 s after start (clean stop) | ${RSS_START} MiB |"
    echo "| RssAnon 1 s after first start | ${RSS_START_FIRST} MiB |"
    echo "| RssAnon after ${SCALE_LOAD_SECS}s mixed load (requests errors: $LOAD) | ${RSS_LOAD} MiB |"
    echo "| RssAnon after reconciliation (kill -9) | ${RSS_AFTER_RECON} MiB |"
    echo "| hit latency p50/p99 ms, manifest / blob, quiet | ${LAT_QUIET} / ${LAT_QUIET2} (after kill -9) |"
    echo "| hit latency, during reconciliation after kill -9 | ${LAT_DURING} |"
    echo "| hit latency, right after first start | ${LAT_FIRST_DURING} |"
    echo "| index on disk after the runs above | ${INDEX_BYTES} B, ${PER_ENTRY} B per blob entry |"
    [[ -z $INDEX_FRESH ]] || echo "| index on disk as built (each entry: blobs, access, links) | ${INDEX_FRESH} B, $((INDEX_FRESH / ENTRIES)) B per blob entry |"
    echo "| \`berth cache stats\` ($STATS) | ${STATS_SECS} s |"
    echo "| evict 10% ($TARGET of $USED bytes left; evictions: $EVICTED) | ${EVICT_SECS} s |"
    echo "| hit latency during eviction | ${LAT_EVICT} |"
    echo "| RssAnon as the gauge reached the target / 1 s after the run ended | ${RSS_EVICTING} / ${RSS_EVICT} MiB |"
} | tee "$REPORT"
