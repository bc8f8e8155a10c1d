"""Kernel tuning with MetaSchedule: a strategy's schedule template is the search space, MetaSchedule's
evolutionary search with its XGBoost cost model proposes decisions, and tvm_dse's own builder, runners
and measurement store measure them.

The strategy's schedule function, run with every decision sampled, is MetaSchedule's design space (a
``ScheduleFn``); the search mutates the sampled tile sizes in the trace. Each proposed trace is turned
back into the strategy's named decisions (the sampling instructions appear in the order the schedule
made its decisions) and rebuilt from them by the strategy's own schedule, so what is measured is always a
kernel the strategy can rebuild from a plan, and the cost model learns from that kernel. The measurements
go to the store like any other (one record per candidate, written as it arrives); a later tuning of the
same kernel starts from them: they seed MetaSchedule's database and train its cost model, and a kernel
that already has the trials asked for is not tuned again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import TvmDseError
from ..measure import MeasurementSession, MeasurementStore, Record
from ..strategies import Candidate, default_decisions, get_strategy, schedule_versions
from ..strategies.base import Decider, Strategy
from ..strategies.kernel import kernel_prim_func
from ..target import DseTarget
from ..workload import Workload

DEFAULT_TRIALS = 32
TRIALS_PER_ROUND = 8
# MetaSchedule's run time for a candidate that failed to build or run: it ranks last.
FAILED_RUN_SECONDS = 1e10
SAMPLING_INSTRUCTIONS = ("SamplePerfectTile", "SampleCategorical")
# rounds in a row with nothing new to measure after which a kernel's search is over
STALE_ROUNDS = 3
# MetaSchedule's own trial budget per new measurement wanted (its proposals may repeat measured ones)
SEARCH_ROOM = 4


@dataclass
class TuneResult:
    """What tuning one kernel found.

    Attributes
    ----------
    workload, strategy
        The kernel tuned.
    best
        The fastest record of the kernel on the target (tuned or default decisions), None if none ran.
    default
        The record of the strategy's default decisions.
    trials
        Distinct decisions of this kernel measured on the target, this run's and earlier runs' together.
    measured
        Candidates this run measured (0 when the store already held the trials asked for).
    """

    workload: Workload
    strategy: str
    best: Record | None
    default: Record | None
    trials: int
    measured: int
    history: list[float] = field(default_factory=list)  # best latency (ms) after each round

    @property
    def speedup(self) -> float | None:
        """Default latency over the best latency."""
        if self.best is None or self.default is None or not self.default.ok:
            return None
        return self.default.median_ms / self.best.median_ms


def kernel_records(store: MeasurementStore, target: DseTarget, thread_pool: str, workload: Workload,
                   strategy: Strategy) -> list[Record]:
    """What the store holds (see :meth:`MeasurementStore.held`) for every set of decisions of (workload,
    strategy) on ``target`` and ``thread_pool``, with the strategy's current schedule version."""
    workload_key = workload.key()
    return [record for record in _current_records(store, target, thread_pool)
            if record.workload_key == workload_key and record.strategy == strategy.name]


def _current_records(store: MeasurementStore, target: DseTarget, thread_pool: str) -> list[Record]:
    """What the store holds for ``target`` and ``thread_pool`` under this TVM version and the strategies'
    current schedules."""
    versions = schedule_versions()
    return [record for record in store.held().values() if record.measured_as(target.key, versions, thread_pool)]


def _tune_context(mod: Any, target: DseTarget, space: Any, search: Any, seed: int, threads: int) -> Any:
    """A MetaSchedule ``TuneContext``, made through its FFI constructor: ``TuneContext.__init__`` first
    imports ``tvm.s_tir.tensor_intrin`` (45-110 s here), whose intrinsics a strategy's schedule never uses."""
    from tvm.s_tir.meta_schedule import TuneContext, _ffi_api
    from tvm.s_tir.meta_schedule.logging import get_logger, get_logging_func

    context = TuneContext.__new__(TuneContext)
    context.__init_handle_by_constructor__(_ffi_api.TuneContext, mod, target.tvm_target, space, search, "kernel",
                                           threads, seed, get_logging_func(get_logger(__name__)))
    _ffi_api.TuneContextInitialize(context)
    return context


