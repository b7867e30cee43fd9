#!/usr/bin/env bash
# Whole-image pull benchmark: berth vs. CNCF Distribution in proxy mode vs. the upstream itself.
#
# 1. A plain Distribution registry ("upstream") gets a random image seeded (default layers
#    30+20+10 MiB, see LAYERS).
# 2. berth and a Distribution proxy, both with empty caches, mirror that upstream.
# 3. One cold pull through each (and one direct from upstream), then WARM_RUNS warm pulls each,
#    interleaved, order rotated every round. The client (CLIENT) is
#      skopeo (default): `skopeo copy docker://... dir:<fresh dir>`. It copies layers one after
#               another and fsyncs each file, so a warm pull is bound by the client, not the server;
#      curl:    the HTTP work of a pull alone (lib.sh curl_pull: /v2/ and token, manifest, then
#               config and layers 4 at a time; cold into files, warm discarded), so the time is
#               the server's: the two real clients spend more CPU per pull than the servers do
#               (see the CPU table), which makes their warm pulls client-bound;
#      oci-client: bench/puller, a client built on the oci-client crate: manifest, then config and
#               layers 3 at a time (docker's default), each digest-checked while it streams into
#               a file; cold and warm pulls alike write files (no fsync);
#      ctr:     `ctr content fetch --plain-http HOST:PORT/REPO:TAG` into a private containerd
#               started for the run (manifest, config and layers fetched concurrently and
#               digest-checked into the content store, nothing unpacked). After every pull the
#               content store is emptied (outside the timed section) and checked empty, so every
#               pull, warm ones included, downloads every blob from the target again.
# 4. Upstream requests are attributed by User-Agent in the upstream's access log
#    (berth/x.y.z, Go-http-client = the Distribution proxy, skopeo/x.y.z or containerd/x.y.z =
#    direct pulls), split into the cold and warm phases.
#
# With UPSTREAM_RATE (bytes/s, e.g. 20e6) every target reaches the upstream through bench/throttle.py,
# which paces each connection's responses to that rate and holds each request back
# UPSTREAM_LATENCY_MS (default 20): a registry across the internet. The direct pull goes through
# it too. Outputs then get a "-limited" suffix.
#
# Before the cold pulls each target serves another image (WARMUP=1, the default; WARMUP_LAYERS
# "20 10" MiB), untimed: the cold pull then meets a running process with an empty cache for
# this image, as a mirror that has been up a while meets a new image. WARMUP=0 times the first
# pull of freshly started processes instead.
#
# Usage: bench/pull.sh   (env: CLIENT=skopeo|oci-client|ctr|curl LAYERS="30 20 10" WARM_RUNS=5 UPSTREAM_RATE= UPSTREAM_LATENCY_MS=20 WARMUP=1
#                         BERTH_NO_BUILD=1 BENCH_KEEP=1; berth reads BERTH__* settings from the
#                         environment as usual, e.g. BERTH__MIRROR__PREFETCH=false)
# Output: table on stdout and in bench/out/pull.txt; raw timings in bench/out/pull-times.csv
# (CLIENT=ctr: pull-ctr.txt, pull-times-ctr.csv, ...; CLIENT=curl: pull-curl.txt, ...;
# CLIENT=oci-client: pull-oci.txt, ...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYERS=${LAYERS:-"30 20 10"}
WARM_RUNS=${WARM_RUNS:-5}
CLIENT=${CLIENT:-skopeo}
case $CLIENT in
skopeo) SUFFIX="" ;;
ctr) SUFFIX="-ctr" ;;
curl) SUFFIX="-curl" ;;
oci-client) SUFFIX="-oci" ;;
*) die "CLIENT must be skopeo, oci-client, ctr or curl, not '$CLIENT'" ;;
esac
UPSTREAM_RATE=${UPSTREAM_RATE:-}
WARMUP=${WARMUP:-1}
WARMUP_LAYERS=${WARMUP_LAYERS:-"20 10"}
WARMUP_REPO=library/warmupimg
UPSTREAM_LATENCY_MS=${UPSTREAM_LATENCY_MS:-20}
if [[ -n $UPSTREAM_RATE ]]; then SUFFIX+="-limited"; fi
SPLIT_CPUS=${SPLIT_CPUS:-}
case $SPLIT_CPUS in
"") ;;
client | mirror) SUFFIX+="-split-$SPLIT_CPUS" ;;
*) die "SPLIT_CPUS must be client or mirror, not '$SPLIT_CPUS'" ;;
esac
# `pull.sh --suffix`: the suffix of this configuration's output files, for repeat-pull.sh.
if [[ ${1:-} == --suffix ]]; then
    echo "$SUFFIX"
    exit 0
