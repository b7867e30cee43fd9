#!/usr/bin/env bash
# Several berth nodes over one shared S3 store (issue 14), against CNCF Distribution's `s3`
# storage driver on the same store: a 3-node Garage cluster on 127.0.0.1 (replication 3,
# sqlite), started by this script, side by side in one run.
#
# 1. get:    cache-hit GET of one BLOB_MIB (300) MiB blob that is only in the shared store.
#            The blob is pushed (skopeo, from an oci: layout) through a berth node into a
#            private project, and through Distribution into its own bucket. Each run starts a
#            berth node with an empty data_dir over that bucket (so the blob is never in its
#            local tier) and times `curl -o /dev/null` of the blob with a bearer token, next to
#            the same GET from Distribution (`redirect: disable: true`), order alternating.
#            Both read through Garage node 0, or with GET_VIA=balancer both through an nginx
#            round-robin over the 3 Garage nodes' S3 ports (as docs/deploy.md advises: no store
#            node is a single point of failure). A first, untimed round checks the sha256 of
#            what each one serves.
# 2. push:   private push of a PUSH_LAYERS (30 20 7 MiB, ~60 MB) image with `skopeo copy` from
#            an oci: layout through an nginx round-robin over 3 berth nodes, vs. DIST_NODES (3)
#            Distribution instances (one http.secret) behind the same kind of balancer, on the
#            same Garage (node i of each reaches Garage node i). Every run pushes a fresh random
#            image (so nothing is deduplicated or mounted), to both, order alternating; run 0 is
#            an untimed warm-up.
# 3. pulls:  PULL_ROUNDS rounds of: 3 open-mirror berth nodes (no [auth]) over a fresh bucket
#            with fresh data_dirs, mirroring a plain Distribution upstream on local disk that
#            holds an image with one PULL_MIB (300) MiB layer; 3 `skopeo copy` pulls, one through
#            each node, started together ("concurrent"), then again (fresh bucket and nodes)
#            started 1 s apart ("staggered"). Counts the upstream's blob GETs for the layer:
#            the sum of berth_upstream_blob_gets_total over the nodes and the upstream's access
#            log. Every pulled layer is checked with sha256sum.
#
# Usage: bench/shared-store.sh   (env: PHASES="get push pulls" BLOB_MIB=300 GET_RUNS=7 GET_VIA=node0
#          PUSH_LAYERS="30 20 7" PUSH_RUNS=5 DIST_NODES=3 PULL_MIB=300 PULL_ROUNDS=3
#          BERTH_BIN=... BERTH_NO_BUILD=1 BENCH_KEEP=1 BENCH_QUIET_WAIT=180)
# Needs `garage` on PATH (see tests/README: `cargo install garage --locked`).
# Output: tables on stdout and in bench/out/shared-store.txt; raw times in
# bench/out/shared-store-*.csv; berth logs (every pull round's, the last GET reader's, the push
# nodes'), Garage's logs and the S3 requests of one blob GET each in bench/out/.
# Berth's log level is BERTH_LOG_LEVEL (warn); `info` adds an access line per request.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PHASES=${PHASES:-"get push pulls"}
BLOB_MIB=${BLOB_MIB:-300}
GET_RUNS=${GET_RUNS:-7}
# shellcheck disable=SC2206
PUSH_LAYERS=(${PUSH_LAYERS:-30 20 7})
PUSH_RUNS=${PUSH_RUNS:-5}
DIST_NODES=${DIST_NODES:-3}
PULL_MIB=${PULL_MIB:-300}
PULL_ROUNDS=${PULL_ROUNDS:-3}

check_tools
command -v garage >/dev/null || die "garage is not on PATH (cargo install garage --locked)"
build_berth
# shellcheck disable=SC2119 # no argument: the default limit
wait_quiet

REPORT="$WORK/report.txt"
: >"$REPORT"
report() { echo "$*" | tee -a "$REPORT"; }
json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$1" "$2"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# stats V...: "median (min–max)"
stats() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})")' "$@"; }

# ---------------------------------------------------------------------------------------------
# Garage: 3 nodes, replication 3, one key, buckets on demand.

GARAGE_CONF=() GARAGE_S3=() GARAGE_ADMIN=() GARAGE_PIDS=()
GARAGE_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