class _KernelSpace:
    """One (workload, strategy) as a MetaSchedule search space, and the way back from traces to decisions."""

    def __init__(self, strategy: Strategy, workload: Workload, target: DseTarget):
        import tvm
        from tvm.s_tir import meta_schedule as ms

        self.strategy, self.workload, self.target = strategy, workload, target
        self.func = kernel_prim_func(strategy, workload, target)
        self.mod = tvm.IRModule({"main": self.func})
        self.args_info = ms.arg_info.ArgInfo.from_prim_func(self.func)
        self.names: list[str] = []

    def sample(self, sch: Any) -> Any:
        """The design space: the strategy's schedule with every decision sampled."""
        decider = Decider(sch, None)
        self.strategy.schedule(sch, self.workload, self.target, decider)
        self.names = list(decider.chosen)
        return sch

    def schedule(self, decisions: Mapping[str, Any]) -> Any:
        """The strategy's schedule with fixed ``decisions`` (its trace has the same sampling instructions)."""
        from tvm import s_tir

        sch = s_tir.Schedule(self.mod)
        self.strategy.schedule(sch, self.workload, self.target, Decider(sch, dict(decisions)))
        return sch

    def decisions(self, trace: Any) -> dict[str, Any]:
        """The named decisions a MetaSchedule trace of this space made."""
        sampled = [inst for inst in trace.insts if inst.kind.name in SAMPLING_INSTRUCTIONS]
        if len(sampled) != len(self.names):
            raise TvmDseError(f"a trace of {self.strategy.name} has {len(sampled)} sampling instructions, the "
                              f"schedule makes {len(self.names)} decisions ({', '.join(self.names)})")
        decisions: dict[str, Any] = {}
        for name, inst in zip(self.names, sampled):
            value = trace.decisions[inst]
            if inst.kind.name == "SampleCategorical":
                decisions[name] = int(inst.attrs[0][int(value)])
            else:
                decisions[name] = [int(v) for v in value]
        return decisions

    def candidate(self, sch: Any) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.MeasureCandidate(sch, self.args_info)


def _runner_result(record: Record) -> Any:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    seconds = record.median_ms / 1e3 if record.ok else FAILED_RUN_SECONDS
    return ms.runner.RunnerResult(run_secs=[tvm.tirx.FloatImm("float64", seconds)],
                                  error_msg=None if record.ok else record.error or record.status)


def _store(session: MeasurementSession) -> MeasurementStore:
    if session.store is None:
        raise ValueError("tuning needs a measurement session with a store: it resumes from the decisions "
                         "measured before")
    return session.store


def tune_kernel(workload: Workload, strategy: Strategy | str, session: MeasurementSession,
                trials: int = DEFAULT_TRIALS, trials_per_round: int = TRIALS_PER_ROUND, seed: int = 0) -> TuneResult:
    """Tune one (workload, strategy) kernel on the session's target until its store holds ``trials``
    distinct decisions of it (the default decisions count as one), measuring ``trials_per_round``
    candidates per round.

    Returns the fastest record of the kernel, tuned or default. Raises ValueError when the strategy does
    not apply to the workload on the target or the session has no store (tuning resumes from it).
    """
    from tvm.s_tir import meta_schedule as ms

    strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    target, store = session.target, _store(session)
    applicability = strategy.applies(workload, target)
    if not applicability:
        raise ValueError(f"{strategy.name} does not apply to {workload.describe()}: {applicability.reason}")
    label = f"tuning {strategy.name} on {workload.describe()}"
    default_candidate = Candidate(workload, strategy.name, default_decisions(strategy.name, workload, target))
    default = session.measure([default_candidate], show_progress=False)[0]
    known = {record.key: record
             for record in kernel_records(store, target, session.runner.thread_pool, workload, strategy)}
    measured = 0
    history: list[float] = []
    if len(known) < trials:
        space = _KernelSpace(strategy, workload, target)
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        context = _tune_context(
            space.mod, target,
            ms.space_generator.ScheduleFn(space.sample, sch_rules=[], postprocs=[],
                                          mutator_probs={ms.mutator.MutateTileSize(): 1.0}),
            ms.search_strategy.EvolutionarySearch(population_size=64, init_measured_ratio=0.25,
                                                  genetic_num_iters=3),
            seed, threads=2)
        design_spaces = context.generate_design_space()
        database = ms.database.MemoryDatabase()
        entry = database.commit_workload(space.mod)
        cost_model = ms.cost_model.XGBModel(num_tuning_cores=2)

        def learn(schedules: Sequence[Any], records: Sequence[Record]) -> None:
            """Tell the database and the cost model what the strategy's kernels measured."""
            results = [_runner_result(record) for record in records]
            for sch, result in zip(schedules, results):
                database.commit_tuning_record(ms.database.TuningRecord(
                    sch.trace, entry, result.run_secs, target.tvm_target, space.args_info))
            cost_model.update(context, [space.candidate(sch) for sch in schedules], results)

        prior = [record for record in known.values() if record.ok]
        if prior:  # earlier runs' measurements seed the search and train the cost model
            learn([space.schedule(record.decisions) for record in prior], prior)
        remaining = trials - len(known)
        # MetaSchedule counts every proposal as a trial, those that turn out measured already too: give it
        # room, the loop below stops at ``remaining`` new measurements
        context.pre_tuning(max_trials=SEARCH_ROOM * remaining, num_trials_per_iter=trials_per_round,
                           design_spaces=design_spaces, database=database, cost_model=cost_model)
        progress = session.progress(remaining, label)
        stale_rounds = 0
        try:
            while measured < remaining:
                try:
                    proposed = context.search_strategy.generate_measure_candidates()
                except RuntimeError as error:
                    if "old_outputs.size() == new_outputs.size()" not in str(error):
                        raise
                    raise TvmDseError(
                        f"{strategy.name}'s schedule makes a different number of loops or blocks for other "
                        f"decisions, so MetaSchedule cannot replay it on {workload.describe()} (keep unit loops: "
                        "preserve_unit_loops=True)") from error
                if not proposed:
                    break  # the search has nothing new to propose
                proposed = list(proposed)[:remaining - measured]
                candidates = [Candidate(workload, strategy.name, space.decisions(p.sch.trace)) for p in proposed]
                records = session.measure(candidates, show_progress=False)
                context.search_strategy.notify_runner_results(proposed, [_runner_result(r) for r in records])
                # what was measured, rebuilt by the strategy; a candidate that failed to build, as proposed
                learn([space.schedule(c.decisions) if r.ok else p.sch
                       for c, r, p in zip(candidates, records, proposed)], records)
                fresh = {record.key for record in records} - set(known)
                known.update((record.key, record) for record in records)
                measured += len(fresh)
                history.append(min((r.median_ms for r in known.values() if r.ok), default=float("inf")))
                if progress is not None:
                    progress.advance(len(fresh), note=f"best {history[-1]:.3f} ms")
                stale_rounds = 0 if fresh else stale_rounds + 1
                if stale_rounds == STALE_ROUNDS:
                    break  # the search keeps proposing what was measured: it has converged
        finally:
            context.post_tuning()
            if progress is not None:
                progress.close()
    successful = [record for record in known.values() if record.ok]
    best = min(successful, key=lambda record: record.median_ms) if successful else None
    return TuneResult(workload, strategy.name, best, default, len(known), measured, history)


