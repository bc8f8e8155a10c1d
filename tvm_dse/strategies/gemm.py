"""GEMM-based convolution in the plain layouts: im2col + GEMM in NCHW (any kernel), and 1x1 convolutions
in NHWC as a GEMM straight on the activation.

NCHW: out(K, OH*OW) = W(K, C*R*S) . cols(C*R*S, OH*OW). The im2col matrix ``cols`` is a stage of its own
(block :data:`IM2COL_BLOCK`, shaped (N, C, R, S, OH, OW)), built per pixel tile by default (or whole, a
decision), so a tile's columns are contiguous and stay in cache while every output channel block uses them.
The register tile holds output channels x rows x pixels with the reduction outside it; the lanes run along
the pixels of a row (when the width is a multiple of the lanes) or along the output channels, the
accumulators then held channel-innermost and transposed by the epilogue on the way out.

NHWC (1x1): out(N*OH*OW, K) = X(N*OH*OW, C) . W(C, K), output channels in the lanes.

A 1x1 NCHW GEMM reading the activation in place (no im2col copy) was measured and dropped: faster than
``direct_nchw`` everywhere, but slower than ``im2col_nchw`` on 11 of 14 ResNet-18/MobileNetV2 1x1 layers
(1 thread, AVX2; up to 1.8x at 7x7: a pixel tile's rows, one per input channel, spread over more cache
lines than L1 holds, where the im2col tile is contiguous) and at most 12% faster on the others.

Weights are packed (K/b, C, R, S, b), b two vectors of output channels (or one): a channel vector is one
contiguous load, and the channels of a pixels-in-lanes tile sit next to each other.
"""

from __future__ import annotations

from typing import Callable

from tvm import s_tir, te

from ..quant.scheme import ActivationQuant
from ..schedule_blocks import has_block, parallel_vectorized
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, PAD_BLOCK, Applicability, Decider, Strategy, StrategyLayouts, divisors,
                   largest_divisor_at_most, max_accumulators, output_stage, pad_input, padded_input_bytes,
                   write_back_tile)
from .registry import register

IM2COL_BLOCK = "im2col"


