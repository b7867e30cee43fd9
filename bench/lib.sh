# shellcheck shell=bash
# Shared helpers for the berth benchmarks. Source this from a bench script that has
# `set -euo pipefail`; it sets up a work dir, a cleanup trap, and process helpers.
#
# Everything listens on 127.0.0.1 only, on ports picked by binding port 0.
#
# Environment knobs:
#   BERTH_BIN        berth binary to use (default: target/release/berth, rebuilt first)
#   BERTH_NO_BUILD=1 skip `cargo build --release`
#   BENCH_KEEP=1     keep the temp work dir (logs, caches) after the run
#   BENCH_TMP        parent dir for the work dir (default /tmp)

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$BENCH_DIR/.." && pwd)"
OUT_DIR="$BENCH_DIR/out"
mkdir -p "$OUT_DIR"

WORK="$(mktemp -d "${BENCH_TMP:-/tmp}/berth-bench.XXXXXX")"
BENCH_PIDS=()
# Background subshells (client jobs, samplers): on exit their direct children are killed first
# (by parent pid), then the subshell itself.
BENCH_JOBS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
    local rc=$?
    local pid child
    for pid in "${BENCH_JOBS[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        for child in $(pgrep -P "$pid" || true); do kill "$child" 2>/dev/null || true; done
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        reap_pid "$pid"
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# need CMD [APT_PACKAGE]: install with apt-get when the command is missing.
need() {
    local cmd=$1 pkg=${2:-$1}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        log "installing $pkg (for $cmd)"
        if ! { apt-get install -y "$pkg" >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y "$pkg" >/dev/null 2>&1; }; }; then
            die "$cmd is missing and apt-get install $pkg failed"
        fi
    fi
}

