"""ONNX normalization before TVM's importer (tvm_dse.onnx_folding): each rule on a graph written for it,
checked against onnxruntime running the graph as written; what stays dynamic refused by node."""

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_dse import ModelError, UnsupportedOpError, load_model
from tvm_dse.onnx_folding import normalize_onnx
from tvm_dse.testing import MODEL_NAMES, onnxruntime_outputs, relative_error
from tvm_dse.testing.awkward import AWKWARD_NAMES
from tvm_dse.testing.matrix import matrix_model


def _model(nodes, initializers, input_shape=(1, 4, 8, 8), output_rank=4):
    """Input "x" of ``input_shape``, output "y" of ``output_rank`` dimensions left for inference."""
    output_shape = [f"y{axis}" for axis in range(output_rank)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)]
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(value), name) for name, value in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _ops(model):
    return Counter(node.op_type for node in model.graph.node)


def _same_outputs(original, normalized, shape=(1, 4, 8, 8)):
    feed = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for expected, actual in zip(onnxruntime_outputs(original, feed), onnxruntime_outputs(normalized, feed)):
        assert relative_error(actual, expected) <= 1e-5


def _batchnorm(name, x, y, channels, rng):
    values = {f"{name}.gamma": rng.uniform(0.5, 1.5, channels), f"{name}.beta": rng.uniform(-1, 1, channels),
              f"{name}.mean": rng.uniform(-1, 1, channels), f"{name}.var": rng.uniform(0.5, 2, channels)}
    node = helper.make_node("BatchNormalization", [x, *values], [y], name=name, epsilon=1e-3)
    return node, {k: v.astype(np.float32) for k, v in values.items()}


