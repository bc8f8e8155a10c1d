"""Tests for the deterministic ONNX model zoo in tvm_dse.zoo."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_dse.zoo import MODEL_NAMES, REFERENCE_GFLOP, build_model, conv_flops

# Counted from the published architectures: ResNet-18 = stem + 8 blocks x 2 + 3
# downsamples; ResNet-50 = stem + 16 bottlenecks x 3 + 4 downsamples; MobileNetV1 =
# stem + 13 depthwise/pointwise pairs; MobileNetV2 = stem + 2 (first block, no
# expansion) + 16 x 3 + final 1x1; SqueezeNet 1.1 = stem + 8 fires x 3 + classifier.
EXPECTED_OP_COUNTS = {
    "resnet18": {"Conv": 20, "Gemm": 1, "BatchNormalization": 20, "Add": 8},
    "resnet50": {"Conv": 53, "Gemm": 1, "BatchNormalization": 53, "Add": 16},
    "mobilenet_v1": {"Conv": 27, "Gemm": 1, "BatchNormalization": 27, "Add": 0},
    "mobilenet_v2": {"Conv": 52, "Gemm": 1, "BatchNormalization": 52, "Add": 10},
    "vgg16": {"Conv": 13, "Gemm": 3, "BatchNormalization": 0, "Add": 0},
    "squeezenet1_1": {"Conv": 26, "Gemm": 0, "BatchNormalization": 0, "Add": 0},
}
SMALL_WEIGHT_LIMIT_BYTES = 2 * 1024 * 1024
FLOPS_TOLERANCE = 0.015


def input_shape(model: onnx.ModelProto) -> list[int]:
    return [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim]


def run_logits(model: onnx.ModelProto) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(123).standard_normal(input_shape(model), dtype=np.float32)
    (logits,) = session.run(["logits"], {"input": image})
    return logits


def assert_well_scaled(logits: np.ndarray) -> None:
    assert np.all(np.isfinite(logits))
    assert 0.01 < float(logits.std()) < 1e4


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


@pytest.fixture(scope="module", params=MODEL_NAMES)
def full_model(request: pytest.FixtureRequest) -> tuple[str, onnx.ModelProto]:
    return request.param, build_model(request.param)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_small_model_runs_and_is_small(name: str) -> None:
    model = build_model(name, small=True)
    onnx.checker.check_model(model, full_check=True)
    size = 32 if name == "vgg16" else 64
    assert input_shape(model) == [1, 3, size, size]
    assert sum(len(tensor.raw_data) for tensor in model.graph.initializer) < SMALL_WEIGHT_LIMIT_BYTES
    logits = run_logits(model)
    assert logits.shape == (1, 10)
    assert_well_scaled(logits)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_small_model_follows_graph_conventions(name: str) -> None:
    model = build_model(name, small=True)
    graph = model.graph
    assert (model.ir_version, [(o.domain, o.version) for o in model.opset_import]) == (8, [("", 17)])
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.node[-1].output[0] == "logits"
    names = [node.name for node in graph.node]
    assert all(names) and len(set(names)) == len(names)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    consumers = {input_name: node for node in graph.node for input_name in node.input}
    for node in graph.node:
        for input_name in node.input:
            if input_name in shapes:
                assert input_name.startswith(f"{node.name}."), (node.name, input_name)
        if node.op_type == "Conv":
            # Biased exactly when no BatchNormalization follows, as in torchvision.
            followed_by_bn = consumers[node.output[0]].op_type == "BatchNormalization"
            assert (len(node.input) == 3) != followed_by_bn, node.name
            group = helper.get_attribute_value(next(a for a in node.attribute if a.name == "group"))
            if group > 1:  # depthwise: one input channel per group, as many groups as channels
                assert shapes[node.input[1]][:2] == (group, 1), node.name


def test_mobilenet_v2_relu6_is_clip_with_initializer_bounds() -> None:
    model = build_model("mobilenet_v2", small=True)
    values = weights(model)
    clips = [node for node in model.graph.node if node.op_type == "Clip"]
    assert len(clips) == 35  # stem + 17 depthwise + 16 expansions + final 1x1
    for clip in clips:
        assert (float(values[clip.input[1]]), float(values[clip.input[2]])) == (0.0, 6.0)


def test_full_model_flops_match_reference(full_model: tuple[str, onnx.ModelProto]) -> None:
    name, model = full_model
    gflop = conv_flops(model) / 1e9
    assert gflop == pytest.approx(REFERENCE_GFLOP[name], rel=FLOPS_TOLERANCE)


def test_full_model_op_counts(full_model: tuple[str, onnx.ModelProto]) -> None:
    name, model = full_model
    counts = Counter(node.op_type for node in model.graph.node)
    assert {op: counts[op] for op in EXPECTED_OP_COUNTS[name]} == EXPECTED_OP_COUNTS[name]
    assert counts["MatMul"] == 0


def test_full_model_output(full_model: tuple[str, onnx.ModelProto]) -> None:
    name, model = full_model
    assert input_shape(model) == [1, 3, 224, 224]
    if name == "vgg16":
        # Too heavy to run by default; strict inference fails if the declared output shape is wrong.
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        dims = [dim.dim_value for dim in inferred.graph.output[0].type.tensor_type.shape.dim]
        assert dims == [1, 1000]
        return
    logits = run_logits(model)
    assert logits.shape == (1, 1000)
    assert_well_scaled(logits)


def test_small_variant_has_full_topology(full_model: tuple[str, onnx.ModelProto]) -> None:
    name, model = full_model

    def topology(graph: onnx.GraphProto) -> list[tuple[str, str, dict[str, object]]]:
        nodes = []
        for node in graph.node:
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            # Channel counts differ; only whether a conv is grouped must match.
            attributes["group"] = attributes.get("group", 1) > 1
            nodes.append((node.name, node.op_type, attributes))
        return nodes

    assert topology(build_model(name, small=True).graph) == topology(model.graph)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_identical_bytes_and_other_seed_other_weights(name: str) -> None:
    first = build_model(name, small=True, seed=7)
    assert first.SerializeToString() == build_model(name, small=True, seed=7).SerializeToString()
    reseeded = build_model(name, small=True, seed=8)
    assert list(reseeded.graph.node) == list(first.graph.node)
    first_weights, reseeded_weights = weights(first), weights(reseeded)
    conv_weights = [n.input[1] for n in first.graph.node if n.op_type == "Conv"]
    assert all(not np.array_equal(first_weights[w], reseeded_weights[w]) for w in conv_weights)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_two(name: str) -> None:
    model = build_model(name, small=True, batch=2)
    assert input_shape(model)[0] == 2
    logits = run_logits(model)
    assert logits.shape == (2, 10)
    assert_well_scaled(logits)
    assert conv_flops(model) == 2 * conv_flops(build_model(name, small=True))


def one_conv_model(
    input_dims: list[int | str], weight_dims: list[int], group: int, stride: int, pad: int, weight_as_input: bool
) -> onnx.ModelProto:
    weight_info = helper.make_tensor_value_info("w", TensorProto.FLOAT, weight_dims)
    weight = numpy_helper.from_array(np.ones(weight_dims, dtype=np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=group, strides=[stride] * 2, pads=[pad] * 4)
    graph = helper.make_graph(
        [conv],
        "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)] + ([weight_info] if weight_as_input else []),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [] if weight_as_input else [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("weight_as_input", [False, True])
@pytest.mark.parametrize(
    ("input_dims", "weight_dims", "group", "stride", "pad", "expected"),
    [
        # out (1,4,8,8); 4*8*8 outputs x 3*3*3 MACs = 6912
        ([1, 3, 8, 8], [4, 3, 3, 3], 1, 1, 1, 2 * 6912),
        # 2 groups of 4 inputs; out (1,6,4,4); 6*4*4 outputs x 4*3*3 MACs = 3456
        ([1, 8, 10, 10], [6, 4, 3, 3], 2, 2, 0, 2 * 3456),
        # depthwise, batch 2; out (2,8,6,6); 2*8*6*6 outputs x 1*3*3 MACs = 5184
        ([2, 8, 6, 6], [8, 1, 3, 3], 8, 1, 1, 2 * 5184),
    ],
)
def test_conv_flops_of_one_conv(
    input_dims: list[int], weight_dims: list[int], group: int, stride: int, pad: int, expected: int, weight_as_input: bool
) -> None:
    model = one_conv_model(input_dims, weight_dims, group, stride, pad, weight_as_input)
    assert conv_flops(model) == expected


def test_conv_flops_of_gemm_and_matmul() -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [5, 3])
    b = numpy_helper.from_array(np.ones((5, 7), dtype=np.float32), "b")
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 3, 4])
    d = numpy_helper.from_array(np.ones((4, 6), dtype=np.float32), "d")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["a", "b"], ["gemm_out"], transA=1),  # (3,5) @ (5,7)
            helper.make_node("MatMul", ["c", "d"], ["matmul_out"]),  # (2,3,4) @ (4,6)
        ],
        "gemm_matmul",
        [a, c],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("gemm_out", "matmul_out")],
        [b, d],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert conv_flops(model) == 2 * (3 * 7 * 5 + 2 * 3 * 6 * 4)


def test_conv_flops_rejects_dynamic_shapes() -> None:
    model = one_conv_model(["N", 3, 8, 8], [4, 3, 3, 3], 1, 1, 1, weight_as_input=False)
    with pytest.raises(ValueError, match="dynamic"):
        conv_flops(model)


def test_unknown_model_name_raises() -> None:
    with pytest.raises(ValueError, match="resnet19") as error:
        build_model("resnet19")
    assert all(name in str(error.value) for name in MODEL_NAMES)
