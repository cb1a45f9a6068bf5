#!/usr/bin/env bash
# Set everything up, then open JupyterLab on the guided notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
venv="${CLIPIQA_VENV:-.venv}"
args=()
[ "$(id -u)" = 0 ] && args+=(--allow-root)
exec "$venv/bin/jupyter" lab "${args[@]}" "$@" notebooks/index.ipynb
