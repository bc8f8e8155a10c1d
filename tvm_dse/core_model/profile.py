"""Execution profiles: how often each block of machine code runs, observed under QEMU's user-mode emulation
with the project's TCG plugin (``block_counts.c``, built by ``scripts/setup_board.sh``).

A block is what QEMU translates at once: straight-line code from a start address up to a branch. The plugin
counts every execution inline (exact for a single thread) and records each block's bytes, so the code can
be priced afterwards without the binary (:mod:`.throughput`). :func:`profile_library` runs an exported
library's ``main`` on the emulated board's Python, single-threaded, and keeps the library's own blocks,
each named after the function it lies in: LLVM keeps no symbol for some functions it made private (a
kernel's parallel body may be one), so a block outside every symbol goes to the function symbol before it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..board import board_python
from ..errors import TvmDseError

SETUP_SCRIPT = "scripts/setup_board.sh"
PLUGIN = "libblock_counts.so"
LLVM_NM = "llvm-nm-19"
# QEMU's user-mode emulators read their -plugin option from this variable too: it reaches the emulator
# behind the board's launcher script
_PLUGIN_VARIABLE = "QEMU_PLUGIN"
_RUNNER = Path(__file__).with_name("library_runner.py")
PROFILE_TIMEOUT_S = 600.0


class ProfilerError(TvmDseError, RuntimeError):
    """The profiler is not installed, or the profiled program failed."""


@dataclass(frozen=True)
class Block:
    """One block of machine code: where it starts, its instructions and bytes, how often it ran, and the
    function symbol it lies in (where known)."""

    address: int
    instructions: int
    executions: int
    code: bytes
    function: str = ""


@dataclass(frozen=True)
class ExecutionProfile:
    """The blocks a run executed, each with its execution count."""

    blocks: tuple[Block, ...]

    @property
    def instructions(self) -> int:
        """Instructions executed in all."""
        return sum(block.instructions * block.executions for block in self.blocks)

    def by_function(self) -> dict[str, "ExecutionProfile"]:
        """The profile split by the function each block lies in."""
        functions: dict[str, list[Block]] = {}
        for block in self.blocks:
            functions.setdefault(block.function, []).append(block)
        return {name: ExecutionProfile(tuple(blocks)) for name, blocks in functions.items()}


def profiler_dir() -> Path:
    """Where ``scripts/setup_board.sh`` builds the plugin ($TVM_DSE_PROFILER_DIR or
    ~/.cache/tvm_dse/profiler)."""
    return Path(os.environ.get("TVM_DSE_PROFILER_DIR", Path.home() / ".cache" / "tvm_dse" / "profiler"))


def plugin_path() -> Path:
    """The built plugin; raises :class:`ProfilerError` when it has not been set up."""
    plugin = profiler_dir() / PLUGIN
    if not plugin.is_file():
        raise ProfilerError(f"the execution profiler is not set up ({plugin} is missing); run {SETUP_SCRIPT} "
                            "(needs root for apt-get) from the tvm_dse repository")
    return plugin


def read_profile(path: str | Path) -> ExecutionProfile:
    """A profile as the plugin writes it: one line per block, ``VADDR INSNS EXECUTIONS HEX``."""
    blocks = []
    for line in Path(path).read_text().splitlines():
        address, instructions, executions, code = line.split()
        blocks.append(Block(int(address, 16), int(instructions), int(executions), bytes.fromhex(code)))
    return ExecutionProfile(tuple(blocks))


def profile_command(argv: Sequence[str], environment: Mapping[str, str] | None = None,
                    timeout_s: float = PROFILE_TIMEOUT_S) -> ExecutionProfile:
    """Run ``argv`` under the profiler: ``argv`` starts a QEMU user-mode emulator (``qemu-aarch64 PROGRAM``,
    ``qemu-x86_64 PROGRAM``, or a launcher that execs one, such as the board's Python), which reads the plugin
    from the environment. Raises :class:`ProfilerError` when the program fails."""
    plugin = plugin_path()
    with tempfile.TemporaryDirectory(prefix="tvm_dse_profile_") as work:
        output = Path(work) / "profile.txt"
        run = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                             env={**(environment or os.environ), _PLUGIN_VARIABLE: f"{plugin},out={output}"})
        if run.returncode != 0 or not output.is_file():
            raise ProfilerError(f"{' '.join(map(str, argv))} failed under the profiler (exit {run.returncode}): "
                                f"{run.stderr.strip()[-2000:]}")
        return read_profile(output)


def profile_library(library: str | Path, argument_shapes: Sequence[Sequence[int]],
                    argument_dtypes: Sequence[str]) -> ExecutionProfile:
    """The blocks of an aarch64 library exported by tvm_dse (a kernel or a whole module) that one run of its
    ``main`` executes on the emulated board's Python with one thread, on random arguments of the given
    shapes and dtypes; each block named after the library's function it lies in."""
    library = Path(library).resolve()
    launcher = board_python()
    if shutil.which(LLVM_NM) is None:
        raise ProfilerError(f"{LLVM_NM} is missing; run {SETUP_SCRIPT}")
    with tempfile.TemporaryDirectory(prefix="tvm_dse_profile_") as work:
        arguments, maps = Path(work) / "arguments.json", Path(work) / "maps.txt"
        arguments.write_text(json.dumps([[list(shape), dtype] for shape, dtype in zip(argument_shapes, argument_dtypes)]))
        profile = profile_command([str(launcher), str(_RUNNER), str(library), str(arguments), str(maps)],
                                  {**os.environ, "TVM_NUM_THREADS": "1"})
        mapped = [line.split() for line in maps.read_text().splitlines()]
    if not mapped:
        raise ProfilerError(f"the board's Python did not map {library}")
    base = min(int(fields[0].split("-")[0], 16) - int(fields[2], 16) for fields in mapped)
    executable = [tuple(int(bound, 16) for bound in fields[0].split("-")) for fields in mapped if "x" in fields[1]]
    symbols = _function_symbols(library)
    blocks = []
    for block in profile.blocks:
        if any(start <= block.address < end for start, end in executable):
            offset = block.address - base
            name = next((name for start, name in reversed(symbols) if start <= offset), "")
            blocks.append(Block(block.address, block.instructions, block.executions, block.code, name))
    return ExecutionProfile(tuple(blocks))


def _function_symbols(library: Path) -> list[tuple[int, str]]:
    """(offset, name) of the library's defined functions, by offset."""
    listed = subprocess.run([LLVM_NM, "--defined-only", "--format=posix", str(library)],
                            capture_output=True, text=True, check=True).stdout
    symbols = []
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] in "tTwW" and not fields[0].startswith("$"):  # "$x": code, not a function
            symbols.append((int(fields[2], 16), fields[0]))
    return sorted(symbols)
