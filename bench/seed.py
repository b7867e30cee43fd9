#!/usr/bin/env python3
"""Generate a random OCI image and push it to a registry over plain HTTP.

Usage: seed.py REGISTRY_URL REPO TAG SIZE_MIB [SIZE_MIB ...] [--json OUT.json] [--workdir DIR]

Every layer is SIZE_MIB MiB of random bytes, pushed with a monolithic upload
(POST /v2/<repo>/blobs/uploads/ then PUT <location>?digest=...), followed by a small
config blob (architecture/os/rootfs) and an OCI image manifest under TAG.

Layers are labelled application/vnd.oci.image.layer.v1.tar: skopeo copying to a `dir:`
destination neither unpacks nor decompresses layers, so random bytes are fine, and the
"uncompressed" label keeps copy tools from trying to treat them as gzip.

Prints (and with --json writes) a JSON summary: manifest digest and each blob's digest/size.
Python 3 standard library only.
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.parse

CHUNK = 1 << 20
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


class Registry:
    def __init__(self, base_url):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme != "http":
            sys.exit(f"seed.py: only plain http registries are supported, got {base_url}")
        self.host = u.hostname
        self.port = u.port or 80

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300, blocksize=CHUNK)
        try:
            hdrs = {"User-Agent": "berth-bench-seed"}
            hdrs.update(headers or {})
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    def blob_exists(self, repo, digest):
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        return status == 200

    def push_blob(self, repo, digest, size, body):
        """Monolithic upload; body is bytes or a binary file object positioned at 0."""
        if self.blob_exists(repo, digest):
            return
        status, headers, data = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}
        )
        if status != 202:
            raise SystemExit(f"seed.py: POST upload for {repo}: HTTP {status}: {data[:500]!r}")
        location = headers.get("Location")
        if not location:
            raise SystemExit("seed.py: upload response without Location")
        loc = urllib.parse.urlsplit(location)
        path = loc.path
        query = loc.query
        query = (query + "&" if query else "") + urllib.parse.urlencode({"digest": digest})
        status, _, data = self.request(
            "PUT",
            f"{path}?{query}",
            body=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            },
        )
        if status != 201:
            raise SystemExit(f"seed.py: PUT blob {digest}: HTTP {status}: {data[:500]!r}")

    def push_manifest(self, repo, ref, manifest_bytes, media_type):
        status, headers, data = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            body=manifest_bytes,
            headers={"Content-Type": media_type, "Content-Length": str(len(manifest_bytes))},
        )
        if status != 201:
            raise SystemExit(f"seed.py: PUT manifest {repo}:{ref}: HTTP {status}: {data[:500]!r}")
        return headers.get("Docker-Content-Digest")


def random_layer(path, size):
    """Write `size` random bytes to `path`; return the sha256 digest."""
    h = hashlib.sha256()
    left = size
    with open(path, "wb") as f:
        while left > 0:
            chunk = os.urandom(min(CHUNK, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("registry", help="e.g. http://127.0.0.1:5000")
    ap.add_argument("repo", help="e.g. library/benchimg")
    ap.add_argument("tag")
    ap.add_argument("sizes", nargs="+", type=float, help="layer sizes in MiB")
    ap.add_argument("--json", help="write the summary here as well")
    ap.add_argument("--workdir", help="where layer files are generated (default: a temp dir)")
    args = ap.parse_args()

    reg = Registry(args.registry)
    t0 = time.monotonic()
    layers = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for i, mib in enumerate(args.sizes):
            size = int(mib * (1 << 20))
            path = os.path.join(tmp, f"layer{i}")
            digest = random_layer(path, size)
            with open(path, "rb") as f:
                reg.push_blob(args.repo, digest, size, f)
            os.unlink(path)
            layers.append({"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size})

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        "history": [{"created_by": f"berth bench seed layer {i}"} for i in range(len(layers))],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    reg.push_blob(args.repo, config_digest, len(config_bytes), config_bytes)

    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    returned = reg.push_manifest(args.repo, args.tag, manifest_bytes, MANIFEST_MEDIA_TYPE)
    if returned and returned != manifest_digest:
        raise SystemExit(f"seed.py: registry reports manifest digest {returned}, expected {manifest_digest}")

    summary = {
        "registry": args.registry,
        "repo": args.repo,
        "tag": args.tag,
        "manifest_digest": manifest_digest,
        "config": {"digest": config_digest, "size": len(config_bytes)},
        "layers": [{"digest": l["digest"], "size": l["size"]} for l in layers],
        "seconds": round(time.monotonic() - t0, 3),
    }
    out = json.dumps(summary, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")
    print(out)


if __name__ == "__main__":
    main()
