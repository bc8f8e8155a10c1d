"""Spatial pack: direct convolution on channel-blocked activations, NCHW<x>c with x = the target's fp32
vector lanes (4 on NEON, 8 on AVX2, 16 on AVX-512).

Input (N, C/xi, H, W, xi), weights OIHW<xi>i<xo>o = (K/xo, C/xi, R, S, xi, xo), output (N, K/xo, OH, OW, xo).
One output-channel block is one vector register; the register tile holds a few output pixels x channel
blocks, along a row or along the flattened pixels (:func:`pixel_tiling`); the input channel block xi is
the largest divisor of C up to x (a 3-channel image is NCHW3c), so consecutive blocked layers share one
layout and need no conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm import s_tir, te, tirx

from ..layouts import Layout
from ..quant.scheme import ActivationQuant
from ..schedule_blocks import parallel_vectorized
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, Applicability, Decider, Strategy, StrategyLayouts, divisors, finish_register_tiled,
                   inline_epilogue, largest_divisor_at_most, max_accumulators, output_stage, pad_input,
                   padded_input_bytes, vector_registers)
from .registry import register


def channel_blocks(workload: Workload, target: DseTarget, lanes: int | None = None) -> tuple[int, int]:
    """(input channel block, output channel block) of the blocked layouts for this workload: blocks of
    the target's fp32 lanes, or of ``lanes``."""
    lanes = lanes or target.fp32_lanes
    return largest_divisor_at_most(workload.in_channels, lanes), lanes


CROP_BLOCK = "crop"
MIN_ACCUMULATORS = 4
CHUNK_WEIGHT_BYTES = 4096
FLAT_CHUNK_WEIGHT_BYTES = 8192
CHUNKED_MAX_PIXELS = 28 * 28
CHUNKED_MIN_TASKS = 8


def default_tile(workload: Workload, blocks: int, limit: int) -> tuple[int, int, int]:
    """(rows, pixels, channel blocks) of a register tile whose sides divide the output: as many
    accumulators as fit in ``limit``, then two channel blocks, then one row. Measured on AVX2 over
    ResNet-18's layers: 1x4x2 at 56 and 28, 2x2x2 at 14, 1x7x1 at 7 (twice as fast as 1x1x8: more channel
    blocks means fewer reuses of each input). More than 4 channel blocks only when the output's sides
    leave no better tile: 1x1x5 for 1000 channels at 13x13 (SqueezeNet's classifier) ran 3x faster than
    1x1x1 (AVX2 now takes 2 x 5 there: :func:`pixel_tiling`)."""
    def best(max_blocks: int) -> tuple[int, int, int]:
        candidates = [(oh, ow, oc) for oc in divisors(blocks) for ow in divisors(workload.out_width)
                      for oh in divisors(workload.out_height) if oh <= 2 and oc <= max_blocks and oh * ow * oc <= limit]
        return max(candidates, key=lambda t: (t[0] * t[1] * t[2], -abs(t[2] - 2), -t[0]))

    tile = best(4)
    return tile if tile[0] * tile[1] * tile[2] >= MIN_ACCUMULATORS else best(limit)


# channel blocks of a 16-register tile -> (its pixels, whether it always runs along the flattened pixels)
WIDE_TILES = {4: (3, False), 5: (2, True)}
FLAT_ABOVE_WASTE = 1 / 8


@dataclass(frozen=True)
class PixelTiling:
    """How the fp32 spatial pack walks its output: register tiles of ``rows`` x ``pixels`` x
    ``channel_blocks`` over rows of ``extent`` computed columns, or, when ``flat``, tiles of ``pixels``
    along the output's pixels taken row after row, ``extent`` computed pixels in all. The columns or
    pixels past the output's are computed on padding and cropped. ``padded``: the convolution pads its
    input."""

    rows: int
    pixels: int
    channel_blocks: int
    flat: bool
    extent: int
    padded: bool = True

    @property
    def clamped(self) -> bool:
        """Whether the pixels computed past the output read the last pixel's input: a flat tiling of an
        unpadded convolution (1x1 layers), which so needs no padded copy of its input, and copies each
        tile out right after it instead of in a pass of its own. Measured on AVX2, MobileNetV2's and
        SqueezeNet's 1x1 layers at 7x7 and 13x13, interleaved: without the padded copy 0.73-1.0x the time
        (384->64 at 13x13 0.73x, 320->1280 at 7x7 0.89x), then with the copy-out in the tiles 0.87-0.99x
        again (11 rounds); on 3x3 stride-2 layers, padded anyway, the copy-out in the tiles ran 1.01-1.12x,
        so they keep the pass."""
        return self.flat and not self.padded


