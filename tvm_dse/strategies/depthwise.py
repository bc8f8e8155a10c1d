"""Depthwise and grouped convolutions (groups > 1).

Depthwise (groups == in_channels, out_channels = multiplier x in_channels) is memory-bound: each input
element feeds only R x S multiply-adds, so a separate padding pass over the whole input costs about as
much as the convolution. The depthwise schedules pad inside the parallel loop instead, one channel (or
channel block) and band of output rows at a time, right before convolving it: the padded band is
written and read back in cache, and its copy is split at the left and right borders so that the
interior is plain vector moves. Grouped convolutions (1 < groups < in_channels) reuse each input element
for every output channel of its group and pad in passes of their own, like the direct strategies.

In NCHW a horizontal stride would make each vector of outputs gather its inputs: the padded input is
split by stride phase first, so that every tap reads contiguous memory.
"""

from __future__ import annotations

from typing import Callable

from tvm import s_tir, te, tirx, topi

from ..layouts import Layout
from ..quant.scheme import ActivationQuant
from ..schedule_blocks import has_block
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, MIN_PARALLEL_TASKS, PAD_BLOCK, Applicability, Decider, Strategy, StrategyLayouts,
                   divisors, largest_divisor_at_most, loops_below, max_accumulators, most_per_task, output_stage,
                   pad_input, padded_input_bytes, write_back_tile)
from .registry import register

# Bytes of padded input one band may take. A stride-1 band of B rows pads B + 2 input rows, so small
# bands repeat work; measured on AVX2 (512 KiB L2), bands of 8-28 rows at 112 and 56 (up to ~60 KiB of
# padded NCHW8c rows) were 5-10% faster than 4-row bands and than whole planes.
_BAND_BYTES = 64 * 1024
# The NCHW strategy's stage splitting the padded input's columns by stride phase.
_PHASE_BLOCK = "data_phases"
# Output vectors one parallel task should compute at least: each task allocates its padded band and
# accumulator tile (TVMBackendAllocWorkspace), which at 7x7 or 14x14 per channel costs as much as the
# convolution. Grouping channels into tasks of ~1000 vectors measured 10-30% faster there (AVX2).
_TASK_VECTORS = 1024


def _multiplier(workload: Workload) -> int:
    return workload.out_channels // workload.in_channels


def _band_rows(workload: Workload, row_bytes: int, tasks_per_band: int, tile_rows: int) -> int:
    """Default output rows per band: the most (a multiple of ``tile_rows`` dividing the output height)
    whose padded input rows fit in :data:`_BAND_BYTES`, while leaving :data:`.base.MIN_PARALLEL_TASKS`
    parallel tasks where the workload has that many."""
    (sh, _), (dh, _) = workload.stride, workload.dilation
    candidates = [b for b in divisors(workload.out_height) if b % tile_rows == 0]

    def fits(rows: int) -> bool:
        padded_rows = (rows - 1) * sh + (workload.kernel[0] - 1) * dh + 1
        return padded_rows * row_bytes <= _BAND_BYTES

    def tasks(rows: int) -> int:
        return tasks_per_band * workload.out_height // rows

    good = [b for b in candidates if fits(b) and tasks(b) >= MIN_PARALLEL_TASKS]
    return max(good or [b for b in candidates if fits(b)] or [tile_rows])


