"""Accuracy in the search: a user metric over labelled data, a bound on its loss, and per-layer
sensitivity (the metric's loss when one node alone runs quantized), which the searchers add up as an
estimate of a plan's loss; the final plan's accuracy is then measured, not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import TvmDseError
from ..frontend import Model
from .calibration import CalibrationData, calibration_feeds

# (every feed's outputs, labels) -> score; higher is better
Metric = Callable[[Sequence[Sequence[np.ndarray]], Any], float]
Run = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


def top1(outputs: Sequence[Sequence[np.ndarray]], labels: Any) -> float:
    """The fraction of samples whose first output's largest entry is at their label."""
    predicted = np.concatenate([np.asarray(o[0]).reshape(len(np.asarray(o[0])), -1).argmax(axis=1) for o in outputs])
    labels = np.asarray(labels).reshape(-1)
    if len(predicted) != len(labels):
        raise TvmDseError(f"top-1 needs one label per sample: {len(predicted)} samples, {len(labels)} labels")
    return float(np.mean(predicted == labels))


METRICS: dict[str, Metric] = {"top1": top1}


@dataclass
class AccuracyBound:
    """How a plan's accuracy is judged: ``metric`` over the model's outputs on ``data`` (with ``labels``),
    and the largest loss against the fp32 model a plan may have (``max_loss``, in the metric's units:
    0.005 is half a point of top-1).

    ``data`` takes any form :func:`~tvm_dse.accuracy.calibration.calibration_feeds` accepts; ``metric`` is
    ``"top1"`` or a callable ``metric(outputs, labels) -> float`` (higher is better), ``outputs`` being the
    model's outputs for each feed in order.
    """

    data: CalibrationData | str | Path
    labels: Any = None
    metric: str | Metric = "top1"
    max_loss: float = 0.005
    _feeds: list[dict[str, np.ndarray]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise TvmDseError(f"unknown metric {self.metric!r}; accepted: {', '.join(METRICS)}, or a callable")
        if self.metric == "top1" and self.labels is None:
            raise TvmDseError("the top1 metric needs labels")
        if not self.max_loss >= 0:
            raise TvmDseError(f"max_loss must be >= 0, got {self.max_loss}")

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "metric")

    def score(self, model: Model, run: Run) -> float:
        """The metric of ``run`` (a feed -> the model's outputs) over the data."""
        if self._feeds is None:
            self._feeds = calibration_feeds(model, self.data)
        metric = METRICS[self.metric] if isinstance(self.metric, str) else self.metric
        return float(metric([list(run(feed)) for feed in self._feeds], self.labels))