fi
CTR_NS=berth-bench # containerd namespace for CLIENT=ctr
REPO=library/benchimg
TAG=v1
# shellcheck disable=SC2206
LAYER_ARR=($LAYERS)

check_tools
if [[ $CLIENT == ctr ]]; then
    need containerd containerd
    need ctr containerd
fi
if [[ $CLIENT == oci-client ]]; then build_puller; fi
build_berth
# shellcheck disable=SC2119 # no argument: the default limit
wait_quiet

start_registry upstream
UP_URL=$REG_URL UP_PORT=$REG_PORT UP_LOG=$REG_LOG UP_PID=$REG_PID
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "${LAYER_ARR[@]}"
if [[ $WARMUP == 1 ]]; then
    # shellcheck disable=SC2086 # a list of sizes
    seed "$UP_URL" "$WARMUP_REPO" "$TAG" "$WORK/warmup.json" $WARMUP_LAYERS
    WARMUP_BYTES=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sum(b["size"] for b in [s["config"]] + s["layers"]))' "$WORK/warmup.json")
fi
SEED_BYTES=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sum(b["size"] for b in [s["config"]] + s["layers"]))' "$WORK/seed.json")

# What the targets reach the upstream at: itself, or the throttle in front of it.
FRONT_URL=$UP_URL FRONT_PORT=$UP_PORT
if [[ -n $UPSTREAM_RATE ]]; then
    start_throttle "$UP_URL" "$UPSTREAM_RATE" "$UPSTREAM_LATENCY_MS"
    FRONT_URL=$THROTTLE_URL FRONT_PORT=$THROTTLE_PORT
fi

start_berth berth "$FRONT_URL"
start_registry distproxy "$FRONT_URL"
DIST_PORT=$REG_PORT DIST_PID=$REG_PID DIST_LOG=$REG_LOG
if [[ $CLIENT == ctr ]]; then
    start_containerd containerd
    ctr_clear "$CTR_NS"
fi

if [[ -n $SPLIT_CPUS ]]; then
    # Two CPUs split between the parts, as if one of them had a machine of its own:
    #   client: the client on CPU 0; upstream and both mirrors on CPU 1;
    #   mirror: berth and the Distribution proxy on CPU 1; client and upstream on CPU 0.
    # Threads started later inherit their starter's affinity.
    need taskset util-linux
    upstream_cpu=1
    if [[ $SPLIT_CPUS == mirror ]]; then upstream_cpu=0; fi
    for pid in "$UP_PID" ${THROTTLE_PID:-}; do taskset -a -cp "$upstream_cpu" "$pid" >/dev/null; done
    for pid in "$BERTH_PID" "$DIST_PID"; do taskset -a -cp 1 "$pid" >/dev/null; done
    if [[ $CLIENT == ctr ]]; then taskset -a -cp 0 "$CTRD_PID" >/dev/null; fi
    taskset -cp 0 $$ >/dev/null # this shell and so every client it starts
fi

declare -A HOSTPORT=(
    [berth]="127.0.0.1:$BERTH_PORT"
    [distribution]="127.0.0.1:$DIST_PORT"
    [direct]="127.0.0.1:$FRONT_PORT"
)
declare -A SERVER_PID=([berth]=$BERTH_PID [distribution]=$DIST_PID [direct]=$UP_PID)
TARGETS=(berth distribution direct)
CSV="$OUT_DIR/pull-times$SUFFIX.csv"
echo "target,phase,run,seconds" >"$CSV"
# CPU time (clock ticks) per pull: the target's process, the upstream, the client process
# (skopeo or ctr, as this shell's reaped-children time) and the containerd daemon (ctr only).
CPU_CSV="$OUT_DIR/pull-cpu$SUFFIX.csv"
echo "target,phase,run,server_ticks,upstream_ticks,client_ticks,containerd_ticks" >"$CPU_CSV"
child_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$1/stat"; }

