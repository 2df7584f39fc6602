#!/usr/bin/env bash
# Create what the lwst deployments need on a Prefect server (idempotent):
#   - a process work pool ($LWST_WORK_POOL, default "lwst") for `prefect worker start`;
#   - a tag concurrency limit "gpu" ($LWST_GPU_SLOTS, default 1): at most that many
#     stylize-item tasks (tagged "gpu") hold the accelerator at once, across all workers.
# Needs PREFECT_API_URL pointing at the server (e.g. http://127.0.0.1:4200/api).
set -euo pipefail
pool="${LWST_WORK_POOL:-lwst}"
slots="${LWST_GPU_SLOTS:-1}"

if prefect work-pool inspect "$pool" >/dev/null 2>&1; then
  echo "work pool $pool exists"
else
  prefect work-pool create --type process "$pool"
fi
prefect concurrency-limit create gpu "$slots"
