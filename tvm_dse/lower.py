"""From a plan to a deployable module: every tunable node lowered by its chosen strategy, activation
layouts carried through layout-transparent operators, conversions inserted only where a producer's
layout differs from its consumer's, weights pre-transformed at compile time, epilogues fused into the
convolutions' output stages, every kernel scheduled.

The steps (:func:`lower_plan`):

1. Rewrite ``main`` binding by binding, tracking each value's layout (``NCHW`` for 4-D, ``NC`` for 2-D
   where it starts): a tunable node becomes its strategy's weight transform on the constant and its TE
   compute, reading its input converted to the strategy's layout (one conversion per value and
   layout, shared by all consumers; into 8-bit codes for an int8 strategy, quantizing with the node's
   calibrated input quantization); relu/clip/bias add/pooling/spatial means run in whatever layout
   their input has (exactly the calls :func:`tvm_dse.ops.passes_layout` names, as the DSE graph prices
   them; per-channel constants converted with numpy; a pool or spatial mean is named after the kernel or
   join whose choice gives it its layout, so profiles price it with that choice); residual adds and
   concats bring their inputs to one layout (the plan's join layout, else the first of their inputs'
   layouts that holds every operand and the result, else the model's own); every other operator and the
   outputs get the model's own layout back.
2. Legalize the remaining Relax operators, fold constants (the weight transforms disappear into new
   constants), fuse (bias, residual add and activation join their convolution's PrimFunc; so does a
   conversion that only quantizes, where the value has no other consumer: the producer writes codes).
3. Schedule: each fused convolution with its strategy's schedule and the plan's decisions (defaults
   where the plan has none); every other PrimFunc with the generic parallel, vectorized schedule
   (:func:`tvm_dse.schedule_blocks.schedule_generic`).
4. Fold passes that only move data into the kernels before them (:mod:`tvm_dse.output_fusion`): a
   kernel whose output only feeds a layout conversion writes the converted layout itself, and the
   kernels producing a concatenation's operands write their slices of its result.

:func:`build_plan` then makes the (transformed) weights parameters of ``main`` after the model's inputs,
so that an exported library holds them once, outside TVM's constant pool (:mod:`tvm_dse.deployed_library`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir, te, topi

from .build import BuiltModel
from .frontend import Model
from .graph import TUNABLE_KINDS, DseGraph, build_graph
from .layouts import NATIVE_LAYOUTS, Layout, changes_precision_only, holds, native_layout, transform
from .ops import OpClass, Writer, activation_writers, call_class, conversion_folds, passes_layout, tensor_shape
from .output_fusion import CONVERSION_FUNC_PREFIX, WRITTEN_BY_PRODUCER, write_outputs_in_place
from .plan import Plan, PlanError
from .quant.scheme import UNCALIBRATED, ActivationQuant
from .schedule_blocks import has_block, schedule_generic
from .strategies import get_strategy
from .strategies.base import MAIN_BLOCK, Decider
from .strategies.kernel import packed_weights, strategy_compute, transformed_weights
from .target import DseTarget, TargetLike, parse_target
from .timing import Timing

# An activation conversion is kept out of fusion (FuseOps would otherwise merge it into a neighbour's
# PrimFunc), except one that only changes precision and folds into its writer by ops.conversion_folds (it
# joins the writer's output stage): the search prices each as that rule says (pricing.py).
_OPAQUE = 8
# A tunable node's kernel is named ``dse_<vertex id>_<strategy>``; fusion prefixes it and output fusion may
# append what it folded. Nodes of one workload and strategy with the same epilogue share one function,
# named after the first of them.
_KERNEL_NAME = re.compile(r"(?:^|_)dse_(\d+)_")
# A pool (or a spatial mean) runs in the layout of the activation it reads, which the plan's choice at one
# vertex (a kernel or a join) decides: its function is named after that vertex and layout, so the profile of
# a module prices it with that vertex's options (profiling.py). ``__`` ends the layout, which may hold ``_``
# (``NCHW8c_u8``); fusion may prefix the name and append what it fused.
_FOLLOWER_NAME = re.compile(r"(?:^|_)follows_(\d+)_(\w+?)__")


def kernel_name(vertex_id: int, strategy: str) -> str:
    """The function name of vertex ``vertex_id``'s kernel under ``strategy``."""
    return f"dse_{vertex_id}_{strategy}"


