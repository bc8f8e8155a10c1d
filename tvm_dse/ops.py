"""What each Relax operator does to an activation's layout: the one classification that pricing and
lowering share.

The search prices a plan on the DSE graph (:mod:`tvm_dse.graph`) and lowering builds it
(:mod:`tvm_dse.lower`). Wherever the graph lets a layout pass through an operator, the search prices no
conversion there; wherever lowering cannot run that operator in the layout it receives, it converts back
to the model's own layout. The two must agree call by call, or the search prices plans that are not the
ones built. Both therefore ask this module, and only this module:

- :func:`op_class` puts an operator name in one :class:`OpClass`;
- :func:`passes_layout` says whether one call of a layout-carrying class runs in whatever layout its
  activation arrives in (its attributes and operand shapes allow it);
- :func:`broadcasts_in_any_layout` is the rule for the operands of elementwise binary operators;
- :func:`activation_writers` says what writes each activation and how many operators read it, and
  :func:`conversion_folds` whether a conversion of it costs a pass of its own or is written by its
  writer: the search prices it by that answer, lowering builds it so.

An operator this module does not know is treated as layout-fixed by both: it is priced and lowered in the
model's own layout, which is always correct and at worst slower.
"""

from __future__ import annotations

import enum
from collections import Counter

import tvm
from tvm import relax

from .frontend import tunable_op
from .layouts import NATIVE_LAYOUTS, Layout, changes_precision_only


class OpClass(enum.Enum):
    """How an operator relates to the layout of the activations it reads."""

    TUNABLE = "tunable"  # conv2d / dense: the plan picks its implementation, which picks its layouts
    ELEMENTWISE_UNARY = "elementwise_unary"  # element by element: any layout, its other arguments scalars
    POOL = "pool"  # a window over H and W: rebuilt in the layout it receives
    SPATIAL_REDUCTION = "spatial_reduction"  # a reduction that passes a layout when it reduces H and W only
    ELEMENTWISE_BINARY = "elementwise_binary"  # any layout where its operands broadcast alike in all; joins
    CONCAT = "concat"  # along channels: joins its operands in one layout
    LAYOUT_FIXED = "layout_fixed"  # depends on the layout (reshape, softmax, resize, ...): the model's own


# The classes whose calls read several activations, which then meet in one layout.
JOINING = frozenset({OpClass.ELEMENTWISE_BINARY, OpClass.CONCAT})

_CLASSES: dict[str, OpClass] = {
    **dict.fromkeys(("relax.nn.conv2d", "relax.matmul"), OpClass.TUNABLE),
    **dict.fromkeys(("relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.silu", "relax.nn.gelu",
                     "relax.nn.leakyrelu"), OpClass.ELEMENTWISE_UNARY),
    **dict.fromkeys(("relax.nn.max_pool2d", "relax.nn.avg_pool2d"), OpClass.POOL),
    **dict.fromkeys(("relax.mean", "relax.max", "relax.sum"), OpClass.SPATIAL_REDUCTION),
    **dict.fromkeys(("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
                     "relax.minimum"), OpClass.ELEMENTWISE_BINARY),
    "relax.concat": OpClass.CONCAT,
    # Operators that depend on the layout, and those lowering has no rule rebuilding in another layout
    # (adaptive pooling, astype): pricing must not assume a layout passes where lowering converts it back.
    **dict.fromkeys(("relax.nn.adaptive_avg_pool2d", "relax.reshape", "relax.flatten", "relax.permute_dims",
                     "relax.squeeze", "relax.expand_dims", "relax.strided_slice", "relax.split", "relax.take",
                     "relax.image.resize2d", "relax.nn.softmax", "relax.nn.log_softmax", "relax.nn.batch_norm",
                     "relax.nn.layer_norm", "relax.astype"), OpClass.LAYOUT_FIXED),
}


def op_class(op_name: str) -> OpClass | None:
    """The class of the Relax operator named ``op_name`` (e.g. ``"relax.nn.relu"``); None for one this
    module does not classify, which graph and lowering both treat as layout-fixed."""
    return _CLASSES.get(op_name)


def call_class(expr: relax.Expr) -> OpClass | None:
    """The class of ``expr``'s operator where it is a call of a Relax operator; None otherwise."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return op_class(expr.op.name)
    return None


def tensor_shape(expr: relax.Expr) -> list[int] | None:
    """The static logical shape of a Relax expression; None for what is not a tensor."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None:
        return None
    return [int(d) for d in shape]


def tensor_args(call: relax.Expr) -> list[relax.Expr]:
    """The tensor operands of a call, a tuple argument's fields included; [] for what is not a call."""
    if not isinstance(call, relax.Call):
        return []
    flat: list[relax.Expr] = []
    for arg in call.args:
        flat.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
    return [a for a in flat if isinstance(getattr(a, "ty", None), relax.TensorType)]


