#!/usr/bin/env bash
# Installs what builds and runs taoflow's images where no registry is reachable (tests/images/test_images.py,
# scripts/build-images.sh): Debian's podman, runc (crun fails under hybrid cgroups) and debootstrap (the base image).
# Skips the install if all three are present.
set -euo pipefail
if command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; then
  exit 0
fi
run=()
[ "$(id -u)" -eq 0 ] || run=(sudo)
"${run[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq podman runc debootstrap >/dev/null
podman --version
