"""The optimization report: what was chosen, what it costs, how the searchers compare, the latency/memory
Pareto front; as JSON, markdown and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median_low
from typing import Any, Sequence

from .frontend import Model
from .graph import DseGraph
from .plan import Plan
from .process_memory import ProcessMemory
from .space import DesignSpace
from .target import DseTarget
from .thread_pool import describe_thread_pool, measuring_pool
from .timing import Timing

# the cost source (``costs["source"]``) of a run priced by the cost model rather than by timings
MODELED = "model"

MB = 2**20


def build_report(model: Model, graph: DseGraph, target: DseTarget, plan: Plan, space: DesignSpace, search: Any,
                 comparison: Sequence[Any], latency: Timing, validation_error: float,
                 timings: dict[str, float], tuned: Sequence[Any] = (), top_k: int | None = None,
                 accuracy: dict[str, Any] | None = None, verified: Sequence[dict[str, Any]] = (),
                 reference: dict[str, Any] | None = None, latency_rounds_ms: Sequence[float] = (),
                 costs: dict[str, Any] | None = None, memory: ProcessMemory | None = None) -> dict[str, Any]:
    """The report of one optimization, as plain data; ``tuned`` are the kernels tuned on the way
    (:class:`tvm_dse.tuning.TuneResult`), ``top_k`` the strategies measured per node when a predictor
    chose them, ``accuracy`` the accuracy-bounded search's scores and per-layer sensitivity, ``verified``
    the plans timed end to end (predicted and measured), ``reference`` onnxruntime's latency (or why it
    was not timed); ``latency`` is the chosen plan's steady-state timing, the fastest of its
    ``latency_rounds_ms`` (see :func:`tvm_dse.timing.quiet_round`); ``costs`` says where every cost came
    from (measured, or the cost model's); ``memory`` is the plan's library measured in a process of its own
    (host targets)."""
    from .search.exact import pareto_front

    nodes = []
    for node, choice in zip(space.nodes, search.assignment):
        if node.is_tunable:
            option = node.options[choice]
            fastest = min(node.options, key=lambda o: o.latency_ms)
            workload = graph.node(node.name).workload
            nodes.append({"node": node.name, "workload": workload.describe(), "strategy": option.name,
                          "latency_ms": option.latency_ms, "fastest": fastest.name,
                          "fastest_ms": fastest.latency_ms, "layouts": f"{option.input_layout}->{option.output_layout}",
                          "disturbed": option.disturbed})
    front = [{"latency_ms": point.cost_ms, "peak_memory_mb": point.peak_memory_bytes / MB}
             for point in pareto_front(space)]
    return {
        "model": model.name, "model_fingerprint": model.fingerprint, "target": target.to_dict(),
        "target_key": target.key, "costs": costs or {"source": "measured"}, "gflop": graph.flops / 1e9,
        "latency": latency.to_dict(), "latency_rounds_ms": list(latency_rounds_ms),
        "gflops": latency.gflops(graph.flops),
        "predicted_ms": search.cost_ms, "peak_memory_mb": search.peak_memory_bytes / MB,
        "conversion_ms": space.transform_cost(search.assignment), "fixed_ms": space.fixed_ms,
        "priced_in_model": space.metadata.get("priced_in_model"),
        "validation": {"relative_error_vs_tvm_default": validation_error},
        "search": search.to_dict(), "comparison": [row if isinstance(row, dict) else row.to_dict() for row in comparison],
        "pareto_front": front, "nodes": nodes, "timings": timings, "plan": plan.to_dict(),
        "tuning": [{"workload": t.workload.describe(), "strategy": t.strategy, "trials": t.trials,
                    "measured": t.measured, "default_ms": t.default.median_ms if t.default and t.default.ok else None,
                    "best_ms": t.best.median_ms if t.best else None} for t in tuned],
        "top_k": top_k,
        "accuracy": accuracy,
        "verified_plans": list(verified),
        "reference": _with_ratio(reference, latency),
        "thread_pool": measuring_pool(in_this_process=target.runs_on_host),
        "process_memory": None if memory is None else _process_memory(memory, search.peak_memory_bytes),
    }


def _process_memory(memory: ProcessMemory, modeled_plan_bytes: float) -> dict[str, float]:
    """The measured memory of a process running the plan, beside the prediction: the runtime's measured part
    plus the plan's modeled memory."""
    predicted = memory.runtime_bytes + modeled_plan_bytes
    return {"runtime_mb": memory.runtime_bytes / MB, "peak_mb": memory.peak_bytes / MB,
            "plan_mb": memory.plan_bytes / MB, "predicted_peak_mb": predicted / MB,
            "prediction_error": predicted / memory.peak_bytes - 1}


def memory_line(report: dict[str, Any]) -> str:
    """The report's memory line: the plan's modeled memory and, where measured, the process's."""
    line = (f"{report['peak_memory_mb']:.1f} MB as the search prices it (weights, the largest workspace, the "
            "largest live activations)")
    measured = report.get("process_memory")
    if measured:
        line += (f"; a process running the exported library with TVM's runtime library peaked at "
                 f"{measured['peak_mb']:.1f} MB, {measured['runtime_mb']:.1f} MB of it the runtime before the model "
                 f"was loaded (predicted {measured['predicted_peak_mb']:.1f} MB, "
                 f"{100 * measured['prediction_error']:+.1f}%)")
    return line


def _with_ratio(reference: dict[str, Any] | None, latency: Timing) -> dict[str, Any] | None:
    if reference is None or "latency" not in reference:
        return reference
    return {**reference, "plan_over_reference": latency.median_ms / reference["latency"]["median_ms"]}


def costs_modeled(costs: dict[str, Any]) -> bool:
    """Whether a run's costs (its report's ``costs``) come from the cost model rather than timings."""
    return costs.get("source") == MODELED


def costs_line(report: dict[str, Any]) -> str:
    """Where the report's costs come from, in one line."""
    costs = report["costs"]
    if not costs_modeled(costs):
        return f"every cost measured ({costs.get('where', 'where the target is')})"
    validation = costs["host_validation"]
    return (f"every cost is MODELED for {costs['core']}, not measured (cost model version {costs['model_version']}: "
            f"execution profile under emulation, cycles from llvm-mca; {validation})")


def latency_line(report: dict[str, Any]) -> str:
    """The plan's measured (or modeled) latency, its prediction and onnxruntime's beside it, in one line."""
    latency = report["latency"]
    if costs_modeled(report["costs"]):
        return f"{latency['median_ms']:.3f} ms modeled, {report['predicted_ms']:.3f} ms predicted from the modeled kernels"
    rounds = report.get("latency_rounds_ms") or ()
    of_rounds = f"fastest round of {len(rounds)}, median round {median_low(rounds):.3f} ms, " if len(rounds) > 1 else ""
    line = (f"{latency['median_ms']:.3f} ms measured ({of_rounds}"
            f"median of {latency['repeats']} x {latency['number']} runs, "
            f"spread {100 * latency['spread']:.1f}%{', the machine was DISTURBED' if latency['disturbed'] else ''}"
            f"), {report['predicted_ms']:.3f} ms predicted")
    reference = report.get("reference")
    if reference and "latency" in reference:
        line += (f"; {reference['runtime']}: {reference['latency']['median_ms']:.3f} ms, the plan takes "
                 f"{reference['plan_over_reference']:.2f}x its time")
    elif reference:
        line += f"; onnxruntime not timed: {reference['omitted']}"
    return line


def _pricing(report: dict[str, Any]) -> str:
    priced = report.get("priced_in_model")
    modeled = costs_modeled(report["costs"])
    if not priced:
        return f"kernels priced by {'the cost model one at a time' if modeled else 'their isolated measurements'}"
    low, high = priced["fixed_ms_range"]
    modules = f"{priced['modules']} modules (the uniform plans)"
    where = f"by the cost model in {modules}, each run under emulation" if modeled else f"as {modules} ran them"
    alone, fixed = ("own modeled cost", "was modeled at") if modeled else ("isolated time", "took")
    return (f"kernels priced {where} ({priced['options_observed']} of {priced['options']} options seen there, the "
            f"rest at {priced['isolated_scale']:.2f}x their {alone}){_pools(priced)}; what no choice changes {fixed} "
            f"{low:.3f}-{high:.3f} ms in those modules")


def _pools(priced: dict[str, Any]) -> str:
    owners = priced.get("vertices_with_pools", 0)
    return f", with the pools after {owners} node(s) priced in the layout each option gives them" if owners else ""


def _disturbed_prices(report: dict[str, Any]) -> str:
    disturbed = [node["node"] for node in report["nodes"] if node["disturbed"]]
    if not disturbed:
        return ""
    return (f"; {len(disturbed)} of the plan's {len(report['nodes'])} kernel prices come from timings that stayed "
            f"disturbed (other work busy on the machine, or spread samples): {', '.join(disturbed[:5])}"
            f"{', ...' if len(disturbed) > 5 else ''}")


def _pareto_rows(report: dict[str, Any]) -> list[str]:
    """The front's table; where the process was measured, with each plan's predicted process peak (the
    runtime's measured memory plus the plan's modeled memory)."""
    measured = report.get("process_memory")
    if not measured:
        return ["| latency ms | peak memory MB |", "|---|---|"] + [
            f"| {p['latency_ms']:.3f} | {p['peak_memory_mb']:.1f} |" for p in report["pareto_front"]]
    return ["| latency ms | peak memory MB | process peak MB (runtime measured + plan) |", "|---|---|---|"] + [
        f"| {p['latency_ms']:.3f} | {p['peak_memory_mb']:.1f} | {measured['runtime_mb'] + p['peak_memory_mb']:.1f} |"
        for p in report["pareto_front"]]


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown page."""
    modeled = costs_modeled(report["costs"])
    lines = [f"# tvm_dse: {report['model']} on {report['target_key']}", "",
             f"- Costs: {costs_line(report)}",
             f"- Latency: {latency_line(report)}",
             f"- {report['gflops']:.1f} GFLOP/s ({report['gflop']:.3f} GFLOP); of the prediction "
             f"{report['conversion_ms']:.3f} ms are layout conversions and {report['fixed_ms']:.3f} ms what no "
             f"choice changes; {_pricing(report)}{_disturbed_prices(report)}",
             f"- Peak memory of the plan: {memory_line(report)}",
             f"- Thread pool: {describe_thread_pool(report['thread_pool'], measured=not modeled)}",
             f"- Outputs vs TVM's default build: relative error "
             f"{report['validation']['relative_error_vs_tvm_default']:.1e}",
             f"- Searcher: {report['search']['searcher']}, {report['search']['evaluations']} evaluations, "
             f"{report['search']['seconds']:.2f} s; time spent: "
             + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in report["timings"].items()), "",
             "## Searchers at equal budget", "", "| searcher | predicted ms | gap to exact | evaluations | seconds |",
             "|---|---|---|---|---|"]
    for row in report["comparison"]:
        gap = row.get("gap_percent")
        lines.append(f"| {row['searcher']} | {row['cost_ms']:.3f} | {'-' if gap is None else f'{gap:.2f}%'} | "
                     f"{row['evaluations']} | {row['seconds']:.2f} |")
    if report.get("verified_plans"):
        lines += ["", "## The best plans, timed end to end", "",
                  "| plan | predicted ms | measured ms (median) | spread | chosen |", "|---|---|---|---|---|"]
        for row in report["verified_plans"]:
            measured = row["measured"]
            lines.append(f"| {row['plan']} | {row['predicted_ms']:.3f} | {measured['median_ms']:.3f}"
                         f"{' (disturbed)' if measured['disturbed'] else ''} | {100 * measured['spread']:.1f}% | "
                         f"{'yes' if row['chosen'] else ''} |")
    lines += ["", "## Latency / memory Pareto front", ""] + _pareto_rows(report)
    if report.get("tuning"):
        lines += ["", "## Kernels tuned", "", "| workload | strategy | trials (new) | default ms | tuned ms |",
                  "|---|---|---|---|---|"]
        for row in report["tuning"]:
            default = "-" if row["default_ms"] is None else f"{row['default_ms']:.3f}"
            best = "-" if row["best_ms"] is None else f"{row['best_ms']:.3f}"
            lines.append(f"| {row['workload']} | {row['strategy']} | {row['trials']} ({row['measured']}) | "
                         f"{default} | {best} |")
    accuracy = report.get("accuracy")
    if accuracy:
        lines += ["", "## Accuracy", "",
                  f"- {accuracy['metric']}: fp32 {accuracy['fp32_score']:.4f}, this plan {accuracy['plan_score']:.4f} "
                  f"(loss {accuracy['loss']:.4f}, bound {accuracy['max_loss']:g}, estimated from per-layer losses "
                  f"{accuracy['estimated_loss']:.4f}; {accuracy['searches']} search(es))",
                  f"- Quantized nodes: {', '.join(accuracy['quantized_nodes']) or 'none'}", "",
                  "| node | precision | score with this node alone in it | loss |", "|---|---|---|---|"]
        for name, by_precision in accuracy["sensitivity"]["nodes"].items():
            for precision, row in by_precision.items():
                lines.append(f"| {name} | {precision} | {row['score']:.4f} | {row['loss']:.4f} |")
    lines += ["", "## Chosen strategy per node", "",
              "| node | workload | strategy | ms | layouts | fastest alone |", "|---|---|---|---|---|---|"]
    for node in report["nodes"]:
        lines.append(f"| {node['node']} | {node['workload']} | {node['strategy']} | {node['latency_ms']:.3f}"
                     f"{' (disturbed)' if node['disturbed'] else ''} | "
                     f"{node['layouts']} | {node['fastest']} ({node['fastest_ms']:.3f}) |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and the plots (layers.png, convergence.png, pareto.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {"report_json": out_dir / "report.json", "report_md": out_dir / "report.md"}
    paths["report_json"].write_text(json.dumps(report, indent=1, default=float))
    paths["report_md"].write_text(markdown(report))

    nodes = report["nodes"]
    figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(nodes)), 4))
    strategies = sorted({n["strategy"] for n in nodes})
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(strategies)}
    axis.bar(range(len(nodes)), [n["latency_ms"] for n in nodes], color=[colors[n["strategy"]] for n in nodes])
    axis.set_xticks(range(len(nodes)), [n["node"] for n in nodes], rotation=90, fontsize=6)
    axis.set_ylabel("ms")
    axis.set_title(f"{report['model']}: chosen strategy and latency per node")
    axis.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in strategies], labels=strategies,
                fontsize=7)
    figure.tight_layout()
    paths["layers_png"] = out_dir / "layers.png"
    figure.savefig(paths["layers_png"], dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for row in report["comparison"]:
        history = row.get("history") or []
        if history:
            axis.step([h[0] for h in history], [h[2] for h in history], where="post", label=row["searcher"])
    axis.set_xlabel("cost evaluations")
    axis.set_ylabel("best predicted ms")
    axis.set_xscale("symlog")
    axis.set_title("convergence of the searchers")
    axis.legend(fontsize=7)
    figure.tight_layout()
    paths["convergence_png"] = out_dir / "convergence.png"
    figure.savefig(paths["convergence_png"], dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    front = report["pareto_front"]
    axis.plot([p["peak_memory_mb"] for p in front], [p["latency_ms"] for p in front], "o-")
    axis.set_xlabel("peak memory (MB)")
    axis.set_ylabel("predicted latency (ms)")
    axis.set_title("latency / memory Pareto front")
    figure.tight_layout()
    paths["pareto_png"] = out_dir / "pareto.png"
    figure.savefig(paths["pareto_png"], dpi=110)
    plt.close(figure)
    return paths
