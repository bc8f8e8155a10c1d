"""The stages of :func:`tvm_dse.optimize`, each a function from the run's context to plain data:

import and session (:func:`start`) -> calibration -> design space (measured, then [priced in the modules])
-> [sensitivity] -> search ->
[tune, search again] -> plan -> build -> [accuracy loop] -> verify (the best plans timed end to end) ->
confirm (the chosen plan timed again, in rounds alternating with onnxruntime) -> validate -> report.

A stage reads the :class:`RunContext` (model, graph, parsed target, measurement session, options) and
what earlier stages returned; it records its wall time in the context. Where the costs come from is the
session's runner: measurement on this machine or on boards, or the cost model of a core
(:class:`~tvm_dse.core_model.ModeledRunner`), which the stages take as they take a board.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .accuracy.calibration import Calibration, calibrate, calibration_feeds
from .accuracy.sensitivity import Sensitivity, measure_sensitivity
from .build import BuiltModel, build_baseline
from .core_model import HOST_VALIDATION, MODEL_VERSION, MODELED_LOGS, ModeledRunner
from .errors import TvmDseError
from .frontend import Model, ModelLike, check_optimizable, load_model
from .graph import DseGraph, build_graph
from .lower import build_plan
from .measure import Builder, MeasurementSession, Runner, make_runner
from .measure.runner import ModelRun
from .options import OptimizeOptions
from .plan import Plan
from .pricing import measure_space, plan_from_assignment
from .process_memory import ProcessMemory, measure_process_memory
from .profiling import ModuleProfile, price_in_model, profile_module
from .report import MODELED, build_report, costs_modeled
from .search import (NoFeasiblePlan, SearchResult, best_plans, compare, fits_limits, get_searcher, leanest_plan,
                     uniform_plans)
from .space import DesignSpace
from .strategies import get_strategy
from .target import DseTarget, physical_cores
from .timing import Sampler, Timing, quiet_round, steady_state, watch_this_machine
from .tuning import TuningLogs, shipped_logs, shipped_target_keys, tune_plan_kernels
from .tuning.predictor import promising_strategies
from .validation import (ONNXRUNTIME_SETTLE_S, QUANTIZED_VALIDATION_BOUND, VALIDATION_BOUND, ValidationError,
                         onnxruntime_sampler, relative_error)
from .version import __version__


# Whole-model timings that decide something (the profiles pricing the space, the best plans timed end to
# end) are taken in rounds alternating between the modules: this machine's speed may drift for seconds or
# minutes at a time, and a module timed at once would carry its phase into the comparison. Each keeps its
# fastest round (see timing.quietest).
ROUNDS = 3
# Rounds of the chosen plan's latency, alternating with onnxruntime's: what the report says, each one's
# fastest round (see timing.quiet_round). A virtual machine's speed may stay 1.5-1.8x off for minutes (its
# neighbours on the host; measured on 2 cores, steal time nil): while the plan's fastest round stays beyond
# the spread bound above its fastest round in the verification, the rounds go on, up to MORE_ROUNDS more.
CONFIRMING_ROUNDS = 5
MORE_ROUNDS = 5
# The uniform plans profiled: the two cheapest (by isolated kernels) and any other within this factor of the
# cheapest. A slower one would not be chosen; an option only it runs is priced at its isolated time, scaled.
PROFILED_WITHIN = 2.0
# The file marking an output folder as tvm_dse's: the next run into that folder replaces its contents
OUTPUT_MARK = ".tvm_dse_output"


@dataclass
class RunContext:
    """What every stage of one optimization reads: the imported model, its graph, the parsed target, the
    measurement session, the options, the working directory and the stages' wall times."""

    model: Model
    graph: DseGraph
    target: DseTarget
    session: MeasurementSession
    options: OptimizeOptions
    workdir: Path
    costs: dict[str, Any] = field(default_factory=dict)  # where the costs come from (:func:`cost_source`)
    timings: dict[str, float] = field(default_factory=dict)
    profiles: list[tuple[Plan, ModuleProfile]] = field(default_factory=list)  # the uniform plans', once taken

    @property
    def priced_by_model(self) -> bool:
        """Whether the costs come from the cost model (:mod:`tvm_dse.core_model`) rather than timings: a
        modeled figure is the same every time, so one is as good as several."""
        return costs_modeled(self.costs)

    @property
    def measures_here(self) -> bool:
        """Whether the costs are timed on this machine: a target that runs here, not priced by a model (which
        an Arm machine may be asked for with ``cost_model``)."""
        return self.target.runs_on_host and not self.priced_by_model

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``timings[name]``."""
        clock = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - clock


@dataclass
class Calibrated:
    """The model's calibration (None without calibration data) and the inputs it was taken on."""

    calibration: Calibration | None = None
    inputs: list[dict[str, np.ndarray]] = field(default_factory=list)


