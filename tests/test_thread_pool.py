"""tvm_dse's thread pool runs the parallel loops of the kernels it measures (in its own process) and of every
library it exports (in any process that loads one): results identical to TVM's, idle workers asleep, waiting
threads asleep at once beside a co-running load and spinning again once it is gone, and safe across threads and
fork."""

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from tvm_dse.errors import TvmDseError
from tvm_dse.strategies import build_kernel
from tvm_dse.target import parse_target
from tvm_dse.testing.conformance import CASES
from tvm_dse.thread_pool import SPIN_US, measuring_pool, pool_object

POOL_THREAD = "tvm_dse-pool"

# Loads a library with TVM's Python package (not tvm_dse) in a fresh process and runs it: serially, from two
# threads at once, in a forked child, beside `cores` busy processes, and again once they are gone; reports the
# outputs, the pool's threads, their CPU time while idle, their runs and sleeps (voluntary context switches)
# while loaded, and in phases after the load the runs, the sleeps, and the share of the time the threads running
# the kernel (the caller and the worker) wanted a core that they waited for one (/proc/.../schedstat).
_LOAD_AND_RUN = textwrap.dedent("""
    import json, multiprocessing, os, sys, threading, time
    sys.modules["torch"] = None
    import numpy as np, tvm

    library, arrays = sys.argv[1], np.load(sys.argv[2])
    module = tvm.runtime.load_module(library)
    values = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
    inputs = [tvm.runtime.tensor(value) for value in values[:-1]]

    def run(times=1):
        output = tvm.runtime.tensor(np.zeros_like(values[-1]))
        for _ in range(times):
            module["main"](*inputs, output)
        return output.numpy()

    def waits(tasks):
        ran = waited = 0
        for task in tasks:
            on_core, waiting, _ = map(int, open(f"/proc/self/task/{task}/schedstat").read().split())
            ran, waited = ran + on_core, waited + waiting
        return ran, waited

    def pool_threads():
        found = {}
        for task in os.listdir("/proc/self/task"):
            if open(f"/proc/self/task/{task}/comm").read().strip() == "POOL_THREAD":
                stat = open(f"/proc/self/task/{task}/stat").read().rsplit(")", 1)[1].split()
                status = dict(line.split(":", 1) for line in open(f"/proc/self/task/{task}/status"))
                found[task] = {"cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"),
                               "sleeps": int(status["voluntary_ctxt_switches"])}
        return found

    serial = run(50)
    before = pool_threads()
    time.sleep(0.5)
    idle = pool_threads()
    results = [None, None]
    def run_in_thread(index):
        results[index] = run(20)
    threads = [threading.Thread(target=run_in_thread, args=(index,)) for index in range(2)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    child = os.fork()
    if child == 0:
        os._exit(0 if np.array_equal(run(), serial) else 3)
    forked_child_status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])

    def busy():
        while True:
            pass
    load = [multiprocessing.Process(target=busy, daemon=True) for _ in range(os.cpu_count())]
    [process.start() for process in load]
    settled = time.monotonic() + 0.5  # the pool sees the load within tens of milliseconds of running beside it
    while time.monotonic() < settled:
        run()
    loaded_before, loaded_runs = pool_threads(), 0
    loaded_end = time.monotonic() + 0.5
    while time.monotonic() < loaded_end:
        loaded = run(10)
        loaded_runs += 10
    loaded_after = pool_threads()
    [process.kill() for process in load]
    [process.join() for process in load]
    settled = time.monotonic() + 1.5  # the longest the pool sleeps at once before it looks again, and more
    while time.monotonic() < settled:
        run()
    phases = []
    for _ in range(4):
        before_phase, runs = pool_threads(), 0
        ran, waited = waits([*before_phase, threading.get_native_id()])
        phase_end = time.monotonic() + 0.3
        while time.monotonic() < phase_end:
            run(10)
            runs += 10
        after_phase = pool_threads()
        ran_after, waited_after = waits([*after_phase, threading.get_native_id()])
        phases.append({"runs": runs, "sleeps": sum(after_phase[task]["sleeps"] - before_phase[task]["sleeps"]
                                                   for task in after_phase),
                       "waited_share": (waited_after - waited) / max(ran_after - ran + waited_after - waited, 1)})
    print(json.dumps({
        "serial": serial.tolist(), "threads": [result.tolist() for result in results], "loaded": loaded.tolist(),
        "forked_child_status": forked_child_status, "pool_threads": len(idle),
        "idle_cpu_s": sum(idle[task]["cpu_s"] - before[task]["cpu_s"] for task in idle),
        "loaded_runs": loaded_runs,
        "loaded_sleeps": sum(loaded_after[task]["sleeps"] - loaded_before[task]["sleeps"] for task in loaded_after),
        "after_load": phases,
    }))
""").replace("POOL_THREAD", POOL_THREAD)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A parallel kernel built in this process, run once here, exported, and its arguments saved: the built
    kernel, the library and the arguments' file."""
    case = next(case for case in CASES if case.id == "3x3_s1_batch2")
    built = build_kernel("direct_nchw", case.workload, parse_target("host"))
    rng = np.random.default_rng(0)
    arguments = built.arguments(rng.random(case.workload.input_shape, "float32"),
                                rng.random(case.workload.weight_shape, "float32"))
    built.kernel["main"](*arguments)
    folder = tmp_path_factory.mktemp("kernel")
    np.savez(folder / "arguments.npz", *[argument.numpy() for argument in arguments])
    return built, built.export(folder / "kernel.so"), folder / "arguments.npz"


