#!/usr/bin/env bash
# Adds Ray (Data, Train and the Jobs API) to .venv, for round.runner ray: the tests start a real cluster on
# loopback whose jobs run this venv's taoflow. In production the cluster has its own image (helm/taoflow/README.md).
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
.venv/bin/python -m pip --disable-pip-version-check -q install -e ".[train,ingest,cluster,ray,dev]" torch==2.13.0
