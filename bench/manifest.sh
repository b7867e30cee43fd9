#!/usr/bin/env bash
# Manifest GET by a fresh tag: requests/s under `wrk -t2 -c32`, berth vs. the CNCF
# Distribution proxy, both mirroring the same plain upstream registry.
#
# 1. A plain Distribution registry ("upstream") gets library/mfimg:v1 (one LAYER_MIB (1) MiB
#    layer + config) from seed.py.
# 2. berth (tag_ttl = "5m", so the tag stays fresh for the whole run) and a Distribution proxy
#    start with empty caches. Both are warmed with two `curl` GETs of the manifest by tag with
#    the Accept header below; each answer is checked (200, sha256 of the body and
#    Docker-Content-Digest equal the seeded manifest digest).
# 3. For each target in turn (ORDER, default "berth distribution"):
#    `wrk -t2 -c32 -d${DURATION}s --latency -H 'Accept: ...' URL/v2/library/mfimg/manifests/v1`,
#    then one more checked curl GET. Upstream requests made during the run are counted from the
#    upstream's access log (lines written during the run, by the mirror's User-Agent); the
#    CPU time (utime+stime) of the mirror and of the upstream during the run is read from
#    /proc/PID/stat.
#
# The Distribution proxy runs with log level warn and its access log off (DIST_QUIET=1, the
# default): by default it writes two log lines per request, which would cost it CPU here; berth
# runs at its bench level (warn), which logs nothing per request. The upstream keeps its access
# log (needed for counting) but at level warn.
#
# On a small machine wrk, the mirror and (for Distribution) the upstream share the CPUs, so
# these are "requests/s on this box with the load generator on it", not server capacity.
#
# Usage: bench/manifest.sh   (env: DURATION=10 CONNS=32 THREADS=2 ORDER="berth distribution"
#                             DIST_QUIET=1 LAYER_MIB=1 BERTH_NO_BUILD=1 BENCH_KEEP=1)
# Output: table on stdout and in bench/out/manifest.txt; raw wrk output in bench/out/manifest-wrk-*.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ORDER=${ORDER:-"berth distribution"}
DIST_QUIET=${DIST_QUIET:-1}
RUN_QUIET_WAIT=${RUN_QUIET_WAIT:-120}
LAYER_MIB=${LAYER_MIB:-1}
REPO=library/mfimg
TAG=v1
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'
# shellcheck disable=SC2206
ORDER_ARR=($ORDER)

check_tools
need wrk wrk
build_berth
wait_quiet
LOAD_FIRST=$BENCH_LOAD_START

REG_LOG_LEVEL=warn start_registry upstream
UP_URL=$REG_URL UP_LOG=$REG_LOG UP_PID=$REG_PID
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "$LAYER_MIB"
MANIFEST_DIGEST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest_digest"])' "$WORK/seed.json")

start_berth berth "$UP_URL"
if [[ $DIST_QUIET == 1 ]]; then
    REG_LOG_LEVEL=warn REG_ACCESS_LOG=0 start_registry distproxy "$UP_URL"
else
    start_registry distproxy "$UP_URL"
fi
DIST_URL=$REG_URL DIST_PID=$REG_PID

declare -A BASE=([berth]=$BERTH_URL [distribution]=$DIST_URL)
declare -A PID=([berth]=$BERTH_PID [distribution]=$DIST_PID)
declare -A UA=([berth]=berth [distribution]=distribution)

# check_get TARGET: one GET of the manifest by tag; dies unless it is the seeded manifest.
check_get() {
    local t=$1 out code digest_hdr body_sha
    out=$(curl -s --max-time 10 -D "$WORK/check.hdr" -o "$WORK/check.body" -w '%{http_code}' \
        -H "Accept: $ACCEPT" "${BASE[$t]}/v2/$REPO/manifests/$TAG") || die "$t: curl failed"
    code=$out
    digest_hdr=$(awk 'tolower($1) == "docker-content-digest:" { gsub("\r", "", $2); print $2 }' "$WORK/check.hdr")
    body_sha="sha256:$(sha256sum "$WORK/check.body" | cut -d' ' -f1)"
    [[ $code == 200 && $body_sha == "$MANIFEST_DIGEST" && $digest_hdr == "$MANIFEST_DIGEST" ]] ||
        die "$t: GET manifest by tag: HTTP $code, body $body_sha, Docker-Content-Digest '$digest_hdr' (want $MANIFEST_DIGEST)"
}


