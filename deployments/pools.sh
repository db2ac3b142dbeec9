#!/usr/bin/env sh
# Create the work pools the deployments in deploy.py use, against the server in PREFECT_API_URL.
#   GPU_POOL_TYPE=process|docker|kubernetes (default process)   GPU_SLOTS: GPUs behind the pool (default 1)
# The gpu pool's concurrency limit is its number of GPUs, so each GPU runs one model at a time.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefect work-pool create cpu --type process --overwrite
case "${GPU_POOL_TYPE:-process}" in
  process) prefect work-pool create gpu --type process --overwrite ;;
  docker) prefect work-pool create gpu --type docker --base-job-template "$here/pools/docker-gpu.json" --overwrite ;;
  kubernetes)
    prefect work-pool create gpu --type kubernetes --base-job-template "$here/pools/kubernetes-gpu.json" --overwrite ;;
  *) echo "GPU_POOL_TYPE must be process, docker or kubernetes" >&2; exit 2 ;;
esac
prefect work-pool set-concurrency-limit gpu "${GPU_SLOTS:-1}"
