"""The Arm cost model (tvm_dse.core_model): validated where measuring is possible, and set beside published
figures where it is not.

    python benchmarks/arm_model.py --validate-on-host [--models resnet18,mobilenet_v2]
    python benchmarks/arm_model.py [--models resnet18,mobilenet_v2] [--target rpi4]

``--validate-on-host``: the same method on this machine, where kernels can be timed. Every distinct
convolution workload of the models x every applicable fp32 strategy is built for an AVX2 target (QEMU's
translator runs AVX2, not AVX-512), timed here on one thread, and modeled: profiled under ``qemu-x86_64``
and priced by llvm-mca for this machine's core at its clock (measured by a chain of dependent adds, one
per cycle) and memory bandwidth (measured by a large copy). It prints the Spearman rank correlation of
modeled against measured latencies, their median absolute relative error, and whether the plan chosen
from modeled costs (exact search over the kernels and conversions), built and timed, is within 10% of the
plan chosen from measured costs. Writes ``arm_model_validation.md``/``.json`` and a scatter plot.

Without it: ResNet-18 and MobileNetV2 (the zoo's, 224x224, fp32) under a uniform spatial-pack plan (its
depthwise nodes in the same NCHWc layout), cross-compiled for a Cortex-A72, profiled on the emulated board
and priced for a Raspberry Pi 4 class board (4 cores at 1.8 GHz), beside the latencies published for such
a board by other runtimes. Every latency of tvm_dse there is MODELED, not measured (no Arm board is
reachable from this machine); the published figures are other runtimes' own kernels on a real board: they
say whether the model is of the right magnitude, not how tvm_dse's kernels compare with those runtimes'.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from common import HERE, machine, write_results

MODELS = ["resnet18", "mobilenet_v2"]
UNIFORM = "spatial_pack_nchwc"
# The validation's kernels: AVX2 without AVX-512 (what QEMU's translator runs), on any x86 machine with AVX2
VALIDATION_MCPU = "haswell"
# Latencies published for a Raspberry Pi 4 (4x Cortex-A72 at 1.8 GHz), fp32, 4 threads: ncnn's benchmark
# table (ResNet-18) and XNNPACK's README (MobileNetV2)
PUBLISHED_MS = {"resnet18": ("ncnn", 123.0), "mobilenet_v2": ("XNNPACK", 46.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--target", default="rpi4", help="an aarch64 preset or target (default: rpi4)")
    parser.add_argument("--validate-on-host", action="store_true",
                        help="validate the method against kernels timed on this machine")
    args = parser.parse_args()
    if args.validate_on_host:
        validate_on_host(args.models.split(","))
    else:
        beside_published(args.models.split(","), args.target)


def beside_published(models: list[str], target_name: str) -> None:
    """The models' uniform plans modeled for ``target_name``'s core, beside published figures."""
    import tvm_dse
    from tvm_dse.core_model import ModeledRunner, module_ms
    from tvm_dse.lower import build_plan

    target = tvm_dse.parse_target(target_name)
    runner = ModeledRunner(target)
    core = runner.core
    rows = []
    work = Path(tempfile.mkdtemp(prefix="arm_model_"))
    for name in models:
        model = tvm_dse.load_model(f"zoo:{name}")
        graph = tvm_dse.build_graph(model)
        plan = tvm_dse.Plan.uniform(model, graph, target, UNIFORM)
        built = build_plan(model, plan, target, graph)
        began = time.perf_counter()
        [functions] = runner.price_functions([(built, model.random_feed(seed=0))], work)
        modeled_ms = module_ms(functions)
        costliest = sorted(((function, ms * calls) for function, (ms, calls) in functions.items()),
                           key=lambda item: -item[1])
        runtime, published = PUBLISHED_MS.get(name, ("", None))
        rows.append({"model": name, "plan": f"uniform {UNIFORM}", "functions": len(functions), "modeled_ms": modeled_ms,
                     "published_runtime": runtime, "published_ms": published,
                     "modeled_over_published": modeled_ms / published if published else None,
                     "gflop": graph.flops / 1e9, "profile_s": time.perf_counter() - began,
                     "costliest_functions": [{"function": f, "share": ms / modeled_ms} for f, ms in costliest[:5]]})
        print(f"{name}: {modeled_ms:.1f} ms modeled on {core.describe()}"
              + (f", {runtime} published {published:g} ms" if published else ""), flush=True)
    facts = machine()
    lines = [f"# The Arm cost model beside published figures ({facts['date']}, commit {facts['commit']}; profiled "
             f"on {facts['cpu']})", "",
             f"Every tvm_dse latency here is MODELED for {core.describe()} (execution profile on the emulated "
             "board, cycles per block from llvm-mca, compute scaled over the cores, memory beyond the cache over its "
             "bandwidth, function by function), not measured. The published "
             "figures are other runtimes' kernels on a real Raspberry Pi 4 (4 threads): they bound the model's "
             "magnitude only.", "",
             "| model | plan | GFLOP | functions | modeled ms | published ms | modeled / published | "
             "costliest functions (share of the modeled time) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        costliest = ", ".join(f"{f['function']} {100 * f['share']:.0f}%" for f in row["costliest_functions"][:3])
        published = f"{row['published_ms']:g} ({row['published_runtime']})" if row["published_ms"] else "-"
        ratio = f"{row['modeled_over_published']:.2f}" if row["modeled_over_published"] else "-"
        lines.append(f"| {row['model']} | {row['plan']} | {row['gflop']:.2f} | {row['functions']} | "
                     f"{row['modeled_ms']:.1f} | {published} | {ratio} | {costliest} |")
    write_results("arm_model", "\n".join(lines) + "\n", {"machine": facts, "core": core.describe(), "rows": rows})



def _host_clock_ghz() -> float:
    """This machine's core clock while busy: a chain of dependent adds (one per cycle on every x86 core)."""
    source = ("#include <stdio.h>\n#include <time.h>\nint main(void){struct timespec a,b;unsigned long x=0;"
              "clock_gettime(CLOCK_MONOTONIC,&a);for(long i=0;i<400000000;i++){__asm__ volatile(\"add $1,%0\\n\\t"
              "add $1,%0\\n\\tadd $1,%0\\n\\tadd $1,%0\" : \"+r\"(x));}clock_gettime(CLOCK_MONOTONIC,&b);"
              "printf(\"%f\\n\",4*400000000.0/((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec)));return 0;}")
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "clock.c").write_text(source)
        subprocess.run(["cc", "-O1", "-o", f"{work}/clock", f"{work}/clock.c"], check=True)
        return max(float(subprocess.run([f"{work}/clock"], capture_output=True, text=True, check=True).stdout)
                   for _ in range(3))


