"""Spatial pack: direct convolution on channel-blocked activations, NCHW<x>c with x = the target's fp32
vector lanes (4 on NEON, 8 on AVX2, 16 on AVX-512).

Input (N, C/xi, H, W, xi), weights OIHW<xi>i<xo>o = (K/xo, C/xi, R, S, xi, xo), output (N, K/xo, OH, OW, xo).
One output-channel block is one vector register; the register tile holds a few output rows x pixels x
channel blocks; the input channel block xi is the largest divisor of C up to x (a 3-channel image is
NCHW3c), so consecutive blocked layers share one layout and need no conversion.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from ..layouts import Layout
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, Applicability, Decider, Strategy, StrategyLayouts, divisors, finish_register_tiled,
                   largest_divisor_at_most, max_accumulators, output_stage, pad_input, padded_input_bytes)
from .registry import register


def channel_blocks(workload: Workload, target: DseTarget, lanes: int | None = None) -> tuple[int, int]:
    """(input channel block, output channel block) of the blocked layouts for this workload: blocks of
    the target's fp32 lanes, or of ``lanes``."""
    lanes = lanes or target.fp32_lanes
    return largest_divisor_at_most(workload.in_channels, lanes), lanes


MIN_ACCUMULATORS = 4
CHUNK_WEIGHT_BYTES = 4096
CHUNKED_MAX_PIXELS = 28 * 28
CHUNKED_MIN_TASKS = 8


def default_tile(workload: Workload, blocks: int, limit: int) -> tuple[int, int, int]:
    """(rows, pixels, channel blocks) of the register tile: as many accumulators as fit in ``limit``, then
    two channel blocks, then one row. Measured on AVX2 over ResNet-18's layers: 1x4x2 at 56 and 28, 2x2x2
    at 14, 1x7x1 at 7 (twice as fast as 1x1x8: more channel blocks means fewer reuses of each input).
    More than 4 channel blocks only when the output's sides leave no better tile: 1x1x5 for 1000 channels
    at 13x13 (SqueezeNet's classifier) ran 3x faster than 1x1x1."""
    def best(max_blocks: int) -> tuple[int, int, int]:
        candidates = [(oh, ow, oc) for oc in divisors(blocks) for ow in divisors(workload.out_width)
                      for oh in divisors(workload.out_height) if oh <= 2 and oc <= max_blocks and oh * ow * oc <= limit]
        return max(candidates, key=lambda t: (t[0] * t[1] * t[2], -abs(t[2] - 2), -t[0]))

    tile = best(4)
    return tile if tile[0] * tile[1] * tile[2] >= MIN_ACCUMULATORS else best(limit)


