"""Run an exported library's ``main`` once, for the execution profiler: a script of its own, run by the
board's (emulated) Python with only TVM's runtime and numpy, never imported by tvm_dse.

    python library_runner.py LIBRARY ARGUMENTS.json MAPS.txt

ARGUMENTS.json lists ``[shape, dtype]`` per argument of ``main`` (filled with random values: the kernels
branch on shapes, not on values). After the run, the lines of ``/proc/self/maps`` that map LIBRARY are
written to MAPS.txt: under emulation they give the emulated addresses the profile's blocks carry.
"""

import json
import os
import sys

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine


def main(library: str, arguments: str, maps: str) -> None:
    vm = VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
    generator = np.random.default_rng(0)
    values = [tvm.runtime.tensor(generator.uniform(-1, 1, shape).astype(dtype)) for shape, dtype in
              json.load(open(arguments))]
    vm["main"](*values)
    real = os.path.realpath(library)
    with open("/proc/self/maps") as mapped, open(maps, "w") as out:
        out.writelines(line for line in mapped if line.rstrip().endswith(real))


if __name__ == "__main__":
    main(*sys.argv[1:])
