"""Deterministic ONNX model zoo for tests and benchmarks.

Builds ResNet-18, ResNet-50 (v1.5), MobileNetV1, MobileNetV2, VGG-16 and
SqueezeNet 1.1 from numpy and ``onnx.helper`` alone (no downloads), with
weights drawn from a seeded generator, plus small variants of the same
topologies for fast tests. :func:`conv_flops` counts the FLOPs of the Conv,
Gemm and MatMul nodes of any ONNX model with static shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

MODEL_NAMES: tuple[str, ...] = (
    "resnet18",
    "resnet50",
    "mobilenet_v1",
    "mobilenet_v2",
    "vgg16",
    "squeezenet1_1",
)

REFERENCE_GFLOP: dict[str, float] = {
    "resnet18": 3.63,
    "resnet50": 8.18,
    "mobilenet_v1": 1.14,
    "mobilenet_v2": 0.60,
    "vgg16": 30.9,
    "squeezenet1_1": 0.70,
}
"""Published GFLOPs (2 x multiply-adds) of the full-size models at batch 1."""

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

_OPSET = 17
_IR_VERSION = 8  # loadable by every onnxruntime release the project supports
_BN_EPSILON = 1e-5
_GAMMA_RANGE = (0.5, 1.5)
# A smaller gamma on the last BN of a residual branch keeps the sums of many
# residual blocks from growing without bound (ResNet-50 has 16 of them).
_RESIDUAL_GAMMA_RANGE = (0.2, 0.5)
_BN_SHIFT_STD = 0.1
_BN_VARIANCE_RANGE = (0.5, 1.5)
_BIAS_STD = 0.01

_Activation = Literal["relu", "relu6"]


@dataclass(frozen=True)
class _Config:
    """Size of one model variant: channel width multiplier, input size, classes."""

    width: float
    image_size: int
    num_classes: int

    def channels(self, base: int) -> int:
        """Scale a channel count of the full model, as torchvision's ``_make_divisible``."""
        divisor = 8
        scaled = base * self.width
        rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if rounded < 0.9 * scaled:
            rounded += divisor
        return rounded


_FULL_CONFIG = _Config(width=1.0, image_size=224, num_classes=1000)
_SMALL_CONFIGS: dict[str, _Config] = {
    "resnet18": _Config(width=1 / 8, image_size=64, num_classes=10),
    "resnet50": _Config(width=1 / 8, image_size=64, num_classes=10),
    "mobilenet_v1": _Config(width=1 / 4, image_size=64, num_classes=10),
    "mobilenet_v2": _Config(width=1 / 4, image_size=64, num_classes=10),
    # 1/16 rather than 1/8: VGG's two hidden FC layers would otherwise exceed 2 MB.
    "vgg16": _Config(width=1 / 16, image_size=32, num_classes=10),
    "squeezenet1_1": _Config(width=1 / 4, image_size=64, num_classes=10),
}


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


