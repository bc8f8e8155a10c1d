#!/usr/bin/env bash
# Install the runtimes benchmarks/deployed.py compares tvm_dse's plans with, each into a virtual environment
# of its own under .peers/ (their protobuf and onnx pins clash with each other and with tvm_dse's):
# OpenVINO, ncnn (with the pnnx converter), MNN, and LiteRT with XNNPACK (converted by onnx2tf, which
# needs Python >= 3.12). onnxruntime runs from tvm_dse's own environment. Usage: scripts/setup_peers.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=$root/.peers
mkdir -p "$peers"

python312() {
  for candidate in python3.12 python3.13 "$HOME/.pyenv/versions/3.12.1/bin/python" \
                   "$HOME/.pyenv/versions/3.13.0/bin/python"; do
    if command -v "$candidate" >/dev/null 2>&1 && \
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "LiteRT's converter onnx2tf needs Python >= 3.12 and none was found" >&2
  return 1
}

peer() {  # peer NAME PYTHON PACKAGE...
  local name=$1 python=$2; shift 2
  if [ ! -x "$peers/$name/bin/python" ]; then
    echo "creating $peers/$name"
    "$python" -m venv "$peers/$name"
  fi
  echo "installing $* into $peers/$name"
  "$peers/$name/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$peers/$name/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

peer openvino python3 "openvino==2026.4.*" numpy
peer ncnn python3 ncnn numpy
# pnnx declares torch as a dependency, but its converter binary needs only the C and C++ runtimes
"$peers/ncnn/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps pnnx
# never MNN's `mnnconvert` console script: it installs a logging SDK and uploads usage logs; the benchmark
# calls the converter's module directly
peer mnn python3 "MNN==3.6.*" numpy
peer litert "$(python312)" "onnx2tf>=2" numpy
echo "peers installed under $peers"