# verify_pull DIR [sizes]: every blob in the seed summary is present in DIR as a file named by
# its hex digest (skopeo's dir: layout and containerd's blobs/sha256/ alike) with the right sha256
# (with `sizes`: the right size only). For ctr the manifest blob is checked as well.
verify_pull() {
    python3 - "$WORK/seed.json" "$1" "${2:-sha256}" "$CLIENT" <<'EOF'
import hashlib, json, os, sys
seed, dest, mode, client = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
blobs = [seed["config"]] + seed["layers"]
if client == "ctr":
    blobs.append({"digest": seed["manifest_digest"], "size": None})
for blob in blobs:
    hexd = blob["digest"].split(":", 1)[1]
    path = os.path.join(dest, hexd)
    if not os.path.isfile(path):
        sys.exit(f"verify: {path} is missing")
    if blob["size"] is not None and os.path.getsize(path) != blob["size"]:
        sys.exit(f"verify: {path} has {os.path.getsize(path)} bytes, expected {blob['size']}")
    if mode == "sizes":
        continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != hexd:
        sys.exit(f"verify: {path} does not match {blob['digest']}")
EOF
}

# client_pull TARGET REPO TAG DEST PHASE BYTES: one pull of REPO:TAG through TARGET with $CLIENT
# (skopeo and oci-client into DEST, ctr into containerd's store, curl into DEST or, warm,
# nowhere); curl and oci-client must report BYTES blob bytes.
client_pull() {
    local target=$1 repo=$2 tag=$3 dest=$4 phase=$5 bytes=$6 got
    case $CLIENT in
    ctr) ctr_pull "${HOSTPORT[$target]}" "$repo:$tag" "$CTR_NS" ;;
    curl)
        # cold: into files, checked after; warm: discarded, only the byte count is checked
        local into=$dest
        if [[ $phase == warm ]]; then into=-; fi
        rm -rf "$dest"
        got=$(curl_pull "${HOSTPORT[$target]}" "$repo" "$tag" "$into") || return 1
        [[ $got == "$bytes" ]] || { log "curl pull through $target got $got bytes, expected $bytes"; return 1; }
        ;;
    oci-client)
        rm -rf "$dest" && mkdir -p "$dest"
        got=$("$PULLER_BIN" "${HOSTPORT[$target]}" "$repo:$tag" "$dest") || return 1
        [[ $got == "$bytes" ]] || { log "oci-client pull through $target got $got bytes, expected $bytes"; return 1; }
        ;;
    *) skopeo_pull "${HOSTPORT[$target]}" "$repo:$tag" "$dest" ;;
    esac
}

timed_pull() { # TARGET PHASE RUN -> prints seconds
    local target=$1 phase=$2 run=$3 dest="$WORK/dest-$1"
    local t0 t1 s me=$BASHPID srv=${SERVER_PID[$1]} s0 s1 u0 u1 c0 c1 d0=0 d1=0
    if [[ $CLIENT == ctr ]]; then
        # the content store was emptied after the previous pull (ctr_clear) and must still be empty
        [[ -z $(find "${CTRD_BLOBS%/blobs/sha256}" -type f -print -quit) ]] || die "containerd's content store is not empty before a pull"
        d0=$(cpu_ticks "$CTRD_PID")
    fi
    s0=$(cpu_ticks "$srv") u0=$(cpu_ticks "$UP_PID") c0=$(child_ticks "$me")
    t0=$(now)
    client_pull "$target" "$REPO" "$TAG" "$dest" "$phase" "$SEED_BYTES" || die "$CLIENT pull through $target failed (phase $phase run $run)"
    t1=$(now)
    s1=$(cpu_ticks "$srv") u1=$(cpu_ticks "$UP_PID") c1=$(child_ticks "$me")
    if [[ $CLIENT == ctr ]]; then d1=$(cpu_ticks "$CTRD_PID"); fi
    s=$(elapsed "$t0" "$t1")
    echo "$target,$phase,$run,$s" >>"$CSV"
    echo "$target,$phase,$run,$((s1 - s0)),$((u1 - u0)),$((c1 - c0)),$((d1 - d0))" >>"$CPU_CSV"
    log "$phase pull via $target #$run: ${s}s"
    if [[ $CLIENT == ctr ]]; then
        # cold: full sha256 check; warm: every blob is back in the (previously empty) store
        if [[ $phase == cold ]]; then
            verify_pull "$CTRD_BLOBS" || die "pull through $target returned wrong content"
        else
            verify_pull "$CTRD_BLOBS" sizes || die "pull through $target left incomplete content"
        fi
        ctr_clear "$CTR_NS"
    else
        # cold: full sha256 check; warm: sizes only (oci-client checked every digest itself)
        if [[ $phase == cold ]]; then
            verify_pull "$dest" || die "pull through $target returned wrong content"
        elif [[ $CLIENT == oci-client ]]; then
            verify_pull "$dest" sizes || die "pull through $target left incomplete content"
        fi
        rm -rf "$dest"
    fi
    echo "$s"
}

