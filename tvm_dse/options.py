"""The options of :func:`tvm_dse.optimize`, grouped by the stage that reads them and checked once, when they
are made: a bad value fails here, before any model is imported or kernel measured.

:class:`OptimizeOptions` bundles :class:`MeasurementOptions`, :class:`SearchOptions`,
:class:`PrecisionOptions` and :class:`TuningOptions` with the options of the run as a whole;
:meth:`OptimizeOptions.from_keywords` takes every option by its flat name (``searcher=``, ``tune_trials=``,
...), which is how ``optimize`` and the command line pass them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .accuracy.bound import AccuracyBound
from .accuracy.calibration import METHODS, CalibrationData
from .errors import TvmDseError
from .frontend import InputShapes
from .measure import MeasureSettings
from .search import Budget, get_searcher
from .strategies.base import PRECISIONS
from .target import DseTarget
from .timing import SteadyState
from .tuning import TuningLogs


@dataclass(frozen=True)
class MeasurementOptions:
    """Where and how kernels and the whole model are measured.

    Attributes
    ----------
    rpc
        Where a board target is measured: ``"tracker=127.0.0.1:9190,key=rpi4"`` (or the dict form), or a
        direct ``"HOST:PORT"``. None measures on this machine, or, for an aarch64 target, prices everything
        with the cost model of its core (see ``cost_model``).
    cost_model
        Price kernels and plans with the cost model of the target's core (:mod:`tvm_dse.core_model`) instead
        of measuring them, even where ``rpc`` names a board (to compare the two); the model's results are
        kept in ``logs`` apart from measurements. Always the case for an aarch64 target without ``rpc``.
    settings
        How kernels are timed (see :class:`tvm_dse.measure.MeasureSettings`).
    logs
        The tuning-log directory (or :class:`tvm_dse.tuning.TuningLogs`) read before measuring and appended
        to as measurements arrive; default ``$TVM_DSE_LOGS``, else ``~/.cache/tvm_dse/tuning_logs``.
    shipped_logs
        First add the records of the tuning logs shipped with tvm_dse (``tuning_logs/`` of the source tree)
        for this target to ``logs``: they exist only for the machines they were made on. False for a cold
        run.
    top_k
        Measure only the ``top_k`` strategies per node that a latency predictor trained on the target's
        tuning log ranks fastest (plus those the log has measured already); None measures every
        applicable strategy.
    repeat
        Timed samples of the whole optimized model, each batching runs up to 25 ms, after a warm-up (see
        :class:`tvm_dse.timing.SteadyState`).
    reference
        Also time onnxruntime on the same model and machine (host targets, ONNX models), in a phase of its
        own after tvm_dse's timings, for the report's ratio.
    profile
        On a target that runs on this machine, price kernels as the modules run them: the cheapest uniform
        plans built and their function calls timed (see :mod:`tvm_dse.profiling`); False prices each kernel by its
        isolated measurement alone (quicker; predicts the model lower than it runs).
    retry_failed
        Measure again kernels whose earlier measurements all failed (a board lost, a full disk) or stayed
        disturbed (other work busy on the machine throughout), up to three such attempts per kernel; False
        keeps what the log holds of them (see :func:`tvm_dse.measure.measure_candidates`).
    """

    rpc: str | Mapping[str, str] | None = None
    cost_model: bool = False
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    logs: str | Path | TuningLogs | None = None
    shipped_logs: bool = True
    top_k: int | None = None
    repeat: int = 10
    reference: bool = True
    profile: bool = True
    retry_failed: bool = True

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise TvmDseError(f"top_k must be at least 1 (strategies measured per node); got {self.top_k}")
        if self.repeat < 1:
            raise TvmDseError(f"repeat must be at least 1 (timed samples of the whole model); got {self.repeat}")

    def prices_by_model(self, target: DseTarget) -> bool:
        """Whether ``target``'s costs come from the cost model: asked for, or an aarch64 target with no board."""
        return self.cost_model or (self.rpc is None and target.is_aarch64 and not target.runs_on_host)

    @property
    def steady_state(self) -> SteadyState:
        """How whole models are timed."""
        return SteadyState(repeats=self.repeat)

    def tuning_logs(self) -> TuningLogs:
        """The tuning logs these options name."""
        return self.logs if isinstance(self.logs, TuningLogs) else TuningLogs(self.logs)


@dataclass(frozen=True)
class SearchOptions:
    """The graph-level search.

    Attributes
    ----------
    searcher
        ``"qlearning"`` (default), ``"exact"``, ``"greedy"``, ``"random"`` or ``"uniform"``.
    budget
        The searcher's budget: a :class:`tvm_dse.search.Budget`, or an int (cost evaluations); None for
        the searcher's default.
    memory_limit
        Peak memory bound of the plan in MB (weights, workspace and live activations), or None.
    compare_searchers
        Searchers also run on the same space at the same budget, for the report's comparison.
    verify
        The best distinct plans of the search (by predicted latency) built and timed as whole models, the
        best uniform plan with them when more than one: the fastest measured is the plan. 1 builds the
        search's best alone.
    """

    searcher: str = "qlearning"
    budget: Budget | int | None = None
    memory_limit: float | None = None
    compare_searchers: Sequence[str] = ("exact", "greedy", "random", "uniform")
    verify: int = 3

    def __post_init__(self) -> None:
        for name in (self.searcher, *self.compare_searchers):
            try:
                get_searcher(name)
            except ValueError as error:
                raise TvmDseError(str(error)) from None
        if isinstance(self.budget, int) and not isinstance(self.budget, bool):
            try:
                object.__setattr__(self, "budget", Budget(max_evaluations=self.budget))
            except ValueError as error:
                raise TvmDseError(f"budget (plans the searcher may price): {error}") from None
        elif self.budget is not None and not isinstance(self.budget, Budget):
            raise TvmDseError(f"budget must be a number of plans or a tvm_dse.search.Budget; got {self.budget!r}")
        if self.memory_limit is not None and not self.memory_limit > 0:
            raise TvmDseError(f"memory_limit must be a positive number of MB; got {self.memory_limit}")
        object.__setattr__(self, "compare_searchers", tuple(self.compare_searchers))
        if not (isinstance(self.verify, int) and self.verify >= 1):
            raise TvmDseError(f"verify must be a whole number of plans, at least 1; got {self.verify!r}")

    @property
    def memory_limit_bytes(self) -> int | None:
        return int(self.memory_limit * 2**20) if self.memory_limit is not None else None


