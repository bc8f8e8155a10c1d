#!/usr/bin/env bash
# Install tvm_dse (editable) with optional extras into a virtual environment: the active one, $VENV,
# or .venv at the repository root (created when missing). Usage: scripts/install.sh [EXTRAS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-}
venv=${VENV:-${VIRTUAL_ENV:-$root/.venv}}
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
echo "installing tvm_dse${extras:+[$extras]} into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root${extras:+[$extras]}"
