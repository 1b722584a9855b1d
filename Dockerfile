# syntax=docker/dockerfile:1
# taoflow images. `daemon` (default): the service core with the Kafka, S3 and Delta sources, no torch.
# `train`: adds the training stack (CUDA torch from PyPI's default index, TRL, PEFT, vLLM) for GPU nodes.
# `taoflow run` starts rounds as child processes: a daemon that trains runs the `train` image
# (the daemon process itself still never imports torch); the `daemon` image ingests and serves the API.
#   docker build -t taoflow:daemon .
#   docker build --target train -t taoflow:train .
# BASE: any image with Python 3.11, pip and useradd on PATH (scripts/build-images.sh builds with one it makes
# itself where no registry is reachable).
ARG BASE=python:3.11-slim
FROM ${BASE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin taoflow
WORKDIR /home/taoflow

FROM base AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon daemon
COPY connectors connectors
COPY policies policies
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM base AS daemon
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/taoflow-*.whl)[ingest]" && rm -rf /wheels
# The image's defaults are a config file, not environment variables: a config mounted over it (the chart
# mounts its ConfigMap at /etc/taoflow) replaces them, and a TAOFLOW_ variable or a flag still overrides.
# The gateway keeps its spool and route cache in /var/spool/taoflow (the root filesystem may be read-only).
RUN mkdir -p /etc/taoflow /var/lib/taoflow /var/spool/taoflow && chown 10001 /var/lib/taoflow /var/spool/taoflow \
 && printf 'storage:\n  state_dir: /var/lib/taoflow\ndaemon:\n  admin_host: 0.0.0.0\ngateway:\n  host: 0.0.0.0\n  capture:\n    spool_dir: /var/spool/taoflow\n' \
    > /etc/taoflow/taoflow.yaml
USER 10001
VOLUME ["/var/lib/taoflow", "/var/spool/taoflow"]
# 8470: the daemon's admin API; 8080: `taoflow gateway` (same image, args: gateway --config ...)
EXPOSE 8470 8080
ENTRYPOINT ["taoflow"]
CMD ["run", "--config", "/etc/taoflow/taoflow.yaml"]

FROM daemon AS train
# vLLM's offline engine for generate.backend: vllm; set to "" to leave it out (generate.backend: fleet
# or transformers need none).
ARG VLLM_SPEC="vllm==0.32.0"
USER root
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/taoflow-*.whl)[ingest,train]" ${VLLM_SPEC:+"$VLLM_SPEC"} && rm -rf /wheels
USER 10001
