#!/usr/bin/env bash
# Air-gap bundles: `berth export` of a 300 MiB image from a warm berth into an OCI image layout,
# side by side with `skopeo copy docker://BERTH/… oci-archive:…` (the tar) and `oci:…` (the
# directory) from the same berth, in one run. Then the import side (see the marked slot).
#
# 1. A plain Distribution registry ("upstream") gets one image of LAYERS layers of LAYER_MIB MiB
#    (3 × 100 MiB by default: 300 MiB).
# 2. berth mirrors it; one skopeo pull warms its cache, so every export reads cache hits.
#    skopeo gets --dest-oci-accept-uncompressed-layers: by default it gzips uncompressed layers
#    for OCI destinations, which would time gzip, not copying.
# 3. RUNS rounds, order rotated each round: each tool writes a fresh tar and a fresh directory
#    (removed before each run); the wall time of the whole command is taken, and the result is
#    checked (the tar's or directory's layer blobs hash to their digests).
# 4. Medians, MiB/s (image bytes over wall time), and berth's ratio to skopeo (target ≥ 0.8).
#
# Usage: bench/bundle.sh         (env: LAYER_MIB=100 LAYERS=3 RUNS=5 BERTH_NO_BUILD=1 BENCH_KEEP=1)
# Output: table on stdout and in bench/out/bundle.txt; raw timings in bench/out/bundle-times.csv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYER_MIB=${LAYER_MIB:-100}
LAYERS=${LAYERS:-3}
RUNS=${RUNS:-5}
REPO=library/bundleimg
TAG=v1
NAME="docker.io/$REPO:$TAG"

check_tools
build_berth
# shellcheck disable=SC2119 # no argument: the default limit
wait_quiet

start_registry upstream
UP_URL=$REG_URL
sizes=()
for _ in $(seq 1 "$LAYERS"); do sizes+=("$LAYER_MIB"); done
seed "$UP_URL" "$REPO" "$TAG" "$WORK/seed.json" "${sizes[@]}"
SIZE=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(l["size"] for l in d["layers"]))' "$WORK/seed.json")
LAYER_HEXES=$(python3 -c 'import json,sys; print(" ".join(l["digest"][7:] for l in json.load(open(sys.argv[1]))["layers"]))' "$WORK/seed.json")

start_berth berth "$UP_URL"
skopeo_pull "127.0.0.1:$BERTH_PORT" "$REPO:$TAG" "$WORK/warm" || die "warm-up pull through berth failed"
rm -rf "$WORK/warm"
log "berth's cache is warm"

OUT="$WORK/out"
mkdir -p "$OUT"

# check_layout KIND PATH: the layer blobs are in the layout and hash to their names.
check_layout() {
    local kind=$1 path=$2 dir=$2 hex got
    if [[ $kind == tar ]]; then
        dir="$WORK/check"
        rm -rf "$dir" && mkdir -p "$dir"
        tar -xf "$path" -C "$dir"
    fi
    [[ -f $dir/index.json && -f $dir/oci-layout ]] || die "$path: no index.json or oci-layout"
    for hex in $LAYER_HEXES; do
        got=$(sha256sum "$dir/blobs/sha256/$hex" | cut -d' ' -f1)
        [[ $got == "$hex" ]] || die "$path: layer $hex is wrong ($got)"
    done
    [[ $kind == tar ]] && rm -rf "$dir"
    return 0
}

# run_one TARGET: prints the wall seconds of one export by TARGET into a fresh destination.
run_one() {
    local target=$1 t0 t1 dest
    case $target in
        berth-tar) dest="$OUT/berth.tar" ;;
        berth-dir) dest="$OUT/berth-dir" ;;
        skopeo-tar) dest="$OUT/skopeo.tar" ;;
        skopeo-dir) dest="$OUT/skopeo-dir" ;;
    esac
    rm -rf "$dest" "$dest.partial"
    sync
    t0=$(now)
    case $target in
        berth-*)
            "$BERTH_BIN" export "$NAME" -o "$dest" --from "$BERTH_URL" >"$WORK/export.last.log" 2>&1 ||
                { cat "$WORK/export.last.log" >&2; die "berth export failed"; }
            ;;
        skopeo-tar)
            skopeo copy --quiet --src-tls-verify=false --retry-times 0 --dest-oci-accept-uncompressed-layers \
                "docker://127.0.0.1:$BERTH_PORT/$REPO:$TAG" "oci-archive:$dest:$NAME" >"$WORK/skopeo.last.log" 2>&1 ||
                { cat "$WORK/skopeo.last.log" >&2; die "skopeo copy failed"; }
            ;;
        skopeo-dir)
            skopeo copy --quiet --src-tls-verify=false --retry-times 0 --dest-oci-accept-uncompressed-layers \
                "docker://127.0.0.1:$BERTH_PORT/$REPO:$TAG" "oci:$dest:$NAME" >"$WORK/skopeo.last.log" 2>&1 ||
                { cat "$WORK/skopeo.last.log" >&2; die "skopeo copy failed"; }
            ;;
    esac
    t1=$(now)
    check_layout "${target#*-}" "$dest"
    elapsed "$t0" "$t1"
}

TARGETS=(berth-tar skopeo-tar berth-dir skopeo-dir)
CSV="$OUT_DIR/bundle-times.csv"
echo "target,run,seconds" >"$CSV"
declare -A LIST MED
for t in "${TARGETS[@]}"; do LIST[$t]=""; done
for run in $(seq 1 "$RUNS"); do
    for k in 0 1 2 3; do
        t=${TARGETS[$(((run + k) % 4))]}
        s=$(run_one "$t")
        LIST[$t]+="$s "
        echo "$t,$run,$s" >>"$CSV"
        log "$t #$run: ${s}s"
    done
done
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    MED[$t]=$(median ${LIST[$t]})
done

# ---------------------------------------------------------------------------------------------
# IMPORT SLOT (for `berth import`, filled in by the import side): a fresh offline berth
# (`mirror.offline = true`, no upstream reachable), `berth import "$OUT/berth.tar"` timed
# against `skopeo copy oci-archive:"$OUT/skopeo.tar":$NAME docker://…` into the same kind of
# target, RUNS interleaved rounds; add its rows to the table below (IMPORT_ROWS).
IMPORT_ROWS=""
# ---------------------------------------------------------------------------------------------

mibps() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.0f}")' "$SIZE" "$1"; }
{
    echo "# berth bundle benchmark  $(date -u '+%F %T UTC')"
    echo "# one image, $LAYERS × $LAYER_MIB MiB layers ($SIZE bytes), from a warm berth; $RUNS interleaved runs, wall time"
    echo "# berth=$BERTH_BIN_INFO"
    echo "# skopeo=$(skopeo --version)"
    load_note
    echo
    printf '%-28s %10s %10s\n' "export" "median s" "MiB/s"
    for t in "${TARGETS[@]}"; do
        printf '%-28s %10s %10s\n' "$t" "${MED[$t]}" "$(mibps "${MED[$t]}")"
    done
    echo
    echo "berth export / skopeo copy throughput, tar: $(ratio "${MED[skopeo-tar]}" "${MED[berth-tar]}")x (target >= 0.8)"
    echo "berth export / skopeo copy throughput, dir: $(ratio "${MED[skopeo-dir]}" "${MED[berth-dir]}")x (target >= 0.8)"
    if [[ -n $IMPORT_ROWS ]]; then
        echo
        echo "$IMPORT_ROWS"
    fi
} | tee "$OUT_DIR/bundle.txt"
