"""Dense (fully connected) layers: weights packed so each vector of output features reads contiguous memory."""

from __future__ import annotations

from tvm import s_tir, te

from ..quant.scheme import ActivationQuant
from ..target import DseTarget
from ..workload import Workload
from .base import (MAIN_BLOCK, Applicability, Decider, Strategy, StrategyLayouts, largest_divisor_at_most,
                   max_accumulators, most_per_task, output_stage)
from .registry import register


@register
class DensePacked(Strategy):
    """y = x W with W (in, out) packed as (out/b, in, b), b = the largest divisor of out up to the vector lanes."""

    name = "dense_packed"
    op = "dense"

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        return super().applies(workload, target)

    def _block(self, workload: Workload, target: DseTarget) -> int:
        return largest_divisor_at_most(workload.out_channels, target.fp32_lanes)

    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        return StrategyLayouts("NC", "NC", f"IO{self._block(workload, target)}o")

    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        block = self._block(workload, target)
        return te.compute((workload.out_channels // block, workload.in_channels, block),
                          lambda ko, c, ki: weight[c, ko * block + ki], name="weight_pack")

    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        block = self._block(workload, target)
        c = te.reduce_axis((0, workload.in_channels), "c")
        return te.compute((workload.batch, workload.out_channels),
                          lambda n, k: te.sum(data[n, c] * weight[k // block, c, k % block], axis=[c]),
                          name=MAIN_BLOCK)

    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        block = self._block(workload, target)
        conv = sch.get_sblock(MAIN_BLOCK)
        out = output_stage(sch, conv)
        n, k, c = sch.get_loops(conv)
        ko, kv = sch.split(k, [None, block])
        blocks = workload.out_channels // block
        # Each block of outputs accumulates over every input, a chain of dependent FMAs: one block per task
        # left the FMA unit waiting on the previous result (1.4-1.6x slower than 5 or 10 blocks per task on
        # MobileNetV2's and ResNet-18's classifiers, Zen 4), so a task takes as many blocks as it has
        # accumulators for while the tasks still keep the cores busy.
        chains = most_per_task(blocks, max_accumulators(target))
        koo, koi = decider.tile("k_blocks", ko, 2, [blocks // chains, chains])
        co, ci = decider.tile("c", c, 2, [workload.in_channels // largest_divisor_at_most(workload.in_channels, 4),
                                           largest_divisor_at_most(workload.in_channels, 4)])
        sch.reorder(koo, n, co, koi, ci, kv)
        sch.vectorize(kv)
        sch.unroll(ci)
        sch.unroll(koi)
        sch.reverse_compute_at(out, koo, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(out)[-1])
        sch.parallel(koo)
        sch.decompose_reduction(conv, co)