# Warm-up (WARMUP=1): every target first serves another image, untimed, so the cold pull meets
# a running process (heap, connection pools, page cache of its own binary) with an empty cache
# for this image: how a mirror that has been up for a while sees a new image.
if [[ $WARMUP == 1 ]]; then
    for t in direct berth distribution; do
        client_pull "$t" "$WARMUP_REPO" "$TAG" "$WORK/warmup-$t" warm "$WARMUP_BYTES" || die "warm-up pull through $t failed"
        rm -rf "$WORK/warmup-$t"
        if [[ $CLIENT == ctr ]]; then ctr_clear "$CTR_NS"; fi
    done
    sleep 2 # the Distribution proxy stores what it served in the background
fi
WARMUP_END_LINE=$(wc -l <"$UP_LOG")

declare -A COLD WARM
# Cold: the mirrors' caches are empty. The direct pull goes first so the upstream's own
# page cache is equally warm for both mirrors.
for t in direct berth distribution; do
    # Each cold pull starts on a quiet disk: berth commits (fsyncs) what it fetched after its
    # client is done, and that must not land in the next target's timed pull.
    sync
    sleep 1
    COLD[$t]=$(timed_pull "$t" cold 1)
done
sleep 1 # let the registries finish writing access-log lines / background stores
COLD_END_LINE=$(wc -l <"$UP_LOG")
DIST_COLD_END_LINE=$(wc -l <"$DIST_LOG")
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

cp "$UP_LOG" "$OUT_DIR/pull-upstream$SUFFIX.log"
cp "$BERTH_LOG" "$OUT_DIR/pull-berth$SUFFIX.log"
if [[ $CLIENT == ctr ]]; then cp "$CTRD_LOG" "$OUT_DIR/pull-containerd.log"; fi

{
    echo "# berth pull benchmark  $(date -u '+%F %T UTC')"
    echo "# image $REPO:$TAG layers(MiB)=[$LAYERS]  warm runs=$WARM_RUNS  berth=$BERTH_BIN_INFO"
    if [[ -n $UPSTREAM_RATE ]]; then
        echo "# upstream reached through bench/throttle.py: $UPSTREAM_RATE bytes/s per connection, +$UPSTREAM_LATENCY_MS ms per request (direct pulls too)"
    fi
    if [[ $WARMUP == 1 ]]; then
        echo "# warm-up: each target first served $WARMUP_REPO:$TAG (layers $WARMUP_LAYERS MiB), untimed: running processes, cold cache"
    else
        echo "# no warm-up (WARMUP=0): each cold pull is the first work of a freshly started process"
    fi
    env | grep '^BERTH__' | sed 's/^/# berth environment: /' || true
    if [[ $CLIENT == ctr ]]; then
        echo "# client: ctr --debug content fetch --plain-http HOST:PORT/$REPO:$TAG into a private containerd $(ctr --version | awk '{print $3}') (concurrent fetch, no unpack)"
        echo "# the content store is emptied after every pull (untimed), so warm pulls download every blob again"
        echo "# times are wall seconds (date +%s.%N around ctr)"
    elif [[ $CLIENT == curl ]]; then
        echo "# client: curl $(curl --version | awk 'NR == 1 { print $2 }'): /v2/ (+ token on a 401), manifest by tag, config and layers 4 at a time;"
        echo "#   cold: into files, sha256-checked after (untimed); warm: bodies discarded, byte count checked"
        echo "# times are wall seconds (date +%s.%N around the client)"
    elif [[ $CLIENT == oci-client ]]; then
        echo "# client: bench/puller (oci-client $(awk '/^name = "oci-client"/ { getline; gsub(/"/, "", $3); print $3 }' "$BENCH_DIR/puller/Cargo.lock")): manifest, then config and layers 3 at a time,"
        echo "#   each digest-checked by oci-client while streamed into a file (no fsync); cold pulls sha256-checked again after (untimed)"
        echo "# times are wall seconds (date +%s.%N around the client)"
    else
        echo "# client: skopeo copy docker://... dir:<fresh dir> ($(skopeo --version | awk '{print $3}'); layers one after another, fsync per file)"
        echo "# times are wall seconds (date +%s.%N around skopeo)"
    fi
    case $SPLIT_CPUS in
    client) echo "# SPLIT_CPUS=client: the client on CPU 0; upstream, berth and the Distribution proxy on CPU 1" ;;
    mirror) echo "# SPLIT_CPUS=mirror: berth and the Distribution proxy on CPU 1; client and upstream on CPU 0" ;;
    esac
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
    python3 - "$WORK/seed.json" "$UP_LOG" "$COLD_END_LINE" "$DIST_LOG" "$DIST_COLD_END_LINE" "$WARM_RUNS" "$WARMUP_END_LINE" \
        "$(awk '$1 == "berth_blob_cache_hits_total" { print $2 }' <<<"$BERTH_METRICS_COLD")" \
        "$(awk '$1 == "berth_blob_cache_hits_total" { print $2 }' <<<"$BERTH_METRICS_END")" <<'EOF'
