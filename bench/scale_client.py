#!/usr/bin/env python3
"""Client side of bench/scale.sh (stdlib only).

  start BASE_URL PROBE_PATH TIMEOUT -- CMD...   spawn CMD (berth), poll GET BASE_URL+PROBE_PATH
                                               until it answers 200; print "PID SECONDS"
                                               (seconds from spawn to the first 200). The child
                                               keeps running after this exits.
  latency BASE_URL DIGESTS N                    N sequential cache-hit GETs each of the manifest
                                               and of small blobs (keep-alive); print
                                               "manifest_p50 manifest_p99 blob_p50 blob_p99" in ms
  load BASE_URL DIGESTS SECONDS THREADS         mixed load: small blob GETs, manifest GETs and
                                               HEADs, and now and then a whole large blob; print
                                               "requests errors"
  gauge BASE_URL NAME                           a value from /metrics (0 when absent)
  wait_gauge BASE_URL NAME MAX TIMEOUT          seconds until the gauge is at most MAX
                                               (polled every 50 ms), or "timeout"

DIGESTS is the list scale_data printed: "manifest <d>", "large <d>", "small <d>" lines.
"""
import http.client
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

REPO = "library/scale"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def read_digests(path, newest_half=False):
    kinds = {"manifest": [], "large": [], "small": []}
    with open(path) as f:
        for line in f:
            kind, digest = line.split()
            kinds[kind].append(digest)
    if newest_half:
        # eviction takes the oldest first: probe what it will not touch
        kinds["small"] = kinds["small"][len(kinds["small"]) // 2:]
    return kinds


def connect(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def request(conn, method, path, headers=None):
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    n = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
    return r.status, n


def start(base, probe, timeout, cmd):
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(cmd_log(cmd), "ab"), start_new_session=True)
    while time.monotonic() - t0 < timeout:
        if child.poll() is not None:
            print(f"{child.pid} exited")
            return
        try:
            conn = connect(base)
            status, _ = request(conn, "GET", probe)
            conn.close()
            if status == 200:
                print(f"{child.pid} {time.monotonic() - t0:.3f}")
                return
        except OSError:
            pass
        time.sleep(0.005)
    print(f"{child.pid} timeout")


def cmd_log(cmd):
    # berth's stderr goes next to its config file
    config = cmd[cmd.index("--config") + 1]
    return config.rsplit(".", 1)[0] + ".log"


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def latency(base, digests, n):
    kinds = read_digests(digests, newest_half=True)
    conn = connect(base)
    manifest = f"/v2/{REPO}/manifests/{kinds['manifest'][0]}"
    times = {"manifest": [], "blob": []}
    for i in range(n):
        for kind, path, headers in (
            ("manifest", manifest, {"Accept": MANIFEST_ACCEPT}),
            ("blob", f"/v2/{REPO}/blobs/{random.choice(kinds['small'])}", {}),
        ):
            t = time.monotonic()
            status, _ = request(conn, "GET", path, headers)
            times[kind].append(time.monotonic() - t)
            if status != 200:
                sys.exit(f"latency: {path} answered {status}")
    print(f"{statistics.median(times['manifest']) * 1000:.2f} {pct(times['manifest'], 0.99):.2f} "
          f"{statistics.median(times['blob']) * 1000:.2f} {pct(times['blob'], 0.99):.2f}")


def load(base, digests, seconds, threads):
    kinds = read_digests(digests)
    manifest = f"/v2/{REPO}/manifests/{kinds['manifest'][0]}"
    counts = {"requests": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(seed):
        rng = random.Random(seed)
        conn = connect(base)
        done = errors = 0
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.6:
                method, path, h = "GET", f"/v2/{REPO}/blobs/{rng.choice(kinds['small'])}", {}
            elif roll < 0.75:
                method, path, h = "HEAD", f"/v2/{REPO}/blobs/{rng.choice(kinds['small'])}", {}
            elif roll < 0.99:
                method, path, h = "GET", manifest, {"Accept": MANIFEST_ACCEPT}
            else:
                method, path, h = "GET", f"/v2/{REPO}/blobs/{rng.choice(kinds['large'])}", {}
            try:
                status, _ = request(conn, method, path, h)
                if status != 200:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn = connect(base)
            done += 1
        with lock:
            counts["requests"] += done
            counts["errors"] += errors

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(f"{counts['requests']} {counts['errors']}")


def read_gauge(base, name):
    conn = connect(base)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    for line in body.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return 0


def gauge(base, name):
    print(int(read_gauge(base, name)))


def wait_gauge(base, name, limit, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if read_gauge(base, name) <= limit:
            print(f"{time.monotonic() - t0:.2f}")
            return
        time.sleep(0.05)
    print("timeout")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "start":
        sep = args.index("--")
        start(args[0], args[1], float(args[2]), args[sep + 1:])
    elif cmd == "latency":
        latency(args[0], args[1], int(args[2]))
    elif cmd == "load":
        load(args[0], args[1], float(args[2]), int(args[3]))
    elif cmd == "gauge":
        gauge(args[0], args[1])
    elif cmd == "wait_gauge":
        wait_gauge(args[0], args[1], float(args[2]), float(args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