def _pool_threads() -> int:
    return sum(open(f"/proc/self/task/{task}/comm").read().strip() == POOL_THREAD
               for task in os.listdir("/proc/self/task"))


def test_tvm_dse_measures_on_its_own_pool(kernel):
    # tvm_dse is imported before TVM here (conftest), so its launcher is the one the process finds first, where
    # TVM's runtime and compiler look for TVMBackendParallelLaunch; the kernel run in this process started it
    assert measuring_pool(in_this_process=True)["measured_with"] == "tvm_dse"
    with open("/proc/self/maps") as maps:
        (pool,) = {line.split()[-1] for line in maps if line.rstrip().endswith("/libtvm_dse_thread_pool.so")}
    found = ctypes.cast(ctypes.CDLL(None).TVMBackendParallelLaunch, ctypes.c_void_p).value
    assert found == ctypes.cast(ctypes.CDLL(pool).TVMBackendParallelLaunch, ctypes.c_void_p).value
    assert _pool_threads() >= 1


def test_an_exported_library_runs_on_the_pool_in_any_process(kernel):
    _, library, arguments = kernel
    env = {**os.environ, "TVM_NUM_THREADS": "2"}  # a worker beside the calling thread, whatever the machine
    env.pop(SPIN_US, None)
    done = subprocess.run([sys.executable, "-c", _LOAD_AND_RUN, str(library), str(arguments)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout.splitlines()[-1])
    # the library's launcher is its own: TVM's loader cannot see it to point it at TVM's pool
    assert not hasattr(ctypes.CDLL(str(library)), "__TVMBackendParallelLaunch") and ran["pool_threads"] == 1
    # the same result as TVM's launcher in this process computed, however it is called
    expected = np.load(arguments)[f"arr_{len(np.load(arguments).files) - 1}"]
    for output in [ran["serial"], *ran["threads"], ran["loaded"]]:
        np.testing.assert_array_equal(np.asarray(output, "float32"), expected)
    assert ran["forked_child_status"] == 0
    # idle workers sleep once their spin (microseconds) is over: two clock ticks at most in half a second
    assert ran["idle_cpu_s"] <= 0.02
    # beside a busy process per core the pool's threads wait for a core: the worker sleeps at once, so that a
    # wake-up gives it its core back, in most of the parallel loops (two per run: the padding and the
    # convolution), bar the tens of milliseconds it spins again now and then to see whether the load is gone
    assert ran["loaded_sleeps"] >= ran["loaded_runs"]
    # once the load is gone it spins again: wherever its threads hardly waited for a core (a quiet machine, as far
    # as the pool can tell), the worker slept in few of the runs (the spin bridges the gap between two)
    for phase in ran["after_load"]:
        if phase["waited_share"] < 0.05:
            assert phase["sleeps"] <= phase["runs"] / 4, ran["after_load"]


def test_a_bad_spin_time_is_named(monkeypatch):
    monkeypatch.setenv(SPIN_US, "fast")
    with pytest.raises(TvmDseError, match=f"{SPIN_US}='fast' is not a number of microseconds"):
        pool_object("cc")


def test_concurrent_callers_in_this_process_get_the_same_result(kernel):
    built, _, arguments = kernel
    saved = np.load(arguments)
    expected = saved[f"arr_{len(saved.files) - 1}"]
    outputs = {}

    def run(index: int) -> None:
        import tvm

        values = [tvm.runtime.tensor(saved[f"arr_{position}"]) for position in range(len(saved.files))]
        for _ in range(20):
            built.kernel["main"](*values)
        outputs[index] = values[-1].numpy()

    callers = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(outputs) == 3
    for output in outputs.values():
        np.testing.assert_array_equal(output, expected)


def test_a_process_that_imported_tvm_first_is_told_and_reported_so():
    script = textwrap.dedent("""
        import json, sys, warnings
        sys.modules["torch"] = None
        import tvm
        with warnings.catch_warnings(record=True) as imported:
            warnings.simplefilter("always")
            import tvm_dse
            from tvm_dse.measure import LocalRunner
            from tvm_dse.thread_pool import describe_thread_pool, measuring_pool
        with warnings.catch_warnings(record=True) as measuring:
            warnings.simplefilter("always")
            pool, key = measuring_pool(in_this_process=True), LocalRunner().thread_pool
        print(json.dumps({"imported": [str(w.message) for w in imported], "pool": pool, "key": key,
                          "measuring": [str(w.message) for w in measuring],
                          "report": describe_thread_pool(pool, measured=True)}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ran = json.loads(done.stdout.splitlines()[-1])
    # told once, as it measures or reports; a process that only compiles (TVM's build workers) is not told
    assert not ran["imported"] and len(ran["measuring"]) == 1
    assert "TVM was imported before tvm_dse" in ran["measuring"][0]
    assert ran["pool"]["measured_with"] == "tvm" and "measured with TVM's" in ran["report"]
    assert ran["key"] == "tvm,spin_count=0"  # its idle workers sleep at once, and its timings are keyed so
