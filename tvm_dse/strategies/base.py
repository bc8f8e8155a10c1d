"""The strategy interface: one implementation of a tunable operator (algorithm x layout x precision).

A strategy owns everything about its implementation: when it applies, the layouts it reads and writes,
the weight pre-transform (run once at compile time on the constant weights), the TE compute, the
workspace it needs, and a schedule whose tunable choices are sampled decisions, so MetaSchedule can tune
it as a ``ScheduleFn`` space while a fixed set of decisions (the target family's default, or a tuned
one from a plan) rebuilds exactly the same kernel.

The compute of every strategy names its main block :data:`MAIN_BLOCK`; epilogue stages (bias, residual
add, relu/clip) follow it as elementwise blocks in its output layout, and :func:`output_stage` folds
them into one stage that the schedule places inside the main block's tiles.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from tvm import s_tir, te, tirx

from ..layouts import Layout
from ..quant.scheme import ActivationQuant
from ..schedule_blocks import has_block, parallel_vectorized
from ..target import DseTarget
from ..workload import Workload

MAIN_BLOCK = "conv"
PAD_BLOCK = "data_pad"
PRECISIONS = ("fp32", "int8", "fp16")

Decisions = dict[str, Any]


class Applicability:
    """Whether a strategy applies to a workload on a target; falsy ones carry the reason."""

    __slots__ = ("ok", "reason")

    def __init__(self, ok: bool, reason: str = ""):
        self.ok = ok
        self.reason = reason

    @classmethod
    def yes(cls) -> "Applicability":
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> "Applicability":
        return cls(False, reason)

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return "Applicability(yes)" if self.ok else f"Applicability(no: {self.reason})"


@dataclass(frozen=True)
class StrategyLayouts:
    """Layouts a strategy reads its activation in, writes its output in, and wants its weights in."""

    data: str
    output: str
    kernel: str


@dataclass(frozen=True)
class Epilogue:
    """Elementwise work fused into a conv's output stage: ``clip(conv + bias + residual)``."""

    bias: bool = False
    residual: bool = False
    clip: tuple[float, float] | None = None  # (0, inf) is relu, (0, 6) relu6

    RELU: ClassVar[tuple[float, float]] = (0.0, float("inf"))

    def describe(self) -> str:
        parts = ["bias"] * self.bias + ["residual"] * self.residual
        if self.clip == self.RELU:
            parts.append("relu")
        elif self.clip is not None:
            parts.append(f"clip{self.clip}")
        return "+".join(parts) or "none"


def apply_epilogue(out: te.Tensor, layout: str, epilogue: Epilogue, bias: te.Tensor | None = None,
                   residual: te.Tensor | None = None) -> te.Tensor:
    """Chain the epilogue's elementwise stages after ``out`` (in ``layout``); bias is indexed by channel."""
    parsed = Layout.parse(layout)
    if epilogue.bias:
        out = te.compute(out.shape, lambda *i: out(*i) + bias[parsed.channel(i)], name="T_add_bias")
    if epilogue.residual:
        out = te.compute(out.shape, lambda *i: out(*i) + residual(*i), name="T_add_residual")
    if epilogue.clip is not None:
        low, high = epilogue.clip
        if high == float("inf"):
            out = te.compute(out.shape, lambda *i: te.max(out(*i), tirx.const(low, out.dtype)), name="T_relu")
        else:
            out = te.compute(out.shape, lambda *i: te.min(te.max(out(*i), tirx.const(low, out.dtype)),
                                                          tirx.const(high, out.dtype)), name="T_clip")
    return out


