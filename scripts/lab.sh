#!/usr/bin/env bash
# Set everything up, then open JupyterLab on the guided notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh lab  # the lab extra: JupyterLab and Jupytext
venv="${CLIPIQA_VENV:-.venv}"
# Kernels that import torch before clipiqa still get clipiqa's short OpenMP spin (clipiqa/threads.py; README
# "A class on one server"), unless a wait policy was chosen here already.
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}${KMP_BLOCKTIME:-}" ]; then
  export GOMP_SPINCOUNT=10000 KMP_BLOCKTIME=1
fi
args=()
[ "$(id -u)" = 0 ] && args+=(--allow-root)
exec "$venv/bin/jupyter" lab "${args[@]}" "$@" notebooks/index.ipynb
