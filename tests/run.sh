#!/usr/bin/env bash
# berth's whole test suite, runnable on a fresh Debian machine: installs the real servers and
# clients the tests drive (CNCF Distribution as the upstream, nginx as its blob CDN, skopeo,
# podman and containerd as clients),
# then runs the gates: rustfmt, clippy with warnings as errors, and every test.
# The tests start every server they use themselves, on free ports of 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
