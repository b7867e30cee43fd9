#!/usr/bin/env bash
# Lays out the container image's whole filesystem in DEST for the berth binary BINARY: the
# binary, the shared libraries it loads, the configuration, a CA bundle, a non-root user and
# its data directory. Used by `build.sh image` (offline, buildah) and by the Containerfile
# (multi-stage, in CI), so both build the same image. Run as root (it chowns the data directory).
#   packaging/rootfs.sh BINARY DEST
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binary=$1
rootfs=$2
# Numeric IDs, so Kubernetes' runAsNonRoot can check the image's user.
uid=10001

install -D -m 0755 "$binary" "$rootfs/usr/bin/berth"
# The shared libraries the binary loads (glibc, libgcc_s), at the paths the loader finds them.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
install -D -m 0644 "$here/container.toml" "$rootfs/etc/berth/berth.toml"
# Upstreams are verified against the WebPKI roots built into berth; the shared store's (S3)
# client reads the system's roots, so the image carries the build machine's bundle.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nberth:x:%s:%s:berth:/var/lib/berth:/sbin/nologin\n' \
  "$uid" "$uid" >"$rootfs/etc/passwd"
printf 'root:x:0:\nberth:x:%s:\n' "$uid" >"$rootfs/etc/group"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0750 -o "$uid" -g "$uid" "$rootfs/var/lib/berth"
