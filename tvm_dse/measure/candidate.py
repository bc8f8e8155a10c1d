"""Candidates: one (workload, strategy, decisions) to build and measure on a target, and the key that
names its measurement in a store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import tvm

from ..target import DseTarget
from ..workload import Workload


@dataclass(frozen=True)
class Candidate:
    """A kernel to measure. ``decisions`` None means the strategy's default schedule for the target."""

    workload: Workload
    strategy: str
    decisions: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def describe(self) -> str:
        return f"{self.strategy} on {self.workload.describe()}"

    def resolved(self, target: DseTarget) -> "Candidate":
        """The same candidate with concrete decisions (the default ones resolved by scheduling, no compile)."""
        if self.decisions is not None:
            return self
        return Candidate(self.workload, self.strategy, default_decisions(self.strategy, self.workload, target))

    def key(self, target: DseTarget) -> str:
        """What a measurement of this candidate is stored under: target, workload, strategy, decisions, TVM."""
        if self.decisions is None:
            raise ValueError(f"resolve the default decisions of {self.describe()} before keying it")
        return measurement_key(target.key, self.workload.key(), self.strategy, self.decisions)


def measurement_key(target_key: str, workload_key: str, strategy: str, decisions: Mapping[str, Any],
                    tvm_version: str | None = None) -> str:
    decisions_text = json.dumps(decisions, sort_keys=True, separators=(",", ":"))
    return "|".join([target_key, workload_key, strategy, decisions_text, tvm_version or tvm.__version__])


def default_decisions(strategy: str, workload: Workload, target: DseTarget) -> dict[str, Any]:
    """The decisions a strategy's default schedule makes for ``workload`` on ``target``."""
    from tvm import s_tir

    from ..strategies import get_strategy
    from ..strategies.base import Decider
    from ..strategies.kernel import kernel_prim_func

    implementation = get_strategy(strategy)
    sch = s_tir.Schedule(kernel_prim_func(implementation, workload, target))
    decider = Decider(sch, {})
    implementation.schedule(sch, workload, target, decider)
    return decider.chosen
