#!/usr/bin/env bash
# Concurrent cold pulls: CLIENTS (8) skopeo copies of an image with one LAYER_MIB (300) MiB layer,
# started at the same moment against a mirror with an empty cache; berth vs. the CNCF
# Distribution proxy, both mirroring the same plain upstream registry.
#
# 1. A plain Distribution registry ("upstream") gets library/bigimg:v1 (one LAYER_MIB MiB random
#    layer + config) from seed.py.
# 2. Every round (ROUNDS, default 1) starts a fresh berth and a fresh Distribution proxy with
#    empty caches, both mirroring that upstream (and stops them and deletes their data after).
# 3. For each target in turn (ORDER, default "berth distribution direct", rotated by one every
#    round; "direct" pulls from the upstream itself: what the clients alone cost): wait (bounded)
#    for compilers elsewhere to finish, then start CLIENTS background
#    `skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/library/bigimg:v1 dir:...`
#    jobs back to back and wait for all; the batch wall time runs from before the first start to
#    after the last exit. During the batch the target's RssAnon/RssFile are sampled every 0.1 s;
#    its CPU time and the upstream's (utime+stime, /proc/PID/stat) are taken around the batch.
# 4. After the batch: wait until the mirror's cache file is complete and the upstream log has
#    not grown for 2 s, then check every destination's layer and config with sha256sum and
#    delete that destination right away.
# 5. Upstream requests are counted from the upstream's access log, using only the lines written
#    during that batch AND the target's User-Agent (berth/..., Go-http-client/..., skopeo/...).
#
# Usage: bench/concurrent.sh   (env: LAYER_MIB=300 CLIENTS=8 ROUNDS=1
#                               ORDER="berth distribution direct" BERTH_NO_BUILD=1 BENCH_KEEP=1
#                               BENCH_QUIET_WAIT=180 BATCH_QUIET_WAIT=120)
# Output: tables on stdout and in bench/out/concurrent.txt; per-client times in
# bench/out/concurrent-times.csv; copies of the upstream log, berth logs and skopeo logs in bench/out/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYER_MIB=${LAYER_MIB:-300}
CLIENTS=${CLIENTS:-8}
ROUNDS=${ROUNDS:-1}
ORDER=${ORDER:-"berth distribution direct"}
BATCH_QUIET_WAIT=${BATCH_QUIET_WAIT:-120}
REPO=library/bigimg
TAG=v1
# shellcheck disable=SC2206
ORDER_ARR=($ORDER)
for m in "${ORDER_ARR[@]}"; do
    [[ $m == berth || $m == distribution || $m == direct ]] || die "ORDER: unknown target $m"
done

check_tools

# Disk: upstream + 2 mirror caches + CLIENTS destinations of one batch at a time (each
# destination is deleted as soon as it is verified) + Distribution's upload temp + margin.
NEED_MIB=$((LAYER_MIB * (CLIENTS + 4) + 1024))
AVAIL_MIB=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
log "disk: ${AVAIL_MIB} MiB free under $WORK, need about ${NEED_MIB} MiB"
[[ $AVAIL_MIB -ge $NEED_MIB ]] || die "not enough disk space under $WORK (${AVAIL_MIB} MiB free, need ${NEED_MIB} MiB); set BENCH_TMP"

build_berth
wait_quiet
LOAD_FIRST=$BENCH_LOAD_START

