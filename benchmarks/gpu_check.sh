#!/usr/bin/env bash
# One prepared check for a lent GPU machine, at most ~10 minutes: the GPU-marked tests, the notebooks in smoke
# mode on CUDA, the dress rehearsal (every notebook with SMOKE = False on a random ViT-B/16 laid into a fake
# Hugging Face cache, on CUDA), the ONNX export from CUDA, and the benchmarks. Results go to one folder: $OUT (the
# device tool's) or gpu-check-results/.
#
# The GPU image has torch but not open_clip and friends: run benchmarks/fetch_gpu_wheels.sh here first, then
# carry .whl/ with the call (the device tool's `carry: [".whl"]`).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check-results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CLIPIQA_SMOKE=1 CLIPIQA_DEVICE=cuda
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    > "$out/install.log" 2>&1 || { echo "wheel install failed, see install.log"; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c \
  "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'open_clip', open_clip.__version__)"; } \
  > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

echo "== GPU tests"
timeout 180 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log" | tail -5

echo "== notebooks in smoke mode on CUDA"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_notebooks.py 2>&1 | tee "$out/notebooks.log" | tail -5

echo "== rehearsal: notebooks with SMOKE = False on the random ViT-B/16 from a fake hub cache, on CUDA"
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_notebooks.py -k real_mode -s 2>&1 \
  | tee "$out/rehearsal-notebooks.log" | grep -E "real mode|passed|failed" | tail -12

echo "== ONNX export of the random ViT-B/16 traced on CUDA, checked under onnxruntime"
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_export.py -s 2>&1 \
  | tee "$out/export.log" | tail -4

echo "== benchmarks (ViT-B/16 random init, bf16 autocast)"
timeout 150 python3 benchmarks/run.py --device cuda --out "$out" 2>&1 | tee "$out/benchmarks.log" | tail -12
echo "results in $out"
