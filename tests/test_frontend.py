"""Model import: ONNX paths, protos, Relax modules, zoo names; shape binding; clear errors."""

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvm_dse import Model, ModelError, UnsupportedOpError, load_model
from tvm_dse.frontend import check_optimizable, tunable_calls


def _conv_model(batch_dim="N", extra_nodes=(), extra_opsets=()):
    """x -> Conv(3->4, 3x3) -> Relu -> y, with a symbolic batch dimension."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="the_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="the_relu"), *extra_nodes]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 4, 8, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *extra_opsets])
    model.ir_version = 8
    return model


def test_load_path_proto_and_zoo_name_agree(tmp_path, zoo):
    proto = zoo("resnet18")
    path = tmp_path / "r18.onnx"
    onnx.save(proto, path)
    from_path = load_model(path)
    from_proto = load_model(proto)
    from_zoo = load_model("zoo:resnet18-small")
    assert from_path.fingerprint == from_proto.fingerprint == from_zoo.fingerprint
    assert from_path.name == "r18"
    assert from_path.inputs[0].name == "input" and from_path.inputs[0].shape == (1, 3, 64, 64)
    assert load_model(from_path) is from_path


def test_batchnorm_is_folded_and_node_names_kept(zoo):
    model = load_model(zoo("resnet18"))
    script = model.mod["main"].script()
    assert "batch_norm" not in script
    assert len(tunable_calls(model.mod)) == 21
    assert model.node_names[0] == "conv1" and model.node_names[-1] == "fc"
    assert model.node_names[1:3] == ["layer1.0.conv1", "layer1.0.conv2"]


def test_relax_module_input_gets_generic_names(zoo):
    model = load_model(load_model(zoo("resnet18")).mod)
    assert model.node_names[0] == "conv2d_0" and model.node_names[-1] == "dense_0"
    assert model.inputs[0].shape == (1, 3, 64, 64)
    assert model.onnx_model is None


@pytest.mark.faults
def test_dynamic_batch_needs_an_override():
    with pytest.raises(ModelError, match=r"input 'x'.*dynamic.*'N'.*input_shapes"):
        load_model(_conv_model())
    model = load_model(_conv_model(), input_shapes={"x": (2, 3, 8, 8)})
    assert model.inputs[0].shape == (2, 3, 8, 8)
    assert [int(d) for d in model.mod["main"].ret_ty.shape] == [2, 4, 8, 8]


def test_override_changes_static_shapes_and_fingerprint():
    model = _conv_model(batch_dim=1)
    one = load_model(model)
    two = load_model(model, input_shapes={"x": [2, 3, 8, 8]})
    assert one.inputs[0].shape == (1, 3, 8, 8) and two.inputs[0].shape == (2, 3, 8, 8)
    assert one.fingerprint != two.fingerprint


@pytest.mark.faults
@pytest.mark.parametrize("shapes, message", [
    ({"y": (1, 3, 8, 8)}, r"names 'y'.*inputs: x"),
    ({"x": (1, 3, 8)}, r"does not fit input 'x'"),
    ({"x": (0, 3, 8, 8)}, r"positive"),
])
def test_bad_overrides(shapes, message):
    with pytest.raises(ModelError, match=message):
        load_model(_conv_model(), input_shapes=shapes)


@pytest.mark.faults
def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not protobuf\xff\xff")
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_model(garbage)


@pytest.mark.faults
def test_malformed_graph_is_rejected_by_name():
    model = _conv_model(batch_dim=1)
    model.graph.node[1].input[0] = "undefined_tensor"
    with pytest.raises(ModelError, match="malformed ONNX model"):
        load_model(model)


@pytest.mark.faults
def test_unsupported_ops_are_named_with_their_nodes():
    custom = helper.make_node("FancyOp", ["y"], ["z"], name="my_fancy_node", domain="com.example")
    model = _conv_model(batch_dim=1, extra_nodes=[custom], extra_opsets=[helper.make_opsetid("com.example", 1)])
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8]))
    with pytest.raises(UnsupportedOpError, match=r"node 'my_fancy_node' \(com\.example\.FancyOp\)"):
        load_model(model)
    lstm_model = _conv_model(batch_dim=1)
    lstm_model.graph.node.append(helper.make_node("Det", ["y"], ["d"], name="determinant"))
    lstm_model.graph.output.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 4]))
    with pytest.raises(UnsupportedOpError, match=r"node 'determinant' \(Det\)"):
        load_model(lstm_model)


@pytest.mark.faults
def test_a_node_whose_output_size_depends_on_the_data_is_refused_by_name():
    nms = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="the_nms")
    model = _conv_model(batch_dim=1, extra_nodes=[nms])
    model.graph.input.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4]),
                              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 10])])
    model.graph.output.append(helper.make_tensor_value_info("selected", TensorProto.INT64, ["selected", 3]))
    with pytest.raises(ModelError, match=r"size of 'selected', the output of node 'the_nms' \(NonMaxSuppression\), "
                                         r"depends on the values computed"):
        load_model(model)


@pytest.mark.faults
def test_an_output_that_declares_no_shape_gets_the_inferred_one():
    model = _conv_model(batch_dim=1)
    model.graph.output[0].type.tensor_type.ClearField("shape")
    imported = load_model(model)
    assert imported.node_names == ["the_conv"]
    assert [d.dim_value for d in imported.onnx_model.graph.output[0].type.tensor_type.shape.dim] == [1, 4, 8, 8]


def _single_conv(weight_shape, input_shape, dtype=np.float32, op="Conv"):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    weight = numpy_helper.from_array(np.ones(weight_shape, dtype), "w")
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], name="the_conv")], "g",
                              [helper.make_tensor_value_info("x", elem, input_shape)],
                              [helper.make_tensor_value_info("y", elem, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.faults
@pytest.mark.parametrize("weight_shape, input_shape, dtype, message", [
    ((4, 3, 3), (1, 3, 16), np.float32, r"no node tvm_dse chooses .*node 'the_conv', a 1-D convolution"),
    ((4, 3, 3, 3, 3), (1, 3, 6, 6, 6), np.float32, r"no node tvm_dse chooses .*node 'the_conv', a 3-D convolution"),
    ((4, 3, 3, 3), (1, 3, 8, 8), np.float16, r"node 'the_conv' of model 'g' computes in float16: tvm_dse takes fp32"),
])
def test_a_model_with_nothing_to_choose_for_is_refused_naming_its_convolutions(weight_shape, input_shape, dtype,
                                                                               message):
    model = load_model(_single_conv(weight_shape, input_shape, dtype))
    with pytest.raises(ModelError, match=message):
        check_optimizable(model)
    check_optimizable(load_model(_conv_model(batch_dim=1)))


def test_relax_module_with_symbolic_shape():
    builder = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType([n, 3, 8, 8], "float32"))
    weight = relax.const(np.ones((4, 3, 3, 3), np.float32))
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit_output(relax.op.nn.relu(relax.op.nn.conv2d(x, weight, padding=1)))
        builder.emit_func_output(y)
    module = builder.get()
    with pytest.raises(ModelError, match=r"input 'x'.*dynamic"):
        load_model(module)
    model = load_model(module, input_shapes={"x": (3, 3, 8, 8)})
    assert model.inputs[0].shape == (3, 3, 8, 8)
    assert model.node_names == ["conv2d_0"]
    with pytest.raises(ModelError, match="has inputs: x"):
        load_model(module, input_shapes={"nope": (1, 3, 8, 8)})


def test_unknown_zoo_model_and_wrong_types():
    with pytest.raises(ModelError, match=r"unknown zoo model 'zoo:alexnet'.*zoo:resnet18"):
        load_model("zoo:alexnet")
    with pytest.raises(ModelError, match="cannot import a int"):
        load_model(5)


def test_random_feed_is_deterministic(zoo):
    model = load_model(zoo("mobilenet_v2"))
    first, second = model.random_feed(seed=3), model.random_feed(seed=3)
    assert isinstance(model, Model)
    np.testing.assert_array_equal(first["input"], second["input"])
    assert not np.array_equal(first["input"], model.random_feed(seed=4)["input"])