def _channel_group(units: int, unit_vectors: int, other_tasks: int) -> int:
    """Default channels (or channel blocks) per parallel task: the most dividing ``units`` whose output
    (``unit_vectors`` each) stays within :data:`_TASK_VECTORS`, leaving :data:`.base.MIN_PARALLEL_TASKS`
    tasks."""
    return most_per_task(units, _TASK_VECTORS // unit_vectors if unit_vectors else units, other_tasks)


def _padded_width(workload: Workload) -> int:
    return workload.width + workload.padding[1] + workload.padding[3]


def _unroll(sch: s_tir.Schedule, *loops: s_tir.LoopRV) -> None:
    """Unroll ``loops``: the callers' register tile and kernel columns. The kernel rows stay a loop:
    unrolling them too measured no faster for 3x3, and on some sampled 7x7 tiles LLVM 22 then emitted
    invalid IR ("Instruction does not dominate all uses")."""
    for loop in loops:
        sch.unroll(loop)


def _place_padding(sch: s_tir.Schedule, workload: Workload, at: s_tir.LoopRV | None, width_axis: int) -> None:
    """Compute the padded input inside loop ``at`` (None: in a parallel pass of its own), its width loop
    partitioned into left border, interior and right border: in the interior the padding condition folds
    to the row's, which is the same for a whole row, so LLVM hoists it and the copy is plain vector moves."""
    pad = sch.get_sblock(PAD_BLOCK)
    if at is not None:
        sch.compute_at(pad, at, preserve_unit_loops=True)
        pad_loops = loops_below(sch, pad, at)
    else:
        pad_loops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*pad_loops[:width_axis]))
    width_loop = pad_loops[width_axis]
    # The conv may leave the last padded columns unread (stride > 1); the loop covers only those it reads.
    extent = int(sch.get(width_loop).extent)
    left = min(workload.padding[1], extent)
    interior = min(workload.width, extent - left)
    sizes = [size for size in (left, interior, extent - left - interior) if size]
    parts = sch.loop_partition(width_loop, [*sizes[:-1], None]) if len(sizes) > 1 else [width_loop]
    if width_axis == len(pad_loops) - 1:
        # Width innermost (NCHW): TVM would vectorize a whole row as one if_then_else on a <W x float>
        # vector, which LLVM scalarizes; left alone, LLVM's loop vectorizer copies the row in vectors.
        return
    for part in parts:
        for block in sch.get_child_blocks(part):
            sch.vectorize(sch.get_loops(block)[-1])


def _place_phases(sch: s_tir.Schedule, at: s_tir.LoopRV | None) -> None:
    """Compute the stride-phase split of the padded input (see :func:`_nchw_source`) inside loop ``at``
    (None: in a parallel pass of its own)."""
    phases = sch.get_sblock(_PHASE_BLOCK)
    if at is not None:
        sch.compute_at(phases, at, preserve_unit_loops=True)
        *_, phase, column = loops_below(sch, phases, at)
    else:
        n, c, row, phase, column = sch.get_loops(phases)
        sch.parallel(sch.fuse(n, c, row))
    # Phase innermost: LLVM vectorizes the column loop, reading the input as interleaved vectors.
    sch.reorder(column, phase)
    sch.unroll(phase)


def _finish_banded(sch: s_tir.Schedule, workload: Workload, conv: s_tir.SBlockRV, out: s_tir.SBlockRV,
                   parallel: list[s_tir.LoopRV], band: s_tir.LoopRV | None, tile: s_tir.LoopRV,
                   reduction: s_tir.LoopRV, width_axis: int) -> None:
    """Write the register tile back inside ``tile``, pad the input inside ``band`` (the loop over one
    channel's band of rows; None: in a pass of its own), parallelize, split the init."""
    write_back_tile(sch, out, tile)
    if has_block(sch, PAD_BLOCK):
        _place_padding(sch, workload, band, width_axis)
    sch.parallel(sch.fuse(*parallel))
    sch.decompose_reduction(conv, reduction)


def _nchw_workspace(workload: Workload) -> int:
    """Bytes of the padded input and, with a horizontal stride, of its phase split (:func:`_nchw_source`)."""
    if workload.stride[1] == 1:
        return padded_input_bytes(workload)
    rows = workload.height + workload.padding[0] + workload.padding[2]
    phase_width = workload.out_width + (workload.kernel[1] - 1) * workload.dilation[1] // workload.stride[1]
    phases = 4 * workload.batch * workload.in_channels * rows * workload.stride[1] * phase_width
    return padded_input_bytes(workload) + phases


