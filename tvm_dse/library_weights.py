"""A model library's weights: stored in the exported shared library itself, in a read-only data section beside
its code, and read back as arrays viewing the loaded library's memory, without a copy.

Held in TVM's constant pool instead, a library's weights were in memory four times while it loaded (the
mapped library, TVM's copy of its embedded module, the deserialized constants) and twice after. Stored
here they are file pages of the mapped library, read on first touch and shared between processes; the
model's ``main`` takes them as parameters after its inputs.

A leaf with numpy and the standard library only: the profiler's runner and the benchmarks' runtime worker,
which run without tvm_dse, load this file by its path.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

DATA_SYMBOL = "tvm_dse_weights"
# A JSON list, one {"offset", "shape", "dtype"} per weight in main's order, ending in a zero byte
INDEX_SYMBOL = "tvm_dse_weights_index"
# TVM's kernels assume their buffers are aligned so (its default data alignment)
ALIGNMENT = 64

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
