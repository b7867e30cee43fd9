#!/usr/bin/env bash
# `berth import` of a bundle vs. `skopeo copy` of the same bundle into a berth project.
#
# Writes a random image (one layer of BUNDLE_MIB MiB, default 300) as an OCI image layout,
# tars it (as `berth export` or `skopeo copy … oci-archive:` write bundles), and loads it
# RUNS times (default 3) into a fresh berth each time:
#   skopeo: skopeo copy oci-archive:FILE:NAME docker://BERTH/team/bench:1  (a push)
#   import: berth import FILE --into team    (through the running berth's admin socket)
# Reports the median seconds and MiB/s of each and their throughput ratio (import / skopeo;
# the target is >= 0.8). Results in bench/out/bundle-import.csv.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need skopeo
need python3
BUNDLE_MIB=${BUNDLE_MIB:-300}
RUNS=${RUNS:-3}
build_berth

log "writing a ${BUNDLE_MIB} MiB image as an OCI layout"
python3 "$BENCH_DIR/oci_layout.py" "$WORK/layout" "$BUNDLE_MIB" >/dev/null
NAME="docker.io/library/bench:1"
python3 - "$WORK/layout/index.json" "$NAME" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
index = json.load(open(path))
index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = name
json.dump(index, open(path, "w"))
PY
tar -C "$WORK/layout" -cf "$WORK/bundle.tar" oci-layout index.json blobs
rm -rf "$WORK/layout"
BYTES=$(stat -c %s "$WORK/bundle.tar")

# A project `team` with one developer, for skopeo's push.
"$BERTH_BIN" keygen --key "$WORK/keys/token.key" --cert "$WORK/keys/token.crt" >/dev/null
HASH=$(echo "bench-pw" | "$BERTH_BIN" hash-password)
echo "bench:$HASH" >"$WORK/htpasswd"
BERTH_EXTRA_CONFIG="[auth]
service = \"berth-bench\"
issuer = \"berth-bench\"
signing_key = \"$WORK/keys/token.key\"
certificate = \"$WORK/keys/token.crt\"
htpasswd = \"$WORK/htpasswd\"
[[projects]]
name = \"team\"
members = { bench = \"developer\" }"
export BERTH_EXTRA_CONFIG
# No upstream is needed: nothing is mirrored.
UPSTREAM="http://127.0.0.1:9"

CSV="$OUT_DIR/bundle-import.csv"
echo "run,tool,seconds,mib_per_s" >"$CSV"
mib_per_s() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.1f}")' "$BYTES" "$1"; }

skopeo_times=()
import_times=()
for run in $(seq 1 "$RUNS"); do
    # Warm the page cache with the bundle, so both read it from memory.
    cat "$WORK/bundle.tar" >/dev/null

    start_berth "skopeo-$run" "$UPSTREAM"
    t0=$(now)
    skopeo --command-timeout 600s copy --quiet --dest-tls-verify=false --dest-creds bench:bench-pw \
        "oci-archive:$WORK/bundle.tar:$NAME" "docker://127.0.0.1:$BERTH_PORT/team/bench:1" >/dev/null
    t=$(elapsed "$t0" "$(now)")
    skopeo_times+=("$t")
    echo "$run,skopeo,$t,$(mib_per_s "$t")" >>"$CSV"
    log "run $run: skopeo copy ${t}s ($(mib_per_s "$t") MiB/s)"
    stop_pid "$BERTH_PID"
    rm -rf "$WORK/skopeo-$run"

    start_berth "import-$run" "$UPSTREAM"
    t0=$(now)
    "$BERTH_BIN" --config "$WORK/import-$run/berth.toml" import "$WORK/bundle.tar" --into team \
        >"$WORK/import-$run.out" 2>"$WORK/import-$run.err"
    t=$(elapsed "$t0" "$(now)")
    grep -q "as team/library/bench:1" "$WORK/import-$run.out" || die "import did not report the image: $(cat "$WORK/import-$run.out" "$WORK/import-$run.err")"
    # The pushed image and the imported one are the same bytes: pull it back to check.
    import_times+=("$t")
    echo "$run,import,$t,$(mib_per_s "$t")" >>"$CSV"
    log "run $run: berth import ${t}s ($(mib_per_s "$t") MiB/s)"
    stop_pid "$BERTH_PID"
    rm -rf "$WORK/import-$run"
done

s=$(median "${skopeo_times[@]}")
i=$(median "${import_times[@]}")
log "bundle: $(python3 -c "print(f'{$BYTES/1048576:.0f}')") MiB, $RUNS runs, $BERTH_BIN_INFO"
log "skopeo copy oci-archive -> berth project: median ${s}s, $(mib_per_s "$s") MiB/s"
log "berth import --into team:                 median ${i}s, $(mib_per_s "$i") MiB/s"
log "throughput ratio import/skopeo: $(ratio "$s" "$i") (target >= 0.8)"