# garage_on I ARGS...: the CLI against node I, retried for 60 s (a node just started may not
# listen yet, or not have the layout yet).
garage_on() {
    local i=$1
    shift
    for _ in $(seq 1 300); do
        if RUST_LOG=error garage -c "${GARAGE_CONF[$i]}" "$@" 2>"$WORK/garage-cli.err"; then return 0; fi
        sleep 0.2
    done
    cat "$WORK/garage-cli.err" >&2
    die "garage $* on node $i kept failing"
}

start_garage() {
    local secret i dir ports
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    # nine distinct ports, all bound at once so none is handed out twice
    read -r -a ports < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
    for i in 0 1 2; do
        dir="$WORK/garage$i"
        mkdir -p "$dir"
        GARAGE_CONF[i]="$dir/garage.toml"
        GARAGE_S3[i]=${ports[3 * i + 1]}
        GARAGE_ADMIN[i]=${ports[3 * i + 2]}
        cat >"${GARAGE_CONF[$i]}" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:${ports[3 * i]}"
rpc_public_addr = "127.0.0.1:${ports[3 * i]}"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:${GARAGE_S3[$i]}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:${GARAGE_ADMIN[$i]}"
admin_token = "$GARAGE_ADMIN_TOKEN"
EOF
        # info: one line per S3 request, which shows how each client reads an object
        RUST_LOG=garage=warn,garage_api_common=info,garage_api_s3=info NO_COLOR=1 garage -c "${GARAGE_CONF[$i]}" server \
            </dev/null >"$dir/garage.log" 2>&1 &
        BENCH_PIDS+=($!)
        GARAGE_PIDS[i]=$!
    done
    local ids=()
    for i in 0 1 2; do ids[i]=$(garage_on "$i" node id -q); done
    garage_on 0 node connect "${ids[1]}" >/dev/null
    garage_on 0 node connect "${ids[2]}" >/dev/null
    for i in 0 1 2; do garage_on 0 layout assign -z "z$i" -c 100G "${ids[$i]%@*}" >/dev/null; done
    garage_on 0 layout apply --version 1 >/dev/null
    for i in 0 1 2; do
        local up=""
        for _ in $(seq 1 300); do
            up=$(curl -s --max-time 2 -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" \
                "http://127.0.0.1:${GARAGE_ADMIN[$i]}/v2/GetClusterHealth" |
                python3 -c 'import json,sys; print(json.load(sys.stdin).get("storageNodesUp"))' 2>/dev/null || true)
            [[ $up == 3 ]] && break
            sleep 0.2
        done
        [[ $up == 3 ]] || die "garage node $i does not see 3 nodes; see $WORK/garage$i/garage.log"
    done
    garage_on 0 json-api CreateKey '{"name":"bench"}' >"$WORK/garage-key.json"
    S3_KEY=$(json_field "$WORK/garage-key.json" 'd["accessKeyId"]')
    S3_SECRET=$(json_field "$WORK/garage-key.json" 'd["secretAccessKey"]')
    log "garage: 3 nodes, S3 on ports ${GARAGE_S3[*]}, key $S3_KEY"
}

# garage_ticks: CPU ticks of the three Garage nodes so far.
garage_ticks() { local n=0 i; for i in 0 1 2; do n=$((n + $(cpu_ticks "${GARAGE_PIDS[$i]}"))); done; echo "$n"; }

# s3_status I BUCKET: HTTP status of a ListObjectsV2 of BUCKET through node I.
s3_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 --aws-sigv4 "aws:amz:garage:s3" \
        --user "$S3_KEY:$S3_SECRET" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        "http://127.0.0.1:${GARAGE_S3[$1]}/$2?list-type=2&max-keys=1"
}

# new_bucket NAME: creates it, grants the key, and waits until every node lists it.
new_bucket() {
    local name=$1 i
    garage_on 0 bucket create "$name" >/dev/null
    garage_on 0 bucket allow --read --write --owner "$name" --key bench >/dev/null
    for i in 0 1 2; do
        for _ in $(seq 1 150); do
            [[ $(s3_status "$i" "$name") == 200 ]] && break
            sleep 0.2
        done
        [[ $(s3_status "$i" "$name") == 200 ]] || die "bucket $name does not answer on garage node $i"
    done
}

