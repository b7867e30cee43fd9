#!/usr/bin/env python3
"""Load side of bench/gc.sh (stdlib only).

  load BASE_URL TAGS STOPFILE THREADS OUT   manifest GETs (keep-alive, anonymous tokens as the
                                           401 challenge asks) of the `<repo> <tag>` lines of
                                           TAGS, until STOPFILE exists; one line per request
                                           in OUT: "<start epoch s> <latency ms> <status>"
  stats OUT T0 T1                          p50/p99/max (ms) and count of the requests started
                                           within [T0, T1] and of those outside; errors
"""
import http.client
import json
import os
import random
import re
import statistics
import sys
import threading
import time
import urllib.parse

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def connect(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def token(challenge):
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    query = urllib.parse.urlencode({"service": fields.get("service", ""), "scope": fields.get("scope", "")})
    u = urllib.parse.urlsplit(fields["realm"])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", f"{u.path}?{query}")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return json.loads(body)["token"]


def load(base, tags_path, stop, threads, out_path):
    with open(tags_path) as f:
        tags = [line.split() for line in f if line.strip()]
    lock = threading.Lock()
    out = open(out_path, "w")
    tokens = {}

    def worker(seed):
        rng = random.Random(seed)
        conn = connect(base)
        lines = []
        while not os.path.exists(stop):
            repo, tag = rng.choice(tags)
            path = f"/v2/{repo}/manifests/{tag}"
            for _ in range(2):
                headers = {"Accept": ACCEPT}
                if repo in tokens:
                    headers["Authorization"] = f"Bearer {tokens[repo]}"
                t0 = time.time()
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                except Exception:
                    conn.close()
                    conn = connect(base)
                    status = 0
                latency = (time.time() - t0) * 1000
                if status == 401:
                    tokens[repo] = token(resp.getheader("WWW-Authenticate", ""))
                    continue
                lines.append(f"{t0:.6f} {latency:.3f} {status}\n")
                break
            if len(lines) >= 1000:
                with lock:
                    out.writelines(lines)
                lines = []
        with lock:
            out.writelines(lines)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.close()


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def stats(out_path, t0, t1):
    inside, outside, errors = [], [], 0
    with open(out_path) as f:
        for line in f:
            start, latency, status = line.split()
            if status != "200":
                errors += 1
            (inside if t0 <= float(start) <= t1 else outside).append(float(latency))
    for name, values in (("during_gc", inside), ("outside_gc", outside)):
        print(f"{name} n={len(values)} p50={pct(values, 50):.2f} p99={pct(values, 99):.2f} max={max(values) if values else float('nan'):.2f}")
    print(f"errors {errors}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "load":
        load(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    elif cmd == "stats":
        stats(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)
