"""Kernels that write straight into what their consumer makes of their output: activation layout
conversions and concatenations folded into the producing kernel's output stage.

After fusion and scheduling, a kernel whose output only feeds an activation layout conversion, or only
one operand of a concatenation, still writes that output to memory, and a second pass reads it back to
rearrange or copy it: a pass over memory that computes nothing (SqueezeNet 1.1's concatenations alone took
6% of its time on AVX2, its layout conversions 4%). :func:`write_outputs_in_place` removes those passes:

- A conversion lowering marked ``WRITTEN_BY_PRODUCER`` (by :func:`tvm_dse.ops.conversion_folds`, the rule
  the search prices it by), of a kernel's output that nothing else reads, is inlined into that kernel: the
  stage that stored each element (a convolution's output stage, its fused epilogue included) stores it at
  its place in the converted layout, in vectors whose lanes land side by side there.
- A concatenation whose operands are each a kernel's output that nothing else reads disappears: the
  first operand's kernel allocates the whole result and fills its slice, every later one writes its slice
  of that same tensor in place (``call_tir_inplace``).

Each rewritten kernel keeps its schedule: its old output becomes an intermediate, and a stage copying it
to the new place is inlined into the stage that wrote it (``reverse_compute_inline``). A kernel whose
writing stage cannot take it (one accumulating in its output, such as a pool, which the rule excludes)
keeps its pass.
"""

from __future__ import annotations

from typing import Any, Callable

import tvm
from tvm import ir, relax, s_tir, sym, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.s_tir.stmt import SBlock, SBlockRealize
from tvm.tirx.analysis import undefined_vars

from .schedule_blocks import DATA_PARALLEL, child_blocks

# The start of the name lowering gives the PrimFunc of each activation conversion it emits (lower.py),
# by which this module finds them after fusion.
CONVERSION_FUNC_PREFIX = "layout_"
# The attribute lowering sets on a conversion PrimFunc to be written by the kernel producing its input
WRITTEN_BY_PRODUCER = "tvm_dse.written_by_producer"
# LegalizeOps names relax.concat's PrimFunc after TOPI's compute; fusion leaves a lone one as it is
_CONCATENATE_PREFIX = "concatenate"
_PLACED_BLOCK = "place_output"

StageBuilder = Callable[[tirx.Var], tuple[tirx.Var, SBlock]]


def concat_axis(operand_shapes: list[tuple[int, ...]], result_shape: tuple[int, ...]) -> int | None:
    """The axis along which tensors of ``operand_shapes`` concatenate into ``result_shape``, or None."""
    for axis in range(len(result_shape)):
        others_equal = all(len(s) == len(result_shape) and all(a == b for i, (a, b) in enumerate(zip(s, result_shape))
                                                                if i != axis) for s in operand_shapes)
        if others_equal and sum(s[axis] for s in operand_shapes) == result_shape[axis]:
            return axis
    return None


def _with_output_placed(func: tirx.PrimFunc, stage: StageBuilder) -> tirx.PrimFunc:
    """``func`` (scheduled, its last parameter its output) with ``stage`` applied to its output before it
    leaves: ``stage(output)`` gives the new output parameter and one block (named ``_PLACED_BLOCK``) storing
    each element of ``output`` into it, which is inlined into the stage that wrote the element."""
    output = func.params[-1]
    new_output, block = stage(output)
    loop_vars = [tirx.Var(f"i{i}", _dtype(iv.var)) for i, iv in enumerate(block.iter_vars)]
    nest: tirx.Stmt = SBlockRealize(loop_vars, True, block)
    for var, iter_var in reversed(list(zip(loop_vars, block.iter_vars))):
        nest = tirx.For(var, iter_var.dom.min, iter_var.dom.extent, tirx.ForKind.SERIAL, nest)
    realize = func.body
    root = realize.block
    root = SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, tirx.SeqStmt([root.body, nest]), root.init,
                  [*root.alloc_buffers, output], root.match_buffers, root.annotations)
    placed = tirx.PrimFunc([*func.params[:-1], new_output], SBlockRealize(realize.iter_values, realize.predicate, root),
                           func.ret_type, func.attrs)
    sch = s_tir.Schedule(placed)
    placed_block = sch.get_sblock(_PLACED_BLOCK)
    writers = [sch.get(block).name_hint for block in sch.get_producers(placed_block)]
    sch.reverse_compute_inline(placed_block)
    if len(writers) == 1:
        _contiguous_vector_stores(sch, writers[0])
    return sch.mod["main"]


