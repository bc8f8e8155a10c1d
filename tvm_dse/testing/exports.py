"""Networks as exporters write them, built here (no downloads), for the import tests: small PyTorch
networks with the constructs real ones carry, exported by both of PyTorch's ONNX exporters, and a model
written the way TensorFlow converters write one.

PyTorch networks (:data:`TORCH_NETWORKS`), each exported with its batch dimension dynamic:

- ``same_pad``: an EfficientNet-style stem and depthwise stage whose TensorFlow-style "same" padding is
  computed from the input's shape at run time (height and width exported dynamic too, so both exporters
  write Shape -> arithmetic -> Pad), BatchNorm after convolutions, SiLU, squeeze-excite with a sigmoid
  gate, and the classifier's input flattened by ``view(x.size(0), -1)``;
- ``mobile``: a MobileNetV3/ShuffleNet-style block: hardswish, a dilated depthwise convolution,
  squeeze-excite with a hardsigmoid gate, grouped convolutions around a channel shuffle (reshape,
  transpose, reshape from the input's shape), ``torch.flatten``;
- ``pyramid``: a pyramid-pooling head: ``adaptive_avg_pool2d`` to 2x2 and 4x4, branches resized back by
  ``F.interpolate`` to the size read from the tensor (nearest and bilinear), an upsampling by a scale
  factor, a concatenation, a BatchNorm before a convolution, and an adaptive pooling to 2x2 before the
  classifier.

:func:`tf_style_model` is built with onnx's helpers the way tf2onnx writes a Keras network: an NHWC input
with a leading Transpose, kernels kept in TensorFlow's HWIO order behind a Transpose, explicit Pad nodes
for "same" padding, BatchNorm as Mul and Add, ReLU6 as Clip with Constant bounds, Identity nodes, a
ReduceMean over the spatial axes and MatMul + Add for the dense layer.

Needs PyTorch (the ``test`` extra pins the CPU build) and, for the default exporter, onnxscript.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

EXPORTERS = ("torchscript", "dynamo")
INPUT_NAME = "x"
OUTPUT_NAME = "y"
# the shape the networks are exported at and bound to on import (batch 2 when exporting: an example batch
# of 1 would let the exporters specialize the dynamic dimension to 1)
INPUT_SHAPE = (1, 3, 32, 32)
_CLASSES = 10
_OPSETS = {"torchscript": 17, "dynamo": 18}


def _same_padding(x: torch.Tensor, kernel: int, stride: int, dilation: int = 1) -> torch.Tensor:
    """TensorFlow's "same" padding for the input's size, read when the network runs (as timm's pad_same)."""
    height, width = x.size()[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + (kernel - 1) * dilation + 1 - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + (kernel - 1) * dilation + 1 - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class _ConvSame(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _same_padding(x, self.kernel_size[0], self.stride[0], self.dilation[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, gate, activation) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        self.gate, self.activation = gate, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.activation(self.reduce(scale))))


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


class SamePadNet(nn.Module):
    """EfficientNet-style: run-time "same" padding, BatchNorm, SiLU, squeeze-excite, view from shapes."""

    dynamic_spatial = True

    def __init__(self) -> None:
        super().__init__()
        self.stem = _ConvSame(3, 16, 3, stride=2, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.depthwise = _ConvSame(16, 16, 5, stride=2, groups=16, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(16)
        self.se = _SqueezeExcite(16, torch.sigmoid, F.silu)
        self.project = nn.Conv2d(16, 24, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, _CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.stem_bn(self.stem(x)))
        x = self.se(F.silu(self.depthwise_bn(self.depthwise(x))))
        x = F.adaptive_avg_pool2d(self.project_bn(self.project(x)), 1)
        return self.fc(x.view(x.size(0), -1))


class MobileNet(nn.Module):
    """MobileNetV3/ShuffleNet-style: hardswish, dilated depthwise, hardsigmoid SE, grouped convolutions
    around a channel shuffle."""

    dynamic_spatial = False

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.stem_bn = nn.BatchNorm2d(16)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)
        self.se = _SqueezeExcite(16, F.hardsigmoid, F.relu)
        self.grouped = nn.Conv2d(16, 32, 1, groups=4)
        self.grouped_3x3 = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.fc = nn.Linear(32, _CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.stem_bn(self.stem(x)))
        x = self.se(F.hardswish(self.dilated(x)))
        x = self.grouped_3x3(_channel_shuffle(F.relu(self.grouped(x)), 4))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PyramidNet(nn.Module):
    """Pyramid pooling: adaptive pooling to non-1 sizes, resizes to a size read from the tensor and by a
    scale factor, a concatenation, BatchNorm before a convolution."""

    dynamic_spatial = False

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.down = nn.Conv2d(16, 16, 3, 2, 1)
        self.branches = nn.ModuleList(nn.Conv2d(16, 4, 1) for _ in range(2))
        self.fuse_bn = nn.BatchNorm2d(24)
        self.fuse = nn.Conv2d(24, 16, 1)
        self.fc = nn.Linear(16 * 4, _CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = x + F.interpolate(F.relu(self.down(x)), scale_factor=2.0, mode="nearest")
        height, width = x.shape[-2:]
        pooled = [F.interpolate(self.branches[0](F.adaptive_avg_pool2d(x, 2)), size=(height, width), mode="nearest"),
                  F.interpolate(self.branches[1](F.adaptive_avg_pool2d(x, 4)), size=(height, width),
                                mode="bilinear", align_corners=False)]
        x = self.fuse(self.fuse_bn(torch.cat([x] + pooled, 1)))
        x = F.adaptive_avg_pool2d(x, 2)
        return self.fc(x.reshape(x.shape[0], -1))


TORCH_NETWORKS = {"same_pad": SamePadNet, "mobile": MobileNet, "pyramid": PyramidNet}


def torch_network(name: str, seed: int = 0) -> nn.Module:
    """The network ``name`` of :data:`TORCH_NETWORKS` in inference mode, its weights and BatchNorm
    statistics drawn from ``seed`` (statistics away from the identity, so folding them shows)."""
    if name not in TORCH_NETWORKS:
        raise KeyError(f"unknown network {name!r}; networks: {', '.join(TORCH_NETWORKS)}")
    torch.manual_seed(seed)
    network = TORCH_NETWORKS[name]().eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return network


def export_torch_network(name: str, exporter: str, path: str | Path) -> Path:
    """Export network ``name`` to ``path`` with ``exporter`` (``"torchscript"``: ``dynamo=False``, opset 17;
    ``"dynamo"``: the default ``torch.export``-based one, opset 18), its batch dimension dynamic (and its
    height and width where the network computes its padding from them)."""
    if exporter not in EXPORTERS:
        raise KeyError(f"unknown exporter {exporter!r}; exporters: {', '.join(EXPORTERS)}")
    network = torch_network(name)
    example = torch.randn(2, *INPUT_SHAPE[1:])
    dynamic = {0: "batch"} | ({2: "height", 3: "width"} if network.dynamic_spatial else {})
    path = Path(path)
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=_OPSETS[exporter])
    if exporter == "torchscript":
        torch.onnx.export(network, (example,), str(path), dynamo=False, dynamic_axes={INPUT_NAME: dynamic}, **common)
    else:
        dims = {axis: torch.export.Dim(label, min=8 if axis else 1) for axis, label in dynamic.items()}
        torch.onnx.export(network, (example,), str(path), dynamo=True, dynamic_shapes={INPUT_NAME: dims},
                          verbose=False, **common)
    return path


# --- a TensorFlow converter's idioms ---------------------------------------------------------------------

TF_INPUT_NAME = "input_1"
TF_INPUT_SHAPE = (1, 32, 32, 3)


def tf_style_model(seed: int = 0) -> onnx.ModelProto:
    """A small Keras-like classifier written as tf2onnx writes one (see the module's docstring); input
    ``input_1`` of shape (1, 32, 32, 3) NHWC, output ``probabilities`` (1, 10)."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def conv(prefix: str, x: str, size: int, in_channels: int, out_channels: int, kernel: int, stride: int,
             groups: int = 1) -> tuple[str, int]:
        # TensorFlow keeps kernels as HWIO (depthwise: H, W, C, multiplier); the converter transposes at run time
        hwio = rng.standard_normal((kernel, kernel, in_channels // groups, out_channels)).astype(np.float32)
        hwio *= np.sqrt(2.0 / (kernel * kernel * in_channels // groups))
        nodes.append(helper.make_node("Transpose", [constant(f"{prefix}/kernel", hwio)], [f"{prefix}/kernel_oihw"],
                                      name=f"{prefix}/kernel_transpose", perm=[3, 2, 0, 1]))
        out_size = math.ceil(size / stride)
        total = max((out_size - 1) * stride + kernel - size, 0)  # "same" padding, the odd one at the end
        pads = [0, 0, total // 2, total // 2, 0, 0, total - total // 2, total - total // 2]
        nodes.append(helper.make_node("Pad", [x, constant(f"{prefix}/pads", np.array(pads, np.int64))],
                                      [f"{prefix}/padded"], name=f"{prefix}/Pad", mode="constant"))
        nodes.append(helper.make_node("Conv", [f"{prefix}/padded", f"{prefix}/kernel_oihw",
                                               constant(f"{prefix}/bias", np.zeros(out_channels, np.float32))],
                                      [f"{prefix}/conv"], name=f"{prefix}/Conv2D", strides=[stride, stride],
                                      group=groups))
        # the BatchNorm folded by TensorFlow's converter into a multiply and an add over channels
        scale = rng.uniform(0.5, 1.5, (1, out_channels, 1, 1)).astype(np.float32)
        shift = rng.uniform(-0.5, 0.5, (1, out_channels, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("Mul", [f"{prefix}/conv", constant(f"{prefix}/bn_scale", scale)],
                                      [f"{prefix}/scaled"], name=f"{prefix}/bn_mul"))
        nodes.append(helper.make_node("Add", [f"{prefix}/scaled", constant(f"{prefix}/bn_shift", shift)],
                                      [f"{prefix}/bn"], name=f"{prefix}/bn_add"))
        nodes.append(helper.make_node("Constant", [], [f"{prefix}/relu6_min"], name=f"{prefix}/min",
                                      value=numpy_helper.from_array(np.array(0.0, np.float32))))
        nodes.append(helper.make_node("Constant", [], [f"{prefix}/relu6_max"], name=f"{prefix}/max",
                                      value=numpy_helper.from_array(np.array(6.0, np.float32))))
        nodes.append(helper.make_node("Clip", [f"{prefix}/bn", f"{prefix}/relu6_min", f"{prefix}/relu6_max"],
                                      [f"{prefix}/relu6"], name=f"{prefix}/Relu6"))
        nodes.append(helper.make_node("Identity", [f"{prefix}/relu6"], [f"{prefix}/out"], name=f"{prefix}/Identity"))
        return f"{prefix}/out", out_size

    nodes.append(helper.make_node("Transpose", [TF_INPUT_NAME], ["nchw"], name="input_transpose", perm=[0, 3, 1, 2]))
    x, size = conv("stem", "nchw", TF_INPUT_SHAPE[1], 3, 16, 3, 2)
    x, size = conv("depthwise", x, size, 16, 16, 3, 1, groups=16)
    x, size = conv("pointwise", x, size, 16, 32, 1, 1)
    nodes.append(helper.make_node("ReduceMean", [x], ["pooled"], name="global_average_pooling", axes=[2, 3],
                                  keepdims=0))
    dense = (rng.standard_normal((32, _CLASSES)) / np.sqrt(32)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", ["pooled", constant("dense/kernel", dense)], ["dense/matmul"],
                                  name="dense/MatMul"))
    nodes.append(helper.make_node("Add", ["dense/matmul", constant("dense/bias", rng.uniform(-0.1, 0.1, _CLASSES)
                                                                   .astype(np.float32))],
                                  ["dense/logits"], name="dense/BiasAdd"))
    nodes.append(helper.make_node("Softmax", ["dense/logits"], ["probabilities"], name="dense/Softmax", axis=-1))
    graph = helper.make_graph(nodes, "tf_style", [helper.make_tensor_value_info(TF_INPUT_NAME, TensorProto.FLOAT,
                                                                                 list(TF_INPUT_SHAPE))],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, _CLASSES])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx-style")
    model.ir_version = 8
    return model
