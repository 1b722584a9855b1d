#!/usr/bin/env bash
# Builds taoflow's images with podman where no registry is reachable: the Dockerfile's BASE is swapped for a
# python:3.11-equivalent image made here with debootstrap (Debian bookworm's python3.11 in a venv at /opt/venv).
# Elsewhere build with the official image as it is: `podman build -t taoflow:daemon .` (or docker).
#   bash scripts/build-images.sh [TARGET...]    (default: daemon; the train image needs CUDA wheels: GPU nodes)
# Needs root and `apt-get install -y podman runc debootstrap` (scripts/setup-images.sh). Safe to re-run: the base
# image is made once.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("${@:-daemon}")
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}
base=localhost/taoflow-py311-base
if ! podman image exists "$base"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources | head -1)
  started=$(date +%s)
  debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" > /dev/null
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
  rm -f "$rootfs/etc/apt/sources.list"
  # The mirror may be a dated snapshot, and HTTPS may leave through a proxy with its own CA: the host's settings.
  for f in /etc/apt/apt.conf.d/*; do grep -q "Check-Valid-Until" "$f" && cp "$f" "$rootfs/etc/apt/apt.conf.d/"; done
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" sh -c 'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends python3.11 python3.11-venv ca-certificates >/dev/null && update-ca-certificates >/dev/null \
      && python3.11 -m venv /opt/venv && apt-get clean && rm -rf /var/lib/apt/lists/*'
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
  tar --numeric-owner -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' - "$base" > /dev/null
  echo "base image $base made in $(( $(date +%s) - started )) s"
fi
for target in "${targets[@]}"; do
  started=$(date +%s)
  podman build -q --pull=never --build-arg "BASE=$base" --target "$target" -t "localhost/taoflow:$target" . > /dev/null
  size=$(podman image inspect --format '{{.Size}}' "localhost/taoflow:$target")
  echo "image taoflow:$target built in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB"
done
