#!/usr/bin/env bash
# Concurrent cold pulls: CLIENTS (8) skopeo copies of an image with one LAYER_MIB (300) MiB layer,
# started at the same moment against a mirror with an empty cache; berth vs. the CNCF
# Distribution proxy, both mirroring the same plain upstream registry.
#
# 1. A plain Distribution registry ("upstream") gets library/bigimg:v1 (one LAYER_MIB MiB random
#    layer + config) from seed.py.
# 2. berth and a Distribution proxy start with empty caches (both mirror that upstream).
# 3. For each mirror in turn (ORDER, default "berth distribution direct"; "direct" pulls from the
#    upstream itself, a baseline for what the clients alone cost): CLIENTS background
#    `skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/library/bigimg:v1 dir:...`
#    jobs are started back to back, then waited for; the batch wall time runs from before the
#    first start to after the last exit. While the batch runs, the mirror's RssAnon/RssFile
#    are sampled every 0.1 s; the CPU time (utime+stime) of the mirror and of the upstream
#    over the batch is read from /proc/PID/stat.
# 4. After the batch: the upstream log is allowed to settle (no growth for 2 s), every
#    destination's layer and config are checked with sha256sum and deleted right away.
# 5. Upstream requests are counted from the upstream's access log, using only the lines written
#    during that mirror's phase AND the mirror's User-Agent (berth/..., Go-http-client/...).
#
# Usage: bench/concurrent.sh   (env: LAYER_MIB=300 CLIENTS=8 ORDER="berth distribution direct"
#                               BERTH_NO_BUILD=1 BENCH_KEEP=1)
# Output: tables on stdout and in bench/out/concurrent.txt; per-client times in
# bench/out/concurrent-times.csv; upstream log / berth log copies in bench/out/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYER_MIB=${LAYER_MIB:-300}
CLIENTS=${CLIENTS:-8}
ORDER=${ORDER:-"berth distribution direct"}
REPO=library/bigimg
TAG=v1
# shellcheck disable=SC2206
ORDER_ARR=($ORDER)

check_tools

# Disk: upstream + 2 mirror caches + CLIENTS destinations of one mirror at a time (each
# destination is deleted as soon as it is verified) + Distribution's upload temp + margin.
NEED_MIB=$((LAYER_MIB * (CLIENTS + 4) + 1024))
AVAIL_MIB=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
log "disk: ${AVAIL_MIB} MiB free under $WORK, need about ${NEED_MIB} MiB"
[[ $AVAIL_MIB -ge $NEED_MIB ]] || die "not enough disk space under $WORK (${AVAIL_MIB} MiB free, need ${NEED_MIB} MiB); set BENCH_TMP"

build_berth
wait_quiet