check_tools() {
    need python3 python3
    need curl curl
    need skopeo skopeo
    need docker-registry docker-registry
    if [[ ! -x /usr/sbin/nginx ]] && ! command -v nginx >/dev/null 2>&1; then
        need nginx nginx
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [TIMEOUT_S]: wait until URL answers any HTTP status.
wait_http() {
    local url=$1 timeout=${2:-30}
    for _ in $(seq 1 $((timeout * 10))); do
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "timed out waiting for $url"
}

# wait_port PORT [TIMEOUT_S]: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 timeout=${2:-30}
    for _ in $(seq 1 $((timeout * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "timed out waiting for port $port"
}

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}" if b else "n/a")' "$1" "$2"; }

build_berth() {
    if [[ -n "${BERTH_BIN:-}" ]]; then
        [[ -x "$BERTH_BIN" ]] || die "BERTH_BIN=$BERTH_BIN is not executable"
        BERTH_BIN_INFO="$BERTH_BIN (given, sha256 $(sha256sum "$BERTH_BIN" | cut -c1-12))"
        return
    fi
    BERTH_BIN="$ROOT_DIR/target/release/berth"
    if [[ "${BERTH_NO_BUILD:-0}" != 1 ]]; then
        log "cargo build --release"
        if ! (cd "$ROOT_DIR" && cargo build --release >"$WORK/cargo-build.log" 2>&1); then
            tail -20 "$WORK/cargo-build.log" >&2
            if [[ -x "$BERTH_BIN" ]]; then
                log "WARNING: build failed; benchmarking the existing $BERTH_BIN (built $(date -r "$BERTH_BIN" '+%F %T'))"
            else
                die "cargo build --release failed"
            fi
        fi
    fi
    [[ -x "$BERTH_BIN" ]] || die "no berth binary at $BERTH_BIN"
    # Benchmark a private copy, so a rebuild elsewhere during the run cannot swap binaries.
    BERTH_BIN_INFO="$BERTH_BIN (built $(date -r "$BERTH_BIN" '+%F %T'), sha256 $(sha256sum "$BERTH_BIN" | cut -c1-12))"
    cp "$BERTH_BIN" "$WORK/berth-bin"
    BERTH_BIN="$WORK/berth-bin"
    log "benchmarking $BERTH_BIN_INFO"
}

# start_registry NAME [PROXY_REMOTE_URL]
#   Runs Distribution (docker-registry) with its own storage dir under $WORK/NAME.
#   Sets REG_PORT, REG_PID, REG_URL, REG_LOG, REG_ROOT.
#   Environment, per call: REG_LOG_LEVEL (default info) and REG_ACCESS_LOG=0 (no access log).
#   Distribution writes two lines per request by default (an info-level "response completed"
#   and an access-log line), which costs it CPU under a request flood.
start_registry() {
    local name=$1 remote=${2:-}
    local dir="$WORK/$name"
    mkdir -p "$dir/storage"
    REG_PORT=$(free_port)
    REG_ROOT="$dir/storage"
    REG_LOG="$dir/registry.log"
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: ${REG_LOG_LEVEL:-info}"
        if [[ "${REG_ACCESS_LOG:-1}" == 0 ]]; then
            echo "  accesslog:"
            echo "    disabled: true"
        fi
        echo "  formatter: text"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $REG_ROOT"
        echo "  delete:"
        echo "    enabled: true"
        echo "http:"
        echo "  addr: 127.0.0.1:$REG_PORT"
        echo "  headers:"
        echo "    X-Content-Type-Options: [nosniff]"
        if [[ -n "$remote" ]]; then
            echo "proxy:"
            echo "  remoteurl: $remote"
        fi
    } >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >"$REG_LOG" 2>&1 &
    REG_PID=$!
    BENCH_PIDS+=("$REG_PID")
    REG_URL="http://127.0.0.1:$REG_PORT"
    wait_http "$REG_URL/v2/" 30
    kill -0 "$REG_PID" 2>/dev/null || die "registry $name exited; see $REG_LOG"
    log "registry $name (pid $REG_PID) on $REG_URL${remote:+ proxying $remote}"
}

# start_berth NAME UPSTREAM_URL
#   Runs berth with an empty data dir under $WORK/NAME, mirroring UPSTREAM_URL as docker.io.
#   Sets BERTH_PORT, BERTH_PID, BERTH_URL, BERTH_DATA, BERTH_LOG.
#   BERTH_EXTRA_CONFIG, when set, is appended to its config file (e.g. an [auth] section).
start_berth() {
    local name=$1 upstream=$2
    local dir="$WORK/$name"
    mkdir -p "$dir"
    BERTH_DATA="$dir/berth-data"
    BERTH_LOG="$dir/berth.log"
    cat >"$dir/berth.toml" <<EOF
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "$BERTH_DATA"
[log]
level = "${BERTH_LOG_LEVEL:-warn}"
[[upstreams]]
name = "docker.io"
url = "$upstream"
tag_ttl = "5m"
${BERTH_EXTRA_CONFIG:-}
EOF
    "$BERTH_BIN" --config "$dir/berth.toml" serve >"$dir/berth.stdout" 2>"$BERTH_LOG" &
    BERTH_PID=$!
    BENCH_PIDS+=("$BERTH_PID")
    local line=""
    for _ in $(seq 1 300); do
        line=$(grep -m1 -o 'berth listening on http://127\.0\.0\.1:[0-9]*' "$dir/berth.stdout" 2>/dev/null || true)
        [[ -n "$line" ]] && break
        kill -0 "$BERTH_PID" 2>/dev/null || { cat "$BERTH_LOG" >&2; die "berth exited during startup"; }
        sleep 0.1
    done
    [[ -n "$line" ]] || die "berth did not print its listen line within 30s; see $BERTH_LOG"
    BERTH_PORT=${line##*:}
    BERTH_URL="http://127.0.0.1:$BERTH_PORT"
    wait_port "$BERTH_PORT" 10
    log "berth $name (pid $BERTH_PID) on $BERTH_URL mirroring $upstream"
}

# start_nginx_file FILE URL_PATH: serve FILE at URL_PATH with sendfile on.
#   Sets NGINX_PORT, NGINX_URL (full URL of the file), NGINX_PID.
start_nginx_file() {
    local file=$1 url_path=$2
    local dir="$WORK/nginx"
    mkdir -p "$dir/root$(dirname "$url_path")" "$dir/tmp"
    ln -sf "$file" "$dir/root$url_path"
    NGINX_PORT=$(free_port)
    # As root, nginx workers would drop to `nobody`, which cannot read the 0700 work dir.
    local user_line=""
    [[ $(id -u) == 0 ]] && user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    default_type application/octet-stream;
    client_body_temp_path $dir/tmp/client;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $dir/root;
        disable_symlinks off;
    }
}
EOF
    local nginx_bin
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    "$nginx_bin" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    BENCH_PIDS+=("$NGINX_PID")
    wait_port "$NGINX_PORT" 10
    NGINX_URL="http://127.0.0.1:$NGINX_PORT$url_path"
    log "nginx (pid $NGINX_PID) serving $file at $NGINX_URL"
}

