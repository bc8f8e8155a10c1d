"""int8 plans against fp32 plans and onnxruntime, side by side in one run.

For ResNet-18 and MobileNetV2 from the zoo (batch 1, 2 threads everywhere): the tvm_dse fp32 plan, the
tvm_dse plan with int8 allowed (calibrated on random inputs: the zoo's weights are random too, so only speed
is meaningful here), onnxruntime fp32, and onnxruntime running its own statically quantized QDQ model
(``quantize_static``, per-channel s8 weights, u8 activations, calibrated on the same inputs), interleaved.
For the digits task (real accuracy): the fp32 plan, the plan with every int8-capable node int8, and the
accuracy-bounded plan (0.5 point of top-1), with their top-1 on the test split and their latency (the
module timed by TVM's time_evaluator).

    python benchmarks/quantization.py [--models resnet18 mobilenet_v2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import interleaved_medians, machine, set_threads, time_model_round, write_results

CALIBRATION_FEEDS = 8


def ort_qdq_session(onnx_model, feeds, threads: int, directory: Path):
    """onnxruntime's own static int8 quantization of the model (QDQ), calibrated on ``feeds``."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    source, quantized = directory / "fp32.onnx", directory / "qdq.onnx"
    onnx.save(onnx_model, source)
    quantize_static(str(source), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    import tvm_dse
    from tvm_dse import load_model
    from tvm_dse.accuracy import AccuracyBound
    from tvm_dse.testing import digits_task, onnxruntime_session, relative_error

    scratch = Path(tempfile.mkdtemp(prefix="tvm_dse_quant_"))
    logs = scratch / "tuning_logs"  # the shipped fp32 records are added; int8 kernels are measured here
    rows, digits_rows = [], []
    for name in args.models:
        model = load_model(f"zoo:{name}")
        feeds = [model.random_feed(seed) for seed in range(CALIBRATION_FEEDS)]
        feed = model.random_feed(seed=100)
        fp32 = tvm_dse.optimize(model, logs=logs, compare_searchers=(), show_progress=False)
        int8 = tvm_dse.optimize(model, logs=logs, compare_searchers=(), show_progress=False, calibration_data=feeds)
        session = onnxruntime_session(model.onnx_model, threads=args.threads)
        qdq = ort_qdq_session(model.onnx_model, feeds, args.threads, scratch)
        contenders = {"onnxruntime fp32": lambda: session.run(None, feed),
                      "onnxruntime int8 (QDQ)": lambda: qdq.run(None, feed),
                      "tvm_dse fp32 plan": lambda: fp32.run(feed),
                      "tvm_dse int8 plan": lambda: int8.run(feed)}
        reference = session.run(None, feed)
        errors = {key: max(relative_error(o, r) for o, r in zip(run(), reference)) for key, run in contenders.items()}
        latency = interleaved_medians(contenders, args.rounds, time_model_round)
        quantized = int8.plan.reduced_precision_nodes()
        for contender, ms in latency.items():
            rows.append({"model": name, "contender": contender, "latency_ms": ms,
                         "over_fp32_plan": ms / latency["tvm_dse fp32 plan"],
                         "over_onnxruntime_qdq": ms / latency["onnxruntime int8 (QDQ)"],
                         "relative_error_vs_fp32": errors[contender],
                         "int8_nodes": f"{len(quantized)}/{len(int8.plan.nodes)}" if contender == "tvm_dse int8 plan" else ""})
            print(f"{name:13s} {contender:24s} {ms:8.3f} ms", flush=True)

    task = digits_task()
    digits = load_model(task.model)
    fp32_plan = tvm_dse.optimize(digits, logs=logs, compare_searchers=(), show_progress=False)
    from tvm_dse.graph import build_graph
    from tvm_dse.lower import build_plan
    from tvm_dse.accuracy import calibrate
    from tvm_dse.accuracy.sensitivity import int8_plan
    from tvm_dse.target import parse_target
    from tvm_dse.timing import SteadyState

    graph = build_graph(digits)
    every = int8_plan(digits, graph, parse_target("host"), calibrate(digits, task.calibration))
    bounded = tvm_dse.optimize(digits, logs=logs, compare_searchers=(), show_progress=False,
                               calibration_data=task.calibration,
                               accuracy=AccuracyBound(task.images, task.labels, max_loss=0.005))
    plans = {"fp32 plan": fp32_plan.built, "every int8-capable node int8": build_plan(digits, every, "host", graph),
             "accuracy-bounded plan (0.5 pt)": bounded.built}
    image = {"image": task.images[:1]}
    # The digits model runs in microseconds: time the module itself (TVM's time_evaluator, in steady state),
    # not the Python call around it (making the input tensor and reading the outputs cost 10-20x the model).
    latency = interleaved_medians({k: (lambda b=b: b.time(image, SteadyState(repeats=5)).median_ms)
                                   for k, b in plans.items()}, args.rounds, lambda name, timed: timed())
    chosen = {"fp32 plan": fp32_plan.plan, "every int8-capable node int8": every,
              "accuracy-bounded plan (0.5 pt)": bounded.plan}
    for key, built in plans.items():
        digits_rows.append({"plan": key, "top1": task.top1(lambda f: built.run(f)[0]), "latency_ms": latency[key],
                            "over_fp32_plan": latency[key] / latency["fp32 plan"],
                            "int8_nodes": chosen[key].reduced_precision_nodes()})

    lines = ["# int8 plans: tvm_dse against its fp32 plans and onnxruntime", "",
             f"Machine: {machine()['cpu']}, {args.threads} threads, median of {args.rounds} interleaved rounds.", "",
             "| model | contender | ms | / tvm_dse fp32 plan | / onnxruntime QDQ | rel. error vs fp32 | int8 nodes |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['contender']} | {row['latency_ms']:.3f} | {row['over_fp32_plan']:.2f} | "
                     f"{row['over_onnxruntime_qdq']:.2f} | {row['relative_error_vs_fp32']:.1e} | {row['int8_nodes']} |")
    lines += ["", "## digits (real accuracy, test split of 360 images)", "",
              "| plan | top-1 | ms | / fp32 plan | int8 nodes |", "|---|---|---|---|---|"]
    for row in digits_rows:
        lines.append(f"| {row['plan']} | {row['top1']:.4f} | {row['latency_ms']:.4f} | {row['over_fp32_plan']:.2f} | "
                     f"{', '.join(row['int8_nodes']) or '-'} |")
    write_results("quantization", "\n".join(lines) + "\n",
                  {"machine": machine(), "threads": args.threads, "rounds": args.rounds, "rows": rows,
                   "digits": digits_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
