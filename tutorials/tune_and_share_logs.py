"""Tutorial: tune a model's kernels with MetaSchedule, then reuse the tuning log in another project.

Project A optimizes a CNN with kernel tuning: tvm_dse measures every strategy, searches, tunes the
slowest kernels of the plan with MetaSchedule and searches again. Its tuning log is exported to one file,
which project B (another directory, another machine of the same kind) imports: B's optimize measures and
tunes no kernel, and weighs the same kernels with the same tuned decisions (on a target that runs here,
their prices come from B's own profiles of the model's uniform plans, and the plan from B's own end-to-end
timings of the best plans).

    python tutorials/tune_and_share_logs.py [MODEL] [WORK_DIR] [TUNE_TRIALS]
"""

import sys
from pathlib import Path

from tvm_dse import optimize
from tvm_dse.tuning import TuningLogs

model = sys.argv[1] if len(sys.argv) > 1 else "zoo:resnet18"
work = Path(sys.argv[2] if len(sys.argv) > 2 else "tutorial_logs")
trials = int(sys.argv[3]) if len(sys.argv) > 3 else 64

# 1. Project A: optimize with tuning; every measurement lands in A's tuning logs as it arrives. (Both
#    projects leave out the logs shipped with tvm_dse, so that only A's log travels.)
logs_a = TuningLogs(work / "project_a" / "tuning_logs")
tuned = optimize(model, target="host", logs=logs_a, shipped_logs=False, tune_trials=trials, compare_searchers=())
for row in tuned.report["tuning"]:
    print(f"tuned {row['workload']:28s} {row['strategy']:20s} trials {row['trials']:3d}, best {row['best_ms']:.3f} ms")

# 2. Export A's log for this target (the same as `tvm-dse logs export TARGET -o FILE`).
shared = work / f"{tuned.target.key}.jsonl"
shared.unlink(missing_ok=True)
print(f"exported {logs_a.export(tuned.target.key, shared)} records to {shared}")

# 3. Project B imports it (`tvm-dse logs import FILE --target TARGET`: records of any other target are
#    refused) and optimizes the same model: nothing left to measure or tune. (The kernels that failed in
#    A, or whose timings stayed disturbed, come with the log; B keeps them, `--no-retry-failed`, instead of
#    measuring them again.)
logs_b = TuningLogs(work / "project_b" / "tuning_logs")
logs_b.import_file(shared, target=tuned.target.key)
before = len(logs_b.store(tuned.target).records())
again = optimize(model, target="host", logs=logs_b, shipped_logs=False, tune_trials=trials, compare_searchers=(),
                 retry_failed=False)
assert len(logs_b.store(tuned.target).records()) == before, "project B measured kernels again"
assert again.report["tuning"] == [], "project B tuned kernels again"
def kernels(result):
    return [(node.name, option.name, option.decisions) for node in result.space.nodes for option in node.options]


assert kernels(again) == kernels(tuned), "project B weighed other kernels than project A"
print(f"project B: {again.report['latency']['median_ms']:.3f} ms, no kernel measured or tuned again, "
      "the same kernels weighed with project A's decisions")
