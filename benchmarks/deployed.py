"""Deployed side by side: tvm_dse's plan against the runtimes a user would deploy instead, each warm in a
process of its own, on a quiet machine and beside one co-running busy process, with each process's peak
memory.

For each model, ``tvm_dse.optimize`` (defaults, the host; ``--logs`` to resume) writes the plan's library;
the ONNX model is converted for the peers installed by ``scripts/setup_peers.sh`` (OpenVINO reads it as it
is; ncnn through pnnx, MNN through its converter, LiteRT through onnx2tf), and a peer that is not installed
is named in the table. Every contender runs in a worker process of its own (``runtime_worker.py``: a plain
wall-clock loop, 2 s of warm-up, 1 s rounds), with the same threads. Rounds alternate between contenders in
shuffled order, one at a time: first quiet, then each beside one ``while True`` process started for its
round. Medians over rounds; ratios to onnxruntime quiet, and each contender's loaded over its own quiet time.
Peak memory is each worker's peak resident set (TVM: its runtime library only); beside tvm_dse's, the
prediction: the worker's memory once the runtime was imported (measured) plus the plan's memory model.
"tvm_dse, workers sleep at once" is the same library with its thread pool's spin turned off
(``TVM_DSE_SPIN_US=0``; see ``tvm_dse/thread_pool.py``): each parallel loop then wakes the workers.
"tvm_dse, bounded to onnxruntime's peak" is the plan ``optimize`` finds with ``memory_limit`` set so that
the process fits onnxruntime's peak (onnxruntime's peak less the TVM worker's runtime memory, both measured
first); where the default plan already fits, it is that plan, not run twice.

    python benchmarks/deployed.py [--models resnet18,mobilenet_v2,squeezenet1_1,resnet50] [--rounds 5]
                                  [--logs DIR]

Writes deployed.md, deployed.json and deployed.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import HERE, RuntimeWorker, machine, write_results
from tvm_dse.thread_pool import SPIN_US

ROOT = HERE.parent
PEERS = ROOT / ".peers"
MODELS = ["resnet18", "mobilenet_v2", "squeezenet1_1", "resnet50"]
SETTLE_S = 0.5  # between rounds: the previous contender's threads stop spinning
SLEEPING = "tvm_dse, workers sleep at once"
REFERENCE = "onnxruntime"
BOUNDED = "tvm_dse, bounded to onnxruntime's peak"


@dataclass
class Contender:
    """One runtime with one model, as a worker process is started for it."""

    name: str
    kind: str  # runtime_worker.py's KIND
    python: str
    model: Path | None  # None: not available, for ``missing``
    environment: dict[str, str] = field(default_factory=dict)
    missing: str = ""


def _peer_python(peer: str) -> Path | None:
    python = PEERS / peer / "bin" / "python"
    return python if python.exists() else None


def _convert(peer: str, onnx_path: Path, shape: tuple[int, ...], work: Path) -> tuple[Path | None, str]:
    """The model in ``peer``'s format, or why not (not installed, or its converter failed)."""
    python = _peer_python(peer)
    if python is None:
        return None, "not installed (scripts/setup_peers.sh)"
    folder = work / peer
    folder.mkdir(exist_ok=True)
    model = folder / onnx_path.name
    model.write_bytes(onnx_path.read_bytes())
    if peer == "openvino":
        return model, ""
    if peer == "ncnn":
        # the converter binary only: importing pnnx's package would want torch
        site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        command = [f"{site}/pnnx/pnnx", model.name, f"inputshape=[{','.join(map(str, shape))}]", "fp16=0"]
        converted = folder / f"{model.stem}.ncnn.param"
    elif peer == "mnn":
        # the converter's module, never the `mnnconvert` script (it uploads usage logs)
        converted = folder / f"{model.stem}.mnn"
        command = [python, "-c", "import sys, _tools; _tools.mnnconvert(sys.argv[1:])", "mnnconvert", "-f", "ONNX",
                   "--modelFile", model.name, "--MNNModel", converted.name, "--bizCode", "tvm_dse"]
    else:
        command = [PEERS / "litert" / "bin" / "onnx2tf", "-i", model.name, "-o", "litert"]
        converted = folder / "litert" / f"{model.stem}_float32.tflite"
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if not converted.exists():
        return None, f"conversion failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return converted, ""


# the library's thread pool as it is deployed, whatever this process was started with
_PLAIN = {key: value for key, value in os.environ.items() if key != SPIN_US}


