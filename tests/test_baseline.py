"""TVM's default build of the zoo models matches onnxruntime; built models run, time and export."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvm_dse import TvmDseError, build_baseline, load_model
from tvm_dse.testing import MODEL_NAMES, onnxruntime_outputs, relative_error
from tvm_dse.timing import SteadyState

FP32_BOUND = 1e-4


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_small_zoo_model_matches_onnxruntime(zoo, name):
    model = load_model(zoo(name))
    built = build_baseline(model, "host")
    feed = model.random_feed(seed=1)
    (output,) = built.run(feed)
    (reference,) = onnxruntime_outputs(model.onnx_model, feed)
    assert output.shape == reference.shape == (1, 10)
    assert np.abs(reference).max() > 0
    assert relative_error(output, reference) <= FP32_BOUND


def test_batchnorm_without_a_conv_before_it_still_matches():
    rng = np.random.default_rng(0)
    params = [numpy_helper.from_array(rng.uniform(0.5, 1.5, 3).astype(np.float32), n) for n in ("g", "b", "m", "v")]
    graph = helper.make_graph(
        [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn_on_input")], "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], params)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = load_model(proto)
    feed = model.random_feed()
    assert relative_error(build_baseline(model).run(feed)[0], onnxruntime_outputs(proto, feed)[0]) <= FP32_BOUND


def test_run_time_and_export(zoo, tmp_path):
    model = load_model(zoo("squeezenet1_1"))
    built = build_baseline(model)
    feed = model.random_feed()
    timing = built.time(feed, SteadyState(repeats=3))
    assert timing.repeats == 3 and 0 < timing.min_ms <= timing.median_ms <= timing.max_ms
    path = built.export(tmp_path / "squeezenet.so")
    reloaded = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    np.testing.assert_array_equal(reloaded["main"](tvm.runtime.tensor(feed["input"])).numpy(), built.run(feed)[0])


def test_feed_errors_name_the_inputs(zoo):
    model = load_model(zoo("squeezenet1_1"))
    built = build_baseline(model)
    with pytest.raises(TvmDseError, match=r"missing \['input'\]"):
        built.run({"image": np.zeros((1, 3, 64, 64), np.float32)})
    with pytest.raises(TvmDseError, match=r"shape \(1, 3, 32, 32\).*\(1, 3, 64, 64\)"):
        built.run({"input": np.zeros((1, 3, 32, 32), np.float32)})


def test_a_board_build_refuses_to_run_here(zoo):
    model = load_model(zoo("squeezenet1_1"))
    built = build_baseline(model, "rpi4")
    with pytest.raises(TvmDseError, match="cannot run"):
        built.run(model.random_feed())
