"""PyTorch eager execution of a zoo ONNX model: the same graph and weights, run op by op with
torch.nn.functional, as a user who kept the model in PyTorch would deploy it.

Covers the operators the zoo models use (Conv, BatchNormalization, Relu, Clip, MaxPool, Add,
GlobalAveragePool, Flatten, Gemm, Concat); any other raises ValueError naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _symmetric_padding(pads: list[int], rank: int) -> tuple[list[int] | None, list[int]]:
    """(F.pad argument or None, symmetric padding per spatial axis) for ONNX pads (begins, then ends)."""
    pads = list(pads) if pads else [0] * (2 * rank)
    begins, ends = pads[:rank], pads[rank:]
    if begins == ends:
        return None, begins
    explicit = []
    for begin, end in reversed(list(zip(begins, ends))):  # F.pad lists the last axis first
        explicit += [begin, end]
    return explicit, [0] * rank


class TorchEager(torch.nn.Module):
    """An ONNX graph as a torch module; ``forward`` takes and returns tensors in graph order."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        unknown = sorted({n.op_type for n in self.nodes} - set(_OPS))
        if unknown:
            raise ValueError(f"PyTorch eager rebuild does not cover ONNX operator(s) {', '.join(unknown)}")

    @torch.no_grad()
    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        values = dict(self.initializers)
        values.update(zip(self.inputs, inputs))
        for node in self.nodes:
            args = [values[name] if name else None for name in node.input]
            values[node.output[0]] = _OPS[node.op_type](args, _attributes(node))
        return [values[name] for name in self.outputs]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run on numpy inputs, as the other contenders' ``run``."""
        return [t.numpy() for t in self(*(torch.from_numpy(feed[name]) for name in self.inputs))]


def _conv(args: list, attrs: dict[str, Any]) -> torch.Tensor:
    x, weight, bias = (args + [None])[:3]
    explicit, padding = _symmetric_padding(attrs.get("pads"), weight.dim() - 2)
    if explicit:
        x = F.pad(x, explicit)
    return F.conv2d(x, weight, bias, stride=attrs.get("strides", 1), padding=padding,
                    dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))


def _max_pool(args: list, attrs: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    kernel = attrs["kernel_shape"]
    explicit, padding = _symmetric_padding(attrs.get("pads"), len(kernel))
    if explicit:
        x = F.pad(x, explicit, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride=attrs.get("strides", kernel), padding=padding,
                        ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _batch_norm(args: list, attrs: dict[str, Any]) -> torch.Tensor:
    x, scale, shift, mean, variance = args
    return F.batch_norm(x, mean, variance, scale, shift, training=False, eps=attrs.get("epsilon", 1e-5))


def _clip(args: list, attrs: dict[str, Any]) -> torch.Tensor:
    low = float(args[1]) if len(args) > 1 and args[1] is not None else attrs.get("min")
    high = float(args[2]) if len(args) > 2 and args[2] is not None else attrs.get("max")
    return torch.clamp(args[0], low, high)


def _gemm(args: list, attrs: dict[str, Any]) -> torch.Tensor:
    a, b, c = (args + [None])[:3]
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    out = attrs.get("alpha", 1.0) * (a @ b)
    return out if c is None else out + attrs.get("beta", 1.0) * c


_OPS = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Relu": lambda args, attrs: F.relu(args[0]),
    "Clip": _clip,
    "MaxPool": _max_pool,
    "Add": lambda args, attrs: args[0] + args[1],
    "GlobalAveragePool": lambda args, attrs: F.adaptive_avg_pool2d(args[0], 1),
    "Flatten": lambda args, attrs: torch.flatten(args[0], attrs.get("axis", 1)),
    "Gemm": _gemm,
    "Concat": lambda args, attrs: torch.cat(args, dim=attrs["axis"]),
}
