#!/usr/bin/env bash
# Password logins at berth's token endpoint, with a bcrypt cost-10 htpasswd (what
# `berth hash-password` writes):
#   (a) token requests/s with the same valid Basic credentials over and over (wrk -c32);
#   (b) latency of valid logins (wrk -c4 --latency: p50/p99) while 64 connections send wrong
#       passwords as fast as they are answered (wrk -c64).
# Each is run with the cache of verified logins on (the default, cache_ttl = 1m) and off
# (cache_ttl = 0s: every login pays bcrypt, as berth did before the cache). The failed-login
# throttle is set out of reach, so that every wrong password really runs bcrypt: the worst case,
# guesses from more addresses and names than the throttle can pin down.
#
# Knobs: DURATION (seconds per measurement, default 10), and lib.sh's (BERTH_BIN, BERTH_NO_BUILD).
# BASELINE=1 measures a berth from before [auth.login] existed (BERTH_BIN=that binary): one run,
# without that section.
# Results: printed, and written to bench/out/logins.txt.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
need curl curl
need wrk wrk
need python3 python3
build_berth

mkdir -p "$WORK/keys"
"$BERTH_BIN" keygen --key "$WORK/keys/token.key" --cert "$WORK/keys/token.crt" >/dev/null
printf 'bench:%s\n' "$(printf 'bench-pw\n' | "$BERTH_BIN" hash-password)" >"$WORK/htpasswd"
grep -q '^bench:\$2b\$10\$' "$WORK/htpasswd" || die "expected a cost-10 bcrypt hash in $WORK/htpasswd"
GOOD="Authorization: Basic $(printf 'bench:bench-pw' | base64)"
BAD="Authorization: Basic $(printf 'bench:wrong-pw' | base64)"
TOKEN_PATH="/token?service=berth&scope=repository:library/alpine:pull"

# berth_with CACHE_TTL: a berth with [auth] and that cache_ttl; the throttle out of reach.
#   CACHE_TTL "baseline": no [auth.login] section at all.
berth_with() {
    BERTH_EXTRA_CONFIG="[auth]
signing_key = \"$WORK/keys/token.key\"
htpasswd = \"$WORK/htpasswd\""
    if [[ $1 != baseline ]]; then
        BERTH_EXTRA_CONFIG+="
[auth.login]
failures_per_user = 1000000000
failures_per_address = 1000000000
cache_ttl = \"$1\""
    fi
    start_berth "berth-cache-$1" "http://127.0.0.1:9"
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "$GOOD" "$BERTH_URL$TOKEN_PATH")
    [[ $status == 200 ]] || die "valid login answered $status; see $BERTH_LOG"
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "$BAD" "$BERTH_URL$TOKEN_PATH")
    [[ $status == 401 ]] || die "wrong password answered $status; see $BERTH_LOG"
}

# wrk_field FILE WHAT: requests/s ("rps"), a latency percentile in ms ("50", "99"), the
# requests that were not 2xx ("non2xx"), or all requests ("total").
wrk_field() {
    python3 - "$1" "$2" <<'PY'
import re, sys
text, what = open(sys.argv[1]).read(), sys.argv[2]
def ms(value):
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
if what == "rps":
    print(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
elif what == "non2xx":
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    print(m.group(1) if m else 0)
elif what == "total":
    print(re.search(r"(\d+) requests in", text).group(1))
else:
    pattern = r"^\s+" + what + r"%\s+(\S+)"
    print(f"{ms(re.search(pattern, text, re.M).group(1)):.1f}")
PY
}

# A wrk script that counts the answers by status, for the flood.
cat >"$WORK/statuses.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
counts = {}
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, n in pairs(thread:get("counts")) do total[status] = (total[status] or 0) + n end
    end
    for status, n in pairs(total) do io.write(string.format("status %d: %d\n", status, n)) end
end
LUA

RESULTS="$OUT_DIR/logins.txt"
[[ ${BASELINE:-0} == 1 ]] && RESULTS="$OUT_DIR/logins-baseline.txt"
{
    echo "# bench/logins.sh, $(date -u '+%F %T') UTC, $BERTH_BIN_INFO"
    echo "# bcrypt cost 10; DURATION=${DURATION}s per measurement"
} >"$RESULTS"
wait_quiet

TTLS=(1m 0s)
[[ ${BASELINE:-0} == 1 ]] && TTLS=(baseline)
for ttl in "${TTLS[@]}"; do
    berth_with "$ttl"
    log "(a) cache_ttl=$ttl: valid logins, wrk -t2 -c32 -d${DURATION}s"
    wrk -t2 -c32 -d"${DURATION}s" --timeout 30s -H "$GOOD" "$BERTH_URL$TOKEN_PATH" >"$WORK/a-$ttl.txt"
    a_rps=$(wrk_field "$WORK/a-$ttl.txt" rps)
    a_bad=$(wrk_field "$WORK/a-$ttl.txt" non2xx)
    a_ok=$(python3 -c 'import sys; print(f"{(int(sys.argv[1]) - int(sys.argv[2])) / float(sys.argv[3]):.0f}")' \
        "$(wrk_field "$WORK/a-$ttl.txt" total)" "$a_bad" "$DURATION")

    log "(b) cache_ttl=$ttl: valid logins (wrk -c4) during 64 connections of wrong passwords"
    wrk -t1 -c64 -d"$((DURATION + 4))s" --timeout 30s -s "$WORK/statuses.lua" -H "$BAD" "$BERTH_URL$TOKEN_PATH" \
        >"$WORK/flood-$ttl.txt" &
    flood=$!
    BENCH_JOBS+=("$flood")
    sleep 2
    wrk -t1 -c4 -d"${DURATION}s" --timeout 30s --latency -H "$GOOD" "$BERTH_URL$TOKEN_PATH" >"$WORK/b-$ttl.txt"
    wait "$flood"
    b_rps=$(wrk_field "$WORK/b-$ttl.txt" rps)
    b_p50=$(wrk_field "$WORK/b-$ttl.txt" 50)
    b_p99=$(wrk_field "$WORK/b-$ttl.txt" 99)
    b_refused=$(wrk_field "$WORK/b-$ttl.txt" non2xx)
    b_total=$(wrk_field "$WORK/b-$ttl.txt" total)
    flood_total=$(wrk_field "$WORK/flood-$ttl.txt" total)
    flood_401=$(awk '$1 == "status" && $2 == "401:" { print $3 }' "$WORK/flood-$ttl.txt")
    flood_429=$(awk '$1 == "status" && $2 == "429:" { print $3 }' "$WORK/flood-$ttl.txt")
    {
        echo "cache_ttl=$ttl (a) valid logins: ${a_ok} tokens/s (answers: ${a_rps}/s, of them non-2xx: $a_bad)"
        echo "cache_ttl=$ttl (b) valid logins during the flood: ${b_rps} req/s, p50 ${b_p50} ms, p99 ${b_p99} ms, non-2xx ${b_refused} of ${b_total}"
        echo "cache_ttl=$ttl (b) the flood: ${flood_total} wrong logins answered (${flood_401:-0} x 401 after bcrypt, ${flood_429:-0} x 429 with the hashing queue full)"
    } | tee -a "$RESULTS"
    stop_pid "$BERTH_PID"
done
load_note | tee -a "$RESULTS"
