"""Exporting a compiled module as a shared library for its target (built in place for the host, through
the aarch64 cross compiler for a board), and loading one back on this machine.

A leaf module (it needs only the target), so the measurement builder's workers and the model builds
export the same way without importing each other.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import ContextManager, Sequence

import numpy as np
import tvm

from .errors import TvmDseError
from .deployed_library import library_weights, weights_object
from .native_output import lines_dropped
from .target import DseTarget
from .thread_pool import host_compiler, pool_object

AARCH64_CROSS_COMPILER = "aarch64-linux-gnu-gcc"
# A line TVM's runtime logs with a title and nothing after it ("[03:53:03] .../executable.cc:276: Warning:
# Scope Saving:"), dozens per exported Relax executable: it says nothing a user can act on.
_EMPTY_RUNTIME_WARNING = re.compile(rb"^\[[0-9:]+\] \S+:[0-9]+: Warning: [^:\n]*:\s*$")


def runtime_warnings_without_message_dropped() -> ContextManager[None]:
    """Hold back what is written to the process's standard error (file descriptor 2, where TVM's C++ runtime
    logs) in the ``with`` body, then write it through except the runtime's warnings that carry no message."""
    return lines_dropped(2, _EMPTY_RUNTIME_WARNING)


def export_library(executable: tvm.runtime.Executable, target: DseTarget, path: str | Path,
                   weights: Sequence[tvm.runtime.Tensor] = ()) -> Path:
    """Export a compiled module as a shared library for ``target``, cross-compiling for an aarch64 board; the
    library carries tvm_dse's thread pool, which runs its parallel loops (:mod:`tvm_dse.thread_pool`), and the
    ``weights`` its ``main`` takes after the inputs (:mod:`tvm_dse.deployed_library`; :func:`load_weights`)."""
    from tvm.support import cc

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if target.runs_on_host or not target.is_aarch64:
        compiler, fcompile = host_compiler(), None
    elif shutil.which(AARCH64_CROSS_COMPILER) is None:
        raise TvmDseError(f"exporting for {target.key} needs the cross compiler {AARCH64_CROSS_COMPILER}; "
                          "install it with: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross "
                          "(scripts/setup_board.sh does)")
    else:
        compiler, fcompile = AARCH64_CROSS_COMPILER, cc.cross_compiler(AARCH64_CROSS_COMPILER)
    # a new list each time: TVM appends the module's own object files to it
    addons = [str(pool_object(compiler))]
    with tempfile.TemporaryDirectory(prefix="tvm_dse_weights_") as folder:
        if weights:
            try:
                addons.append(str(weights_object([np.from_dlpack(weight) for weight in weights], compiler,
                                                 Path(folder))))
            except RuntimeError as error:
                raise TvmDseError(str(error)) from None
        with runtime_warnings_without_message_dropped():
            executable.export_library(str(path), fcompile=fcompile, addons=addons)
    return path


def load_library(path: str | Path) -> tvm.runtime.Module:
    """Load a library written by :func:`export_library` on this machine (for ``relax.VirtualMachine``)."""
    with runtime_warnings_without_message_dropped():
        return tvm.runtime.load_module(str(path))


def load_weights(path: str | Path) -> list[tvm.runtime.Tensor]:
    """The weights a library written by :func:`export_library` holds, on this machine's CPU: pass them to its
    ``main`` after the model's inputs. They view the library's memory as the process maps it (no copy)."""
    return [tvm.runtime.from_dlpack(weight) for weight in library_weights(path)]
