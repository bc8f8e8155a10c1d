"""Cycles per execution of blocks of machine code on a named core, from LLVM's machine-code analyzer.

``llvm-mca -mcpu=CORE`` simulates the core's scheduling model (its pipelines, latencies and issue width)
over a block run back to back, with every load hitting the cache and every branch predicted: a block's
cycles per iteration in that steady state. For the hot blocks of a kernel (its inner loops, run millions
of times) that is the throughput the core sustains while nothing stalls on memory; a block that runs once
is priced the same way, which understates it, but such blocks carry a negligible share of a kernel.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from typing import Sequence

from .profile import ExecutionProfile, ProfilerError

LLVM_MC = "llvm-mc-19"
LLVM_MCA = "llvm-mca-19"
# Iterations llvm-mca simulates per block: its steady state, the first iteration's latency spread over them
MCA_ITERATIONS = 100
_REGION = re.compile(r"^\[(\d+)\] Code Region - b(\d+)$")
_ITERATIONS = re.compile(r"^Iterations:\s+(\d+)$")
_TOTAL_CYCLES = re.compile(r"^Total Cycles:\s+(\d+)$")


def block_cycles(codes: Sequence[bytes], triple: str, mcpu: str, mattr: Sequence[str] = (),
                 instructions: Sequence[int] | None = None) -> list[float]:
    """Cycles per execution of each block of machine code (its bytes) on ``mcpu``: llvm-mca's steady state
    of the block run back to back. ``triple`` is the code's (``aarch64-linux-gnu``, ``x86_64-linux-gnu``),
    ``mattr`` the features it was built with (``+neon``, ``+dotprod``, ...); with ``instructions``, only
    the first that many instructions of each block's bytes are its own."""
    if not codes:
        return []
    features = ["-mattr=" + ",".join(mattr)] if mattr else []
    listings = _disassemble_blocks(codes, triple, features, instructions)
    source = "".join(f"# LLVM-MCA-BEGIN b{index}\n{listing}# LLVM-MCA-END\n" for index, listing in enumerate(listings)
                     if listing)
    analysed = subprocess.run([LLVM_MCA, f"-mtriple={triple}", f"-mcpu={mcpu}", *features,
                               f"-iterations={MCA_ITERATIONS}", "-skip-unsupported-instructions=any",
                               "-resource-pressure=0", "-instruction-info=0"],
                              input=source, capture_output=True, text=True)
    if analysed.returncode != 0:
        raise ProfilerError(f"{LLVM_MCA} could not analyse the blocks for {mcpu}: {analysed.stderr.strip()[-2000:]}")
    cycles = [0.0] * len(codes)
    block = iterations = None
    for line in analysed.stdout.splitlines():
        if match := _REGION.match(line.strip()):
            block = int(match.group(2))
        elif match := _ITERATIONS.match(line.strip()):
            iterations = int(match.group(1))
        elif (match := _TOTAL_CYCLES.match(line.strip())) and block is not None and iterations:
            cycles[block] = int(match.group(1)) / iterations
            block = iterations = None
    return cycles


def modeled_cycles(profile: ExecutionProfile, triple: str, mcpu: str, mattr: Sequence[str] = ()) -> float:
    """The profile's cycles on ``mcpu``: each block's executions times its cycles per execution."""
    return sum(function_cycles(profile, triple, mcpu, mattr).values())


def function_cycles(profile: ExecutionProfile, triple: str, mcpu: str, mattr: Sequence[str] = ()) -> dict[str, float]:
    """The profile's cycles on ``mcpu`` per function its blocks lie in (see :meth:`ExecutionProfile.by_function`)."""
    per_block = block_cycles([block.code for block in profile.blocks], triple, mcpu, mattr,
                             [block.instructions for block in profile.blocks])
    cycles: dict[str, float] = defaultdict(float)
    for block, per_execution in zip(profile.blocks, per_block):
        cycles[block.function] += block.executions * per_execution
    return dict(cycles)


def _disassemble_blocks(codes: Sequence[bytes], triple: str, features: list[str],
                        instructions: Sequence[int] | None) -> list[str]:
    """Each block's instructions as assembly llvm-mca reads, one per line. On aarch64 every instruction takes
    4 bytes, so all blocks are disassembled at once and split by their lengths; on other architectures each
    block on its own, its first ``instructions`` kept."""
    if not triple.startswith("aarch64"):
        listings = []
        for index, code in enumerate(codes):
            lines = _disassemble(code, triple, features, complete=instructions is None)
            listings.append("".join(line + "\n" for line in lines[:instructions[index] if instructions else None]))
        return listings
    if instructions is not None:
        codes = [code[:4 * count] for code, count in zip(codes, instructions)]
    lines = _disassemble(b"".join(codes), triple, features)
    if len(lines) * 4 != sum(len(code) for code in codes):
        raise ProfilerError(f"{LLVM_MC} decoded {len(lines)} instructions from {sum(map(len, codes))} bytes of "
                            f"{triple} code: some are not valid for {' '.join(features) or 'its default features'}")
    listings, start = [], 0
    for code in codes:
        listings.append("".join(line + "\n" for line in lines[start:start + len(code) // 4]))
        start += len(code) // 4
    return listings


def _disassemble(code: bytes, triple: str, features: list[str], complete: bool = True) -> list[str]:
    """The instructions of ``code``, one per line; where not ``complete``, bytes after the wanted
    instructions may not decode."""
    listed = subprocess.run([LLVM_MC, "--disassemble", f"-triple={triple}", *features],
                            input=" ".join(f"0x{byte:02x}" for byte in code), capture_output=True, text=True)
    if listed.returncode != 0 or (complete and "invalid instruction encoding" in listed.stderr):
        raise ProfilerError(f"{LLVM_MC} could not disassemble {triple} code ({code.hex()}): "
                            f"{listed.stderr.strip()[:300]}")
    return [line.strip() for line in listed.stdout.splitlines() if line.strip() and not line.strip().startswith(".")]
