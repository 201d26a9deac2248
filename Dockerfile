# The segq image: used by every service of docker-compose.yml and by the Ray cluster configs.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/segq
COPY pyproject.toml README.md ./
COPY cluster ./cluster
COPY jobs ./jobs
COPY workers ./workers
COPY seg_models ./seg_models
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir .
ENV RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