def _contenders(library: Path, bounded: Path | None, onnx_path: Path, shape: tuple[int, ...],
                work: Path) -> list[Contender]:
    contenders = [
        Contender("tvm_dse", "tvm", sys.executable, library, _PLAIN),
        Contender(SLEEPING, "tvm", sys.executable, library, {**_PLAIN, SPIN_US: "0"}),
        Contender(REFERENCE, "onnxruntime", sys.executable, onnx_path, _PLAIN),
    ]
    if bounded is not None:
        contenders.insert(2, Contender(BOUNDED, "tvm", sys.executable, bounded, _PLAIN))
    for peer, name in (("openvino", "OpenVINO"), ("ncnn", "ncnn"), ("mnn", "MNN"), ("litert", "LiteRT (XNNPACK)")):
        model, missing = _convert(peer, onnx_path, shape, work)
        contenders.append(Contender(name, peer, str(_peer_python(peer) or ""), model, _PLAIN, missing))
    return contenders


def _memory_bound_mb(library: Path, onnx_path: Path, inputs: Path, threads: int, work: Path) -> float:
    """The plan memory that keeps a TVM worker within onnxruntime's peak: onnxruntime's peak less the TVM
    worker's memory once its runtime is imported, each measured in a worker of its own."""
    measured = {}
    for kind, model in (("tvm", library), ("onnxruntime", onnx_path)):
        worker = RuntimeWorker(sys.executable, kind, model, inputs, threads, work / f"bound_{kind}.npy", _PLAIN)
        try:
            worker.wait_ready(kind)
            measured[kind] = worker.ask("runtime memory" if kind == "tvm" else "memory")
        finally:
            worker.close()
    return measured["onnxruntime"] - measured["tvm"]


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _measure(contenders: list[Contender], inputs: Path, threads: int, rounds: int, work: Path) -> dict:
    """Quiet and loaded round medians, peak memory and output of each available contender."""
    running = [c for c in contenders if c.model is not None]
    workers = {c.name: RuntimeWorker(c.python, c.kind, c.model, inputs, threads,
                                     work / f"{c.name.replace(' ', '_').replace(',', '')}.npy", c.environment)
               for c in running}
    results: dict[str, dict] = {}
    try:
        for name, worker in workers.items():
            worker.wait_ready(name)
        samples = {name: {"quiet": [], "loaded": []} for name in workers}
        for _ in range(rounds):
            for phase in ("quiet", "loaded"):
                for name in random.sample(list(workers), len(workers)):
                    busy = _busy() if phase == "loaded" else None
                    time.sleep(SETTLE_S)
                    try:
                        samples[name][phase].append(workers[name].ask("round"))
                    finally:
                        if busy is not None:
                            busy.kill()
                            busy.wait()
        reference = np.load(workers[REFERENCE].output)
        for name, worker in workers.items():
            produced = np.load(worker.output).reshape(reference.shape)
            results[name] = {
                "quiet_ms": statistics.median(samples[name]["quiet"]),
                "loaded_ms": statistics.median(samples[name]["loaded"]),
                "rounds": samples[name], "peak_mb": worker.ask("memory"), "runtime_mb": worker.ask("runtime memory"),
                "max_error": float(np.abs(produced - reference).max() / np.abs(reference).max()),
            }
    finally:
        for worker in workers.values():
            worker.close()
    return results


