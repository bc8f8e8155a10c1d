"""The tvm_dse plan against what a user would otherwise deploy, whole models side by side in one process:
onnxruntime, PyTorch eager (when torch is installed), TVM's default build and TVM's own MetaSchedule
given the same wall time as tvm_dse's optimize.

For each model, ``tvm_dse.optimize`` runs with its default searcher and budget on tuning logs
that start empty (unless ``--logs``), so its time is a cold run's; MetaSchedule then tunes for as long.
The contenders are timed interleaved, round after round, and each reports the median over rounds; ratios
are to onnxruntime in the same run. Writes ``results.md``, ``results.json`` and ``results.png`` here.

    python benchmarks/compare.py [--models resnet18 mobilenet_v2 resnet50 vgg16 squeezenet1_1]
                                 [--rounds 5] [--threads 2] [--logs DIR] [--metaschedule-seconds S]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import (DEFAULT_BUILD, HERE, interleaved_medians, machine, set_threads, time_callable, time_model_round,
                    write_results)

MODELS = ["resnet18", "mobilenet_v2", "resnet50", "vgg16", "squeezenet1_1"]
# The bars the benchmark is held to: tvm_dse / onnxruntime at most this, per model.
BARS = {"resnet18": 0.8, "vgg16": 0.8, "resnet50": 1.0, "mobilenet_v2": 1.1, "squeezenet1_1": 1.1}
MIN_SPEEDUP_OVER_DEFAULT = 20.0


def sgemm_gflops(threads: int, size: int = 2048) -> float:
    """The machine's practical fp32 peak: numpy's BLAS sgemm (``size``^3) on ``threads`` threads, best of 5."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = a.copy()
    a @ b
    best = min(time_callable(lambda: a @ b, number=1, warmup=0) for _ in range(5))
    return 2 * size**3 / best / 1e9


def torch_contender(onnx_model, threads: int):
    """PyTorch eager on the same graph and weights, or the reason it cannot run."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (pip install torch)"
    torch.set_num_threads(threads)
    from torch_eager import TorchEager

    return TorchEager(onnx_model).eval(), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logs", help="tuning-log directory for optimize (default: a new, empty one)")
    parser.add_argument("--metaschedule-seconds", type=float,
                        help="MetaSchedule's tuning time per model (default: as long as tvm_dse took)")
    args = parser.parse_args()
    set_threads(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)

    import tvm_dse
    from metaschedule_baseline import tune_for
    from tvm_dse import build_baseline, build_graph, load_model, parse_target
    from tvm_dse.testing import onnxruntime_session, relative_error

    target = parse_target("host")
    scratch = Path(tempfile.mkdtemp(prefix="tvm_dse_compare_"))
    logs = Path(args.logs) if args.logs else scratch / "tuning_logs"
    peak = sgemm_gflops(args.threads)
    print(f"sgemm peak with {args.threads} threads: {peak:.0f} GFLOP/s", flush=True)
    rows, tuning, notes = [], [], []
    for model_name in args.models:
        model = load_model(f"zoo:{model_name}")
        graph = build_graph(model)
        feed = model.random_feed()
        session = onnxruntime_session(model.onnx_model, threads=args.threads)
        reference = session.run(None, feed)

        started = time.perf_counter()
        optimized = tvm_dse.optimize(model, target, logs=logs, shipped_logs=False, out_dir=scratch / model_name,
                                     compare_searchers=())
        dse_seconds = time.perf_counter() - started
        ms_seconds = args.metaschedule_seconds or dse_seconds
        tuned = tune_for(model, target, ms_seconds, scratch / f"metaschedule_{model_name}", threads=args.threads)
        tuning.append({"model": model_name, "tvm_dse_s": dse_seconds, "tvm_dse_timings": optimized.report["timings"],
                       "tvm_dse_predicted_ms": optimized.report["predicted_ms"],
                       "tvm_dse_alone_ms": optimized.report["latency"]["median_ms"],
                       "metaschedule_s": tuned.seconds, "metaschedule_trials": tuned.trials,
                       "metaschedule_tasks": tuned.tasks})

        contenders = {"onnxruntime": lambda: session.run(None, feed),
                      "tvm_dse plan": lambda: optimized.run(feed)}
        eager, why_not = torch_contender(model.onnx_model, args.threads)
        if eager is not None:
            contenders["pytorch eager"] = lambda: eager.run(feed)
        elif why_not not in notes:
            notes.append(why_not)
        contenders["tvm metaschedule"] = lambda: tuned.run(feed)
        default_build = build_baseline(model, target)
        contenders[DEFAULT_BUILD] = lambda: default_build.run(feed)
        errors = {name: max(relative_error(o, r) for o, r in zip(run(), reference))
                  for name, run in contenders.items()}

        latency = interleaved_medians(contenders, args.rounds, time_model_round)
        for name, ms in latency.items():
            rows.append({"model": model_name, "contender": name, "latency_ms": ms,
                         "over_onnxruntime": ms / latency["onnxruntime"], "gflops": graph.flops / ms / 1e6,
                         "fraction_of_peak": graph.flops / ms / 1e6 / peak, "max_relative_error": errors[name]})
            print(f"{model_name:13s} {name:20s} {ms:10.3f} ms  {ms / latency['onnxruntime']:7.2f}x onnxruntime",
                  flush=True)

        # written after every model, so that a long run interrupted later keeps what it measured
        markdown = render(rows, tuning, notes, peak, args)
        data = {"machine": machine(), "threads": args.threads, "rounds": args.rounds, "sgemm_gflops": peak,
                "rows": rows, "tuning": tuning, "notes": notes, "bars": bar_checks(rows)}
        write_results("results", markdown, data)
        plot(rows, HERE / "results.png")
    return 0


def bar_checks(rows: list[dict]) -> list[dict]:
    """Each model's bars: tvm_dse / onnxruntime, speedup over the default build, and MetaSchedule beaten."""
    checks = []
    for model_name in dict.fromkeys(row["model"] for row in rows):
        ms = {row["contender"]: row["latency_ms"] for row in rows if row["model"] == model_name}
        ratio = ms["tvm_dse plan"] / ms["onnxruntime"]
        speedup = ms[DEFAULT_BUILD] / ms["tvm_dse plan"]
        checks.append({"model": model_name, "over_onnxruntime": ratio, "bar": BARS.get(model_name),
                       "meets_onnxruntime_bar": BARS.get(model_name) is None or ratio <= BARS[model_name],
                       "speedup_over_default_build": speedup,
                       "meets_default_build_bar": speedup >= MIN_SPEEDUP_OVER_DEFAULT,
                       "faster_than_metaschedule": ms["tvm_dse plan"] < ms["tvm metaschedule"]})
    return checks


