#!/usr/bin/env bash
# Install tvm_dse and run its main job on the built-in default: optimize the zoo's ResNet-18 for this
# machine's CPU (plan, library, report and plots in ./tvm_dse_out).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-${VIRTUAL_ENV:-$root/.venv}}
"$root/scripts/install.sh"
exec "$venv/bin/tvm-dse" optimize "$@"
