"""Candidates: what to build and measure on a target, and the key naming its measurement in a store.

A :class:`Candidate` is one strategy on one workload with its schedule decisions; a :class:`Conversion`
is one activation layout conversion, measured the same way so the search can price it.
"""

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

    @property
    def workload_key(self) -> str:
        return self.workload.key()

    def workload_dict(self) -> dict[str, Any]:
        return self.workload.to_dict()

    def spec(self) -> dict[str, Any]:
        """What a builder worker needs to build it (plain data)."""
        return {"kind": "strategy", "strategy": self.strategy, "workload": self.workload.to_dict(),
                "decisions": dict(self.decisions) if self.decisions is not None else None}

    def resolved(self, target: DseTarget) -> "Candidate":
        """The same candidate with concrete decisions (the default ones resolved by scheduling, no compile)."""
        if self.decisions is not None:
            return self
        return Candidate(self.workload, self.strategy, default_decisions(self.strategy, self.workload, target))

    @property
    def schedule_version(self) -> int:
        from ..strategies import get_strategy

        return get_strategy(self.strategy).schedule_version

    def key(self, target: DseTarget) -> str:
        """What a measurement of this candidate is stored under: target, workload, strategy and its schedule
        version, decisions, TVM."""
        if self.decisions is None:
            raise ValueError(f"resolve the default decisions of {self.describe()} before keying it")
        return measurement_key(target.key, self.workload.key(), self.strategy, self.schedule_version,
                               self.decisions)


# what a layout conversion's "strategy" name starts with in a measurement record
CONVERSION_PREFIX = "convert_"


@dataclass(frozen=True)
class Conversion:
    """Converting an activation of logical NCHW shape ``shape`` from ``source`` to ``destination`` layout
    (an fp32 one to 8-bit codes where the destination is a ``_u8`` layout: measured with placeholder
    quantization values, which do not change its speed)."""

    shape: tuple[int, ...]
    source: str
    destination: str

    @property
    def strategy(self) -> str:
        return f"{CONVERSION_PREFIX}{self.source}_to_{self.destination}"

    @property
    def decisions(self) -> dict[str, Any]:
        return {}

    schedule_version = 1

    @property
    def workload_key(self) -> str:
        return "tensor_" + "x".join(map(str, self.shape)) + "_float32"

    def workload_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def describe(self) -> str:
        return f"conversion {self.source}->{self.destination} of {'x'.join(map(str, self.shape))}"

    def spec(self) -> dict[str, Any]:
        return {"kind": "conversion", "shape": list(self.shape), "source": self.source,
                "destination": self.destination}

    def resolved(self, target: DseTarget) -> "Conversion":
        return self

    def key(self, target: DseTarget) -> str:
        return measurement_key(target.key, self.workload_key, self.strategy, self.schedule_version, {})


def measurement_key(target_key: str, workload_key: str, strategy: str, schedule_version: int,
                    decisions: Mapping[str, Any], tvm_version: str | None = None) -> str:
    decisions_text = json.dumps(decisions, sort_keys=True, separators=(",", ":"))
    return "|".join([target_key, workload_key, f"{strategy}@{schedule_version}", decisions_text,
                     tvm_version or tvm.__version__])


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
