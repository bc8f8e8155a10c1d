"""Kernels writing into what their consumer makes of their output: every fp32 strategy's scheduled kernel
writes a slice of a larger tensor and a converted layout exactly; lowered models lose their
concatenations, and the conversions the pricing rule (ops.conversion_folds) prices free and no others, and
still match onnxruntime."""

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir, te
from tvm.s_tir.schedule import ScheduleError

from tvm_dse import build_graph, load_model
from tvm_dse.layouts import Layout, transform
from tvm_dse.lower import build_plan, lower_plan
from tvm_dse.ops import conversion_folds
from tvm_dse.output_fusion import concat_axis, rearrangement, write_converted, write_into_slice
from tvm_dse.plan import NodeChoice, Plan
from tvm_dse.quant import ActivationQuant
from tvm_dse.schedule_blocks import child_blocks, schedule_generic
from tvm_dse.strategies import build_kernel, get_strategy
from tvm_dse.strategies.base import Decider, Epilogue
from tvm_dse.strategies.kernel import kernel_prim_func
from tvm_dse.target import parse_target
from tvm_dse.testing import onnxruntime_outputs, relative_error
from tvm_dse.workload import Workload

HOST = parse_target("host")
EPILOGUE = Epilogue(bias=True, clip=Epilogue.RELU)
# (strategy, workload): row and flat spatial-pack tilings, Winograd, NHWC, NCHW and depthwise kernels
CASES = [
    ("spatial_pack_nchwc", Workload("conv2d", 1, 16, 14, 14, 32, (3, 3), (1, 1), (1, 1, 1, 1))),
    ("spatial_pack_nchwc", Workload("conv2d", 1, 16, 7, 7, 32, (1, 1))),
    ("winograd_f4_nchwc", Workload("conv2d", 1, 16, 12, 12, 16, (3, 3), (1, 1), (1, 1, 1, 1))),
    ("direct_nhwc", Workload("conv2d", 1, 3, 15, 15, 16, (3, 3), (2, 2), (1, 1, 1, 1))),
    ("gemm1x1_nhwc", Workload("conv2d", 1, 24, 9, 9, 16, (1, 1))),
    ("direct_nchw", Workload("conv2d", 1, 8, 10, 10, 16, (3, 3), (1, 1), (1, 1, 1, 1))),
    ("im2col_nchw", Workload("conv2d", 1, 8, 10, 10, 16, (3, 3), (1, 1), (1, 1, 1, 1))),
    ("depthwise_nchwc", Workload("conv2d", 1, 16, 11, 11, 16, (3, 3), (2, 2), (1, 1, 1, 1), groups=16)),
]
CONVERTED = {"NHWC": "NCHW8c", "NCHW": "NCHW8c"}  # blocked layouts go to NHWC


def _scheduled(name: str, workload: Workload, decisions: dict | None = None) -> tvm.tirx.PrimFunc:
    strategy = get_strategy(name)
    sch = s_tir.Schedule(kernel_prim_func(strategy, workload, HOST, EPILOGUE))
    strategy.schedule(sch, workload, HOST, Decider(sch, decisions or {}))
    return sch.mod["main"]


