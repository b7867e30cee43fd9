#!/usr/bin/env bash
# Memory of many concurrent readers of one cached blob: READERS clients GET the same BLOB_MIB MiB
# blob from berth's cache at the same time, each reading at RATE (so that all of them overlap),
# while berth's RssFile + RssAnon is sampled every 100 ms.
#
# The target (issue 12): 64 concurrent readers of one cached 300 MiB blob keep berth's
# RssFile + RssAnon under 400 MiB. Each reader maps nothing of its own: they share one mapping
# of the blob file (src/cache/mapping.rs), so the file's pages count once.
#
# 1. A plain Distribution registry ("upstream") gets an image with one BLOB_MIB MiB layer.
# 2. berth mirrors it; one GET of the blob fills the cache (waits until the file is stored).
# 3. READERS concurrent `curl --limit-rate RATE` GETs of the blob; every status and byte count is
#    checked; a sampler records berth's RssFile, RssAnon and RssShmem meanwhile.
#
# Usage: bench/readers.sh   (env: BLOB_MIB=300 READERS=64 RATE=100M BERTH_BIN=… BERTH_NO_BUILD=1)
# Output: bench/out/readers.txt; samples in bench/out/readers-rss.csv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BLOB_MIB=${BLOB_MIB:-300}
READERS=${READERS:-64}
RATE=${RATE:-100M}
REPO=library/readers
TAG=v1

check_tools
build_berth
# shellcheck disable=SC2119 # no argument: the default limit
wait_quiet

start_registry upstream
seed "$REG_URL" "$REPO" "$TAG" "$WORK/seed.json" "$BLOB_MIB"
DIGEST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/seed.json")
SIZE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["size"])' "$WORK/seed.json")
HEX=${DIGEST#sha256:}

start_berth berth "$REG_URL"
URL="$BERTH_URL/v2/$REPO/blobs/$DIGEST"
curl -sf -o /dev/null "$URL" || die "the cache fill failed"
FILE="$BERTH_DATA/blobs/sha256/${HEX:0:2}/$HEX"
for _ in $(seq 1 300); do
    [[ -f $FILE && $(stat -c %s "$FILE") == "$SIZE" ]] && break
    sleep 0.1
done
[[ -f $FILE && $(stat -c %s "$FILE") == "$SIZE" ]] || die "the blob never reached the cache"
# The sampled numbers should be the readers', not the fill's.
sleep 1
log "cached $DIGEST ($SIZE bytes); $READERS readers at $RATE each"

CSV="$OUT_DIR/readers-rss.csv"
echo "unix_time,rss_file_kib,rss_anon_kib,rss_shmem_kib" >"$CSV"
STOP="$WORK/sampler.stop"
# One awk per sample: cheap enough to keep up on a loaded machine.
(
    while [[ ! -e $STOP ]]; do
        awk -v t="$EPOCHREALTIME" '$1 == "RssFile:" { f = $2 } $1 == "RssAnon:" { a = $2 } $1 == "RssShmem:" { s = $2 }
            END { print t "," f "," a "," s }' "/proc/$BERTH_PID/status" >>"$CSV"
        sleep 0.1
    done
) &
BENCH_JOBS+=($!)
SAMPLER=$!

t0=$(now)
for i in $(seq 1 "$READERS"); do
    curl -s --limit-rate "$RATE" -o /dev/null -w '%{http_code} %{size_download}\n' "$URL" >"$WORK/reader-$i.out" &
    BENCH_JOBS+=($!)
done
wait_readers() {
    local i
    for i in $(seq 1 "$READERS"); do
        while [[ ! -s $WORK/reader-$i.out ]]; do sleep 0.1; done
    done
}
wait_readers
t1=$(now)
touch "$STOP"
wait "$SAMPLER" 2>/dev/null || true

BAD=0
for i in $(seq 1 "$READERS"); do
    read -r code size <"$WORK/reader-$i.out"
    [[ $code == 200 && $size == "$SIZE" ]] || { log "reader $i: HTTP $code, $size bytes"; BAD=$((BAD + 1)); }
done
[[ $BAD == 0 ]] || die "$BAD readers did not get the whole blob"

read -r MAX_SUM MAX_FILE MAX_ANON < <(awk -F, 'NR > 1 { s = $2 + $3; if (s > m) m = s; if ($2 > f) f = $2; if ($3 > a) a = $3 } END { print m, f, a }' "$CSV")
SAMPLES=$(($(wc -l <"$CSV") - 1))
HWM=$(peak_rss_kib "$BERTH_PID")
{
    echo "# berth concurrent readers benchmark  $(date -u '+%F %T UTC')"
    echo "# $READERS concurrent GETs of one cached ${BLOB_MIB} MiB blob, curl --limit-rate $RATE each"
    echo "# berth=$BERTH_BIN_INFO"
    load_note
    echo
    echo "all $READERS readers got $SIZE bytes with 200 in $(elapsed "$t0" "$t1") s"
    echo "max RssFile + RssAnon (sampled every 100 ms, $SAMPLES samples): $((MAX_SUM / 1024)) MiB" \
        "(max RssFile $((MAX_FILE / 1024)) MiB, max RssAnon $((MAX_ANON / 1024)) MiB)"
    echo "berth VmHWM (peak RSS over its life, the cache fill included): $((HWM / 1024)) MiB"
    echo "target: RssFile + RssAnon under 400 MiB: $([[ $((MAX_SUM / 1024)) -lt 400 ]] && echo met || echo MISSED)"
} | tee "$OUT_DIR/readers.txt"