class GraphBuilder:
    """Collects nodes and seeded initializers; every tensor is named after its producer."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._model = onnx.ModelProto()

    def _constant(self, name: str, array: np.ndarray) -> str:
        # Filled in place: make_graph/make_model would copy VGG-16's 550 MB of weights twice.
        tensor = self._model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = TensorProto.FLOAT
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        return name

    def _normal(self, name: str, shape: tuple[int, ...], std: float) -> str:
        values = self._rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)
        return self._constant(name, values)

    def _he_normal(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        return self._normal(name, shape, math.sqrt(2.0 / fan_in))

    def _small_bias(self, name: str, size: int) -> str:
        return self._normal(name, (size,), _BIAS_STD)

    def node(self, op_type: str, name: str, inputs: list[str], **attributes: object) -> str:
        self._model.graph.node.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def conv(
        self,
        name: str,
        x: str,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bias: bool = False,
    ) -> str:
        weight_shape = (out_channels, in_channels // groups, kernel, kernel)
        inputs = [x, self._he_normal(f"{name}.weight", weight_shape, math.prod(weight_shape[1:]))]
        if bias:
            inputs.append(self._small_bias(f"{name}.bias", out_channels))
        pad = kernel // 2 if padding is None else padding
        return self.node(
            "Conv",
            name,
            inputs,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )

    def batch_norm(
        self, name: str, x: str, channels: int, gamma_range: tuple[float, float] = _GAMMA_RANGE
    ) -> str:
        rng = self._rng
        parameters = {
            "scale": rng.uniform(*gamma_range, channels),
            "bias": rng.normal(0.0, _BN_SHIFT_STD, channels),
            "running_mean": rng.normal(0.0, _BN_SHIFT_STD, channels),
            "running_var": rng.uniform(*_BN_VARIANCE_RANGE, channels),
        }
        inputs = [x] + [
            self._constant(f"{name}.{key}", value.astype(np.float32)) for key, value in parameters.items()
        ]
        return self.node("BatchNormalization", name, inputs, epsilon=_BN_EPSILON)

    def activation(self, kind: _Activation, name: str, x: str) -> str:
        if kind == "relu":
            return self.node("Relu", name, [x])
        low = self._constant(f"{name}.min", np.array(0.0, dtype=np.float32))
        high = self._constant(f"{name}.max", np.array(6.0, dtype=np.float32))
        return self.node("Clip", name, [x, low, high])

    def gemm(self, name: str, x: str, in_features: int, out_features: int) -> str:
        weight = self._he_normal(f"{name}.weight", (out_features, in_features), in_features)
        bias = self._small_bias(f"{name}.bias", out_features)
        return self.node("Gemm", name, [x, weight, bias], transB=1)

    def max_pool(
        self, name: str, x: str, kernel: int, stride: int, *, padding: int = 0, ceil_mode: bool = False
    ) -> str:
        return self.node(
            "MaxPool",
            name,
            [x],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[padding] * 4,
            ceil_mode=int(ceil_mode),
        )

    def global_pool_flatten(self, prefix: str, x: str) -> str:
        pooled = self.node("GlobalAveragePool", _join(prefix, "avgpool"), [x])
        return self.node("Flatten", _join(prefix, "flatten"), [pooled], axis=1)

    def to_model(
        self, graph_name: str, output: str, input_shape: list[int], output_shape: list[int]
    ) -> onnx.ModelProto:
        """The ONNX model of the nodes added so far: input ``"input"`` (float32 of ``input_shape``),
        the tensor ``output`` renamed to the model's output ``"logits"``."""
        model = self._model
        producer = next(node for node in model.graph.node if node.output[0] == output)
        producer.output[0] = OUTPUT_NAME
        model.graph.name = graph_name
        model.graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, input_shape))
        model.graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, output_shape))
        model.opset_import.append(helper.make_opsetid("", _OPSET))
        model.ir_version = _IR_VERSION
        # the name this module first had: it is part of every zoo model's fingerprint, which saved plans carry
        model.producer_name = "tvm_dse.testing.zoo"
        return model


def _conv_block(
    b: GraphBuilder,
    prefix: str,
    x: str,
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int | None = None,
    groups: int = 1,
    batch_norm: bool = True,
    activation: _Activation | None = "relu",
    suffix: str = "",
    gamma_range: tuple[float, float] = _GAMMA_RANGE,
) -> str:
    """Conv (biased only without BN) -> optional BatchNormalization -> optional activation.

    Nodes are named ``{prefix}.conv{suffix}``, ``{prefix}.bn{suffix}`` and
    ``{prefix}.{activation}{suffix}``.
    """
    y = b.conv(
        _join(prefix, f"conv{suffix}"),
        x,
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=padding,
        groups=groups,
        bias=not batch_norm,
    )
    if batch_norm:
        y = b.batch_norm(_join(prefix, f"bn{suffix}"), y, out_channels, gamma_range)
    if activation is not None:
        y = b.activation(activation, _join(prefix, f"{activation}{suffix}"), y)
    return y


_BOTTLENECK_EXPANSION = 4
_RESNET_STAGE_WIDTHS = (64, 128, 256, 512)


def _residual_output(
    b: GraphBuilder,
    prefix: str,
    x: str,
    branch: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    relu_suffix: str,
) -> str:
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv_block(
            b, f"{prefix}.downsample", x, in_channels, out_channels, 1, stride=stride, activation=None
        )
    total = b.node("Add", f"{prefix}.add", [branch, shortcut])
    return b.activation("relu", f"{prefix}.relu{relu_suffix}", total)


