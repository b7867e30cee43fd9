#!/usr/bin/env bash
# Cache-hit blob throughput: one large blob served by berth, by a Distribution proxy, and by
# nginx (sendfile on) serving berth's own cached file.
#
# 1. A plain Distribution registry ("upstream") gets an image with one BLOB_MIB MiB layer.
# 2. berth and a Distribution proxy mirror it; one skopeo pull through each warms both caches
#    (the cold pull time is reported too).
# 3. nginx serves berth's cached file, data_dir/blobs/sha256/<2 hex>/<hex>.
# 4. RUNS rounds of `curl -s -o /dev/null` GETs of the blob, interleaved (order rotated every
#    round); curl's time_total per request; status and byte count are checked on every run.
# 5. Medians, throughput, ratios, and peak RSS (VmHWM) of berth and the Distribution proxy.
#
# Usage: bench/blob.sh            (env: BLOB_MIB=300 RUNS=7 BERTH_NO_BUILD=1 BENCH_KEEP=1)
# Output: table on stdout and in bench/out/blob.txt; raw timings in bench/out/blob-times.csv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BLOB_MIB=${BLOB_MIB:-300}
RUNS=${RUNS:-7}
REPO=library/blobimg
TAG=v1

check_tools
build_berth
# shellcheck disable=SC2119 # no argument: the default limit
wait_quiet

start_registry upstream
UP_URL=$REG_URL
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "$BLOB_MIB"
DIGEST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/seed.json")
SIZE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["size"])' "$WORK/seed.json")
HEX=${DIGEST#sha256:}

start_berth berth "$UP_URL"
start_registry distproxy "$UP_URL"
DIST_PORT=$REG_PORT DIST_PID=$REG_PID DIST_ROOT=$REG_ROOT

# Warm both caches with a real pull.
declare -A COLD
for t in berth distribution; do
    port=$BERTH_PORT
    [[ $t == distribution ]] && port=$DIST_PORT
    t0=$(now)
    skopeo_pull "127.0.0.1:$port" "$REPO:$TAG" "$WORK/dest-$t" || die "warm-up pull through $t failed"
    t1=$(now)
    COLD[$t]=$(elapsed "$t0" "$t1")
    got=$(sha256sum "$WORK/dest-$t/$HEX" | cut -d' ' -f1)
    [[ $got == "$HEX" ]] || die "warm-up pull through $t returned wrong content ($got)"
    rm -rf "$WORK/dest-$t"
    log "cold pull through $t: ${COLD[$t]}s"
done

BERTH_HWM_COLD=$(peak_rss_kib "$BERTH_PID")

# Wait (bounded) until both caches hold the complete blob file.
BERTH_FILE="$BERTH_DATA/blobs/sha256/${HEX:0:2}/$HEX"
DIST_FILE="$DIST_ROOT/docker/registry/v2/blobs/sha256/${HEX:0:2}/$HEX/data"
for f in "$BERTH_FILE" "$DIST_FILE"; do
    for _ in $(seq 1 300); do
        [[ -f $f && $(stat -c %s "$f") == "$SIZE" ]] && break
        sleep 0.1
    done
    [[ -f $f && $(stat -c %s "$f") == "$SIZE" ]] || die "cache file $f missing or incomplete"
done
log "both caches hold $DIGEST ($SIZE bytes)"

start_nginx_file "$BERTH_FILE" "/blobs/$HEX"

declare -A URL=(
    [berth]="$BERTH_URL/v2/$REPO/blobs/$DIGEST"
    [distribution]="http://127.0.0.1:$DIST_PORT/v2/$REPO/blobs/$DIGEST"
    [nginx]="$NGINX_URL"
)
TARGETS=(berth distribution nginx)

fetch() { # TARGET -> seconds (curl time_total); checks status and size
    local out code size secs
    out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "${URL[$1]}") || die "curl $1 failed"
    read -r code size secs <<<"$out"
    [[ $code == 200 && $size == "$SIZE" ]] || die "$1: HTTP $code, $size bytes (expected 200, $SIZE)"
    echo "$secs"
}

# One untimed GET each so every server has the file in page cache and warm connections paths.
for t in "${TARGETS[@]}"; do fetch "$t" >/dev/null; done
BERTH_HWM_BEFORE=$(peak_rss_kib "$BERTH_PID")

CSV="$OUT_DIR/blob-times.csv"
echo "target,run,seconds" >"$CSV"
declare -A LIST MED
for t in "${TARGETS[@]}"; do LIST[$t]=""; done
for run in $(seq 1 "$RUNS"); do
    for k in 0 1 2; do
        t=${TARGETS[$(((run + k) % 3))]}
        s=$(fetch "$t")
        LIST[$t]+="$s "
        echo "$t,$run,$s" >>"$CSV"
        log "GET via $t #$run: ${s}s"
    done
done
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    MED[$t]=$(median ${LIST[$t]})
done

BERTH_HWM=$(peak_rss_kib "$BERTH_PID")
BERTH_STATUS=$(grep -E '^(VmHWM|VmRSS|RssAnon|RssFile):' "/proc/$BERTH_PID/status" | tr -s ' \t' ' ' | paste -sd, -)
DIST_HWM=$(peak_rss_kib "$DIST_PID")
NGINX_WORKER_HWM=$(for p in $(pgrep -P "$NGINX_PID" || true); do peak_rss_kib "$p"; done | sort -n | tail -1)
cp "$BERTH_LOG" "$OUT_DIR/blob-berth.log"

mibps() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.0f}")' "$SIZE" "$1"; }
{
    echo "# berth blob benchmark  $(date -u '+%F %T UTC')"
    echo "# one ${BLOB_MIB} MiB blob, cache hit, curl -s -o /dev/null (time_total), $RUNS interleaved runs"
    echo "# berth=$BERTH_BIN_INFO"
    load_note
    echo
    printf '%-14s %10s %8s   %s\n' target "median (s)" "MiB/s" "runs"
    for t in "${TARGETS[@]}"; do
        printf '%-14s %10s %8s   %s\n' "$t" "${MED[$t]}" "$(mibps "${MED[$t]}")" "${LIST[$t]}"
    done
    echo
    echo "ratio berth/distribution: $(ratio "${MED[berth]}" "${MED[distribution]}")   (time; < 1 means berth is faster)"
    echo "ratio berth/nginx:        $(ratio "${MED[berth]}" "${MED[nginx]}")"
    echo
    echo "cold skopeo pull (cache fill): berth ${COLD[berth]}s, distribution ${COLD[distribution]}s"
    echo
    echo "berth peak RSS (VmHWM): $((BERTH_HWM / 1024)) MiB after the timed runs" \
        "($((BERTH_HWM_COLD / 1024)) MiB after the cold fill, $((BERTH_HWM_BEFORE / 1024)) MiB after the first cache-hit GET)"
    echo "berth /proc status now: $BERTH_STATUS"
    echo "distribution proxy VmHWM: $((DIST_HWM / 1024)) MiB; nginx worker VmHWM: $((${NGINX_WORKER_HWM:-0} / 1024)) MiB"
    echo "berth upstream blob GETs: $(metric "$BERTH_URL" berth_upstream_blob_gets_total), cache hits: $(metric "$BERTH_URL" berth_blob_cache_hits_total)"
    errs=$(grep -c -E 'ERROR|WARN' "$BERTH_LOG" || true)
    echo "berth log: $errs WARN/ERROR lines (copied to bench/out/blob-berth.log)"
} | tee "$OUT_DIR/blob.txt"
