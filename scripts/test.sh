#!/usr/bin/env bash
# Set everything up (test extra included), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
venv="${CLIPIQA_VENV:-.venv}"
exec "$venv/bin/python" -m pytest "$@"
