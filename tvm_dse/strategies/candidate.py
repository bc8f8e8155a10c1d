"""Strategies as measurement candidates: a :class:`Candidate` is one strategy on one workload with its
schedule decisions, built for the measurement builder by :func:`build_candidate` (registered for the kind
``"kernel"`` when this module is imported), and :func:`schedule_versions` says which records of strategies
price kernels that are still built today."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from tvm import s_tir

from ..layouts import Layout
from ..measure import BuildOutput, measurement_key, register_build_function
from ..target import DseTarget
from ..workload import Workload
from .base import Decider
from .kernel import build_kernel, kernel_prim_func, model_shapes
from .registry import all_strategies, get_strategy


@dataclass(frozen=True)
class Candidate:
    """A kernel to measure. ``decisions`` None means the strategy's default schedule for the target."""

    kind: ClassVar[str] = "kernel"

    workload: Workload
    strategy: str
    decisions: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def describe(self) -> str:
        return f"{self.strategy} on {self.workload.describe()}"

    @property
    def workload_key(self) -> str:
        return self.workload.key()

    def workload_dict(self) -> dict[str, Any]:
        return self.workload.to_dict()

    def spec(self) -> dict[str, Any]:
        """What :func:`build_candidate` needs to build it in a builder worker (plain data)."""
        return {"strategy": self.strategy, "workload": self.workload.to_dict(),
                "decisions": dict(self.decisions) if self.decisions is not None else None}

    def resolved(self, target: DseTarget) -> "Candidate":
        """The same candidate with concrete decisions (the default ones resolved by scheduling, no compile)."""
        if self.decisions is not None:
            return self
        return Candidate(self.workload, self.strategy, default_decisions(self.strategy, self.workload, target))

    @property
    def schedule_version(self) -> int:
        return get_strategy(self.strategy).schedule_version

    def key(self, target: DseTarget, thread_pool: str) -> str:
        """What a measurement of this candidate on ``thread_pool`` is stored under: target, workload, strategy
        and its schedule version, decisions, thread pool, TVM."""
        if self.decisions is None:
            raise ValueError(f"resolve the default decisions of {self.describe()} before keying it")
        return measurement_key(target.key, self.workload.key(), self.strategy, self.schedule_version,
                               self.decisions, thread_pool)


def default_decisions(strategy: str, workload: Workload, target: DseTarget) -> dict[str, Any]:
    """The decisions a strategy's default schedule makes for ``workload`` on ``target``."""
    implementation = get_strategy(strategy)
    sch = s_tir.Schedule(kernel_prim_func(implementation, workload, target))
    decider = Decider(sch, {})
    implementation.schedule(sch, workload, target, decider)
    return decider.chosen


def schedule_versions() -> dict[str, int]:
    """The schedule version of every registered strategy: a record of another version of its strategy (or of
    an unknown strategy) prices a kernel that is no longer built (see ``Record.schedule_is_current``)."""
    return {strategy.name: strategy.schedule_version for strategy in all_strategies()}


def build_candidate(spec: dict[str, Any], target: DseTarget) -> BuildOutput:
    """Build a :class:`Candidate` from its ``spec()``: the kernel, with arguments in the strategy's layouts
    (data, packed weights, output)."""
    workload = Workload.from_dict(spec["workload"])
    built = build_kernel(spec["strategy"], workload, target, decisions=spec["decisions"])
    layouts = built.strategy.layouts(workload, target)
    data_shape, _, output_shape = model_shapes(workload)
    data_layout = Layout.parse(layouts.data)
    shapes = [list(data_layout.shape(data_shape)), *(list(s) for s, _ in built.packed_weights),
              list(Layout.parse(layouts.output).shape(output_shape))]
    dtypes = [data_layout.dtype, *(d for _, d in built.packed_weights), "float32"]
    return BuildOutput(built.kernel, shapes, dtypes)


register_build_function(Candidate.kind, build_candidate)