def render(rows: list[dict], tuning: list[dict], notes: list[str], peak: float, args) -> str:
    lines = ["# tvm_dse against onnxruntime, PyTorch and TVM, whole models", "",
             f"Machine: {machine()}; batch 1, fp32, {args.threads} threads everywhere; median of {args.rounds} "
             f"interleaved rounds; peak = numpy sgemm 2048^3 on {args.threads} threads = {peak:.0f} GFLOP/s. "
             "GFLOP/s counts the direct-convolution FLOPs, so Winograd layers can exceed the peak.", "",
             "| model | contender | ms | x onnxruntime | GFLOP/s | fraction of peak | max rel. error |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['contender']} | {row['latency_ms']:.3f} | {row['over_onnxruntime']:.2f} | "
                     f"{row['gflops']:.0f} | {row['fraction_of_peak']:.2f} | {row['max_relative_error']:.1e} |")
    lines += ["", "Tuning time (wall clock; tvm_dse from empty tuning logs: measuring, search, build and "
              "validation; MetaSchedule given the same time, at least one round), and the plan's latency as the "
              "search predicted it and as optimize measured it, in the process before any other runtime ran:", "",
              "| model | tvm_dse s | of which measuring s | plan predicted ms | plan measured by optimize ms | "
              "MetaSchedule s | MetaSchedule trials (tasks) |",
              "|---|---|---|---|---|---|---|"]
    for entry in tuning:
        lines.append(f"| {entry['model']} | {entry['tvm_dse_s']:.0f} | {entry['tvm_dse_timings']['measure_s']:.0f} | "
                     f"{entry['tvm_dse_predicted_ms']:.2f} | {entry['tvm_dse_alone_ms']:.2f} | {entry['metaschedule_s']:.0f} | {entry['metaschedule_trials']} ({entry['metaschedule_tasks']}) |")
    lines += ["", "Bars: tvm_dse / onnxruntime at most " +
              ", ".join(f"{bar} ({name})" for name, bar in BARS.items()) +
              f"; at least {MIN_SPEEDUP_OVER_DEFAULT:.0f}x faster than TVM's default build; faster than MetaSchedule.", "",
              "| model | tvm_dse / onnxruntime | bar | met | x faster than default build | faster than MetaSchedule |",
              "|---|---|---|---|---|---|"]
    for check in bar_checks(rows):
        lines.append(f"| {check['model']} | {check['over_onnxruntime']:.2f} | {check['bar']} | "
                     f"{'yes' if check['meets_onnxruntime_bar'] else 'no'} | {check['speedup_over_default_build']:.0f} | "
                     f"{'yes' if check['faster_than_metaschedule'] else 'no'} |")
    lines += [""] + [f"Note: {note}." for note in notes]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Bar chart of each contender's latency over onnxruntime's, per model (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in rows))
    contenders = list(dict.fromkeys(row["contender"] for row in rows))
    ratio = {(row["model"], row["contender"]): row["over_onnxruntime"] for row in rows}
    width = 0.8 / len(contenders)
    figure, axes = plt.subplots(figsize=(11, 5))
    for index, contender in enumerate(contenders):
        xs = [m + (index - (len(contenders) - 1) / 2) * width for m in range(len(models))]
        axes.bar(xs, [ratio.get((model, contender), float("nan")) for model in models], width, label=contender)
    axes.set_yscale("log")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(models)), models)
    axes.set_ylabel("latency / onnxruntime (lower is faster)")
    axes.set_title("Whole-model latency relative to onnxruntime, batch 1, fp32")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
