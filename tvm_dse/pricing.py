"""Measuring a model's design space: every applicable strategy of every distinct workload and every
layout conversion an edge may need, measured on the target in a measurement session (resuming from its
store), assembled into a :class:`~tvm_dse.space.DesignSpace`; and turning a chosen assignment back into a
plan.
"""

from __future__ import annotations

from math import prod
from typing import Any, Mapping, Sequence

from .conversions import Conversion
from .errors import TvmDseError
from .frontend import Model
from .graph import DseGraph, Vertex
from .layouts import holds, native_layout
from .measure import MeasurementSession
from .ops import conversion_folds
from .plan import NodeChoice, Plan
from .space import INFEASIBLE, DesignSpace, Edge, Option, SpaceNode
from .strategies import Candidate, applicable_strategies, get_strategy, schedule_versions
from .strategies.kernel import packed_weight_bytes
from .target import DseTarget

FP32_BYTES = 4


def _produced(option: Option, consumer_shape: Sequence[int]) -> str:
    """The layout an option's output arrives in at a consumer: model inputs and layout-fixed operators
    produce the model's own layout for whatever rank their output has (a reshape turns NCHW into NC)."""
    return option.output_layout or native_layout(consumer_shape)


def _tunable_options(vertex: Vertex, target: DseTarget, records: dict[tuple[str, str], Any],
                     strategies: Sequence[str]) -> list[Option]:
    options = []
    for strategy in map(get_strategy, strategies):
        record = records.get((vertex.workload.key(), strategy.name))
        if record is None or not record.ok:
            continue
        layouts = strategy.layouts(vertex.workload, target)
        options.append(Option(strategy.name, record.median_ms, layouts.data, layouts.output,
                              packed_weight_bytes(strategy, vertex.workload, target),
                              strategy.workspace_bytes(vertex.workload, target), dict(record.decisions),
                              disturbed=record.disturbed))
    if not options:
        failures = [r.error for (key, _), r in records.items() if key == vertex.workload.key() and not r.ok]
        raise TvmDseError(f"no strategy could be measured for node {vertex.name!r} ({vertex.workload.describe()}): "
                          + "; ".join(failures[:3]))
    return options


def _activation_bytes(vertex: Vertex) -> int:
    shape = vertex.workload.output_shape if vertex.workload and vertex.kind == "conv2d" else (
        (vertex.workload.batch, vertex.workload.out_channels) if vertex.workload else vertex.shape)
    return FP32_BYTES * prod(shape or ())


