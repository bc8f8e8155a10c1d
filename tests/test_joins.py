"""Joins (residual adds, concatenations) on every lane count: a join meets only in a layout that holds each
operand and its result. The space offers no other and prices every pair of layouts that cannot hold an
edge's activation as infeasible; a plan naming another is refused before any work; lowering without a
join layout picks one that holds them all, so it never meets a layout it cannot convert to."""

import pytest

from tvm_dse.pricing import measure_space, plan_from_assignment
from tvm_dse.layouts import holds, native_layout
from tvm_dse.lower import build_plan, lower_plan
from tvm_dse.measure import LocalRunner, MeasurementSession, MeasureSettings
from tvm_dse.plan import Plan, PlanError
from tvm_dse.search import ExactSearcher
from tvm_dse.space import INFEASIBLE
from tvm_dse.strategies import applicable_strategies, get_strategy
from tvm_dse.testing import onnxruntime_outputs, relative_error
from tvm_dse.testing.matrix import FAMILIES, HOST_FAMILY, family

QUICK = MeasureSettings(number=2, repeat=2)
# the families this machine measures on (its own CPU and the x86 families whose instructions it has), one
# per lane count
MEASURABLE = list({f.dse_target.fp32_lanes: f.name for f in (*FAMILIES, HOST_FAMILY) if f.runs_here}.values())


def test_the_graph_knows_the_shape_of_each_operand_of_a_concatenation(matrix_models):
    model, graph = matrix_models("concat_mixed")
    (join,) = graph.joins
    widths = sorted(join.input_shape(source)[1] for source in join.inputs)
    assert widths == [3, 5, 6, 8, 12, 20] and join.shape[1] == 54
    assert not join.holds("NCHW2c") and not join.holds("NCHW3c") and join.holds("NCHW") and join.holds("NHWC")
    assert all(join.input_shape(s)[2:] == join.shape[2:] for s in join.inputs)
    restored = type(graph).from_dict(graph.to_dict())
    assert restored.joins[0].input_shapes == join.input_shapes


def test_a_block_that_divides_the_result_but_not_an_operand_does_not_hold_the_join(matrix_models):
    """16 + 8 + 8 channels: a 16-lane block holds the 32-channel result and the wide branch, not the narrow
    ones; 4- and 8-lane blocks hold them all."""
    model, graph = matrix_models("concat_8")
    (join,) = graph.joins
    assert sorted(join.input_shape(s)[1] for s in join.inputs) == [8, 8, 16] and join.shape[1] == 32
    assert holds("NCHW16c", join.shape) and not join.holds("NCHW16c")
    assert join.holds("NCHW8c") and join.holds("NCHW4c") and join.holds("NHWC") and join.holds("NCHW")


@pytest.mark.parametrize("family_name", [f.name for f in FAMILIES])
def test_lowering_picks_a_join_layout_that_holds_every_operand(matrix_models, family_name):
    """A uniform spatial-pack plan names no join layout. The wide branch writes its target's channel blocks;
    on a 16-lane target those cannot hold the narrow branches (lowering once took them and failed with "8
    channels do not split into blocks of 16"), so the join meets in another of its operands' layouts."""
    target = family(family_name).dse_target
    model, graph = matrix_models("concat_8")
    plan = Plan.uniform(model, graph, target, "spatial_pack_nchwc")
    assert not plan.join_layouts
    wide = graph.node("wide")
    assert get_strategy(plan.nodes["wide"].strategy).layouts(wide.workload, target).output == \
        f"NCHW{target.fp32_lanes}c"
    module = lower_plan(model, plan, target, graph)
    assert module["main"] is not None


def test_a_plan_whose_join_layout_cannot_hold_an_operand_is_refused(matrix_models):
    model, graph = matrix_models("concat_8")
    (join,) = graph.joins
    plan = Plan.uniform(model, graph, "host", "direct_nchw")
    plan.join_layouts[join.name] = "NCHW16c"
    with pytest.raises(PlanError, match=rf"join '{join.name}' cannot meet in NCHW16c.*\[1, 8, 19, 19\]"):
        plan.validate(model, graph, "host")
    with pytest.raises(PlanError, match="cannot meet in NCHW16c"):
        build_plan(model, plan, "host", graph)


@pytest.mark.parametrize("family_name", MEASURABLE)
def test_the_space_offers_joins_only_layouts_that_hold_and_its_best_plan_matches_onnxruntime(matrix_models,
                                                                                             family_name):
    target = family(family_name).dse_target
    model, graph = matrix_models("concat_8")
    # the strategies writing blocked, NCHW and NHWC outputs, so every join sees each kind of producer layout
    names = ("spatial_pack_nchwc", "direct_nchw", "direct_nhwc")
    strategies = {n.workload.key(): [s.name for s in applicable_strategies(n.workload, target)
                                     if s.name in names or n.kind == "dense"] for n in graph.nodes}
    space = measure_space(model, graph, MeasurementSession(target, LocalRunner(QUICK), show_progress=False),
                          strategies=strategies)
    (join,) = graph.joins
    offered = {option.name for option in space.nodes[join.id].options}
    produced = {option.output_layout for source in join.inputs for option in space.nodes[source].options}
    assert offered == {layout for layout in produced | {native_layout(join.shape)} if join.holds(layout)}
    assert (f"NCHW{target.fp32_lanes}c" in offered) == join.holds(f"NCHW{target.fp32_lanes}c")
    for edge in space.edges:
        shape = graph.vertices[edge.target].input_shape(edge.source)
        for p, row in zip(space.nodes[edge.source].options, edge.cost):
            for q, cost in zip(space.nodes[edge.target].options, row):
                source_layout = p.output_layout or native_layout(shape)
                if not (holds(source_layout, shape) and holds(q.input_layout, shape)):
                    assert cost == INFEASIBLE, (edge.source, edge.target, p.name, q.name)
    result = ExactSearcher().search(space)
    plan = plan_from_assignment(space, result.assignment, model, target)
    assert join.holds(plan.join_layouts[join.name])
    feed = model.random_feed(1)
    (output,) = build_plan(model, plan, target, graph).run(feed)
    assert relative_error(output, onnxruntime_outputs(model.onnx_model, feed)[0]) <= 1e-4


def test_a_residual_add_of_producers_in_different_layouts_matches_onnxruntime_in_each(matrix_models):
    """The dense 3x3 convolution writes channel blocks, the depthwise one NHWC: the add meets in either, or
    in NCHW, converting the other operand, and the result is the same."""
    host = HOST_FAMILY.dse_target
    model, graph = matrix_models("residual_mixed")
    plan = Plan.uniform(model, graph, host, "direct_nchw")
    plan.nodes["dense"].strategy, plan.nodes["depthwise"].strategy = "spatial_pack_nchwc", "depthwise_nhwc"
    add = next(j for j in graph.joins if {graph.vertices[i].name for i in j.inputs} == {"dense", "depthwise"})
    feed = model.random_feed(2)
    (reference,) = onnxruntime_outputs(model.onnx_model, feed)
    for layout in (f"NCHW{host.fp32_lanes}c", "NHWC", "NCHW"):
        plan.join_layouts[add.name] = layout
        (output,) = build_plan(model, plan, host, graph).run(feed)
        assert relative_error(output, reference) <= 1e-4, layout
