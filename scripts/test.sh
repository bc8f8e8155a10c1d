#!/usr/bin/env bash
# Install everything the tests need and run them: the default run, then the sweep (the target matrix and
# the tutorials end to end) as a step of its own. Extra arguments go to both pytest runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-${VIRTUAL_ENV:-$root/.venv}}
# which CPU ran the tests, so a failure can be tied to a machine
"$root/scripts/cpu_facts.sh"
"$root/scripts/install.sh" test
# the emulated aarch64 board and the cross compiler, for the tests that run on a board over RPC
"$root/scripts/setup_board.sh"
cd "$root"
echo "what tvm_dse makes of this CPU:"
"$venv/bin/python" -m tvm_dse target host
# two workers (one per core); a file's tests stay on one worker so its fixtures are built once
"$venv/bin/python" -m pytest tests -n 2 --dist loadfile "$@"
# the zoo models on every target family and the tutorials: each test builds its own plans, so any worker
# takes any test
status=0
"$venv/bin/python" -m pytest tests -n 2 --dist load -m sweep "$@" || status=$?
# pytest's 5: the arguments select no test of the sweep
if [ "$status" -eq 5 ]; then status=0; fi
exit "$status"