def kernel_vertex(function_name: str) -> int | None:
    """The vertex id in a function name :func:`kernel_name` made (fused or not), else None."""
    match = _KERNEL_NAME.search(function_name)
    return int(match.group(1)) if match else None


def follower_name(vertex_id: int, layout: str, op: str) -> str:
    """The function name of ``op`` running in ``layout``, the layout vertex ``vertex_id``'s choice decides."""
    return f"follows_{vertex_id}_{layout}__{op}"


def followed_vertex(function_name: str) -> tuple[int, str] | None:
    """(vertex id, layout) in a function name :func:`follower_name` made (fused or not), else None."""
    match = _FOLLOWER_NAME.search(function_name)
    return (int(match.group(1)), match.group(2)) if match else None


def _mean(data: te.Tensor, axes: list[int], keepdims: bool) -> te.Tensor:
    return topi.divide(topi.sum(data, axes, keepdims), prod(int(data.shape[axis]) for axis in axes))


# the TOPI computes of the reductions ops.py lets pass a layout (over H and W only)
_SPATIAL_REDUCTIONS = {"mean": _mean, "max": topi.max, "sum": topi.sum}


def _constant_in_layout(constant: tvm.ir.Constant, layout: str) -> relax.Expr:
    """A per-channel constant operand of an elementwise op, reshaped for an activation in ``layout``."""
    value = constant.value.numpy()
    if layout in NATIVE_LAYOUTS.values() or value.ndim == 0 or value.size == 1:
        return constant
    nchw = value.reshape((1,) * (4 - value.ndim) + value.shape)
    return relax.const(Layout.parse(layout).from_nchw(nchw), str(value.dtype))


