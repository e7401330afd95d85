# syntax=docker/dockerfile:1.7
# TorchServe 0.12.0 on a GPU node, serving the .mar archives that Gatehouse builds
# (apps/registry/packaging.py packs apps/registry/torchserve_handler.py, encoding.py and
# architectures.py into each archive) and copies into the shared model store.
#
#   docker build -f deploy/docker/torchserve-gpu.Dockerfile -t gatehouse/torchserve-gpu:0.1.0 .
#
# CUDA: pinned by the base image below (CUDA 12.8.1 + cuDNN runtime, Ubuntu 24.04) and by the
# torch wheel (torch 2.13.0 built for cu128, which also carries its own CUDA user-space
# libraries). Needs an NVIDIA driver >= 570 on the node and the NVIDIA container toolkit /
# device plugin. Python: 3.12 from Ubuntu 24.04; the handler's modules are plain torch/numpy
# code (tested on 3.11 only: see docs/operations.md, "What is not verified").
# TorchServe is archived upstream (0.12.0 is final, no security patches): it runs as an
# unprivileged user, with read-only access to the model store, behind a network boundary.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0+cu128

# --- builder: a venv with torch (CUDA), torchserve and what the handler imports ----------------
FROM ${CUDA_IMAGE} AS builder
ARG TORCH_INDEX_URL
ARG TORCH_VERSION
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torchserve/venv
ENV PATH=/opt/torchserve/venv/bin:$PATH
# torch first, from the CUDA index and pinned; then TorchServe and the handler's imports with
# the versions of deploy/docker/constraints.txt (pyyaml is an undeclared dependency of the
# TorchServe worker; numpy is imported by encoding.py).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install torchserve==0.12.0 pyyaml==6.0.4 numpy==2.4.6 psutil==7.2.2 packaging==26.4 \
    && pip check \
    && python -c "import torch, sys; sys.exit(0 if torch.__version__ == '${TORCH_VERSION}' else 'torch was replaced: ' + torch.__version__)"

# --- runtime ---------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS torchserve-gpu
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && java -version
# uid 10001 as in the Gatehouse images: key_file.json (mode 0600) on the shared keys volume
# must be readable by Gatehouse (TORCHSERVE_KEY_FILE). The model store is mounted read-only.
RUN groupadd --system --gid 10001 torchserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/torchserve --shell /usr/sbin/nologin torchserve \
    && mkdir -p /var/lib/torchserve/keys /var/lib/torchserve/tmp /var/lib/torchserve/logs /srv/gatehouse/model_store \
    && chown -R 10001:10001 /var/lib/torchserve /srv/gatehouse
COPY --from=builder /opt/torchserve/venv /opt/torchserve/venv
COPY --chown=root:root deploy/docker/torchserve/config.properties /etc/torchserve/config.properties
COPY --chown=root:root deploy/torchserve/log4j2.xml /etc/torchserve/log4j2.xml
COPY --chown=root:root deploy/docker/torchserve/healthcheck.py /usr/local/bin/torchserve-healthcheck
ENV PATH=/opt/torchserve/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TEMP=/var/lib/torchserve/tmp \
    TMPDIR=/var/lib/torchserve/tmp \
    LOG_LOCATION=/var/lib/torchserve/logs \
    METRICS_LOCATION=/var/lib/torchserve/logs \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# key_file.json is written to the working directory: the shared keys volume.
WORKDIR /var/lib/torchserve/keys
USER 10001:10001
EXPOSE 8080 8081 8082
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
    CMD ["python3", "/usr/local/bin/torchserve-healthcheck"]
# --foreground: the JVM stays the container's main child; tini-like reaping is done by
# "docker run --init" / the kubelet's pause container. --ncs: no config snapshots.
CMD ["torchserve", "--start", "--foreground", "--ncs", \
     "--ts-config", "/etc/torchserve/config.properties", \
     "--log-config", "/etc/torchserve/log4j2.xml", \
     "--model-store", "/srv/gatehouse/model_store"]
