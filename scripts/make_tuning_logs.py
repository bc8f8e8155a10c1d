"""Regenerate the shipped tuning logs (``tuning_logs/``) for this machine's host target.

Runs ``tvm_dse.optimize`` on each zoo model with the repository's tuning logs as its logs, so every
applicable strategy of every conv workload and every layout conversion the models need is measured on
this machine, and tunes the slowest kernels of each model's plan with MetaSchedule (``--tune-trials``
per model). Records already in the logs are kept and not measured again; ``--fresh`` starts the host's
store anew. Run it on an idle machine (2 threads, as the benchmarks):

    TVM_NUM_THREADS=2 python scripts/make_tuning_logs.py [--models resnet18 ...] [--tune-trials 64] [--fresh]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "mobilenet_v2", "resnet50", "vgg16", "squeezenet1_1", "mobilenet_v1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--tune-trials", type=int, default=64, help="tuning trials per model (default: 64)")
    parser.add_argument("--logs", default=str(ROOT / "tuning_logs"),
                        help="tuning-log directory (default: ./tuning_logs)")
    parser.add_argument("--fresh", action="store_true", help="remove the host's store first")
    args = parser.parse_args()

    import tvm_dse
    from tvm_dse.tuning import TuningLogs

    logs = TuningLogs(args.logs)
    target = tvm_dse.parse_target("host")
    store = logs.store(target)
    if args.fresh and store.path.exists():
        store.path.unlink()
    for name in args.models:
        began = time.perf_counter()
        result = tvm_dse.optimize(f"zoo:{name}", target, logs=logs, tune_trials=args.tune_trials,
                                  compare_searchers=(), out_dir=tempfile.mkdtemp(prefix=f"tuning_logs_{name}_"))
        tuned = ", ".join(f"{row['workload']} {row['strategy']} {row['trials']} trials, best {row['best_ms']:.3f} ms"
                          for row in result.report["tuning"])
        print(f"{name}: {time.perf_counter() - began:.0f} s, plan {result.report['latency']['median_ms']:.2f} ms; "
              f"tuned: {tuned or 'nothing new'}", flush=True)
    print(f"{store.path}: {len(store.records())} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
