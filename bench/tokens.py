#!/usr/bin/env python3
"""Token flood: COUNT anonymous tokens, each asking for SCOPES repositories with NAME_LEN-character
names, each then presented once on GET /v2/ (so berth verifies and caches it). Prints the token
size and how many were accepted. Standard library only; THREADS connections in parallel."""
import argparse
import http.client
import json
import threading
import urllib.parse

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("--count", type=int, default=8500)
p.add_argument("--scopes", type=int, default=64)
p.add_argument("--name-len", type=int, default=200)
p.add_argument("--threads", type=int, default=8)
args = p.parse_args()

lock = threading.Lock()
stats = {"ok": 0, "refused": 0, "bytes": 0}
next_i = [0]


def work():
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
    while True:
        with lock:
            i = next_i[0]
            next_i[0] += 1
        if i >= args.count:
            return
        query = urllib.parse.urlencode(
            [("service", "berth")]
            + [("scope", f"repository:library/{i:08}{s:04}{'x' * args.name_len}:pull") for s in range(args.scopes)]
        )
        conn.request("GET", "/token?" + query)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            with lock:
                stats["refused"] += 1
            continue
        token = json.loads(body)["token"]
        conn.request("GET", "/v2/", headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        r.read()
        with lock:
            stats["ok" if r.status == 200 else "refused"] += 1
            stats["bytes"] = len(token)


threads = [threading.Thread(target=work) for _ in range(args.threads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"tokens accepted {stats['ok']}, refused {stats['refused']}, token size {stats['bytes']} bytes")