def _basic_block(b: GraphBuilder, prefix: str, x: str, in_channels: int, width: int, stride: int) -> str:
    y = _conv_block(b, prefix, x, in_channels, width, 3, stride=stride, suffix="1")
    y = _conv_block(
        b, prefix, y, width, width, 3, activation=None, suffix="2", gamma_range=_RESIDUAL_GAMMA_RANGE
    )
    return _residual_output(b, prefix, x, y, in_channels, width, stride, relu_suffix="2")


def _bottleneck(b: GraphBuilder, prefix: str, x: str, in_channels: int, width: int, stride: int) -> str:
    out_channels = width * _BOTTLENECK_EXPANSION
    y = _conv_block(b, prefix, x, in_channels, width, 1, suffix="1")
    # ResNet v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
    y = _conv_block(b, prefix, y, width, width, 3, stride=stride, suffix="2")
    y = _conv_block(
        b, prefix, y, width, out_channels, 1, activation=None, suffix="3", gamma_range=_RESIDUAL_GAMMA_RANGE
    )
    return _residual_output(b, prefix, x, y, in_channels, out_channels, stride, relu_suffix="3")


def _resnet(b: GraphBuilder, x: str, config: _Config, blocks_per_stage: tuple[int, ...], bottleneck: bool) -> str:
    stem_channels = config.channels(64)
    y = _conv_block(b, "", x, 3, stem_channels, 7, stride=2, suffix="1")
    y = b.max_pool("maxpool", y, 3, 2, padding=1)
    block = _bottleneck if bottleneck else _basic_block
    expansion = _BOTTLENECK_EXPANSION if bottleneck else 1
    in_channels = stem_channels
    for stage, (base_width, num_blocks) in enumerate(zip(_RESNET_STAGE_WIDTHS, blocks_per_stage), start=1):
        width = config.channels(base_width)
        for index in range(num_blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            y = block(b, f"layer{stage}.{index}", y, in_channels, width, stride)
            in_channels = width * expansion
    return b.gemm("fc", b.global_pool_flatten("", y), in_channels, config.num_classes)


def _resnet18(b: GraphBuilder, x: str, config: _Config) -> str:
    return _resnet(b, x, config, (2, 2, 2, 2), bottleneck=False)


def _resnet50(b: GraphBuilder, x: str, config: _Config) -> str:
    return _resnet(b, x, config, (3, 4, 6, 3), bottleneck=True)


# (output channels, stride) of each depthwise-separable block.
_MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
)


def _mobilenet_v1(b: GraphBuilder, x: str, config: _Config) -> str:
    in_channels = config.channels(32)
    y = _conv_block(b, "features.0", x, 3, in_channels, 3, stride=2)
    for index, (base_channels, stride) in enumerate(_MOBILENET_V1_BLOCKS, start=1):
        out_channels = config.channels(base_channels)
        y = _conv_block(
            b, f"features.{index}.depthwise", y, in_channels, in_channels, 3, stride=stride, groups=in_channels
        )
        y = _conv_block(b, f"features.{index}.pointwise", y, in_channels, out_channels, 1)
        in_channels = out_channels
    return b.gemm("fc", b.global_pool_flatten("", y), in_channels, config.num_classes)


# (expansion ratio, output channels, repeats, stride of the first repeat), as in the paper.
_MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _inverted_residual(
    b: GraphBuilder,
    prefix: str,
    x: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    expand_ratio: int,
    has_residual: bool,
) -> str:
    hidden = in_channels * expand_ratio
    y = x
    if expand_ratio != 1:
        y = _conv_block(b, f"{prefix}.expand", y, in_channels, hidden, 1, activation="relu6")
    y = _conv_block(
        b, f"{prefix}.depthwise", y, hidden, hidden, 3, stride=stride, groups=hidden, activation="relu6"
    )
    y = _conv_block(
        b,
        f"{prefix}.project",
        y,
        hidden,
        out_channels,
        1,
        activation=None,
        gamma_range=_RESIDUAL_GAMMA_RANGE if has_residual else _GAMMA_RANGE,
    )
    if has_residual:
        y = b.node("Add", f"{prefix}.add", [y, x])
    return y


