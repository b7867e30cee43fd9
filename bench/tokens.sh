#!/usr/bin/env bash
# Memory under a token flood (issue 12: "8,500 tokens with hundreds of scopes took berth to
# 1.55 GB"): COUNT anonymous tokens of SCOPES scopes each (long names) are issued by berth's open
# token service and presented once each on GET /v2/, so berth verifies and caches every one.
# Reports berth's RssAnon and VmHWM after the flood. No upstream is contacted.
#
# Usage: bench/tokens.sh   (env: COUNT=8500 SCOPES=64 NAME_LEN=200 BERTH_BIN=… BERTH_NO_BUILD=1)
# Output: bench/out/tokens.txt
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-8500}
SCOPES=${SCOPES:-64}
NAME_LEN=${NAME_LEN:-200}

need python3 python3
need curl curl
build_berth
# shellcheck disable=SC2119 # no argument: the default limit
wait_quiet
# Nothing listens there: the flood must not need an upstream.
start_berth berth "http://127.0.0.1:$(free_port)"
ANON_START=$(awk '/^RssAnon:/ { print $2 }' "/proc/$BERTH_PID/status")
t0=$(now)
RESULT=$(python3 "$BENCH_DIR/tokens.py" "$BERTH_PORT" --count "$COUNT" --scopes "$SCOPES" --name-len "$NAME_LEN")
t1=$(now)
ANON=$(awk '/^RssAnon:/ { print $2 }' "/proc/$BERTH_PID/status")
HWM=$(peak_rss_kib "$BERTH_PID")
{
    echo "# berth token flood  $(date -u '+%F %T UTC')"
    echo "# $COUNT anonymous tokens, $SCOPES scopes each (names of $NAME_LEN+ characters), each presented once on GET /v2/"
    echo "# berth=$BERTH_BIN_INFO"
    load_note
    echo
    echo "$RESULT, in $(elapsed "$t0" "$t1") s"
    echo "berth RssAnon: $((ANON_START / 1024)) MiB before, $((ANON / 1024)) MiB after; VmHWM $((HWM / 1024)) MiB"
} | tee "$OUT_DIR/tokens.txt"
