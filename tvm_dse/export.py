"""Exporting a compiled module as a shared library for its target: built in place for the host, through
the aarch64 cross compiler for a board.

A leaf module (it needs only the target), so the measurement builder's workers and the model builds
export the same way without importing each other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tvm

from .errors import TvmDseError
from .target import DseTarget

AARCH64_CROSS_COMPILER = "aarch64-linux-gnu-gcc"


def export_library(executable: tvm.runtime.Executable, target: DseTarget, path: str | Path) -> Path:
    """Export a compiled module as a shared library for ``target``, cross-compiling for an aarch64 board."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if target.runs_on_host or not target.is_aarch64:
        executable.export_library(str(path))
        return path
    if shutil.which(AARCH64_CROSS_COMPILER) is None:
        raise TvmDseError(f"exporting for {target.key} needs the cross compiler {AARCH64_CROSS_COMPILER}; "
                          "install it with: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross "
                          "(scripts/setup_board.sh does)")
    from tvm.support import cc

    executable.export_library(str(path), fcompile=cc.cross_compiler(AARCH64_CROSS_COMPILER))
    return path
