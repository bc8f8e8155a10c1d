#!/usr/bin/env bash
# Install tvm_dse and run its main job on the built-in default: the zoo's ResNet-18 on this machine's CPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-${VIRTUAL_ENV:-$root/.venv}}
"$root/scripts/install.sh" bench
exec "$venv/bin/tvm-dse" baseline "$@"
