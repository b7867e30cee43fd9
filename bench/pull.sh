#!/usr/bin/env bash
# Whole-image pull benchmark: berth vs. CNCF Distribution in proxy mode vs. the upstream itself.
#
# 1. A plain Distribution registry ("upstream") gets a random image seeded (default layers
#    30+20+10 MiB, see LAYERS).
# 2. berth and a Distribution proxy, both with empty caches, mirror that upstream.
# 3. One cold `skopeo copy docker://... dir:...` through each (and one direct from upstream),
#    then WARM_RUNS warm pulls each, interleaved, order rotated every round.
# 4. Upstream requests are attributed by User-Agent in the upstream's access log
#    (berth/x.y.z, Go-http-client = the Distribution proxy, skopeo/x.y.z = direct pulls),
#    split into the cold and warm phases.
#
# Usage: bench/pull.sh            (env: LAYERS="30 20 10" WARM_RUNS=5 BERTH_NO_BUILD=1 BENCH_KEEP=1)
# Output: table on stdout and in bench/out/pull.txt; raw timings in bench/out/pull-times.csv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYERS=${LAYERS:-"30 20 10"}
WARM_RUNS=${WARM_RUNS:-5}
REPO=library/benchimg
TAG=v1
# shellcheck disable=SC2206
LAYER_ARR=($LAYERS)

check_tools
build_berth
wait_quiet

start_registry upstream
UP_URL=$REG_URL UP_PORT=$REG_PORT UP_LOG=$REG_LOG
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "${LAYER_ARR[@]}"

start_berth berth "$UP_URL"
start_registry distproxy "$UP_URL"
DIST_PORT=$REG_PORT DIST_PID=$REG_PID

declare -A HOSTPORT=(
    [berth]="127.0.0.1:$BERTH_PORT"
    [distribution]="127.0.0.1:$DIST_PORT"
    [direct]="127.0.0.1:$UP_PORT"
)
TARGETS=(berth distribution direct)
CSV="$OUT_DIR/pull-times.csv"
echo "target,phase,run,seconds" >"$CSV"

# verify DEST: every blob in the seed summary is present with the right sha256.
verify_pull() {
    python3 - "$WORK/seed.json" "$1" <<'EOF'
import hashlib, json, os, sys
seed, dest = json.load(open(sys.argv[1])), sys.argv[2]
for blob in [seed["config"]] + seed["layers"]:
    hexd = blob["digest"].split(":", 1)[1]
    path = os.path.join(dest, hexd)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != hexd or os.path.getsize(path) != blob["size"]:
        sys.exit(f"verify: {path} does not match {blob['digest']}")
EOF
}

timed_pull() { # TARGET PHASE RUN -> prints seconds
    local target=$1 phase=$2 run=$3 dest="$WORK/dest-$1"
    local t0 t1 s
    t0=$(now)
    skopeo_pull "${HOSTPORT[$target]}" "$REPO:$TAG" "$dest" || die "skopeo pull through $target failed (phase $phase run $run)"
    t1=$(now)
    s=$(elapsed "$t0" "$t1")
    echo "$target,$phase,$run,$s" >>"$CSV"
    log "$phase pull via $target #$run: ${s}s"
    if [[ $phase == cold ]]; then verify_pull "$dest" || die "pull through $target returned wrong content"; fi
    rm -rf "$dest"
    echo "$s"
}

declare -A COLD WARM
# Cold: the mirrors' caches are empty. The direct pull goes first so the upstream's own
# page cache is equally warm for both mirrors.
for t in direct berth distribution; do
    COLD[$t]=$(timed_pull "$t" cold 1)
done
sleep 1 # let the registries finish writing access-log lines / background stores
COLD_END_LINE=$(wc -l <"$UP_LOG")
BERTH_METRICS_COLD="$(curl -s "$BERTH_URL/metrics")"

declare -A WARM_LIST
for t in "${TARGETS[@]}"; do WARM_LIST[$t]=""; done
for run in $(seq 1 "$WARM_RUNS"); do
    # rotate the order every round
    for k in 0 1 2; do
        t=${TARGETS[$(((run + k) % 3))]}
        s=$(timed_pull "$t" warm "$run")
        WARM_LIST[$t]+="$s "
    done
done
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    WARM[$t]=$(median ${WARM_LIST[$t]})
done
sleep 1
BERTH_METRICS_END="$(curl -s "$BERTH_URL/metrics")"
BERTH_RSS_HWM=$(peak_rss_kib "$BERTH_PID")
DIST_RSS_HWM=$(peak_rss_kib "$DIST_PID")

cp "$UP_LOG" "$OUT_DIR/pull-upstream.log"
cp "$BERTH_LOG" "$OUT_DIR/pull-berth.log"

