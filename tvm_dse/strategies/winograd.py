"""Winograd F(m, 3): 3x3 stride-1 convolution in the channel-blocked layouts of spatial pack.

Input (N, C/xi, H, W, xi), output (N, K/x, OH, OW, x) with x = the target's fp32 lanes and xi from
:func:`.spatial_pack.channel_blocks`, so a Winograd layer sits next to a spatial-pack one with no layout
conversion. Per tile of m x m outputs (alpha = m + 2): V = B^T d B (input transform), M = sum_c U V (one
GEMM per alpha x alpha point, with U = G g G^T made at compile time), Y = A^T M A (inverse transform,
written straight into the output, cropped where the output does not fill the last tile).

The transforms are written as explicit sums over their non-zero coefficients, selected by a loop index
that is unrolled, so the compiled code has no multiplications by 0 or 1 (LLVM does not fold those in
floating point).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
from tvm import s_tir, te, tirx
from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

from ..layouts import Layout
from ..quant.scheme import ActivationQuant
from ..schedule_blocks import has_block
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, PAD_BLOCK, Applicability, Decider, Strategy, StrategyLayouts, divisors,
                   max_accumulators, output_stage, pad_input)
from .registry import register
from .spatial_pack import channel_blocks

INPUT_ROWS_BLOCK = "winograd_input_rows"
INPUT_BLOCK = "winograd_input"
GEMM_BLOCK = "winograd_gemm"
INVERSE_ROWS_BLOCK = "winograd_inverse_rows"


@lru_cache(maxsize=None)
def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, G) of F(m, 3), shapes (alpha, m), (alpha, alpha), (alpha, 3): Y = A^T [(G g G^T) * (B^T d B)] A."""
    return _cook_toom_convolution(_interpolation_points(m + 1), m, 3)


def _combine(coefficients: Sequence[float], terms: Sequence[tirx.PrimExpr]) -> tirx.PrimExpr:
    """sum(c * t) over the non-zero coefficients; +-1 become plain additions and subtractions."""
    result = None
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0:
            continue
        if result is None:
            result = term if coefficient == 1 else term * tirx.const(coefficient, "float32")
            continue
        if abs(coefficient) != 1:
            term = term * tirx.const(abs(coefficient), "float32")
        result = result + term if coefficient > 0 else result - term
    return result if result is not None else tirx.const(0, "float32")


def _transform(matrix: np.ndarray, index: tirx.PrimExpr, term: Callable[[int], tirx.PrimExpr]) -> tirx.PrimExpr:
    """sum_r matrix[r, index] * term(r): a Select over the columns of ``matrix`` that folds to one column's
    sum once the loop over ``index`` is unrolled."""
    terms = [term(r) for r in range(matrix.shape[0])]
    result = _combine(matrix[:, -1], terms)
    for column in range(matrix.shape[1] - 2, -1, -1):
        result = tirx.Select(index == column, _combine(matrix[:, column], terms), result)
    return result


