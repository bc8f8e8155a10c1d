"""Per-layer sensitivity: for every node and reduced precision (int8, fp16) it has options in, the user
metric's loss when that node alone runs in that precision and every other node runs its fastest fp32
option; each measured on a real build. The losses become the options' ``accuracy_loss`` in the design
space, which the searchers bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..frontend import Model
from ..graph import DseGraph
from ..lower import build_plan
from ..plan import NodeChoice, Plan
from ..progress import Progress
from ..space import DesignSpace, Option
from ..strategies import get_strategy
from ..target import DseTarget
from .bound import AccuracyBound
from .calibration import Calibration


@dataclass
class Sensitivity:
    """The fp32 plan's score and, per node and reduced precision, the score with that node alone in it."""

    metric: str
    fp32_score: float
    scores: dict[str, dict[str, float]]  # node -> precision -> score

    def loss(self, node: str, precision: str) -> float:
        """The metric's loss of running ``node`` in ``precision`` (0 where it did not get worse)."""
        return max(0.0, self.fp32_score - self.scores[node][precision])

    def apply(self, space: DesignSpace) -> None:
        """Set every reduced-precision option's ``accuracy_loss`` in ``space`` (in place)."""
        for node in (n for n in space.nodes if n.is_tunable):
            for option in node.options:
                precision = _precision(option)
                if precision in self.scores.get(node.name, {}):
                    option.accuracy_loss = self.loss(node.name, precision)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "fp32_score": self.fp32_score,
                "nodes": {name: {precision: {"score": score, "loss": self.loss(name, precision)}
                                 for precision, score in by_precision.items()}
                          for name, by_precision in self.scores.items()}}


def _precision(option: Option) -> str:
    return get_strategy(option.name).precision


def _reduced(option: Option) -> bool:
    return get_strategy(option.name).reduced_precision


def _fastest(options: list[Option]) -> NodeChoice:
    best = min(options, key=lambda o: o.latency_ms)
    return NodeChoice(best.name, best.decisions)


def measure_sensitivity(model: Model, graph: DseGraph, space: DesignSpace, target: DseTarget,
                        calibration: Calibration | None, accuracy: AccuracyBound,
                        show_progress: bool = True) -> Sensitivity:
    """Score the fastest fp32 plan of ``space`` and, for each node and reduced precision it has options
    in, the same plan with that node on its fastest option of that precision (built for ``target``, run
    on this machine). ``calibration`` is needed where int8 options are."""
    tunable = [node for node in space.nodes if node.is_tunable]
    base = {node.name: _fastest([o for o in node.options if not _reduced(o)]) for node in tunable}
    variants = [(node, precision) for node in tunable
                for precision in sorted({_precision(o) for o in node.options if _reduced(o)})]

    def score(choices: dict[str, NodeChoice]) -> float:
        plan = Plan.create(model, target, choices)
        if calibration is not None:
            plan.calibrate(calibration)
        built = build_plan(model, plan, target, graph)
        return accuracy.score(model, built.run)

    progress = Progress(1 + len(variants), "per-layer sensitivity (builds)") if show_progress else None
    fp32_score = score(base)
    if progress is not None:
        progress.advance(1, note=f"fp32 {fp32_score:.4f}")
    scores: dict[str, dict[str, float]] = {}
    for node, precision in variants:
        choice = _fastest([o for o in node.options if _precision(o) == precision])
        scores.setdefault(node.name, {})[precision] = score({**base, node.name: choice})
        if progress is not None:
            progress.advance(1, note=f"{node.name} {precision} {scores[node.name][precision]:.4f}")
    if progress is not None:
        progress.close()
    return Sensitivity(accuracy.metric_name, fp32_score, scores)


def int8_plan(model: Model, graph: DseGraph, target: DseTarget, calibration: Calibration,
              nodes: Sequence[str] | None = None) -> Plan:
    """A plan with ``nodes`` (default: every node an int8 strategy applies to) on an int8 strategy (the
    spatial pack where it applies, else im2col) and the other nodes on the fp32 spatial pack's uniform
    plan, calibrated: the most quantized plan, for comparing precisions."""
    plan = Plan.uniform(model, graph, target, "spatial_pack_nchwc")
    for node in graph.nodes:
        if nodes is not None and node.name not in nodes:
            continue
        for name in ("spatial_pack_nchwc_int8", "im2col_int8"):
            if get_strategy(name).applies(node.workload, target):
                plan.nodes[node.name] = NodeChoice(name)
                break
    return plan.calibrate(calibration)