def broadcasts_in_any_layout(operand: relax.Expr, call: relax.Call) -> bool:
    """Whether ``operand`` of an elementwise binary ``call`` broadcasts the same way in every layout that
    holds the call's result: an activation with the result's rank and channels (any other axis of size 1
    or the result's, as a squeeze-excite gate of shape (N, C, 1, 1)), or a constant varying at most along
    channels (axis 1), which lowering rearranges into the layout."""
    out_shape = tensor_shape(call)
    shape = tensor_shape(operand)
    if out_shape is None or shape is None or len(out_shape) not in (2, 4) or len(shape) > len(out_shape):
        return False
    if not isinstance(operand, tvm.ir.Constant):
        return (len(shape) == len(out_shape) and shape[1] == out_shape[1]
                and all(d in (1, whole) for d, whole in zip(shape, out_shape)))
    padded = [1] * (len(out_shape) - len(shape)) + shape
    return padded[0] == 1 and all(d == 1 for d in padded[2:])


def reduces_only_spatial(call: relax.Call) -> bool:
    """Whether a reduction ``call`` reduces exactly H and W of a 4-D activation, keeping their axes."""
    axes = call.attrs.axis
    if axes is None or not bool(call.attrs.keepdims):
        return False
    return sorted(int(a) % 4 for a in axes) == [2, 3] and len(tensor_shape(call.args[0]) or []) == 4


def passes_layout(call: relax.Expr) -> bool:
    """Whether ``call`` runs in whatever layout its activations arrive in (those of a join: the one they
    meet in), so that no conversion to the model's own layout comes before it."""
    kind = call_class(call)
    if kind is OpClass.ELEMENTWISE_UNARY:
        return True
    if kind is OpClass.POOL:
        return str(call.attrs.layout) == str(call.attrs.out_layout) == NATIVE_LAYOUTS[4]
    if kind is OpClass.SPATIAL_REDUCTION:
        return reduces_only_spatial(call)
    if kind is OpClass.ELEMENTWISE_BINARY:
        return all(broadcasts_in_any_layout(operand, call) for operand in tensor_args(call))
    if kind is OpClass.CONCAT:
        return int(call.attrs.axis) == 1 and isinstance(call.args[0], relax.Tuple)
    return False


class Writer(enum.Enum):
    """What writes an activation, as far as folding a conversion of it into its writer goes."""

    KERNEL = "kernel"  # a convolution or dense kernel with its epilogue, elementwise operators fused in
    AVERAGE = "average"  # a spatial mean: its last stage divides the sum, element by element
    ACCUMULATOR = "accumulator"  # a pool or another spatial reduction: it accumulates in its output
    CONCAT = "concat"  # a concatenation (its operands' kernels write it in place, output_fusion.py)
    NONE = "none"  # a model input or a layout-fixed operator: no kernel of tvm_dse's writes it


def activation_writers(main: relax.Function) -> tuple[dict[relax.Var, Writer], Counter]:
    """What writes each variable of an imported model's ``main``, and how many times each is read (by
    bindings and by the result)."""
    writers: dict[relax.Var, Writer] = {}
    readers: Counter = Counter()

    def read(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var):
            readers[expr] += 1

    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            relax.analysis.post_order_visit(value, read)
            operands = [writers.get(a, Writer.NONE) for a in tensor_args(value) if isinstance(a, relax.Var)]
            kind = call_class(value)
            if tunable_op(value) is not None:
                writers[binding.var] = Writer.KERNEL
            elif not passes_layout(value):
                writers[binding.var] = Writer.NONE
            elif kind in (OpClass.POOL, OpClass.SPATIAL_REDUCTION):
                writers[binding.var] = Writer.AVERAGE if value.op.name == "relax.mean" else Writer.ACCUMULATOR
            elif kind is OpClass.CONCAT:
                writers[binding.var] = Writer.CONCAT
            else:  # elementwise: fused into the kernel writing an operand, else whatever writes the first
                writers[binding.var] = Writer.KERNEL if Writer.KERNEL in operands else (
                    operands[0] if operands else Writer.NONE)
    relax.analysis.post_order_visit(main.body.body, read)
    return writers, readers


def conversion_folds(writer: Writer, readers: int, source: str, destination: str) -> bool:
    """Whether converting an activation from layout ``source`` to ``destination`` costs no pass of its
    own, the activation written by ``writer`` and read ``readers`` times: the one rule by which the search
    prices a conversion (free, or its measured cost) and lowering builds it (folded, or a pass).

    Only an activation nothing else reads can be written converted. A change of precision alone joins its
    writer's output stage by fusion (the writer then stores codes); a rearrangement of an activation (same
    precision) is stored at its converted place by the stage that writes each element once (output_fusion.py):
    a kernel's output stage or a mean's division, not a pool or reduction accumulating in its output, nor a
    concatenation (its operands' kernels write it in place instead)."""
    if readers != 1 or source == destination or writer is Writer.NONE:
        return False
    if changes_precision_only(source, destination):
        return True
    return writer in (Writer.KERNEL, Writer.AVERAGE) and Layout.parse(source).dtype == Layout.parse(destination).dtype