for t in "${ORDER_ARR[@]}"; do
    [[ -n ${BASE[$t]:-} ]] || die "ORDER: unknown target $t"
    check_get "$t"
    check_get "$t"
    log "$t: warmed, manifest by tag answers $MANIFEST_DIGEST"
done
MANIFEST_SIZE=$(stat -c %s "$WORK/check.body")

declare -A RPS REQS NON2XX SOCKERR P50 P99 LMAX LINES_FROM LINES_TO CPU UPCPU BYTES_PER_REQ MET_BEFORE MET_AFTER BUSY LOADS
for t in "${ORDER_ARR[@]}"; do
    wait_quiet "$RUN_QUIET_WAIT"
    settle_log "$UP_LOG" 10
    LINES_FROM[$t]=$(log_lines "$UP_LOG")
    if [[ $t == berth ]]; then MET_BEFORE[$t]=$(curl -s --max-time 5 "$BERTH_URL/metrics"); fi
    c0=$(cpu_ticks "${PID[$t]}")
    u0=$(cpu_ticks "$UP_PID")
    log "$t: wrk -t$THREADS -c$CONNS -d${DURATION}s"
    rm -f "$WORK/busy-$t" "$WORK/stop-$t"
    busy_watch "$WORK/busy-$t" "$WORK/stop-$t" &
    BENCH_JOBS+=("$!")
    bw=$!
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -H "Accept: $ACCEPT" \
        "${BASE[$t]}/v2/$REPO/manifests/$TAG" >"$WORK/wrk-$t.txt" 2>&1 || {
        cat "$WORK/wrk-$t.txt" >&2
        die "wrk against $t failed"
    }
    c1=$(cpu_ticks "${PID[$t]}")
    u1=$(cpu_ticks "$UP_PID")
    touch "$WORK/stop-$t"
    wait "$bw" || true
    BUSY[$t]=$(busy_summary "$WORK/busy-$t")
    LOADS[$t]="$BENCH_LOAD_START -> $(cut -d' ' -f1-3 /proc/loadavg)"
    CPU[$t]=$(cpu_secs "$c0" "$c1")
    UPCPU[$t]=$(cpu_secs "$u0" "$u1")
    settle_log "$UP_LOG" 30
    LINES_TO[$t]=$(log_lines "$UP_LOG")
    if [[ $t == berth ]]; then MET_AFTER[$t]=$(curl -s --max-time 5 "$BERTH_URL/metrics"); fi
    check_get "$t"
    cp "$WORK/wrk-$t.txt" "$OUT_DIR/manifest-wrk-$t.txt"

    read -r "RPS[$t]" "REQS[$t]" "NON2XX[$t]" "SOCKERR[$t]" "P50[$t]" "P99[$t]" "LMAX[$t]" "BYTES_PER_REQ[$t]" < <(python3 - "$WORK/wrk-$t.txt" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def g(p, default="?"):
    m = re.search(p, t, re.M)
    return m.group(1) if m else default
units = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
reqs = int(g(r"^\s*(\d+) requests in", "0"))
m = re.search(r"requests in [^,]+, ([\d.]+)([KMG]?B) read", t)
read = float(m.group(1)) * units[m.group(2)] if m else 0
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(g(r"^Requests/sec:\s+([\d.]+)"), reqs, g(r"Non-2xx or 3xx responses: (\d+)", "0"),
      sum(int(x) for x in sock.groups()) if sock else 0,
      g(r"^\s+50%\s+(\S+)"), g(r"^\s+99%\s+(\S+)"), g(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)"),
      int(read / reqs) if reqs else 0)
EOF
    )
    python3 "$BENCH_DIR/upstream_log.py" "$UP_LOG" "${LINES_FROM[$t]}" "${LINES_TO[$t]}" --json "$WORK/upstream-$t.json" >/dev/null
    log "$t: ${RPS[$t]} requests/s (${REQS[$t]} requests, non-2xx ${NON2XX[$t]}, socket errors ${SOCKERR[$t]})"
done
cp "$UP_LOG" "$OUT_DIR/manifest-upstream.log"
cp "$BERTH_LOG" "$OUT_DIR/manifest-berth.log"

