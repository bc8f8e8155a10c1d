"""The thread-pool setting tvm_dse measures with travels in every library it exports: a process that loads
one (and has run no TVM kernel yet) gets it, unless it set its own."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tvm_dse.strategies import build_kernel
from tvm_dse.target import parse_target
from tvm_dse.testing.conformance import CASES
from tvm_dse.thread_pool import SPIN_COUNT, WORKERS_SLEEP, setting_object, spin_count

# Loads a library in a fresh process, runs it, then reports the spin count the process ended up with and the
# CPU time its other threads (TVM's workers) used in the half second after the last run.
_LOAD_AND_IDLE = textwrap.dedent("""
    import ctypes, json, os, sys, threading, time
    import numpy as np, tvm
    library, shapes = sys.argv[1], json.loads(sys.argv[2])
    module = tvm.runtime.load_module(library)
    arguments = [tvm.runtime.tensor(np.random.rand(*shape).astype("float32")) for shape in shapes]
    for _ in range(50):
        module["main"](*arguments)

    def workers_cpu_s():
        ticks = 0
        for task in os.listdir("/proc/self/task"):
            if int(task) != threading.get_native_id():
                fields = open(f"/proc/self/task/{task}/stat").read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    before = workers_cpu_s()
    time.sleep(0.5)
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    print(json.dumps({"spin_count": libc.getenv(b"SPIN_COUNT").decode(), "idle_cpu_s": workers_cpu_s() - before,
                      "threads": len(os.listdir("/proc/self/task"))}))
""").replace("SPIN_COUNT", SPIN_COUNT)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    case = next(case for case in CASES if case.id == "3x3_s1_batch2")
    built = build_kernel("direct_nchw", case.workload, parse_target("host"))
    shapes = [list(argument.shape) for argument in built.arguments(
        np.zeros(case.workload.input_shape, "float32"), np.zeros(case.workload.weight_shape, "float32"))]
    return built.export(tmp_path_factory.mktemp("kernel") / "kernel.so"), shapes


def _load_and_idle(library, shapes, **environment) -> dict:
    env = {key: value for key, value in os.environ.items() if key != SPIN_COUNT}
    env.update(environment, TVM_NUM_THREADS="2")  # a worker beside the calling thread, whatever the machine
    done = subprocess.run([sys.executable, "-c", _LOAD_AND_IDLE, str(library), json.dumps(shapes)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_tvm_dse_measures_with_sleeping_workers_unless_the_user_set_a_spin_count():
    assert spin_count() == os.environ.get(SPIN_COUNT, WORKERS_SLEEP)


def test_a_loaded_library_gives_the_process_its_setting_and_its_idle_workers_sleep(library):
    path, shapes = library
    loaded = _load_and_idle(path, shapes)
    assert loaded["spin_count"] == spin_count() and loaded["threads"] >= 2
    if spin_count() == WORKERS_SLEEP:
        assert loaded["idle_cpu_s"] <= 0.02  # two clock ticks: the workers slept


def test_a_process_with_its_own_spin_count_keeps_it(library):
    path, shapes = library
    spinning = _load_and_idle(path, shapes, **{SPIN_COUNT: "300000"})
    assert spinning["spin_count"] == "300000"
    assert spinning["idle_cpu_s"] >= 0.05  # TVM's default: the workers spun on after the last run


def test_a_bad_spin_count_is_named(monkeypatch):
    monkeypatch.setenv(SPIN_COUNT, "fast")
    with pytest.raises(Exception, match=f"{SPIN_COUNT}='fast' is not a count"):
        setting_object("cc")
