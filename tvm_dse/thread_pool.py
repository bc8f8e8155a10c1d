"""The thread pool that runs the parallel loops of the kernels tvm_dse measures and exports: its own
(``thread_pool.c``), in every exported library and in tvm_dse's process.

TVM's generated code hands every parallel loop to a launcher that splits it statically between the pool's
workers and the calling thread, which then waits for all of them. TVM's pool waits by yielding the core in a
loop (300000 times by default): beside another busy process a waiting thread hands its core over and is off
it when its part of the next loop arrives. Measured on 2 cores beside one busy process
(``benchmarks/deployed.py``): ResNet-18 13x its quiet time, MobileNetV2 and SqueezeNet 1.1 up to 30-50x in
some runs. Workers that sleep at once kept 1.6-2.2x, at one wake-up per parallel loop on a quiet machine:
MobileNetV2 ran 1.3x slower than with spinning workers, SqueezeNet 1.25x.

tvm_dse's pool has both: a waiting thread spins on the core (``pause``) for up to ``TVM_DSE_SPIN_US``
microseconds (:data:`DEFAULT_SPIN_US` unless set), which bridges the gap between the loops of one model run,
and then sleeps; and while its threads wait for a core (a co-running load: read from the kernel's scheduler
statistics of the pool's own threads, ``/proc/thread-self/schedstat``) they sleep at once, so a woken thread
gets its core back at once. Beside one busy process the spinning pool ran MobileNetV2 and SqueezeNet 1.1
4.8-5.5x their quiet time, the pool that sleeps there 1.9-2x. Counting the machine's runnable threads instead
(``/proc/loadavg``) takes kernel threads for a load: they run a few percent of the time, but queue for a core
behind spinning threads, and the pool then slept on a quiet machine too. Every exported library carries it
(:func:`pool_object`): the generated code's pointer to the launcher is defined by it, hidden from TVM's
loader. tvm_dse's own process loads it before TVM's runtime (:func:`settle_process`) in place of TVM's
launcher, so kernels are measured with the pool they are deployed with; where TVM was imported first that is
too late, and they are measured with TVM's pool, its workers sleeping at once (the report says which).
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from .errors import TvmDseError

THREADS = "TVM_NUM_THREADS"
SPIN_US = "TVM_DSE_SPIN_US"
# Microseconds a waiting thread spins before it sleeps where the user set nothing: more than the gap between
# two parallel loops of a model run (a few microseconds to tens), little CPU burnt after the last one
DEFAULT_SPIN_US = 100
# How the pool's threads wait, as timings know it: raised whenever that changes, so that kernels timed on an earlier
# pool are timed again (2: a load judged from the pool's own waits for a core, where the machine's runnable threads
# took kernel threads for one and timed kernels at the sleeping pool's speed)
POOL_VERSION = 2
# TVM's own pool, where a kernel still runs on it (TVM loaded before tvm_dse): its idle workers sleep at once
_TVM_SPIN_COUNT = "TVM_THREAD_POOL_SPIN_COUNT"
_SOURCE = Path(__file__).with_name("thread_pool.c")
_FLAGS = ("-O2", "-fPIC", f"-DDEFAULT_SPIN_US={DEFAULT_SPIN_US}", f'-DSPIN_US_VARIABLE="{SPIN_US}"')

_objects: dict[str, Path] = {}
_objects_lock = threading.Lock()
_measured_with: str | None = None  # "tvm_dse" or "tvm", set by settle_process
# Why kernels measured in this process run on TVM's pool, told once, when the process first measures or reports
# with it (a process that only compiles, such as TVM's own build workers importing TVM first, is not told)
_not_interposed = ""


def settle_process() -> None:
    """Set this process up as tvm_dse measures: its thread pool in place of TVM's (where TVM's runtime is not
    loaded yet), every physical core (TVM's runtime counts a single "big" core on some virtual machines), each
    unless the user set it. Must run before TVM is imported."""
    global _measured_with, _not_interposed
    if _measured_with is None:
        _not_interposed = _interpose()
        _measured_with = "tvm" if _not_interposed else "tvm_dse"
    from .target import physical_cores

    os.environ.setdefault(THREADS, str(physical_cores()))
    os.environ.setdefault(_TVM_SPIN_COUNT, "0")


def spin_us() -> int:
    """Microseconds a waiting thread of the pool spins before it sleeps, checked as the pool reads it."""
    value = os.environ.get(SPIN_US, str(DEFAULT_SPIN_US))
    if not re.fullmatch(r"[0-9]+", value):
        raise TvmDseError(f"{SPIN_US}={value!r} is not a number of microseconds: give a whole number (0: waiting "
                          "threads sleep at once)")
    return int(value)


def measuring_pool(in_this_process: bool) -> dict[str, int | str]:
    """The pool kernels are measured with, for a report: ``measured_with`` (``"tvm_dse"``; ``"tvm"`` where they
    run ``in_this_process`` and TVM was loaded before tvm_dse, with a warning the first time; a board runs exported
    libraries) and ``spin_us``."""
    global _not_interposed
    measured_with = (_measured_with or "tvm") if in_this_process else "tvm_dse"
    if in_this_process and _not_interposed:
        warnings.warn(_not_interposed, stacklevel=2)
        _not_interposed = ""
    return {"measured_with": measured_with, "spin_us": spin_us()}


def pool_key(in_this_process: bool) -> str:
    """:func:`measuring_pool` as the tuning logs key a measurement by (see
    :func:`tvm_dse.measure.measurement_key`): how a pool's threads wait is part of a kernel's time (spinning
    against sleeping workers: MobileNetV2 1.3x, SqueezeNet 1.6x apart), so a timing taken on one pool never
    prices a kernel run on another."""
    pool = measuring_pool(in_this_process)
    if pool["measured_with"] == "tvm":
        return f"tvm,spin_count={os.environ.get(_TVM_SPIN_COUNT, 'default')}"
    return f"tvm_dse,version={POOL_VERSION},spin_us={pool['spin_us']}"


def describe_thread_pool(pool: dict[str, int | str], measured: bool) -> str:
    """A report's :func:`measuring_pool` in words; ``measured``: whether the run's costs were timed (a run
    priced by the cost model timed nothing)."""
    spin = pool["spin_us"]
    if spin:
        waits = (f"waiting threads spin up to {spin} us, then sleep, and sleep at once while they wait for a core "
                 f"({SPIN_US}={spin})")
    else:
        waits = f"waiting threads sleep at once ({SPIN_US}=0)"
    deployed = f"tvm_dse's, in the exported library: {waits}"
    if not measured:
        return deployed
    if pool["measured_with"] == "tvm_dse":
        return deployed + "; measured so"
    return (deployed + "; measured with TVM's, its workers sleeping at once, as TVM was imported before tvm_dse "
            "(slower on networks of many short kernels): import tvm_dse first")


def host_compiler() -> str:
    """The C compiler that builds this machine's objects of the pool and a library's weights: ``$CC``, else
    ``cc``, else ``gcc`` (found without TVM, which this process may not have loaded yet)."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"


def pool_object(compiler: str) -> Path:
    """An object file of the pool, built by ``compiler`` for the library's machine (linked into every export)."""
    spin_us()
    with _objects_lock:
        if compiler not in _objects:
            folder = Path(tempfile.mkdtemp(prefix="tvm_dse_thread_pool_"))
            atexit.register(shutil.rmtree, folder, True)
            _objects[compiler] = _compile(compiler, ["-c"], folder / "thread_pool.o")
        return _objects[compiler]


def _compile(compiler: str, flags: list[str], target: Path) -> Path:
    built = subprocess.run([compiler, "-x", "c", *_FLAGS, *flags, str(_SOURCE), "-o", str(target)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise TvmDseError(f"{compiler} could not build tvm_dse's thread pool ({_SOURCE}): {built.stderr.strip()}")
    return target


def _interpose() -> str:
    """Load the pool, built for this machine, ahead of TVM's runtime so that its launcher stands in for TVM's:
    "" where it does; why not where TVM's runtime is loaded already or no compiler builds it."""
    with open("/proc/self/maps") as maps:
        if any("libtvm" in line for line in maps):
            return ("TVM was imported before tvm_dse: kernels measured in this process run on TVM's thread pool, "
                    "slower than tvm_dse's, which its exported libraries run on; import tvm_dse first")
    compiler = host_compiler()
    key = hashlib.sha256(_SOURCE.read_bytes() + repr((compiler, _FLAGS)).encode()).hexdigest()[:16]
    library = Path.home() / ".cache" / "tvm_dse" / "thread_pool" / key / "libtvm_dse_thread_pool.so"
    try:
        if not library.is_file():
            library.parent.mkdir(parents=True, exist_ok=True)
            partial = library.with_name(f"{library.name}.{os.getpid()}")
            _compile(compiler, ["-shared", "-DTVM_DSE_INTERPOSE", "-pthread"], partial)
            os.replace(partial, library)
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    except (OSError, TvmDseError) as error:
        return f"tvm_dse's thread pool could not be built for this process ({error}): kernels measured here run on " \
               "TVM's thread pool"
    return ""