def _shape_computed_reshape():
    """x -> Relu -> Reshape to (Shape(x)[0], -1): the target gathered from the input's shape at run time."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["r", "target"], ["y"], name="flatten")]
    return _model(nodes, {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
                          "minus_one": np.array([-1], np.int64)}, input_shape=("N", 4, 8, 8), output_rank=2)


def test_a_shape_computation_folds_once_the_input_shape_is_bound():
    model = _shape_computed_reshape()
    bound = load_model(model, input_shapes={"x": (2, 4, 8, 8)})
    assert _ops(bound.onnx_model) == {"Relu": 1, "Reshape": 1}
    target = {init.name: numpy_helper.to_array(init) for init in bound.onnx_model.graph.initializer}["target"]
    assert target.tolist() == [2, -1]
    _same_outputs(model, bound.onnx_model, (2, 4, 8, 8))


@pytest.mark.parametrize("padded", [False, True])
def test_batchnorm_before_a_convolution_folds_only_where_the_convolution_pads_nothing(padded):
    rng = np.random.default_rng(1)
    bn, values = _batchnorm("bn", "x", "normalized", 4, rng)
    conv = helper.make_node("Conv", ["normalized", "w", "b"], ["y"], name="conv", group=2,
                            pads=[1, 1, 1, 1] if padded else [0, 0, 0, 0])
    model = _model([bn, conv], {**values, "w": rng.standard_normal((6, 2, 3, 3)).astype(np.float32),
                                "b": rng.standard_normal(6).astype(np.float32)})
    normalized = normalize_onnx(model, "g")
    # the padding would meet zeros the BatchNorm never shifted: folded, the border would differ
    assert _ops(normalized) == ({"BatchNormalization": 1, "Conv": 1} if padded else {"Conv": 1})
    _same_outputs(model, normalized)


def test_batchnorm_after_a_convolution_folds_unless_the_convolution_output_is_read_elsewhere():
    rng = np.random.default_rng(2)
    weights = {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)}
    bn_a, values_a = _batchnorm("bn_a", "c_a", "n_a", 4, rng)
    bn_b, values_b = _batchnorm("bn_b", "c_b", "n_b", 4, rng)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c_a"], name="conv_a", pads=[1, 1, 1, 1]), bn_a,
             helper.make_node("Conv", ["n_a", "w"], ["c_b"], name="conv_b", pads=[1, 1, 1, 1]), bn_b,
             helper.make_node("Add", ["n_b", "c_b"], ["y"], name="add")]
    model = _model(nodes, {**weights, **values_a, **values_b})
    normalized = normalize_onnx(model, "g")
    assert [node.name for node in normalized.graph.node] == ["conv_a", "conv_b", "bn_b", "add"]
    _same_outputs(model, normalized)


def test_nodes_that_do_nothing_are_removed_and_the_output_keeps_its_name():
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="identity"),
             helper.make_node("Dropout", ["i"], ["d"], name="dropout"),
             helper.make_node("Cast", ["d"], ["c"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["c", "same_shape"], ["r"], name="reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[0, 1, 2, 3]),
             helper.make_node("Concat", ["t"], ["one"], name="concat", axis=1),
             helper.make_node("Pad", ["one", "no_pads"], ["p"], name="pad"),
             helper.make_node("Relu", ["p"], ["relu"], name="relu"),
             helper.make_node("Identity", ["relu"], ["y"], name="output_identity")]
    model = _model(nodes, {"same_shape": np.array([1, 4, 8, 8], np.int64), "no_pads": np.zeros(8, np.int64)})
    normalized = normalize_onnx(model, "g")
    assert [node.name for node in normalized.graph.node] == ["relu", "output_identity"]
    assert normalized.graph.node[0].input[0] == "x" and normalized.graph.output[0].name == "y"
    _same_outputs(model, normalized)


@pytest.mark.parametrize("pad_attrs, pads, value, moved", [
    ({}, [0, 0, 1, 0, 0, 0, 2, 1], 0.0, True),
    ({}, [0, 0, 1, 1, 0, 0, 1, 1], 0.5, False),  # a non-zero border is not a convolution's padding
    ({"mode": "reflect"}, [0, 0, 1, 1, 0, 0, 1, 1], 0.0, False),
    ({}, [0, 1, 1, 1, 0, 0, 1, 1], 0.0, False),  # padding channels
])
def test_a_zero_pad_of_the_spatial_axes_becomes_the_convolutions_padding(pad_attrs, pads, value, moved):
    rng = np.random.default_rng(3)
    in_channels = 4 + (pads[1] + pads[5])
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["padded"], name="pad", **pad_attrs),
             helper.make_node("Conv", ["padded", "w"], ["y"], name="conv", pads=[1, 0, 0, 1])]
    model = _model(nodes, {"pads": np.array(pads, np.int64), "value": np.array(value, np.float32),
                           "w": rng.standard_normal((8, in_channels, 3, 3)).astype(np.float32)})
    normalized = normalize_onnx(model, "g")
    assert _ops(normalized) == ({"Conv": 1} if moved else {"Pad": 1, "Conv": 1})
    if moved:
        conv_pads = next(list(a.ints) for a in normalized.graph.node[0].attribute if a.name == "pads")
        assert conv_pads == [2, 0, 2, 2]
    _same_outputs(model, normalized)


def test_a_constant_larger_than_its_inputs_stays_computed():
    """ConstantOfShape of a whole feature map is left to the module, not written into it as a weight."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["ones"], name="ones",
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("Add", ["x", "ones"], ["y"], name="add")]
    model = _model(nodes, {"shape": np.array([1, 64, 64, 64], np.int64)}, input_shape=(1, 64, 64, 64))
    normalized = normalize_onnx(model, "g")
    assert _ops(normalized) == {"ConstantOfShape": 1, "Add": 1}
    _same_outputs(model, normalized, (1, 64, 64, 64))


def test_a_shape_that_depends_on_the_values_is_refused_naming_the_node():
    nodes = [helper.make_node("NonZero", ["x"], ["where"], name="nonzero"),
             helper.make_node("Shape", ["where"], ["count"], name="count_nonzero"),
             helper.make_node("Reshape", ["x", "count"], ["y"], name="reshape")]
    model = _model(nodes, {}, output_rank=2)
    with pytest.raises(ModelError, match=r"node 'count_nonzero' \(Shape\) reads the shape of 'where'"):
        load_model(model)