def plan_kernels(space: Any, assignment: Sequence[int], graph: Any) -> list[tuple[Workload, str, float]]:
    """The distinct (workload, strategy) kernels of a plan with the time they take in it (ms, every node
    running them counted), slowest first: where tuning can gain the plan most."""
    totals: dict[tuple[str, str], list] = {}
    for vertex, node, choice in zip(graph.vertices, space.nodes, assignment):
        if not node.is_tunable:
            continue
        option = node.options[choice]
        entry = totals.setdefault((vertex.workload.key(), option.name), [vertex.workload, option.name, 0.0])
        entry[2] += option.latency_ms
    return sorted((tuple(entry) for entry in totals.values()), key=lambda entry: -entry[2])


def tune_plan_kernels(space: Any, assignment: Sequence[int], graph: Any, session: MeasurementSession, trials: int,
                      trials_per_kernel: int = DEFAULT_TRIALS, seed: int = 0) -> list[TuneResult]:
    """Tune the kernels of a plan in ``session``, slowest first, each up to ``trials_per_kernel`` decisions,
    until the model's kernels hold ``trials`` tuned decisions (beyond their defaults) in all. Decisions
    measured by earlier runs count, those of every strategy of every node of ``space`` and not only the
    plan's: a rerun with the same store and budget tunes nothing, even where its plan differs (its own
    timings of the uniform plans price the kernels, and they vary from run to run)."""
    decisions = Counter((record.workload_key, record.strategy)
                        for record in _current_records(_store(session), session.target, session.runner.thread_pool))
    model_kernels = {(vertex.workload.key(), option.name) for vertex, node in zip(graph.vertices, space.nodes)
                     if node.is_tunable for option in node.options}
    remaining = trials - sum(max(decisions[kernel] - 1, 0) for kernel in model_kernels)
    kernels = [(workload, get_strategy(name)) for workload, name, _ in plan_kernels(space, assignment, graph)]
    held = [decisions[workload.key(), strategy.name] for workload, strategy in kernels]
    results = []
    for (workload, strategy), count in zip(kernels, held):
        if remaining <= 0:
            break
        if count >= trials_per_kernel:
            continue
        result = tune_kernel(workload, strategy, session, trials=min(trials_per_kernel, max(count, 1) + remaining),
                             seed=seed)
        remaining -= result.measured
        results.append(result)
    return results
