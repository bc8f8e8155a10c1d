"""Kernels priced as the built module runs them.

A kernel timed alone, on its own arguments, runs from caches that hold its weights; in the module the
weights and activations of every other layer pass through the caches between two of its runs. On a
2-core Zen 5 the median kernel took 1.05-1.5x its isolated time in ResNet-18 (on different days), 1.2x in
ResNet-50 and 1.3-1.6x in MobileNetV2, and a space priced by isolated kernels predicted ResNet-18 and
ResNet-50 a quarter under what they measured. So on a target that runs here, the space is priced from the
modules themselves: uniform plans of the space (one strategy wherever it applies; see pipeline.py for
which) are built and run in steady state with the virtual machine's instrument hook timing every function
call; each (workload, strategy) option that ran takes its median time per call in those modules, its fused
epilogue and any conversion folded into it included. A pool or spatial mean runs in the layout of what it
reads, so lowering names it after the vertex (a kernel or a join) whose choice decides that layout: each
option of that vertex also carries the pools' time in its output layout. What no choice changes in those
plans (reshapes, operators fixed to the model's layout, the runtime's own calls between functions) becomes
the space's ``fixed_ms``. Of several profiles of one module (taken in rounds, see pipeline.py) the quietest
is kept, as a whole model's fastest round is.

The hook costs a few microseconds per call; the instrumented runs' total is set against a steady-state
timing of the same module without the hook, and the difference taken off each call evenly.

On a target priced by the cost model (:mod:`tvm_dse.core_model`) the uniform plans' modules are priced the
same way, function by function, from one run of each under emulation (:meth:`ModuleProfile.modeled`): the
pools, concatenations and other operators outside the tunable kernels are then modeled as the kernels are.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from statistics import median
from typing import Mapping, Sequence

import numpy as np

from .build import BuiltModel
from .core_model import module_ms
from .graph import DseGraph
from .lower import followed_vertex, kernel_vertex
from .output_fusion import CONVERSION_FUNC_PREFIX
from .plan import Plan
from .space import DesignSpace, Option, SpaceNode
from .timing import SteadyState, quietest

PROFILE_RUNS = 20
# Each profile's unhooked timing: modules are profiled in several rounds (see pipeline.py) and the quietest
# kept, so one round needs fewer samples than a reported latency
PROFILE_TIMING = SteadyState(repeats=5)


@dataclass(frozen=True)
class ModuleProfile:
    """One module's steady-state run, per function: ms per call (the hook's cost taken off) and calls per
    run; ``total_ms`` is the module's steady-state latency without the hook; ``disturbed`` when that
    timing was (see :class:`~tvm_dse.timing.Timing`)."""

    functions: dict[str, tuple[float, int]]
    total_ms: float
    disturbed: bool = False

    @classmethod
    def quietest(cls, profiles: Sequence["ModuleProfile"]) -> "ModuleProfile":
        """Of several profiles of one module (rounds apart in time), the one of least total, as a whole
        model keeps its fastest round (:func:`~tvm_dse.timing.quietest`): disturbed where it was, or where
        the machine's speed changed between rounds."""
        fastest, drifted = quietest(profiles, lambda profile: profile.total_ms)
        return replace(fastest, disturbed=fastest.disturbed or drifted)

    @classmethod
    def modeled(cls, functions: Mapping[str, tuple[float, int]]) -> "ModuleProfile":
        """The profile of a module priced by the cost model: its functions' modeled ms per call and calls per
        run, its total their sum (the model leaves out the runtime's work between the calls)."""
        return cls(dict(functions), module_ms(functions))

    def kernel_calls(self) -> list[tuple[int, float, int]]:
        """(vertex id in its name, ms per call, calls per run) of every tunable node's kernel function."""
        return [(vertex_id, ms, calls) for name, (ms, calls) in self.functions.items()
                if (vertex_id := kernel_vertex(name)) is not None]

    def follower_ms(self) -> dict[tuple[int, str], float]:
        """ms per run of the pools that ran in the layout a vertex chose, per (vertex id, layout)."""
        totals: dict[tuple[int, str], float] = defaultdict(float)
        for name, (ms, calls) in self.functions.items():
            followed = None if kernel_vertex(name) is not None else followed_vertex(name)
            if followed is not None:
                totals[followed] += ms * calls
        return dict(totals)

    def fixed_ms(self) -> float:
        """ms per run outside the tunable kernels, the standalone conversions and the pools following a
        choice (the space prices those); 0 where those took the whole steady-state time: the hook's overhead
        is taken off every call evenly, and the runtime's own calls cost less than that, so their share can
        come out below 0."""
        priced = sum(ms * calls for name, (ms, calls) in self.functions.items()
                     if kernel_vertex(name) is not None or name.startswith(CONVERSION_FUNC_PREFIX))
        return max(0.0, self.total_ms - priced - sum(self.follower_ms().values()))