def _inputs(name: str, workload: Workload, decisions: dict | None = None):
    rng = np.random.default_rng(1)
    built = build_kernel(name, workload, HOST, epilogue=EPILOGUE, decisions=decisions)
    data = rng.standard_normal((1, workload.in_channels, workload.height, workload.width))
    weight = rng.standard_normal((workload.out_channels, workload.in_channels // workload.groups, *workload.kernel))
    arguments = built.arguments(data, weight, rng.standard_normal(workload.out_channels))
    built.kernel["main"](*arguments)
    return arguments[:-1], arguments[-1].numpy()


@pytest.mark.parametrize("name, workload", CASES, ids=[f"{n}-{w.height}" for n, w in CASES])
def test_kernels_write_their_output_into_a_slice_of_a_larger_tensor(name, workload):
    inputs, expected = _inputs(name, workload)
    layout = Layout.parse(get_strategy(name).layouts(workload, HOST).output)
    axis = 3 if layout.arrangement == "NHWC" else 1
    whole_shape = list(expected.shape)
    whole_shape[axis] += 3
    func = write_into_slice(_scheduled(name, workload), tuple(whole_shape), axis, 2)
    whole = tvm.runtime.tensor(np.full(whole_shape, -7.0, "float32"))
    tvm.compile(func, target=HOST.tvm_target)["main"](*inputs, whole)
    result = np.moveaxis(whole.numpy(), axis, 0)
    np.testing.assert_allclose(result[2:2 + expected.shape[axis]], np.moveaxis(expected, axis, 0), rtol=1e-5, atol=1e-5)
    assert (result[:2] == -7).all() and (result[2 + expected.shape[axis]:] == -7).all()


@pytest.mark.parametrize("name, workload", CASES, ids=[f"{n}-{w.height}" for n, w in CASES])
def test_kernels_write_their_output_in_a_converted_layout(name, workload):
    inputs, expected = _inputs(name, workload)
    source = Layout.parse(get_strategy(name).layouts(workload, HOST).output)
    destination = Layout.parse(CONVERTED.get(source.name, "NHWC"))
    data = te.placeholder(expected.shape, "float32", name="data")
    conversion = schedule_generic(te.create_prim_func([data, transform(data, source, destination)]))
    func = write_converted(_scheduled(name, workload), conversion)
    converted = tvm.runtime.tensor(np.zeros(destination.shape(source.to_nchw(expected).shape), "float32"))
    tvm.compile(func, target=HOST.tvm_target)["main"](*inputs, converted)
    np.testing.assert_allclose(destination.to_nchw(converted.numpy()), source.to_nchw(expected), rtol=1e-5, atol=1e-5)


def _innermost_loops_storing_into(func: tvm.tirx.PrimFunc, buffer) -> list:
    """The innermost loop (a For) of each block of ``func`` that stores into ``buffer``."""
    sch = s_tir.Schedule(func)
    storing = {sch.get(inner).name_hint for block in child_blocks(sch) for loop in sch.get_loops(block)
               for inner in sch.get_child_blocks(loop) if any(w.source.same_as(buffer) for w in sch.get(inner).writes)}
    return [sch.get(sch.get_loops(sch.get_sblock(name))[-1]) for name in sorted(storing)]


def test_a_vector_of_outputs_spanning_blocks_of_the_converted_layout_is_stored_a_block_at_a_time():
    # MobileNetV2's first layer: a tile of 32 NHWC channels stored into NCHW16c lands in two blocks of 16;
    # stored as one vector it was a scatter, 2-3x as slow as the kernel itself
    workload = Workload("conv2d", 1, 3, 15, 15, 32, (3, 3), (2, 2), (1, 1, 1, 1))
    decisions = {"k": [1, 32], "x": [1, 8], "y": [8, 1]}
    inputs, expected = _inputs("direct_nhwc", workload, decisions)
    data = te.placeholder(expected.shape, "float32", name="data")
    conversion = schedule_generic(te.create_prim_func([data, transform(data, "NHWC", "NCHW16c")]))
    kernel = _scheduled("direct_nhwc", workload, decisions)
    assert [(loop.kind, int(loop.extent)) for loop in _innermost_loops_storing_into(kernel, kernel.params[-1])] \
        == [(tvm.tirx.ForKind.VECTORIZED, 32)]
    func = write_converted(kernel, conversion)
    assert [(loop.kind, int(loop.extent)) for loop in _innermost_loops_storing_into(func, func.params[-1])] \
        == [(tvm.tirx.ForKind.VECTORIZED, 16)]
    converted = tvm.runtime.tensor(np.zeros((1, 2, 8, 8, 16), "float32"))
    tvm.compile(func, target=HOST.tvm_target)["main"](*inputs, converted)
    np.testing.assert_array_equal(Layout.parse("NCHW16c").to_nchw(converted.numpy()),
                                  Layout.parse("NHWC").to_nchw(expected))


def test_what_cannot_take_a_conversion_is_refused():
    data = te.placeholder((1, 2, 9, 9, 8), "float32", name="data")
    pooled = te.placeholder((1, 2, 4, 4, 8), "float32", name="pooled")
    conversion = te.create_prim_func([pooled, transform(pooled, "NCHW8c", "NHWC")])
    # a max pool accumulates in its output: no stage stores each element once to place it elsewhere
    ry, rx = te.reduce_axis((0, 2), "ry"), te.reduce_axis((0, 2), "rx")
    pool_func = te.create_prim_func([data, te.compute(
        (1, 2, 4, 4, 8), lambda n, c, y, x, v: te.max(data[n, c, 2 * y + ry, 2 * x + rx, v], axis=[ry, rx]))])
    with pytest.raises(ScheduleError):
        write_converted(pool_func, conversion)
    quant = ActivationQuant.from_range(0, 1)
    quantizing = te.create_prim_func([pooled, transform(pooled, "NCHW8c", "NHWC_u8", quant=quant)])
    assert rearrangement(quantizing) is None and rearrangement(conversion) is not None


def test_concat_axis_is_the_one_the_operands_add_up_along():
    assert concat_axis([(1, 2, 5, 5, 8), (1, 3, 5, 5, 8)], (1, 5, 5, 5, 8)) == 1
    assert concat_axis([(1, 5, 5, 16), (1, 5, 5, 8)], (1, 5, 5, 24)) == 3
    assert concat_axis([(1, 2, 5, 5), (1, 3, 4, 5)], (1, 5, 5, 5)) is None


@pytest.fixture(scope="module")
def squeezenet(zoo):
    model = load_model(zoo("squeezenet1_1"))
    return model, build_graph(model)


def _kernel_names(module: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv, func in module.functions.items() if isinstance(func, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize("family", ["spatial_pack_nchwc", "direct_nhwc"])
def test_fire_modules_concatenate_without_a_copy(squeezenet, family):
    model, graph = squeezenet
    plan = Plan.uniform(model, graph, HOST, family)
    module = lower_plan(model, plan, HOST, graph)
    names = _kernel_names(module)
    assert not [n for n in names if n.startswith("concatenate")], names
    # each two-operand concatenation: the first kernel allocates it, the second writes its slice in place
    concats = [j for j in graph.joins if j.op == "relax.concat"]
    assert len(concats) == 8 and module["main"].script().count("R.call_tir_inplace(") == len(concats)
    feed = model.random_feed(seed=3)
    (output,) = build_plan(model, plan, HOST, graph).run(feed)
    (reference,) = onnxruntime_outputs(model.onnx_model, feed)
    assert relative_error(output, reference) <= 1e-4


def _mixed_plan(model, graph, blocked, other, nodes):
    """``blocked`` everywhere, ``other`` on the tunable nodes whose name contains one of ``nodes``."""
    plan = Plan.uniform(model, graph, HOST, blocked)
    for node in graph.nodes:
        if any(part in node.name for part in nodes):
            plan.nodes[node.name] = NodeChoice(other)
    return plan


@pytest.mark.parametrize("name, other, nodes, expected", [
    # each squeeze read by two expand layers: 8 passes, none written converted
    ("squeezenet1_1", "gemm1x1_nhwc", ("squeeze",), (0, True)),
    # a block's conv1 read by its conv2 alone: written converted (8 blocks); a block's output read twice
    ("resnet18", "direct_nhwc", (".conv1",), (8, True)),
])
def test_conversions_are_written_by_their_writer_exactly_where_pricing_prices_them_free(zoo, name, other, nodes,
                                                                                         expected):
    model = load_model(zoo(name))
    graph = build_graph(model)
    plan = _mixed_plan(model, graph, "spatial_pack_nchwc", other, nodes)
    names = _kernel_names(lower_plan(model, plan, HOST, graph))
    layouts = {node.id: get_strategy(plan.nodes[node.name].strategy).layouts(node.workload, HOST)
               for node in graph.nodes}
    folded = passes = 0
    for consumer in graph.nodes:
        for source in consumer.inputs:
            if source not in layouts or layouts[source].output == layouts[consumer.id].data:
                continue
            produced, wanted = layouts[source].output, layouts[consumer.id].data
            if conversion_folds(*consumer.arrival(source), produced, wanted):
                folded += 1
                strategy = plan.nodes[graph.vertices[source].name].strategy
                assert any(re.search(rf"dse_\d+_{strategy}.*_layout_{produced}_to_{wanted}\d*$", n) for n in names)
            else:
                passes += 1
                assert f"layout_{produced}_to_{wanted}" in names, (produced, wanted, names)
    assert (folded, passes > 0) == expected
    feed = model.random_feed(seed=4)
    (output,) = build_plan(model, plan, HOST, graph).run(feed)
    (reference,) = onnxruntime_outputs(model.onnx_model, feed)
    assert relative_error(output, reference) <= 1e-4