class Decider:
    """Named tunable decisions for one schedule.

    With ``fixed=None`` every decision is sampled (MetaSchedule explores them); otherwise a decision
    comes from ``fixed`` when named there, else from the default the schedule gives. :attr:`chosen`
    records what was used, so a plan can store it and rebuild the same kernel.
    """

    def __init__(self, sch: s_tir.Schedule, fixed: Mapping[str, Any] | None):
        self.sch = sch
        self.fixed = fixed
        self.chosen: Decisions = {}

    def tile(self, name: str, loop: s_tir.LoopRV, parts: int, default: Sequence[int],
             max_innermost: int = 64) -> list[s_tir.LoopRV]:
        """Split ``loop`` into ``parts`` loops whose extents multiply to its extent exactly."""
        extent = int(self.sch.get(loop).extent)
        decision = None
        if self.fixed is not None:
            given = self.fixed.get(name, default)
            try:
                decision = [int(v) for v in given]
            except (TypeError, ValueError):
                raise ValueError(f"decision {name!r}={given!r} is not a list of {parts} whole numbers") from None
            product = 1
            for value in decision:
                product *= value
            if len(decision) != parts or product != extent or min(decision) < 1:
                raise ValueError(f"decision {name!r}={decision} does not split a loop of extent {extent} "
                                 f"into {parts} positive factors")
        factors = self.sch.sample_perfect_tile(loop, parts, max_innermost_factor=max(max_innermost, decision[-1] if decision else 1),
                                               decision=decision)
        self.chosen[name] = [int(self.sch.get(f)) for f in factors]
        return list(self.sch.split(loop, factors))

    def choose(self, name: str, candidates: Sequence[int], default: int) -> int:
        """Pick one of ``candidates`` (ints); returns the value picked."""
        candidates = [int(c) for c in candidates]
        index = None
        if self.fixed is not None:
            value = self.fixed.get(name, default)
            if isinstance(value, bool) or value not in candidates:
                raise ValueError(f"decision {name!r}={value!r} is not one of {candidates}")
            value = int(value)
            index = candidates.index(value)
        picked = self.sch.sample_categorical(candidates, [1.0 / len(candidates)] * len(candidates), decision=index)
        if self.fixed is None:
            # A tuning trace drops a sample nothing in the schedule uses; an annotation using it keeps the
            # choice in the trace, where the tuner reads it back.
            self.sch.annotate(self.sch.get_sblock(MAIN_BLOCK), f"tvm_dse.{name}", picked)
        self.chosen[name] = int(self.sch.get(picked))
        return self.chosen[name]

    def check_all_used(self) -> None:
        """After the schedule: raise ValueError for fixed decisions it never asked for (a misspelt or
        another strategy's decision would otherwise be ignored without a word)."""
        unknown = sorted(set(self.fixed or {}) - set(self.chosen))
        if unknown:
            raise ValueError(f"unknown decision(s) {', '.join(map(repr, unknown))}; this schedule decides "
                             f"{', '.join(map(repr, sorted(self.chosen))) or 'nothing'}")


# Fewest parallel tasks a default schedule leaves (where the workload has that many), so that the cores get
# balanced work.
MIN_PARALLEL_TASKS = 8


