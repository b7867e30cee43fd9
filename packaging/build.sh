#!/usr/bin/env bash
# Builds berth's packages, offline:
#   packaging/build.sh deb     a Debian package, with dpkg-deb
#   packaging/build.sh image   an OCI image from scratch, with buildah, as an oci-archive tar
# The last line on stdout is the path of what was built; progress goes to stderr.
#
# Environment:
#   BERTH_BINARY   package this berth binary instead of building one with
#                  `cargo build --release --locked` (the tests package their debug build)
#   BERTH_OUT      where to write the package (default: target/packages)
#
# The image needs root for buildah's storage; run as another user, the script runs itself
# again under `buildah unshare` (a user namespace with subordinate IDs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
kind=${1:-}
case $kind in
  deb) command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb is missing" >&2; exit 1; } ;;
  image)
    command -v buildah >/dev/null || { echo "build.sh: buildah is missing (apt-get install buildah)" >&2; exit 1; }
    if [ "$(id -u)" != 0 ]; then exec buildah unshare -- "$0" "$@"; fi
    ;;
  *) echo "usage: $0 deb|image" >&2; exit 2 ;;
esac

out=${BERTH_OUT:-$root/target/packages}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -n "${BERTH_BINARY:-}" ]; then
  binary=$BERTH_BINARY
else
  (cd "$root" && cargo build --release --locked >&2)
  binary=$root/target/release/berth
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Packages carry no debug info: a release build has none, a debug build's is dropped here.
# Symbols stay, so panics and profiles name their functions.
strip --strip-debug -o "$work/berth" "$binary"
version=$("$work/berth" --version | awk '{print $2}')
arch=$(dpkg --print-architecture 2>/dev/null || true)
if [ -z "$arch" ]; then
  case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
fi

# The glibc version the binary needs: the newest GLIBC_x.y symbol version it references.
glibc_needed() {
  objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1
}

build_deb() {
  local pkg=$work/deb
  install -D -m 0755 "$work/berth" "$pkg/usr/bin/berth"
  install -D -m 0644 "$here/berth.toml" "$pkg/etc/berth/berth.toml"
  install -D -m 0644 "$here/berth.service" "$pkg/lib/systemd/system/berth.service"
  local doc=$pkg/usr/share/doc/berth
  install -D -m 0644 "$root/LICENSE" "$doc/copyright"
  install -m 0644 "$root/config/berth.toml" "$doc/berth.toml.example"
  install -m 0644 "$root/docs/deploy.md" "$doc/deploy.md"
  install -m 0644 "$root/README.md" "$doc/README.md"

  install -d "$pkg/DEBIAN"
  install -m 0755 "$here/deb/postinst" "$here/deb/prerm" "$here/deb/postrm" "$pkg/DEBIAN/"
  echo /etc/berth/berth.toml >"$pkg/DEBIAN/conffiles"
  cat >"$pkg/DEBIAN/control" <<EOF
Package: berth
Version: $version
Architecture: $arch
Maintainer: ${BERTH_MAINTAINER:-berth developers <berth@users.noreply.github.com>}
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: libc6 (>= $(glibc_needed "$work/berth")), libgcc-s1, adduser
Section: net
Priority: optional
Homepage: https://github.com/berth-registry/berth
Description: registry mirror daemon: pull-through cache for OCI and Docker registries
 berth mirrors Docker Hub and other OCI registries for dockerd, containerd,
 podman and skopeo: it streams what clients pull while caching it on disk,
 verifies every digest, and serves later pulls from its cache, also when
 upstream is slow or gone. With its token service it is also a private
 registry for pushed images. Runs as the systemd service berth.
EOF
  local deb=$out/berth_${version}_${arch}.deb
  # gzip: on a loaded build machine xz costs minutes for a few MB less.
  dpkg-deb --root-owner-group -Zgzip -z6 --build "$pkg" "$deb" >&2
  echo "$deb"
}

build_image() {
  local rootfs=$work/rootfs
  "$here/rootfs.sh" "$work/berth" "$rootfs"
  local uid
  uid=$(awk -F: '$1 == "berth" { print $3 }' "$rootfs/etc/passwd")

  # A private, throwaway store: nothing is left in the machine's image store.
  local b=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
  local ctr mnt
  ctr=$("${b[@]}" from --quiet scratch)
  mnt=$("${b[@]}" mount "$ctr")
  cp -a "$rootfs/." "$mnt/"
  "${b[@]}" umount "$ctr" >/dev/null
  "${b[@]}" config \
    --os linux --arch "$arch" \
    --user "$uid:$uid" \
    --workingdir /var/lib/berth \
    --env BERTH_CONFIG=/etc/berth/berth.toml \
    --entrypoint '["/usr/bin/berth"]' \
    --cmd serve \
    --port 5000/tcp \
    --volume /var/lib/berth \
    --created-by "packaging/build.sh image" \
    --label org.opencontainers.image.title=berth \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label org.opencontainers.image.source=https://github.com/berth-registry/berth \
    "$ctr"
  "${b[@]}" commit --quiet --format oci --rm "$ctr" "localhost/berth:$version" >&2
  local archive=$out/berth_${version}_${arch}.oci.tar
  rm -f "$archive"
  "${b[@]}" push --quiet "localhost/berth:$version" "oci-archive:$archive:berth:$version" >&2
  echo "$archive"
}

"build_$kind"
