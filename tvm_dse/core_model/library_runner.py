"""Run exported libraries' ``main`` once each, for the execution profiler: a script of its own, run by the
board's (emulated) Python with only TVM's runtime and numpy, never imported by tvm_dse.

    python library_runner.py JOBS.json RESULTS.json

JOBS.json lists one job per library: ``{"library": PATH, "arguments": [[shape, dtype], ...]}``, a kernel
whose ``main`` takes its inputs and outputs as arguments (random values: the kernels branch on shapes, not
on values), or ``{"library": PATH, "inputs": NPZ, "outputs": NPZ}``, a model run by TVM's virtual machine on
its inputs (in ``main``'s order) and the weights the library holds, its outputs written to the second file.
Every library stays loaded, so each keeps its own addresses. RESULTS.json gets, per job, the bytes its arguments
and outputs take, for a model the functions its virtual machine called (each one's calls and the bytes of
their tensor arguments, outputs included: the kernels take their outputs as arguments), and the lines of
``/proc/self/maps`` that map its library: under emulation they give the emulated addresses the profile's
blocks carry.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

# tvm_dse's reader of a library's weights, a leaf of numpy and the standard library
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deployed_library import library_weights  # noqa: E402

# TVM's FFI imports PyTorch wherever it is installed (this machine's Python, when validating on the host):
# seconds more under emulation, for nothing the libraries use
sys.modules["torch"] = None
import tvm  # noqa: E402
from tvm.runtime.vm import VirtualMachine  # noqa: E402


def _flat(result):
    if isinstance(result, (list, tuple)) or type(result).__name__ == "Array":
        return [array for item in result for array in _flat(item)]
    return [result.numpy()]


def _call_counter(calls):
    """A virtual machine's instrument adding each call of a function, and its tensor arguments' bytes, to
    ``calls`` (function name -> [calls, bytes])."""
    def instrument(func, name, before, result, *args):
        if before:
            counted = calls.setdefault(name, [0, 0])
            counted[0] += 1
            counted[1] += sum(int(np.prod(argument.shape)) * np.dtype(str(argument.dtype)).itemsize
                              for argument in args if hasattr(argument, "shape") and hasattr(argument, "dtype"))
        return 0  # go on normally
    return instrument


def main(jobs: str, results: str) -> None:
    generator = np.random.default_rng(0)
    done = []
    for job in json.load(open(jobs)):
        library = tvm.runtime.load_module(job["library"])
        calls = {}
        if "inputs" in job:
            values = list(np.load(job["inputs"]).values())
            machine = VirtualMachine(library, tvm.cpu())
            machine.set_instrument(_call_counter(calls))
            weights = [tvm.runtime.from_dlpack(weight) for weight in library_weights(job["library"])]
            outputs = _flat(machine["main"](*[tvm.runtime.tensor(v) for v in values], *weights))
            np.savez(job["outputs"], *outputs)
        else:
            values = [generator.uniform(-1, 1, shape).astype(dtype) for shape, dtype in job["arguments"]]
            library["main"](*[tvm.runtime.tensor(value) for value in values])
            outputs = []
        done.append({"bytes": sum(array.nbytes for array in values + outputs), "calls": calls,
                     "real_path": os.path.realpath(job["library"])})
    with open("/proc/self/maps") as mapped:
        maps = mapped.readlines()
    with open(results, "w") as out:
        json.dump([{"bytes": job["bytes"], "calls": job["calls"],
                    "maps": [line for line in maps if line.rstrip().endswith(job["real_path"])]} for job in done], out)


if __name__ == "__main__":
    main(*sys.argv[1:])
