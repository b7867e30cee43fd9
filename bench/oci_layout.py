#!/usr/bin/env python3
"""Write a random image as an OCI image layout, for `skopeo copy oci:DIR:latest ...` to push.

Usage: oci_layout.py DIR SIZE_MIB [SIZE_MIB ...]

Every layer is SIZE_MIB MiB of random bytes (labelled uncompressed tar, as seed.py does, so
that copy tools pass the bytes through as they are), plus a small config blob and an OCI image
manifest tagged `latest` in index.json. Prints a JSON summary: manifest digest, config and each
layer's digest and size. Python 3 standard library only.
"""

import hashlib
import json
import os
import sys

CHUNK = 1 << 20
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def write_blob(blobs, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def write_random_blob(blobs, size):
    """Streams SIZE random bytes to a temp file, then names it by its digest."""
    tmp = os.path.join(blobs, "tmp-layer")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    digest = h.hexdigest()
    os.rename(tmp, os.path.join(blobs, digest))
    return {"digest": "sha256:" + digest, "size": size}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    sizes = [int(float(s) * CHUNK) for s in sys.argv[2:]]
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    layers = [dict(write_random_blob(blobs, size), mediaType=LAYER_MEDIA_TYPE) for size in sizes]
    config_body = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
        # unique per call, so two images with equal layer sizes never share a config
        "created": os.urandom(8).hex(),
    }).encode()
    config = dict(write_blob(blobs, config_body), mediaType=CONFIG_MEDIA_TYPE)
    manifest_body = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config,
        "layers": layers,
    }).encode()
    manifest = dict(write_blob(blobs, manifest_body), mediaType=MANIFEST_MEDIA_TYPE)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {
        "schemaVersion": 2,
        "manifests": [dict(manifest, annotations={"org.opencontainers.image.ref.name": "latest"})],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    print(json.dumps({"manifest": manifest, "config": config, "layers": layers}))


if __name__ == "__main__":
    main()
