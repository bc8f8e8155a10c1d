"""``optimize``: the tool's main job, end to end, as a composition of the stages in :mod:`tvm_dse.pipeline`.

import -> DSE graph -> calibration -> the design space measured on the target (locally, or on boards over
RPC; resuming from the tuning logs) -> [per-layer sensitivity] -> graph-level search (-> tune the plan's
kernels -> search again) -> lower and build the plan -> [accuracy loop] -> check its outputs against TVM's
default build and time the whole model where the target is -> [the plan's library run in a process of its
own, for its memory] -> an :class:`OptimizeResult` with the plan, the module and a report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import pipeline as stages
from .build import BuiltModel
from .frontend import Model, ModelLike
from .graph import DseGraph
from .options import OptimizeOptions
from .plan import Plan
from .report import write_report
from .space import DesignSpace
from .target import DseTarget, TargetLike, parse_target


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
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"plan": self.plan.save(out / "plan.json"),
                 "library": self.export(out / f"{self.model.name}.{self.target.arch}.so"),
                 "space": self.space.save(out / "space.json")}
        paths.update(write_report(self.report, out))
        return paths


def optimize(model: ModelLike, target: TargetLike = "host", options: OptimizeOptions | None = None,
             **keywords: Any) -> OptimizeResult:
    """Find and build the fastest plan for ``model`` on ``target``.

    ``model`` is an ONNX path, ``"zoo:NAME"``, an ``onnx.ModelProto``, a Relax ``IRModule`` or a
    :class:`Model`; ``target`` a preset (``"host"``, ``"rpi4"``, ...), a TVM target string, dict or
    ``tvm.target.Target``. The options come as an :class:`~tvm_dse.options.OptimizeOptions` or by their flat
    names (see :meth:`~tvm_dse.options.OptimizeOptions.from_keywords`): ``rpc``, ``cost_model``, ``settings``,
    ``logs``, ``shipped_logs``, ``top_k``, ``repeat``, ``reference``, ``profile``, ``retry_failed`` (measurement);
    ``searcher``, ``budget``, ``memory_limit``, ``compare_searchers``, ``verify`` (search); ``precisions``,
    ``calibration_data``, ``calibration_method``, ``accuracy`` (precision); ``tune_trials``; ``out_dir``,
    ``input_shapes``, ``seed``, ``show_progress``. Every option is checked before any work starts.

    The best plans the search finds are built and timed as whole models in steady state (see
    :class:`~tvm_dse.timing.SteadyState`); the fastest measured is the plan, then timed once more for the
    report's latency, on a host target in rounds alternating with onnxruntime for the report's ratio. An
    aarch64 target without ``rpc`` (or any with ``cost_model=True``) is priced by the cost model of its core
    instead (:mod:`tvm_dse.core_model`): every latency is then modeled, and the report says so.

    Raises
    ------
    ValidationError
        When the optimized module's outputs differ from TVM's default build (relative error > 1e-4; for
        a plan with int8 nodes, > 0.05 on the first calibration input).
    """
    if options is not None and keywords:
        raise TypeError("give the options either as an OptimizeOptions or by name, not both")
    options = options or OptimizeOptions.from_keywords(**keywords)
    started = time.perf_counter()
    context = stages.start(model, parse_target(target), options)
    calibrated = stages.calibrate_model(context)
    space = stages.price_in_modules(context, stages.measure(context), calibrated)
    sensitivity = stages.measure_sensitivity_of(context, space, calibrated)
    choice = stages.search(context, space, options.precision.accuracy.max_loss if sensitivity else None)
    choice, tuned = stages.tune(context, choice, sensitivity, calibrated)
    plan = stages.make_plan(context, choice, calibrated)
    built = stages.build(context, plan)
    choice, plan, built, accuracy = stages.keep_accuracy(context, choice, calibrated, sensitivity, plan, built)
    verification = stages.verify(context, choice, calibrated, plan, built, accuracy)
    choice, plan, built = verification.choice, verification.plan, verification.built
    comparison = stages.compare_searchers(context, choice)
    confirmation = stages.confirm(context, calibrated, verification)
    validation = stages.validate(context, plan, built, calibrated, confirmation.run)
    memory = stages.measure_memory(context, plan, built, calibrated)
    context.timings["total_s"] = time.perf_counter() - started
    report = stages.report(context, plan, choice, comparison, validation, tuned, accuracy, verification, confirmation,
                           memory)
    result = OptimizeResult(context.model, context.graph, context.target, plan, built, choice.space, choice.search,
                            report)
    if options.out_dir is not None:
        result.save(options.out_dir)
    return result
