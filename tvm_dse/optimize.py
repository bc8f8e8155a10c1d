"""``optimize``: the tool's main job, end to end.

import -> DSE graph -> applicable strategies -> measure kernels and layout conversions on the target
(locally, or on boards over RPC; resuming from the tuning logs) -> graph-level search (-> tune the
plan's kernels -> search again) -> lower and build the plan -> check its outputs against TVM's default
build -> measure the whole model on the target -> an :class:`OptimizeResult` with the plan, the module
and a report.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .build import BuiltModel, build_baseline
from .pricing import measure_space, plan_from_assignment
from .errors import TvmDseError
from .frontend import InputShapes, Model, ModelLike, load_model
from .graph import DseGraph, build_graph
from .lower import build_plan
from .measure import Builder, LocalRunner, MeasureSettings, RPCRunner, Runner
from .plan import Plan
from .accuracy.bound import AccuracyBound
from .accuracy.calibration import CalibrationData, calibrate, calibration_feeds
from .strategies import get_strategy
from .strategies.base import PRECISIONS
from .space import DesignSpace
from .target import DseTarget, TargetLike, parse_target
from .validation import QUANTIZED_VALIDATION_BOUND, VALIDATION_BOUND, ValidationError, relative_error
from .timing import Timing
from .tuning import TuningLogs, shipped_target_keys

@dataclass
class OptimizeResult:
    """What :func:`optimize` found and built.

    Attributes
    ----------
    plan
        The chosen strategy per node (JSON via ``plan.save``).
    built
        The compiled module for the target.
    space, search
        The measured design space and the search's result (assignment, cost, convergence history).
    report
        Everything measured, as plain data (``report["latency"]``, ``["validation"]``, ``["nodes"]``, ...).
    """

    model: Model
    graph: DseGraph
    target: DseTarget
    plan: Plan
    built: BuiltModel
    space: DesignSpace
    search: Any
    report: dict[str, Any] = field(default_factory=dict)

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the optimized model on this machine (host targets)."""
        return self.built.run(feed)

    def export(self, path: str | Path) -> Path:
        """Write the deployable library (cross-compiled for a board target)."""
        return self.built.export(path)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the plan, the library, the report (markdown + JSON) and its plots into ``out_dir``."""
        from .report import write_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"plan": self.plan.save(out / "plan.json"),
                 "library": self.export(out / f"{self.model.name}.{self.target.arch}.so"),
                 "space": self.space.save(out / "space.json")}
        paths.update(write_report(self.report, out))
        return paths


def make_runner(target: DseTarget, rpc: str | Mapping[str, str] | None, settings: MeasureSettings) -> Runner:
    """A local runner for host targets, or an RPC runner from ``rpc``: ``"tracker=HOST:PORT,key=KEY"``,
    ``{"tracker": "HOST:PORT", "key": KEY}``, or a direct ``"HOST:PORT"``."""
    if rpc is None:
        if not target.runs_on_host:
            raise TvmDseError(f"target {target.key} does not run on this machine: give rpc= a tracker and key "
                              "(or a direct host:port) of a board")
        return LocalRunner(settings)
    if isinstance(rpc, str):
        if "=" in rpc:
            rpc = dict(part.split("=", 1) for part in rpc.split(","))
        else:
            return RPCRunner(direct=rpc, settings=settings)
    unknown = set(rpc) - {"tracker", "key", "direct"}
    if unknown:
        raise TvmDseError(f"unknown rpc settings {sorted(unknown)}; accepted: tracker, key, direct")
    return RPCRunner(tracker=rpc.get("tracker"), key=rpc.get("key"), direct=rpc.get("direct"), settings=settings)


def _measure_whole_model(built: BuiltModel, feed: Mapping[str, np.ndarray], runner: Runner,
                         repeat: int, workdir: Path) -> tuple[list[np.ndarray], Timing, str]:
    """Outputs and latency of the built model where the target is."""
    if isinstance(runner, LocalRunner):
        return built.run(feed), built.time(feed, repeat=repeat), "local"
    session, board = runner.session()
    remote = built.upload(session, workdir)
    return remote.run(feed), remote.time(feed, repeat=repeat, warmup=0), board


def optimize(model: ModelLike, target: TargetLike = "host", rpc: str | Mapping[str, str] | None = None,
             searcher: str = "qlearning", budget: Any = None, memory_limit: float | None = None,
             out_dir: str | Path | None = None, input_shapes: InputShapes | None = None,
             logs: str | Path | TuningLogs | None = None, shipped_logs: bool = True, tune_trials: int = 0,
             top_k: int | None = None, calibration_data: CalibrationData | None = None,
             calibration_method: str = "minmax", accuracy: AccuracyBound | None = None,
             precisions: Sequence[str] | None = None,
             settings: MeasureSettings | None = None,
             compare_searchers: Sequence[str] = ("exact", "greedy", "random", "uniform"),
             seed: int = 0, repeat: int = 10, show_progress: bool = True) -> OptimizeResult:
    """Find and build the fastest plan for ``model`` on ``target``.

    Parameters
    ----------
    model
        An ONNX path, ``"zoo:NAME"``, an ``onnx.ModelProto``, a Relax ``IRModule`` or a :class:`Model`.
    target
        A preset (``"host"``, ``"rpi4"``, ...), a TVM target string, dict or ``tvm.target.Target``.
    rpc
        Where a board target is measured: ``"tracker=127.0.0.1:9190,key=rpi4"`` (or the dict form), or a
        direct ``"HOST:PORT"``. None measures on this machine (host targets only).
    searcher
        ``"qlearning"`` (default), ``"exact"``, ``"greedy"``, ``"random"`` or ``"uniform"``.
    budget
        The searcher's budget: a :class:`tvm_dse.search.Budget`, or an int (cost evaluations); None for
        the searcher's default.
    memory_limit
        Peak memory bound of the plan in MB (weights, workspace and live activations), or None.
    out_dir
        When given, the plan, library, report and plots are written there.
    logs
        The tuning-log directory (or :class:`tvm_dse.tuning.TuningLogs`) read before measuring and appended
        to as measurements arrive; default ``$TVM_DSE_LOGS``, else ``~/.cache/tvm_dse/tuning_logs``.
    shipped_logs
        First add the records of the tuning logs shipped with tvm_dse (``tuning_logs/`` of the source tree)
        for this target to ``logs``: they exist only for the machines they were made on. False for a cold
        run.
    tune_trials
        Tuning trials the chosen plan's kernels should hold in all (decisions measured beyond each kernel's
        defaults, earlier runs' included): MetaSchedule tunes the slowest kernels first, up to
        :data:`tvm_dse.tuning.DEFAULT_TRIALS` decisions each, then the search runs again with the tuned
        kernels. A rerun with the same value tunes nothing; 0 (default) uses the strategies' default
        schedules and the tuning records already in the logs.
    top_k
        Measure only the ``top_k`` strategies per node that a latency predictor trained on the target's
        tuning log ranks fastest (plus those the log has measured already); None measures every
        applicable strategy.
    calibration_data
        Inputs representative of the model's use (see :func:`tvm_dse.accuracy.calibrate`): when given, the
        model is calibrated on them and int8 strategies join the space; the search picks int8 where it is
        faster (within ``accuracy``'s bound when given), and the plan records each int8 node's input
        quantization.
    calibration_method
        ``"minmax"`` or ``"percentile"`` (99.99th).
    precisions
        The precisions the space may use (``"fp32"``, ``"int8"``, ``"fp16"``): default fp32, and int8 with
        calibration data (which int8 needs).
    accuracy
        With a reduced precision in the space: the metric, labelled data and largest loss against the fp32
        model a plan may have (:class:`tvm_dse.accuracy.AccuracyBound`). Each quantizable node's loss is measured alone
        (a build per node), the search keeps the summed losses within the bound, and the built plan's
        own score is checked: if it loses more, the search runs again under a tighter bound.
    settings
        How kernels are timed (see :class:`tvm_dse.measure.MeasureSettings`).
    compare_searchers
        Searchers also run on the same space at the same budget, for the report's comparison.
    repeat
        Timed runs of the whole optimized model.

    Returns
    -------
    OptimizeResult

    Raises
    ------
    ValidationError
        When the optimized module's outputs differ from TVM's default build (relative error > 1e-4; for
        a plan with int8 nodes, > 0.05 on the first calibration input).
    """
    from .search import Budget, compare, get_searcher

    started = time.perf_counter()
    dse_target = parse_target(target)
    imported = load_model(model, input_shapes)
    graph = build_graph(imported)
    settings = settings or MeasureSettings()
    runner = make_runner(dse_target, rpc, settings)
    tuning_logs = logs if isinstance(logs, TuningLogs) else TuningLogs(logs)
    measurement_store = tuning_logs.store(dse_target)
    if shipped_logs:
        tuning_logs.add_shipped(dse_target)
        shipped = shipped_target_keys()
        if show_progress and dse_target.key not in shipped:
            print(f"no tuning log shipped with tvm_dse is for {dse_target.key} (shipped: "
                  f"{', '.join(shipped) or 'none'}): starting from this machine's own logs", file=sys.stderr,
                  flush=True)
    workdir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="tvm_dse_"))
    workdir.mkdir(parents=True, exist_ok=True)
    builder = Builder(directory=workdir / "kernels")
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    calibration, calibration_inputs = None, []
    if precisions is None:
        precisions = ("fp32", "int8") if calibration_data is not None else ("fp32",)
    unknown = set(precisions) - set(PRECISIONS)
    if unknown or "fp32" not in precisions:
        raise TvmDseError(f"precisions must include fp32 and be among {', '.join(PRECISIONS)}; got {list(precisions)}")
    if "int8" in precisions and calibration_data is None:
        raise TvmDseError("int8 needs calibration_data: the activations' ranges come from it")
    if calibration_data is not None:
        calibration_inputs = calibration_feeds(imported, calibration_data)  # an iterator is read once
        calibration = calibrate(imported, calibration_inputs, calibration_method)
    strategies = None
    if top_k is not None:
        from .tuning.predictor import promising_strategies

        strategies = promising_strategies([v.workload for v in graph.nodes], dse_target, measurement_store.records(),
                                          top_k, seed=seed, precisions=precisions)
    space = measure_space(imported, graph, dse_target, runner, measurement_store, builder, strategies,
                          show_progress=show_progress, precisions=precisions)
    timings["measure_s"] = time.perf_counter() - clock

    sensitivity, accuracy_limit = None, None
    if accuracy is not None:
        if len(precisions) == 1:
            raise TvmDseError("an accuracy bound needs a reduced precision to bound: give calibration_data "
                              "(int8) or precisions with fp16")
        if not dse_target.runs_on_host:
            raise TvmDseError(f"accuracy is measured by running plans on this machine; {dse_target.key} does not "
                              "run here")
        from .accuracy.sensitivity import measure_sensitivity

        clock = time.perf_counter()
        sensitivity = measure_sensitivity(imported, graph, space, dse_target, calibration, accuracy, show_progress)
        sensitivity.apply(space)
        accuracy_limit = accuracy.max_loss
        timings["sensitivity_s"] = time.perf_counter() - clock

    if isinstance(budget, int):
        budget = Budget(max_evaluations=budget)
    limit_bytes = int(memory_limit * 2**20) if memory_limit is not None else None

    def search_space() -> Any:
        return get_searcher(searcher).search(space, budget, memory_limit_bytes=limit_bytes, seed=seed,
                                             show_progress=show_progress, accuracy_loss_limit=accuracy_limit)

    clock = time.perf_counter()
    chosen = search_space()
    timings["search_s"] = time.perf_counter() - clock
    tuned = []
    if tune_trials > 0:
        from .tuning import tune_plan_kernels

        clock = time.perf_counter()
        tuned = tune_plan_kernels(space, chosen.assignment, graph, dse_target, runner, measurement_store,
                                  tune_trials, builder=builder, seed=seed, show_progress=show_progress)
        timings["tune_s"] = time.perf_counter() - clock
        # the space again, now with the tuned kernels (everything else comes from the store)
        space = measure_space(imported, graph, dse_target, runner, measurement_store, builder, strategies,
                              show_progress=show_progress, precisions=precisions)
        if sensitivity is not None:
            sensitivity.apply(space)
        chosen = search_space()

    def make_plan() -> Plan:
        plan = plan_from_assignment(space, chosen.assignment, imported, dse_target, searcher=searcher,
                                    budget=(budget.to_dict() if budget is not None else "default"))
        if calibration is not None:
            plan.calibrate(calibration)
            plan.provenance["calibration"] = calibration.to_dict()
        return plan

    clock = time.perf_counter()
    plan = make_plan()
    built = build_plan(imported, plan, dse_target, graph)
    accuracy_report = None
    if accuracy is not None and sensitivity is not None:
        score = accuracy.score(imported, built.run)
        tried = [{"quantized_nodes": plan.reduced_precision_nodes(), "score": score}]
        while sensitivity.fp32_score - score > accuracy.max_loss and plan.reduced_precision_nodes():
            # the per-layer losses, summed, underestimated this plan's: search again under a tighter bound
            estimated = space.accuracy_loss(chosen.assignment)
            if estimated > 0:
                accuracy_limit = estimated / 2
            else:  # its quantized nodes each lose nothing alone, only together: no quantization left
                space = space.restricted(lambda node, option: get_strategy(option.name).precision == "fp32")
            chosen = search_space()
            plan = make_plan()
            built = build_plan(imported, plan, dse_target, graph)
            score = accuracy.score(imported, built.run)
            tried.append({"quantized_nodes": plan.reduced_precision_nodes(), "score": score})
        accuracy_report = {"metric": accuracy.metric_name, "max_loss": accuracy.max_loss,
                           "fp32_score": sensitivity.fp32_score, "plan_score": score,
                           "loss": sensitivity.fp32_score - score,
                           "estimated_loss": space.accuracy_loss(chosen.assignment), "searches": len(tried),
                           "plans_tried": tried,
                           "quantized_nodes": plan.reduced_precision_nodes(), "sensitivity": sensitivity.to_dict()}
        plan.metrics.update(accuracy_loss=accuracy_report["loss"], accuracy_metric=accuracy.metric_name)
    timings["build_s"] = time.perf_counter() - clock
    comparison = compare(space, [searcher, *[s for s in compare_searchers if s != searcher]], budget, seed=seed,
                         memory_limit_bytes=limit_bytes, accuracy_loss_limit=accuracy_limit) if compare_searchers else []

    bound = VALIDATION_BOUND
    feed = imported.random_feed(seed=seed)
    if plan.reduced_precision_nodes():
        # reduced-precision nodes are checked against a looser bound, on data in the calibrated range
        bound = QUANTIZED_VALIDATION_BOUND
        feed = calibration_inputs[0] if calibration_inputs else feed

    baseline_outputs = build_baseline(imported, "host").run(feed)
    outputs, latency, board = _measure_whole_model(built, feed, runner, repeat, workdir)
    error = max(relative_error(o, r) for o, r in zip(outputs, baseline_outputs))
    if not error <= bound:
        raise ValidationError(f"the optimized {imported.name} differs from TVM's default build: relative error "
                              f"{error:.2e} > {bound:g}; plan: {plan.to_dict()['nodes']}")
    plan.metrics.update(measured_ms=latency.median_ms, measured_on=board)
    timings["total_s"] = time.perf_counter() - started

    from .report import build_report

    report = build_report(imported, graph, dse_target, plan, space, chosen, comparison, latency, error, timings,
                          tuned, top_k, accuracy_report)
    result = OptimizeResult(imported, graph, dse_target, plan, built, space, chosen, report)
    if out_dir is not None:
        result.save(out_dir)
    return result