start_registry upstream
UP_URL=$REG_URL UP_LOG=$REG_LOG UP_PORT=$REG_PORT UP_PID=$REG_PID
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "$LAYER_MIB"
read -r LAYER_DIGEST LAYER_SIZE CONFIG_DIGEST < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["layers"][0]["digest"], d["layers"][0]["size"], d["config"]["digest"])' "$WORK/seed.json")
LAYER_HEX=${LAYER_DIGEST#sha256:}
CONFIG_HEX=${CONFIG_DIGEST#sha256:}

CSV="$OUT_DIR/concurrent-times.csv"
echo "round,target,client,exit,start_offset_s,seconds" >"$CSV"
rm -rf "$OUT_DIR/concurrent-skopeo" "$OUT_DIR"/concurrent-berth*.log
mkdir -p "$OUT_DIR/concurrent-skopeo"

declare -A PORT PID CACHE_FILE
PORT[direct]=$UP_PORT
PID[direct]=$UP_PID
# Per batch, keyed "target:round".
declare -A WALL FAILED BAD CLIENT_STATS HWM MAX_ANON MAX_FILE LINES_FROM LINES_TO CACHED CPU UPCPU BUSY MET_BEFORE MET_AFTER
BATCHES=() # "target:round" in run order

# sampler PID OUTFILE STOPFILE: one "RssAnon RssFile" line (KiB) every 0.1 s until STOPFILE
# exists (at most 20 min).
sampler() {
    local pid=$1 out=$2 stop=$3 i
    for i in $(seq 1 12000); do
        [[ -e $stop ]] && break
        awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print a, f }' "/proc/$pid/status" >>"$out" 2>/dev/null || break
        sleep 0.1
    done
    return 0
}

run_batch() { # TARGET ROUND
    local m=$1 r=$2 k="$1:$2"
    local port=${PORT[$m]} pid=${PID[$m]}
    local bdir="$WORK/batch-$m-r$r"
    mkdir -p "$bdir"
    BATCHES+=("$k")
    wait_quiet "$BATCH_QUIET_WAIT"
    settle_log "$UP_LOG" 30
    LINES_FROM[$k]=$(log_lines "$UP_LOG")
    if [[ $m == berth ]]; then MET_BEFORE[$k]=$(curl -s --max-time 5 "$BERTH_URL/metrics"); fi

    sampler "$pid" "$bdir/rss.samples" "$bdir/stop" &
    BENCH_JOBS+=("$!")
    local spid=$!
    busy_watch "$bdir/busy" "$bdir/stop" &
    BENCH_JOBS+=("$!")
    local bpid=$!

    log "round $r, $m: starting $CLIENTS concurrent cold pulls of $REPO:$TAG"
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
    CPU[$k]=$(cpu_secs "$c0" "$(cpu_ticks "$pid")")
    UPCPU[$k]=$(cpu_secs "$u0" "$(cpu_ticks "$UP_PID")")
    touch "$bdir/stop"
    wait "$spid" "$bpid" || true
    WALL[$k]=$(elapsed "$t0" "$t1")
    BUSY[$k]=$(busy_summary "$bdir/busy")
    log "round $r, $m: batch done in ${WALL[$k]}s"

    # Per-client times and exit codes.
    local failed=0 rc s e times="" secs off
    for i in $(seq 1 "$CLIENTS"); do
        read -r rc s e <"$bdir/job-$i"
        secs=$(elapsed "$s" "$e")
        off=$(elapsed "$t0" "$s")
        echo "$r,$m,$i,$rc,$off,$secs" >>"$CSV"
        times+="$secs "
        if [[ $rc != 0 ]]; then
            failed=$((failed + 1))
            log "round $r, $m: client $i failed (exit $rc):"
            sed 's/^/    /' "$bdir/skopeo-$i.log" >&2
        fi
        cp "$bdir/skopeo-$i.log" "$OUT_DIR/concurrent-skopeo/r$r-$m-$i.log"
    done
    FAILED[$k]=$failed
    # shellcheck disable=SC2086
    CLIENT_STATS[$k]=$(python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}")' $times)
    read -r "MAX_ANON[$k]" "MAX_FILE[$k]" < <(awk 'NF == 2 { if ($1 > a) a = $1; if ($2 > f) f = $2 } END { print a + 0, f + 0 }' "$bdir/rss.samples")

    # Let the mirror finish any background fill and the upstream finish logging.
    local f=${CACHE_FILE[$m]:-}
    if [[ -z $f ]]; then
        CACHED[$k]=n/a
    else
        for _ in $(seq 1 300); do
            [[ -f $f && $(stat -c %s "$f") == "$LAYER_SIZE" ]] && break
            sleep 0.1
        done
        if [[ -f $f && $(stat -c %s "$f") == "$LAYER_SIZE" ]]; then CACHED[$k]=yes; else CACHED[$k]=no; fi
    fi
    settle_log "$UP_LOG" 60
    LINES_TO[$k]=$(log_lines "$UP_LOG")
    if [[ $m == berth ]]; then MET_AFTER[$k]=$(curl -s --max-time 5 "$BERTH_URL/metrics"); fi
    HWM[$k]=$(peak_rss_kib "$pid")
    python3 "$BENCH_DIR/upstream_log.py" "$UP_LOG" "${LINES_FROM[$k]}" "${LINES_TO[$k]}" --json "$WORK/upstream-$m-r$r.json" >/dev/null

    # Verify each destination (layer + config sha256), delete it right away.
    local bad=0 hex got
    for i in $(seq 1 "$CLIENTS"); do
        for hex in "$LAYER_HEX" "$CONFIG_HEX"; do
            got=$(sha256sum "$bdir/dest-$i/$hex" 2>/dev/null | cut -d' ' -f1 || true)
            if [[ $got != "$hex" ]]; then
                bad=$((bad + 1))
                log "round $r, $m: client $i: blob $hex ${got:+has sha256 $got}${got:-is missing}"
            fi
        done
        rm -rf "$bdir/dest-$i"
    done
    BAD[$k]=$bad
    log "round $r, $m: verified $CLIENTS destinations ($bad bad blobs)"
}

for r in $(seq 1 "$ROUNDS"); do
    start_berth "berth-r$r" "$UP_URL"
    start_registry "distproxy-r$r" "$UP_URL"
    PORT[berth]=$BERTH_PORT PID[berth]=$BERTH_PID
    PORT[distribution]=$REG_PORT PID[distribution]=$REG_PID
    CACHE_FILE[berth]="$BERTH_DATA/blobs/sha256/${LAYER_HEX:0:2}/$LAYER_HEX"
    CACHE_FILE[distribution]="$REG_ROOT/docker/registry/v2/blobs/sha256/${LAYER_HEX:0:2}/$LAYER_HEX/data"
    n=${#ORDER_ARR[@]}
    for j in $(seq 0 $((n - 1))); do
        run_batch "${ORDER_ARR[$(((j + r - 1) % n))]}" "$r"
    done
    stop_pid "${PID[berth]}"
    stop_pid "${PID[distribution]}"
    cp "$BERTH_LOG" "$OUT_DIR/concurrent-berth-r$r.log"
    rm -rf "$WORK/berth-r$r/berth-data" "$WORK/distproxy-r$r/storage"
done
cp "$UP_LOG" "$OUT_DIR/concurrent-upstream.log"

# Medians over rounds per target.
declare -A MED
for m in "${ORDER_ARR[@]}"; do
    vals=""
    for r in $(seq 1 "$ROUNDS"); do vals+="${WALL[$m:$r]} "; done
    # shellcheck disable=SC2086
    MED[$m]=$(median $vals)
done

mib() { echo $(($1 / 1024)); }
{
    echo "# berth concurrent cold-pull benchmark  $(date -u '+%F %T UTC')"
    echo "# $CLIENTS concurrent skopeo copy docker://... dir:..., image $REPO:$TAG = one ${LAYER_MIB} MiB layer + config; empty mirror caches"
    echo "# berth=$BERTH_BIN_INFO"
    echo "# batch wall = from before the first skopeo start to after the last exit; one batch at a time, $ROUNDS round(s), fresh mirrors every round"
    echo "# load average at start: $LOAD_FIRST, at end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs ($CLIENTS skopeo clients + mirror + upstream share them)"
    echo
    printf '%-5s %-13s %10s %26s %7s %5s %7s %8s %8s %10s\n' round target "wall (s)" "client min / med / max (s)" failed "bad" "cached" "CPU s" "up CPU s" "compilers"
    for k in "${BATCHES[@]}"; do
        m=${k%%:*} r=${k##*:}
        printf '%-5s %-13s %10s %26s %7s %5s %7s %8s %8s %10s\n' "$r" "$m" "${WALL[$k]}" "${CLIENT_STATS[$k]}" "${FAILED[$k]}/$CLIENTS" "${BAD[$k]}" \
            "${CACHED[$k]}" "${CPU[$k]}" "${UPCPU[$k]}" "${BUSY[$k]}"
    done
    echo "(CPU s: utime+stime during the batch of the target process (direct: the upstream); up CPU s: of the upstream;"
    echo " bad: destination blobs whose sha256 did not match; cached: the mirror's cache file complete afterwards;"
    echo " compilers: whether rustc/cargo/cc/ld ran elsewhere on the machine during the batch)"
    echo
    if [[ $ROUNDS -gt 1 ]]; then
        printf 'median batch wall (s):'
        for m in "${ORDER_ARR[@]}"; do printf '  %s %s' "$m" "${MED[$m]}"; done
        echo
    fi
    if [[ -n ${MED[berth]:-} && -n ${MED[distribution]:-} ]]; then
        echo "ratio berth/distribution (batch wall time): $(ratio "${MED[berth]}" "${MED[distribution]}")   (< 1 means berth is faster)"
    fi
    if [[ -n ${MED[berth]:-} && -n ${MED[direct]:-} ]]; then
        echo "ratio berth/direct       (batch wall time): $(ratio "${MED[berth]}" "${MED[direct]}")   (direct = the same clients pulling from the upstream itself)"
    fi
    echo
    echo "Upstream requests during each batch, by the target's User-Agent (upstream access log)"
    python3 - "$WORK/seed.json" "$WORK" "${BATCHES[@]}" <<'EOF'
import json, sys
seed = json.load(open(sys.argv[1]))
layer, config = seed["layers"][0], seed["config"]
print(f"{'round':<5} {'target':<13} {'layer GETs':>10} {'layer MiB sent':>14} {'config GETs':>11}   other requests")
for k in sys.argv[3:]:
    m, r = k.split(":")
    d = json.load(open(f"{sys.argv[2]}/upstream-{m}-r{r}.json"))
    e = d.get(m, {"blob_gets": {}, "blob_bytes": {}, "requests": {}})
    lg = e["blob_gets"].get(layer["digest"], 0)
    lb = e["blob_bytes"].get(layer["digest"], 0) / 1048576
    cg = e["blob_gets"].get(config["digest"], 0)
    other = {kk: v for kk, v in e["requests"].items() if kk != "GET blob"}
    print(f"{r:<5} {m:<13} {lg:>10} {lb:>14.1f} {cg:>11}   " + (", ".join(f"{kk}={v}" for kk, v in sorted(other.items())) or "-"))
    strays = {w: v["total"] for w, v in d.items() if w not in (m, "harness")}
    if strays:
        print(f"{'':<19} (other clients during this batch: {strays})")
EOF
    echo
    echo "Peak memory of each mirror process (a fresh process every round)"
    printf '%-5s %-13s %12s %18s %18s\n' round mirror "VmHWM (MiB)" "max RssAnon (MiB)" "max RssFile (MiB)"
    for k in "${BATCHES[@]}"; do
        m=${k%%:*} r=${k##*:}
        [[ $m == direct ]] && continue
        printf '%-5s %-13s %12s %18s %18s\n' "$r" "$m" "$(mib "${HWM[$k]}")" "$(mib "${MAX_ANON[$k]}")" "$(mib "${MAX_FILE[$k]}")"
    done
    echo "(VmHWM = peak RSS over the process lifetime, read after the batch and the cache fill; RssAnon/RssFile"
    echo " sampled every 0.1 s during the batch. berth serves stored blobs from a memory map: touched mapped"
    echo " file pages count as RssFile, not heap.)"
    for k in "${BATCHES[@]}"; do
        [[ ${k%%:*} == berth ]] || continue
        echo
        echo "berth /metrics, round ${k##*:} (before -> after its batch):"
        for n in berth_upstream_blob_gets_total berth_blob_coalesced_total berth_blob_cache_misses_total berth_blob_cache_hits_total \
            berth_upstream_manifest_gets_total berth_manifest_coalesced_total berth_manifest_cache_hits_total \
            berth_upstream_bytes_total berth_upstream_errors_total berth_blob_fills_failed_total; do
            a=$(awk -v n="$n" '$1 == n { print $2 }' <<<"${MET_BEFORE[$k]}")
            b=$(awk -v n="$n" '$1 == n { print $2 }' <<<"${MET_AFTER[$k]}")
            printf '  %-40s %12s -> %s\n' "$n" "${a:-?}" "${b:-?}"
        done
    done
    echo
    for r in $(seq 1 "$ROUNDS"); do
        errs=$(grep -c -E 'ERROR|WARN' "$OUT_DIR/concurrent-berth-r$r.log" || true)
        echo "berth log round $r: $errs WARN/ERROR lines (bench/out/concurrent-berth-r$r.log)"
    done
} | tee "$OUT_DIR/concurrent.txt"
