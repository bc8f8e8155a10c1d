"""Execution profiles: how often each block of machine code runs, observed under QEMU's user-mode emulation
with the project's TCG plugin (``block_counts.c``, built by ``scripts/setup_board.sh``).

A block is what QEMU translates at once: straight-line code from a start address up to a branch. The plugin
counts every execution inline (exact for a single thread) and records each block's bytes, so the code can
be priced afterwards without the binary (:mod:`.throughput`). :func:`profile_libraries` runs exported
libraries' ``main`` on the emulated board's Python, single-threaded, and keeps each library's own blocks,
each named after the module's function it lies in: TVM compiles a function ``NAME`` of a module into a
wrapper ``__tvm_ffi_NAME`` and a body ``NAME_compute_``, both counted as ``NAME``, and LLVM keeps no symbol
for some functions it made private (a kernel's parallel body may be one), so a block outside every symbol
goes to the function symbol before it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

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
LONGEST_X86_INSTRUCTION = 15  # bytes
# How TVM's code generator names the symbols of a module's function NAME: its FFI wrapper, its body
_WRAPPER_PREFIX, _BODY_SUFFIX = "__tvm_ffi_", "_compute_"


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


@dataclass(frozen=True)
class LibraryRun:
    """One run of an exported library's ``main``: on random arguments of the given shapes and dtypes (a
    kernel), or on a model's ``feed`` (its inputs by name, in ``main``'s order), its outputs kept."""

    library: Path
    argument_shapes: Sequence[Sequence[int]] = ()
    argument_dtypes: Sequence[str] = ()
    feed: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class LibraryProfile:
    """What one run of a library executed, the bytes its arguments and outputs take, and for a run on a
    feed its outputs and the functions the virtual machine called: per function name, its calls and the
    bytes of their tensor arguments (outputs included)."""

    profile: ExecutionProfile
    bytes_moved: int
    outputs: list[np.ndarray] | None = None
    calls: dict[str, tuple[int, int]] = field(default_factory=dict)


def profile_libraries(runs: Sequence[LibraryRun], arch: str = "aarch64") -> list[LibraryProfile]:
    """Run libraries exported by tvm_dse for ``arch`` (kernels or whole modules) once each, in one emulated
    Python process with one thread, and keep each library's own blocks, each named after the library's
    function it lies in. One process for many libraries: the emulated Python's start (seconds) is paid once.

    aarch64 code runs on the emulated board's Python; x86_64 code (to validate the method where it can be
    measured) on this machine's own Python under ``qemu-x86_64 -cpu max``, whose translator runs AVX2 but
    not AVX-512 code."""
    python = _emulated_python(arch)
    if shutil.which(LLVM_NM) is None:
        raise ProfilerError(f"{LLVM_NM} is missing; run {SETUP_SCRIPT}")
    with tempfile.TemporaryDirectory(prefix="tvm_dse_profile_") as work:
        folder = Path(work)
        jobs = []
        for index, run in enumerate(runs):
            job: dict[str, object] = {"library": str(Path(run.library).resolve())}
            if run.feed is not None:
                np.savez(folder / f"inputs{index}.npz", *run.feed.values())
                job.update(inputs=str(folder / f"inputs{index}.npz"), outputs=str(folder / f"outputs{index}.npz"))
            else:
                job["arguments"] = [[list(shape), dtype] for shape, dtype in zip(run.argument_shapes, run.argument_dtypes)]
            jobs.append(job)
        (folder / "jobs.json").write_text(json.dumps(jobs))
        profile = profile_command([*python, str(_RUNNER), str(folder / "jobs.json"), str(folder / "results.json")],
                                  {**os.environ, "TVM_NUM_THREADS": "1", "TVM_USE_RUNTIME_LIB": "1"})
        results = json.loads((folder / "results.json").read_text())
        outputs = [_outputs(folder / f"outputs{index}.npz") if run.feed is not None else None
                   for index, run in enumerate(runs)]
    return [LibraryProfile(_library_blocks(profile, Path(job["library"]), result["maps"], arch), result["bytes"],
                           output, {name: (count, moved) for name, (count, moved) in result["calls"].items()})
            for job, result, output in zip(jobs, results, outputs)]


def _emulated_python(arch: str) -> list[str]:
    """The command line of a Python with TVM's runtime, emulated for ``arch`` by QEMU's user mode."""
    if arch == "aarch64":
        return [str(board_python())]
    if arch == "x86_64":
        return ["qemu-x86_64", "-cpu", "max", sys.executable]
    raise ProfilerError(f"the profiler runs aarch64 and x86_64 code, not {arch}")


def _outputs(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{index}"] for index in range(len(saved.files))]


def _library_blocks(profile: ExecutionProfile, library: Path, maps: Sequence[str], arch: str) -> ExecutionProfile:
    """The blocks of ``profile`` in ``library``'s mappings (``/proc/self/maps`` lines), each named after the
    function it lies in, its code read from the library itself: QEMU 7.2 records x86 instructions' bytes
    short at times (a block's last instruction cut), so on x86 the code read runs the longest instruction's
    length past the block, and what prices it decodes only the block's own instructions."""
    mapped = [line.split() for line in maps]
    if not mapped:
        raise ProfilerError(f"the emulated Python did not map {library}")
    base = min(int(fields[0].split("-")[0], 16) - int(fields[2], 16) for fields in mapped)
    # every mapping of it: qemu-x86_64 shows the code's pages without their execute permission
    ranges = [tuple(int(bound, 16) for bound in fields[0].split("-")) for fields in mapped]
    symbols = _function_symbols(library)
    image, segments = library.read_bytes(), _loaded_segments(library)
    slack = 0 if arch == "aarch64" else LONGEST_X86_INSTRUCTION
    blocks = []
    for block in profile.blocks:
        if any(start <= block.address < end for start, end in ranges):
            address = block.address - base
            name = next((name for start, name in reversed(symbols) if start <= address), "")
            offset = next(file_offset + address - start for start, size, file_offset in segments
                          if start <= address < start + size)
            blocks.append(replace(block, function=name, code=image[offset:offset + len(block.code) + slack]))
    return ExecutionProfile(tuple(blocks))


def _loaded_segments(library: Path) -> list[tuple[int, int, int]]:
    """(address, size in the file, file offset) of each loaded segment of a 64-bit little-endian ELF file."""
    with open(library, "rb") as elf:
        header = elf.read(64)
        table, entry_size, entries = struct.unpack_from("<Q", header, 0x20)[0], *struct.unpack_from("<HH", header, 0x36)
        elf.seek(table)
        segments = []
        for _ in range(entries):
            kind, _, offset, address, _, file_size = struct.unpack_from("<IIQQQQ", elf.read(entry_size))
            if kind == 1:  # PT_LOAD
                segments.append((address, file_size, offset))
    return segments


def _function_symbols(library: Path) -> list[tuple[int, str]]:
    """(offset, name of the module's function it belongs to) of the library's defined function symbols, by
    offset."""
    listed = subprocess.run([LLVM_NM, "--defined-only", "--format=posix", str(library)],
                            capture_output=True, text=True, check=True).stdout
    symbols = []
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] in "tTwW" and not fields[0].startswith("$"):  # "$x": code, not a function
            symbols.append((int(fields[2], 16), fields[0].removeprefix(_WRAPPER_PREFIX).removesuffix(_BODY_SUFFIX)))
    return sorted(symbols)
