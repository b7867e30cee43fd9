#!/usr/bin/env python3
"""Count the requests in a slice of a Distribution registry's access log, per client.

Usage: upstream_log.py LOG START_LINE END_LINE [--json OUT.json]

Reads lines START_LINE..END_LINE-1 (0-based, as counted by `wc -l` before/after a phase) of the
upstream registry's log, keeps the access-log lines (gorilla combined format:
`127.0.0.1 - - [date] "GET /uri HTTP/1.1" status size "referer" "user-agent"`) and attributes
each request by User-Agent:

    berth/...                        berth
    Go-http-client/...               distribution (the Distribution proxy)
    skopeo/..., containers/...,
    containerd/...                   direct
    curl/..., berth-bench-seed       harness (readiness probes, seeding)
    anything else                    other

Prints a JSON object:
    {"<who>": {"blob_gets": {"sha256:...": n}, "blob_bytes": {"sha256:...": bytes},
               "requests": {"GET manifest": n, "HEAD manifest": n, "HEAD blob": n, "GET /v2/": n, ...},
               "total": n, "statuses": {"200": n, ...}}}
`requests` counts every request (blob GETs too, as "GET blob"). Python 3 stdlib only.
"""

import collections
import json
import re
import sys

ACC = re.compile(r'^\S+ - \S+ \[[^\]]*\] "(\w+) (\S+) [^"]*" (\d+) (\S+) "[^"]*" "([^"]*)"')
BLOB = re.compile(r"/blobs/(sha256:[0-9a-f]{64})$")


def who(ua):
    if ua.startswith("berth/"):
        return "berth"
    if ua.startswith("Go-http-client"):
        return "distribution"
    if ua.startswith(("skopeo/", "containers/", "containerd/", "berth-bench-client")):
        return "direct"
    if ua.startswith("curl/") or ua == "berth-bench-seed":
        return "harness"
    return "other"


def kind(method, uri):
    path = uri.split("?", 1)[0]
    if path == "/v2/":
        k = "/v2/"
    elif "/blobs/uploads" in path:
        k = "upload"
    elif "/blobs/" in path:
        k = "blob"
    elif "/manifests/" in path:
        k = "manifest"
    elif "/tags/" in path:
        k = "tags"
    else:
        k = path
    return f"{method} {k}"


def main():
    args = sys.argv[1:]
    out = None
    if "--json" in args:
        i = args.index("--json")
        out = args[i + 1]
        del args[i : i + 2]
    log, start, end = args[0], int(args[1]), int(args[2])
    with open(log, errors="replace") as f:
        lines = f.read().split("\n")[start:end]
    res = collections.defaultdict(
        lambda: {"blob_gets": collections.Counter(), "blob_bytes": collections.Counter(),
                 "requests": collections.Counter(), "statuses": collections.Counter(), "total": 0}
    )
    for line in lines:
        m = ACC.match(line)
        if not m:
            continue
        method, uri, status, size, ua = m.groups()
        r = res[who(ua)]
        r["total"] += 1
        r["requests"][kind(method, uri)] += 1
        r["statuses"][status] += 1
        bm = BLOB.search(uri.split("?", 1)[0])
        if method == "GET" and bm:
            r["blob_gets"][bm.group(1)] += 1
            if size.isdigit():
                r["blob_bytes"][bm.group(1)] += int(size)
    text = json.dumps(res, indent=1, sort_keys=True)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
