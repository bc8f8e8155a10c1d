"""Does the report tell the truth? For each model, ``tvm_dse.optimize`` with its defaults on the host, then
an independent timing of what it wrote: the exported library and onnxruntime, each in a worker process of
its own, rounds alternating between them, each round a plain wall-clock loop after a warm-up (not
tvm_dse's timing code). Compared: the report's prediction, its measured latency and its onnxruntime figure
against the independent ones, each side's fastest round (see tvm_dse.timing.quiet_round).

    python benchmarks/report_check.py [--models resnet18,mobilenet_v2,squeezenet1_1,resnet50] [--logs DIR]
                                      [--rounds 5]

Writes report_check.md and report_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import RuntimeWorker, machine, set_threads, write_results
from runtime_worker import ROUND_S, WARMUP_S

MODELS = ["resnet18", "mobilenet_v2", "squeezenet1_1", "resnet50"]


def _independent(library: Path, onnx_path: Path, inputs: Path, threads: int, rounds: int) -> dict[str, list[float]]:
    """Each worker's round medians, rounds alternating tvm, onnxruntime."""
    workers = {kind: RuntimeWorker(sys.executable, kind, path, inputs, threads, inputs.parent / f"{kind}.npy",
                                   dict(os.environ))
               for kind, path in (("tvm", library), ("onnxruntime", onnx_path))}
    samples: dict[str, list[float]] = {kind: [] for kind in workers}
    try:
        for kind, worker in workers.items():
            worker.wait_ready(kind)
        for _ in range(rounds):
            for kind, worker in workers.items():
                time.sleep(0.5)  # the other runtime's threads stop spinning
                samples[kind].append(worker.ask("round"))
    finally:
        for worker in workers.values():
            worker.close()
    return samples


def _markdown(rows: list[dict], facts: dict, threads: int, rounds: int) -> str:
    """The table of ``rows`` (one per model), with the machine and settings they were measured with."""
    lines = [f"# Does the report tell the truth? ({facts['cpu']}, {facts['nproc']} cores, {threads} threads, "
             f"{facts['date']}, commit {facts['commit']})", "",
             "`optimize` defaults on the host; independent: the exported library and onnxruntime each in a "
             f"worker process of its own, {rounds} rounds alternating, each a plain {ROUND_S:.0f} s loop after "
             f"a {WARMUP_S:.0f} s warm-up; each side's fastest round, as the report gives it (a virtual machine "
             "may run 1.5-1.8x slower for minutes; the median round is shown beside it). Errors relative to the "
             "independent figure, except the prediction's against the report's own measurement.", "",
             "| model | predicted ms | report ms (spread; median round) | prediction vs report | independent ms "
             "(median round) | prediction error | report error | report onnxruntime ms | independent onnxruntime ms "
             "(median round) | onnxruntime error | plans timed (chosen) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        chosen = next(r["plan"] for r in row["verified_plans"] if r["chosen"])
        lines.append(
            f"| {row['model']} | {row['predicted_ms']:.3f} | {row['report_ms']:.3f} ({100 * row['report_spread']:.1f}%"
            f"{', disturbed' if row['report_disturbed'] else ''}; {statistics.median_low(row['report_rounds_ms']):.3f})"
            f" | {100 * row['prediction_vs_report']:+.1f}% | "
            f"{row['independent_ms']:.3f} ({statistics.median_low(row['independent_rounds_ms']):.3f}) | "
            f"{100 * row['prediction_error']:+.1f}% | {100 * row['report_error']:+.1f}% | "
            f"{row['report_onnxruntime_ms']:.3f} | {row['independent_onnxruntime_ms']:.3f} "
            f"({statistics.median_low(row['independent_onnxruntime_rounds_ms']):.3f}) | "
            f"{100 * row['onnxruntime_error']:+.1f}% | {len(row['verified_plans'])} ({chosen}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--logs", help="tuning-log directory (default: tvm_dse's own)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from tvm_dse.target import physical_cores

    threads = physical_cores()
    set_threads(threads)
    import numpy as np
    import onnx

    import tvm_dse

    rows = []
    work = Path(tempfile.mkdtemp(prefix="report_check_"))
    for name in args.models.split(","):
        out = work / name
        began = time.perf_counter()
        result = tvm_dse.optimize(f"zoo:{name}", "host", out_dir=out, logs=args.logs, show_progress=False)
        seconds = time.perf_counter() - began
        report = result.report
        inputs = out / "input.npz"
        np.savez(inputs, **result.model.random_feed(seed=0))
        onnx_path = out / "model.onnx"
        onnx.save(result.model.onnx_model, onnx_path)
        rounds = _independent(out / f"{result.model.name}.{result.target.arch}.so", onnx_path, inputs, threads,
                              args.rounds)
        independent = {kind: min(values) for kind, values in rounds.items()}
        measured, reference = report["latency"], report["reference"]["latency"]
        rows.append({
            "model": name, "optimize_s": seconds, "predicted_ms": report["predicted_ms"],
            "report_ms": measured["median_ms"], "report_spread": measured["spread"],
            "report_disturbed": measured["disturbed"], "report_rounds_ms": report["latency_rounds_ms"],
            "independent_ms": independent["tvm"], "independent_rounds_ms": rounds["tvm"],
            "report_onnxruntime_ms": reference["median_ms"], "independent_onnxruntime_ms": independent["onnxruntime"],
            "independent_onnxruntime_rounds_ms": rounds["onnxruntime"],
            "prediction_error": (report["predicted_ms"] - independent["tvm"]) / independent["tvm"],
            "prediction_vs_report": (report["predicted_ms"] - measured["median_ms"]) / measured["median_ms"],
            "report_error": (measured["median_ms"] - independent["tvm"]) / independent["tvm"],
            "onnxruntime_error": (reference["median_ms"] - independent["onnxruntime"]) / independent["onnxruntime"],
            "verified_plans": report["verified_plans"],
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "verified_plans"}), flush=True)

    facts = machine()
    write_results("report_check", _markdown(rows, facts, threads, args.rounds),
                  {"machine": facts, "threads": threads, "rows": rows})


if __name__ == "__main__":
    main()