class _PlanRewriter:
    """Step 1: the Relax ``main`` with the plan's strategies and the layout conversions between them."""

    def __init__(self, model: Model, graph: DseGraph, plan: Plan, target: DseTarget):
        self.model = model
        self.target = target
        self.plan = plan
        self.by_binding = {v.binding: v for v in graph.vertices if v.binding is not None}
        # the importer may have emitted PrimFuncs of its own (e.g. for Clip with tensor bounds): keep them
        helpers = tvm.IRModule({gv: f for gv, f in model.mod.functions.items() if gv.name_hint != "main"})
        self.builder = relax.BlockBuilder(helpers)
        self.values: dict[relax.Var, tuple[relax.Expr, str]] = {}
        # per value: the vertex whose choice decides its layout (see _layout_owner)
        self.owners: dict[relax.Var, int] = {}
        self.conversions: dict[tuple[Any, str, ActivationQuant | None], relax.Expr] = {}
        self.writers, self.readers = activation_writers(model.mod["main"])

    def rewrite(self) -> tvm.IRModule:
        main = self.model.mod["main"]
        params = [relax.Var(p.name, p.ty) for p in main.params]
        with self.builder.function("main", params, attrs={"num_input": len(params)}):
            with self.builder.dataflow():
                for old, new in zip(main.params, params):
                    self.values[old] = (new, self._native(new))
                for index, binding in enumerate(b for block in main.body.blocks for b in block.bindings):
                    self.values[binding.var] = self._lower(index, binding.value)
                    owner = self._layout_owner(index, binding.value)
                    if owner is not None:
                        self.owners[binding.var] = owner
                result = self._native_expr(main.body.body)
                output = self.builder.emit_output(result)
            self.builder.emit_func_output(output)
        return self.builder.get()

    @staticmethod
    def _native(expr: relax.Expr) -> str:
        return native_layout(tensor_shape(expr))

    def _arg(self, expr: relax.Expr) -> tuple[relax.Expr, str]:
        if isinstance(expr, relax.Var) and expr in self.values:
            return self.values[expr]
        return expr, ""  # constants, shapes, prim values: layout-free

    def _convert(self, expr: relax.Expr, layout: str, quant: ActivationQuant | None = None) -> relax.Expr:
        """``expr`` in ``layout``; ``quant`` quantizes it where ``layout`` holds 8-bit codes."""
        value, current = self._arg(expr)
        if not current or current == layout:
            return value
        key = (value, layout, quant)
        if key not in self.conversions:
            call = self.builder.call_te(lambda x: transform(x, current, layout, quant=quant), value,
                                        primfunc_name_hint=f"{CONVERSION_FUNC_PREFIX}{current}_to_{layout}")
            folds = conversion_folds(self.writers.get(expr, Writer.NONE), self.readers[expr], current, layout)
            if not (folds and changes_precision_only(current, layout)):
                function = call.args[0]
                func = self.builder.get()[function].with_attr("op_pattern", _OPAQUE)
                self.builder.update_func(function, func.with_attr(WRITTEN_BY_PRODUCER, True) if folds else func)
            self.conversions[key] = self.builder.emit(call)
        return self.conversions[key]

    def _native_expr(self, expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self._native_expr(f) for f in expr.fields])
        value, current = self._arg(expr)
        return self._convert(expr, self._native(expr)) if current else value  # the model's own rank decides

    def _layout_owner(self, index: int, value: relax.Expr) -> int | None:
        """The vertex whose choice decides the layout of binding ``index``'s value: a kernel or a join
        itself, a layout-transparent operator its activation's owner; None where the model's own layout
        holds it whatever the plan."""
        vertex = self.by_binding.get(index)
        if vertex is not None and vertex.kind in (*TUNABLE_KINDS, "join"):
            return vertex.id
        if isinstance(value, relax.Call) and passes_layout(value):
            return next((self.owners[arg] for arg in value.args if isinstance(arg, relax.Var) and arg in self.owners),
                        None)
        return None

    def _lower(self, index: int, value: relax.Expr) -> tuple[relax.Expr, str]:
        vertex = self.by_binding.get(index)
        if vertex is not None and vertex.is_tunable:
            return self._lower_tunable(vertex, value)
        if passes_layout(value):
            lowered = self._lower_transparent(value, vertex)
            if lowered is not None:
                return lowered
        return self._lower_fixed(value)

    def _lower_tunable(self, vertex: Any, call: relax.Call) -> tuple[relax.Expr, str]:
        choice = self.plan.nodes[vertex.name]
        strategy = get_strategy(choice.strategy)
        workload = vertex.workload
        layouts = strategy.layouts(workload, self.target)
        quant = ActivationQuant.from_dict(choice.quant) if strategy.takes_input_quant else None
        data = self._convert(call.args[0], layouts.data, quant)
        # call_te passes only tensors and plain values through: close over the workload and target. One
        # call per pre-transformed weight tensor (int8 strategies make two), each folded into a constant.
        count = len(packed_weights(strategy, workload, self.target))
        weights = [self.builder.emit_te(lambda w, i=i: transformed_weights(strategy, w, workload, self.target)[i],
                                        call.args[1], primfunc_name_hint=f"weight_{vertex.id}")
                   for i in range(count)]
        output = self.builder.emit_te(
            lambda x, *w: strategy_compute(strategy, x, w, workload, self.target, quant), data, *weights,
            primfunc_name_hint=kernel_name(vertex.id, strategy.name))
        return output, layouts.output

    def _lower_transparent(self, call: relax.Call, vertex: Any) -> tuple[relax.Expr, str] | None:
        """``call`` (one that :func:`~tvm_dse.ops.passes_layout`) in the layout its activations arrive in;
        None where they carry none (constants only)."""
        kind = call_class(call)
        first, layout = self._arg(call.args[0])
        if kind is OpClass.ELEMENTWISE_UNARY:
            return self.builder.emit(relax.Call(call.op, [first, *call.args[1:]], call.attrs)), layout
        # pools and spatial reductions in TOPI's compute, as legalizing their Relax operators would give
        # them, named for the vertex that decides their layout
        owner = self.owners.get(call.args[0])
        if kind is OpClass.POOL and layout:
            attrs = call.attrs
            pool_type = "max" if call.op.name == "relax.nn.max_pool2d" else "avg"
            options = dict(kernel=attrs.pool_size, stride=attrs.strides, dilation=attrs.dilation,
                           padding=attrs.padding, pool_type=pool_type, ceil_mode=bool(attrs.ceil_mode), layout=layout)
            if pool_type == "avg":
                options["count_include_pad"] = bool(attrs.count_include_pad)
            return self.builder.emit_te(topi.nn.pool2d, first, **options, primfunc_name_hint=self._follower(
                owner, layout, f"{pool_type}_pool2d")), layout
        if kind is OpClass.SPATIAL_REDUCTION and layout:
            operator = call.op.name.removeprefix("relax.")
            return self.builder.emit_te(_SPATIAL_REDUCTIONS[operator], first, list(Layout.parse(layout).spatial_axes),
                                        True, primfunc_name_hint=self._follower(owner, layout, operator)), layout
        if kind is OpClass.ELEMENTWISE_BINARY:
            return self._lower_elementwise(call, vertex)
        if kind is OpClass.CONCAT:
            layout = self._join_layout(call, call.args[0].fields, vertex)
            fields = [self._convert(f, layout) for f in call.args[0].fields]
            return self.builder.emit(relax.op.concat(fields, axis=Layout.parse(layout).channel_axis)), layout
        return None

    @staticmethod
    def _follower(owner: int | None, layout: str, op: str) -> str:
        return op if owner is None else follower_name(owner, layout, op)

    def _join_layout(self, call: relax.Call, operands: Any, vertex: Any) -> str:
        """The layout a join's operands meet in (the plan validated its own choice against the graph)."""
        if vertex is not None and vertex.name in self.plan.join_layouts:
            return self.plan.join_layouts[vertex.name]
        shapes = [tensor_shape(o) for o in operands if tensor_shape(o) is not None] + [tensor_shape(call)]
        current = [layout for _, layout in (self._arg(o) for o in operands) if layout]
        return next((layout for layout in current if holds(layout, *shapes)), self._native(call))

    def _lower_elementwise(self, call: relax.Call, vertex: Any) -> tuple[relax.Expr, str] | None:
        activations = [a for a in call.args if isinstance(a, relax.Var) and a in self.values]
        if not activations:
            return None
        layout = self._join_layout(call, activations, vertex)
        # passes_layout checked that every constant operand varies along channels at most
        args = [_constant_in_layout(arg, layout) if isinstance(arg, tvm.ir.Constant) else self._convert(arg, layout)
                for arg in call.args]
        return self.builder.emit(relax.Call(call.op, args, call.attrs)), layout

    def _lower_fixed(self, value: relax.Expr) -> tuple[relax.Expr, str]:
        if isinstance(value, relax.Call):
            args = [self._native_expr(a) for a in value.args]
            rebuilt = relax.Call(value.op, args, value.attrs, value.ty_args)
        elif isinstance(value, relax.Tuple):
            rebuilt = relax.Tuple([self._native_expr(f) for f in value.fields])
        elif isinstance(value, relax.TupleGetItem):
            rebuilt = relax.TupleGetItem(self._native_expr(value.tuple_value), value.index)
        else:
            rebuilt = self._native_expr(value)
        emitted = self.builder.emit(rebuilt)
        return emitted, self._native(emitted)


