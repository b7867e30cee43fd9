#!/usr/bin/env bash
# berth's whole test suite, runnable on a fresh Debian machine: installs the real servers and
# clients the tests drive (CNCF Distribution as the upstream, nginx as its blob CDN and as a
# load balancer, Garage as the shared S3 store, skopeo, podman, containerd and dockerd as clients,
# buildah and dpkg for the packages, which tests/packaging.rs installs and runs),
# then runs the gates: rustfmt, clippy with warnings as errors, and every test.
# The tests start every server they use themselves, on free ports of 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
# install [apt-get flags] PACKAGE...
install() {
  echo "installing: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
# The .deb's postinst makes its system user with adduser.
command -v adduser >/dev/null 2>&1 || missing+=(adduser)
if ((${#missing[@]})); then
  install "${missing[@]}"
fi
# dockerd only pulls here; its recommends (apparmor, iptables, needrestart, ...) are not needed.
command -v dockerd >/dev/null 2>&1 || install --no-install-recommends docker.io

# Garage (a distributed S3 store written in Rust) is the shared store of the multi-node tests.
# Debian does not package it, so it is built from crates.io once per machine.
if ! command -v garage >/dev/null 2>&1; then
  echo "installing garage 2.5.0 with cargo: this takes about 20 min, once per machine"
  cargo install garage --locked --version 2.5.0
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
