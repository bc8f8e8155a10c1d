#!/usr/bin/env bash
# Install everything the tests need and run them. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-${VIRTUAL_ENV:-$root/.venv}}
"$root/scripts/install.sh" test
cd "$root"
exec "$venv/bin/python" -m pytest tests "$@"
