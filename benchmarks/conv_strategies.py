"""Every applicable strategy (default schedule) on every distinct conv workload of ResNet-18 and
MobileNetV2, side by side with onnxruntime running the same single convolution, in one process.

Contenders are measured interleaved, round after round (A B C ... A B C ...), and each reports the
median over rounds of its per-round median; ratios are to onnxruntime in the same run.

    python benchmarks/conv_strategies.py [--models resnet18 mobilenet_v2] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from common import interleaved_medians, machine, set_threads, time_callable, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    from tvm_dse import build_graph, load_model, parse_target
    from tvm_dse.strategies import applicable_strategies, build_kernel
    from tvm_dse.strategies.kernel import model_shapes
    from tvm_dse.testing import onnxruntime_session, single_conv_model

    target = parse_target("host")
    rows = []
    for model_name in args.models:
        graph = build_graph(load_model(f"zoo:{model_name}"))
        counts = {}
        for node in graph.nodes:
            if node.workload.op == "conv2d":
                counts[node.workload] = counts.get(node.workload, 0) + 1
        for workload, count in counts.items():
            rng = np.random.default_rng(0)
            data_shape, weight_shape, _ = model_shapes(workload)
            data, weight = rng.standard_normal(data_shape), rng.standard_normal(weight_shape)
            session = onnxruntime_session(single_conv_model(workload), threads=args.threads)
            feed = {"x": data.astype(np.float32)}
            contenders = {"onnxruntime": lambda s=session, f=feed: s.run(None, f)}
            for strategy in applicable_strategies(workload, target):
                if strategy.precision != "fp32":
                    continue  # the fp32 strategies against onnxruntime's fp32 conv (int8: quantization.py)
                built = build_kernel(strategy, workload, target)
                arguments = built.arguments(data, weight)
                contenders[strategy.name] = lambda b=built, a=arguments: b.kernel["main"](*a)
            latency = interleaved_medians(
                contenders, args.rounds,
                lambda name, run: statistics.median(time_callable(run, number=5) for _ in range(3)) * 1e3)
            best = min((name for name in latency if name != "onnxruntime"), key=latency.get)
            rows.append({"model": model_name, "workload": workload.describe(), "key": workload.key(), "count": count,
                         "gflop": workload.flops / 1e9, "latency_ms": latency, "best": best,
                         "best_over_onnxruntime": latency[best] / latency["onnxruntime"]})
            print(f"{model_name:13s} {workload.describe():30s} ort {latency['onnxruntime']:7.3f} ms  best {best} "
                  f"{latency[best]:7.3f} ms  ratio {rows[-1]['best_over_onnxruntime']:.2f}", flush=True)

    strategies = sorted({name for row in rows for name in row["latency_ms"] if name != "onnxruntime"})
    header = "| model | workload | n | GFLOP | onnxruntime ms | " + " | ".join(strategies) + " | best | best/ORT |"
    lines = [f"# Conv strategies vs onnxruntime, per workload", "",
             f"Machine: {machine()}; {args.threads} threads; default schedules; ms (GFLOP/s); median of "
             f"{args.rounds} interleaved rounds.", "", header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        cells = []
        for name in strategies:
            ms = row["latency_ms"].get(name)
            cells.append("-" if ms is None else f"{ms:.3f} ({row['gflop'] / ms * 1e3:.0f})")
        lines.append(f"| {row['model']} | {row['workload']} | {row['count']} | {row['gflop']:.3f} | "
                     f"{row['latency_ms']['onnxruntime']:.3f} | " + " | ".join(cells) +
                     f" | {row['best']} | {row['best_over_onnxruntime']:.2f} |")
    resnet = [row for row in rows if row["model"] == "resnet18"]
    if resnet:
        wins = sum(row["best_over_onnxruntime"] <= 1.0 for row in resnet)
        lines += ["", f"ResNet-18: best strategy no slower than onnxruntime on {wins} of {len(resnet)} distinct conv "
                  "workloads."]
        for row in resnet:
            if row["workload"].startswith("3x3 s1"):
                lines.append(f"- {row['workload']}: best/onnxruntime = {row['best_over_onnxruntime']:.2f} ({row['best']})")
    markdown = "\n".join(lines) + "\n"
    write_results("conv_strategies", markdown, {"machine": machine(), "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