import collections, json, re, sys
seed = json.load(open(sys.argv[1]))
lines = open(sys.argv[2], errors="replace").read().splitlines()
cold_end = int(sys.argv[3])
dist_lines = open(sys.argv[4], errors="replace").read().splitlines()[int(sys.argv[5]):]
warm_runs = int(sys.argv[6])
warmup_end = int(sys.argv[7])
hits_cold, hits_end = (float(x) if x else None for x in sys.argv[8:10])
# Distribution's combined access log: 127.0.0.1 - - [date] "GET /uri HTTP/1.1" status size "ref" "ua"
acc = re.compile(r'^\S+ - \S+ \[[^\]]*\] "(\w+) (\S+) [^"]*" (\d+) \S+ "[^"]*" "([^"]*)"')
def who(ua):
    if ua.startswith("berth/"): return "berth"
    if ua.startswith(("skopeo/", "containers/", "containerd/", "berth-bench-client")): return "direct"
    if ua.startswith("Go-http-client"): return "distribution"
    if ua.startswith("curl/") or ua == "berth-bench-seed": return "harness"
    return "other"
blob_gets = collections.Counter()   # (who, phase, digest)
other = collections.Counter()       # (who, phase, kind)
for i, line in enumerate(lines):
    m = acc.match(line)
    if not m: continue
    method, uri, status, ua = m.groups()
    if i < warmup_end: continue  # seeding and the warm-up pulls
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
print()
# Each warm pull must download every blob from the target: count the blob GETs each target
# served to the client during the warm phase (berth: its cache hits; the Distribution proxy: its
# own access log; direct: the upstream's access log).
want = len(blobs) * warm_runs
served = {
    "berth": None if hits_cold is None or hits_end is None else int(hits_end - hits_cold),
    "distribution": sum(1 for l in dist_lines
                        if (m := acc.match(l)) and m.group(1) == "GET" and who(m.group(4)) == "direct"
                        and re.search(r"/blobs/sha256:[0-9a-f]{64}$", m.group(2)) and m.group(3) == "200"),
    "direct": sum(v for (w, p, _), v in blob_gets.items() if w == "direct" and p == "warm"),
}
print(f"Blob GETs served to the client in the warm phase (expected {len(blobs)} blobs x {warm_runs} runs = {want}):")
print("  " + ", ".join(f"{t} {'?' if n is None else n}{'' if n == want else ' (!)'}" for t, n in served.items())
      + "   [berth: blob cache hits from /metrics; distribution: its access log; direct: upstream log]")
EOF
    echo
    python3 - "$CPU_CSV" "$CLIENT" <<'EOF'
import csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
client, tck = sys.argv[2], os.sysconf("SC_CLK_TCK")
cols = [("server_ticks", "target proc"), ("upstream_ticks", "upstream"), ("client_ticks", client)]
if client == "ctr":
    cols.append(("containerd_ticks", "containerd"))
print(f"CPU seconds per pull, cold / median warm (ticks of 1/{tck} s; '{client}' = the client process"
      + (", containerd = the daemon that hashes and stores the blobs)" if client == "ctr" else ")"))
print(f"{'target':<14}" + "".join(f"{h:>16}" for _, h in cols))
for t in ("berth", "distribution", "direct"):
    line = f"{t:<14}"
    for k, _ in cols:
        if t == "direct" and k == "upstream_ticks":
            line += f"{'(= target)':>16}"
            continue
        cold = [int(r[k]) for r in rows if r["target"] == t and r["phase"] == "cold"]
        warm = [int(r[k]) for r in rows if r["target"] == t and r["phase"] == "warm"]
        c = f"{cold[0] / tck:.2f}" if cold else "-"
        w = f"{statistics.median(warm) / tck:.2f}" if warm else "-"
        line += f"{c + ' / ' + w:>16}"
    print(line)
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
    echo "berth log: $errs WARN/ERROR lines (copied to bench/out/pull-berth$SUFFIX.log)"
} | tee "$OUT_DIR/pull$SUFFIX.txt"
