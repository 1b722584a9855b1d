#!/usr/bin/env bash
# Installs Debian's prometheus package (the `prometheus` server and `promtool`) for the tests that evaluate
# the chart's alert rules and dashboard; it starts nothing by itself. Skips the install if both are present.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
run=()
[ "$(id -u)" -eq 0 ] || run=(sudo)
"${run[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq prometheus >/dev/null
prometheus --version | head -n 1
