#!/usr/bin/env bash
# Repeats bench/pull.sh (each run with fresh upstream, mirrors and caches) and reports the
# medians over runs: a single cold pull per run is too noisy on a 2-core machine to judge a
# ratio by. Usage: RUNS=5 bench/repeat-pull.sh   (other pull.sh knobs pass through: CLIENT,
# UPSTREAM_RATE, BERTH__* settings)
# Output: bench/out/repeat-pull.{csv,txt}, repeat-pull-<run>.txt; with CLIENT=ctr
# repeat-pull-ctr.{csv,txt}, repeat-pull-ctr-<run>.txt (pull.sh then writes pull-times-ctr.csv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
RUNS=${RUNS:-5}
export CLIENT=${CLIENT:-skopeo}
# pull.sh names its output files; it also rejects an unknown CLIENT.
suffix=$("$here/pull.sh" --suffix)
out="$here/out"
mkdir -p "$out"
all="$out/repeat-pull$suffix.csv"
echo "run,target,phase,seconds" >"$all"
for run in $(seq 1 "$RUNS"); do
    WARM_RUNS=${WARM_RUNS:-3} "$here/pull.sh" >"$out/repeat-pull$suffix-$run.txt" 2>&1
    # pull.sh's CSV: target,phase,run,seconds
    awk -F, -v run="$run" 'NF == 4 && $4 ~ /^[0-9.]+$/ { print run "," $1 "," $2 "," $4 }' \
        "$out/pull-times$suffix.csv" >>"$all"
    export BERTH_NO_BUILD=1
done
python3 - "$all" "$CLIENT" <<'PY' | tee "$out/repeat-pull$suffix.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(target, phase):
    per_run = {}
    for r in rows:
        if r["target"] == target and r["phase"] == phase:
            per_run.setdefault(r["run"], []).append(float(r["seconds"]))
    return statistics.median(statistics.median(v) for v in per_run.values()), len(per_run)
print(f"# medians over runs of bench/pull.sh, client {sys.argv[2]} (cold: one pull per run; warm: median per run)")
print(f"{'target':<14}{'cold (s)':>10}{'warm (s)':>10}{'runs':>6}")
result = {}
for t in ("berth", "distribution", "direct"):
    (c, n), (w, _) = med(t, "cold"), med(t, "warm")
    result[t] = (c, w)
    print(f"{t:<14}{c:>10.3f}{w:>10.3f}{n:>6}")
b, d = result["berth"], result["distribution"]
print(f"ratio berth/distribution: cold {b[0]/d[0]:.2f}  warm {b[1]/d[1]:.2f}")
# The same ratio run by run (berth and Distribution pulled back to back in each run): its
# spread says how far a single set of runs can be trusted.
for phase in ("cold", "warm"):
    ratios = []
    for run in sorted({r["run"] for r in rows}):
        t = {target: [float(r["seconds"]) for r in rows if r["run"] == run and r["target"] == target and r["phase"] == phase]
             for target in ("berth", "distribution")}
        if t["berth"] and t["distribution"]:
            ratios.append(statistics.median(t["berth"]) / statistics.median(t["distribution"]))
    if ratios:
        print(f"per-run {phase} ratios: min {min(ratios):.2f}  median {statistics.median(ratios):.2f}  max {max(ratios):.2f}")
PY