def profile_module(built: BuiltModel, feed: Mapping[str, np.ndarray], settings: SteadyState = PROFILE_TIMING,
                   runs: int = PROFILE_RUNS) -> ModuleProfile:
    """Time every function call of ``built`` (on this machine) over ``runs`` runs after its steady-state
    timing, which also warms it up."""
    timing = built.time(feed, settings)
    total_ms = timing.median_ms
    samples = built.call_times(feed, runs)
    functions = {name: (1e3 * float(np.median(seconds)), len(seconds) // runs) for name, seconds in samples.items()}
    calls = sum(count for _, count in functions.values())
    hooked = sum(ms * count for ms, count in functions.values())
    overhead = max(0.0, (hooked - total_ms) / calls) if calls else 0.0
    return ModuleProfile({name: (max(0.0, ms - overhead), count) for name, (ms, count) in functions.items()},
                         total_ms, timing.disturbed)


def price_in_model(space: DesignSpace, graph: DseGraph, profiles: Sequence[tuple[Plan, ModuleProfile]]) -> DesignSpace:
    """``space`` repriced from the ``profiles`` of plans of its options: each tunable option that ran
    (its workload, strategy and decisions) takes the median of its times per call in the modules (over the
    plans and the nodes of its workload); one that never ran (a kernel tuned since) keeps its isolated time
    scaled by the median in-module/isolated ratio of those that did. Every option of a kernel or join adds
    the median time of the pools reading its output in its output layout (where no module ran them in that
    layout: the median over the layouts that did). ``fixed_ms`` is the median of the modules' time outside
    the choices (their range is kept in the metadata). An option priced by modules whose timings were
    mostly disturbed is marked disturbed."""
    vertices = {vertex.name: vertex for vertex in graph.vertices}
    by_id = {vertex.id: vertex for vertex in graph.vertices}
    observed: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    disturbed: dict[tuple[str, str, str], list[bool]] = defaultdict(list)  # per module it ran in
    for plan, module in profiles:
        for vertex_id, ms, calls in module.kernel_calls():
            vertex = by_id[vertex_id]
            choice = plan.nodes[vertex.name]
            kernel = _kernel(vertex.workload.key(), choice.strategy, choice.decisions)
            observed[kernel].extend([ms] * calls)
            disturbed[kernel].append(module.disturbed)
    if not observed:
        return space
    pools: dict[tuple[int, str], list[float]] = defaultdict(list)
    for _, module in profiles:
        for followed, ms in module.follower_ms().items():
            pools[followed].append(ms)
    pools_by_vertex: dict[int, list[float]] = defaultdict(list)
    for (vertex_id, _), times in pools.items():
        pools_by_vertex[vertex_id].extend(times)

    def pools_ms(node_name: str, option: Option) -> float:
        vertex_id = vertices[node_name].id
        times = pools.get((vertex_id, option.output_layout)) or pools_by_vertex.get(vertex_id)
        return median(times) if times else 0.0
    ratios = []
    for node in space.nodes:
        if node.is_tunable:
            for option in node.options:
                times = observed.get(_kernel(vertices[node.name].workload.key(), option.name, option.decisions))
                if times and option.latency_ms > 0:
                    ratios.append(median(times) / option.latency_ms)
    scale = median(ratios) if ratios else 1.0

    def priced(node: SpaceNode, option: Option) -> Option:
        if node.kind == "join":  # free but for the pools after it
            return replace(option, latency_ms=pools_ms(node.name, option))
        if not node.is_tunable:
            return option
        kernel = _kernel(vertices[node.name].workload.key(), option.name, option.decisions)
        if kernel in observed:  # the median over the rounds of profiling: priced by the modules, not its timing
            return replace(option, latency_ms=median(observed[kernel]) + pools_ms(node.name, option),
                           disturbed=_mostly(disturbed[kernel]))
        return replace(option, latency_ms=option.latency_ms * scale + pools_ms(node.name, option))

    fixed = [module.fixed_ms() for _, module in profiles]
    repriced = space.repriced(priced, fixed_ms=median(fixed))
    # what stays fixed (the runtime's calls, reshapes, ...) still differs a little between the modules:
    # how far says how much one figure for every plan can miss
    repriced.metadata["priced_in_model"] = {
        "modules": len(profiles), "options_observed": len(ratios), "isolated_scale": scale,
        "options": sum(len(node.options) for node in space.nodes if node.is_tunable),
        "vertices_with_pools": len({vertex_id for vertex_id, _ in pools}), "fixed_ms_range": [min(fixed), max(fixed)]}
    return repriced


def _mostly(flags: Sequence[bool]) -> bool:
    """Whether most of ``flags`` are set: a median of timings is disturbed when most of them were."""
    return 2 * sum(flags) > len(flags)


def _kernel(workload_key: str, strategy: str, decisions: Mapping[str, object] | None) -> tuple[str, str, str]:
    return workload_key, strategy, json.dumps(dict(decisions or {}), sort_keys=True)
