"""TIR schedule helpers shared by lowering, output fusion and the strategies: finding blocks, and the one
schedule for stages that only move or combine data element by element (layout conversions, padding,
im2col gathers, copy-outs, pooling, whatever the default pipeline leaves as naive loops).

Keeping them here gives every caller the same answer to "is there a block of that name" and the same
parallel, vectorized loops for the same stage, so a layout conversion priced on its own (measured as
lowering schedules it) is the kernel the deployed module runs.

This module sits below the strategies, lowering and output fusion: it imports TVM only.
"""

from __future__ import annotations

from itertools import takewhile

from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError

# What an iteration variable of a block does (TVM's IterVar kinds).
DATA_PARALLEL = tirx.IterVar.DataPar
REDUCTION = tirx.IterVar.CommReduce

ROOT_BLOCK = "root"
# The longest innermost loop made one vector; a longer one is left to LLVM's loop vectorizer.
MAX_VECTOR_EXTENT = 64


def has_block(sch: s_tir.Schedule, name: str) -> bool:
    """Whether ``sch.get_sblock(name)`` finds a block (one, and only one, has that name)."""
    try:
        sch.get_sblock(name)
    except ScheduleError:
        return False
    return True


def child_blocks(sch: s_tir.Schedule) -> list[s_tir.SBlockRV]:
    """The blocks directly under the function's root block, in order; [] for a function without one."""
    if not has_block(sch, ROOT_BLOCK):
        return []
    return list(sch.get_child_blocks(sch.get_sblock(ROOT_BLOCK)))


def parallel_vectorized(sch: s_tir.Schedule, block: s_tir.SBlockRV, outer: int | None = None) -> None:
    """Parallel over the leading spatial loops of ``block``, its innermost spatial loop vectorized.

    ``outer`` caps how many leading loops run in parallel; the innermost loop is vectorized (when its
    extent is at most :data:`MAX_VECTOR_EXTENT`) only where it is not one of them. The strategies pass it: they know
    their stages' loop nests, and a stored measurement of their kernels must keep meaning the same loops.
    ``None`` (lowering, for functions it knows nothing of) parallelizes every spatial loop but the
    vectorized one.

    A block that reduces after its spatial loops (pooling, spatial means) gets its innermost spatial loop
    moved inside the reduction loops and vectorized: in NCHW<x>c each window of pixels is reduced for x
    channels at once (a 3x3 max pool ran 2.4x faster so).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    kinds = [int(v.iter_type) for v in sch.get(block).iter_vars]
    spatial = min(len(list(takewhile(lambda kind: kind == DATA_PARALLEL, kinds))), len(loops))
    if spatial == len(kinds) == len(loops):
        vectorize = len(loops) > 1 and (outer is None or len(loops) > outer) \
            and int(sch.get(loops[-1]).extent) <= MAX_VECTOR_EXTENT
        if vectorize:
            sch.vectorize(loops[-1])
        parallel = loops[:-1] if vectorize else loops
    elif (len(kinds) == len(loops) > spatial > 1 and all(kind == REDUCTION for kind in kinds[spatial:])
          and 1 < int(sch.get(loops[spatial - 1]).extent) <= MAX_VECTOR_EXTENT):
        vector = loops[spatial - 1]
        sch.reorder(*loops[spatial:], vector)
        sch.vectorize(vector)
        parallel = loops[:spatial - 1]
    else:
        parallel = loops[:spatial]
    parallel = parallel[:outer]
    if len(parallel) > 1:
        sch.parallel(sch.fuse(*parallel))
    elif parallel:
        sch.parallel(parallel[0])


def schedule_generic(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every root block inlined into its consumer where it can be, and each remaining one
    scheduled by :func:`parallel_vectorized`: how lowering schedules the functions no strategy owns
    (layout conversions, pooling, ...)."""
    sch = s_tir.Schedule(func)
    for block in child_blocks(sch)[:-1]:
        try:
            sch.compute_inline(block)
        except ScheduleError:  # not inlinable (a reduction, several consumers): scheduled on its own below
            pass
    for block in child_blocks(sch):
        parallel_vectorized(sch, block)
    return sch.mod["main"]
