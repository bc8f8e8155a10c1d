"""The latency predictor on the shipped tuning logs: its error on each zoo model's workloads when they are
left out of training, and the plan the exact search finds at equal measurement budget with it (the top-k
strategies it predicts per node) and without it (k strategies per node drawn at random), against the plan
over every strategy. Plan costs are the measured kernel and conversion latencies the log holds, summed
over the plan (the search's own cost), so no kernel is measured again.

    python benchmarks/predictor.py [--logs tuning_logs] [--target host] [--k 2] [--draws 20]

Records the logs lack for a model (a strategy added or rescheduled since) are measured on this machine,
into a copy of the logs. The shipped logs hold one machine's records (a 2-core AMD Zen 3): to train on them
elsewhere pass its target, ``--target "llvm -mtriple=x86_64-linux-gnu -mcpu=znver3 -num-cores=2"``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

from common import machine, write_results

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "mobilenet_v2", "resnet50", "vgg16", "squeezenet1_1", "mobilenet_v1")


def _shown(path: Path) -> str:
    """``path`` relative to the checkout where it lies in it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", default=str(ROOT / "tuning_logs"))
    parser.add_argument("--target", default="host", help="the target whose records train and price (default: "
                        "this machine's)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--k", type=int, default=2, help="strategies measured per node (default: 2)")
    parser.add_argument("--draws", type=int, default=20, help="random draws of k strategies (default: 20)")
    args = parser.parse_args()

    from tvm_dse import build_graph, load_model, parse_target
    from tvm_dse.pricing import measure_space
    from tvm_dse.measure import LocalRunner, MeasurementSession
    from tvm_dse.search import get_searcher
    from tvm_dse.tuning import TuningLogs
    from tvm_dse.tuning.predictor import LatencyPredictor, evaluate, samples_from

    target = parse_target(args.target)
    # a copy of the logs: a record they lack would be measured here, and must not land in the logs given
    copy = Path(tempfile.mkdtemp(prefix="predictor_logs_"))
    shutil.copytree(args.logs, copy, dirs_exist_ok=True)
    store = TuningLogs(copy).store(target)
    samples = samples_from(store.records(), target, LocalRunner().thread_pool)
    exact = get_searcher("exact")
    rows = []
    for name in args.models:
        model = load_model(f"zoo:{name}")
        graph = build_graph(model)
        held_out = {vertex.workload.key() for vertex in graph.nodes}
        training = [s for s in samples if s.workload.key() not in held_out]
        testing = [s for s in samples if s.workload.key() in held_out]
        predictor = LatencyPredictor(target).fit(training)
        error = evaluate(predictor, testing, k=args.k)
        # every strategy is in the log, so this measures nothing
        space = measure_space(model, graph, MeasurementSession(target, LocalRunner(), store, show_progress=False))
        workloads = {node.name: graph.node(node.name).workload for node in space.nodes if node.is_tunable}
        ranked = {node.name: predictor.rank(workloads[node.name], [o.name for o in node.options])
                  for node in space.nodes if node.is_tunable}
        full = exact.search(space).cost_ms
        top = space.restricted(lambda node, option: option.name in ranked[node.name][:args.k])
        predicted = exact.search(top).cost_ms
        rng = random.Random(0)
        drawn = []
        for _ in range(args.draws):
            chosen = {}
            for node in space.nodes:
                if node.is_tunable:
                    names = sorted({o.name for o in node.options})
                    chosen[node.name] = set(rng.sample(names, min(args.k, len(names))))
            drawn.append(exact.search(space.restricted(lambda node, option: option.name in chosen[node.name])).cost_ms)
        drawn.sort()
        rows.append({"model": name, "held_out_workloads": error.workloads, "kernels": error.kernels,
                     "training_kernels": len(training), **{f"error_{k}": v for k, v in error.to_dict().items()
                                                          if k not in ("workloads", "kernels", "k")},
                     "plan_all_ms": full, "plan_predictor_ms": predicted,
                     "plan_random_median_ms": drawn[len(drawn) // 2], "plan_random_best_ms": drawn[0],
                     "plan_random_worst_ms": drawn[-1]})
        print(rows[-1], flush=True)

    info = machine()
    lines = [f"# Latency predictor: held-out error and equal-budget search ({info['date']}, {info['cpu']}, "
             f"commit {info['commit']})", "",
             f"Trained on the tuning log of {target.key} ({_shown(Path(args.logs))}, "
             f"{len(samples)} kernels) minus the model's own workloads; evaluated on those. Relative error is "
             "|predicted - measured| / measured per kernel (median); top-1: the predicted fastest strategy is "
             f"the measured fastest; top-{args.k}: the measured fastest is among the predicted {args.k}; "
             "regret: mean extra latency of the predicted-fastest strategy over the fastest.", "",
             f"Plans: the exact searcher's plan cost (measured kernel and conversion latencies, ms) over every "
             f"strategy, over the predictor's top {args.k} per node, and over {args.k} random strategies per "
             f"node (median, best and worst of {args.draws} draws): the same number of kernels measured.", "",
             f"| model | held-out workloads | median rel. error | top-1 | top-{args.k} | regret | plan, all | "
             f"plan, predictor top-{args.k} | plan, random {args.k} (median / best / worst) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['held_out_workloads']} | {row['error_median_relative_error']:.0%} | "
                     f"{row['error_top1']:.0%} | {row['error_topk']:.0%} | {row['error_regret']:.0%} | "
                     f"{row['plan_all_ms']:.2f} | {row['plan_predictor_ms']:.2f} | "
                     f"{row['plan_random_median_ms']:.2f} / "
                     f"{row['plan_random_best_ms']:.2f} / {row['plan_random_worst_ms']:.2f} |")
    write_results("predictor", "\n".join(lines) + "\n", {"machine": info, "k": args.k, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