def _schedule_module(mod: tvm.IRModule, graph: DseGraph, plan: Plan, target: DseTarget) -> tvm.IRModule:
    """Step 3: schedule every PrimFunc of the fused module."""
    vertices = {v.id: v for v in graph.vertices}
    scheduled = {}
    for global_var, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        vertex_id = kernel_vertex(global_var.name_hint)
        if vertex_id is not None and has_block(s_tir.Schedule(func), MAIN_BLOCK):
            vertex = vertices[vertex_id]
            choice = plan.nodes[vertex.name]
            sch = s_tir.Schedule(func)
            decider = Decider(sch, dict(choice.decisions or {}))
            try:
                get_strategy(choice.strategy).schedule(sch, vertex.workload, target, decider)
                decider.check_all_used()
            except ValueError as error:
                raise PlanError(f"node {vertex.name!r} ({choice.strategy}): {error}") from None
            scheduled[global_var] = sch.mod["main"]
        else:
            scheduled[global_var] = schedule_generic(func)
    for global_var, func in scheduled.items():
        mod[global_var] = func
    return mod


def lower_plan(model: Model, plan: Plan, target: TargetLike, graph: DseGraph | None = None) -> tvm.IRModule:
    """The model with the plan applied, fused and scheduled, ready for :func:`tvm.compile`'s lowering."""
    graph = graph or build_graph(model)
    dse_target = plan.validate(model, graph, target)
    mod = _PlanRewriter(model, graph, plan, dse_target).rewrite()
    with dse_target.tvm_target:
        mod = tvm.transform.Sequential([
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.EliminateCommonSubexpr(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(["main"]),
        ])(mod)
    return write_outputs_in_place(_schedule_module(mod, graph, plan, dse_target))


@dataclass
class BuiltLayoutTransform:
    """One activation conversion compiled on its own, as lowering schedules it, so it can be priced."""

    executable: Any
    source: str
    destination: str
    nchw_shape: tuple[int, ...]
    target: DseTarget

    def _arguments(self, array: np.ndarray) -> list:
        source, destination = Layout.parse(self.source), Layout.parse(self.destination)
        return [tvm.runtime.tensor(np.ascontiguousarray(array, source.dtype)),
                tvm.runtime.tensor(np.zeros(destination.shape(self.nchw_shape), destination.dtype))]

    def run(self, array: np.ndarray) -> np.ndarray:
        """Convert ``array`` (in the source layout) on the host."""
        arguments = self._arguments(array)
        self.executable["main"](*arguments)
        return arguments[1].numpy()

    def time(self, array: np.ndarray, number: int = 10, repeat: int = 5) -> Timing:
        arguments = self._arguments(array)
        self.executable["main"](*arguments)
        evaluator = self.executable.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)
        return Timing.from_seconds(list(evaluator(*arguments).results))


