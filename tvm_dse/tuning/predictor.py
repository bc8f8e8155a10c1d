"""A learned latency predictor: XGBoost trained on a target's tuning log, ranking strategies for workloads
it has not seen, so ``optimize(top_k=...)`` measures only the most promising strategies per node.

Each sample is one (workload, strategy) kernel with its fastest measured latency on the target; the
features describe the workload (sizes, kernel, stride, padding, groups, how channels and widths divide
into vectors), the strategy (one-hot over the registry) and the target (vector width, cores,
architecture); the label is the log of the latency per multiply-add: how efficiently the strategy runs
the workload, which carries over to sizes not seen in training where the latency itself (trees predict
piecewise constants) would not; errors are relative. A prediction is a model, not
a measurement: :func:`held_out_error` reports how far off it is on workloads left out of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import TvmDseError
from ..measure import Record
from ..measure.store import best_records
from ..strategies import all_strategies, schedule_versions
from ..strategies.base import PRECISIONS
from ..target import DseTarget
from ..workload import Workload

# fewer distinct workloads than this leave nothing to generalize from
MIN_TRAINING_WORKLOADS = 4


def workload_features(workload: Workload, target: DseTarget) -> list[float]:
    """Numbers describing a workload on a target (what a strategy's speed depends on)."""
    lanes = target.fp32_lanes
    log = lambda value: math.log2(max(value, 1))  # noqa: E731
    return [
        log(workload.batch), log(workload.in_channels), log(workload.out_channels), log(workload.height),
        log(workload.width), log(workload.out_height), log(workload.out_width), log(workload.macs),
        workload.kernel[0], workload.kernel[1], workload.stride[0], workload.stride[1], workload.dilation[0],
        sum(workload.padding), log(workload.groups), float(workload.is_depthwise), float(workload.op == "dense"),
        float(workload.in_channels % lanes == 0), float(workload.out_channels % lanes == 0),
        float(workload.out_width % lanes == 0), float(workload.out_height * workload.out_width <= 28 * 28),
        target.vector_bits, target.num_cores or 0, float(target.is_aarch64),
    ]


def kernel_features(workload: Workload, strategy: str, target: DseTarget, names: Sequence[str]) -> list[float]:
    """The workload's features followed by the strategy's one-hot code over ``names``."""
    return workload_features(workload, target) + [float(strategy == name) for name in names]


@dataclass(frozen=True)
class Sample:
    """One kernel of a tuning log: its workload, strategy and fastest latency (ms)."""

    workload: Workload
    strategy: str
    latency_ms: float


def samples_from(records: Iterable[Record], target: DseTarget, thread_pool: str) -> list[Sample]:
    """The best successful record of every (workload, strategy) among ``records`` on ``target`` and
    ``thread_pool`` (see :func:`tvm_dse.measure.store.best_records`)."""
    return [Sample(Workload.from_dict(r.workload), r.strategy, r.median_ms)
            for r in best_records(records, target.key, schedule_versions(), thread_pool).values()]


class LatencyPredictor:
    """XGBoost regression of a kernel's log latency per multiply-add from its features, for one target."""

    def __init__(self, target: DseTarget, seed: int = 0):
        self.target = target
        self.seed = seed
        self.names = [strategy.name for strategy in all_strategies()]
        self._model = None

    def fit(self, samples: Sequence[Sample]) -> "LatencyPredictor":
        """Train on measured kernels; TvmDseError when they cover too few workloads to generalize."""
        import xgboost

        workloads = {sample.workload.key() for sample in samples}
        if len(workloads) < MIN_TRAINING_WORKLOADS:
            raise TvmDseError(f"the tuning log of {self.target.key} covers {len(workloads)} workloads; the "
                              f"predictor needs at least {MIN_TRAINING_WORKLOADS} (run optimize without top_k "
                              "on a few models first)")
        features = np.array([kernel_features(s.workload, s.strategy, self.target, self.names) for s in samples])
        labels = np.log(np.array([s.latency_ms / s.workload.macs for s in samples]))
        parameters = {"objective": "reg:squarederror", "max_depth": 5, "eta": 0.08, "subsample": 0.9,
                      "nthread": 2, "seed": self.seed}
        self._model = xgboost.train(parameters, xgboost.DMatrix(features, label=labels), num_boost_round=300)
        return self

    def predict(self, workload: Workload, strategies: Sequence[str]) -> np.ndarray:
        """Predicted latency (ms) of each strategy on ``workload``."""
        if self._model is None:
            raise TvmDseError("the predictor is not trained: call fit() first")
        import xgboost

        features = np.array([kernel_features(workload, name, self.target, self.names) for name in strategies])
        return np.exp(self._model.predict(xgboost.DMatrix(features))) * workload.macs

    def rank(self, workload: Workload, strategies: Sequence[str]) -> list[str]:
        """``strategies`` from the fastest predicted to the slowest."""
        predicted = self.predict(workload, strategies)
        return [strategies[i] for i in np.argsort(predicted, kind="stable")]


@dataclass(frozen=True)
class PredictorError:
    """How a predictor did on workloads it was not trained on.

    Attributes
    ----------
    workloads, kernels
        Held-out workloads and their measured kernels.
    median_relative_error
        Median of |predicted - measured| / measured over the kernels.
    top1
        Share of workloads whose predicted fastest strategy is the measured fastest.
    topk, k
        Share of workloads whose measured fastest strategy is among the predicted top ``k``.
    regret
        Mean of (measured latency of the predicted-fastest strategy / measured fastest) - 1 over workloads.
    """

    workloads: int
    kernels: int
    median_relative_error: float
    top1: float
    topk: float
    k: int
    regret: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def evaluate(predictor: LatencyPredictor, samples: Sequence[Sample], k: int = 2) -> PredictorError:
    """Compare ``predictor`` with measured ``samples`` (of workloads it was not trained on, to know how it
    generalizes)."""
    by_workload: dict[str, list[Sample]] = {}
    for sample in samples:
        by_workload.setdefault(sample.workload.key(), []).append(sample)
    errors, top1, topk, regret = [], [], [], []
    for group in by_workload.values():
        names = [s.strategy for s in group]
        measured = np.array([s.latency_ms for s in group])
        predicted = predictor.predict(group[0].workload, names)
        errors.extend(np.abs(predicted - measured) / measured)
        order = np.argsort(predicted, kind="stable")
        fastest = int(np.argmin(measured))
        top1.append(order[0] == fastest)
        topk.append(fastest in order[:k])
        regret.append(measured[order[0]] / measured[fastest] - 1)
    return PredictorError(len(by_workload), len(samples), float(np.median(errors)), float(np.mean(top1)),
                          float(np.mean(topk)), k, float(np.mean(regret)))


def held_out_error(samples: Sequence[Sample], target: DseTarget, held_out: Iterable[str], k: int = 2,
                   seed: int = 0) -> PredictorError:
    """Train on every sample whose workload key is not in ``held_out`` and evaluate on the others."""
    held_out = set(held_out)
    training = [s for s in samples if s.workload.key() not in held_out]
    testing = [s for s in samples if s.workload.key() in held_out]
    if not testing:
        raise TvmDseError("no measured kernels among the held-out workloads")
    return evaluate(LatencyPredictor(target, seed).fit(training), testing, k)


def promising_strategies(workloads: Iterable[Workload], target: DseTarget, records: Iterable[Record],
                         thread_pool: str, top_k: int, seed: int = 0,
                         precisions: Sequence[str] = PRECISIONS) -> dict[str, list[str]]:
    """Per workload key, the applicable strategies of ``precisions`` worth measuring: the ``top_k`` fastest
    predicted by a predictor trained on ``records`` (the target's log) of ``thread_pool``, plus those the log
    has measured on it already (free)."""
    from ..strategies import applicable_strategies

    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    samples = samples_from(records, target, thread_pool)
    measured = {(s.workload.key(), s.strategy) for s in samples}
    predictor = LatencyPredictor(target, seed).fit(samples)
    chosen = {}
    for workload in workloads:
        names = [s.name for s in applicable_strategies(workload, target) if s.precision in precisions]
        ranked = predictor.rank(workload, names) if names else []
        keep = set(ranked[:top_k]) | {name for name in names if (workload.key(), name) in measured}
        chosen[workload.key()] = [name for name in names if name in keep]
    return chosen
