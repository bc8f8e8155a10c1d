"""Networks as exporters write them (tvm_dse.testing.exports): PyTorch networks through both of its ONNX
exporters and a model in a TensorFlow converter's idioms import, and their optimized plans and uniform and
random plans match onnxruntime running the file as exported, on the host and, cross-compiled for a 4-lane
NEON core, on the emulated board."""

from collections import Counter

import numpy as np
import onnx
import pytest
from tvm import rpc

from tvm_dse import build_graph, load_model, optimize
from tvm_dse.cli import main
from tvm_dse.target import parse_target
from tvm_dse.testing import onnxruntime_outputs, relative_error
from tvm_dse.testing.exports import (EXPORTERS, INPUT_NAME, INPUT_SHAPE, TF_INPUT_NAME, TORCH_NETWORKS,
                                     export_torch_network, tf_style_model)
from tvm_dse.testing.matrix import HOST_FAMILY, family, matrix_plans, plan_failures

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]

EXPORTED = [f"{network}-{exporter}" for network in TORCH_NETWORKS for exporter in EXPORTERS]
ALL = EXPORTED + ["tf_style"]
# what an exporter computes at run time and normalization folds: none of it reaches TVM
FOLDED_OPS = {"Shape", "Gather", "Unsqueeze", "Constant", "ConstantOfShape", "Cast", "Identity", "Pad",
              "BatchNormalization", "Slice", "Range"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(name)``: the ONNX file of an exported network (``"<network>-<exporter>"`` or
    ``"tf_style"``), written once for the module."""
    directory = tmp_path_factory.mktemp("exported")
    files = {}

    def get(name):
        if name not in files:
            path = directory / f"{name}.onnx"
            if name == "tf_style":
                onnx.save(tf_style_model(), path)
            else:
                network, exporter = name.split("-")
                export_torch_network(network, exporter, path)
            files[name] = path
        return files[name]

    return get


@pytest.fixture(scope="module")
def imported(exported):
    """``imported(name)``: an exported network imported with its shapes bound, and its DSE graph, once for
    the module (treat both as read-only)."""
    models = {}

    def get(name):
        if name not in models:
            model = load_model(exported(name), input_shapes=_shapes(name))
            models[name] = model, build_graph(model)
        return models[name]

    return get


def _shapes(name):
    return None if name == "tf_style" else {INPUT_NAME: INPUT_SHAPE}


def _reference(path, feed):
    """onnxruntime's outputs of the file as exported (dynamic dimensions and all)."""
    return onnxruntime_outputs(onnx.load(path), feed)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("tuning_logs")


@pytest.mark.parametrize("name", ALL)
def test_an_exported_network_imports_and_its_optimized_plan_matches_onnxruntime(exported, logs, name):
    path = exported(name)
    source_ops = Counter(node.op_type for node in onnx.load(path).graph.node)
    result = optimize(path, "host", input_shapes=_shapes(name), logs=logs, budget=200, verify=1, reference=False,
                      profile=False, repeat=3, compare_searchers=(), show_progress=False)
    imported_ops = Counter(node.op_type for node in result.model.onnx_model.graph.node)
    assert not FOLDED_OPS & set(imported_ops), imported_ops
    assert imported_ops["Conv"] == source_ops["Conv"]
    assert len(result.plan.nodes) == source_ops["Conv"] + source_ops["Gemm"] + source_ops["MatMul"]
    feed = result.model.random_feed(seed=4)
    (output,) = result.run(feed)
    (reference,) = _reference(path, feed)
    assert relative_error(output, reference) <= 1e-4


def test_run_time_same_padding_becomes_the_convolutions_padding(exported):
    """Both exporters compute the stem's and the depthwise layer's padding from the input's height and
    width (exported dynamic). Bound to 31x29, the default exporter's convolutions pad as TensorFlow's
    "same" does there; TorchScript's trace kept the ``math.ceil`` of the example's size as a constant (as
    it does for timm's networks: a TracerWarning), so its file pads otherwise, and the folded model
    computes what onnxruntime computes from the file."""
    for exporter in EXPORTERS:
        path = exported(f"same_pad-{exporter}")
        source = onnx.load(path)
        assert {"Shape", "Pad"} <= {node.op_type for node in source.graph.node}
        model = load_model(path, input_shapes={INPUT_NAME: (1, 3, 31, 29)})
        pads = [next((list(a.ints) for a in node.attribute if a.name == "pads"), [0] * 4)
                for node in model.onnx_model.graph.node if node.op_type == "Conv"]
        # stem 3x3 stride 2 on 31x29: 2 rows and 2 columns; depthwise 5x5 stride 2 on 16x15: 3 and 4
        if exporter == "dynamo":
            assert pads[:2] == [[1, 1, 1, 1], [1, 2, 2, 2]], pads
        assert all(any(p) for p in pads[:2]), pads
        feed = model.random_feed(seed=2)
        assert relative_error(onnxruntime_outputs(model.onnx_model, feed)[0], _reference(path, feed)[0]) <= 1e-5


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["uniform", "random"])
def test_every_uniform_and_random_plan_of_an_exported_network_matches_onnxruntime(exported, imported, name, kind):
    path = exported(name)
    model, graph = imported(name)
    target = parse_target("host")
    plans = matrix_plans(model, graph, target, HOST_FAMILY.precisions, kinds=(kind,))
    failures = plan_failures(model, graph, target, plans, lambda built, plan, feed: built.run(feed))
    assert not failures, "\n".join(failures)
    feed = model.random_feed(seed=0)
    assert relative_error(onnxruntime_outputs(model.onnx_model, feed)[0], _reference(path, feed)[0]) <= 1e-5


# on the board by default: the default exporter's run-time padding and the TensorFlow converter's idioms
BOARD_DEFAULT = {"same_pad-dynamo", "tf_style"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=[] if name in BOARD_DEFAULT else [pytest.mark.sweep])
                                  for name in ALL])
def test_the_uniform_plans_of_an_exported_network_match_onnxruntime_on_the_board(emulated_boards, imported, tmp_path,
                                                                                 name):
    model, graph = imported(name)
    target = family("aarch64-neon").dse_target
    plans = matrix_plans(model, graph, target, ("fp32",), kinds=("uniform",))
    session = rpc.connect_tracker("127.0.0.1", emulated_boards.tracker_port).request(emulated_boards.key,
                                                                                    session_timeout=600)
    files = {plan: f"plan{index}.so" for index, plan in enumerate(plans)}
    failures = plan_failures(model, graph, target, plans,
                             lambda built, plan, feed: built.upload(session, tmp_path, files[plan]).run(feed))
    assert not failures, "\n".join(failures)


def test_the_graph_command_takes_a_torchscript_export_with_run_time_padding(exported, capsys):
    path = exported("same_pad-torchscript")
    assert main(["graph", str(path), "--shape", f"{INPUT_NAME}=1,3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "6 tunable nodes" in out
    assert "3x3 s2 3->16 @32x32" in out and "5x5 s2 dw 16->16 @16x16" in out


def test_the_tf_style_model_keeps_its_nhwc_input():
    model = load_model(tf_style_model())
    assert [(i.name, i.shape) for i in model.inputs] == [(TF_INPUT_NAME, (1, 32, 32, 3))]
    assert model.node_names == ["stem/Conv2D", "depthwise/Conv2D", "pointwise/Conv2D", "dense/MatMul"]
    feed = model.random_feed(seed=1)
    assert np.allclose(onnxruntime_outputs(model.onnx_model, feed)[0].sum(axis=-1), 1.0, atol=1e-5)