def _mobilenet_v2(b: GraphBuilder, x: str, config: _Config) -> str:
    in_base_channels = 32
    in_channels = config.channels(in_base_channels)
    y = _conv_block(b, "features.0", x, 3, in_channels, 3, stride=2, activation="relu6")
    blocks = [
        (expand_ratio, base_channels, first_stride if repeat == 0 else 1)
        for expand_ratio, base_channels, repeats, first_stride in _MOBILENET_V2_STAGES
        for repeat in range(repeats)
    ]
    for index, (expand_ratio, base_channels, stride) in enumerate(blocks, start=1):
        out_channels = config.channels(base_channels)
        # Decided on the full model's channels: narrow variants clamp 32 and 16 to the
        # same 8 channels, which must not add a residual the full model lacks.
        has_residual = stride == 1 and in_base_channels == base_channels
        y = _inverted_residual(
            b, f"features.{index}", y, in_channels, out_channels, stride, expand_ratio, has_residual
        )
        in_channels, in_base_channels = out_channels, base_channels
    last_channels = config.channels(1280)
    y = _conv_block(b, f"features.{len(blocks) + 1}", y, in_channels, last_channels, 1, activation="relu6")
    return b.gemm("fc", b.global_pool_flatten("", y), last_channels, config.num_classes)


# (channels, number of 3x3 convs) of each stage; every stage ends in a 2x2 max pool.
_VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
_VGG16_HIDDEN_FEATURES = 4096


def _vgg16(b: GraphBuilder, x: str, config: _Config) -> str:
    y = x
    in_channels = 3
    for stage, (base_channels, num_convs) in enumerate(_VGG16_STAGES, start=1):
        out_channels = config.channels(base_channels)
        for index in range(1, num_convs + 1):
            y = _conv_block(
                b, f"block{stage}", y, in_channels, out_channels, 3, batch_norm=False, suffix=str(index)
            )
            in_channels = out_channels
        y = b.max_pool(f"block{stage}.pool", y, 2, 2)
    feature_size = config.image_size // 2 ** len(_VGG16_STAGES)
    hidden = config.channels(_VGG16_HIDDEN_FEATURES)
    y = b.node("Flatten", "classifier.flatten", [y], axis=1)
    y = b.activation("relu", "classifier.relu1", b.gemm("classifier.fc1", y, in_channels * feature_size**2, hidden))
    y = b.activation("relu", "classifier.relu2", b.gemm("classifier.fc2", y, hidden, hidden))
    return b.gemm("classifier.fc3", y, hidden, config.num_classes)


# (squeeze channels, expand channels per branch) of the fire modules after each max pool.
_SQUEEZENET_1_1_STAGES = (
    ((16, 64), (16, 64)),
    ((32, 128), (32, 128)),
    ((48, 192), (48, 192), (64, 256), (64, 256)),
)


def _fire(b: GraphBuilder, prefix: str, x: str, in_channels: int, squeeze: int, expand: int) -> str:
    squeezed = _conv_block(b, f"{prefix}.squeeze", x, in_channels, squeeze, 1, batch_norm=False)
    expanded_1x1 = _conv_block(b, f"{prefix}.expand1x1", squeezed, squeeze, expand, 1, batch_norm=False)
    expanded_3x3 = _conv_block(b, f"{prefix}.expand3x3", squeezed, squeeze, expand, 3, batch_norm=False)
    return b.node("Concat", f"{prefix}.concat", [expanded_1x1, expanded_3x3], axis=1)


def _squeezenet1_1(b: GraphBuilder, x: str, config: _Config) -> str:
    in_channels = config.channels(64)
    y = _conv_block(b, "stem", x, 3, in_channels, 3, stride=2, padding=0, batch_norm=False)
    fire_index = 2  # the paper numbers fire modules from fire2
    for stage, fires in enumerate(_SQUEEZENET_1_1_STAGES, start=1):
        y = b.max_pool(f"pool{stage}", y, 3, 2, ceil_mode=True)
        for base_squeeze, base_expand in fires:
            expand = config.channels(base_expand)
            y = _fire(b, f"fire{fire_index}", y, in_channels, config.channels(base_squeeze), expand)
            in_channels = 2 * expand
            fire_index += 1
    y = _conv_block(b, "classifier", y, in_channels, config.num_classes, 1, batch_norm=False)
    return b.global_pool_flatten("classifier", y)


_ARCHITECTURES: dict[str, Callable[[GraphBuilder, str, _Config], str]] = {
    "resnet18": _resnet18,
    "resnet50": _resnet50,
    "mobilenet_v1": _mobilenet_v1,
    "mobilenet_v2": _mobilenet_v2,
    "vgg16": _vgg16,
    "squeezenet1_1": _squeezenet1_1,
}