def _nchw_source(data: te.Tensor, workload: Workload) -> Callable[..., tirx.PrimExpr]:
    """The padded NCHW input as a function of (n, channel, padded row, padded column).

    With a horizontal stride sw > 1, a vector of outputs along the width would read every sw-th input
    (a gather, one scalar load per lane): the padded columns are split into sw phases (column = w * sw +
    phase) by a stage of their own, so that each tap reads one phase contiguously.
    """
    (_, sw), (_, dw) = workload.stride, workload.dilation
    if sw == 1:
        padded = pad_input(data, workload.padding, "NCHW")
        return lambda n, c, row, column: padded[n, c, row, column]
    phase_width = workload.out_width + (workload.kernel[1] - 1) * dw // sw
    top, left, bottom, right = workload.padding
    right += max(0, sw * phase_width - _padded_width(workload))
    padded = pad_input(data, (top, left, bottom, right), "NCHW")
    batch, channels, rows, _ = padded.shape
    phases = te.compute((batch, channels, rows, sw, phase_width), lambda n, c, h, p, w: padded[n, c, h, w * sw + p],
                        name=_PHASE_BLOCK)
    return lambda n, c, row, column: phases[n, c, row, column % sw, column // sw]


class _DepthwiseBase(Strategy):
    schedule_version = 2  # 2: the register tile written back by unrolled code (:func:`.base.write_back_tile`)

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        if not workload.is_depthwise:
            return Applicability.no(f"{self.name} computes depthwise convolutions (groups == in_channels), "
                                    f"not groups={workload.groups} with {workload.in_channels} input channels")
        return Applicability.yes()

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        return padded_input_bytes(workload)


@register
class DepthwiseNCHW(_DepthwiseBase):
    """Depthwise convolution in NCHW, weights (K, R, S): output width in vector lanes, a register tile of
    rows x vectors along the width, one channel's band of rows padded (and split by stride phase) at a
    time."""

    name = "depthwise_nchw"

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        return _nchw_workspace(workload)

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NCHW", "NCHW", "OHW")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        k, _, r, s = workload.weight_shape
        return topi.reshape(weight, (k, r, s))

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        multiplier = _multiplier(workload)
        source = _nchw_source(data, workload)
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        return te.compute(
            workload.output_shape,
            lambda n, k, y, x: te.sum(source(n, k // multiplier, y * sh + ry * dh, x * sw + rx * dw)
                                      * weight[k, ry, rx], axis=[ry, rx]),
            name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        lanes = target.fp32_lanes
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, k, y, x, ry, rx = sch.get_loops(conv)
        channels, height, width = workload.out_channels, workload.out_height, workload.out_width
        x_vector = lanes if width % lanes == 0 else largest_divisor_at_most(width, 2 * lanes)
        vectors = -(-x_vector // lanes)
        budget = max(1, max_accumulators(target) // vectors)
        x_tile = largest_divisor_at_most(width // x_vector, budget)
        y_tile = largest_divisor_at_most(height, max(1, budget // x_tile))
        band = _band_rows(workload, _padded_width(workload) * 4, workload.batch * channels, y_tile)
        group = _channel_group(channels, band * width // lanes, workload.batch * height // band)
        ko, ki = decider.tile("oc", k, 2, [channels // group, group])
        yo, ym, yi = decider.tile("oh", y, 3, [height // band, band // y_tile, y_tile])
        xo, xu, xv = decider.tile("ow", x, 3, [width // (x_tile * x_vector), x_tile, x_vector])
        sch.reorder(n, ko, yo, ki, ym, xo, ry, rx, yi, xu, xv)
        sch.vectorize(xv)
        _unroll(sch, xu, yi, rx)
        if workload.stride[1] > 1:
            _place_phases(sch, ki)
        _finish_banded(sch, workload, conv, out, [n, ko, yo], ki, xo, ry, width_axis=3)


@register
class DepthwiseNHWC(_DepthwiseBase):
    """Depthwise convolution in NHWC, weights (R, S, K): channels in vector lanes, a register tile of
    pixels along the width, the input padded per band of rows and block of channels."""

    name = "depthwise_nhwc"

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NHWC", "NHWC", "HWO")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        k, _, r, s = workload.weight_shape
        return te.compute((r, s, k), lambda y, x, o: weight[o, 0, y, x], name="weight_pack")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        multiplier = _multiplier(workload)
        padded = pad_input(data, workload.padding, "NHWC")
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        return te.compute(
            (workload.batch, workload.out_height, workload.out_width, workload.out_channels),
            lambda n, y, x, k: te.sum(padded[n, y * sh + ry * dh, x * sw + rx * dw, k // multiplier]
                                      * weight[ry, rx, k], axis=[ry, rx]),
            name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        lanes = target.fp32_lanes
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, y, x, k, ry, rx = sch.get_loops(conv)
        channels, height, width = workload.out_channels, workload.out_height, workload.out_width
        # Two vectors of channels per pixel: one 64-byte cache line of the input and output per access, where
        # one vector leaves each line half-used per pass (2x slower at 256 channels @28, measured on AVX2).
        k_vector = largest_divisor_at_most(channels, 2 * lanes)
        blocks = channels // k_vector
        x_tile = largest_divisor_at_most(width, max(1, max_accumulators(target) // -(-k_vector // lanes)))
        band = _band_rows(workload, _padded_width(workload) * k_vector * 4, workload.batch * blocks, 1)
        group = _channel_group(blocks, band * width * k_vector // lanes, workload.batch * height // band)
        ko, ki, kv = decider.tile("oc", k, 3, [blocks // group, group, k_vector])
        yo, ym, yi = decider.tile("oh", y, 3, [height // band, band, 1])
        xo, xi = decider.tile("ow", x, 2, [width // x_tile, x_tile])
        sch.reorder(n, ko, yo, ki, ym, xo, ry, rx, yi, xi, kv)
        sch.vectorize(kv)
        _unroll(sch, xi, yi, rx)
        # A vector of kv output channels reads kv / multiplier input channels; when that is no whole number
        # the band's channel range varies between blocks, which compute_at cannot vectorize.
        per_band = int(sch.get(kv).extent) % _multiplier(workload) == 0
        _finish_banded(sch, workload, conv, out, [n, ko, yo], ki if per_band else None, xo, ry, width_axis=2)


@register
class DepthwiseNCHWc(_DepthwiseBase):
    """Depthwise convolution in NCHW<x>c (x = vector lanes, as spatial_pack_nchwc): one vector of channels
    per output pixel, a register tile of pixels along a row, weights (K/x, R, S, x).

    With a channel multiplier m, output channel k reads input channel k // m, which lies in another lane
    (and block): correct through a shuffled load; when m does not divide x the input is padded in a pass
    of its own (see depthwise_nhwc).
    """

    name = "depthwise_nchwc"

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        if workload.in_channels % target.fp32_lanes:
            return Applicability.no(f"{workload.in_channels} input channels do not fill blocks of "
                                    f"{target.fp32_lanes} lanes")
        return Applicability.yes()

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        lanes = target.fp32_lanes
        return StrategyLayouts(f"NCHW{lanes}c", f"NCHW{lanes}c", f"OHW{lanes}o")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        lanes = target.fp32_lanes
        k, _, r, s = workload.weight_shape
        return te.compute((k // lanes, r, s, lanes), lambda ko, y, x, ki: weight[ko * lanes + ki, 0, y, x],
                          name="weight_pack")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        lanes = target.fp32_lanes
        multiplier = _multiplier(workload)
        padded = pad_input(data, workload.padding, self.layouts(workload, target).data)
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")

        def conv(n, ko, y, x, ki):
            channel = (ko * lanes + ki) // multiplier
            return te.sum(padded[n, channel // lanes, y * sh + ry * dh, x * sw + rx * dw, channel % lanes]
                          * weight[ko, ry, rx, ki], axis=[ry, rx])

        return te.compute(Layout.blocked(lanes).shape(workload.output_shape), conv, name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        lanes = target.fp32_lanes
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, k, y, x, lane, ry, rx = sch.get_loops(conv)
        blocks, height, width = workload.out_channels // lanes, workload.out_height, workload.out_width
        x_tile = largest_divisor_at_most(width, max_accumulators(target))
        band = _band_rows(workload, _padded_width(workload) * lanes * 4, workload.batch * blocks, 1)
        group = _channel_group(blocks, band * width, workload.batch * height // band)
        ko, ki = decider.tile("oc", k, 2, [blocks // group, group])
        yo, ym, yi = decider.tile("oh", y, 3, [height // band, band, 1])
        xo, xi = decider.tile("ow", x, 2, [width // x_tile, x_tile])
        sch.reorder(n, ko, yo, ki, ym, xo, ry, rx, yi, xi, lane)
        sch.vectorize(lane)
        _unroll(sch, xi, yi, rx)
        per_band = lanes % _multiplier(workload) == 0
        _finish_banded(sch, workload, conv, out, [n, ko, yo], ki if per_band else None, xo, ry, width_axis=3)


@register
class GroupedNCHW(Strategy):
    """Grouped convolution in NCHW, OIHW weights: as direct_nchw (output width in vector lanes, output
    channels in registers), with the output channels tiled inside one group so the tile shares its input."""

    name = "grouped_nchw"
    schedule_version = 2  # 2: the register tile written back by unrolled code (:func:`.base.write_back_tile`)

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        base = super().applies(workload, target)
        if not base:
            return base
        if not 1 < workload.groups < workload.in_channels:
            return Applicability.no(f"{self.name} computes grouped convolutions with 1 < groups < in_channels, "
                                    f"not groups={workload.groups} with {workload.in_channels} input channels")
        return Applicability.yes()

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        return _nchw_workspace(workload)

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NCHW", "NCHW", "OIHW")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        return topi.identity(weight)

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        source = _nchw_source(data, workload)
        (sh, sw), (dh, dw) = workload.stride, workload.dilation
        group_in = workload.in_channels // workload.groups
        group_out = workload.out_channels // workload.groups
        rc = te.reduce_axis((0, group_in), "rc")
        ry = te.reduce_axis((0, workload.kernel[0]), "ry")
        rx = te.reduce_axis((0, workload.kernel[1]), "rx")
        return te.compute(
            workload.output_shape,
            lambda n, k, y, x: te.sum(source(n, k // group_out * group_in + rc, y * sh + ry * dh, x * sw + rx * dw)
                                      * weight[k, rc, ry, rx], axis=[rc, ry, rx]),
            name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        lanes = target.fp32_lanes
        group_out = workload.out_channels // workload.groups
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, k, y, x, rc, ry, rx = sch.get_loops(conv)
        # Not a decision: splitting at the group boundary is what lets k // group_out fold to the group.
        g, k = sch.split(k, [workload.groups, group_out])
        # At most one vector along the width: vectors of 14 lanes (two registers, the second partly used)
        # ran 1.7-2.4x slower than 7 or 8 lanes at widths 56 and 14 (AVX2).
        x_vector = largest_divisor_at_most(workload.out_width, lanes)
        k_inner = largest_divisor_at_most(group_out, max_accumulators(target))
        ko, ki = decider.tile("k", k, 2, [group_out // k_inner, k_inner])
        yo, yi = decider.tile("y", y, 2, [workload.out_height, 1])
        xo, xi = decider.tile("x", x, 2, [workload.out_width // x_vector, x_vector])
        sch.reorder(n, g, ko, yo, xo, rc, ry, rx, ki, yi, xi)
        sch.vectorize(xi)
        _unroll(sch, yi, ki)
        write_back_tile(sch, out, xo)
        sch.parallel(sch.fuse(n, g, ko, yo))
        sch.decompose_reduction(conv, rc)
        # Each input element feeds a whole group's output channels: padding in passes of its own is cheap.
        if workload.stride[1] > 1:
            _place_phases(sch, None)
        if has_block(sch, PAD_BLOCK):
            _place_padding(sch, workload, None, width_axis=3)