class _Winograd(Strategy):
    """Winograd F(m, 3) in NCHW<xi>c -> NCHW<x>c; subclasses set the output tile size ``m``."""

    ungrouped_only = True
    m: int

    @property
    def alpha(self) -> int:
        return self.m + 2

    def _tiles(self, workload: Workload) -> tuple[int, int]:
        """Tile rows and columns per image: the output rounded up to whole tiles."""
        return -(-workload.out_height // self.m), -(-workload.out_width // self.m)

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        if workload.kernel != (3, 3):
            return Applicability.no(f"{self.name} computes 3x3 kernels, not {workload.kernel[0]}x{workload.kernel[1]}")
        if workload.stride != (1, 1) or workload.dilation != (1, 1):
            return Applicability.no(f"{self.name} needs stride 1 and dilation 1 (stride {workload.stride}, "
                                    f"dilation {workload.dilation})")
        if workload.out_channels % target.fp32_lanes:
            return Applicability.no(f"{workload.out_channels} output channels do not fill blocks of "
                                    f"{target.fp32_lanes} lanes")
        tile_rows, tile_cols = self._tiles(workload)
        if self.alpha ** 2 * tile_rows * tile_cols >= 9 * workload.out_height * workload.out_width:
            return Applicability.no(f"{self.name} on a {workload.out_height}x{workload.out_width} output does no "
                                    f"fewer multiplications than direct convolution")
        return Applicability.yes()

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        in_block, out_block = channel_blocks(workload, target)
        return StrategyLayouts(f"NCHW{in_block}c", f"NCHW{out_block}c",
                               f"winograd{self.alpha}x{self.alpha}OI{out_block}o")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        """U = G g G^T as (alpha, alpha, K/x, C, x): per alpha point, the GEMM's weight rows by channel block."""
        _, out_block = channel_blocks(workload, target)
        g_matrix = winograd_matrices(self.m)[2]
        k, c, _, _ = workload.weight_shape
        rows = te.compute((k, c, self.alpha, 3),
                          lambda o, i, eps, s: _transform(g_matrix.T, eps, lambda r: weight[o, i, r, s]),
                          name="winograd_weight_rows")
        return te.compute((self.alpha, self.alpha, k // out_block, c, out_block),
                          lambda eps, nu, ko, i, ki: _transform(
                              g_matrix.T, nu, lambda s: rows[ko * out_block + ki, i, eps, s]),
                          name="winograd_weight")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        m, alpha = self.m, self.alpha
        a_matrix, b_matrix, _ = winograd_matrices(m)
        in_block, out_block = channel_blocks(workload, target)
        in_blocks, out_blocks = workload.in_channels // in_block, workload.out_channels // out_block
        tile_rows, tile_cols = self._tiles(workload)
        tiles = workload.batch * tile_rows * tile_cols
        top, left, bottom, right = workload.padding
        # Pad bottom and right up to whole tiles; the inverse transform crops the extra outputs.
        padded = pad_input(data, (top, left, bottom + tile_rows * m - workload.out_height,
                                  right + tile_cols * m - workload.out_width), self.layouts(workload, target).data)

        # Tiles are numbered p = (n * tile_rows + ty) * tile_cols + tx. The row transform keeps the row of
        # tiles (n, ty) apart from tx so the padded rows one row of tiles reads form an exact region.
        rows = te.compute(
            (in_blocks, workload.batch * tile_rows, tile_cols, alpha, alpha, in_block),
            lambda cb, row, tx, a, nu, ci: _transform(
                b_matrix, nu, lambda b: padded[row // tile_rows, cb, row % tile_rows * m + a, tx * m + b, ci]),
            name=INPUT_ROWS_BLOCK)
        transformed = te.compute(
            (alpha, alpha, in_blocks, tiles, in_block),
            lambda eps, nu, cb, p, ci: _transform(
                b_matrix, eps, lambda a: rows[cb, p // tile_cols, p % tile_cols, a, nu, ci]),
            name=INPUT_BLOCK)
        cb = te.reduce_axis((0, in_blocks), "cb")
        ci = te.reduce_axis((0, in_block), "ci")
        product = te.compute(
            (alpha, alpha, out_blocks, tiles, out_block),
            lambda eps, nu, kb, p, ki: te.sum(
                weight[eps, nu, kb, cb * in_block + ci, ki] * transformed[eps, nu, cb, p, ci], axis=[cb, ci]),
            name=GEMM_BLOCK)
        inverse_rows = te.compute(
            (out_blocks, tiles, alpha, m, out_block),
            lambda kb, p, ra, j, ki: _transform(a_matrix, j, lambda rb: product[ra, rb, kb, p, ki]),
            name=INVERSE_ROWS_BLOCK)
        return te.compute(
            Layout.blocked(out_block).shape(workload.output_shape),
            lambda n, kb, y, x, ki: _transform(
                a_matrix, y % m,
                lambda ra: inverse_rows[kb, (n * tile_rows + y // m) * tile_cols + x // m, ra, x % m, ki]),
            name=MAIN_BLOCK)

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        """V and M, plus the padded input rows of one row of tiles per core."""
        in_block, _ = channel_blocks(workload, target)
        tile_rows, tile_cols = self._tiles(workload)
        tiles = workload.batch * tile_rows * tile_cols
        transformed = self.alpha ** 2 * tiles * (workload.in_channels + workload.out_channels)
        padded_rows = self.alpha * (tile_cols * self.m + 2) * in_block * (target.num_cores or 1)
        return 4 * (transformed + padded_rows)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        m = self.m
        _, out_block = channel_blocks(workload, target)
        out_blocks = workload.out_channels // out_block
        tile_rows, tile_cols = self._tiles(workload)
        tiles = workload.batch * tile_rows * tile_cols

        # Inverse transform, one output tile at a time, with the epilogue applied to the tile in registers.
        # Splitting by m leaves a predicate where m does not divide the output; reverse_compute_at carries it
        # into the epilogue (checked on odd sizes by the conformance suite).
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, kb, y, x, ki = sch.get_loops(conv)
        ty, yi = sch.split(y, [tile_rows, m])
        tx, xi = sch.split(x, [tile_cols, m])
        sch.reorder(n, kb, ty, tx, yi, xi, ki)
        _unroll_vectorize(sch, conv, 2)
        inverse_rows = sch.get_sblock(INVERSE_ROWS_BLOCK)
        sch.compute_at(inverse_rows, tx)
        sch.set_scope(inverse_rows, 0, "local")
        _unroll_vectorize(sch, inverse_rows, 2)
        sch.reverse_compute_at(out, tx)
        sch.vectorize(sch.get_loops(out)[-1])
        sch.parallel(sch.fuse(n, kb, ty))

        # GEMM per alpha point: a register tile of tiles x output-channel blocks, accumulated over channels.
        gemm = sch.get_sblock(GEMM_BLOCK)
        eps, nu, kb, p, ki, cb, ci = sch.get_loops(gemm)
        limit = max_accumulators(target)
        p_tile, kb_tile = _default_gemm_tile(tiles, out_blocks, limit)
        # A register tile side beyond the accumulator budget only spills: sample within it.
        kbo, kbi = decider.tile("gemm_oc_blocks", kb, 2, [out_blocks // kb_tile, kb_tile], max_innermost=limit)
        po, pi = decider.tile("gemm_tiles", p, 2, [tiles // p_tile, p_tile], max_innermost=limit)
        sch.reorder(eps, nu, kbo, po, cb, ci, pi, kbi, ki)
        sch.vectorize(ki)
        sch.unroll(kbi)
        sch.unroll(pi)
        sch.parallel(sch.fuse(eps, nu, kbo, po))
        sch.decompose_reduction(gemm, cb)

        # Input transform: a row of tiles of one channel block per task, so the padded rows and the local
        # buffer (allocated from the workspace pool inside a parallel loop) come once per task, not per tile.
        transformed = sch.get_sblock(INPUT_BLOCK)
        eps, nu, cb, p, ci = sch.get_loops(transformed)
        row, tx = sch.split(p, [workload.batch * tile_rows, tile_cols])
        sch.reorder(cb, row, tx, eps, nu, ci)
        _unroll_vectorize(sch, transformed, 2)
        rows = sch.get_sblock(INPUT_ROWS_BLOCK)
        sch.compute_at(rows, tx)
        sch.set_scope(rows, 0, "local")
        _unroll_vectorize(sch, rows, 2)
        if has_block(sch, PAD_BLOCK):
            pad = sch.get_sblock(PAD_BLOCK)
            sch.compute_at(pad, row)
            sch.vectorize(sch.get_loops(pad)[-1])
        sch.parallel(sch.fuse(cb, row))


def _unroll_vectorize(sch: s_tir.Schedule, block: s_tir.SBlockRV, unrolled: int) -> None:
    """Vectorize the innermost loop of ``block`` (the channel lane), unroll the ``unrolled`` loops above it."""
    loops = sch.get_loops(block)
    for loop in loops[-1 - unrolled:-1]:
        sch.unroll(loop)
    sch.vectorize(loops[-1])


def _default_gemm_tile(tiles: int, blocks: int, limit: int) -> tuple[int, int]:
    """(tiles, output-channel blocks) of the GEMM's register tile: as many accumulators as fit in ``limit``,
    then two channel blocks. Measured for F(4, 3) on AVX2: 4x2 best at 56 and 14, 7x1 at 28; tiles of 14-16
    accumulators spill and run 1.5x slower."""
    candidates = [(p, k) for p in divisors(tiles) for k in divisors(blocks) if p * k <= limit and k <= 4]
    return max(candidates, key=lambda t: (t[0] * t[1], -abs(t[1] - 2)))


@register
class WinogradF2NCHWc(_Winograd):
    """Winograd F(2, 3): 16 multiplications per 4 outputs (2.25x fewer than direct), small rounding error."""

    name = "winograd_f2_nchwc"
    m = 2


@register
class WinogradF4NCHWc(_Winograd):
    """Winograd F(4, 3): 36 multiplications per 16 outputs (4x fewer than direct); the weights grow 4x."""

    name = "winograd_f4_nchwc"
    m = 4
