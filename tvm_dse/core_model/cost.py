"""From a profile to milliseconds on a named core: the model's one rule.

A kernel's compute time is its modeled cycles (:func:`~.throughput.modeled_cycles`: every block's
executions x its cycles per execution on the core, from one thread's run) over the core's clock, divided by
the cores it may use: tvm_dse's kernels split their outer loop evenly over the cores, so the model takes
their compute as scaling perfectly. Its memory time is the bytes it must move (its arguments and outputs,
read or written once) over the bandwidth the cores share, which does not scale, where they do not fit in
the last-level cache (a kernel run again and again, as kernels are measured, finds in the cache what fits
there). The modeled latency is the larger of the two. Clock, bandwidth and cache come from the target's
preset (:data:`tvm_dse.target.PRESETS`: a typical board of that core), or, for a target given by its
options, from the preset named after its core; an aarch64 target that names no core is modeled as
:data:`GENERIC_AARCH64_PRESET`'s, and says so.
A whole module is priced function by function, each call by the same rule (its cycles, and the bytes of
its arguments and outputs, per call): a module's modeled latency is the sum over the functions it calls;
the virtual machine's own work between them (allocations, shape checks) is left out.
Caches beyond what llvm-mca assumes (every load a hit), branch mispredictions and the threads' start-up are
left out: what the model's validation measures is how far that carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import TargetError
from ..target import PRESETS, DseTarget

# Bumped when the rule or the profiler changes what it yields: modeled records of another version are not reused
MODEL_VERSION = 1
# The folder of the tuning logs that keeps modeled records, apart from measurements
MODELED_LOGS = f"modeled-v{MODEL_VERSION}"
# The board a generic aarch64 target (``llvm -mtriple=aarch64-linux-gnu``, no -mcpu) is modeled as: the
# board class whose published figures the model is set beside (benchmarks/arm_model.py)
GENERIC_AARCH64_PRESET = "rpi4"
# How far the method's estimates were from measurements where both can be had: x86 kernels on a host
# (benchmarks/arm_model.py --validate-on-host, whose table is benchmarks/arm_model_validation.md)
HOST_VALIDATION = ("validated on an x86 host (AMD EPYC Zen 4, 186 kernels of ResNet-18 and MobileNetV2, one "
                   "thread): rank correlation 0.99 with measured latencies, median error 8%")


@dataclass(frozen=True)
class Core:
    """The core a cost is modeled for: its name for llvm-mca, the code's triple and features, its clock,
    the cores a model may use, the memory bandwidth they share, their last-level cache, and why this core
    where the target named none."""

    mcpu: str
    triple: str
    mattr: tuple[str, ...]
    clock_ghz: float
    cores: int
    bandwidth_gbs: float
    cache_mb: float
    assumed: str = ""

    @classmethod
    def of(cls, target: DseTarget) -> "Core":
        """The core of an aarch64 target (:data:`GENERIC_AARCH64_PRESET`'s where it names none); raises
        TargetError when its clock and bandwidth are unknown."""
        if not target.is_aarch64:
            raise TargetError(f"the cost model prices aarch64 cores; {target.key} is not one")
        if not target.mcpu:
            board = PRESETS[GENERIC_AARCH64_PRESET]
            return cls(board.options["mcpu"], target.triple, target.mattr, board.clock_ghz, board.options["num-cores"],
                       board.bandwidth_gbs, board.cache_mb,
                       assumed=f"{target.key} names no core: modeled as a {board.description}; give -mcpu or a "
                               "preset to model another")
        preset = PRESETS.get(target.preset or "") or PRESETS.get(target.mcpu)
        if preset is None or None in (preset.clock_ghz, preset.bandwidth_gbs, preset.cache_mb):
            known = ", ".join(name for name, p in PRESETS.items() if p.clock_ghz is not None)
            raise TargetError(f"the cost model knows no clock and memory bandwidth for {target.mcpu} (cores and "
                              f"boards it knows: {known}): give rpc= a tracker and key (or a direct host:port) "
                              "of a board to measure it on")
        return cls(target.mcpu, target.triple, target.mattr, preset.clock_ghz, target.num_cores or 1,
                   preset.bandwidth_gbs, preset.cache_mb)

    def describe(self) -> str:
        return (f"{self.cores}x {self.mcpu} at {self.clock_ghz:.3g} GHz, {self.bandwidth_gbs:.3g} GB/s, "
                f"{self.cache_mb:g} MB cache" + (f" ({self.assumed})" if self.assumed else ""))


@dataclass(frozen=True)
class ModeledCost:
    """A modeled latency and what it is made of."""

    cycles: float
    bytes_moved: int
    compute_ms: float
    memory_ms: float

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)


def modeled_cost(cycles: float, bytes_moved: int, core: Core) -> ModeledCost:
    """The model's latency of code that ran ``cycles`` on one core and moves ``bytes_moved``."""
    from_memory = bytes_moved if bytes_moved > core.cache_mb * 2**20 else 0
    return ModeledCost(cycles, bytes_moved, cycles / (core.clock_ghz * 1e6) / core.cores,
                       from_memory / (core.bandwidth_gbs * 1e6))


def function_costs(cycles: Mapping[str, float], calls: Mapping[str, tuple[int, int]],
                   core: Core) -> dict[str, tuple[float, int]]:
    """A module's functions priced per call: for each function called (``calls``: its calls and the bytes
    of their arguments and outputs) whose code ran (``cycles``, in all its calls), its modeled ms per call
    and its calls."""
    return {name: (modeled_cost(cycles[name] / count, moved // count, core).ms, count)
            for name, (count, moved) in calls.items() if count and name in cycles}


def module_ms(functions: Mapping[str, tuple[float, int]]) -> float:
    """A module's modeled latency from its functions' modeled ms per call and calls (:func:`function_costs`):
    the sum over its calls."""
    return sum(ms * calls for ms, calls in functions.values())
