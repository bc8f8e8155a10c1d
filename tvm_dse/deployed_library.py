"""A model library as it is deployed: the weights stored in the exported shared library itself, in a read-only
data section beside its code, read back as arrays viewing the loaded library's memory without a copy; and the
library run with TVM's runtime library alone (:class:`DeployedLibrary`).

Held in TVM's constant pool instead, a library's weights were in memory four times while it loaded (the
mapped library, TVM's copy of its embedded module, the deserialized constants) and twice after. Stored
here they are file pages of the mapped library, read on first touch and shared between processes; the
model's ``main`` takes them as parameters after its inputs.

``import tvm`` loads 138 of TVM's Python modules, 35 MB a deployment does not need: :class:`DeployedLibrary`
loads TVM's runtime library and the model's library through ``tvm_ffi`` (which the runtime is built on) and
runs the model's virtual machine with numpy arrays in and out.

A leaf with numpy and the standard library only (``tvm_ffi`` where a library is run): the profiler's runner,
the benchmarks' runtime worker and the memory measurement, which run without tvm_dse, load this file by its
path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DATA_SYMBOL = "tvm_dse_weights"
# A JSON list, one {"offset", "shape", "dtype"} per weight in main's order, ending in a zero byte
INDEX_SYMBOL = "tvm_dse_weights_index"
# TVM's kernels assume their buffers are aligned so (its default data alignment)
ALIGNMENT = 64
# How TVM's virtual machine is set up on the CPU: (DLPack device type, device index, allocator), the pooled
# allocator as relax.VirtualMachine chooses by default
_CPU_POOLED = (1, 0, 2)

_ASSEMBLY = """\
    .section .rodata
    .balign {alignment}
    .globl {data}
    .type {data}, %object
{data}:
    .incbin "{blob}"
    .size {data}, {size}
    .globl {index}
    .type {index}, %object
{index}:
    .incbin "{index_file}"
    .byte 0
"""


def weights_object(weights: Sequence[np.ndarray], compiler: str, folder: Path) -> Path:
    """An object file, built by ``compiler`` (an assembler driver for the library's machine) in ``folder``, that
    holds ``weights`` in a read-only data section with their index, to be linked into a model's library."""
    index, offset = [], 0
    blob_path, index_path = folder / "weights.bin", folder / "weights_index.json"
    with open(blob_path, "wb") as blob:
        for weight in weights:
            padding = -offset % ALIGNMENT
            blob.write(bytes(padding))
            offset += padding
            array = np.ascontiguousarray(weight)
            index.append({"offset": offset, "shape": list(array.shape), "dtype": str(array.dtype)})
            blob.write(array.tobytes())
            offset += array.nbytes
    index_path.write_text(json.dumps(index))
    source, target = folder / "weights.S", folder / "weights.o"
    source.write_text(_ASSEMBLY.format(alignment=ALIGNMENT, data=DATA_SYMBOL, index=INDEX_SYMBOL, blob=blob_path,
                                       size=offset, index_file=index_path))
    built = subprocess.run([compiler, "-c", str(source), "-o", str(target)], capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"{compiler} could not assemble the model's weights: {built.stderr.strip()}")
    return target


def library_weights(path: str | Path) -> list[np.ndarray]:
    """The weights stored in the library at ``path`` (empty for a library without any), as arrays viewing the
    library's memory once it is loaded: loading it again here gives the process's one copy of it."""
    library = ctypes.CDLL(os.path.realpath(path))
    try:
        index_address = ctypes.addressof(ctypes.c_char.in_dll(library, INDEX_SYMBOL))
        base = ctypes.addressof(ctypes.c_uint8.in_dll(library, DATA_SYMBOL))
    except ValueError:  # no such symbol: the library holds its constants in TVM's constant pool
        return []
    weights = []
    for entry in json.loads(ctypes.string_at(index_address)):
        dtype = np.dtype(entry["dtype"])
        count = int(np.prod(entry["shape"], dtype=np.int64))
        memory = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(base + entry["offset"])
        weights.append(np.frombuffer(memory, dtype, count).reshape(entry["shape"]))
    return weights


def runtime_library() -> Path:
    """TVM's runtime library in the installed ``tvm`` package, found without importing it."""
    spec = importlib.util.find_spec("tvm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "lib" / "libtvm_runtime.so"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("TVM's runtime library (tvm/lib/libtvm_runtime.so) is not installed: pip install "
                            "apache-tvm")


def load_runtime() -> None:
    """Load TVM's runtime library through ``tvm_ffi`` (it registers the virtual machine a model library needs);
    loading it again does nothing."""
    import tvm_ffi

    tvm_ffi.load_module(str(runtime_library()))


def peak_resident_bytes() -> int:
    """This process's peak resident memory since it started (``VmHWM``: getrusage's maximum would carry the
    launching process's peak across exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def _aligned(array: np.ndarray) -> np.ndarray:
    """``array``'s values in a C-contiguous array whose data is aligned for TVM's kernels."""
    array = np.asarray(array)
    if array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0:
        return array
    raw = np.empty(array.nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    aligned = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    aligned[...] = array
    return aligned


class DeployedLibrary:
    """A model library exported by tvm_dse, loaded with TVM's runtime library alone (through ``tvm_ffi``, no
    ``import tvm``), its weights viewing the library: ``library(*inputs)`` runs the model on numpy arrays (its
    inputs in order) and returns its outputs as numpy arrays."""

    def __init__(self, path: str | Path):
        import tvm_ffi

        self._ffi = tvm_ffi
        load_runtime()
        self._library = tvm_ffi.load_module(str(path))
        machine = self._library["vm_load_executable"]()
        machine["vm_initialization"](*_CPU_POOLED)
        self._machine, self._main = machine, machine["main"]
        self.weights = library_weights(path)
        self._weight_tensors = [tvm_ffi.from_dlpack(weight) for weight in self.weights]

    def tensors(self, *inputs: np.ndarray) -> list[Any]:
        """The model's arguments for ``inputs`` (aligned copies where needed), weights included: for
        :meth:`run_tensors`, so a loop of runs converts its inputs once."""
        return [self._ffi.from_dlpack(_aligned(array)) for array in inputs] + self._weight_tensors

    def run_tensors(self, arguments: Sequence[Any]) -> Any:
        """Run ``main`` on :meth:`tensors`' arguments; its result as the runtime returns it."""
        return self._main(*arguments)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return _flat(self.run_tensors(self.tensors(*inputs)))


def _flat(result: Any) -> list[np.ndarray]:
    if hasattr(result, "__dlpack__"):
        return [np.from_dlpack(result)]
    return [array for item in result for array in _flat(item)]
