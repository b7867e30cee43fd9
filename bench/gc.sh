#!/usr/bin/env bash
# Online garbage collection at scale: `berth gc` on a running berth over GC_MANIFESTS image
# manifests and 5 × GC_MANIFESTS blobs (half of each garbage), while a load generator GETs
# manifests.
#
# 1. `examples/gc_data.rs` builds the data directory through berth's storage API (no HTTP):
#    a quarter of the images pushed to the public project `bench` and tagged, a quarter pushed
#    and deleted by digest, a quarter cached from the mirror and tagged, a quarter cached by
#    digest only; everything last used an hour ago.
# 2. berth serves it (mirror offline, [gc] grace 10m); GC_THREADS clients GET the manifests of
#    the images that stay (bench/gc_client.py, anonymous tokens), GC_WARMUP seconds alone, then
#    `berth gc` runs through the admin socket, then GC_COOLDOWN seconds more.
# 3. Reported: gc wall time and its report, p50/p99/max of the manifest GETs started during gc
#    and outside it, errors; a second gc must find nothing.
#
# Usage: bench/gc.sh   (env: GC_MANIFESTS=10000 GC_THREADS=4 GC_WARMUP=5 GC_COOLDOWN=3
#        BERTH_BIN=... GC_DATA_BIN=... BERTH_NO_BUILD=1)
# Output: bench/out/gc.txt
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GC_MANIFESTS=${GC_MANIFESTS:-10000}
GC_THREADS=${GC_THREADS:-4}
GC_WARMUP=${GC_WARMUP:-5}
GC_COOLDOWN=${GC_COOLDOWN:-3}
CLIENT="python3 $BENCH_DIR/gc_client.py"
REPORT="$OUT_DIR/gc.txt"

need python3 python3
need curl curl
build_berth
if [[ -z ${GC_DATA_BIN:-} ]]; then
    GC_DATA_BIN="$ROOT_DIR/target/release/examples/gc_data"
    if [[ ${BERTH_NO_BUILD:-0} != 1 ]]; then
        log "cargo build --release --example gc_data"
        (cd "$ROOT_DIR" && cargo build --release --example gc_data >"$WORK/data-build.log" 2>&1) ||
            { tail -20 "$WORK/data-build.log" >&2; die "building gc_data failed"; }
    fi
fi
[[ -x $GC_DATA_BIN ]] || die "no gc_data binary at $GC_DATA_BIN"

DATA="$WORK/data"
log "building $DATA: $GC_MANIFESTS manifests, $((GC_MANIFESTS * 5)) blobs"
t0=$(now)
"$GC_DATA_BIN" "$DATA" "$GC_MANIFESTS" >"$WORK/tags" 2>"$WORK/expected"
sync
BUILD_SECS=$(elapsed "$t0" "$(now)")
EXPECTED=$(cat "$WORK/expected")

"$BERTH_BIN" keygen --key "$WORK/token.key" --cert "$WORK/token.crt" >/dev/null
: >"$WORK/htpasswd"
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
cat >"$WORK/berth.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
[storage]
data_dir = "$DATA"
[log]
level = "warn,berth=info,berth::access=warn,berth::cache::collect=debug"
[gc]
grace = "10m"
[mirror]
offline = true
[[upstreams]]
name = "docker.io"
url = "http://127.0.0.1:9"
[auth]
service = "berth-bench"
issuer = "berth-bench"
signing_key = "$WORK/token.key"
certificate = "$WORK/token.crt"
htpasswd = "$WORK/htpasswd"
[[projects]]
name = "bench"
public = true
EOF

wait_quiet
"$BERTH_BIN" --config "$WORK/berth.toml" serve >"$WORK/berth.log" 2>&1 &
PID=$!
BENCH_PIDS+=("$PID")
wait_port "$PORT" || { tail -20 "$WORK/berth.log" >&2; die "berth did not start"; }
for _ in $(seq 1 100); do [[ -S $DATA/admin.sock ]] && break; sleep 0.1; done

STOP="$WORK/stop-load"
$CLIENT load "$URL" "$WORK/tags" "$STOP" "$GC_THREADS" "$WORK/latencies" &
LOAD=$!
BENCH_JOBS+=("$LOAD")
sleep "$GC_WARMUP"
log "berth gc on the running berth"
G0=$(now)
"$BERTH_BIN" --config "$WORK/berth.toml" gc >"$WORK/gc.out"
G1=$(now)
GC_SECS=$(elapsed "$G0" "$G1")
sleep "$GC_COOLDOWN"
touch "$STOP"
wait "$LOAD"
STATS=$($CLIENT stats "$WORK/latencies" "$G0" "$G1")
AGAIN=$("$BERTH_BIN" --config "$WORK/berth.toml" gc | grep -E '^(manifests|blobs) removed:' | paste -sd' ' -)

{
    echo "# bench/gc.sh, $(date -u '+%F %T') UTC; $BERTH_BIN_INFO"
    load_note
    echo "data: $GC_MANIFESTS manifests, $((GC_MANIFESTS * 5)) blobs, built in ${BUILD_SECS}s; expected $EXPECTED"
    echo "gc wall time: ${GC_SECS}s"
    sed 's/^/gc: /' "$WORK/gc.out"
    echo "manifest GETs ($GC_THREADS clients), latency in ms:"
    echo "$STATS"
    echo "second gc: $AGAIN"
    grep 'garbage collection' "$WORK/berth.log" | head -2
} | tee "$REPORT"
