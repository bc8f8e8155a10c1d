"""Testing helpers for tvm_dse and for projects built on it: the contract checks every strategy and searcher
must pass (:mod:`.checks`), the digits task, single-convolution models, and, handed on from the product, the
model zoo (:mod:`tvm_dse.zoo`), the onnxruntime reference and the error measure every numerical check uses
(:mod:`tvm_dse.validation`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..validation import onnxruntime_outputs, onnxruntime_session, relative_error
from ..zoo import MODEL_NAMES, REFERENCE_GFLOP, build_model, conv_flops
from .checks import SEARCHER_CHECKS, STRATEGY_CHECKS, check_searcher, check_strategy, parametrize_with_checks
from .digits import DigitsTask, digits_task

if TYPE_CHECKING:
    from ..workload import Workload

__all__ = ["DigitsTask", "MODEL_NAMES", "REFERENCE_GFLOP", "SEARCHER_CHECKS", "STRATEGY_CHECKS", "build_model",
           "check_searcher", "check_strategy", "conv_flops", "digits_task", "onnxruntime_outputs",
           "onnxruntime_session", "parametrize_with_checks", "relative_error", "single_conv_model"]


def single_conv_model(workload: "Workload", seed: int = 0) -> onnx.ModelProto:
    """A one-node ONNX model (Conv with bias, or Gemm) computing ``workload``, input "x", output "y"."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    bias = numpy_helper.from_array(rng.standard_normal(workload.out_channels).astype(np.float32), "b")
    if workload.op == "dense":
        weight = rng.standard_normal((workload.out_channels, workload.in_channels)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        x_shape, y_shape = [workload.batch, workload.in_channels], [workload.batch, workload.out_channels]
    else:
        weight = rng.standard_normal(workload.weight_shape).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(workload.kernel),
                                strides=list(workload.stride), dilations=list(workload.dilation),
                                pads=list(workload.padding), group=workload.groups)
        x_shape, y_shape = list(workload.input_shape), list(workload.output_shape)
    graph = helper.make_graph([node], "single_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(weight, "w"), bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
