"""How TVM's runtime thread pool runs what tvm_dse measures and exports: its threads, and how its idle workers
wait for the next parallel region.

TVM splits every parallel loop statically between its workers and the calling thread, which then waits for
all of them. An idle worker spins (300000 yields by default) before it sleeps, so while a model runs its
workers never sleep. Beside another busy process a spinning worker uses up its share of the CPU while it
waits and is then off the core when its part of the next region arrives; every region waits for it. Measured
on 2 cores beside one busy process (``benchmarks/deployed.py``): ResNet-18 13x its quiet time, MobileNetV2
and SqueezeNet 1.1 up to 30-50x in some runs. Workers that sleep at once ran at 1.6-2.2x their quiet time
(onnxruntime 1.3-2.1x), for one wake-up per parallel region on a quiet machine (up to a fifth more on
networks of many short kernels). Any spin long enough to bridge the gap between two regions collapses
like the default.

So tvm_dse's process measures with sleeping workers (:func:`settle_process`, unless the user set TVM's
variables: ``TVM_THREAD_POOL_SPIN_COUNT=300000`` before ``optimize`` measures and exports for a machine that
runs nothing else), and every library it exports carries the setting it was measured with: a constructor
linked into the library sets it (never overriding the process's own) as the library is loaded, which takes
effect where TVM's pool has not started yet in that process (TVM reads the spin count once per process).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .errors import TvmDseError

THREADS = "TVM_NUM_THREADS"
SPIN_COUNT = "TVM_THREAD_POOL_SPIN_COUNT"
# Yields an idle worker spins before it sleeps, where the user set nothing: none (see the module's docstring)
WORKERS_SLEEP = "0"

_CONSTRUCTOR = """\
#include <stdlib.h>
/* tvm_dse: the thread-pool setting this library was measured with, unless the process has its own */
__attribute__((constructor)) static void tvm_dse_thread_pool_setting(void) {{
  setenv("{variable}", "{value}", 0);
}}
"""
_objects: dict[tuple[str, str], Path] = {}
_objects_lock = threading.Lock()


def settle_process() -> None:
    """Set this process's thread pool as tvm_dse measures: every physical core (TVM's runtime counts a single
    "big" core on some virtual machines) and sleeping idle workers, each unless the user set it. Must run
    before any TVM kernel runs in the process."""
    from .target import physical_cores

    os.environ.setdefault(THREADS, str(physical_cores()))
    os.environ.setdefault(SPIN_COUNT, WORKERS_SLEEP)


def spin_count() -> str:
    """This process's spin count (what its kernels are measured with), checked as TVM reads it."""
    value = os.environ.get(SPIN_COUNT, WORKERS_SLEEP)
    if not re.fullmatch(r"[0-9]+", value):
        raise TvmDseError(f"{SPIN_COUNT}={value!r} is not a count of yields: give a whole number (0: idle "
                          "workers sleep at once)")
    return value


def describe_spin_count(value: str, measured: bool) -> str:
    """What a spin count means, for a report; ``measured``: whether the run's costs were timed with it (a
    run priced by the cost model timed nothing)."""
    waits = "sleep at once" if value == WORKERS_SLEEP else f"spin {value} yields before they sleep"
    how = "measured so, and set" if measured else "set"
    return (f"idle workers {waits} ({SPIN_COUNT}={value}): {how} by the exported library as a process loads it, "
            "unless the process set its own")


def setting_object(compiler: str) -> Path:
    """An object file, built by ``compiler`` for the library's machine, whose constructor gives a process
    loading the library this process's spin count unless it has its own (linked into every export)."""
    value = spin_count()
    with _objects_lock:
        if (compiler, value) not in _objects:
            folder = Path(tempfile.mkdtemp(prefix="tvm_dse_thread_pool_"))
            atexit.register(shutil.rmtree, folder, True)
            source, target = folder / "thread_pool_setting.c", folder / "thread_pool_setting.o"
            source.write_text(_CONSTRUCTOR.format(variable=SPIN_COUNT, value=value))
            built = subprocess.run([compiler, "-x", "c", "-c", "-fPIC", "-O2", str(source), "-o", str(target)],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                raise TvmDseError(f"{compiler} could not build the thread-pool setting linked into exported "
                                  f"libraries: {built.stderr.strip()}")
            _objects[compiler, value] = target
        return _objects[compiler, value]
