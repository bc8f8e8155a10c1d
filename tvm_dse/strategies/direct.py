"""Direct convolution in the model's plain layouts: NCHW (vectorized along output width) and NHWC
(vectorized along output channels). Neither needs a layout conversion next to a plain-layout neighbour."""

from __future__ import annotations

from tvm import s_tir, te, topi

from ..quant.scheme import ActivationQuant
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, Decider, Strategy, StrategyLayouts, finish_register_tiled, largest_divisor_at_most,
                   max_accumulators, output_stage, pad_input, padded_input_bytes)
from .registry import register


class _DirectBase(Strategy):
    ungrouped_only = True
    schedule_version = 2  # 2: the register tile written back by unrolled code (:func:`.base.write_back_tile`)

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        return padded_input_bytes(workload)


@register
class DirectNCHW(_DirectBase):
    """Direct convolution, NCHW in and out, OIHW weights; output width in vector lanes, output channels
    blocked in registers."""

    name = "direct_nchw"

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NCHW", "NCHW", "OIHW")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        return topi.identity(weight)

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        padded = pad_input(data, workload.padding, "NCHW")
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        rc = te.reduce_axis((0, workload.in_channels), "rc")
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        return te.compute(
            workload.output_shape,
            lambda n, k, y, x: te.sum(padded[n, rc, y * sh + ry * dh, x * sw + rx * dw] * weight[k, rc, ry, rx],
                                      axis=[rc, ry, rx]),
            name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        lanes = target.fp32_lanes
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, k, y, x, rc, ry, rx = sch.get_loops(conv)
        # whole vectors along the width: a 14-wide vector on 8 lanes measured 2.4x slower than 8
        whole = [d for d in (2 * lanes, lanes) if workload.out_width % d == 0]
        x_vector = whole[0] if whole else largest_divisor_at_most(workload.out_width, lanes)
        vectors = -(-x_vector // lanes)
        k_inner = largest_divisor_at_most(workload.out_channels, max(1, max_accumulators(target) // vectors))
        ko, ki = decider.tile("k", k, 2, [workload.out_channels // k_inner, k_inner])
        yo, yi = decider.tile("y", y, 2, [workload.out_height, 1])
        xo, xi = decider.tile("x", x, 2, [workload.out_width // x_vector, x_vector])
        sch.reorder(n, ko, yo, xo, rc, ry, rx, ki, yi, xi)
        sch.vectorize(xi)
        sch.unroll(yi)
        sch.unroll(ki)
        finish_register_tiled(sch, conv, out, write_at=xo, parallel=(n, ko, yo), init_before=rc, pad_outer=2)


@register
class DirectNHWC(_DirectBase):
    """Direct convolution, NHWC in and out, HWIO weights; output channels in vector lanes, output
    pixels along the width blocked in registers."""

    name = "direct_nhwc"

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NHWC", "NHWC", "HWIO")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        return topi.transpose(weight, (2, 3, 1, 0))

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        padded = pad_input(data, workload.padding, "NHWC")
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        n, _, _, _ = workload.input_shape
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        rc = te.reduce_axis((0, workload.in_channels), "rc")
        return te.compute(
            (n, workload.out_height, workload.out_width, workload.out_channels),
            lambda b, y, x, k: te.sum(padded[b, y * sh + ry * dh, x * sw + rx * dw, rc] * weight[ry, rx, rc, k],
                                      axis=[ry, rx, rc]),
            name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        lanes = target.fp32_lanes
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, y, x, k, ry, rx, rc = sch.get_loops(conv)
        k_inner = largest_divisor_at_most(workload.out_channels, 2 * lanes)
        vectors = -(-k_inner // lanes)
        x_inner = largest_divisor_at_most(workload.out_width, max(1, max_accumulators(target) // vectors))
        ko, ki = decider.tile("k", k, 2, [workload.out_channels // k_inner, k_inner])
        yo, yi = decider.tile("y", y, 2, [workload.out_height, 1])
        xo, xi = decider.tile("x", x, 2, [workload.out_width // x_inner, x_inner])
        sch.reorder(n, yo, xo, ko, ry, rx, rc, yi, xi, ki)
        sch.vectorize(ki)
        sch.unroll(xi)
        sch.unroll(yi)
        finish_register_tiled(sch, conv, out, write_at=ko, parallel=(n, yo), init_before=ry, pad_outer=2)
