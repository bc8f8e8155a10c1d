"""Whole-model latency of lowered plans side by side, in one process: TVM's default build, every uniform
plan (all nodes one strategy family, where it applies), the plan each searcher finds on the measured
design space (greedy = fastest strategy per node, layout conversions ignored) and onnxruntime. Ratios are
to onnxruntime in the same run; each searcher's row also gives its predicted latency, search time and
evaluations, and the latency/memory Pareto front of the space follows.

    python benchmarks/plans.py [--models resnet18 mobilenet_v2] [--rounds 3] [--threads 2] [--logs DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from common import DEFAULT_BUILD, interleaved_medians, machine, set_threads, time_model_round, write_results

FAMILIES = ["direct_nchw", "direct_nhwc", "spatial_pack_nchwc", "im2col_nchw", "winograd_f4_nchwc"]
SEARCHERS = ["qlearning", "exact", "greedy", "random"]
MB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logs", help="tuning-log directory to resume the per-node measurements from "
                                       "(default: a new, empty one)")
    args = parser.parse_args()
    set_threads(args.threads)

    from tvm_dse import build_baseline, build_graph, load_model, parse_target
    from tvm_dse.pricing import measure_space, plan_from_assignment
    from tvm_dse.lower import build_plan
    from tvm_dse.measure import LocalRunner, MeasurementSession
    from tvm_dse.plan import Plan
    from tvm_dse.search import get_searcher
    from tvm_dse.search.exact import pareto_front
    from tvm_dse.testing import onnxruntime_session
    from tvm_dse.tuning import TuningLogs

    target = parse_target("host")
    store = TuningLogs(args.logs or tempfile.mkdtemp()).store(target)
    rows, searches, fronts = [], [], []
    for model_name in args.models:
        model = load_model(f"zoo:{model_name}")
        graph = build_graph(model)
        feed = model.random_feed()
        session = onnxruntime_session(model.onnx_model, threads=args.threads)
        contenders = {"onnxruntime": lambda s=session: s.run(None, feed)}
        default_build = build_baseline(model, target)
        contenders[DEFAULT_BUILD] = lambda b=default_build: b.run(feed)
        for family in FAMILIES:
            built = build_plan(model, Plan.uniform(model, graph, target, family), target, graph)
            contenders[f"uniform {family}"] = lambda b=built: b.run(feed)

        space = measure_space(model, graph, MeasurementSession(target, LocalRunner(), store))
        built_by_assignment = {}
        for name in SEARCHERS:
            result = get_searcher(name).search(space, seed=0)
            key = tuple(result.assignment)
            if key not in built_by_assignment:  # searchers agreeing on a plan share one build
                plan = plan_from_assignment(space, result.assignment, model, target, searcher=name)
                built_by_assignment[key] = build_plan(model, plan, target, graph)
            contenders[f"{name} plan"] = lambda b=built_by_assignment[key]: b.run(feed)
            searches.append({"model": model_name, "searcher": name, "predicted_ms": result.cost_ms,
                             "peak_memory_mb": result.peak_memory_bytes / MB, "search_s": result.seconds,
                             "evaluations": result.evaluations, "assignment": result.assignment})
        fronts.append({"model": model_name, "points": [{"latency_ms": p.cost_ms, "peak_memory_mb": p.peak_memory_bytes / MB}
                                                       for p in pareto_front(space)]})

        latency = interleaved_medians(contenders, args.rounds, time_model_round)
        for name, ms in latency.items():
            rows.append({"model": model_name, "contender": name, "latency_ms": ms,
                         "over_onnxruntime": ms / latency["onnxruntime"], "gflops": graph.flops / ms / 1e6})
            print(f"{model_name:13s} {name:30s} {ms:9.3f} ms  {ms / latency['onnxruntime']:7.2f}x onnxruntime",
                  flush=True)
        for search in searches:
            if search["model"] == model_name:
                search["measured_ms"] = latency[f"{search['searcher']} plan"]
                search["over_exact"] = search["measured_ms"] / latency["exact plan"]
                search["over_onnxruntime"] = search["measured_ms"] / latency["onnxruntime"]

    lines = ["# Whole-model latency of plans vs onnxruntime", "",
             f"Machine: {machine()}; {args.threads} threads; median of {args.rounds} interleaved rounds.", "",
             "| model | contender | ms | x onnxruntime | GFLOP/s |", "|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['contender']} | {row['latency_ms']:.3f} | {row['over_onnxruntime']:.2f} | "
              f"{row['gflops']:.1f} |" for row in rows]
    lines += ["", "## Searchers (default budgets, seed 0)", "",
              "| model | searcher | predicted ms | measured ms | x exact plan | x onnxruntime | peak memory MB | "
              "search s | evaluations |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s['model']} | {s['searcher']} | {s['predicted_ms']:.3f} | {s['measured_ms']:.3f} | "
              f"{s['over_exact']:.3f} | {s['over_onnxruntime']:.2f} | {s['peak_memory_mb']:.1f} | {s['search_s']:.2f} | "
              f"{s['evaluations']} |" for s in searches]
    lines += ["", "## Latency / peak-memory Pareto front (predicted)", "", "| model | latency ms | peak memory MB |",
              "|---|---|---|"]
    lines += [f"| {front['model']} | {p['latency_ms']:.3f} | {p['peak_memory_mb']:.1f} |"
              for front in fronts for p in front["points"]]
    markdown = "\n".join(lines) + "\n"
    write_results("plans", markdown, {"machine": machine(), "threads": args.threads, "rows": rows,
                                      "searches": searches, "pareto_fronts": fronts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
