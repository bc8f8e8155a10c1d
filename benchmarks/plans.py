"""Whole-model latency of lowered plans side by side, in one process: TVM's default build, every uniform
plan (all nodes one strategy family, where it applies), the greedy plan (fastest measured strategy per
node, layout conversions ignored) and onnxruntime. Ratios are to onnxruntime in the same run.

    python benchmarks/plans.py [--models resnet18 mobilenet_v2] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import interleaved_medians, machine, set_threads, time_callable, write_results

FAMILIES = ["direct_nchw", "direct_nhwc", "spatial_pack_nchwc", "im2col_nchw", "winograd_f4_nchwc"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", help="measurement store for the greedy plan's per-node measurements")
    args = parser.parse_args()
    set_threads(args.threads)

    from tvm_dse import build_baseline, build_graph, load_model, parse_target
    from tvm_dse.lower import build_plan
    from tvm_dse.measure import Candidate, LocalRunner, MeasurementStore, measure_candidates
    from tvm_dse.plan import Plan
    from tvm_dse.strategies import applicable_strategies
    from tvm_dse.testing import onnxruntime_session

    target = parse_target("host")
    store = MeasurementStore(args.store or Path(tempfile.mkdtemp()) / "measurements.jsonl")
    rows = []
    for model_name in args.models:
        model = load_model(f"zoo:{model_name}")
        graph = build_graph(model)
        feed = model.random_feed()
        session = onnxruntime_session(model.onnx_model, threads=args.threads)
        contenders = {"onnxruntime": lambda s=session: s.run(None, feed)}
        default_build = build_baseline(model, target)
        contenders["tvm default build"] = lambda b=default_build: b.run(feed)
        for family in FAMILIES:
            built = build_plan(model, Plan.uniform(model, graph, target, family), target, graph)
            contenders[f"uniform {family}"] = lambda b=built: b.run(feed)
        candidates = [Candidate(node.workload, s.name) for node in graph.nodes
                      for s in applicable_strategies(node.workload, target)]
        records = measure_candidates(candidates, target, LocalRunner(), store)
        fastest = {}
        for candidate, record in zip(candidates, records):
            if record.ok and record.median_ms < fastest.get(candidate.workload, (float("inf"), ""))[0]:
                fastest[candidate.workload] = (record.median_ms, candidate.strategy)
        greedy = Plan.create(model, target, {node.name: fastest[node.workload][1] for node in graph.nodes},
                             searcher="greedy")
        built = build_plan(model, greedy, target, graph)
        contenders["greedy"] = lambda b=built: b.run(feed)
        # TVM's default build takes seconds per run: one run per round for it, ten for the others
        latency = interleaved_medians(
            contenders, args.rounds,
            lambda name, run: time_callable(run, number=1 if name == "tvm default build" else 10, warmup=1) * 1e3)
        for name, ms in latency.items():
            rows.append({"model": model_name, "contender": name, "latency_ms": ms,
                         "over_onnxruntime": ms / latency["onnxruntime"],
                         "gflops": graph.flops / ms / 1e6})
            print(f"{model_name:13s} {name:30s} {ms:9.3f} ms  {ms / latency['onnxruntime']:7.2f}x onnxruntime",
                  flush=True)
        rows.append({"model": model_name, "contender": "greedy plan", "plan": greedy.to_dict()["nodes"]})

    lines = ["# Whole-model latency of plans vs onnxruntime", "",
             f"Machine: {machine()}; {args.threads} threads; median of {args.rounds} interleaved rounds.", "",
             "| model | contender | ms | x onnxruntime | GFLOP/s |", "|---|---|---|---|---|"]
    for row in rows:
        if "latency_ms" in row:
            lines.append(f"| {row['model']} | {row['contender']} | {row['latency_ms']:.3f} | "
                         f"{row['over_onnxruntime']:.2f} | {row['gflops']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    write_results("plans", markdown, {"machine": machine(), "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