def build_model(name: str, small: bool = False, seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """Build one zoo model as a checked ONNX model with seeded random weights.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    small : bool, optional
        Build the small variant: the same nodes and stride pattern with fewer
        channels, a 64x64 input (32x32 for VGG-16) and 10 classes. Otherwise
        the full model takes 224x224 inputs and has 1000 classes.
    seed : int, optional
        Seed of ``np.random.default_rng`` that draws all weights; equal seeds
        give byte-identical models.
    batch : int, optional
        Static batch size of the input ``"input"`` (NCHW float32) and of the
        output ``"logits"``.

    Returns
    -------
    onnx.ModelProto
        Opset 17, IR version 8, validated with ``onnx.checker.check_model``
        (``full_check=True``).

    Raises
    ------
    ValueError
        If `name` is not a zoo model or `batch` is not positive.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    config = _SMALL_CONFIGS[name] if small else _FULL_CONFIG
    builder = GraphBuilder(np.random.default_rng(seed))
    logits = _ARCHITECTURES[name](builder, INPUT_NAME, config)
    size = config.image_size
    model = builder.to_model(f"{name}_small" if small else name, logits, [batch, 3, size, size],
                             [batch, config.num_classes])
    onnx.checker.check_model(model, full_check=True)
    return model


# Shape-carrying constants (Reshape targets, Slice bounds) are tiny; only initializers
# up to this size keep their values for shape inference in conv_flops.
_MAX_PROPAGATED_INITIALIZER_SIZE = 1024


def _without_weight_values(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy `model` with its large initializers turned into typed graph inputs.

    Shape inference serializes the model it is given; dropping the weight values
    keeps that cheap for large models such as VGG-16.
    """
    skeleton = onnx.ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    source, graph = model.graph, skeleton.graph
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    graph.sparse_initializer.extend(source.sparse_initializer)
    input_names = {info.name for info in source.input}
    for tensor in source.initializer:
        if math.prod(tensor.dims) <= _MAX_PROPAGATED_INITIALIZER_SIZE:
            graph.initializer.append(tensor)
        elif tensor.name not in input_names:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return skeleton


def _static_shape(value: onnx.ValueInfoProto | None, name: str) -> tuple[int, ...]:
    if value is None or not value.type.tensor_type.HasField("shape"):
        raise ValueError(f"shape inference found no shape for tensor {name!r}")
    dims = value.type.tensor_type.shape.dim
    if not all(dim.HasField("dim_value") for dim in dims):
        raise ValueError(f"tensor {name!r} has a dynamic shape; conv_flops needs static shapes")
    return tuple(dim.dim_value for dim in dims)


def conv_flops(model: onnx.ModelProto) -> int:
    """Count the FLOPs of the Conv, Gemm and MatMul nodes of a model.

    One multiply-add counts as two FLOPs; bias additions and all other nodes
    are ignored. Grouped convolutions count ``in_channels / group`` inputs per
    output, as the weight shape says. Shapes come from
    ``onnx.shape_inference`` (with data propagation), so any model with static
    shapes works, not only the zoo's. Nodes inside subgraphs (If, Loop) are not
    counted.

    Parameters
    ----------
    model : onnx.ModelProto
        Model whose main graph is counted.

    Returns
    -------
    int
        Twice the number of multiply-adds.

    Raises
    ------
    ValueError
        If an input or output of a counted node has no static inferred shape.
    """
    graph = onnx.shape_inference.infer_shapes(_without_weight_values(model), data_prop=True).graph
    values = {info.name: info for info in (*graph.input, *graph.value_info, *graph.output)}
    initializer_shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}

    def shape(name: str) -> tuple[int, ...]:
        if name in initializer_shapes:
            return initializer_shapes[name]
        return _static_shape(values.get(name), name)

    multiply_adds = 0
    for node in graph.node:
        if node.op_type == "Conv":
            reduction = math.prod(shape(node.input[1])[1:])
        elif node.op_type == "Gemm":
            trans_a = next((attribute.i for attribute in node.attribute if attribute.name == "transA"), 0)
            reduction = shape(node.input[0])[0 if trans_a else 1]
        elif node.op_type == "MatMul":
            reduction = shape(node.input[0])[-1]
        else:
            continue
        multiply_adds += math.prod(shape(node.output[0])) * reduction
    return 2 * multiply_adds