# s3_endpoint I: host:port of Garage node I's S3 API, or of S3_VIA when set (a balancer).
s3_endpoint() { echo "${S3_VIA:-127.0.0.1:${GARAGE_S3[$1]}}"; }

# s3_config I BUCKET: berth's [storage.s3] section, through Garage node I.
s3_config() {
    cat <<EOF
[storage.s3]
endpoint = "http://$(s3_endpoint "$1")"
bucket = "$2"
region = "garage"
access_key_id = "$S3_KEY"
secret_access_key = "$S3_SECRET"
EOF
}

# garage_log_lines: line counts of the three nodes' logs, for slicing later.
garage_log_lines() { for i in 0 1 2; do log_lines "$WORK/garage$i/garage.log"; done | paste -sd' ' -; }
# garage_requests FROM_LINES BUCKET KEY_PART: the S3 request lines logged since FROM_LINES
# (from garage_log_lines) that name BUCKET and KEY_PART.
garage_requests() {
    local -a from
    read -r -a from <<<"$1"
    for i in 0 1 2; do tail -n +"$((from[i] + 1))" "$WORK/garage$i/garage.log"; done |
        grep -F "/$2/" | grep -F "$3" || true
}

# ---------------------------------------------------------------------------------------------
# Distribution on S3.

# start_dist_s3 NAME GARAGE_NODE BUCKET: docker-registry with the s3 driver, no redirects.
#   Sets DIST_PORT, DIST_PID, DIST_LOG. AWS_CA_BUNDLE must be unset: with it set the driver
#   panics at start (LoadCustomCABundleError).
start_dist_s3() {
    local name=$1 node=$2 bucket=$3 dir="$WORK/$1"
    mkdir -p "$dir"
    DIST_PORT=$(free_port)
    DIST_LOG="$dir/registry.log"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  s3:
    accesskey: $S3_KEY
    secretkey: $S3_SECRET
    region: garage
    regionendpoint: http://$(s3_endpoint "$node")
    bucket: $bucket
    secure: false
    v4auth: true
  redirect:
    disable: true
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$DIST_PORT
  secret: $DIST_SECRET
EOF
    env -u AWS_CA_BUNDLE docker-registry serve "$dir/config.yml" >"$DIST_LOG" 2>&1 &
    DIST_PID=$!
    BENCH_PIDS+=("$DIST_PID")
    wait_http "http://127.0.0.1:$DIST_PORT/v2/" 30
    kill -0 "$DIST_PID" 2>/dev/null || die "registry $name exited; see $DIST_LOG"
    log "registry $name (pid $DIST_PID) on 127.0.0.1:$DIST_PORT, s3 bucket $bucket via garage node $node"
}
DIST_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

# ---------------------------------------------------------------------------------------------
# nginx round-robin, as tests/common/balancer.rs: no sticky sessions, bodies streamed.

# start_balancer NAME HOSTPORT...: sets LB_PORT.
start_balancer() {
    local name=$1 dir="$WORK/$1" servers="" b
    shift
    mkdir -p "$dir/tmp"
    for b in "$@"; do servers+="    server $b;"$'\n'; done
    LB_PORT=$(free_port)
    local user_line=""
    [[ $(id -u) == 0 ]] && user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  log_format balancer '\$upstream_addr \$status \$request_method \$request_uri';
  client_body_temp_path $dir/tmp/client;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  upstream backends {
$servers    keepalive 16;
  }
  server {
    listen 127.0.0.1:$LB_PORT;
    access_log $dir/access.log balancer;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
    }
  }
}
EOF
    local nginx_bin
    nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
    "$nginx_bin" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
    BENCH_PIDS+=($!)
    wait_port "$LB_PORT" 10
    log "balancer $name on 127.0.0.1:$LB_PORT over $*"
}

# ---------------------------------------------------------------------------------------------
# berth with a private project (the same keys and users on every node).