def test_a_shape_taking_input_computed_from_values_is_refused_naming_the_node():
    nodes = [helper.make_node("ReduceMax", ["x"], ["largest"], name="largest", keepdims=0),
             helper.make_node("Cast", ["largest"], ["amount"], name="amount", to=TensorProto.INT64),
             helper.make_node("Expand", ["amount", "eight"], ["pads"], name="pads"),
             helper.make_node("Pad", ["x", "pads"], ["y"], name="data_pad")]
    model = _model(nodes, {"eight": np.array([8], np.int64)})
    with pytest.raises(ModelError, match=r"pads of node 'data_pad' \(Pad\) come from 'pads' \(from node 'pads', "
                                         r"Expand\), computed at run time"):
        load_model(model)


def test_an_operator_tvm_cannot_convert_is_named_with_the_reason():
    """TVM's Resize converter takes 3- to 5-dimensional tensors only; onnxruntime resizes any rank."""
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], name="flatten"),
             helper.make_node("Resize", ["flat", "", "scales"], ["y"], name="resize_2d", mode="nearest")]
    model = _model(nodes, {"scales": np.array([1.0, 2.0], np.float32)}, output_rank=2)
    onnxruntime_outputs(model, {"x": np.zeros((1, 4, 8, 8), np.float32)})
    with pytest.raises(UnsupportedOpError, match=r"at node 'resize_2d' \(Resize\): .*resize"):
        load_model(model)


@pytest.mark.parametrize("name", [f"{n}-small" for n in MODEL_NAMES] + list(AWKWARD_NAMES))
def test_normalization_keeps_every_zoo_models_outputs(name):
    model = matrix_model(name)
    normalized = load_model(model).onnx_model
    assert "BatchNormalization" not in _ops(normalized)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feed = {model.graph.input[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    (expected,), (actual,) = onnxruntime_outputs(model, feed), onnxruntime_outputs(normalized, feed)
    assert relative_error(actual, expected) <= 1e-5


def test_what_a_control_flow_branch_reads_from_outside_is_kept():
    """A branch reads the Identity's output by name from the outer scope: neither removed nor renamed."""
    branch = lambda op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["kept"], ["out"])], op,
        [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])])
    nodes = [helper.make_node("Identity", ["x"], ["kept"], name="identity"),
             helper.make_node("ReduceMax", ["x"], ["largest"], name="largest", keepdims=0),
             helper.make_node("Greater", ["largest", "zero"], ["positive"], name="positive"),
             helper.make_node("If", ["positive"], ["y"], name="branch", then_branch=branch("Relu"),
                              else_branch=branch("Neg"))]
    model = _model(nodes, {"zero": np.array(0.0, np.float32)})
    normalized = normalize_onnx(model, "g")
    assert [node.name for node in normalized.graph.node] == ["identity", "largest", "positive", "branch"]
    _same_outputs(model, normalized)


@pytest.mark.parametrize("chain, folded", [
    ([("Mul", (4, 1, 1), 0), ("Add", (1, 4, 1, 1), 1), ("Sub", (), 0), ("Div", (4, 1, 1), 0)], 4),
    ([("Mul", (1, 1, 8, 8), 0)], 0),  # varies over pixels, not channels
    ([("Sub", (4, 1, 1), 1)], 0),  # constant minus the convolution
    ([("Add", (4, 1, 1), 0), ("Mul", (1, 4, 1, 1), 1)], 2),
])
def test_a_per_channel_affine_after_a_convolution_folds_into_it(chain, folded):
    """TensorFlow converters write a BatchNorm as a Mul and an Add of the convolution's output."""
    rng = np.random.default_rng(4)
    values = {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t0"], name="conv", pads=[1, 1, 1, 1])]
    for index, (op, shape, position) in enumerate(chain):
        constant = f"c{index}"
        values[constant] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        operands = [f"t{index}", constant] if position == 0 else [constant, f"t{index}"]
        output = "y" if index == len(chain) - 1 else f"t{index + 1}"
        nodes.append(helper.make_node(op, operands, [output], name=f"{op.lower()}_{index}"))
    model = _model(nodes, values)
    normalized = normalize_onnx(model, "g")
    assert len(normalized.graph.node) == 1 + len(chain) - folded
    assert normalized.graph.output[0].name == "y"
    _same_outputs(model, normalized)
