"""The conformance suite every strategy must pass: a matrix of workloads and epilogues, a float64 numpy
reference (for int8 strategies: the same quantized arithmetic in float64), and the check that a strategy
either matches it or declines through ``applies()``.

The matrix covers batch 1 and 2; 1x1, 3x3, 5x5, 7x7 and 1x7 kernels; strides 1, 2 and 3; symmetric and
asymmetric padding; dilation 2; odd and non-square images; channel counts that are not multiples of any
vector block; grouped and depthwise convolutions (with a channel multiplier); dense layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quant.scheme import ActivationQuant, quantize_weights_reference
from ..strategies.base import Epilogue, Strategy
from ..strategies.kernel import build_kernel, model_shapes
from ..target import DseTarget
from ..validation import relative_error
from ..workload import Workload

FP32_BOUND = 1e-4
# fp16 sums: every partial sum rounds to 11 bits (2^-11 relative); a few hundred terms stay well inside this
FP16_COMPUTE_BOUND = 2e-2

_RELU = Epilogue(bias=True, clip=Epilogue.RELU)
_RESIDUAL = Epilogue(bias=True, residual=True, clip=Epilogue.RELU)
_RELU6 = Epilogue(bias=True, clip=(0.0, 6.0))
_NONE = Epilogue()


def _conv(n, c, h, w, k, kernel, stride=1, padding=0, dilation=1, groups=1) -> Workload:
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    pad = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    return Workload("conv2d", n, c, h, w, k, kernel=pair(kernel), stride=pair(stride), padding=pad,
                    dilation=pair(dilation), groups=groups)


@dataclass(frozen=True)
class Case:
    """One conformance case: an id for test names, a workload and the epilogue fused into it."""

    id: str
    workload: Workload
    epilogue: Epilogue


CASES: tuple[Case, ...] = (
    Case("1x1_s1_odd", _conv(1, 16, 9, 9, 32, 1), _RELU),
    Case("3x3_s1_batch2", _conv(2, 16, 14, 14, 16, 3, padding=1), _RESIDUAL),
    Case("3x3_s2_odd", _conv(1, 8, 15, 15, 24, 3, stride=2, padding=1), _RELU6),
    Case("5x5_s1_nonsquare", _conv(1, 4, 11, 13, 8, 5, padding=2), _NONE),
    Case("7x7_s2_rgb", _conv(1, 3, 32, 32, 16, 7, stride=2, padding=3), _RELU),
    Case("1x7_s1", _conv(1, 12, 10, 10, 16, (1, 7), padding=(0, 3, 0, 3)), _RESIDUAL),
    Case("3x3_s3_asym_pad", _conv(1, 10, 17, 17, 12, 3, stride=3, padding=(1, 0, 2, 1)), _RELU),
    Case("3x3_dilation2", _conv(1, 8, 12, 12, 8, 3, padding=2, dilation=2), _RELU6),
    Case("3x3_asym_pad_odd_channels", _conv(1, 24, 8, 8, 40, 3, padding=(0, 1, 1, 0)), _NONE),
    Case("1x1_s2_batch2", _conv(2, 32, 14, 14, 64, 1, stride=2), _RESIDUAL),
    Case("3x3_s1_at7", _conv(1, 64, 7, 7, 64, 3, padding=1), _RESIDUAL),
    # the spatial pack's clamped flat tiling with input-channel chunks (4 chunks of 5 blocks)
    Case("1x1_s1_at7_chunked", _conv(1, 160, 7, 7, 256, 1), _RELU6),
    Case("3x3_s1_at28", _conv(1, 32, 28, 28, 32, 3, padding=1), _RELU),
    Case("3x3_s1_nopad", _conv(1, 16, 10, 10, 32, 3), _NONE),
    Case("3x3_s1_rgb", _conv(1, 3, 8, 8, 8, 3, padding=1), _RELU),
    Case("3x3_s1_channels_20_12", _conv(1, 20, 9, 9, 12, 3, padding=1), _RELU6),
    Case("3x3_s1_odd_size_wino", _conv(1, 16, 11, 11, 16, 3, padding=1), _RESIDUAL),
    Case("depthwise_3x3_s1", _conv(1, 32, 14, 14, 32, 3, padding=1, groups=32), _RELU6),
    Case("depthwise_3x3_s2_odd", _conv(1, 24, 15, 15, 24, 3, stride=2, padding=1, groups=24), _RELU),
    Case("depthwise_5x5_batch2", _conv(2, 16, 9, 9, 16, 5, padding=2, groups=16), _RESIDUAL),
    Case("depthwise_multiplier2", _conv(1, 8, 10, 10, 16, 3, padding=1, groups=8), _NONE),
    Case("grouped_g4", _conv(1, 16, 12, 12, 32, 3, padding=1, groups=4), _RELU),
    Case("grouped_g2_1x1", _conv(1, 6, 7, 7, 10, 1, groups=2), _RESIDUAL),
    Case("dense_64_10", Workload.dense(1, 64, 10), Epilogue(bias=True, residual=True)),
    Case("dense_32_8_plain", Workload.dense(1, 32, 8), _NONE),
    Case("dense_batch2_100_36", Workload.dense(2, 100, 36), Epilogue(bias=True)),
    Case("dense_17_5", Workload.dense(1, 17, 5), _RELU),
)


def reference_conv2d(data: np.ndarray, weight: np.ndarray, workload: Workload) -> np.ndarray:
    """The workload's convolution (or dense layer) in float64 numpy, straight from its definition."""
    data = np.asarray(data, np.float64)
    weight = np.asarray(weight, np.float64)
    if workload.op == "dense":
        return data @ weight
    top, left, bottom, right = workload.padding
    padded = np.pad(data, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = workload.stride, workload.dilation
    oh, ow = workload.out_height, workload.out_width
    groups = workload.groups
    cg, kg = workload.in_channels // groups, workload.out_channels // groups
    out = np.zeros(workload.output_shape)
    for g in range(groups):
        for ry in range(workload.kernel[0]):
            for rx in range(workload.kernel[1]):
                window = padded[:, g * cg:(g + 1) * cg, ry * dh:ry * dh + sh * (oh - 1) + 1:sh,
                                rx * dw:rx * dw + sw * (ow - 1) + 1:sw]
                out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", window, weight[g * kg:(g + 1) * kg, :, ry, rx])
    return out


def reference_output(data: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, residual: np.ndarray | None,
                     workload: Workload, epilogue: Epilogue) -> np.ndarray:
    """Reference convolution followed by the epilogue, in float64."""
    return _reference_epilogue(reference_conv2d(data, weight, workload), bias, residual, workload, epilogue)


def _reference_epilogue(out: np.ndarray, bias: np.ndarray | None, residual: np.ndarray | None, workload: Workload,
                        epilogue: Epilogue) -> np.ndarray:
    if epilogue.bias:
        out = out + (bias if workload.op == "dense" else bias[None, :, None, None])
    if epilogue.residual:
        out = out + residual
    if epilogue.clip is not None:
        out = np.clip(out, epilogue.clip[0], epilogue.clip[1])
    return out


def input_quant(strategy: Strategy, data: np.ndarray) -> ActivationQuant | None:
    """The input quantization a strategy reading 8-bit codes (int8) gets in the suite (the data's own
    range); None for the others."""
    return ActivationQuant.from_range(data.min(), data.max()) if strategy.takes_input_quant else None


def strategy_reference(strategy: Strategy, target: DseTarget, data: np.ndarray, weight: np.ndarray,
                       bias: np.ndarray | None, residual: np.ndarray | None, workload: Workload,
                       epilogue: Epilogue) -> np.ndarray:
    """What ``strategy`` must compute: the float64 reference for fp32 strategies; for int8 ones the same
    quantized arithmetic (input quantized with :func:`input_quant`, weights per channel with the
    strategy's range on ``target``, exact integer convolution, dequantized) in float64; for fp16 ones the
    convolution of the fp16-rounded weights (and input, where the target computes in fp16)."""
    if strategy.precision == "fp16":  # the weights as stored, the input as computed with
        data = data.astype(np.float16) if target.has_fp16 else data
        return reference_output(data, weight.astype(np.float16), bias, residual, workload, epilogue)
    quant = input_quant(strategy, data)
    if quant is None:
        return reference_output(data, weight, bias, residual, workload, epilogue)
    codes, scales = quantize_weights_reference(weight, strategy.weight_qmax(target))
    acc = reference_conv2d(quant.quantize(data).astype(np.float64) - quant.zero_point, codes, workload)
    out = acc * quant.scale * scales.astype(np.float64)[None, :, None, None]
    return _reference_epilogue(out, bias, residual, workload, epilogue)


def random_operands(workload: Workload, epilogue: Epilogue, seed: int = 0) -> dict[str, np.ndarray | None]:
    """Data, weight, bias and residual in model layouts, drawn from a seeded normal distribution."""
    rng = np.random.default_rng(seed)
    data_shape, weight_shape, output_shape = model_shapes(workload)
    return {
        "data": rng.standard_normal(data_shape).astype(np.float32),
        "weight": rng.standard_normal(weight_shape).astype(np.float32),
        "bias": rng.standard_normal(workload.out_channels).astype(np.float32) if epilogue.bias else None,
        "residual": rng.standard_normal(output_shape).astype(np.float32) if epilogue.residual else None,
    }


def bound(strategy: Strategy, target: DseTarget) -> float:
    """The relative error ``strategy`` may have against :func:`strategy_reference` on ``target``."""
    return FP16_COMPUTE_BOUND if strategy.precision == "fp16" and target.has_fp16 else FP32_BOUND


def case_error(strategy: Strategy, case: Case, target: DseTarget, decisions: dict | None = None,
               seed: int = 0) -> float | str:
    """The relative error of ``strategy`` on ``case`` (built with ``decisions`` or its defaults), or the
    reason it declines the workload."""
    applicability = strategy.applies(case.workload, target)
    if not applicability:
        return applicability.reason
    operands = random_operands(case.workload, case.epilogue, seed)
    built = build_kernel(strategy, case.workload, target, case.epilogue, decisions,
                         quant=input_quant(strategy, operands["data"]))
    output = built.run(**operands)
    return relative_error(output, strategy_reference(strategy, target, **operands, workload=case.workload,
                                                     epilogue=case.epilogue))
