#!/usr/bin/env bash
# Install everything the tests need and run them. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-${VIRTUAL_ENV:-$root/.venv}}
"$root/scripts/install.sh" test
# the emulated aarch64 board and the cross compiler, for the tests that run on a board over RPC
"$root/scripts/setup_board.sh"
cd "$root"
# two workers (one per core); a file's tests stay on one worker so its fixtures are built once
exec "$venv/bin/python" -m pytest tests -n 2 --dist loadfile "$@"