def _register_tile(workload: Workload, target: DseTarget, channels_in_lanes: bool) -> tuple[int, int, int]:
    """(output channels, rows, pixels) of the register tile.

    Up to two vectors along the lane axis (output channels, or pixels along the width), up to two rows,
    the other axis filling the accumulators. The most accumulators first, then the fewest loads per
    reduction step (vector loads + broadcasts), then one row. Measured on AVX2: 4 channels x 2 rows x 8
    pixels beat 8 x 1 x 8 by 15%, 16 channels x 2 x 2 pixels beat 16 x 1 x 2 by 2x.
    """
    lanes, limit = target.fp32_lanes, max_accumulators(target)
    k, height, width = workload.out_channels, workload.out_height, workload.out_width
    lane_extent, other_extent = (k, width) if channels_in_lanes else (width, k)
    candidates = []
    for vectors in (1, 2):
        if lane_extent % (vectors * lanes):
            continue
        for rows in (r for r in divisors(height) if r <= 2):
            other = largest_divisor_at_most(other_extent, max(1, limit // (vectors * rows)))
            loads = vectors + rows * other if channels_in_lanes else vectors * rows + other
            candidates.append((vectors * rows * other, -loads, -rows, (vectors * lanes, rows, other)))
    if candidates:
        along_lanes, rows, other = max(candidates)[3]
    else:  # the lane axis is no multiple of the lanes: one partial vector
        rows = 1
        along_lanes = largest_divisor_at_most(lane_extent, lanes)
        other = largest_divisor_at_most(other_extent, limit)
    return (along_lanes, rows, other) if channels_in_lanes else (other, rows, along_lanes)


def _weight_block(workload: Workload, target: DseTarget) -> int:
    """Output channels per packed weight block: two vectors, one, or (no multiple of the lanes) the largest
    divisor below one, so a register tile's channel vector never straddles two blocks."""
    lanes, k = target.fp32_lanes, workload.out_channels
    for block in (2 * lanes, lanes):
        if k % block == 0:
            return block
    return largest_divisor_at_most(k, lanes)


def _parallel_tasks(target: DseTarget) -> int:
    """Parallel iterations wanted: a few per core, so uneven shares cost little."""
    return 4 * (target.num_cores or 1)


def _schedule_gemm(sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider,
                   channels_in_lanes: bool, nchw: bool,
                   place_columns: Callable[[s_tir.LoopRV], None] | None = None) -> None:
    """Register-tile the main block, fuse the epilogue into it, parallelize.

    Loops: (output channel groups, batch, row tiles, [pixel tiles], channel tiles, reduction, register
    tile). Each parallel iteration allocates its accumulators (and im2col tile) through the runtime
    (measured 26 ns a tile, 1.6x on a 1x1 layer when every tile was a parallel iteration), so the
    parallel loop takes the pixel tiles only when the rows alone are too few; the channel groups (the
    outer factor of decision "k") add parallelism to small images. ``place_columns`` gets the pixel tile
    loop, to place the stages that build the right-hand matrix there.
    """
    conv = sch.get_sblock(MAIN_BLOCK)
    out = output_stage(sch, conv)
    loops = sch.get_loops(conv)
    n, k, y, x = (loops[0], loops[1], loops[2], loops[3]) if nchw else (loops[0], loops[3], loops[1], loops[2])
    reduction = loops[4:]
    lanes, limit = target.fp32_lanes, max_accumulators(target)
    k_tile, y_tile, x_tile = _register_tile(workload, target, channels_in_lanes)
    pixel_tiles = workload.batch * (workload.out_height // y_tile) * (workload.out_width // x_tile)
    k_tiles = workload.out_channels // k_tile
    groups = min([d for d in divisors(k_tiles) if d * pixel_tiles >= _parallel_tasks(target)] or [k_tiles])
    kg, ko, ki = decider.tile("k", k, 3, [groups, k_tiles // groups, k_tile],
                              max_innermost=2 * lanes if channels_in_lanes else limit)
    yo, yi = decider.tile("y", y, 2, [workload.out_height // y_tile, y_tile], max_innermost=limit)
    xo, xi = decider.tile("x", x, 2, [workload.out_width // x_tile, x_tile],
                          max_innermost=limit if channels_in_lanes else 2 * lanes)
    if channels_in_lanes:
        sch.reorder(kg, n, yo, xo, ko, *reduction, yi, xi, ki)
        if nchw:  # accumulators channel-innermost, so one pixel's channels are one vector register
            sch.transform_layout(conv, ("write", 0), lambda b, c, h, w: (b, h, w, c))
        vector, unrolled = ki, (xi, yi)
    else:
        sch.reorder(kg, n, yo, xo, ko, *reduction, ki, yi, xi)
        vector, unrolled = xi, (yi, ki)
    sch.vectorize(vector)
    for loop in unrolled:
        sch.unroll(loop)
    write_back_tile(sch, out, ko)
    if place_columns is not None:
        place_columns(xo)
    parallel = [kg, n, yo]
    tasks = 1
    for loop in parallel:
        tasks *= int(sch.get(loop).extent)
    if tasks < _parallel_tasks(target):
        parallel.append(xo)
    sch.parallel(sch.fuse(*parallel))
    sch.decompose_reduction(conv, reduction[0])


class _GemmBase(Strategy):
    """Ungrouped convolutions only; subclasses add their own conditions."""

    ungrouped_only = True
    schedule_version = 2  # 2: the register tile written back by unrolled code (:func:`.base.write_back_tile`)


@register
class Im2colNCHW(_GemmBase):
    """im2col + GEMM, NCHW in and out, weights (K/b, C, R, S, b); any kernel, stride, padding and dilation."""

    name = "im2col_nchw"
    algorithm = "im2col"

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NCHW", "NCHW", f"OIHW{_weight_block(workload, target)}o")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        block = _weight_block(workload, target)
        k, c, r, s = workload.weight_shape
        return te.compute((k // block, c, r, s, block),
                          lambda ko, i, y, x, ki: weight[ko * block + ki, i, y, x], name="weight_pack")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        block = _weight_block(workload, target)
        padded = pad_input(data, workload.padding, "NCHW")
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        n, c, _, _ = workload.input_shape
        cols = te.compute((n, c, *workload.kernel, workload.out_height, workload.out_width),
                          lambda b, i, r, s, y, x: padded[b, i, y * sh + r * dh, x * sw + s * dw],
                          name=IM2COL_BLOCK)
        rc = te.reduce_axis((0, c), "rc")
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        return te.compute(
            workload.output_shape,
            lambda b, k, y, x: te.sum(cols[b, rc, ry, rx, y, x] * weight[k // block, rc, ry, rx, k % block],
                                      axis=[rc, ry, rx]),
            name=MAIN_BLOCK)

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        n, c, _, _ = workload.input_shape
        r, s = workload.kernel
        return 4 * n * c * r * s * workload.out_height * workload.out_width + padded_input_bytes(workload)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        # pixels in the lanes only where whole vectors of them exist: partial vectors (7 or 14 of 8
        # lanes) split into several loads each, measured 2-3x slower on AVX2
        lanes = target.fp32_lanes
        pixels_in_lanes = workload.out_width % lanes == 0 or workload.out_channels % lanes != 0
        channels_in_lanes = decider.choose("channels_in_lanes", [0, 1], int(not pixels_in_lanes))
        cols = sch.get_sblock(IM2COL_BLOCK)

        def place_columns(pixel_tile: s_tir.LoopRV) -> None:
            # per tile, the tile's columns stay in cache: 2x faster at 7x7 than the whole matrix first
            if decider.choose("im2col_per_tile", [0, 1], 1):
                sch.compute_at(cols, pixel_tile, preserve_unit_loops=True)  # never vectorize pixel_tile
                sch.vectorize(sch.get_loops(cols)[-1])
            else:
                parallel_vectorized(sch, cols, outer=4)

        _schedule_gemm(sch, workload, target, decider, bool(channels_in_lanes), nchw=True,
                       place_columns=place_columns)
        if has_block(sch, PAD_BLOCK):
            parallel_vectorized(sch, sch.get_sblock(PAD_BLOCK), outer=2)


@register
class Gemm1x1NHWC(_GemmBase):
    """1x1 convolution as out(N*OH*OW, K) = X(N*OH*OW, C) . W(C, K) on the NHWC activation, weights (K/b, C, b)."""

    name = "gemm1x1_nhwc"

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        if workload.kernel != (1, 1):
            return Applicability.no(f"{self.name} computes 1x1 kernels, not {workload.kernel[0]}x{workload.kernel[1]}")
        if any(workload.padding):
            return Applicability.no(f"{self.name} computes unpadded 1x1 convolutions (padding {workload.padding})")
        return Applicability.yes()

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NHWC", "NHWC", f"OI{_weight_block(workload, target)}o")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        block = _weight_block(workload, target)
        k, c, _, _ = workload.weight_shape
        return te.compute((k // block, c, block), lambda ko, i, ki: weight[ko * block + ki, i, 0, 0],
                          name="weight_pack")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        block = _weight_block(workload, target)
        sh, sw = workload.stride
        rc = te.reduce_axis((0, workload.in_channels), "rc")
        return te.compute(
            (workload.batch, workload.out_height, workload.out_width, workload.out_channels),
            lambda n, y, x, k: te.sum(data[n, y * sh, x * sw, rc] * weight[k // block, rc, k % block], axis=[rc]),
            name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        _schedule_gemm(sch, workload, target, decider, channels_in_lanes=True, nchw=False)