@dataclass(frozen=True)
class PrecisionOptions:
    """Which precisions the plan may use, and the accuracy it must keep.

    Attributes
    ----------
    precisions
        The precisions the space may use (``"fp32"``, ``"int8"``, ``"fp16"``): default fp32, and int8 with
        calibration data (which int8 needs).
    calibration_data
        Inputs representative of the model's use (see :func:`tvm_dse.accuracy.calibrate`): when given, the
        model is calibrated on them and int8 strategies join the space; the search picks int8 where it is
        faster (within ``accuracy``'s bound when given), and the plan records each int8 node's input
        quantization.
    calibration_method
        ``"minmax"`` or ``"percentile"`` (99.99th).
    accuracy
        With a reduced precision in the space: the metric, labelled data and largest loss against the fp32
        model a plan may have (:class:`tvm_dse.accuracy.AccuracyBound`). Each quantizable node's loss is
        measured alone (a build per node), the search keeps the summed losses within the bound, and the
        built plan's own score is checked: if it loses more, the search runs again under a tighter bound.
    """

    precisions: Sequence[str] | None = None
    calibration_data: CalibrationData | None = None
    calibration_method: str = "minmax"
    accuracy: AccuracyBound | None = None

    def __post_init__(self) -> None:
        precisions = self.precisions
        if precisions is None:
            precisions = ("fp32", "int8") if self.calibration_data is not None else ("fp32",)
        if set(precisions) - set(PRECISIONS) or "fp32" not in precisions:
            raise TvmDseError(f"precisions must include fp32 and be among {', '.join(PRECISIONS)}; "
                              f"got {list(precisions)}")
        if "int8" in precisions and self.calibration_data is None:
            raise TvmDseError("int8 needs calibration_data: the activations' ranges come from it")
        if self.calibration_method not in METHODS:
            raise TvmDseError(f"unknown calibration method {self.calibration_method!r}; "
                              f"known: {', '.join(METHODS)}")
        if self.accuracy is not None and len(precisions) == 1:
            raise TvmDseError("an accuracy bound needs a reduced precision to bound: give calibration_data "
                              "(int8) or precisions with fp16")
        object.__setattr__(self, "precisions", tuple(precisions))


@dataclass(frozen=True)
class TuningOptions:
    """Kernel-level tuning of the chosen plan.

    Attributes
    ----------
    trials
        Tuning trials the chosen plan's kernels should hold in all (decisions measured beyond each kernel's
        defaults, earlier runs' included): MetaSchedule tunes the slowest kernels first, up to
        :data:`tvm_dse.tuning.DEFAULT_TRIALS` decisions each, then the search runs again with the tuned
        kernels. A rerun with the same value tunes nothing; 0 (default) uses the strategies' default
        schedules and the tuning records already in the logs.
    """

    trials: int = 0

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise TvmDseError(f"tune_trials must not be negative; got {self.trials}")


# the flat keyword of each option that is not named as its field
_RENAMED = {"tune_trials": ("tuning", "trials")}


@dataclass(frozen=True)
class OptimizeOptions:
    """Every option of one optimization.

    Attributes
    ----------
    measurement, search, precision, tuning
        The options of those stages.
    out_dir
        When given, the plan, library, report and plots are written there. A folder tvm_dse wrote before is
        emptied first; any other folder must be new or empty unless ``force``.
    force
        Write into a non-empty ``out_dir`` that holds no earlier tvm_dse output (its files are kept; ones
        of the same names are overwritten).
    input_shapes
        Shapes for the model's dynamic inputs, by input name.
    seed
        Seeds the searchers, the tuner, the predictor and the validation input.
    show_progress
        Progress lines on standard error.
    """

    measurement: MeasurementOptions = field(default_factory=MeasurementOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    precision: PrecisionOptions = field(default_factory=PrecisionOptions)
    tuning: TuningOptions = field(default_factory=TuningOptions)
    out_dir: str | Path | None = None
    force: bool = False
    input_shapes: InputShapes | None = None
    seed: int = 0
    show_progress: bool = True

    @classmethod
    def from_keywords(cls, **keywords: Any) -> "OptimizeOptions":
        """Options from their flat names: every field of the four groups by its own name (``searcher=``,
        ``logs=``, ``accuracy=``, ...; the tuning trials as ``tune_trials=``) and the fields of this class."""
        groups = {"measurement": MeasurementOptions, "search": SearchOptions, "precision": PrecisionOptions,
                  "tuning": TuningOptions}
        where = {f.name: (group, f.name) for group, kind in groups.items() for f in fields(kind)} | _RENAMED
        own = {f.name for f in fields(cls)} - set(groups)
        unknown = sorted(set(keywords) - set(where) - own)
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted({*where, *own}))}")
        grouped: dict[str, dict[str, Any]] = {group: {} for group in groups}
        for name, value in keywords.items():
            if name in where:
                group, field_name = where[name]
                grouped[group][field_name] = value
        return cls(**{group: groups[group](**values) for group, values in grouped.items()},
                   **{name: value for name, value in keywords.items() if name in own})