def pixel_tiling(workload: Workload, target: DseTarget, lanes: int) -> PixelTiling:
    """The spatial pack's default register tiling of ``workload`` (output channel blocks of ``lanes``).

    On 16-register targets (AVX2) with output channels in fours of blocks, the tile is one row of 3 pixels
    x 4 channel blocks (MLAS's tile: 12 accumulators, the weights FMA memory operands) whatever the output
    width, which the compute pads to whole tiles. Measured on AVX2, one interleaved run per layer, ratios
    to onnxruntime: 3x3 stride 2 at 28x28 in 0.84x, against 1.04x for the best tile dividing its 14
    columns (2 x 4); at 56x56 in 0.90x, as 2 x 4, against 1.09x for 4 x 2 (the divisor rule's choice);
    3x3 layers 12 and 24 columns wide 0.87-0.95x against 0.97-1.03x. Where padding a row would waste more
    than an eighth of it (7 columns computed as 9), the tiles run along the flattened pixels instead, row
    after row, and the output (epilogue included) is copied out in a second pass: 1.00x against 1.21x for
    rows of 9 on the 3x3 stride-2 layer with a 7x7 output, 0.91-1.19x against 0.92-1.46x on MobileNetV2's
    1x1 layers at 7x7. 1x1 convolutions on wider rows, and other targets, keep :func:`default_tile`: there
    3 x 4 ran up to 1.5x slower (1x1 192->32 at 28x28: 1.17x against 0.77x for 4 x 2).

    Output channels in fives of blocks but not fours take 2 pixels x 5 blocks, always flat: on the 1x1
    512->1000 layer at 13x13 1.01x onnxruntime, against 1.16x for rows of 14 and 1.38x for the divisor
    rule's 1 x 5."""
    blocks = workload.out_channels // lanes
    width = workload.out_width
    channel_blocks = next((c for c in WIDE_TILES if blocks % c == 0), None)
    if vector_registers(target) == 16 and channel_blocks:
        pixels, always_flat = WIDE_TILES[channel_blocks]
        padded = -(-width // pixels) * pixels
        if always_flat or padded - width > FLAT_ABOVE_WASTE * padded:
            area = workload.out_height * width
            return PixelTiling(1, pixels, channel_blocks, True, -(-area // pixels) * pixels, any(workload.padding))
        if workload.kernel != (1, 1):
            return PixelTiling(1, pixels, channel_blocks, False, padded)
    rows, pixels, channel_blocks = default_tile(workload, blocks, max_accumulators(target))
    return PixelTiling(rows, pixels, channel_blocks, False, width)


def default_ic_chunks(workload: Workload, target: DseTarget, in_block: int, oc_tile: int,
                      weight_bytes: int = 4, flat: bool = False) -> list[int]:
    """[chunks, blocks per chunk] of the input channel blocks. Chunked when the output is at most 28x28 and
    the output-channel tiles alone keep the threads busy: each chunk then holds at most 4 KB of weights,
    8 KB under a ``flat`` tiling. Measured on AVX2 (stride-2 and 1x1 layers of ResNet-18 at 28 and 14):
    14-40% faster than one chunk; neutral at 56x56, where a tile's accumulators no longer fit in cache
    between chunks. Flat tilings of 1x1 layers at 7x7 and 13x13 ran 0.88-1.02x the time with 8 KB chunks
    as with 4 KB, and 0.87x for the 2 x 5 tile (1x1 512->1000 at 13x13, 5 KB against 2.5 KB)."""
    blocks = workload.in_channels // in_block
    tasks = workload.batch * workload.out_channels // (target.fp32_lanes * oc_tile)
    if workload.out_height * workload.out_width > CHUNKED_MAX_PIXELS or tasks < CHUNKED_MIN_TASKS:
        return [1, blocks]
    block_bytes = weight_bytes * oc_tile * target.fp32_lanes * in_block * workload.kernel[0] * workload.kernel[1]
    budget = FLAT_CHUNK_WEIGHT_BYTES if flat else CHUNK_WEIGHT_BYTES
    per_chunk = max([1] + [d for d in divisors(blocks) if d * block_bytes <= budget])
    return [blocks // per_chunk, per_chunk]


@register
class SpatialPackNCHWc(Strategy):
    """Direct convolution in NCHW<x>c with register-tiled output rows, pixels and channel blocks."""

    name = "spatial_pack_nchwc"
    ungrouped_only = True
    schedule_version = 7  # 2: row tiles outermost; 3: input-channel chunks at 28x28 and below, wider
    # channel tiles where the output's sides allow no other; 4: tiles of 3 pixels x 4 channel blocks on
    # AVX2 (:func:`pixel_tiling`); 5: 2 x 5 tiles, 8 KB input-channel chunks under flat tilings; 6: clamped
    # flat tilings (:attr:`PixelTiling.clamped`); 7: the register tile written back by unrolled code
    # (:func:`.base.write_back_tile`)

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

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        in_block, out_block = channel_blocks(workload, target, self.lanes(target))
        tiling = pixel_tiling(workload, target, out_block)
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        (r, s), width = workload.kernel, workload.out_width
        # Pad the input's bottom or right so that the computed pixels past the output read inside it (an
        # unpadded flat tiling reads the last pixel's input for them instead: see PixelTiling.clamped).
        top, left, bottom, right = workload.padding
        if tiling.flat and not tiling.clamped:
            read_rows = (tiling.extent - 1) // width * sh + (r - 1) * dh + 1
            bottom += max(0, read_rows - (workload.height + top + bottom))
        elif not tiling.flat:
            read_columns = (tiling.extent - 1) * sw + (s - 1) * dw + 1
            right += max(0, read_columns - (workload.width + left + right))
        padded = pad_input(data, (top, left, bottom, right), self.layouts(workload, target).data)
        ico = te.reduce_axis((0, workload.in_channels // in_block), "ico")
        ici = te.reduce_axis((0, in_block), "ici")
        ry = te.reduce_axis((0, r), "ry")
        rx = te.reduce_axis((0, s), "rx")

        def term(n: Any, ko: Any, y: Any, x: Any, ki: Any) -> tirx.PrimExpr:
            return te.sum(self.product(padded[n, ico, y * sh + ry * dh, x * sw + rx * dw, ici],
                                       weight[ko, ico, ry, rx, ici, ki], target), axis=[ico, ry, rx, ici])

        shape = Layout.blocked(out_block).shape(workload.output_shape)
        if tiling.flat:
            def flat_term(n: Any, ko: Any, p: Any, ki: Any) -> tirx.PrimExpr:
                pixel = tirx.min(p, workload.out_height * width - 1) if tiling.clamped else p
                return term(n, ko, pixel // width, pixel % width, ki)

            conv = te.compute((*shape[:2], tiling.extent, shape[4]), flat_term, name=MAIN_BLOCK)
            return te.compute(shape, lambda n, ko, y, x, ki: conv[n, ko, y * width + x, ki], name=CROP_BLOCK)
        conv = te.compute((*shape[:3], tiling.extent, shape[4]), term, name=MAIN_BLOCK)
        if tiling.extent == width:
            return conv
        return te.compute(shape, lambda *i: conv(*i), name=CROP_BLOCK)

    def product(self, data: tirx.PrimExpr, weight: tirx.PrimExpr, target: DseTarget) -> tirx.PrimExpr:
        """One term of the reduction (in the accumulator's type)."""
        return data * weight

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        """The padded input, plus the flat tiling's whole computed output (copied out after it)."""
        tiling = pixel_tiling(workload, target, self.lanes(target))
        if tiling.flat:
            extra_rows = 0 if tiling.clamped else -(-tiling.extent // workload.out_width) - workload.out_height
            output = 4 * workload.batch * workload.out_channels * tiling.extent
            return padded_input_bytes(workload, extra_rows=extra_rows * workload.stride[0]) + output
        extra_columns = tiling.extent - workload.out_width
        return padded_input_bytes(workload, extra_columns=extra_columns * workload.stride[1])

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        in_block, out_block = channel_blocks(workload, target, self.lanes(target))
        blocks = workload.out_channels // out_block
        tiling = pixel_tiling(workload, target, out_block)
        conv = sch.get_sblock(MAIN_BLOCK)
        if tiling.flat:
            # The accumulators go to a local tile written back to the flat output; the copy-out (crop and
            # epilogue) runs after each tile where the tiling is clamped, else as a pass after the convolution.
            copy_out = inline_epilogue(sch, conv)
            out = sch.cache_write(conv, 0, "local")
            n, ko, p, ki, ico, ry, rx, ici = sch.get_loops(conv)
            yo, yi = (), ()
            xo, xi = decider.tile("pixels", p, 2, [tiling.extent // tiling.pixels, tiling.pixels])
        else:
            out = output_stage(sch, conv)
            n, ko, y, x, ki, ico, ry, rx, ici = sch.get_loops(conv)
            row_outer, row_inner = decider.tile("oh", y, 2, [workload.out_height // tiling.rows, tiling.rows])
            yo, yi = (row_outer,), (row_inner,)
            xo, xi = decider.tile("ow", x, 2, [tiling.extent // tiling.pixels, tiling.pixels])
        koo, koi = decider.tile("oc_blocks", ko, 2, [blocks // tiling.channel_blocks, tiling.channel_blocks])
        chunks = default_ic_chunks(workload, target, in_block, decider.chosen["oc_blocks"][1], flat=tiling.flat)
        icoo, icoi = decider.tile("ic_chunks", ico, 2, chunks)
        if decider.chosen["ic_chunks"][0] > 1:
            # Input-channel chunks outside the pixel tiles: one chunk's weights stay in L1 across every
            # pixel tile while the accumulators go to memory between chunks.
            sch.reorder(n, koo, icoo, *yo, xo, icoi, ry, rx, ici, *yi, koi, xi, ki)
            write_at, parallel = koo, (n, koo)
        elif tiling.flat:
            # Pixel tiles outermost, as rows are below.
            sch.reorder(n, xo, koo, icoo, icoi, ry, rx, ici, koi, xi, ki)
            write_at, parallel = koo, (n, xo, koo)
        else:
            # Rows outermost: the input rows of one row tile stay in cache across all channel blocks, which
            # measured 2-15% faster than channel blocks outermost on every ResNet-18 3x3/7x7 layer (AVX2).
            sch.reorder(n, *yo, koo, xo, icoo, icoi, ry, rx, ici, *yi, koi, xi, ki)
            write_at, parallel = xo, (n, *yo, koo)
        sch.vectorize(ki)
        for loop in (xi, koi, *yi):
            sch.unroll(loop)
        finish_register_tiled(sch, conv, out, write_at=write_at, parallel=parallel, init_before=icoo, pad_outer=3)
        if tiling.clamped:
            # The copy-out of each tile right after the tile, iterating over the flat pixels it covers.
            width = workload.out_width
            sch.transform_block_layout(copy_out, lambda n_, ko_, y_, x_, ki_: (n_, ko_, y_ * width + x_, ki_))
            sch.reverse_compute_at(copy_out, sch.get_loops(out)[0], preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(copy_out)[-1])
        elif tiling.flat:
            parallel_vectorized(sch, copy_out, outer=3)