# build_puller: builds bench/puller (the oci-client pull client); sets PULLER_BIN.
build_puller() {
    local manifest="$BENCH_DIR/puller/Cargo.toml"
    log "cargo build --release (bench/puller)"
    cargo build --release --locked --manifest-path "$manifest" >"$WORK/puller-build.log" 2>&1 || {
        tail -20 "$WORK/puller-build.log" >&2
        die "building bench/puller failed"
    }
    PULLER_BIN="$BENCH_DIR/puller/target/release/berth-bench-puller"
}

# start_throttle UPSTREAM_URL RATE LATENCY_MS: bench/throttle.py in front of UPSTREAM_URL, pacing
#   every connection's responses to RATE bytes/s and holding each request back LATENCY_MS, as a
#   registry across the internet behaves. Sets THROTTLE_URL, THROTTLE_PORT and THROTTLE_PID.
start_throttle() {
    local upstream=$1 rate=$2 latency=$3
    THROTTLE_PORT=$(free_port)
    python3 "$BENCH_DIR/throttle.py" "$THROTTLE_PORT" "${upstream#http://}" --rate "$rate" --latency-ms "$latency" \
        >"$WORK/throttle.log" 2>&1 &
    BENCH_PIDS+=($!)
    THROTTLE_PID=$!
    wait_port "$THROTTLE_PORT" 10
    THROTTLE_URL="http://127.0.0.1:$THROTTLE_PORT"
    log "throttle (pid $!) on $THROTTLE_URL: $upstream at $rate bytes/s per connection, +${latency} ms per request"
}

# seed REGISTRY_URL REPO TAG JSON_OUT SIZE_MIB...
seed() {
    local url=$1 repo=$2 tag=$3 json=$4
    shift 4
    log "seeding $repo:$tag ($* MiB) into $url"
    python3 "$BENCH_DIR/seed.py" "$url" "$repo" "$tag" "$@" --json "$json" --workdir "$WORK" >/dev/null
}

# skopeo_pull HOSTPORT IMAGE DEST_DIR: copy an image to a fresh dir: destination.
skopeo_pull() {
    local hostport=$1 image=$2 dest=$3
    rm -rf "$dest"
    mkdir -p "$dest"
    skopeo copy --quiet --src-tls-verify=false --retry-times 0 \
        "docker://$hostport/$image" "dir:$dest" >"$WORK/skopeo.last.log" 2>&1 || {
        cat "$WORK/skopeo.last.log" >&2
        return 1
    }
}