def _host_bandwidth_gbs() -> float:
    """This machine's memory bandwidth for one thread: the best of a few copies of 256 MB (read and written)."""
    import numpy as np

    source = np.ones(2**26, np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - began)
    return 2 * source.nbytes / best / 1e9


def _host_cache_mb() -> float:
    """This machine's last-level cache, as the kernel reports it."""
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"), key=lambda index: int(index.name[5:]))
    size = (caches[-1] / "size").read_text().strip()
    return int(size[:-1]) / 1024 if size.endswith("K") else float(size.rstrip("M"))


def validate_on_host(models: list[str]) -> None:
    """The method against kernels timed here (see the module's docstring)."""
    from common import set_threads

    set_threads(1)
    import numpy as np
    from scipy.stats import spearmanr

    import tvm_dse
    from tvm.target import codegen
    from tvm_dse.core_model import Core, ModeledRunner
    from tvm_dse.lower import build_plan
    from tvm_dse.measure import Builder, LocalRunner, MeasurementSession, MeasurementStore
    from tvm_dse.pricing import measure_space, plan_from_assignment
    from tvm_dse.search import get_searcher
    from tvm_dse.timing import SteadyState

    target = tvm_dse.parse_target(f"llvm -mcpu={VALIDATION_MCPU} -num-cores=1")
    clock, bandwidth = _host_clock_ghz(), _host_bandwidth_gbs()
    core = Core(codegen.llvm_get_system_cpu(), target.triple, target.mattr, clock, 1, bandwidth, _host_cache_mb())
    print(f"validating on {core.describe()} (clock and bandwidth measured), kernels built for {target.key}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="arm_model_validation_"))
    sessions = {kind: MeasurementSession(target, runner, MeasurementStore(work / f"{kind}.jsonl", target.key),
                                         Builder(directory=work / f"kernels_{kind}"))
                for kind, runner in (("measured", LocalRunner()), ("modeled", ModeledRunner(target, core)))}
    kernels, plans = [], []
    for name in models:
        model = tvm_dse.load_model(f"zoo:{name}")
        graph = tvm_dse.build_graph(model)
        spaces = {kind: measure_space(model, graph, session) for kind, session in sessions.items()}
        seen = set()
        for measured_node, modeled_node in zip(spaces["measured"].nodes, spaces["modeled"].nodes):
            if not measured_node.is_tunable:
                continue
            workload = graph.node(measured_node.name).workload
            for measured, modeled in zip(measured_node.options, modeled_node.options):
                key = (workload.key(), measured.name)
                if key in seen or not (0 < measured.latency_ms < float("inf") and 0 < modeled.latency_ms < float("inf")):
                    continue
                seen.add(key)
                kernels.append({"model": name, "workload": workload.describe(), "strategy": measured.name,
                                "measured_ms": measured.latency_ms, "modeled_ms": modeled.latency_ms})
        chosen = {}
        for kind, space in spaces.items():
            result = get_searcher("exact").search(space, show_progress=False)
            plan = plan_from_assignment(space, result.assignment, model, target, searcher="exact", costs=kind)
            built = build_plan(model, plan, target, graph)
            chosen[kind] = {"predicted_ms": result.cost_ms,
                            "measured_ms": built.time(model.random_feed(seed=0), SteadyState()).median_ms}
        plans.append({"model": name, **{f"{kind}_{key}": value for kind, row in chosen.items() for key, value in row.items()},
                      "plan_ratio": chosen["modeled"]["measured_ms"] / chosen["measured"]["measured_ms"]})
        print(f"{name}: plan from modeled costs {chosen['modeled']['measured_ms']:.2f} ms, from measured costs "
              f"{chosen['measured']['measured_ms']:.2f} ms (measured here)", flush=True)
    measured = np.array([k["measured_ms"] for k in kernels])
    modeled = np.array([k["modeled_ms"] for k in kernels])
    rho = float(spearmanr(measured, modeled).statistic)
    error = float(np.median(np.abs(modeled - measured) / measured))
    facts = machine()
    lines = [f"# The cost model validated on this machine ({facts['date']}, {facts['cpu']}, commit {facts['commit']})", "",
             f"Kernels built for `{target.key}` (AVX2: QEMU's translator runs no AVX-512), one thread. Measured: "
             f"timed here. Modeled: profiled under qemu-x86_64, cycles per block from llvm-mca for "
             f"{core.describe()} (clock and bandwidth measured here, the cache as the kernel reports it).", "",
             f"- {len(kernels)} kernels (every distinct convolution workload of {', '.join(models)} x every "
             f"applicable fp32 strategy): Spearman rank correlation **{rho:.3f}**, median absolute error "
             f"**{100 * error:.0f}%** (modeled against measured)", "",
             "| model | plan from measured costs: predicted / measured ms | plan from modeled costs: modeled / "
             "measured ms | modeled plan / measured plan (both measured) |", "|---|---|---|---|"]
    for row in plans:
        lines.append(f"| {row['model']} | {row['measured_predicted_ms']:.2f} / {row['measured_measured_ms']:.2f} | "
                     f"{row['modeled_predicted_ms']:.2f} / {row['modeled_measured_ms']:.2f} | {row['plan_ratio']:.3f} |")
    lines += ["", "| model | workload | strategy | measured ms | modeled ms | modeled / measured |", "|---|---|---|---|---|---|"]
    lines += [f"| {k['model']} | {k['workload']} | {k['strategy']} | {k['measured_ms']:.4f} | {k['modeled_ms']:.4f} | "
              f"{k['modeled_ms'] / k['measured_ms']:.2f} |" for k in kernels]
    write_results("arm_model_validation", "\n".join(lines) + "\n",
                  {"machine": facts, "core": core.describe(), "target": target.key, "spearman": rho,
                   "median_abs_error": error, "kernels": kernels, "plans": plans})
    _scatter(kernels, rho, error, core.describe())


def _scatter(kernels: list[dict], rho: float, error: float, core: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5))
    for model in sorted({k["model"] for k in kernels}):
        mine = [k for k in kernels if k["model"] == model]
        axis.scatter([k["measured_ms"] for k in mine], [k["modeled_ms"] for k in mine], s=12, label=model)
    low = min(min(k["measured_ms"], k["modeled_ms"]) for k in kernels)
    high = max(max(k["measured_ms"], k["modeled_ms"]) for k in kernels)
    axis.plot([low, high], [low, high], "k--", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("measured ms (one thread)")
    axis.set_ylabel("modeled ms")
    axis.set_title(f"cost model on {core}\nSpearman {rho:.2f}, median |error| {100 * error:.0f}%", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(HERE / "arm_model_validation.png", dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
