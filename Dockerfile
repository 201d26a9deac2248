# The segq image: every service of docker-compose.yml, the nodes of cluster/ray-cluster.yaml and
# the pods of cluster/kuberay/ run it. One Dockerfile for CPU and CUDA; TORCH_VARIANT picks the
# PyTorch wheel index (cpu, cu126, ...):
#
#   docker build --build-arg TORCH_VARIANT=cu126 -t registry.example.com/segq:0.1.0-cu126 .   # GPU
#   docker build --build-arg TORCH_VARIANT=cpu -t registry.example.com/segq:0.1.0-cpu .       # CPU only
#
# The CUDA wheels bring their own CUDA libraries: a GPU host needs only the NVIDIA driver and the
# NVIDIA container toolkit. docker-compose.yml and the cluster configs use the cu126 tag.
FROM python:3.11-slim
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}
# redis-cli for checks; rsync and ssh for the Ray cluster launcher (file sync, the head's
# autoscaler reaching the workers); wget for KubeRay's health probes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-tools rsync openssh-client wget \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/segq
# torch first, from the chosen index, so `pip install .` finds torch==2.13.0 already satisfied.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY cluster ./cluster
COPY jobs ./jobs
COPY workers ./workers
COPY seg_models ./seg_models
RUN pip install --no-cache-dir ".[mlflow]"
ENV RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