def _table(rows: list[dict], facts: dict, threads: int, rounds: int) -> str:
    lines = [f"# Deployed side by side ({facts['cpu']}, {facts['nproc']} cores, {threads} threads, {facts['date']}, "
             f"commit {facts['commit']})", "",
             f"Each contender warm in its own process, {rounds} rounds alternating one at a time; quiet, then beside "
             "one busy process. ms: median of round medians; (x): quiet over onnxruntime quiet; loaded (x): over "
             "its own quiet; memory: peak resident MB (x onnxruntime's); predicted (tvm_dse): the worker's memory "
             "once TVM's runtime was imported (measured) plus the plan's memory model, and its error; error: max "
             "|difference| over max |output| against onnxruntime.", "",
             "| model | contender | quiet ms (x onnxruntime) | loaded ms (x its quiet) | peak MB (x onnxruntime) | "
             "predicted peak MB | error |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        reference = row["results"][REFERENCE]
        for contender in row["contenders"]:
            name = contender["name"]
            if name not in row["results"]:
                lines.append(f"| {row['model']} | {name} | {contender['missing']} | | | | |")
                continue
            r = row["results"][name]
            predicted = ""
            if name in row["plan_memory_mb"]:
                estimate = r["runtime_mb"] + row["plan_memory_mb"][name]
                predicted = f"{estimate:.0f} ({100 * (estimate / r['peak_mb'] - 1):+.1f}%)"
            lines.append(
                f"| {row['model']} | {name} | {r['quiet_ms']:.2f} ({r['quiet_ms'] / reference['quiet_ms']:.2f}) | "
                f"{r['loaded_ms']:.2f} ({r['loaded_ms'] / r['quiet_ms']:.1f}) | {r['peak_mb']:.0f} "
                f"({r['peak_mb'] / reference['peak_mb']:.2f}) | {predicted} | {r['max_error']:.1e} |")
    lines += ["", f"{BOUNDED}: the plan memory that keeps a TVM worker within onnxruntime's peak (its peak less the "
              "TVM worker's runtime memory, measured first), given to optimize as memory_limit:", ""]
    lines += [f"- {row['model']}: {row['memory_bound_mb']:.1f} MB; {row['bounded']}" for row in rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 4), squeeze=False)
    for axis, row in zip(axes[0], rows):
        names = list(row["results"])
        reference = row["results"][REFERENCE]["quiet_ms"]
        positions = range(len(names))
        axis.bar([p - 0.2 for p in positions], [row["results"][n]["quiet_ms"] / reference for n in names], 0.4,
                 label="quiet")
        axis.bar([p + 0.2 for p in positions], [row["results"][n]["loaded_ms"] / reference for n in names], 0.4,
                 label="beside one busy process")
        axis.set_xticks(list(positions), names, rotation=45, ha="right", fontsize=8)
        axis.set_yscale("log")
        axis.set_title(row["model"])
        axis.set_ylabel("latency / onnxruntime quiet")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--logs", help="tuning-log directory for optimize (default: tvm_dse's own)")
    args = parser.parse_args()

    import onnx

    import tvm_dse
    from tvm_dse.errors import TvmDseError
    from tvm_dse.target import physical_cores

    threads = physical_cores()
    work = Path(tempfile.mkdtemp(prefix="deployed_"))
    rows = []
    for name in args.models.split(","):
        out = work / name
        result = tvm_dse.optimize(f"zoo:{name}", "host", out_dir=out, logs=args.logs, show_progress=False)
        feed = result.model.random_feed(seed=0)
        inputs = out / "input.npz"
        np.savez(inputs, **feed)
        onnx_path = out / f"{name}.onnx"
        onnx.save(result.model.onnx_model, onnx_path)
        (shape,) = [array.shape for array in feed.values()]
        library = out / f"{result.model.name}.{result.target.arch}.so"
        plan_memory = {"tvm_dse": result.report["peak_memory_mb"],
                       SLEEPING: result.report["peak_memory_mb"]}
        bound = _memory_bound_mb(library, onnx_path, inputs, threads, out)
        bounded = None
        if plan_memory["tvm_dse"] <= bound:
            note = f"the default plan fits ({plan_memory['tvm_dse']:.1f} MB): it is that plan"
        else:
            try:
                within = tvm_dse.optimize(f"zoo:{name}", "host", out_dir=out / "bounded", logs=args.logs,
                                          memory_limit=bound, show_progress=False)
            except TvmDseError as error:
                note = f"no plan: {error}"
            else:
                bounded = out / "bounded" / library.name
                plan_memory[BOUNDED] = within.report["peak_memory_mb"]
                note = (f"its plan's memory {plan_memory[BOUNDED]:.1f} MB (the default plan's "
                        f"{plan_memory['tvm_dse']:.1f})")
        contenders = _contenders(library, bounded, onnx_path, shape, out)
        results = _measure(contenders, inputs, threads, args.rounds, out)
        rows.append({"model": name, "results": results, "report_ms": result.report["latency"]["median_ms"],
                     "contenders": [{"name": c.name, "missing": c.missing} for c in contenders],
                     "plan_memory_mb": plan_memory, "memory_bound_mb": bound, "bounded": note})
        print(json.dumps({"model": name, **{k: round(v["quiet_ms"], 3) for k, v in results.items()}}), flush=True)
    facts = machine()
    write_results("deployed", _table(rows, facts, threads, args.rounds),
                  {"machine": facts, "threads": threads, "rounds": args.rounds, "rows": rows})
    _plot(rows, HERE / "deployed.png")


if __name__ == "__main__":
    main()
