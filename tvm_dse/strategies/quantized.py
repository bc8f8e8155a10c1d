"""Reduced-precision strategies.

int8: convolutions computed on 8-bit codes with int32 accumulation. They read their input as uint8 codes
(a ``_u8`` layout: the quantization is an activation conversion before the node, priced on the edge like
a layout change; see :mod:`tvm_dse.quant.scheme`) and dequantize in their output stage, so they write
fp32 in the layouts of their fp32 counterparts and sit between them in any plan. The inner product is
the target's int8 dot-product instruction (:mod:`tvm_dse.quant.intrinsics`), tensorized over one
output-channel vector and 4 input channels; a strategy declines targets without one.

fp16: the spatial pack with fp16 weights, computing in fp16 where the target can, else fp16 storage only.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from ..layouts import Layout, codes_layout
from ..quant.intrinsics import DotIntrinsic, dot_intrinsic
from ..quant.scheme import UNCALIBRATED, ActivationQuant, quantize_weight, weight_scales
from ..schedule_blocks import parallel_vectorized
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, PAD_BLOCK, Applicability, Decider, Strategy, StrategyLayouts, finish_register_tiled,
                   max_accumulators, output_stage)
from .registry import register
from .spatial_pack import SpatialPackNCHWc, channel_blocks, default_ic_chunks, default_tile

DOT_DEPTH = 4  # input channels one dot-product instruction reduces per output lane


class QuantizedStrategy(Strategy):
    """An int8 strategy: ``compute`` reads codes with the input's :class:`ActivationQuant`; the weight
    pre-transform makes (int8 codes, per-channel terms (2, K): weight scale and sum of codes)."""

    precision = "int8"
    takes_input_quant = True
    ungrouped_only = True
    schedule_version = 2  # 2: reads codes; quantizing moved out of the kernel into the conversion before it

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        intrinsic = dot_intrinsic(target)
        if intrinsic is None:
            return Applicability.no(f"{target.key} has no int8 dot-product instruction tvm_dse uses "
                                    "(x86 AVX2 or AVX-512 VNNI, aarch64 +dotprod)")
        if workload.out_channels % intrinsic.lanes:
            return Applicability.no(f"{workload.out_channels} output channels do not fill int32 vectors of "
                                    f"{intrinsic.lanes}")
        return Applicability.yes()

    def intrinsic(self, target: DseTarget) -> DotIntrinsic:
        intrinsic = dot_intrinsic(target)
        if intrinsic is None:
            raise ValueError(f"{self.name} does not apply to {target.key}: no int8 dot product")
        return intrinsic

    def weight_qmax(self, target: DseTarget) -> int:
        """The largest weight code on ``target`` (codes are in [-qmax, qmax])."""
        return self.intrinsic(target).weight_qmax

    def channel_terms(self, codes: te.Tensor, scales: te.Tensor) -> te.Tensor:
        """(2, K) fp32: row 0 the weight scales, row 1 each output channel's sum of codes (for the
        zero-point correction ``zero_point * sum(codes)``)."""
        k, c, r, s = (int(d) for d in codes.shape)
        ci, ry, rx = te.reduce_axis((0, c), "ci"), te.reduce_axis((0, r), "ry"), te.reduce_axis((0, s), "rx")
        sums = te.compute((k,), lambda o: te.sum(codes[o, ci, ry, rx].astype("int32"), axis=[ci, ry, rx]),
                          name="weight_code_sum")
        return te.compute((2, k), lambda row, o: tirx.Select(row == 0, scales[o], sums[o].astype("float32")),
                          name="weight_terms")

    def weight_codes(self, weight: te.Tensor, target: DseTarget) -> tuple[te.Tensor, te.Tensor]:
        """(int8 codes in OIHW, per-channel scales) of an fp32 OIHW weight."""
        qmax = self.weight_qmax(target)
        scales = weight_scales(weight, qmax)
        codes = te.compute(weight.shape, lambda o, c, y, x: quantize_weight(weight[o, c, y, x], scales[o], qmax),
                           name="weight_codes")
        return codes, scales

    def padding_code(self, quant: ActivationQuant, target: DseTarget) -> tirx.PrimExpr:
        """The code of 0.0 (what padding holds) in the dot product's data type."""
        return self.data_code(tirx.const(quant.zero_point, "uint8"), target)

    def data_code(self, code: tirx.PrimExpr, target: DseTarget) -> tirx.PrimExpr:
        """A uint8 activation code in the dot product's data type (int8 stores the code minus 128)."""
        if self.intrinsic(target).data_dtype == "int8":
            return (code.astype("int32") - 128).astype("int8")
        return code


