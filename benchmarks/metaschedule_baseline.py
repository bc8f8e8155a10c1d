"""TVM's own MetaSchedule on a whole model, the baseline tvm_dse is compared with: tune every fused kernel
of the model for about a given wall time (XGBoost cost model, evolutionary search, local measurement),
then compile the model with the tuning records applied.

MetaSchedule has no time limit, so it tunes in rounds of a few trials per task on one JSON database until
the time is up; each round's evolutionary search starts from the best records of the rounds before, and
the cost model carries over.

    python benchmarks/metaschedule_baseline.py zoo:resnet18 --seconds 120 [--threads 2] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import cloudpickle
import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.relax_integration import (compile_relax, extract_tasks,
                                                       extracted_tasks_to_tune_contexts)

from tvm_dse import BuiltModel, DseTarget, Model

TRIALS_PER_TASK_PER_ROUND = 4
# A candidate that failed to build or run is recorded with this run time.
FAILED_RUN_SECONDS = 1e10

# LocalBuilder ships f_build to fresh worker processes with cloudpickle, which pickles a module's functions
# by reference; benchmarks/ is not importable in those workers, so ship this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class MetaScheduleResult:
    """A model compiled with MetaSchedule's tuning records, and what the tuning cost.

    Attributes
    ----------
    built
        The compiled model (feed it by input name, like the default build).
    seconds
        Wall time spent tuning.
    trials
        Tuning records measured in this run (failed candidates included).
    tasks
        Tuning tasks (distinct fused kernels) of the model.
    """

    built: BuiltModel
    seconds: float
    trials: int
    tasks: int

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on the host; returns the model outputs in order."""
        return self.built.run(feed)


def tune_for(model: Model, target: DseTarget, seconds: float, work_dir: str | Path,
             threads: int = 2) -> MetaScheduleResult:
    """Tune ``model`` with MetaSchedule for about ``seconds`` and compile it with the best records.

    Tuning stops after the round that reaches ``seconds``; a round gives every task a few trials, so at least
    one runs whatever the budget (minutes for a whole CNN: each task's evolutionary search takes seconds to
    tens of seconds before its first candidate is measured). Tuning records go to a JSON database in
    ``work_dir`` (records already there seed the search). ``threads`` is the number of build workers and of
    search and cost-model threads; kernels are measured with the caller's TVM_NUM_THREADS.

    Raises
    ------
    RuntimeError
        When no candidate of this run built and ran (see the logs under ``work_dir``).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tvm_target = target.tvm_target
    # extract_tasks finds nothing in an unfused module; this is the fusion compile_relax repeats before it
    # looks the fused kernels up in the database.
    with tvm_target:
        fused = relax.get_pipeline("zero")(model.mod)
    tasks = extract_tasks(fused, tvm_target)
    database = ms.database.JSONDatabase(work_dir=str(work_dir))
    builder = ms.builder.LocalBuilder(max_workers=threads, f_build=_build_without_tensor_intrin)
    runner = ms.runner.LocalRunner()
    cost_model = ms.cost_model.XGBModel(num_tuning_cores=threads)
    records_before, measured_before = len(database), _measured_records(database)
    print(f"MetaSchedule: {model.name}, {len(tasks)} tasks, {TRIALS_PER_TASK_PER_ROUND} trials per task per round, "
          f"{seconds:.0f} s", flush=True)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        # tune_relax's own steps, without extracting the tasks again every round
        contexts, weights = extracted_tasks_to_tune_contexts(tasks, str(work_dir), num_threads=threads)
        # Making the contexts configures MetaSchedule's logging and leaves its logger at DEBUG, which prints a
        # statistics table per measured batch on stdout.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                      max_trials_global=TRIALS_PER_TASK_PER_ROUND * len(contexts),
                      max_trials_per_task=TRIALS_PER_TASK_PER_ROUND, num_trials_per_iter=TRIALS_PER_TASK_PER_ROUND,
                      builder=builder, runner=runner, database=database, cost_model=cost_model)
        print(f"MetaSchedule: {time.perf_counter() - start:.0f} s, {len(database) - records_before} trials",
              flush=True)
    tuned_seconds = time.perf_counter() - start
    trials = len(database) - records_before
    measured = _measured_records(database) - measured_before
    if measured == 0:
        raise RuntimeError(f"MetaSchedule measured none of its {trials} candidates; see {work_dir / 'logs'}")
    print(f"MetaSchedule: {measured} of {trials} candidates built and ran; compiling", flush=True)
    executable = compile_relax(database, model.mod, tvm_target, params=None)
    return MetaScheduleResult(BuiltModel(executable, target, model.inputs), seconds=tuned_seconds,
                              trials=trials, tasks=len(tasks))


def _build_without_tensor_intrin(mod: tvm.IRModule, target: tvm.target.Target,
                                 _params: dict[str, tvm.runtime.Tensor] | None) -> tvm.runtime.Module:
    """MetaSchedule's default build minus its ``import tvm.s_tir.tensor_intrin``, which takes 20-85 s in each
    fresh build worker and runs into the build timeout (every candidate then fails to build)."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _measured_records(database: ms.database.Database) -> int:
    """Records of ``database`` whose candidate built and ran."""
    return sum(1 for record in database.get_all_tuning_records()
               if record.run_secs[0].value < FAILED_RUN_SECONDS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX file or a zoo model, e.g. zoo:resnet18")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", help="MetaSchedule database and logs (default: a new temporary directory)")
    args = parser.parse_args()

    from common import set_threads, time_callable

    # TVM's thread pool reads this when the first kernel runs, so setting it after the imports still counts.
    set_threads(args.threads)
    from tvm_dse import build_baseline, load_model, parse_target
    from tvm_dse.testing import onnxruntime_session, relative_error

    model = load_model(args.model)
    target = parse_target("host")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="metaschedule_")
    began = time.perf_counter()
    result = tune_for(model, target, args.seconds, work_dir, threads=args.threads)
    print(f"tuned {result.tasks} tasks, {result.trials} trials in {result.seconds:.0f} s; tuning and compiling "
          f"took {time.perf_counter() - began:.0f} s", flush=True)

    feed = model.random_feed()
    session = onnxruntime_session(model.onnx_model, threads=args.threads)
    error = max(relative_error(actual, expected)
                for actual, expected in zip(result.run(feed), session.run(None, feed)))
    print(f"relative error vs onnxruntime: {error:.1e}", flush=True)
    default = build_baseline(model, target)
    default_ms = time_callable(lambda: default.run(feed), number=3, warmup=1) * 1e3
    tuned_ms = time_callable(lambda: result.run(feed), number=10, warmup=1) * 1e3
    print(f"latency, mean of 3 / 10 runs: default build {default_ms:.1f} ms, MetaSchedule {tuned_ms:.1f} ms "
          f"({default_ms / tuned_ms:.1f}x)", flush=True)
    return 0 if error <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