{
    echo "# berth pull benchmark  $(date -u '+%F %T UTC')"
    echo "# image $REPO:$TAG layers(MiB)=[$LAYERS]  warm runs=$WARM_RUNS  berth=$BERTH_BIN_INFO"
    echo "# skopeo copy docker://... dir:<fresh dir>; times are wall seconds (date +%s.%N around skopeo)"
    load_note
    echo
    printf '%-14s %10s %12s %14s\n' target "cold (s)" "warm med (s)" "warm runs"
    for t in "${TARGETS[@]}"; do
        printf '%-14s %10s %12s   %s\n' "$t" "${COLD[$t]}" "${WARM[$t]}" "${WARM_LIST[$t]}"
    done
    echo
    printf 'ratio berth/distribution: cold %s  warm %s\n' \
        "$(ratio "${COLD[berth]}" "${COLD[distribution]}")" "$(ratio "${WARM[berth]}" "${WARM[distribution]}")"
    printf 'ratio berth/direct:       cold %s  warm %s\n' \
        "$(ratio "${COLD[berth]}" "${COLD[direct]}")" "$(ratio "${WARM[berth]}" "${WARM[direct]}")"
    echo
    python3 - "$WORK/seed.json" "$UP_LOG" "$COLD_END_LINE" <<'EOF'
import collections, json, re, sys
seed = json.load(open(sys.argv[1]))
lines = open(sys.argv[2], errors="replace").read().splitlines()
cold_end = int(sys.argv[3])
# Distribution's combined access log: 127.0.0.1 - - [date] "GET /uri HTTP/1.1" status size "ref" "ua"
acc = re.compile(r'^\S+ - \S+ \[[^\]]*\] "(\w+) (\S+) [^"]*" (\d+) \S+ "[^"]*" "([^"]*)"')
def who(ua):
    if ua.startswith("berth/"): return "berth"
    if ua.startswith("skopeo/") or ua.startswith("containers/"): return "direct"
    if ua.startswith("Go-http-client"): return "distribution"
    if ua.startswith("curl/") or ua == "berth-bench-seed": return "harness"
    return "other"
blob_gets = collections.Counter()   # (who, phase, digest)
other = collections.Counter()       # (who, phase, kind)
for i, line in enumerate(lines):
    m = acc.match(line)
    if not m: continue
    method, uri, status, ua = m.groups()
    phase = "cold" if i < cold_end else "warm"
    w = who(ua)
    if w == "harness": continue  # readiness probes and seeding
    bm = re.search(r"/blobs/(sha256:[0-9a-f]{64})$", uri)
    if method == "GET" and bm:
        blob_gets[(w, phase, bm.group(1))] += 1
    elif "/blobs/uploads/" in uri or (method == "PUT" and "/manifests/" in uri):
        continue  # seeding
    else:
        kind = f"{method} " + ("/v2/" if uri == "/v2/" else "blob" if "/blobs/" in uri else "manifest" if "/manifests/" in uri else uri)
        other[(w, phase, kind)] += 1

blobs = [("config", seed["config"])] + [(f"layer{i}", l) for i, l in enumerate(seed["layers"])]
cols = [(w, p) for w in ("berth", "distribution", "direct") for p in ("cold", "warm")]
print("Upstream blob GETs (from the upstream's access log, by User-Agent; warm = all warm runs together)")
hdr = f"{'blob':<8} {'digest':<14} {'MiB':>6} " + " ".join(f"{w[:5]+'/'+p:>11}" for w, p in cols)
print(hdr)
for name, b in blobs:
    row = f"{name:<8} {b['digest'][7:19]:<14} {b['size']/1048576:>6.1f} "
    row += " ".join(f"{blob_gets[(w, p, b['digest'])]:>11}" for w, p in cols)
    print(row)
tot = f"{'total':<8} {'':<14} {'':>6} " + " ".join(
    f"{sum(v for (ww, pp, _), v in blob_gets.items() if ww == w and pp == p):>11}" for w, p in cols)
print(tot)
print()
print("Other upstream requests (method kind: count per target/phase)")
for w, p in cols:
    items = sorted((k, v) for (ww, pp, k), v in other.items() if ww == w and pp == p)
    if items:
        print(f"  {w}/{p}: " + ", ".join(f"{k}={v}" for k, v in items))
stray = sum(v for (w, _, _), v in list(blob_gets.items()) + list(other.items()) if w == "other")
if stray:
    print(f"  (unattributed requests: {stray})")
EOF
    echo
    echo "berth /metrics (after cold phase -> after warm phase):"
    for m in berth_upstream_blob_gets_total berth_upstream_manifest_gets_total berth_upstream_manifest_heads_total \
        berth_blob_cache_hits_total berth_blob_cache_misses_total berth_manifest_cache_hits_total berth_upstream_bytes_total; do
        a=$(awk -v n="$m" '$1 == n { print $2 }' <<<"$BERTH_METRICS_COLD")
        b=$(awk -v n="$m" '$1 == n { print $2 }' <<<"$BERTH_METRICS_END")
        printf '  %-40s %12s -> %s\n' "$m" "${a:-?}" "${b:-?}"
    done
    echo
    printf 'peak RSS (VmHWM): berth %d MiB, distribution proxy %d MiB\n' $((BERTH_RSS_HWM / 1024)) $((DIST_RSS_HWM / 1024))
    errs=$(grep -c -E 'ERROR|WARN' "$BERTH_LOG" || true)
    echo "berth log: $errs WARN/ERROR lines (copied to bench/out/pull-berth.log)"
} | tee "$OUT_DIR/pull.txt"