# curl_pull HOSTPORT REPO TAG DEST: the HTTP work of a pull and nothing else, so that the time
#   is the server's: GET /v2/ (and, on a 401, a token from the challenge's realm), the manifest by
#   tag, then config and layers 4 at a time into DEST/<hex>, or with DEST "-" into /dev/null
#   (then only the byte count is checked). No digest check while timed (verify the files after).
#   User-Agent berth-bench-client, so the upstream log counts it as "direct".
#   Prints the bytes received for config and layers.
curl_pull() {
    local hostport=$1 repo=$2 tag=$3 dest=$4 base="http://$1/v2" auth=() challenge realm service token manifest
    local ua=(-A berth-bench-client)
    challenge=$(curl -s "${ua[@]}" -o /dev/null -w '%header{www-authenticate}' "$base/")
    # parsed with bash alone: every extra process would be charged to the server that asks for a token
    if [[ $challenge =~ ^Bearer.*realm=\"([^\"]*)\" ]]; then
        realm=${BASH_REMATCH[1]}
        service=""
        if [[ $challenge =~ service=\"([^\"]*)\" ]]; then service=${BASH_REMATCH[1]}; fi
        token=$(curl -sf "${ua[@]}" -G "$realm" --data-urlencode "service=$service" \
            --data-urlencode "scope=repository:$repo:pull")
        [[ $token =~ \"token\"\ *:\ *\"([^\"]*)\" ]] || { echo "curl_pull: no token from $realm" >&2; return 1; }
        auth=(-H "Authorization: Bearer ${BASH_REMATCH[1]}")
    fi
    manifest=$(curl -sf "${ua[@]}" "${auth[@]}" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$base/$repo/manifests/$tag") || {
        echo "curl_pull: manifest $repo:$tag from $hostport failed" >&2
        return 1
    }
    local args=() d
    # config and layers: every digest the manifest names (the seeded image has no subject)
    while read -r d; do
        if [[ $dest == - ]]; then
            args+=(-o /dev/null "$base/$repo/blobs/$d")
        else
            args+=(-o "$dest/${d#sha256:}" "$base/$repo/blobs/$d")
        fi
    done < <(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$manifest" | sort -u)
    [[ $dest == - ]] || mkdir -p "$dest"
    local sizes
    sizes=$(curl -sf -L --parallel --parallel-max 4 --no-progress-meter -w '%{size_download}\n' \
        "${ua[@]}" "${auth[@]}" "${args[@]}") || {
        echo "curl_pull: blobs of $repo:$tag from $hostport failed" >&2
        return 1
    }
    awk '{ n += $1 } END { print n }' <<<"$sizes"
}

# start_containerd NAME: a private containerd daemon for `ctr content fetch`, with its own root,
#   state, gRPC/ttrpc sockets and opt dir under $WORK/NAME (nothing under /var/lib, /run or /opt)
#   and the CRI plugin off. Stopped by the cleanup trap.
#   Sets CTRD_SOCK, CTRD_PID, CTRD_LOG, CTRD_ROOT, CTRD_BLOBS (the content store's sha256 dir).
start_containerd() {
    local name=$1
    local dir="$WORK/$name"
    mkdir -p "$dir"
    CTRD_ROOT="$dir/root"
    CTRD_SOCK="$dir/containerd.sock"
    CTRD_LOG="$dir/containerd.log"
    CTRD_BLOBS="$CTRD_ROOT/io.containerd.content.v1.content/blobs/sha256"
    cat >"$dir/config.toml" <<EOF
version = 2
root = "$CTRD_ROOT"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$dir/containerd.ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable = true
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
    containerd --config "$dir/config.toml" </dev/null >"$dir/containerd.stdout" 2>"$CTRD_LOG" &
    CTRD_PID=$!
    BENCH_PIDS+=("$CTRD_PID")
    for _ in $(seq 1 200); do
        if [[ -S $CTRD_SOCK ]] && ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then break; fi
        kill -0 "$CTRD_PID" 2>/dev/null || { tail -20 "$CTRD_LOG" >&2; die "containerd exited during startup"; }
        sleep 0.1
    done
    ctr --address "$CTRD_SOCK" version >/dev/null 2>&1 || die "containerd did not answer within 20s; see $CTRD_LOG"
    log "containerd $name (pid $CTRD_PID) on $CTRD_SOCK, content store $CTRD_BLOBS"
}

# ctr_pull HOSTPORT IMAGE [NAMESPACE]: `ctr content fetch` of an image into the private containerd
#   (manifest, config and layers fetched concurrently and digest-checked, nothing unpacked).
#   `--debug` (debug log lines on stderr instead of the progress display) matters for timing:
#   with the progress display ctr polls the content store every 100 ms and, once the fetch is
#   done, waits for the next 100 ms tick before it exits, so wall times come in 100 ms steps.
ctr_pull() {
    local hostport=$1 image=$2 ns=${3:-berth-bench}
    ctr --debug --address "$CTRD_SOCK" --namespace "$ns" content fetch --plain-http \
        "$hostport/$image" >"$WORK/ctr.last.log" 2>&1 || {
        cat "$WORK/ctr.last.log" >&2
        return 1
    }
}

# ctr_clear [NAMESPACE]: empty the private containerd's content store, so that the next fetch
#   downloads every blob again (containerd shares content between namespaces, so a fresh
#   namespace alone is not enough). Removes the namespace's images with a synchronous garbage
#   collection, deletes any content still listed, then waits (bounded, 30 s) until the content
#   store holds no file at all (blobs and ingests) and dies otherwise.
ctr_clear() {
    local ns=${1:-berth-bench}
    local c=(ctr --address "$CTRD_SOCK" --namespace "$ns")
    local content_dir="${CTRD_BLOBS%/blobs/sha256}" imgs left
    imgs=$("${c[@]}" images ls -q)
    if [[ -n $imgs ]]; then
        # shellcheck disable=SC2086
        "${c[@]}" images rm --sync $imgs >/dev/null
    fi
    left=$("${c[@]}" content ls -q)
    if [[ -n $left ]]; then
        # shellcheck disable=SC2086
        "${c[@]}" content rm $left >/dev/null
    fi
    for _ in $(seq 1 300); do
        if [[ -z $(find "$content_dir" -type f -print -quit 2>/dev/null) && -z $("${c[@]}" content ls -q) ]]; then
            return 0
        fi
        sleep 0.1
    done
    find "$content_dir" -type f >&2
    die "containerd's content store still holds files 30s after clearing it"
}

# busy_procs: comma-separated pids of compiler/cargo processes running elsewhere (empty if none).
busy_procs() {
    ps -eo pid=,comm= | awk '$2 ~ /^(rustc|cargo|cc1|cc1plus|ld|ld\.lld|mold)$/ { print $1 }' | paste -sd, -
}

# wait_quiet [LIMIT_S]: the benchmarks share the machine; wait (bounded by LIMIT_S, default
# BENCH_QUIET_WAIT or 180 seconds) until no compiler or cargo process (rustc, cargo, cc1, ld, ...)
# has run elsewhere for 3 s in a row, then record the load average.
wait_quiet() {
    local limit=${1:-${BENCH_QUIET_WAIT:-180}} busy="" quiet=0 said=0
    for _ in $(seq 1 "$limit"); do
        busy=$(busy_procs)
        if [[ -z $busy ]]; then
            quiet=$((quiet + 1))
            [[ $quiet -ge 3 ]] && break
        else
            quiet=0
            [[ $said == 0 ]] && log "waiting up to ${limit}s for other compiler/cargo processes ($busy) to finish"
            said=1
        fi
        sleep 1
    done
    if [[ -n $busy ]]; then log "WARNING: still busy ($busy); numbers may be disturbed"; fi
    BENCH_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
}

# busy_watch OUTFILE STOPFILE: once a second (at most 30 min) append the busy_procs list to
# OUTFILE until STOPFILE exists; shows whether compilers ran during a measurement.
busy_watch() {
    local out=$1 stop=$2 b
    for _ in $(seq 1 1800); do
        [[ -e $stop ]] && break
        b=$(busy_procs)
        [[ -n $b ]] && echo "$b" >>"$out"
        sleep 1
    done
    return 0
}

# busy_summary OUTFILE: "none" or "yes (N samples)" from a busy_watch file.
busy_summary() {
    if [[ -s $1 ]]; then echo "yes ($(wc -l <"$1") s)"; else echo none; fi
}

# stop_pid PID: SIGTERM one process we started, wait up to 5 s, then SIGKILL it.
stop_pid() {
    kill "$1" 2>/dev/null || return 0
    reap_pid "$1"
}

# reap_pid PID: wait up to 5 s for a process already sent SIGTERM to exit, then SIGKILL it.
reap_pid() {
    local pid=$1
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# load_note: one line on the machine's state during the run, for the report.
load_note() {
    echo "# load average at start: ${BENCH_LOAD_START:-?}, at end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
}

# metric URL NAME: a counter's value from a Prometheus text endpoint (0 if absent).
metric() {
    curl -s --max-time 5 "$1/metrics" | awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}

# peak_rss_kib PID: VmHWM in KiB.
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# log_lines FILE: current line count (0 if missing).
log_lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

# settle_log FILE [MAX_S]: wait until FILE has not grown for 2 s (bounded by MAX_S, default 30),
# so that requests still in flight after a phase land in that phase's slice of the log.
settle_log() {
    local file=$1 max=${2:-30} last=-1 cur stable=0
    for _ in $(seq 1 $((max * 5))); do
        cur=$(stat -c %s "$file" 2>/dev/null || echo 0)
        if [[ $cur == "$last" ]]; then
            stable=$((stable + 1))
            [[ $stable -ge 10 ]] && return 0
        else
            stable=0
            last=$cur
        fi
        sleep 0.2
    done
    log "WARNING: $file still growing after ${max}s"
}

# cpu_ticks PID: utime + stime of PID so far, in clock ticks (getconf CLK_TCK per second).
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# cpu_secs TICKS_BEFORE TICKS_AFTER: the difference in seconds.
cpu_secs() { python3 -c 'import os,sys; t=os.sysconf("SC_CLK_TCK"); print(f"{(int(sys.argv[2]) - int(sys.argv[1])) / t:.1f}")' "$1" "$2"; }
