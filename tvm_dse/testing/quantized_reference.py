"""The reference for plans with int8 nodes: the model as the plan quantizes it, written in fp32 ONNX so
onnxruntime computes it.

An int8 kernel quantizes its input per tensor and its weights per output channel, accumulates the codes
exactly in int32 and dequantizes in its output stage (:mod:`tvm_dse.quant.scheme`). The same model with
each int8 node's weights replaced by their dequantized codes and its input quantized and dequantized, op
for op as the scheme does, computes the same values up to fp32 rounding. Against it a plan's error is its
kernels' and layouts', not the quantization's, which on a deep network with per-tensor activations can
exceed any bound a broken kernel would stay under (MobileNetV2 small, every layer int8: 0.1-0.24 against
the fp32 model).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..frontend import Model
from ..plan import Plan
from ..quant.scheme import U8_MAX, ActivationQuant, quantize_weights_reference
from ..strategies import get_strategy
from ..target import TargetLike, parse_target


def quantized_reference_model(model: Model, plan: Plan, target: TargetLike) -> onnx.ModelProto:
    """``model`` (imported from ONNX) with every node ``plan`` puts on an int8 strategy computing on its
    dequantized weight codes (the target's weight range) and on its input quantized and dequantized with
    the node's calibrated quantization; every other node as it is."""
    dse_target = parse_target(target)
    if model.onnx_model is None:
        raise ValueError(f"model {model.name!r} came from a Relax module; the quantized reference is ONNX")
    reference = onnx.ModelProto()
    reference.CopyFrom(model.onnx_model)
    graph = reference.graph
    initializers = {init.name: init for init in graph.initializer}
    int8 = {name: choice for name, choice in plan.nodes.items() if get_strategy(choice.strategy).takes_input_quant}
    nodes = []
    for node in graph.node:
        choice = int8.pop(node.name, None)
        if choice is not None:
            if node.op_type != "Conv":
                raise ValueError(f"node {node.name!r} is a {node.op_type}: the quantized reference covers Conv")
            quant = ActivationQuant.from_dict(choice.quant)
            weight = numpy_helper.to_array(initializers[node.input[1]])
            codes, scales = quantize_weights_reference(weight, get_strategy(choice.strategy).weight_qmax(dse_target))
            dequantized = (codes.astype(np.float32) * scales[:, None, None, None]).astype(np.float32)
            prefix = f"{node.name}.int8"
            graph.initializer.append(numpy_helper.from_array(dequantized, f"{prefix}.weight"))
            nodes.extend(_quantize_dequantize(graph, node.input[0], quant, prefix))
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[0], copy.input[1] = f"{prefix}.input", f"{prefix}.weight"
            node = copy
        nodes.append(node)
    if int8:
        raise ValueError(f"the plan's int8 nodes {sorted(int8)} are not nodes of the ONNX model")
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]  # the replaced weights, folded BatchNorms
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return reference


def _quantize_dequantize(graph: onnx.GraphProto, source: str, quant: ActivationQuant, prefix: str) -> list:
    """Nodes computing ``scale * (clip(floor(x / scale + 0.5) + zero_point, 0, 255) - zero_point)`` into
    ``{prefix}.input``, in fp32 as the kernels quantize (:func:`tvm_dse.quant.scheme.quantize_activation`)."""
    constants = {"inverse_scale": quant.inverse_scale, "half": 0.5, "zero_point": quant.zero_point, "low": 0.0,
                 "high": U8_MAX, "scale": quant.scale}
    for name, value in constants.items():
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{prefix}.{name}"))
    steps = [("Mul", "inverse_scale"), ("Add", "half"), ("Floor", None), ("Add", "zero_point"), ("Clip", None),
             ("Sub", "zero_point"), ("Mul", "scale")]
    nodes, current = [], source
    for index, (op, operand) in enumerate(steps):
        output = f"{prefix}.input" if index == len(steps) - 1 else f"{prefix}.step{index}"
        inputs = [current] + ([f"{prefix}.{operand}"] if operand else []) + \
            ([f"{prefix}.low", f"{prefix}.high"] if op == "Clip" else [])
        nodes.append(helper.make_node(op, inputs, [output], name=f"{prefix}.{op.lower()}{index}"))
        current = output
    return nodes
