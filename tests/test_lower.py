"""Plans lowered to modules: conversions only where layouts change, on every lane count; plan files; aarch64
export; standalone layout and precision conversions. Uniform and random plans on every model and target
family: tests/test_matrix_*.py; joins: tests/test_joins.py."""

import re
from pathlib import Path

import numpy as np
import pytest
from tvm import te

from tvm_dse import build_graph, load_model
from tvm_dse.layouts import Layout, transform
from tvm_dse.lower import build_layout_transform, build_plan, followed_vertex, follower_name, lower_plan
from tvm_dse.plan import NodeChoice, Plan, PlanError
from tvm_dse.quant import ActivationQuant
from tvm_dse.strategies import get_strategy
from tvm_dse.strategies.spatial_pack import pixel_tiling
from tvm_dse.target import parse_target
from tvm_dse.testing import MODEL_NAMES, onnxruntime_outputs, relative_error
from tvm_dse.testing.matrix import FAMILIES

HOST = parse_target("host")
FP32_BOUND = 1e-4


@pytest.fixture(scope="module")
def models(zoo):
    loaded = {}
    for name in MODEL_NAMES:
        model = load_model(zoo(name))
        loaded[name] = (model, build_graph(model))
    return loaded


def _check(model, graph, plan):
    built = build_plan(model, plan, HOST, graph)
    feed = model.random_feed(seed=2)
    (output,) = built.run(feed)
    (reference,) = onnxruntime_outputs(model.onnx_model, feed)
    error = relative_error(output, reference)
    assert error <= FP32_BOUND, f"{model.name}: {dict((n, c.strategy) for n, c in plan.nodes.items())} error {error}"


def _uniform(model, graph, family):
    return Plan.uniform(model, graph, HOST, family)


def _families_filling_blocks(graph):
    """Target families whose fp32 channel blocks divide every convolution's output channels, so a uniform
    spatial-pack plan is blocked from the first convolution to the last (4 and 8 lanes for ResNet-18 small)."""
    families = [f for f in FAMILIES if all(n.workload.out_channels % f.dse_target.fp32_lanes == 0
                                           for n in graph.nodes if n.kind == "conv2d")]
    assert families
    return families


def test_conversions_only_where_layouts_change(models):
    model, graph = models["resnet18"]
    stem = graph.nodes[0]
    for target_family in _families_filling_blocks(graph):
        target = target_family.dse_target
        blocked = lower_plan(model, Plan.uniform(model, graph, target, "spatial_pack_nchwc"), target, graph)
        names = [gv.name_hint for gv in blocked.functions]
        stem_input = get_strategy("spatial_pack_nchwc").layouts(stem.workload, target).data
        # into the stem's blocked layout after the input; back to NCHW before the classifier's reshape, written
        # by the spatial mean that produces it (tvm_dse.output_fusion)
        assert [n for n in names if n.startswith("layout_")] == [f"layout_NCHW_to_{stem_input}"], target_family.name
        blocked_layout = f"NCHW{target.fp32_lanes}c"
        last_join = [v for v in graph.vertices if v.kind == "join"][-1]
        assert [n for n in names if "layout_" in n and not n.startswith("layout_")] == \
            [f"{follower_name(last_join.id, blocked_layout, 'mean')}_layout_{blocked_layout}_to_NCHW"], target_family.name
    plain = lower_plan(model, _uniform(model, graph, "direct_nchw"), HOST, graph)
    assert not [gv for gv in plain.functions if gv.name_hint.startswith("layout_")]


def test_epilogues_are_fused_into_the_convolutions(models):
    model, graph = models["resnet18"]
    module = lower_plan(model, _uniform(model, graph, "spatial_pack_nchwc"), HOST, graph)
    names = [gv.name_hint for gv in module.functions]
    convolutions = [n for n in names if "dse_" in n]
    assert convolutions and all(n.startswith("fused_") for n in convolutions), convolutions
    assert any("add" in n and "relu" in n for n in convolutions)  # residual add and relu in one kernel
    assert not [n for n in names if n.startswith("weight_")]  # weight transforms were folded into constants


def test_pools_in_blocked_layouts_are_vectorized_over_the_channel_block(models):
    model, graph = models["resnet18"]
    for target_family in _families_filling_blocks(graph):
        target = target_family.dse_target
        module = lower_plan(model, Plan.uniform(model, graph, target, "spatial_pack_nchwc"), target, graph)
        reductions = {gv.name_hint: func.script() for gv, func in module.functions.items()
                      if "max_pool2d" in gv.name_hint or "mean" in gv.name_hint}
        # each named after the vertex whose choice gives it its layout (so profiles price it with that
        # vertex's options): the stem's max pool after the stem, the classifier's mean after the last join
        stem, last_join = graph.nodes[0], [v for v in graph.vertices if v.kind == "join"][-1]
        stem_output = get_strategy("spatial_pack_nchwc").layouts(stem.workload, target).output
        assert sorted(map(followed_vertex, reductions)) == \
            sorted([(stem.id, stem_output), (last_join.id, f"NCHW{target.fp32_lanes}c")]), list(reductions)
        for name, script in reductions.items():
            # the window loops run outside the lanes of the channel block, which reduce as one vector
            assert re.search(rf'in T\.vectorized\(T\.int64\({target.fp32_lanes}\)\):\s+'
                             r'with T\.sblock\("(pool_max|\w+_red)"\)', script), (target_family.name, name, script)