@dataclass
class Choice:
    """A searched design space, the search's result on it and the searcher's accuracy-loss limit."""

    space: DesignSpace
    search: SearchResult
    accuracy_limit: float | None = None


@dataclass
class Validation:
    """The optimized module checked against TVM's default build, and its whole-model timing."""

    error: float
    run: ModelRun


@dataclass
class Verification:
    """The best plans of the search built and timed as whole models: the fastest one's choice, plan, module
    and run, and a row per plan timed (what it is, predicted and measured latency, whether it won)."""

    choice: Choice
    plan: Plan
    built: BuiltModel
    run: ModelRun
    rows: list[dict[str, Any]]


@dataclass
class _Timed:
    """A plan timed end to end: its choice, plan and module, and its runs, one per round."""

    label: str
    choice: Choice
    plan: Plan
    built: BuiltModel
    first: ModelRun | None = None  # the first round: outputs and timing where the target is
    timings: list[Timing] = field(default_factory=list)

    @property
    def run(self) -> ModelRun:
        """The first round's outputs with the fastest round's timing (see :func:`tvm_dse.timing.quiet_round`)."""
        return replace(self.first, timing=quiet_round(self.timings))


def start(model: ModelLike, target: DseTarget, options: OptimizeOptions) -> RunContext:
    """Import the model, check the options against the target, and open the measurement session (the
    tuning logs' store of the target, with the shipped records added where asked; for a target priced by
    the cost model, its own store of modeled records)."""
    modeled = options.measurement.prices_by_model(target)
    runner = ModeledRunner(target) if modeled else make_runner(target, options.measurement.rpc,
                                                               options.measurement.settings)
    if options.precision.accuracy is not None and not target.runs_on_host:
        raise TvmDseError(f"accuracy is measured by running plans on this machine; {target.key} does not run here")
    runner.check()
    workdir = claim_output_dir(Path(options.out_dir), options.force) if options.out_dir else \
        Path(tempfile.mkdtemp(prefix="tvm_dse_"))
    imported = load_model(model, options.input_shapes)
    check_optimizable(imported)
    logs = options.measurement.tuning_logs()
    if modeled:  # kept apart from measurements, per version of the model
        logs = TuningLogs(logs.root / MODELED_LOGS)
    elif options.measurement.shipped_logs:
        logs.add_shipped(target)
        if options.show_progress and target.key not in shipped_target_keys(runner.thread_pool):
            shipped = [f"{key} timed on {' and '.join(pools)}" for key, pools in shipped_logs().items()]
            print(f"no tuning log shipped with tvm_dse is for {target.key} timed on {runner.thread_pool} (shipped: "
                  f"{', '.join(shipped) or 'none'}): starting from this machine's own logs", file=sys.stderr,
                  flush=True)
    session = MeasurementSession(target, runner, logs.store(target), Builder(directory=workdir / "kernels"),
                                 options.show_progress, options.measurement.retry_failed)
    return RunContext(imported, build_graph(imported), target, session, options, workdir,
                      cost_source(runner, options))


def cost_source(runner: Runner, options: OptimizeOptions) -> dict[str, Any]:
    """Where a run's costs come from, for the plan's provenance and the report."""
    if isinstance(runner, ModeledRunner):
        return {"source": MODELED, "core": runner.core.describe(), "model_version": MODEL_VERSION,
                "host_validation": HOST_VALIDATION}
    rpc = options.measurement.rpc
    return {"source": "measured", "where": "this machine" if rpc is None else f"boards over RPC ({rpc})"}


