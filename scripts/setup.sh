#!/usr/bin/env bash
# Create .venv (or $CLIPIQA_VENV) and install this repository into it. Usage: scripts/setup.sh [EXTRA]
# ("lab", as `make lab` runs it: JupyterLab and Jupytext; "test": the test extra, which pulls every other extra,
# and Debian's Chromium for browser tests; no EXTRA: the core only).
#
# Installs only when needed: the stamp file records the pyproject.toml hash and every extra installed so far,
# and an install always keeps the extras already there. So once both `make lab` and `make test` have run,
# switching between them never reinstalls (never needs the network); only a changed pyproject.toml does.
#
# torch and torchvision (the versions pinned in pyproject.toml) come from PyTorch's CPU wheel index when this
# machine has no NVIDIA GPU (`nvidia-smi -L` fails or is absent): a few hundred MB instead of the 2.3 GB of CUDA
# wheels PyPI serves on Linux; when that index cannot be reached (a machine that sees only its own package mirror),
# from pip's own indexes. CLIPIQA_TORCH=cpu|cuda|auto (default auto), or the URL of another wheel index
# (e.g. https://download.pytorch.org/whl/cu126), overrides the choice. It applies when torch is installed: to switch
# an existing .venv, delete it. CLIPIQA_SETUP_DRY_RUN=1 prints the torch choice and the install commands only.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CLIPIQA_VENV:-.venv}"
extra="${1:-}"
python="${PYTHON:-python3}"
dry_run="${CLIPIQA_SETUP_DRY_RUN:-}"
[ -x "$venv/bin/python" ] || [ "$dry_run" = 1 ] || "$python" -m venv "$venv"
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
  if [ "$dry_run" = 1 ]; then echo "would run: $*"; return; fi
  "$@" >>"$log" 2>&1 || { echo "setup: failed: $* -- the last lines of $log:" >&2; tail -n 40 "$log" >&2; exit 1; }
}
cpu_index="https://download.pytorch.org/whl/cpu"
torch_index="" torch_why=""  # the wheel index for torch and torchvision ("" = PyPI's default: CUDA on Linux), and why
case "${CLIPIQA_TORCH:-auto}" in
  cpu) torch_index="$cpu_index" torch_why="CPU wheels (CLIPIQA_TORCH=cpu)" ;;
  cuda) torch_why="CUDA wheels from PyPI (CLIPIQA_TORCH=cuda)" ;;
  http://*|https://*) torch_index="$CLIPIQA_TORCH" torch_why="wheels from $CLIPIQA_TORCH (CLIPIQA_TORCH)" ;;
  auto)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      torch_why="CUDA wheels from PyPI (nvidia-smi found a GPU; CLIPIQA_TORCH=cpu to change)"
    else
      torch_index="$cpu_index"
      torch_why="CPU wheels, no NVIDIA GPU here (no working nvidia-smi; CLIPIQA_TORCH=cuda to change)"
      # a machine that reaches only its own package mirror (pip's configured indexes) cannot use PyTorch's index:
      # then the pinned wheels come from pip's own indexes, as with CLIPIQA_TORCH=cuda
      probe="$venv/bin/python"; [ -x "$probe" ] || probe="$python"
      if ! "$probe" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/', timeout=8)" \
           "$cpu_index" >/dev/null 2>&1; then
        torch_index=""
        torch_why="pip's own indexes: no NVIDIA GPU here, but PyTorch's CPU wheel index ($cpu_index) cannot be reached"
      fi
    fi ;;
  *) echo "setup: CLIPIQA_TORCH is '$CLIPIQA_TORCH'; set it to cpu, cuda, auto or a wheel index URL" >&2; exit 2 ;;
esac
torch_pins=()  # torch==X torchvision==Y exactly as pyproject.toml pins them
while read -r pin; do torch_pins+=("$pin"); done < <(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
if [ "$have_hash" != "$hash" ] || [ "$extras" != "$have_extras" ] || [ "$dry_run" = 1 ]; then
  spec="."
  [ -n "$extras" ] && spec=".[${extras// /,}]"
  [ "$dry_run" = 1 ] || : > "$log"
  echo "setup: installing clipiqa${extras:+[$extras]} into $venv (first time: a few minutes; details in $log)" >&2
  echo "setup: 1/3 pip" >&2
  run_logged "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  echo "setup: 2/3 ${torch_pins[*]}: $torch_why" >&2
  run_logged "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    ${torch_index:+--index-url "$torch_index"} "${torch_pins[@]}"
  echo "setup: 3/3 clipiqa and its other dependencies" >&2
  run_logged "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
  [ "$dry_run" = 1 ] && exit 0
  echo "$hash $extras" > "$stamp"
  echo "setup: done" >&2
fi
if [ "$extra" = "test" ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's chromium for the browser tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser tests will be skipped" >&2
fi