{
    echo "# berth manifest benchmark  $(date -u '+%F %T UTC')"
    echo "# GET /v2/$REPO/manifests/$TAG (tag cached and fresh: berth tag_ttl=5m), wrk -t$THREADS -c$CONNS -d${DURATION}s --latency"
    echo "# Accept: $ACCEPT"
    echo "# manifest $MANIFEST_DIGEST, $MANIFEST_SIZE bytes; berth=$BERTH_BIN_INFO"
    echo "# Distribution proxy: $([[ $DIST_QUIET == 1 ]] && echo 'log level warn, access log off' || echo 'default logging (info + access log)'); upstream: level warn + access log"
    echo "# wrk ($THREADS threads), the mirror and the upstream share this machine's $(nproc) CPUs: the load generator takes"
    echo "# a large part of them, so these are requests/s on this box, not either server's capacity."
    echo "# load average at start: $LOAD_FIRST, at end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
    echo
    printf '%-13s %11s %9s %8s %8s %9s %9s %9s %10s %12s %10s\n' target "requests/s" requests non-2xx "sock err" "p50" "p99" "max" "bytes/resp" "CPU s (srv)" compilers
    for t in "${ORDER_ARR[@]}"; do
        printf '%-13s %11s %9s %8s %8s %9s %9s %9s %10s %12s %10s\n' "$t" "${RPS[$t]}" "${REQS[$t]}" "${NON2XX[$t]}" "${SOCKERR[$t]}" \
            "${P50[$t]}" "${P99[$t]}" "${LMAX[$t]}" "${BYTES_PER_REQ[$t]}" "${CPU[$t]}" "${BUSY[$t]}"
    done
    echo "(bytes/resp = wrk's bytes read / requests, headers included; CPU s = utime+stime of the mirror process during"
    echo " the run; compilers = whether rustc/cargo/cc/ld ran elsewhere on the machine during the run)"
    for t in "${ORDER_ARR[@]}"; do echo "load average around the $t run: ${LOADS[$t]}"; done
    if [[ -n ${RPS[berth]:-} && -n ${RPS[distribution]:-} ]]; then
        echo
        echo "ratio berth/distribution (requests/s): $(ratio "${RPS[berth]}" "${RPS[distribution]}")x"
    fi
    echo
    echo "Upstream requests during each wrk run (upstream access log lines written during the run, by the mirror's User-Agent)"
    printf '%-13s %10s %14s   %s\n' target requests "upstream CPU s" "by kind"
    for t in "${ORDER_ARR[@]}"; do
        python3 - "$WORK/upstream-$t.json" "${UA[$t]}" "$t" "${UPCPU[$t]}" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
r = d.get(sys.argv[2], {"total": 0, "requests": {}, "statuses": {}})
kinds = ", ".join(f"{k}={v}" for k, v in sorted(r["requests"].items())) or "-"
st = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
print(f"{sys.argv[3]:<13} {r['total']:>10} {sys.argv[4]:>14}   {kinds}" + (f"  (status {st})" if st else ""))
strays = {w: v["total"] for w, v in d.items() if w not in (sys.argv[2], "harness")}
if strays:
    print(f"{'':<13} (other clients during this run: {strays})")
EOF
    done
    if [[ -n ${MET_AFTER[berth]:-} ]]; then
        echo
        echo "berth /metrics (before -> after its wrk run):"
        for n in berth_manifest_cache_hits_total berth_manifest_cache_misses_total berth_manifest_coalesced_total \
            berth_upstream_manifest_gets_total berth_upstream_manifest_heads_total berth_upstream_errors_total; do
            a=$(awk -v n="$n" '$1 == n { print $2 }' <<<"${MET_BEFORE[berth]}")
            b=$(awk -v n="$n" '$1 == n { print $2 }' <<<"${MET_AFTER[berth]}")
            printf '  %-40s %12s -> %s\n' "$n" "${a:-?}" "${b:-?}"
        done
    fi
    errs=$(grep -c -E 'ERROR|WARN' "$BERTH_LOG" || true)
    echo "berth log: $errs WARN/ERROR lines (copied to bench/out/manifest-berth.log)"
} | tee "$OUT_DIR/manifest.txt"