def default_ic_chunks(workload: Workload, target: DseTarget, in_block: int, oc_tile: int,
                      weight_bytes: int = 4) -> list[int]:
    """[chunks, blocks per chunk] of the input channel blocks. Chunked when the output is at most 28x28 and
    the output-channel tiles alone keep the threads busy: each chunk then holds at most 4 KB of weights.
    Measured on AVX2 (stride-2 and 1x1 layers of ResNet-18 at 28 and 14): 14-40% faster than one chunk;
    neutral at 56x56, where a tile's accumulators no longer fit in cache between chunks."""
    blocks = workload.in_channels // in_block
    tasks = workload.batch * workload.out_channels // (target.fp32_lanes * oc_tile)
    if workload.out_height * workload.out_width > CHUNKED_MAX_PIXELS or tasks < CHUNKED_MIN_TASKS:
        return [1, blocks]
    block_bytes = weight_bytes * oc_tile * target.fp32_lanes * in_block * workload.kernel[0] * workload.kernel[1]
    per_chunk = max([1] + [d for d in divisors(blocks) if d * block_bytes <= CHUNK_WEIGHT_BYTES])
    return [blocks // per_chunk, per_chunk]


@register
class SpatialPackNCHWc(Strategy):
    """Direct convolution in NCHW<x>c with register-tiled output rows, pixels and channel blocks."""

    name = "spatial_pack_nchwc"
    algorithm = "spatial_pack"
    ungrouped_only = True
    schedule_version = 3  # 2: row tiles outermost; 3: input-channel chunks at 28x28 and below, wider
    # channel tiles where the output's sides allow no other

    def lanes(self, target: DseTarget) -> int:
        """Vector lanes of the computation, the output channel block."""
        return target.fp32_lanes

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        if workload.out_channels % self.lanes(target):
            return Applicability.no(f"{workload.out_channels} output channels do not fill blocks of "
                                    f"{self.lanes(target)} lanes")
        return Applicability.yes()

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        in_block, out_block = channel_blocks(workload, target, self.lanes(target))
        return StrategyLayouts(f"NCHW{in_block}c", f"NCHW{out_block}c", f"OIHW{in_block}i{out_block}o")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        in_block, out_block = channel_blocks(workload, target, self.lanes(target))
        k, c, r, s = workload.weight_shape
        return te.compute((k // out_block, c // in_block, r, s, in_block, out_block),
                          lambda ko, co, y, x, ci, ki: weight[ko * out_block + ki, co * in_block + ci, y, x],
                          name="weight_pack")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        in_block, out_block = channel_blocks(workload, target, self.lanes(target))
        padded = pad_input(data, workload.padding, (2, 3))
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        ico = te.reduce_axis((0, workload.in_channels // in_block), "ico")
        ici = te.reduce_axis((0, in_block), "ici")
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        shape = Layout.blocked(out_block).shape(workload.output_shape)
        return te.compute(
            shape,
            lambda n, ko, y, x, ki: te.sum(
                self.product(padded[n, ico, y * sh + ry * dh, x * sw + rx * dw, ici], weight[ko, ico, ry, rx, ici, ki],
                             target), axis=[ico, ry, rx, ici]),
            name=MAIN_BLOCK)

    def product(self, data: tirx.PrimExpr, weight: tirx.PrimExpr, target: DseTarget) -> tirx.PrimExpr:
        """One term of the reduction (in the accumulator's type)."""
        return data * weight

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        return padded_input_bytes(workload)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        in_block, out_block = channel_blocks(workload, target, self.lanes(target))
        blocks = workload.out_channels // out_block
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, ko, y, x, ki, ico, ry, rx, ici = sch.get_loops(conv)
        oh_tile, ow_tile, oc_tile = default_tile(workload, blocks, max_accumulators(target))
        koo, koi = decider.tile("oc_blocks", ko, 2, [blocks // oc_tile, oc_tile])
        yo, yi = decider.tile("oh", y, 2, [workload.out_height // oh_tile, oh_tile])
        xo, xi = decider.tile("ow", x, 2, [workload.out_width // ow_tile, ow_tile])
        chunks = default_ic_chunks(workload, target, in_block, decider.chosen["oc_blocks"][1])
        icoo, icoi = decider.tile("ic_chunks", ico, 2, chunks)
        if decider.chosen["ic_chunks"][0] > 1:
            # Input-channel chunks outside the pixel tiles: one chunk's weights stay in L1 across every
            # pixel tile while the accumulators go to memory between chunks.
            sch.reorder(n, koo, icoo, yo, xo, icoi, ry, rx, ici, yi, koi, xi, ki)
            write_at, parallel = koo, (n, koo)
        else:
            # Rows outermost: the input rows of one row tile stay in cache across all channel blocks, which
            # measured 2-15% faster than channel blocks outermost on every ResNet-18 3x3/7x7 layer (AVX2).
            sch.reorder(n, yo, koo, xo, icoo, icoi, ry, rx, ici, yi, koi, xi, ki)
            write_at, parallel = xo, (n, yo, koo)
        sch.vectorize(ki)
        for loop in (xi, koi, yi):
            sch.unroll(loop)
        finish_register_tiled(sch, conv, out, write_at=write_at, parallel=parallel, init_before=icoo, pad_outer=3)
