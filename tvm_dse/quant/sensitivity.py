"""Per-layer sensitivity: for every node with a quantized option, the user metric's loss when that node
alone runs quantized and every other node runs its fastest fp32 option; each measured on a real build.
The losses become the options' ``accuracy_loss`` in the design space, which the searchers bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..frontend import Model
from ..graph import DseGraph
from ..lower import build_plan
from ..plan import NodeChoice, Plan
from ..progress import Progress
from ..space import DesignSpace, Option
from ..strategies import get_strategy
from ..target import DseTarget
from .accuracy import AccuracyBound
from .calibration import Calibration


@dataclass
class Sensitivity:
    """The fp32 plan's score and, per quantized node, the score with that node alone quantized."""

    metric: str
    fp32_score: float
    scores: dict[str, float]

    def loss(self, node: str) -> float:
        """The metric's loss of quantizing ``node`` (0 where it did not get worse)."""
        return max(0.0, self.fp32_score - self.scores[node])

    def apply(self, space: DesignSpace) -> None:
        """Set every quantized option's ``accuracy_loss`` in ``space`` (in place)."""
        for node in space.nodes:
            for option in node.options:
                if node.name in self.scores and _quantized(option):
                    option.accuracy_loss = self.loss(node.name)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "fp32_score": self.fp32_score,
                "nodes": {name: {"score": score, "loss": self.loss(name)} for name, score in self.scores.items()}}


def _quantized(option: Option) -> bool:
    return get_strategy(option.name).precision != "fp32"


def _fastest(options: list[Option]) -> NodeChoice:
    best = min(options, key=lambda o: o.latency_ms)
    return NodeChoice(best.name, best.decisions)


def measure_sensitivity(model: Model, graph: DseGraph, space: DesignSpace, target: DseTarget,
                        calibration: Calibration, accuracy: AccuracyBound, show_progress: bool = True) -> Sensitivity:
    """Score the fastest fp32 plan of ``space`` and, for each node with a quantized option, the same plan
    with that node on its fastest quantized option (built for ``target``, run on this machine)."""
    tunable = [node for node in space.nodes if node.is_tunable]
    base = {node.name: _fastest([o for o in node.options if not _quantized(o)]) for node in tunable}
    quantizable = [node for node in tunable if any(_quantized(o) for o in node.options)]

    def score(choices: dict[str, NodeChoice]) -> float:
        plan = Plan.create(model, target, choices).calibrate(calibration)
        built = build_plan(model, plan, target, graph)
        return accuracy.score(model, built.run)

    progress = Progress(1 + len(quantizable), "per-layer sensitivity (builds)") if show_progress else None
    fp32_score = score(base)
    if progress is not None:
        progress.advance(1, note=f"fp32 {fp32_score:.4f}")
    scores = {}
    for node in quantizable:
        scores[node.name] = score({**base, node.name: _fastest([o for o in node.options if _quantized(o)])})
        if progress is not None:
            progress.advance(1, note=f"{node.name} {scores[node.name]:.4f}")
    if progress is not None:
        progress.close()
    return Sensitivity(accuracy.metric_name, fp32_score, scores)