def most_per_task(units: int, at_most: int, other_tasks: int = 1) -> int:
    """The most of ``units`` (a divisor of it, at most ``at_most``) one parallel task may take while the tasks,
    ``units // taken * other_tasks`` of them, still number :data:`MIN_PARALLEL_TASKS`; 1 where none does."""
    return max((d for d in divisors(units) if d <= at_most and units // d * other_tasks >= MIN_PARALLEL_TASKS),
               default=1)


def vector_registers(target: DseTarget) -> int:
    """Vector registers of the target: 32 on AVX-512 and Arm (NEON/SVE), 16 on AVX2 and SSE."""
    return 32 if target.vector_bits == 512 or target.is_aarch64 else 16


def max_accumulators(target: DseTarget) -> int:
    """Vector accumulators a register tile may hold when its broadcast inputs and weights are kept in
    registers too: half the vector registers. Measured on AVX2: such tiles of 8 accumulators beat tiles
    of 12-14 by 15-40% (spills)."""
    return vector_registers(target) // 2


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_divisor_at_most(n: int, bound: int) -> int:
    return max(d for d in divisors(n) if d <= bound)


def inline_epilogue(sch: s_tir.Schedule, main: s_tir.SBlockRV) -> s_tir.SBlockRV | None:
    """Inline the elementwise blocks after ``main`` (crop, bias, residual, activation) into the last of
    them and return it; None when nothing follows ``main``."""
    chain = []
    block = main
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            break
        block = consumers[0]
        chain.append(block)
    for intermediate in chain[:-1]:
        sch.compute_inline(intermediate)
    return chain[-1] if chain else None


def output_stage(sch: s_tir.Schedule, main: s_tir.SBlockRV) -> s_tir.SBlockRV:
    """Make ``main`` write a local accumulator and return the one stage that writes the real output.

    The elementwise epilogue blocks after ``main`` are inlined into the last of them; without an
    epilogue a write-back stage is created. The caller places the returned stage inside ``main``'s tiles
    with ``reverse_compute_at``.
    """
    last = inline_epilogue(sch, main)
    if last is None:
        return sch.cache_write(main, 0, "local")
    sch.set_scope(main, 0, "local")
    return last


def pad_input(data: te.Tensor, padding: Sequence[int], layout: str) -> te.Tensor:
    """Zero-pad ``data`` (in ``layout``) on its two spatial axes: padding is (top, left, bottom, right)."""
    top, left, bottom, right = padding
    if not any(padding):
        return data
    h_axis, w_axis = Layout.parse(layout).spatial_axes
    shape = list(data.shape)
    height, width = int(shape[h_axis]), int(shape[w_axis])
    shape[h_axis] = height + top + bottom
    shape[w_axis] = width + left + right

    def padded(*index):
        h, w = index[h_axis], index[w_axis]
        source = list(index)
        source[h_axis] = h - top
        source[w_axis] = w - left
        inside = tirx.all(h >= top, h < height + top, w >= left, w < width + left)
        return tirx.if_then_else(inside, data(*source), tirx.const(0, data.dtype))

    return te.compute(shape, padded, name=PAD_BLOCK)


def padded_input_bytes(workload: Workload, extra_rows: int = 0, extra_columns: int = 0) -> int:
    """Bytes of the zero-padded input copy a strategy with a padding stage allocates (0 without padding),
    with ``extra_rows`` / ``extra_columns`` more at the bottom / right where the strategy reads past it."""
    top, left, bottom, right = workload.padding
    if not any(workload.padding) and not extra_rows and not extra_columns:
        return 0
    height = workload.height + top + bottom + extra_rows
    width = workload.width + left + right + extra_columns
    return 4 * workload.batch * workload.in_channels * height * width


def loops_below(sch: s_tir.Schedule, block: s_tir.SBlockRV, loop: s_tir.LoopRV) -> list[s_tir.LoopRV]:
    """The loops of ``block`` nested inside ``loop`` (none when every loop of a tile has extent 1)."""
    loops = sch.get_loops(block)
    return loops[[sch.get(other) for other in loops].index(sch.get(loop)) + 1:]


def write_back_tile(sch: s_tir.Schedule, out: s_tir.SBlockRV, tile: s_tir.LoopRV) -> None:
    """Place the output stage ``out`` inside ``tile``, the loop over register tiles: its innermost loop of its
    own vectorized (vectorizing a loop shared with the reduction would vectorize the reduction with it), the
    others unrolled. Unrolled, the stage reads the accumulators at constant indices, so LLVM keeps the tile
    in registers; left a loop, it read them at variable indices, and LLVM zeroed, stored and reloaded the
    tile in the workspace memory TVM allocates a local buffer in: 10-40% of the time of kernels with short
    reductions (depthwise, 1x1 convolutions of 16-32 input channels, the first 3-channel layer; Zen 4),
    nothing measurable in the others."""
    sch.reverse_compute_at(out, tile, preserve_unit_loops=True)
    loops = loops_below(sch, out, tile)
    if loops:
        sch.vectorize(loops[-1])
        for loop in loops[:-1]:
            sch.unroll(loop)


def finish_register_tiled(sch: s_tir.Schedule, conv: s_tir.SBlockRV, out: s_tir.SBlockRV,
                          write_at: s_tir.LoopRV, parallel: Sequence[s_tir.LoopRV], init_before: s_tir.LoopRV,
                          pad_outer: int) -> None:
    """The common end of a register-tiled schedule: the output stage writes each tile back inside
    ``write_at`` (:func:`write_back_tile`), the ``parallel`` loops are fused into one parallel loop, the
    accumulator init is split off before ``init_before``, and the padding stage (if any) runs parallel over
    its first ``pad_outer`` loops."""
    write_back_tile(sch, out, write_at)
    sch.parallel(sch.fuse(*parallel))
    sch.decompose_reduction(conv, init_before)
    if has_block(sch, PAD_BLOCK):
        parallel_vectorized(sch, sch.get_sblock(PAD_BLOCK), outer=pad_outer)


class Strategy(ABC):
    """One implementation of a conv2d (or dense) workload. Subclasses are registered by name.

    Subclasses set the class attributes and implement the abstract methods. Every method receives the
    workload and the target and must not modify them; none may keep state between calls.
    """

    name: ClassVar[str]
    precision: ClassVar[str] = "fp32"  # one of PRECISIONS: a name for reports and for choosing strategies
    # The input arrives as 8-bit activation codes (a ``_u8`` data layout): :meth:`compute` needs its
    # ActivationQuant, and a plan must carry the node's calibrated one.
    takes_input_quant: ClassVar[bool] = False
    op: ClassVar[str] = "conv2d"
    ungrouped_only: ClassVar[bool] = False  # declines grouped and depthwise convolutions
    # Raised whenever a change to the compute or schedule makes the same decisions build another kernel,
    # so stored measurements of the old kernel are not reused for the new one.
    schedule_version: ClassVar[int] = 1

    @property
    def reduced_precision(self) -> bool:
        """Whether this strategy computes in another precision than fp32 (so it may lose accuracy)."""
        return self.precision != "fp32"

    def applies(self, workload: Workload, target: DseTarget) -> Applicability:
        """Whether this strategy computes ``workload`` correctly on ``target`` (with the reason when not).

        The base checks op, dtype and (with ``ungrouped_only``) groups; subclasses add their own
        conditions and call it first.
        """
        if workload.op != self.op:
            return Applicability.no(f"{self.name} implements {self.op}, not {workload.op}")
        if workload.dtype != "float32":
            return Applicability.no(f"{self.name} computes in fp32, the workload is {workload.dtype}")
        if self.ungrouped_only and workload.groups != 1:
            return Applicability.no(f"{self.name} computes ungrouped convolutions (groups={workload.groups})")
        return Applicability.yes()

    @abstractmethod
    def layouts(self, workload: Workload, target: DseTarget) -> StrategyLayouts:
        """Activation layouts in and out, and the weight layout :meth:`transform_weight` produces."""

    @abstractmethod
    def transform_weight(self, weight: te.Tensor, workload: Workload, target: DseTarget) -> te.Tensor:
        """TE stage turning the model's weight (OIHW; (in, out) for dense) into the compute's weight (or a
        tuple of tensors: int8 strategies make their codes and per-channel terms).

        Run once at compile time on the constant weights (folded), never at inference time.
        """

    @abstractmethod
    def compute(self, data: te.Tensor, weight: te.Tensor, workload: Workload, target: DseTarget,
                quant: ActivationQuant | None = None) -> te.Tensor:
        """TE compute of the operator: ``data`` in ``layouts().data``, ``weight`` as :meth:`transform_weight`
        makes it; returns the output in ``layouts().output``. The reduction block is named MAIN_BLOCK.

        ``quant`` is the input's :class:`~tvm_dse.quant.ActivationQuant`, passed to every strategy: one
        with :attr:`takes_input_quant` reads codes with it (None: a placeholder one, which builds a kernel
        of the same speed), every other one ignores it."""

    def workspace_bytes(self, workload: Workload, target: DseTarget) -> int:
        """Scratch memory beyond input, output and weights (padded input, im2col matrix, transformed tiles)."""
        return 0

    @abstractmethod
    def schedule(self, sch: s_tir.Schedule, workload: Workload, target: DseTarget, decider: Decider) -> None:
        """Schedule the PrimFunc built from :meth:`compute` (plus an elementwise epilogue) in place.

        Tunable choices go through ``decider`` so they are sampled under tuning and fixed otherwise; the
        defaults passed to it are this strategy's good choice for the target's family.
        """

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"
