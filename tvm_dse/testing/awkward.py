"""Small ONNX models with the channel counts and shapes that break layout assumptions, for the target
matrix (:mod:`tvm_dse.testing.targets`): branches whose channels a vector block does not divide joined by
concatenations, residual adds fed by kernels of different kinds, a depthwise convolution with a channel
multiplier, a grouped convolution whose groups straddle vector blocks, 1- and 3-channel inputs, odd
spatial sizes and a 4-D model output.

Each model is a handful of layers on a small image, so a whole plan builds in seconds and runs on the
emulated board too. Like the zoo, weights come from a seeded generator: equal seeds give identical models.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from ..zoo import INPUT_NAME, GraphBuilder

_CLASSES = 10


def _relu_conv(b: GraphBuilder, name: str, x: str, in_channels: int, out_channels: int, kernel: int,
               stride: int = 1, groups: int = 1) -> str:
    """Conv (with bias) -> Relu; the Relu is named ``{name}.relu``."""
    y = b.conv(name, x, in_channels, out_channels, kernel, stride=stride, groups=groups, bias=True)
    return b.activation("relu", f"{name}.relu", y)


def _classifier(b: GraphBuilder, x: str, channels: int) -> str:
    return b.gemm("fc", b.global_pool_flatten("head", x), channels, _CLASSES)


def _concat_8(b: GraphBuilder, x: str) -> tuple[str, list[int], list[int]]:
    """A concatenation of 16, 8 and 8 channels: 32 in all, so a 16-lane block holds the result and the
    16-channel branch's output but neither 8-channel branch."""
    y = _relu_conv(b, "stem", x, 3, 16, 3)
    branches = [_relu_conv(b, "wide", y, 16, 16, 1), _relu_conv(b, "narrow_a", y, 16, 8, 3),
                _relu_conv(b, "narrow_b", y, 16, 8, 1)]
    joined = b.node("Concat", "concat", branches, axis=1)
    y = _relu_conv(b, "after", joined, 32, 16, 3, stride=2)
    return _classifier(b, y, 16), [1, 3, 19, 19], [1, _CLASSES]


def _concat_2_6(b: GraphBuilder, x: str) -> tuple[str, list[int], list[int]]:
    """A 1-channel image, a concatenation of a 2- and a 6-channel branch (8 in all: a 4-lane block holds
    the result but neither branch), and the 4-D feature map as the model's output."""
    y = _relu_conv(b, "stem", x, 1, 8, 3)
    joined = b.node("Concat", "concat", [_relu_conv(b, "two", y, 8, 2, 1), _relu_conv(b, "six", y, 8, 6, 3)], axis=1)
    y = _relu_conv(b, "after", joined, 8, 8, 3)
    return b.conv("head", y, 8, 4, 1, bias=True), [1, 1, 15, 15], [1, 4, 15, 15]


def _concat_mixed(b: GraphBuilder, x: str) -> tuple[str, list[int], list[int]]:
    """Branches of 3, 5, 6, 8, 12 and 20 channels (54 in all) joined by one concatenation, after a max pool."""
    y = _relu_conv(b, "stem", x, 3, 16, 3, stride=2)
    y = b.max_pool("pool", y, 3, 1, padding=1)
    widths = (3, 5, 6, 8, 12, 20)
    branches = [_relu_conv(b, f"branch{width}", y, 16, width, 3 if width % 2 else 1) for width in widths]
    joined = b.node("Concat", "concat", branches, axis=1)
    y = _relu_conv(b, "after", joined, sum(widths), 24, 3)
    return _classifier(b, y, 24), [1, 3, 21, 21], [1, _CLASSES]


def _residual_mixed(b: GraphBuilder, x: str) -> tuple[str, list[int], list[int]]:
    """Residual adds of a dense 3x3 convolution and a depthwise one (strategies of different kinds, so
    plans give them different layouts), and of a 1x1 convolution and the stem."""
    stem = _relu_conv(b, "stem", x, 3, 16, 3, stride=2)
    dense = b.conv("dense", stem, 16, 16, 3, bias=True)
    depthwise = b.conv("depthwise", stem, 16, 16, 3, groups=16, bias=True)
    y = b.activation("relu", "add1.relu", b.node("Add", "add1", [dense, depthwise]))
    y = b.node("Add", "add2", [b.conv("project", y, 16, 16, 1, bias=True), stem])
    y = b.node("AveragePool", "avgpool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    return _classifier(b, y, 16), [1, 3, 17, 17], [1, _CLASSES]


def _grouped_depthwise(b: GraphBuilder, x: str) -> tuple[str, list[int], list[int]]:
    """A 1-channel image; a depthwise convolution with channel multiplier 2 (8 -> 16 channels); a grouped
    convolution of 4 groups of 4 -> 6 channels, so its groups straddle 4-, 8- and 16-lane blocks."""
    y = _relu_conv(b, "stem", x, 1, 8, 3)
    y = _relu_conv(b, "depthwise_x2", y, 8, 16, 3, groups=8)
    y = _relu_conv(b, "grouped", y, 16, 24, 3, stride=2, groups=4)
    y = _relu_conv(b, "project", y, 24, 12, 1)
    return _classifier(b, y, 12), [1, 1, 17, 17], [1, _CLASSES]


_AWKWARD: dict[str, Callable[[GraphBuilder, str], tuple[str, list[int], list[int]]]] = {
    "concat_8": _concat_8,
    "concat_2_6": _concat_2_6,
    "concat_mixed": _concat_mixed,
    "residual_mixed": _residual_mixed,
    "grouped_depthwise": _grouped_depthwise,
}
AWKWARD_NAMES: tuple[str, ...] = tuple(_AWKWARD)


def build_awkward_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """Build one of :data:`AWKWARD_NAMES` (opset 17, checked), input ``"input"``, output ``"logits"``."""
    if name not in _AWKWARD:
        raise ValueError(f"unknown awkward model {name!r}; expected one of {', '.join(AWKWARD_NAMES)}")
    builder = GraphBuilder(np.random.default_rng(seed))
    output, input_shape, output_shape = _AWKWARD[name](builder, INPUT_NAME)
    model = builder.to_model(name, output, input_shape, output_shape)
    onnx.checker.check_model(model, full_check=True)
    return model