def build_layout_transform(nchw_shape: tuple[int, ...], source: str, destination: str,
                           target: DseTarget, quant: ActivationQuant = UNCALIBRATED) -> BuiltLayoutTransform:
    """Compile the conversion of an activation of logical shape ``nchw_shape`` from ``source`` to
    ``destination`` layout, scheduled as in a lowered model; ``quant`` where one side holds 8-bit codes."""
    layout = Layout.parse(source)
    data = te.placeholder(layout.shape(tuple(nchw_shape)), layout.dtype, name="data")
    func = schedule_generic(te.create_prim_func([data, transform(data, source, destination, quant=quant)]))
    executable = tvm.compile(func, target=target.tvm_target)
    return BuiltLayoutTransform(executable, source, destination, tuple(nchw_shape), target)


# A constant smaller than this stays in the constant pool (a scale, a zero point): a parameter costs a call
# argument on every run, a few hundred bytes of constant do not count
_SMALLEST_WEIGHT_ELEMENTS = 64


@relax.expr_functor.mutator
class _WeightsAsParameters(relax.PyExprMutator):
    """Replaces each weight constant of a function's body by a new variable, one per distinct constant."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.parameters: list[relax.Var] = []
        self.weights: list[tvm.runtime.Tensor] = []
        self._replaced: dict[Any, relax.Var] = {}

    def visit_generic_const_(self, op: tvm.ir.Constant) -> relax.Expr:
        if prod(op.value.shape) < _SMALLEST_WEIGHT_ELEMENTS:
            return op
        if op not in self._replaced:
            self._replaced[op] = relax.Var(f"weight{len(self.parameters)}", op.ty)
            self.parameters.append(self._replaced[op])
            self.weights.append(op.value)
        return self._replaced[op]


def weights_as_parameters(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[tvm.runtime.Tensor]]:
    """``mod`` with ``main``'s weight constants turned into parameters after its own, and their values in
    that order."""
    main = mod["main"]
    detach = _WeightsAsParameters(mod)
    body = detach.visit_expr(main.body)
    mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    mod["main"] = relax.Function(list(main.params) + detach.parameters, body, main.ret_ty, main.is_pure,
                                 main.attrs)
    return mod, detach.weights


def build_plan(model: Model, plan: Plan, target: TargetLike, graph: DseGraph | None = None) -> BuiltModel:
    """Compile the model as the plan says, for ``target``; its weights are ``main``'s parameters after the
    model's inputs (:func:`weights_as_parameters`), which the built model passes."""
    dse_target = parse_target(target)
    mod, weights = weights_as_parameters(lower_plan(model, plan, dse_target, graph))
    pipeline = tvm.transform.Sequential(relax.backend.cpu_generic.pipeline.dataflow_lower_passes(dse_target.tvm_target)
                                        + relax.backend.cpu_generic.pipeline.finalize_passes(dse_target.tvm_target))
    executable = tvm.compile(mod, target=dse_target.tvm_target, relax_pipeline=pipeline)
    return BuiltModel(executable, dse_target, model.inputs, weights)