start_registry upstream
UP_URL=$REG_URL UP_LOG=$REG_LOG UP_PORT=$REG_PORT UP_PID=$REG_PID
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "$LAYER_MIB"
read -r LAYER_DIGEST LAYER_SIZE CONFIG_DIGEST < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["layers"][0]["digest"], d["layers"][0]["size"], d["config"]["digest"])' "$WORK/seed.json")
LAYER_HEX=${LAYER_DIGEST#sha256:}
CONFIG_HEX=${CONFIG_DIGEST#sha256:}

start_berth berth "$UP_URL"
start_registry distproxy "$UP_URL"
DIST_PORT=$REG_PORT DIST_PID=$REG_PID DIST_ROOT=$REG_ROOT

declare -A PORT=([berth]=$BERTH_PORT [distribution]=$DIST_PORT [direct]=$UP_PORT)
declare -A PID=([berth]=$BERTH_PID [distribution]=$DIST_PID [direct]=$UP_PID)
declare -A CACHE_FILE=(
    [berth]="$BERTH_DATA/blobs/sha256/${LAYER_HEX:0:2}/$LAYER_HEX"
    [distribution]="$DIST_ROOT/docker/registry/v2/blobs/sha256/${LAYER_HEX:0:2}/$LAYER_HEX/data"
)

CSV="$OUT_DIR/concurrent-times.csv"
echo "mirror,client,exit,start_offset_s,seconds" >"$CSV"

declare -A WALL FAILED BAD CLIENT_STATS HWM MAX_ANON MAX_FILE LINES_FROM LINES_TO CACHED METRICS_BEFORE METRICS_AFTER CPU UPCPU

# sampler PID OUTFILE STOPFILE: one "RssAnon RssFile" line (KiB) every 0.1 s until STOPFILE
# exists (at most 20 min).
sampler() {
    local pid=$1 out=$2 stop=$3 i
    for i in $(seq 1 12000); do
        [[ -e $stop ]] && break
        awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print a, f }' "/proc/$pid/status" >>"$out" 2>/dev/null || break
        sleep 0.1
    done
}

run_batch() { # MIRROR
    local m=$1 port=${PORT[$1]} pid=${PID[$1]}
    local bdir="$WORK/batch-$m"
    mkdir -p "$bdir"
    settle_log "$UP_LOG" 30
    LINES_FROM[$m]=$(log_lines "$UP_LOG")
    if [[ $m == berth ]]; then METRICS_BEFORE[$m]=$(curl -s --max-time 5 "$BERTH_URL/metrics"); fi

    sampler "$pid" "$bdir/rss.samples" "$bdir/rss.stop" &
    local spid=$!
    BENCH_JOBS+=("$spid")

    log "$m: starting $CLIENTS concurrent cold pulls of $REPO:$TAG"
    local t0 t1 i c0 u0 jpids=()
    c0=$(cpu_ticks "$pid")
    u0=$(cpu_ticks "$UP_PID")
    t0=$(now)
    for i in $(seq 1 "$CLIENTS"); do
        (
            s=$(now)
            rc=0
            skopeo copy --quiet --src-tls-verify=false --retry-times 0 \
                "docker://127.0.0.1:$port/$REPO:$TAG" "dir:$bdir/dest-$i" >"$bdir/skopeo-$i.log" 2>&1 || rc=$?
            e=$(now)
            echo "$rc $s $e" >"$bdir/job-$i"
        ) &
        jpids+=($!)
        BENCH_JOBS+=("$!")
    done
    local p
    for p in "${jpids[@]}"; do wait "$p" || true; done
    t1=$(now)
    CPU[$m]=$(cpu_secs "$c0" "$(cpu_ticks "$pid")")
    UPCPU[$m]=$(cpu_secs "$u0" "$(cpu_ticks "$UP_PID")")
    touch "$bdir/rss.stop"
    wait "$spid" || true
    WALL[$m]=$(elapsed "$t0" "$t1")
    log "$m: batch done in ${WALL[$m]}s"

    # Per-client times and exit codes.
    local failed=0 rc s e times=""
    for i in $(seq 1 "$CLIENTS"); do
        read -r rc s e <"$bdir/job-$i"
        local secs off
        secs=$(elapsed "$s" "$e")
        off=$(elapsed "$t0" "$s")
        echo "$m,$i,$rc,$off,$secs" >>"$CSV"
        times+="$secs "
        if [[ $rc != 0 ]]; then
            failed=$((failed + 1))
            log "$m: client $i failed (exit $rc):"
            sed 's/^/    /' "$bdir/skopeo-$i.log" >&2
        fi
    done
    FAILED[$m]=$failed
    # shellcheck disable=SC2086
    CLIENT_STATS[$m]=$(python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}")' $times)

    HWM[$m]=$(peak_rss_kib "$pid")
    read -r "MAX_ANON[$m]" "MAX_FILE[$m]" < <(awk 'NF == 2 { if ($1 > a) a = $1; if ($2 > f) f = $2 } END { print a + 0, f + 0 }' "$bdir/rss.samples")

    # Let the mirror finish any background fill and the upstream finish logging.
    local f=${CACHE_FILE[$m]:-}
    if [[ -z $f ]]; then
        CACHED[$m]=n/a
    else
        for _ in $(seq 1 300); do
            [[ -f $f && $(stat -c %s "$f") == "$LAYER_SIZE" ]] && break
            sleep 0.1
        done
        if [[ -f $f && $(stat -c %s "$f") == "$LAYER_SIZE" ]]; then CACHED[$m]=yes; else CACHED[$m]=no; fi
    fi
    settle_log "$UP_LOG" 60
    LINES_TO[$m]=$(log_lines "$UP_LOG")
    if [[ $m == berth ]]; then METRICS_AFTER[$m]=$(curl -s --max-time 5 "$BERTH_URL/metrics"); fi
    HWM[$m]=$(peak_rss_kib "$pid") # again, after the fill completed

    # Verify each destination (layer + config sha256), delete it right away.
    local bad=0 hex got
    for i in $(seq 1 "$CLIENTS"); do
        for hex in "$LAYER_HEX" "$CONFIG_HEX"; do
            got=$(sha256sum "$bdir/dest-$i/$hex" 2>/dev/null | cut -d' ' -f1 || true)
            if [[ $got != "$hex" ]]; then
                bad=$((bad + 1))
                log "$m: client $i: $hex ${got:+has sha256 $got}${got:-missing}"
            fi
        done
        rm -rf "$bdir/dest-$i"
    done
    BAD[$m]=$bad
    log "$m: verified $CLIENTS destinations ($bad bad blobs)"
}

for m in "${ORDER_ARR[@]}"; do
    [[ -n ${PORT[$m]:-} ]] || die "ORDER: unknown mirror $m"
    run_batch "$m"
done

for m in "${ORDER_ARR[@]}"; do
    python3 "$BENCH_DIR/upstream_log.py" "$UP_LOG" "${LINES_FROM[$m]}" "${LINES_TO[$m]}" --json "$WORK/upstream-$m.json" >/dev/null
done
cp "$UP_LOG" "$OUT_DIR/concurrent-upstream.log"
cp "$BERTH_LOG" "$OUT_DIR/concurrent-berth.log"
for m in "${ORDER_ARR[@]}"; do
    mkdir -p "$OUT_DIR/concurrent-skopeo-$m"
    cp "$WORK/batch-$m"/skopeo-*.log "$OUT_DIR/concurrent-skopeo-$m/" 2>/dev/null || true
done

mib() { echo $(($1 / 1024)); }
{
    echo "# berth concurrent cold-pull benchmark  $(date -u '+%F %T UTC')"
    echo "# $CLIENTS concurrent skopeo copy docker://... dir:..., image $REPO:$TAG = one ${LAYER_MIB} MiB layer + config; empty mirror caches"
    echo "# berth=$BERTH_BIN_INFO"
    echo "# batch wall = from before the first skopeo start to after the last exit; mirrors run one after the other: ${ORDER_ARR[*]}"
    load_note
    echo
    printf '%-13s %14s %26s %8s %10s %12s %12s %14s\n' mirror "batch wall (s)" "client min / med / max (s)" failed "bad blobs" "cache filled" "CPU s (srv)" "upstream CPU s"
    for m in "${ORDER_ARR[@]}"; do
        printf '%-13s %14s %26s %8s %10s %12s %12s %14s\n' "$m" "${WALL[$m]}" "${CLIENT_STATS[$m]}" "${FAILED[$m]}/$CLIENTS" "${BAD[$m]}" "${CACHED[$m]}" "${CPU[$m]}" "${UPCPU[$m]}"
    done
    echo "(CPU s = utime+stime during the batch of the mirror process (for direct: the upstream) and of the upstream)"
    echo
    if [[ -n ${WALL[berth]:-} && -n ${WALL[distribution]:-} ]]; then
        echo "ratio berth/distribution (batch wall time): $(ratio "${WALL[berth]}" "${WALL[distribution]}")   (< 1 means berth is faster)"
    fi
    if [[ -n ${WALL[berth]:-} && -n ${WALL[direct]:-} ]]; then
        echo "ratio berth/direct       (batch wall time): $(ratio "${WALL[berth]}" "${WALL[direct]}")   (direct = the same 8 clients pulling from the upstream itself)"
    fi
    echo
    echo "Upstream requests during each mirror's phase, by that mirror's User-Agent (upstream access log)"
    python3 - "$WORK/seed.json" "$WORK" "${ORDER_ARR[@]}" <<'EOF'
import json, sys
seed = json.load(open(sys.argv[1]))
layer, config = seed["layers"][0], seed["config"]
ua = {"berth": "berth", "distribution": "distribution", "direct": "direct"}
print(f"{'mirror':<13} {'layer GETs':>10} {'layer MiB sent':>14} {'config GETs':>11}   other requests")
for m in sys.argv[3:]:
    d = json.load(open(f"{sys.argv[2]}/upstream-{m}.json"))
    r = d.get(ua[m], {"blob_gets": {}, "blob_bytes": {}, "requests": {}})
    lg = r["blob_gets"].get(layer["digest"], 0)
    lb = r["blob_bytes"].get(layer["digest"], 0) / 1048576
    cg = r["blob_gets"].get(config["digest"], 0)
    other = {k: v for k, v in r["requests"].items() if k != "GET blob"}
    print(f"{m:<13} {lg:>10} {lb:>14.1f} {cg:>11}   " + (", ".join(f"{k}={v}" for k, v in sorted(other.items())) or "-"))
    strays = {w: v["total"] for w, v in d.items() if w not in (ua[m], "harness")}
    if strays:
        print(f"{'':<13} (other clients in this phase: {strays})")
EOF
    echo
    echo "Peak memory of each mirror process"
    printf '%-13s %12s %18s %18s\n' mirror "VmHWM (MiB)" "max RssAnon (MiB)" "max RssFile (MiB)"
    for m in "${ORDER_ARR[@]}"; do
        [[ $m == direct ]] && continue
        printf '%-13s %12s %18s %18s\n' "$m" "$(mib "${HWM[$m]}")" "$(mib "${MAX_ANON[$m]}")" "$(mib "${MAX_FILE[$m]}")"
    done
    echo "(VmHWM = peak RSS over the process lifetime, read after the batch; RssAnon/RssFile sampled every 0.1 s during it."
    echo " berth serves stored blobs from a memory map: touched mapped file pages count as RssFile, not heap.)"
    if [[ -n ${METRICS_AFTER[berth]:-} ]]; then
        echo
        echo "berth /metrics (before -> after its batch):"
        for n in berth_upstream_blob_gets_total berth_blob_coalesced_total berth_blob_cache_misses_total berth_blob_cache_hits_total \
            berth_upstream_manifest_gets_total berth_manifest_coalesced_total berth_manifest_cache_hits_total \
            berth_upstream_bytes_total berth_upstream_errors_total berth_blob_fills_failed_total; do
            a=$(awk -v n="$n" '$1 == n { print $2 }' <<<"${METRICS_BEFORE[berth]}")
            b=$(awk -v n="$n" '$1 == n { print $2 }' <<<"${METRICS_AFTER[berth]}")
            printf '  %-40s %12s -> %s\n' "$n" "${a:-?}" "${b:-?}"
        done
    fi
    errs=$(grep -c -E 'ERROR|WARN' "$BERTH_LOG" || true)
    echo "berth log: $errs WARN/ERROR lines (copied to bench/out/concurrent-berth.log)"
} | tee "$OUT_DIR/concurrent.txt"