def dequantize(acc: te.Tensor, terms: te.Tensor, quant: ActivationQuant, intrinsic: DotIntrinsic,
               layout: Layout) -> te.Tensor:
    """fp32 output of an int32 accumulator: ``(acc - zero_point * sum(codes_k)) * scale * scale_k``."""
    zero_point = quant.zero_point - (128 if intrinsic.data_dtype == "int8" else 0)
    zp = tirx.const(zero_point, "int32")
    scale = tirx.const(float(quant.scale), "float32")
    # The correction in int32: exact, where subtracting two large floats would lose the small difference.
    return te.compute(acc.shape, lambda *i: (acc(*i) - zp * terms[1, layout.channel(i)].astype("int32"))
                      .astype("float32") * (scale * terms[0, layout.channel(i)]), name="dequantize")


@register
class SpatialPackNCHWcInt8(QuantizedStrategy):
    """Direct convolution in NCHW<x>c on int8 codes: the fp32 spatial pack's tiling, with the target's
    dot product over 4 input channels at a time."""

    name = "spatial_pack_nchwc_int8"
    # 2 as every int8 strategy; 3: the register tile written back by unrolled code (:func:`.base.write_back_tile`)
    schedule_version = 3

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        in_block = channel_blocks(workload, target)[0]
        if in_block % DOT_DEPTH:
            return Applicability.no(f"{workload.in_channels} input channels do not split into blocks of a multiple "
                                    f"of {DOT_DEPTH}")
        return Applicability.yes()

    def _blocks(self, workload: Workload, target: DseTarget) -> tuple[int, int]:
        return channel_blocks(workload, target)[0], self.intrinsic(target).lanes

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        in_block, out_block = self._blocks(workload, target)
        return StrategyLayouts(codes_layout(f"NCHW{in_block}c"), f"NCHW{out_block}c",
                               f"OIHW{in_block // DOT_DEPTH}i{out_block}o{DOT_DEPTH}i")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> tuple[te.Tensor, te.Tensor]:
        in_block, out_block = self._blocks(workload, target)
        codes, scales = self.weight_codes(weight, target)
        k, c, r, s = workload.weight_shape
        packed = te.compute(
            (k // out_block, c // in_block, r, s, in_block // DOT_DEPTH, out_block, DOT_DEPTH),
            lambda ko, co, y, x, cq, ki, cr: codes[ko * out_block + ki, co * in_block + cq * DOT_DEPTH + cr, y, x],
            name="weight_pack")
        return packed, self.channel_terms(codes, scales)

    def compute(self, data: te.Tensor, weight: tuple[te.Tensor, te.Tensor], workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        quant = UNCALIBRATED if quant is None else quant
        packed, terms = weight
        intrinsic = self.intrinsic(target)
        in_block, out_block = self._blocks(workload, target)
        top, left, bottom, right = workload.padding
        n, cb, h, w, cv = (int(d) for d in data.shape)
        zero_point = self.padding_code(quant, target)

        def padded(b, c, y, x, v):
            inside = tirx.all(y >= top, y < h + top, x >= left, x < w + left)
            return tirx.if_then_else(inside, self.data_code(data[b, c, y - top, x - left, v], target), zero_point)

        codes = te.compute((n, cb, h + top + bottom, w + left + right, cv), padded, name=PAD_BLOCK)
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        ico = te.reduce_axis((0, workload.in_channels // in_block), "ico")
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        icq = te.reduce_axis((0, in_block // DOT_DEPTH), "icq")
        icr = te.reduce_axis((0, DOT_DEPTH), "icr")
        output = Layout.blocked(out_block)
        acc = te.compute(
            output.shape(workload.output_shape),
            lambda b, ko, y, x, ki: te.sum(
                codes[b, ico, y * sh + ry * dh, x * sw + rx * dw, icq * DOT_DEPTH + icr].astype("int32")
                * packed[ko, ico, ry, rx, icq, ki, icr].astype("int32"),
                axis=[ico, ry, rx, icq, icr]),
            name=MAIN_BLOCK)
        return dequantize(acc, terms, quant, intrinsic, output)

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        top, left, bottom, right = workload.padding
        return workload.batch * workload.in_channels * (workload.height + top + bottom) * (workload.width + left + right)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        intrinsic = self.intrinsic(target)
        in_block, out_block = self._blocks(workload, target)
        blocks = workload.out_channels // out_block
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, ko, y, x, ki, ico, ry, rx, icq, icr = sch.get_loops(conv)
        # Half the fp32 tile: each dot product also holds its broadcast input and an int16 product.
        oh_tile, ow_tile, oc_tile = default_tile(workload, blocks, max_accumulators(target) // 2)
        koo, koi = decider.tile("oc_blocks", ko, 2, [blocks // oc_tile, oc_tile])
        yo, yi = decider.tile("oh", y, 2, [workload.out_height // oh_tile, oh_tile])
        xo, xi = decider.tile("ow", x, 2, [workload.out_width // ow_tile, ow_tile])
        chunks = default_ic_chunks(workload, target, in_block, decider.chosen["oc_blocks"][1], weight_bytes=1)
        icoo, icoi = decider.tile("ic_chunks", ico, 2, chunks)
        if decider.chosen["ic_chunks"][0] > 1:
            sch.reorder(n, koo, icoo, yo, xo, icoi, ry, rx, icq, yi, koi, xi, ki, icr)
            write_at, parallel = koo, (n, koo)
        else:
            sch.reorder(n, yo, koo, xo, icoo, icoi, ry, rx, icq, yi, koi, xi, ki, icr)
            write_at, parallel = xo, (n, yo, koo)
        for loop in (xi, koi, yi):
            sch.unroll(loop)
        finish_register_tiled(sch, conv, out, write_at=write_at, parallel=parallel, init_before=icoo, pad_outer=3)
        sch.vectorize(sch.get_loops(sch.get_sblock(f"{MAIN_BLOCK}_init"))[-1])
        sch.tensorize(ki, intrinsic.registered("local"))


IM2COL_BLOCK = "im2col"


@register
class Im2colInt8(QuantizedStrategy):
    """im2col + GEMM on int8 codes, NCHW in (any channel count: the reduction C*R*S is padded to a
    multiple of 4 with zero weights), NCHW<x>c out. The im2col stage gathers one row of C*R*S codes per
    output pixel, so the dot product reads 4 consecutive codes; it takes the first layers
    (1 or 3 input channels) that the spatial pack's channel blocks cannot."""

    name = "im2col_int8"
    algorithm = "im2col"

    @staticmethod
    def _depth(workload: Workload) -> int:
        """The reduction length C*R*S rounded up to a multiple of the dot product's depth."""
        depth = workload.in_channels * workload.kernel[0] * workload.kernel[1]
        return -(-depth // DOT_DEPTH) * DOT_DEPTH

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        lanes = self.intrinsic(target).lanes
        return StrategyLayouts(codes_layout("NCHW"), f"NCHW{lanes}c", f"OI{lanes}o{DOT_DEPTH}i")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> tuple[te.Tensor, te.Tensor]:
        lanes = self.intrinsic(target).lanes
        codes, scales = self.weight_codes(weight, target)
        k, c, r, s = workload.weight_shape
        depth = c * r * s

        def packed(ko, jo, ki, ji):
            j = jo * DOT_DEPTH + ji
            code = codes[ko * lanes + ki, j // (r * s), j // s % r, j % s]
            return tirx.if_then_else(j < depth, code, tirx.const(0, "int8"))

        return (te.compute((k // lanes, self._depth(workload) // DOT_DEPTH, lanes, DOT_DEPTH), packed, name="weight_pack"),
                self.channel_terms(codes, scales))

    def compute(self, data: te.Tensor, weight: tuple[te.Tensor, te.Tensor], workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        quant = UNCALIBRATED if quant is None else quant
        packed, terms = weight
        intrinsic = self.intrinsic(target)
        lanes = intrinsic.lanes
        _, c, h, w = workload.input_shape
        r, s = workload.kernel
        top, left, _, _ = workload.padding
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        zero_point = self.padding_code(quant, target)

        def gathered(b, y, x, j):
            channel, row, column = j // (r * s), j // s % r, j % s
            iy, ix = y * sh + row * dh - top, x * sw + column * dw - left
            inside = tirx.all(j < c * r * s, iy >= 0, iy < h, ix >= 0, ix < w)
            return tirx.if_then_else(inside, self.data_code(data[b, channel, iy, ix], target), zero_point)

        cols = te.compute((workload.batch, workload.out_height, workload.out_width, self._depth(workload)), gathered,
                          name=IM2COL_BLOCK)
        jo = te.reduce_axis((0, self._depth(workload) // DOT_DEPTH), "jo")
        ji = te.reduce_axis((0, DOT_DEPTH), "ji")
        output = Layout.blocked(lanes)
        acc = te.compute(
            output.shape(workload.output_shape),
            lambda b, ko, y, x, ki: te.sum(cols[b, y, x, jo * DOT_DEPTH + ji].astype("int32")
                                           * packed[ko, jo, ki, ji].astype("int32"), axis=[jo, ji]),
            name=MAIN_BLOCK)
        return dequantize(acc, terms, quant, intrinsic, output)

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        return workload.batch * workload.out_height * workload.out_width * self._depth(workload)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        intrinsic = self.intrinsic(target)
        blocks = workload.out_channels // intrinsic.lanes
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, ko, y, x, ki, jo, ji = sch.get_loops(conv)
        oh_tile, ow_tile, oc_tile = default_tile(workload, blocks, max_accumulators(target) // 2)
        koo, koi = decider.tile("oc_blocks", ko, 2, [blocks // oc_tile, oc_tile])
        yo, yi = decider.tile("oh", y, 2, [workload.out_height // oh_tile, oh_tile])
        xo, xi = decider.tile("ow", x, 2, [workload.out_width // ow_tile, ow_tile])
        sch.reorder(n, yo, koo, xo, jo, yi, koi, xi, ki, ji)
        for loop in (xi, koi, yi):
            sch.unroll(loop)
        sch.reverse_compute_at(out, xo, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(out)[-1])
        sch.parallel(sch.fuse(n, yo, koo))
        sch.decompose_reduction(conv, jo)
        sch.vectorize(sch.get_loops(sch.get_sblock(f"{MAIN_BLOCK}_init"))[-1])
        sch.tensorize(ki, intrinsic.registered("local"))
        parallel_vectorized(sch, sch.get_sblock(IM2COL_BLOCK), outer=3)


@register
class SpatialPackNCHWcFP16(SpatialPackNCHWc):
    """The fp32 spatial pack with fp16 weights. Where the target computes in fp16 (Armv8.2 fullfp16,
    AVX-512 FP16) the products and the sum are fp16 over twice the lanes (NCHW8c on NEON), the output
    widened to fp32 for the epilogue; elsewhere fp16 is storage only (half the weight memory), each weight
    widened as it is loaded (F16C's vcvtph2ps on x86) and the sum kept in fp32."""

    name = "spatial_pack_nchwc_fp16"
    precision = "fp16"
    schedule_version = 2  # 2: the register tile written back by unrolled code (:func:`.base.write_back_tile`)

    def lanes(self, target: DseTarget) -> int:
        return target.vector_bits // 16 if target.has_fp16 else target.fp32_lanes

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        if target.is_x86 and not target.has_fp16 and "f16c" not in target.cpu_features:
            return Applicability.no(f"{target.key} has no fp16 conversions (F16C) nor fp16 arithmetic")
        return super().applies(workload, target)

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        packed = super().transform_weight(weight, workload, target)
        return te.compute(packed.shape, lambda *i: packed(*i).astype("float16"), name="weight_fp16")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        out = super().compute(data, weight, workload, target, quant)
        if out.dtype == "float32":
            return out
        return te.compute(out.shape, lambda *i: out(*i).astype("float32"), name="widen")

    def product(self, data: tirx.PrimExpr, weight: tirx.PrimExpr, target: DseTarget) -> tirx.PrimExpr:
        if target.has_fp16:
            return data.astype("float16") * weight
        return data * weight.astype("float32")