def claim_output_dir(path: Path, force: bool) -> Path:
    """``path`` ready for a run's output, checked before any work: a folder tvm_dse wrote before (it holds
    ``OUTPUT_MARK``) is emptied, a new or empty one is created and marked, any other one is refused unless
    ``force`` (then written into, its files kept and left unmarked: a later run does not empty it)."""
    if path.exists() and not path.is_dir():
        raise TvmDseError(f"the output folder {path} is a file")
    contents = sorted(path.iterdir()) if path.is_dir() else []
    ours = (path / OUTPUT_MARK).is_file()
    if contents and not ours and not force:
        raise TvmDseError(f"the output folder {path} is not empty and holds no earlier tvm_dse output ("
                          f"{', '.join(entry.name for entry in contents[:3])}{', ...' if len(contents) > 3 else ''})"
                          ": give a new or empty folder, or force=True (--force) to write into it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if ours:
            for entry in contents:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        if ours or not contents:
            (path / OUTPUT_MARK).write_text(f"written by tvm_dse {__version__}; the next run into this folder "
                                            "replaces everything in it\n")
        else:  # forced into someone else's folder: check it takes files all the same
            tempfile.TemporaryFile(dir=path).close()
    except OSError as error:
        raise TvmDseError(f"cannot write to the output folder {path}: {error.strerror or error}") from None
    return path


def calibrate_model(context: RunContext) -> Calibrated:
    """The activation ranges of the calibration data, where int8 may be used."""
    precision = context.options.precision
    if precision.calibration_data is None:
        return Calibrated()
    with context.timed("measure_s"):
        inputs = calibration_feeds(context.model, precision.calibration_data)  # an iterator is read once
        return Calibrated(calibrate(context.model, inputs, precision.calibration_method), inputs)


def measure(context: RunContext) -> DesignSpace:
    """The design space, every option priced by measurement on the target (the store's records first);
    with ``top_k``, only the strategies a predictor trained on the target's log ranks fastest."""
    options = context.options
    with context.timed("measure_s"):
        strategies = None
        if options.measurement.top_k is not None:
            strategies = promising_strategies([v.workload for v in context.graph.nodes], context.target,
                                              context.session.store.records(), context.session.runner.thread_pool,
                                              options.measurement.top_k,
                                              seed=options.seed, precisions=options.precision.precisions)
        return measure_space(context.model, context.graph, context.session, strategies,
                             options.precision.precisions)


def price_in_modules(context: RunContext, space: DesignSpace, calibrated: Calibrated) -> DesignSpace:
    """On a target that runs here, or one priced by the cost model (unless ``profile`` is off): ``space``
    repriced from its uniform plans (the two cheapest and those within ``PROFILED_WITHIN`` of the cheapest),
    each built and priced function by function (see :mod:`tvm_dse.profiling`): here, its function calls
    timed in steady state in ``ROUNDS`` rounds alternating between the modules; by the model, each run once
    under emulation and its functions modeled. They are profiled once per run: the space measured again
    after tuning is priced from the same profiles. Over RPC the space keeps its kernels' own costs."""
    runner, modeled = context.session.runner, context.priced_by_model
    if not (context.options.measurement.profile and (context.measures_here or modeled)):
        return space
    if context.profiles:
        return price_in_model(space, context.graph, context.profiles)
    uniform = [u for u in uniform_plans(space) if u.cost_ms < float("inf")]
    assignments = {tuple(u.assignment) for rank, u in enumerate(uniform)
                   if rank < 2 or u.cost_ms <= PROFILED_WITHIN * uniform[0].cost_ms}
    plans = [_plan(context, space, list(assignment), calibrated) for assignment in sorted(assignments)]
    rounds = 1 if modeled else ROUNDS
    progress = context.session.progress(len(plans) * (1 + rounds),
                                        f"{'modeling' if modeled else 'profiling'} the uniform plans as whole modules")
    modules = []
    for plan in plans:
        modules.append(build(context, plan))
        if progress is not None:
            progress.advance(note="built")
    feeds = [_validation_feed(context, plan, calibrated)[0] for plan in plans]
    with context.timed("profile_s"):
        if modeled:
            priced = runner.price_functions(list(zip(modules, feeds)), context.workdir)
            context.profiles = [(plan, ModuleProfile.modeled(functions)) for plan, functions in zip(plans, priced)]
            if progress is not None:
                progress.advance(len(plans), note="modeled")
        else:
            profiles: list[list[ModuleProfile]] = [[] for _ in plans]
            for _ in range(rounds):
                for built, feed, taken in zip(modules, feeds, profiles):
                    taken.append(profile_module(built, feed))
                    if progress is not None:
                        progress.advance(note=f"{taken[-1].total_ms:.3f} ms")
            context.profiles = [(plan, ModuleProfile.quietest(taken)) for plan, taken in zip(plans, profiles)]
    if progress is not None:
        progress.close()
    return price_in_model(space, context.graph, context.profiles)


def measure_sensitivity_of(context: RunContext, space: DesignSpace, calibrated: Calibrated) -> Sensitivity | None:
    """With an accuracy bound: each quantizable node's accuracy loss alone, set on ``space``'s options."""
    accuracy = context.options.precision.accuracy
    if accuracy is None:
        return None
    with context.timed("sensitivity_s"):
        sensitivity = measure_sensitivity(context.model, context.graph, space, context.target,
                                          calibrated.calibration, accuracy, context.options.show_progress)
        sensitivity.apply(space)
        return sensitivity


def search(context: RunContext, space: DesignSpace, accuracy_limit: float | None) -> Choice:
    """The configured searcher's plan on ``space`` (within the memory and accuracy limits)."""
    options = context.options
    with context.timed("search_s"):
        try:
            result = get_searcher(options.search.searcher).search(
                space, options.search.budget, memory_limit_bytes=options.search.memory_limit_bytes,
                seed=options.seed, show_progress=options.show_progress, accuracy_loss_limit=accuracy_limit)
        except NoFeasiblePlan as error:
            if options.search.memory_limit is None:
                raise TvmDseError(str(error)) from None
            leanest = space.peak_memory(leanest_plan(space)) / 2**20
            raise TvmDseError(f"no plan of {context.model.name} fits in {options.search.memory_limit:g} MB: the "
                              f"leanest needs {leanest:.2f} MB (weights, workspace and live activations); give "
                              f"memory_limit (--memory-limit) of at least that") from None
        return Choice(space, result, accuracy_limit)


def tune(context: RunContext, choice: Choice, sensitivity: Sensitivity | None,
         calibrated: Calibrated) -> tuple[Choice, list[Any]]:
    """With tuning trials: tune the chosen plan's kernels, measure (and price) the space again (now with
    the tuned kernels; everything else comes from the store) and search it again."""
    trials = context.options.tuning.trials
    if trials == 0:
        return choice, []
    with context.timed("tune_s"):
        tuned = tune_plan_kernels(choice.space, choice.search.assignment, context.graph, context.session, trials,
                                  seed=context.options.seed)
    space = price_in_modules(context, measure(context), calibrated)
    if sensitivity is not None:
        sensitivity.apply(space)
    return search(context, space, choice.accuracy_limit), tuned


def make_plan(context: RunContext, choice: Choice, calibrated: Calibrated) -> Plan:
    """The plan the search chose, calibrated where it has int8 nodes."""
    budget = context.options.search.budget
    return _plan(context, choice.space, choice.search.assignment, calibrated, searcher=context.options.search.searcher,
                 budget=budget.to_dict() if budget is not None else "default", costs=context.costs)


def _plan(context: RunContext, space: DesignSpace, assignment: list[int], calibrated: Calibrated,
          **provenance: Any) -> Plan:
    plan = plan_from_assignment(space, assignment, context.model, context.target, **provenance)
    if calibrated.calibration is not None:
        plan.calibrate(calibrated.calibration)
        plan.provenance["calibration"] = calibrated.calibration.to_dict()
    return plan


def build(context: RunContext, plan: Plan) -> BuiltModel:
    """The plan lowered and compiled for the target."""
    with context.timed("build_s"):
        return build_plan(context.model, plan, context.target, context.graph)


def keep_accuracy(context: RunContext, choice: Choice, calibrated: Calibrated, sensitivity: Sensitivity | None,
                  plan: Plan, built: BuiltModel) -> tuple[Choice, Plan, BuiltModel, dict[str, Any] | None]:
    """With an accuracy bound: score the built plan, and while it loses more than the bound (the per-layer
    losses, summed, underestimated it), search again under a tighter bound; the accuracy report."""
    accuracy = context.options.precision.accuracy
    if accuracy is None or sensitivity is None:
        return choice, plan, built, None
    score = accuracy.score(context.model, built.run)
    tried = [{"quantized_nodes": plan.reduced_precision_nodes(), "score": score}]
    while sensitivity.fp32_score - score > accuracy.max_loss and plan.reduced_precision_nodes():
        estimated = choice.space.accuracy_loss(choice.search.assignment)
        if estimated > 0:
            choice = search(context, choice.space, estimated / 2)
        else:  # its quantized nodes each lose nothing alone, only together: no quantization left
            choice = search(context, choice.space.restricted(
                lambda node, option: not get_strategy(option.name).reduced_precision), choice.accuracy_limit)
        plan = make_plan(context, choice, calibrated)
        built = build(context, plan)
        score = accuracy.score(context.model, built.run)
        tried.append({"quantized_nodes": plan.reduced_precision_nodes(), "score": score})
    report = {"metric": accuracy.metric_name, "max_loss": accuracy.max_loss, "fp32_score": sensitivity.fp32_score,
              "plan_score": score, "loss": sensitivity.fp32_score - score,
              "estimated_loss": choice.space.accuracy_loss(choice.search.assignment), "searches": len(tried),
              "plans_tried": tried, "quantized_nodes": plan.reduced_precision_nodes(),
              "sensitivity": sensitivity.to_dict()}
    plan.metrics.update(accuracy_loss=report["loss"], accuracy_metric=accuracy.metric_name)
    return choice, plan, built, report


def compare_searchers(context: RunContext, choice: Choice) -> list[Any]:
    """The other searchers on the same space at the same budget, for the report."""
    options = context.options.search
    if not options.compare_searchers:
        return []
    names = [options.searcher, *[s for s in options.compare_searchers if s != options.searcher]]
    return compare(choice.space, names, options.budget, seed=context.options.seed,
                   memory_limit_bytes=options.memory_limit_bytes, accuracy_loss_limit=choice.accuracy_limit)


def _validation_feed(context: RunContext, plan: Plan, calibrated: Calibrated) -> tuple[dict[str, np.ndarray], float]:
    """The input a plan is validated on, and the error bound it must keep."""
    feed = context.model.random_feed(seed=context.options.seed)
    if plan.reduced_precision_nodes():
        # reduced-precision nodes are checked against a looser bound, on data in the calibrated range
        return (calibrated.inputs[0] if calibrated.inputs else feed), QUANTIZED_VALIDATION_BOUND
    return feed, VALIDATION_BOUND


def verify(context: RunContext, choice: Choice, calibrated: Calibrated, plan: Plan, built: BuiltModel,
           accuracy: dict[str, Any] | None) -> Verification:
    """Build the best distinct plans of the search (``verify`` of them, and the best uniform plan) and time
    each as a whole model where the target is: the fastest measured becomes the plan, as QS-DNN rewards
    plans by their measured latency; one measuring within the noise of the search's plan does not displace
    it, so reruns on the same records keep their plan. On this machine the plans are timed in ``ROUNDS``
    alternating rounds, each plan's fastest round kept. With an accuracy bound, only plans that reduce the
    precision of the same nodes as the checked plan are timed, so its accuracy holds for the one chosen."""
    count, space = context.options.search.verify, choice.space
    limits = dict(memory_limit_bytes=context.options.search.memory_limit_bytes,
                  accuracy_loss_limit=choice.accuracy_limit)

    def reduced(assignment: list[int]) -> set[str]:
        return {node.name for node, option in zip(space.nodes, assignment)
                if node.is_tunable and get_strategy(node.options[option].name).reduced_precision}

    def admissible(assignment: list[int]) -> bool:
        return accuracy is None or reduced(assignment) == reduced(choice.search.assignment)

    plans = [("search", choice.search.assignment)]
    if count > 1:
        others = [p for p in best_plans(space, choice.search, 4 * count, **limits)
                  if p != choice.search.assignment and admissible(p)]
        plans += [(f"runner-up {rank}", assignment) for rank, assignment in enumerate(others[:count - 1], 1)]
        uniform = next((u for u in uniform_plans(space) if u.cost_ms < float("inf") and admissible(u.assignment)
                        and fits_limits(space, u.assignment, **limits)), None)
        if uniform is not None and all(uniform.assignment != assignment for _, assignment in plans):
            plans.append((f"uniform {uniform.name}", uniform.assignment))
    # on a board each round uploads every module again; a model gives the same figure every time
    rounds = ROUNDS if context.measures_here else 1
    progress = context.session.progress(len(plans) * rounds, f"{context.session.runner.verb} the best plans end to end")
    timed: list[_Timed] = []
    with context.timed("verify_s"):
        for label, assignment in plans:
            if assignment == choice.search.assignment:
                timed.append(_Timed(label, choice, plan, built))
                continue
            searched = replace(choice.search, assignment=list(assignment), cost_ms=space.cost(assignment),
                               peak_memory_bytes=space.peak_memory(assignment))
            candidate = Choice(space, searched, choice.accuracy_limit)
            candidate_plan = make_plan(context, candidate, calibrated)
            timed.append(_Timed(label, candidate, candidate_plan, build(context, candidate_plan)))
        settings = context.options.measurement.steady_state
        for _ in range(rounds):
            for entry in timed:
                feed = _validation_feed(context, entry.plan, calibrated)[0]
                if entry.first is None:
                    entry.first = context.session.run_model(entry.built, feed, settings, context.workdir)
                    entry.timings.append(entry.first.timing)
                else:  # later rounds run on this machine
                    entry.timings.append(entry.built.time(feed, settings))
                if progress is not None:
                    progress.advance(note=f"{entry.label}: {entry.timings[-1].median_ms:.3f} ms")
    if progress is not None:
        progress.close()
    winner = timed[0]  # the search's plan: another wins by measuring clearly faster
    for entry in timed[1:]:
        if entry.run.timing.clearly_faster_than(winner.run.timing):
            winner = entry
    rows = [{"plan": entry.label, "predicted_ms": entry.choice.search.cost_ms, "measured": entry.run.timing.to_dict(),
             "rounds_ms": [timing.median_ms for timing in entry.timings], "chosen": entry is winner} for entry in timed]
    winner.plan.provenance["verified"] = {"plans_timed": len(timed), "chosen": winner.label}
    return Verification(winner.choice, winner.plan, winner.built, winner.run, rows)


def validate(context: RunContext, plan: Plan, built: BuiltModel, calibrated: Calibrated,
             run: ModelRun | None = None) -> Validation:
    """Compare the built module's outputs where the target is with TVM's default build of the model on this
    machine, the module run and timed there (or ``run``, its run on the validation input, when already
    done). Raises :class:`~tvm_dse.validation.ValidationError`."""
    feed, bound = _validation_feed(context, plan, calibrated)
    expected = build_baseline(context.model, "host").run(feed)
    if run is None:
        run = context.session.run_model(built, feed, context.options.measurement.steady_state, context.workdir)
    error = max(relative_error(o, r) for o, r in zip(run.outputs, expected))
    if not error <= bound:
        raise ValidationError(f"the optimized {context.model.name} differs from TVM's default build: relative "
                              f"error {error:.2e} > {bound:g}; plan: {plan.to_dict()['nodes']}")
    plan.metrics.update(measured_ms=run.timing.median_ms, measured_on=run.board)
    return Validation(error, run)


@dataclass
class Confirmation:
    """The chosen plan timed after the choice: its run (the verification's outputs, the timing of its median
    round), and onnxruntime's latency beside it (or why there is none), each with its rounds."""

    run: ModelRun
    rounds_ms: list[float]
    reference: dict[str, Any]


def confirm(context: RunContext, calibrated: Calibrated, verification: Verification) -> Confirmation:
    """Time the chosen plan once more, after the choice: of several plans that run alike, the one that
    measured fastest in the verification's rounds did so partly by chance, so those rounds flatter it. On a
    host target, in ``CONFIRMING_ROUNDS`` rounds alternating with onnxruntime on the same model, input and
    machine (each round a steady-state timing of its own, after a pause that lets the other runtime's
    threads stop spinning), each one's fastest round kept (:func:`~tvm_dse.timing.quiet_round`): a machine's
    speed drifts, for minutes at a time on a virtual machine, and rounds alternating spread both over the
    same drifts. While the plan's fastest round stays slower than its verification (by more than the spread
    bound), up to ``MORE_ROUNDS`` more are taken; still slower, the timing is flagged as disturbed. On a
    board, the plan is timed once more there.
    A plan verified alone with no onnxruntime to time keeps the verification's rounds."""
    plan, built = verification.plan, verification.built
    feed = _validation_feed(context, plan, calibrated)[0]
    settings = context.options.measurement.steady_state
    reference, onnxruntime = _reference(context, feed)
    if len(verification.rows) == 1 and onnxruntime is None:
        # nothing chosen among several and nothing to time beside it: the verification's rounds stand
        return Confirmation(verification.run, verification.rows[0]["rounds_ms"], reference)
    if context.priced_by_model:  # the same figure again
        return Confirmation(verification.run, [verification.run.timing.median_ms], reference)
    if not context.target.runs_on_host:
        timing = context.session.run_model(built, feed, settings, context.workdir).timing
        return Confirmation(replace(verification.run, timing=timing), [timing.median_ms], reference)
    contenders = {"plan": lambda: built.time(feed, settings)}
    if onnxruntime is not None:
        contenders["onnxruntime"] = lambda: steady_state(onnxruntime, settings, watch_this_machine)
    progress = context.session.progress(CONFIRMING_ROUNDS * len(contenders), "timing the plan" + (
        " and onnxruntime in alternating rounds" if onnxruntime is not None else " once more"))
    rounds: dict[str, list[Timing]] = {name: [] for name in contenders}
    verified_ms = verification.run.timing.median_ms  # the chosen plan's fastest round in the verification

    def slowed() -> bool:  # the machine runs slower than it did for the verification
        return min(timing.median_ms for timing in rounds["plan"]) > verified_ms * (1 + settings.max_spread)

    with context.timed("confirm_s"):
        turn = 0
        while turn < CONFIRMING_ROUNDS or (turn < CONFIRMING_ROUNDS + MORE_ROUNDS and slowed()):
            if turn >= CONFIRMING_ROUNDS and progress is not None:
                progress.extend(len(contenders))
            for name, time_round in contenders.items():
                if len(contenders) > 1 and (turn or name != "plan"):
                    time.sleep(ONNXRUNTIME_SETTLE_S)
                rounds[name].append(time_round())
                if progress is not None:
                    progress.advance(note=f"{name}: {rounds[name][-1].median_ms:.3f} ms" + (
                        " (a round more: the plan runs slower than it did in the verification)"
                        if turn >= CONFIRMING_ROUNDS else ""))
            turn += 1
    if progress is not None:
        progress.close()
    if onnxruntime is not None:
        reference.update(latency=quiet_round(rounds["onnxruntime"], settings.max_spread).to_dict(),
                         rounds_ms=[timing.median_ms for timing in rounds["onnxruntime"]])
    timing = quiet_round(rounds["plan"], settings.max_spread)
    return Confirmation(replace(verification.run, timing=replace(timing, disturbed=timing.disturbed or slowed())),
                        [timing.median_ms for timing in rounds["plan"]], reference)


def _reference(context: RunContext, feed: dict[str, np.ndarray]) -> tuple[dict[str, Any], Sampler | None]:
    """What the report says of onnxruntime before it is timed, and a sampler running it on ``feed``; or why
    it is not timed, and None."""
    model, target = context.model, context.target
    if not context.options.measurement.reference:
        return {"omitted": "not asked for (reference=False, --no-reference)"}, None
    if context.priced_by_model:
        return {"omitted": f"the costs are modeled for {context.costs['core']}; onnxruntime runs on no model"}, None
    if not target.runs_on_host:
        return {"omitted": f"onnxruntime is not timed on boards: {target.key} has no onnxruntime to call"}, None
    if model.onnx_model is None:
        return {"omitted": "the model was not given as ONNX"}, None
    try:
        import onnxruntime
    except ImportError:
        return {"omitted": "onnxruntime is not installed (pip install onnxruntime)"}, None
    return ({"runtime": f"onnxruntime {onnxruntime.__version__}", "threads": physical_cores()},
            onnxruntime_sampler(model.onnx_model, feed, physical_cores()))


def measure_memory(context: RunContext, plan: Plan, built: BuiltModel,
                   calibrated: Calibrated) -> ProcessMemory | None:
    """On a host target, the chosen plan's library run once in a process of its own with TVM's runtime library
    only (:mod:`tvm_dse.process_memory`): the report's measured memory beside the plan's modeled memory. None
    on a board, where the process running a library is the RPC server's."""
    if not context.target.runs_on_host:
        return None
    with context.timed("memory_s"):
        library = built.export(context.workdir / "memory" / f"{context.model.name}.so")
        return measure_process_memory(library, _validation_feed(context, plan, calibrated)[0])


def report(context: RunContext, plan: Plan, choice: Choice, comparison: list[Any], validation: Validation,
           tuned: list[Any], accuracy: dict[str, Any] | None, verification: Verification,
           confirmation: Confirmation, memory: ProcessMemory | None) -> dict[str, Any]:
    """The report of the run, as plain data."""
    return build_report(context.model, context.graph, context.target, plan, choice.space, choice.search, comparison,
                        validation.run.timing, validation.error, context.timings, tuned,
                        context.options.measurement.top_k, accuracy, verification.rows, confirmation.reference,
                        confirmation.rounds_ms, context.costs, memory)
