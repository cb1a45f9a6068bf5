#!/usr/bin/env bash
# Create .venv (or $CLIPIQA_VENV) and install this repository into it. Usage: scripts/setup.sh [test]
# ("test" adds the test extra and Debian's Chromium for browser tests).
#
# Installs only when needed: the stamp file records the pyproject.toml hash and every extra installed so far,
# and an install always keeps the extras already there. So once both `make lab` and `make test` have run,
# switching between them never reinstalls (never needs the network); only a changed pyproject.toml does.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CLIPIQA_VENV:-.venv}"
extra="${1:-}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
hash="$(sha256sum < pyproject.toml | cut -c1-16)"
stamp="$venv/.clipiqa-install"
have_hash="" have_extras=""
if [ -f "$stamp" ]; then
  read -r have_hash have_extras < "$stamp" || true
  case "$have_hash" in *-test) have_hash="${have_hash%-test}"; have_extras="test" ;; *-) have_hash="${have_hash%-}" ;; esac
fi
extras="$have_extras"  # the extras to have installed: those already there plus the one asked for
if [ -n "$extra" ] && [[ " $extras " != *" $extra "* ]]; then extras="${extras:+$extras }$extra"; fi
# pip's and setuptools' own output (hundreds of lines of build warnings) goes to a log; the screen gets one line
# per step, and the log's tail only when a step fails.
log="$venv/.clipiqa-install.log"
run_logged() {
  "$@" >>"$log" 2>&1 || { echo "setup: failed: $* -- the last lines of $log:" >&2; tail -n 40 "$log" >&2; exit 1; }
}
if [ "$have_hash" != "$hash" ] || [ "$extras" != "$have_extras" ]; then
  spec="."
  [ -n "$extras" ] && spec=".[${extras// /,}]"
  : > "$log"
  echo "setup: installing clipiqa${extras:+[$extras]} into $venv (first time: a few minutes; details in $log)" >&2
  echo "setup: 1/2 pip" >&2
  run_logged "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  echo "setup: 2/2 clipiqa and its dependencies (torch is the large one)" >&2
  run_logged "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
  echo "$hash $extras" > "$stamp"
  echo "setup: done" >&2
fi
if [ "$extra" = "test" ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's chromium for the browser tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser tests will be skipped" >&2
fi