def measure_space(model: Model, graph: DseGraph, session: MeasurementSession,
                  strategies: Mapping[str, Sequence[str]] | None = None,
                  precisions: Sequence[str] = ("fp32",)) -> DesignSpace:
    """Measure what the search needs in ``session`` (on its target, resuming from its store) and return the
    design space of ``model``.

    ``strategies`` narrows the options: per workload key, the strategy names to measure and offer (default:
    every applicable strategy of the ``precisions`` given; quantized ones need a calibrated plan).
    """
    dse_target = session.target
    workloads = list({v.workload.key(): v.workload for v in graph.nodes}.values())
    names = {w.key(): [s.name for s in applicable_strategies(w, dse_target) if s.precision in precisions]
             for w in workloads}
    if strategies is not None:
        names = {key: [name for name in options if name in strategies.get(key, options)]
                 for key, options in names.items()}
    bare = [v.name for v in graph.nodes if not names[v.workload.key()]]
    if bare:  # before any measuring
        raise TvmDseError(f"no strategy of precision {', '.join(precisions)}"
                          f"{' among those given' if strategies is not None else ''} applies to node(s) "
                          f"{', '.join(bare[:5])}{' ...' if len(bare) > 5 else ''}")
    candidates = [Candidate(w, name) for w in workloads for name in names[w.key()]]
    measured = session.measure(candidates)
    records = {(c.workload.key(), c.strategy): r for c, r in zip(candidates, measured)}
    if session.store is not None:  # tuned decisions replace the default ones where they measured faster
        for pair, record in session.store.best(dse_target.key, schedule_versions(), session.runner.thread_pool).items():
            if pair in records and (not records[pair].ok or record.median_ms < records[pair].median_ms):
                records[pair] = record

    options: list[list[Option]] = []
    for vertex in graph.vertices:
        if vertex.is_tunable:
            options.append(_tunable_options(vertex, dse_target, records, names[vertex.workload.key()]))
        elif vertex.kind == "join":
            # a join meets in one of its producers' layouts, or the model's own, that holds every operand
            layouts = {_produced(o, vertex.input_shape(i)) for i in vertex.inputs for o in options[i]}
            options.append([Option(layout, 0.0, layout, layout)
                            for layout in sorted(layouts | {native_layout(vertex.shape)}) if vertex.holds(layout)])
        else:
            layout = native_layout(vertex.shape)
            options.append([Option(layout or "native", 0.0, layout, "")])

    def folded(vertex: Vertex, source: int, produced: str, wanted: str) -> bool:
        """Whether lowering writes the conversion in the kernel writing the activation (ops.py's rule)."""
        return conversion_folds(*vertex.arrival(source), produced, wanted)

    conversions: dict[tuple[tuple[int, ...], str, str], Conversion] = {}
    for vertex in graph.vertices:
        for source in vertex.inputs:
            shape = vertex.input_shape(source)
            for produced in {_produced(o, shape) for o in options[source]}:
                for wanted in {o.input_layout for o in options[vertex.id]}:
                    if produced != wanted and not folded(vertex, source, produced, wanted) and holds(produced, shape) \
                            and holds(wanted, shape):
                        conversion = Conversion(tuple(shape), produced, wanted)
                        conversions[(conversion.shape, produced, wanted)] = conversion
    conversion_list = list(conversions.values())
    conversion_records = session.measure(conversion_list)
    conversion_ms = {(c.shape, c.source, c.destination): (r.median_ms if r.ok else INFEASIBLE)
                     for c, r in zip(conversion_list, conversion_records)}

    def conversion_cost(vertex: Vertex, source: int, shape: tuple[int, ...], produced: str, wanted: str) -> float:
        if not (holds(produced, shape) and holds(wanted, shape)):
            return INFEASIBLE
        if produced == wanted or folded(vertex, source, produced, wanted):
            return 0.0
        return conversion_ms.get((shape, produced, wanted), INFEASIBLE)

    def edge(source: int, vertex: Vertex) -> Edge:
        """Costs of bringing ``source``'s output to ``vertex`` for every pair of options; a pair whose
        layouts cannot hold the activation is infeasible (no conversion was measured for it)."""
        shape = tuple(vertex.input_shape(source))
        return Edge(source, vertex.id, [[conversion_cost(vertex, source, shape, _produced(p, shape), q.input_layout)
                                         for q in options[vertex.id]] for p in options[source]])

    edges = [edge(source, vertex) for vertex in graph.vertices for source in vertex.inputs]
    nodes = [SpaceNode(vertex.name, vertex.kind, options[vertex.id], list(vertex.inputs), _activation_bytes(vertex))
             for vertex in graph.vertices]
    return DesignSpace(model.name, dse_target.key, nodes, edges,
                       {"model_fingerprint": model.fingerprint, "target": dse_target.to_dict(),
                        "kernels_measured": len(candidates), "conversions_measured": len(conversion_list)})


def plan_from_assignment(space: DesignSpace, assignment: Sequence[int], model: Model, target: DseTarget,
                         **provenance: Any) -> Plan:
    """The plan a searcher's assignment stands for, with its predicted latency and peak memory."""
    choices, joins = {}, {}
    for node, choice in zip(space.nodes, assignment):
        option = node.options[choice]
        if node.is_tunable:
            get_strategy(option.name)  # an unknown name fails here, not at build time
            choices[node.name] = NodeChoice(option.name, option.decisions)
        elif node.kind == "join":
            joins[node.name] = option.name
    plan = Plan.create(model, target, choices, joins, **provenance)
    plan.metrics.update(predicted_ms=space.cost(assignment), peak_memory_bytes=space.peak_memory(assignment))
    return plan
