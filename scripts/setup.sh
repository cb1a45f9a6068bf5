#!/usr/bin/env bash
# Create .venv (or $CLIPIQA_VENV) and install this repository into it; re-installs only when pyproject.toml
# changed. Usage: scripts/setup.sh [test]   ("test" adds the test extra and Debian's Chromium for browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CLIPIQA_VENV:-.venv}"
extra="${1:-}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
spec="."
[ "$extra" = "test" ] && spec=".[test]"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extra"
stamp="$venv/.clipiqa-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing clipiqa$([ -n "$extra" ] && echo "[$extra]") into $venv (first time: a few minutes)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
  echo "$want" > "$stamp"
fi
if [ "$extra" = "test" ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's chromium for the browser tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser tests will be skipped" >&2
fi
