#!/usr/bin/env bash
# Download (here, with pip access) the pure-Python wheels the GPU image lacks, for Python 3.12, into .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth captum==0.9.0 nbclient nbformat fastjsonschema jupyter_client \
  jupyter_core ipykernel comm traitlets ipywidgets widgetsnbextension jupyterlab_widgets matplotlib-inline \
  ipython ipython_pygments_lexers decorator jedi parso pexpect ptyprocess prompt_toolkit stack_data executing \
  asttokens pure_eval pyzmq tornado nest_asyncio debugpy platformdirs \
  onnx==1.23.2 onnxruntime==1.32.0 flatbuffers protobuf ml_dtypes
ls .whl