def test_plan_files_round_trip_and_mismatches_are_named(models, tmp_path):
    model, graph = models["squeezenet1_1"]
    plan = _uniform(model, graph, "spatial_pack_nchwc")
    plan.metrics["measured_ms"] = 1.5
    path = plan.save(tmp_path / "plan.json")
    loaded = Plan.load(path)
    assert loaded.to_dict() == plan.to_dict()
    assert loaded.validate(model, graph, HOST) == HOST
    other, other_graph = models["resnet18"]
    with pytest.raises(PlanError, match=r"for model 'squeezenet1_1_small'.*not for 'resnet18_small'"):
        loaded.validate(other, other_graph, HOST)
    with pytest.raises(PlanError, match=r"not llvm_aarch64_cortex-a72"):
        loaded.validate(model, graph, "rpi4")
    first = graph.nodes[0].name
    loaded.nodes[first] = NodeChoice("winograd_f9")
    with pytest.raises(PlanError, match=rf"node '{first}': unknown strategy 'winograd_f9'"):
        loaded.validate(model, graph, HOST)
    loaded.nodes[first] = NodeChoice("dense_packed")
    with pytest.raises(PlanError, match="does not apply"):
        build_plan(model, loaded, HOST, graph)
    data = plan.to_dict()
    data["schema_version"] = 99
    with pytest.raises(PlanError, match="schema version 99"):
        Plan.from_dict(data)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanError, match="not a JSON plan"):
        Plan.load(tmp_path / "bad.json")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "schedules").glob("*/*.json")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_plans_fit_their_zoo_model_and_target(path):
    plan = Plan.load(path)
    assert path.parent.name == plan.target_key
    model = load_model(f"zoo:{plan.model_name}")
    graph = build_graph(model)
    assert plan.validate(model, graph, plan.target).key == plan.target_key
    # every kernel takes the plan's decisions under the strategies' current schedules (as tvm-dse build does)
    assert lower_plan(model, plan, plan.target, graph)["main"] is not None


def test_decisions_in_a_plan_are_applied(models):
    model, graph = models["vgg16"]
    plan = _uniform(model, graph, "spatial_pack_nchwc")
    # a node whose tiles run along its rows on this target, each row of ``width`` computed columns
    node = next(v for v in graph.nodes if plan.nodes[v.name].strategy == "spatial_pack_nchwc"
                and not pixel_tiling(v.workload, HOST, HOST.fp32_lanes).flat)
    width = pixel_tiling(node.workload, HOST, HOST.fp32_lanes).extent
    blocks = node.workload.out_channels // HOST.fp32_lanes
    plan.nodes[node.name] = NodeChoice("spatial_pack_nchwc", {"ow": [width, 1], "oh": [node.workload.out_height, 1],
                                                              "oc_blocks": [blocks, 1]})
    _check(model, graph, plan)
    plan.nodes[node.name] = NodeChoice("spatial_pack_nchwc", {"ow": [width + 1, 1]})
    with pytest.raises(ValueError, match="does not split a loop"):
        build_plan(model, plan, HOST, graph)


def test_aarch64_export_is_an_aarch64_elf(models, tmp_path):
    model, graph = models["mobilenet_v2"]
    plan = Plan.uniform(model, graph, "rpi4", "spatial_pack_nchwc")
    path = build_plan(model, plan, "rpi4", graph).export(tmp_path / "mobilenet.so")
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2  # 64-bit
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


@pytest.mark.parametrize("source, destination", [("NCHW", "NCHW8c"), ("NCHW8c", "NHWC"), ("NHWC", "NCHW"),
                                                 ("NCHW4c", "NCHW8c"), ("NCHW16c", "NCHW")])
def test_layout_conversions_build_and_run_on_their_own(source, destination):
    shape = (1, 32, 9, 7)
    data = np.random.default_rng(0).standard_normal(shape).astype("float32")
    built = build_layout_transform(shape, source, destination, HOST)
    converted = built.run(Layout.parse(source).from_nchw(data))
    np.testing.assert_array_equal(Layout.parse(destination).to_nchw(converted), data)
    assert built.time(Layout.parse(source).from_nchw(data), repeat=3).median_ms > 0


@pytest.mark.parametrize("source, destination", [("NCHW", "NCHW8c_u8"), ("NCHW8c", "NCHW8c_u8"),
                                                 ("NHWC", "NCHW_u8"), ("NCHW8c_u8", "NHWC"),
                                                 ("NCHW8c_u8", "NCHW8c")])
def test_precision_conversions_quantize_and_dequantize(source, destination):
    shape = (1, 32, 9, 7)
    data = np.random.default_rng(0).standard_normal(shape).astype("float32")
    quant = ActivationQuant.from_range(data.min(), data.max())
    codes = quant.quantize(data)
    source_layout, destination_layout = Layout.parse(source), Layout.parse(destination)
    built = build_layout_transform(shape, source, destination, HOST, quant=quant)
    converted = destination_layout.to_nchw(built.run(source_layout.from_nchw(
        codes if source_layout.dtype == "uint8" else data)))
    if destination_layout.dtype == "uint8":  # the numpy twin of the scheme, to the code
        assert converted.dtype == np.uint8
        np.testing.assert_array_equal(converted, codes)
    else:
        np.testing.assert_array_equal(converted, quant.dequantize(codes))
    with pytest.raises(ValueError, match="converting NCHW to NCHW_u8 needs the activation's quantization"):
        transform(te.placeholder(shape, "float32"), "NCHW", "NCHW_u8")