def _contiguous_vector_stores(sch: s_tir.Schedule, writer: str) -> None:
    """Where the block ``writer``, now storing the placed output, is vectorized over lanes that no longer
    land side by side (a tile of 32 NHWC channels stored into NCHW16c lands in two blocks of 16), split its
    vector loop into the widest vectors that do, the groups of them unrolled. Left whole, the vector store
    became a scatter: the first layer of MobileNetV2 writing NCHW16c ran 2-3x as long as writing NHWC (Zen 4)."""
    block = sch.get_sblock(writer)
    loops = sch.get_loops(block)
    if not loops:
        return
    vector = sch.get(loops[-1])
    if vector.kind != tirx.ForKind.VECTORIZED or not isinstance(vector.extent, tirx.IntImm):
        return
    extent = int(vector.extent)
    lanes = next((n for n in range(extent, 1, -1) if extent % n == 0 and _stores_contiguous(sch, block, loops, n)), 1)
    if lanes in (1, extent):
        return
    groups, within = sch.split(loops[-1], [None, lanes])
    sch.unroll(groups)
    sch.vectorize(within)


def _stores_contiguous(sch: s_tir.Schedule, block: s_tir.SBlockRV, loops: list[s_tir.LoopRV], lanes: int) -> bool:
    """Whether ``block``, alone in its innermost loop, with that loop split into vectors of ``lanes``, stores
    each vector's lanes at consecutive addresses: the last index of its store is a base plus the lane, and
    no other index depends on the lane."""
    fors = [sch.get(loop) for loop in loops]
    realize, store = fors[-1].body, sch.get(block).body
    if not (isinstance(realize, SBlockRealize) and isinstance(store, tirx.BufferStore)):
        return False
    analyzer = sym.Analyzer()
    for loop in fors[:-1]:
        analyzer.bind(loop.loop_var, ir.Range.from_min_extent(loop.min, loop.extent))
    innermost = fors[-1].loop_var
    dtype = _dtype(innermost)
    group, lane = tirx.Var("group", dtype), tirx.Var("lane", dtype)
    analyzer.bind(group, ir.Range.from_min_extent(tirx.const(0, dtype), tirx.const(int(fors[-1].extent) // lanes, dtype)))
    analyzer.bind(lane, ir.Range.from_min_extent(tirx.const(0, dtype), tirx.const(lanes, dtype)))
    analyzer.bind(innermost, group * lanes + lane)
    for iter_var, value in zip(realize.block.iter_vars, realize.iter_values):
        analyzer.bind(iter_var.var, value)
    *leading, last = [analyzer.simplify(index) for index in store.indices]
    return not any(_depends_on(index, lane) for index in leading) and not _depends_on(analyzer.simplify(last - lane),
                                                                                       lane)


def _depends_on(expr: Any, var: tirx.Var) -> bool:
    return any(v.same_as(var) for v in undefined_vars(expr))


def _dtype(expr: Any) -> str:
    return str(expr.ty.dtype)


def _point(indices: list[Any]) -> list[ir.Range]:
    return [ir.Range.from_min_extent(i, 1) for i in indices]


def write_into_slice(func: tirx.PrimFunc, whole_shape: tuple[int, ...], axis: int, offset: int) -> tirx.PrimFunc:
    """``func`` writing its output into a tensor of ``whole_shape`` instead, at ``offset`` along ``axis``;
    the rest of that tensor is left as it was.

    Raises ScheduleError when the stage writing the output cannot take the copy."""
    def stage(output: tirx.Var) -> tuple[tirx.Var, SBlock]:
        whole = tirx.decl_buffer(list(whole_shape), output.dtype, f"{output.name}_whole")
        iter_vars = [tirx.IterVar(ir.Range.from_min_extent(tirx.const(0, _dtype(d)), d), tirx.Var(f"v{i}", _dtype(d)),
                                  DATA_PARALLEL) for i, d in enumerate(output.shape)]
        index = [iv.var for iv in iter_vars]
        shifted = [v + tirx.const(offset, _dtype(v)) if i == axis else v for i, v in enumerate(index)]
        return whole, SBlock(iter_vars, [tirx.BufferRegion(output, _point(index))],
                             [tirx.BufferRegion(whole, _point(shifted))], _PLACED_BLOCK,
                             tirx.BufferStore(whole, tirx.BufferLoad(output, index), shifted))

    return _with_output_placed(func, stage)


def rearrangement(conversion: tirx.PrimFunc) -> SBlock | None:
    """The one block of a pure rearrangement PrimFunc (``y[i] = x[f(i)]``, same dtype: an fp32 layout
    conversion), or None for anything else."""
    if len(conversion.params) != 2:
        return None
    source, destination = conversion.params
    sch = s_tir.Schedule(conversion)
    blocks = child_blocks(sch)
    if len(blocks) != 1:
        return None
    block = sch.get(blocks[0])
    if block.init is not None or not isinstance(block.body, tirx.BufferStore):
        return None
    store = block.body
    load = store.value
    if not (store.buffer.same_as(destination) and isinstance(load, ir.TensorLoad) and load.source.same_as(source)
            and source.dtype == destination.dtype):
        return None
    return block


def write_converted(func: tirx.PrimFunc, conversion: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` writing its output already converted by ``conversion`` (a pure rearrangement, see
    :func:`rearrangement`) into ``conversion``'s output.

    Raises ScheduleError when the stage writing the output cannot take the rearrangement."""
    block = rearrangement(conversion)
    if block is None:
        raise ValueError("not a pure rearrangement")
    source, destination = conversion.params

    def stage(output: tirx.Var) -> tuple[tirx.Var, SBlock]:
        load = block.body.value
        reads = [tirx.BufferRegion(output, list(r.region)) if r.source.same_as(source) else r for r in block.reads]
        body = tirx.BufferStore(destination, tirx.BufferLoad(output, list(load.indices)), list(block.body.indices))
        return destination, SBlock(block.iter_vars, reads, block.writes, _PLACED_BLOCK, body)

    return _with_output_placed(func, stage)


class _OutputPlacer:
    """Rewrites ``main``'s dataflow blocks: conversions first (a converted kernel can then write a slice)."""

    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.builder = relax.BlockBuilder(mod)
        self.rewritten: dict[tuple, ir.GlobalVar] = {}

    def _kernel(self, key: tuple, make: Callable[[], tirx.PrimFunc], name: str) -> ir.GlobalVar:
        if key not in self.rewritten:
            self.rewritten[key] = self.builder.add_func(make(), name)
        return self.rewritten[key]

    def _func(self, callee: ir.GlobalVar) -> tirx.PrimFunc:
        return self.builder.get()[callee]

    def rewrite(self) -> tvm.IRModule:
        main = self.mod["main"]
        if not isinstance(main.body, relax.SeqExpr):
            return self.mod
        blocks = []
        for block in main.body.blocks:
            if isinstance(block, relax.DataflowBlock):
                block = self._fold_conversions(block, main.body.body)
                block = self._fold_concats(block, main.body.body)
            blocks.append(block)
        mod = self.builder.get()
        mod["main"] = relax.Function(main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure,
                                     main.attrs)
        return relax.transform.DeadCodeElimination(["main"])(mod)

    @staticmethod
    def _kernel_call(value: relax.Expr) -> bool:
        """A call_tir of one PrimFunc with a tuple of arguments and one tensor output."""
        return (isinstance(value, relax.Call) and value.op == ir.Op.get("relax.call_tir") and len(value.args) == 2
                and isinstance(value.args[1], relax.Tuple) and isinstance(value.ty, relax.TensorType))

    @classmethod
    def _is_concat(cls, value: relax.Expr) -> bool:
        return cls._kernel_call(value) and value.args[0].name_hint.startswith(_CONCATENATE_PREFIX)

    @staticmethod
    def _uses(block: relax.DataflowBlock, result: relax.Expr) -> dict[relax.Var, int]:
        uses: dict[relax.Var, int] = {}

        def count(expr: relax.Expr) -> None:
            if isinstance(expr, relax.Var):
                uses[expr] = uses.get(expr, 0) + 1

        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, count)
        relax.analysis.post_order_visit(result, count)
        return uses

    def _fold_conversions(self, block: relax.DataflowBlock, result: relax.Expr) -> relax.DataflowBlock:
        bindings = list(block.bindings)
        position = {b.var: i for i, b in enumerate(bindings)}
        uses = self._uses(block, result)
        for index, binding in enumerate(bindings):
            call = binding.value
            if not (self._kernel_call(call) and call.args[0].name_hint.startswith(CONVERSION_FUNC_PREFIX)
                    and self._func(call.args[0]).attrs.get(WRITTEN_BY_PRODUCER, False)):
                continue
            fields = list(call.args[1].fields)
            operand = fields[0] if len(fields) == 1 else None
            if operand not in position or uses.get(operand) != 1:
                continue
            producer = bindings[position[operand]]
            # a concatenation's result is better written by its operands' kernels (below) than converted
            if not self._kernel_call(producer.value) or self._is_concat(producer.value):
                continue
            conversion = self._func(call.args[0])
            kernel = producer.value.args[0]
            if rearrangement(conversion) is None:
                continue
            try:
                folded = self._kernel(("converted", kernel.name_hint, call.args[0].name_hint),
                                      lambda: write_converted(self._func(kernel), conversion),
                                      f"{kernel.name_hint}_{call.args[0].name_hint}")
            except ScheduleError:
                continue  # the writing stage accumulates in the output: the conversion stays a pass
            value = relax.call_tir(folded, producer.value.args[1], out_ty=binding.var.ty)
            bindings[index] = relax.VarBinding(binding.var, self.builder.normalize(value))
            bindings[position[operand]] = None
        return relax.DataflowBlock([b for b in bindings if b is not None])

    def _fold_concats(self, block: relax.DataflowBlock, result: relax.Expr) -> relax.DataflowBlock:
        bindings = list(block.bindings)
        position = {b.var: i for i, b in enumerate(bindings)}
        uses = self._uses(block, result)
        for index, binding in enumerate(list(bindings)):
            call = binding.value
            if not self._is_concat(call):
                continue
            operands = list(call.args[1].fields)
            if len(set(operands)) != len(operands) or not all(o in position and uses.get(o) == 1 for o in operands):
                continue
            producers = [bindings[position[o]] for o in operands]
            if not all(self._kernel_call(p.value) for p in producers):
                continue
            whole = tuple(int(d) for d in binding.var.ty.shape)
            axis = concat_axis([tuple(int(d) for d in o.ty.shape) for o in operands], whole)
            if axis is None:
                continue
            try:
                parts = self._slices([position[o] for o in operands], producers, operands, whole, axis)
            except ScheduleError:
                continue  # a writing stage accumulates in its output: the copy stays
            previous = None
            for order, (at, producer, kernel) in enumerate(sorted(parts, key=lambda p: p[0])):
                last = order == len(parts) - 1
                var = binding.var if last else relax.DataflowVar(f"{binding.var.name}_part{order}", binding.var.ty)
                arguments = list(producer.value.args[1].fields)
                if previous is None:
                    value = relax.call_tir(kernel, relax.Tuple(arguments), out_ty=binding.var.ty)
                else:
                    value = relax.call_tir_inplace(kernel, relax.Tuple([*arguments, previous]), len(arguments),
                                                   out_ty=binding.var.ty)
                bindings[at] = relax.VarBinding(var, self.builder.normalize(value))
                previous = var
            bindings[index] = None
        return relax.DataflowBlock([b for b in bindings if b is not None])

    def _slices(self, positions: list[int], producers: list, operands: list, whole: tuple[int, ...],
                axis: int) -> list:
        """[(binding position, producer binding, kernel writing its slice)] of a concatenation's operands."""
        parts, offset = [], 0
        for at, operand, producer in zip(positions, operands, producers):
            kernel = producer.value.args[0]
            sliced = self._kernel(("slice", kernel.name_hint, whole, axis, offset),
                                  lambda k=kernel, o=offset: write_into_slice(self._func(k), whole, axis, o),
                                  f"{kernel.name_hint}_into_slice")
            parts.append((at, producer, sliced))
            offset += int(operand.ty.shape[axis])
        return parts


def write_outputs_in_place(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` (fused and scheduled) with conversions and concatenations folded into the kernels producing
    their inputs, where they can be: see the module docstring."""
    return _OutputPlacer(mod).rewrite()