setup_auth() {
    mkdir -p "$WORK/keys"
    "$BERTH_BIN" keygen --key "$WORK/keys/token.key" --cert "$WORK/keys/token.crt" >/dev/null
    printf 'bench:%s\n' "$(printf 'bench-pw\n' | "$BERTH_BIN" hash-password)" >"$WORK/htpasswd"
    AUTH_CONFIG="[auth]
service = \"berth-bench\"
issuer = \"berth-bench\"
signing_key = \"$WORK/keys/token.key\"
certificate = \"$WORK/keys/token.crt\"
htpasswd = \"$WORK/htpasswd\"
[[projects]]
name = \"bench\"
members = { bench = \"developer\" }"
}

# berth_node NAME GARAGE_NODE BUCKET [auth]: a berth over the bucket (empty data_dir), private
# (with the [auth] of setup_auth, upstream out of reach) or an open mirror of $UP_URL.
berth_node() {
    local name=$1 node=$2 bucket=$3 mode=${4:-open} upstream=${UP_URL:-http://127.0.0.1:9}
    rm -rf "${WORK:?}/$name"
    BERTH_EXTRA_CONFIG=$(s3_config "$node" "$bucket")
    if [[ $mode == auth ]]; then
        BERTH_EXTRA_CONFIG+=$'\n'"$AUTH_CONFIG"
        upstream=http://127.0.0.1:9
    fi
    start_berth "$name" "$upstream"
}

# token BASE REPO ACTIONS: a bearer token for bench:bench-pw.
token() {
    curl -sf -u bench:bench-pw "$1/token?service=berth-bench&scope=repository:$2:$3" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

push_image() { # LAYOUT DEST_HOSTPORT REPO_TAG [CREDS]
    local creds=()
    [[ -n ${4:-} ]] && creds=(--dest-creds "$4")
    skopeo copy --quiet --preserve-digests --dest-tls-verify=false --retry-times 0 "${creds[@]}" \
        "oci:$1:latest" "docker://$2/$3" >"$WORK/skopeo.last.log" 2>&1 || {
        cat "$WORK/skopeo.last.log" >&2
        return 1
    }
}

start_garage
report "# berth shared-store benchmark (issue 14)  $(date -u '+%F %T UTC')"
report "# berth=$BERTH_BIN_INFO"
report "# Garage $(garage --version 2>&1 | awk '{print $2}'), 3 nodes on 127.0.0.1, replication 3, sqlite; Distribution $(docker-registry --version 2>&1 | awk '{print $NF}')"
report "# $(nproc) CPUs; load average at start ${BENCH_LOAD_START:-?}"
report ""

# ---------------------------------------------------------------------------------------------
phase_get() {
    log "== get: ${BLOB_MIB} MiB blob only in the shared store"
    local via="Garage node 0"
    if [[ ${GET_VIA:-node0} == balancer ]]; then
        start_balancer get-s3 "127.0.0.1:${GARAGE_S3[0]}" "127.0.0.1:${GARAGE_S3[1]}" "127.0.0.1:${GARAGE_S3[2]}"
        S3_VIA="127.0.0.1:$LB_PORT"
        via="an nginx round-robin over the 3 Garage nodes"
    fi
    setup_auth
    new_bucket get-berth
    new_bucket get-dist
    python3 "$BENCH_DIR/oci_layout.py" "$WORK/big-layout" "$BLOB_MIB" >"$WORK/big.json"
    local digest size
    digest=$(json_field "$WORK/big.json" 'd["layers"][0]["digest"]')
    size=$(json_field "$WORK/big.json" 'd["layers"][0]["size"]')

    berth_node get-pusher 1 get-berth auth
    local pusher_pid=$BERTH_PID t0
    t0=$(now)
    push_image "$WORK/big-layout" "127.0.0.1:$BERTH_PORT" bench/big:v1 bench:bench-pw || die "push to berth failed; see $BERTH_LOG"
    log "pushed to berth in $(elapsed "$t0" "$(now)")s"
    stop_pid "$pusher_pid"
    rm -rf "$WORK/get-pusher"
    start_dist_s3 get-dist 0 get-dist
    t0=$(now)
    push_image "$WORK/big-layout" "127.0.0.1:$DIST_PORT" bench/big:v1 || die "push to Distribution failed; see $DIST_LOG"
    log "pushed to Distribution in $(elapsed "$t0" "$(now)")s"
    rm -rf "$WORK/big-layout"
    local dist_url="http://127.0.0.1:$DIST_PORT/v2/bench/big/blobs/$digest"

    local csv="$OUT_DIR/shared-store-get.csv" run order t out code got secs ttfb tok url auth=()
    echo "run,target,seconds,ttfb_seconds,server_cpu_seconds,garage_cpu_seconds,load1" >"$csv"
    local -A list ttfbs cpus gcpus
    local g0 local_hits="" raw_s3="" raw_first="" ranged_first=""
    list[berth]="" list[distribution]="" ttfbs[berth]="" ttfbs[distribution]="" cpus[berth]="" cpus[distribution]="" gcpus[berth]="" gcpus[distribution]=""
    local glines
    for run in $(seq 0 "$GET_RUNS"); do
        # a fresh node each run: an empty data_dir, so the blob comes from the shared store
        berth_node "get-reader$run" 0 get-berth auth
        tok=$(token "$BERTH_URL" bench/big pull) || die "no token from $BERTH_URL; see $BERTH_LOG"
        if ((run % 2)); then order="distribution berth"; else order="berth distribution"; fi
        for t in $order; do
            url=$dist_url
            auth=()
            if [[ $t == berth ]]; then
                url="$BERTH_URL/v2/bench/big/blobs/$digest"
                auth=(-H "Authorization: Bearer $tok")
            fi
            if [[ $run == 0 ]]; then
                # untimed: the bytes served are checked once, and Garage's reads are warm
                [[ $t == berth ]] && glines=$(garage_log_lines)
                code=$(curl -s "${auth[@]}" -o "$WORK/check.blob" -w '%{http_code}' "$url")
                got=$(sha256sum "$WORK/check.blob" | cut -d' ' -f1)
                rm -f "$WORK/check.blob"
                [[ $code == 200 && sha256:$got == "$digest" ]] || die "$t: HTTP $code, sha256 $got (expected $digest)"
                if [[ $t == berth ]]; then
                    garage_requests "$glines" get-berth "$(cut -c8-20 <<<"$digest")" >"$OUT_DIR/shared-store-get-s3-berth.log"
                fi
                continue
            fi
            [[ $t == distribution ]] && glines=$(garage_log_lines)
            local pid=$DIST_PID c0
            [[ $t == berth ]] && pid=$BERTH_PID
            c0=$(cpu_ticks "$pid")
            g0=$(garage_ticks)
            out=$(curl -s "${auth[@]}" -o /dev/null -w '%{http_code} %{size_download} %{time_total} %{time_starttransfer}' "$url") || die "curl $t failed"
            read -r code got secs ttfb <<<"$out"
            [[ $code == 200 && $got == "$size" ]] || die "$t: HTTP $code, $got bytes (expected 200, $size)"
            [[ $t == distribution ]] && garage_requests "$glines" get-dist "$(cut -c8-20 <<<"$digest")" >"$OUT_DIR/shared-store-get-s3-dist.log"
            local cpu gcpu
            cpu=$(cpu_secs "$c0" "$(cpu_ticks "$pid")")
            gcpu=$(cpu_secs "$g0" "$(garage_ticks)")
            gcpus[$t]+="$gcpu "
            list[$t]+="$secs "
            ttfbs[$t]+="$ttfb "
            cpus[$t]+="$cpu "
            echo "$run,$t,$secs,$ttfb,$cpu,$gcpu,$(cut -d' ' -f1 /proc/loadavg)" >>"$csv"
            log "GET via $t #$run: ${secs}s (first byte ${ttfb}s, server CPU ${cpu}s, Garage CPU ${gcpu}s)"
        done
        if [[ $run == "$GET_RUNS" ]]; then
            # for reference, untimed against the target: the same node again (now a local-tier
            # hit), and the object read straight from Garage node 0 by curl (the store's floor)
            local k
            for k in 1 2 3; do
                out=$(curl -s -H "Authorization: Bearer $tok" -o /dev/null -w '%{time_total}' "$BERTH_URL/v2/bench/big/blobs/$digest")
                local_hits+="$out "
                out=$(curl -s -o /dev/null -w '%{time_total} %{time_starttransfer}' --aws-sigv4 "aws:amz:garage:s3" --user "$S3_KEY:$S3_SECRET" \
                    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://127.0.0.1:${GARAGE_S3[0]}/get-berth/blobs/sha256/${digest#sha256:}")
                raw_s3+="${out% *} "
                raw_first+="${out#* } "
                # a ranged GET's first byte: Garage reads the object's block list first
                out=$(curl -s -o /dev/null -r 8388608-16777215 -w '%{time_starttransfer}' --aws-sigv4 "aws:amz:garage:s3" --user "$S3_KEY:$S3_SECRET" \
                    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://127.0.0.1:${GARAGE_S3[0]}/get-berth/blobs/sha256/${digest#sha256:}")
                ranged_first+="$out "
            done
        fi
        cp "$BERTH_LOG" "$OUT_DIR/shared-store-get-berth.log"
        stop_pid "$BERTH_PID"
        rm -rf "${WORK:?}/get-reader$run"
    done
    local mb mt db dt
    # shellcheck disable=SC2086
    { mb=$(median ${list[berth]}); db=$(median ${list[distribution]}); mt=$(median ${ttfbs[berth]}); dt=$(median ${ttfbs[distribution]}); }
    mibps() { python3 -c 'import sys; print(f"{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.0f}")' "$size" "$1"; }
    report "## 1. cache-hit GET of a ${BLOB_MIB} MiB blob only in the shared store ($GET_RUNS runs, fresh berth node each, via $via)"
    report "$(printf '%-13s %-26s %7s %-12s  %s' target 'seconds median (min-max)' 'MiB/s' 'first byte' runs)"
    # shellcheck disable=SC2086
    report "$(printf '%-13s %-26s %7s %-12s  %s' berth "$(stats ${list[berth]})" "$(mibps "$mb")" "${mt}s" "${list[berth]}")"
    # shellcheck disable=SC2086
    report "$(printf '%-13s %-26s %7s %-12s  %s' distribution "$(stats ${list[distribution]})" "$(mibps "$db")" "${dt}s" "${list[distribution]}")"
    report "ratio berth/distribution: $(ratio "$mb" "$db")  (target <= 0.80)"
    # shellcheck disable=SC2086
    report "server CPU seconds per GET (median): berth $(median ${cpus[berth]}), distribution $(median ${cpus[distribution]})"
    # shellcheck disable=SC2086
    report "Garage CPU seconds per GET (median, 3 nodes): berth $(median ${gcpus[berth]}), distribution $(median ${gcpus[distribution]})"
    # shellcheck disable=SC2086
    report "reference: berth local-tier hit (same node, 2nd GET) $(stats $local_hits) s; curl straight from Garage node 0 $(stats $raw_s3) s"
    # shellcheck disable=SC2086
    report "Garage node 0's first byte to curl: whole GET $(stats $raw_first) s, ranged 8 MiB GET $(stats $ranged_first) s"
    report "S3 requests for the blob: berth $(grep -c . "$OUT_DIR/shared-store-get-s3-berth.log" || true) (first GET), distribution $(grep -c . "$OUT_DIR/shared-store-get-s3-dist.log" || true) (last timed GET); see bench/out/shared-store-get-s3-*.log"
    report "load average after: $(loadavg)"
    report ""
    stop_pid "$DIST_PID"
    S3_VIA=""
}

# ---------------------------------------------------------------------------------------------
phase_push() {
    log "== push: ${PUSH_LAYERS[*]} MiB image through a balancer"
    [[ -n ${AUTH_CONFIG:-} ]] || setup_auth
    new_bucket push-berth
    new_bucket push-dist
    local nodes=() pids=() i
    for i in 0 1 2; do
        berth_node "push-berth$i" "$i" push-berth auth
        nodes+=("127.0.0.1:$BERTH_PORT")
        pids+=("$BERTH_PID")
    done
    start_balancer lb-berth "${nodes[@]}"
    local berth_lb="127.0.0.1:$LB_PORT" dist_target dnodes=()
    for i in $(seq 0 $((DIST_NODES - 1))); do
        start_dist_s3 "push-dist$i" "$((i % 3))" push-dist
        dnodes+=("127.0.0.1:$DIST_PORT")
        pids+=("$DIST_PID")
    done
    if ((DIST_NODES > 1)); then
        start_balancer lb-dist "${dnodes[@]}"
        dist_target="127.0.0.1:$LB_PORT"
    else
        dist_target=${dnodes[0]}
    fi
    local csv="$OUT_DIR/shared-store-push.csv" run order t t0 secs
    echo "run,target,seconds,load1" >"$csv"
    local -A list
    list[berth]="" list[distribution]=""
    for run in $(seq 0 "$PUSH_RUNS"); do
        rm -rf "$WORK/push-layout"
        python3 "$BENCH_DIR/oci_layout.py" "$WORK/push-layout" "${PUSH_LAYERS[@]}" >/dev/null
        if ((run % 2)); then order="distribution berth"; else order="berth distribution"; fi
        for t in $order; do
            t0=$(now)
            if [[ $t == berth ]]; then
                push_image "$WORK/push-layout" "$berth_lb" "bench/push$run:v1" bench:bench-pw ||
                    die "push $run through the berth balancer failed; logs in $WORK/push-berth*/"
            else
                push_image "$WORK/push-layout" "$dist_target" "bench/push$run:v1" ||
                    die "push $run through Distribution ($DIST_NODES nodes) failed; logs in $WORK/push-dist*/ (DIST_NODES=1 for one)"
            fi
            secs=$(elapsed "$t0" "$(now)")
            if [[ $run == 0 ]]; then log "warm-up push via $t: ${secs}s"; continue; fi
            list[$t]+="$secs "
            echo "$run,$t,$secs,$(cut -d' ' -f1 /proc/loadavg)" >>"$csv"
            log "push via $t #$run: ${secs}s"
        done
    done
    # the last image reads back through the balancer (a check, untimed)
    local tok mf
    tok=$(token "http://$berth_lb" "bench/push$PUSH_RUNS" pull)
    mf=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$berth_lb/v2/bench/push$PUSH_RUNS/manifests/v1")
    [[ $mf == 200 ]] || die "the last pushed manifest answers $mf through the berth balancer"
    local per_node
    per_node=$(awk '{ print $1 }' "$WORK/lb-berth/access.log" | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }')
    local mb db total_mb
    # shellcheck disable=SC2086
    { mb=$(median ${list[berth]}); db=$(median ${list[distribution]}); }
    total_mb=$(python3 -c 'import sys; print(f"{sum(float(x) for x in sys.argv[1:]) * 1.048576:.1f}")' "${PUSH_LAYERS[@]}")
    report "## 2. private push of a ${total_mb} MB image (layers ${PUSH_LAYERS[*]} MiB), skopeo copy from oci:, $PUSH_RUNS runs"
    local dist_desc="1 node"
    ((DIST_NODES > 1)) && dist_desc="$DIST_NODES nodes behind the same kind of balancer, one http.secret"
    report "berth: 3 nodes behind nginx round-robin (requests per node: $per_node); distribution: $dist_desc"
    # shellcheck disable=SC2086
    report "$(printf '%-13s %-26s  %s' berth "$(stats ${list[berth]})" "${list[berth]}")"
    # shellcheck disable=SC2086
    report "$(printf '%-13s %-26s  %s' distribution "$(stats ${list[distribution]})" "${list[distribution]}")"
    report "ratio berth/distribution: $(ratio "$mb" "$db")  (target <= 0.80)"
    report "load average after: $(loadavg)"
    report ""
    for i in 0 1 2; do cp "$WORK/push-berth$i/berth.log" "$OUT_DIR/shared-store-push-berth$i.log"; done
    for p in "${pids[@]}"; do stop_pid "$p"; done
    rm -rf "$WORK"/push-berth* "$WORK/push-layout"
}

# ---------------------------------------------------------------------------------------------
phase_pulls() {
    log "== pulls: 3 cold pulls of a ${PULL_MIB} MiB layer, one per node"
    start_registry upstream
    UP_URL=$REG_URL
    local up_log=$REG_LOG
    seed "$UP_URL" library/bigimg v1 "$WORK/pull-seed.json" "$PULL_MIB"
    local layer hex config
    layer=$(json_field "$WORK/pull-seed.json" 'd["layers"][0]["digest"]')
    config=$(json_field "$WORK/pull-seed.json" 'd["config"]["digest"]')
    hex=${layer#sha256:}
    local csv="$OUT_DIR/shared-store-pulls.csv"
    echo "round,mode,metric_gets_all_blobs,log_gets_layer,log_gets_config,pull_seconds,load1" >"$csv"
    local -A metrics logs cfgs
    local round mode i nodes pids from gets lg cg times bucket
    for round in $(seq 1 "$PULL_ROUNDS"); do
        for mode in concurrent staggered; do
            bucket="pulls-$mode-$round"
            new_bucket "$bucket"
            nodes=() pids=()
            for i in 0 1 2; do
                berth_node "pull-node$i" "$i" "$bucket" open
                nodes+=("$BERTH_PORT")
                pids+=("$BERTH_PID")
            done
            settle_log "$up_log" 10
            from=$(log_lines "$up_log")
            rm -f "$WORK"/pull-time*
            local jobs=()
            for i in 0 1 2; do
                (
                    t0=$(now)
                    skopeo copy --quiet --src-tls-verify=false --retry-times 0 \
                        "docker://127.0.0.1:${nodes[$i]}/library/bigimg:v1" "dir:$WORK/pull-dest$i" \
                        >"$WORK/pull-skopeo$i.log" 2>&1 || { echo fail >"$WORK/pull-time$i"; exit 1; }
                    elapsed "$t0" "$(now)" >"$WORK/pull-time$i"
                ) &
                jobs+=($!)
                BENCH_JOBS+=($!)
                [[ $mode == staggered && $i -lt 2 ]] && sleep 1
            done
            for j in "${jobs[@]}"; do wait "$j" || true; done
            times=$(cat "$WORK"/pull-time0 "$WORK"/pull-time1 "$WORK"/pull-time2 | paste -sd' ' -)
            if grep -q fail <<<"$times"; then
                for i in 0 1 2; do cat "$WORK/pull-skopeo$i.log" >&2; cp "$WORK/pull-node$i/berth.log" "$OUT_DIR/shared-store-pulls-fail-node$i.log"; done
                die "a pull failed ($mode, round $round); berth logs in bench/out/shared-store-pulls-fail-node*.log"
            fi
            for i in 0 1 2; do
                [[ $(sha256sum "$WORK/pull-dest$i/$hex" | cut -d' ' -f1) == "$hex" ]] || die "pull $i ($mode) got a wrong layer"
                rm -rf "$WORK/pull-dest$i"
            done
            settle_log "$up_log" 10
            gets=0
            for i in 0 1 2; do gets=$((gets + $(metric "http://127.0.0.1:${nodes[$i]}" berth_upstream_blob_gets_total))); done
            lg=$(tail -n +"$((from + 1))" "$up_log" | grep -c "\"GET /v2/library/bigimg/blobs/$layer " || true)
            cg=$(tail -n +"$((from + 1))" "$up_log" | grep -c "\"GET /v2/library/bigimg/blobs/$config " || true)
            metrics[$mode]+="$gets "
            logs[$mode]+="$lg "
            cfgs[$mode]+="$cg "
            echo "$round,$mode,$gets,$lg,$cg,$times,$(cut -d' ' -f1 /proc/loadavg)" >>"$csv"
            log "round $round $mode: upstream GETs: layer $lg, config $cg (log); all blobs $gets (metric); pulls ${times}s"
            for i in 0 1 2; do cp "$WORK/pull-node$i/berth.log" "$OUT_DIR/shared-store-pulls-r$round-$mode-node$i.log"; done
            for p in "${pids[@]}"; do stop_pid "$p"; done
            rm -rf "$WORK"/pull-node*
        done
    done
    report "## 3. 3 cold pulls of one ${PULL_MIB} MiB layer, one through each open-mirror node ($PULL_ROUNDS rounds, fresh bucket and data_dirs each)"
    report "upstream GETs per round: the layer (upstream access log) | the config (log) | all blobs (sum of berth_upstream_blob_gets_total)"
    report "  concurrent:    layer ${logs[concurrent]}| config ${cfgs[concurrent]}| all ${metrics[concurrent]} (target: layer <= 3)"
    report "  1 s apart:     layer ${logs[staggered]}| config ${cfgs[staggered]}| all ${metrics[staggered]} (target: layer exactly 1)"
    report "per-pull times in bench/out/shared-store-pulls.csv; load average after: $(loadavg)"
    report ""
}

for p in $PHASES; do
    case $p in
        get) phase_get ;;
        push) phase_push ;;
        pulls) phase_pulls ;;
        *) die "unknown phase $p" ;;
    esac
done
for i in 0 1 2; do cp "$WORK/garage$i/garage.log" "$OUT_DIR/shared-store-garage$i.log"; done
report "$(load_note)"
cp "$REPORT" "$OUT_DIR/shared-store.txt"
