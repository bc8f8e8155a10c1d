"""Model import: ONNX files, ``onnx.ModelProto`` or Relax ``IRModule`` -> a :class:`Model` with static
shapes, normalized for inference (what is constant once the input shapes are bound folded, BatchNorm folded
into the convolution beside it).
"""

from __future__ import annotations

import hashlib
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import onnx
import tvm
import tvm_ffi
from tvm import relax

from .errors import ModelError, UnsupportedOpError
from .onnx_folding import ONNX_DEFAULT_DOMAINS, normalize_onnx

ZOO_PREFIX = "zoo:"
SMALL_SUFFIX = "-small"

ModelLike = Union[str, os.PathLike, onnx.ModelProto, tvm.IRModule, "Model"]
InputShapes = Mapping[str, Sequence[int]]

# Operators of the zoo's classifiers that name their weights: the i-th of these in the ONNX graph is the
# i-th tunable call in the imported Relax module (from_onnx keeps node order, not node names).
_ONNX_CONV_OPS = ("Conv",)
_ONNX_DENSE_OPS = ("Gemm", "MatMul")


@dataclass(frozen=True)
class ModelInput:
    """One input of a model: its name (as the user feeds it), static shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Model:
    """An imported model ready for tvm_dse.

    Attributes
    ----------
    name
        A readable name (the file stem, the ONNX graph name, or ``"relax_module"``).
    mod
        The Relax module, static shapes, normalized for inference.
    inputs
        The model inputs in the order the module's ``main`` takes them.
    fingerprint
        A hex digest identifying the source model and its bound shapes; plans are tied to it.
    node_names
        Names of the tunable nodes (conv2d and dense calls) in the order they appear in ``main``:
        the ONNX node names when the model came from ONNX, ``conv2d_<i>``/``dense_<i>`` otherwise.
    onnx_model
        The ONNX model as TVM imported it: the source with its input shapes bound, normalized by
        :func:`tvm_dse.onnx_folding.normalize_onnx` (shape computations and constants folded, BatchNorm in
        the convolutions); None for a Relax module.
    """

    name: str
    mod: tvm.IRModule
    inputs: list[ModelInput]
    fingerprint: str
    node_names: list[str] = field(default_factory=list)
    onnx_model: onnx.ModelProto | None = None

    def random_feed(self, seed: int = 0) -> dict[str, np.ndarray]:
        """A deterministic standard-normal input for every model input."""
        rng = np.random.default_rng(seed)
        return {i.name: rng.standard_normal(i.shape).astype(i.dtype) for i in self.inputs}


def load_model(model: ModelLike, input_shapes: InputShapes | None = None, name: str | None = None) -> Model:
    """Import a model for tvm_dse.

    Parameters
    ----------
    model
        A path to an ``.onnx`` file, a zoo model as ``"zoo:NAME"`` or ``"zoo:NAME-small"`` (see
        :mod:`tvm_dse.zoo`), an ``onnx.ModelProto``, a Relax ``IRModule`` with a ``main``
        function, or an already imported :class:`Model` (returned as is when no shapes are given).
    input_shapes
        Shapes by input name, overriding the model's own; required for inputs with dynamic dimensions.
    name
        A name for reports; defaults to the file stem or the ONNX graph name.

    Raises
    ------
    ModelError
        For a missing or malformed file, a dynamic input without an override, an override naming an
        input the model does not have, or a shape that stays dynamic once the input shapes are bound
        (naming the node; see :func:`tvm_dse.onnx_folding.normalize_onnx`).
    UnsupportedOpError
        Naming every node whose operator TVM's importer has no converter for, or the node whose
        converter refused it, with the converter's reason.
    """
    if isinstance(model, Model):
        if input_shapes:
            raise ModelError("input_shapes cannot rebind an already imported Model; pass the ONNX model or module")
        return model
    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        return _from_onnx(zoo_model(model), input_shapes, name or model.removeprefix(ZOO_PREFIX))
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return _from_onnx(_read_onnx(path), input_shapes, name or path.stem)
    if isinstance(model, onnx.ModelProto):
        return _from_onnx(model, input_shapes, name or model.graph.name or "onnx_model")
    if isinstance(model, tvm.IRModule):
        return _from_relax(model, input_shapes, name or "relax_module")
    raise ModelError(f"cannot import a {type(model).__name__}; give an ONNX file path, an onnx.ModelProto "
                     "or a Relax IRModule")


def zoo_model(spec: str) -> onnx.ModelProto:
    """The zoo's ONNX model for ``"zoo:NAME"`` (224x224, 1000 classes) or ``"zoo:NAME-small"``."""
    from .zoo import MODEL_NAMES, build_model

    name = spec.removeprefix(ZOO_PREFIX)
    small = name.endswith(SMALL_SUFFIX)
    name = name.removesuffix(SMALL_SUFFIX)
    if name not in MODEL_NAMES:
        raise ModelError(f"unknown zoo model {spec!r}; the zoo has: "
                         + ", ".join(f"{ZOO_PREFIX}{n}[{SMALL_SUFFIX}]" for n in MODEL_NAMES))
    return build_model(name, small=small)


def _read_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError, onnx raises its own types
        raise ModelError(f"{path} is not a readable ONNX model: {error}") from error


def _from_onnx(proto: onnx.ModelProto, input_shapes: InputShapes | None, name: str) -> Model:
    proto = _with_output_shapes(proto, name)
    try:
        onnx.checker.check_model(proto)
    except Exception as error:
        raise ModelError(f"malformed ONNX model {name!r}: {error}") from error
    inputs = _onnx_inputs(proto, input_shapes or {}, name)
    proto = _with_input_shapes(proto, inputs)
    normalized = normalize_onnx(proto, name)
    _check_supported_ops(normalized, name)
    from tvm.relax.frontend.onnx import from_onnx

    try:
        mod = from_onnx(normalized, shape_dict={i.name: list(i.shape) for i in inputs},
                        dtype_dict={i.name: i.dtype for i in inputs})
    except Exception as error:
        node = _node_being_imported(error)
        at = f" at node {node.name or node.output[0]!r} ({node.op_type})" if node is not None else ""
        raise UnsupportedOpError(f"TVM could not import ONNX model {name!r}{at}: {error}") from error
    mod = normalize_for_inference(mod)
    digest = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
    return Model(name=name, mod=mod, inputs=inputs, fingerprint=digest,
                 node_names=_onnx_node_names(normalized, mod), onnx_model=normalized)


def _with_output_shapes(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """``proto`` with a shape inferred for each graph output that declares none: onnx's checker requires
    one, other runtimes do not."""
    shapeless = [value.name for value in proto.graph.output
                 if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")]
    if not shapeless:
        return proto
    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
        inferred = {value.name: value for value in list(graph.value_info) + list(graph.output)}
    except Exception as error:  # the checker names what inference tripped on
        raise ModelError(f"malformed ONNX model {name!r}: output {shapeless[0]!r} declares no shape, and "
                         f"shape inference could not find one: {error}") from error
    completed = onnx.ModelProto()
    completed.CopyFrom(proto)
    for value in completed.graph.output:
        if value.name in shapeless:
            found = inferred.get(value.name)
            if found is None or not found.type.tensor_type.HasField("shape"):
                raise ModelError(f"ONNX model {name!r}: output {value.name!r} declares no shape, and shape "
                                 "inference could not find one; give the output its shape in the model")
            value.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)
    return completed


def _node_being_imported(error: BaseException) -> onnx.NodeProto | None:
    """The ONNX node TVM's importer was converting when ``error`` was raised: its node loop holds it."""
    found = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        node = frame.f_locals.get("node") if frame.f_code.co_name == "_construct_nodes" else None
        if isinstance(node, onnx.NodeProto):
            found = node
    return found


def _check_supported_ops(proto: onnx.ModelProto, name: str) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convertible = _get_convert_map()
    unsupported = [(node.name or f"#{index}", node.op_type if node.domain in ONNX_DEFAULT_DOMAINS
                    else f"{node.domain}.{node.op_type}")
                   for index, node in enumerate(proto.graph.node)
                   if node.domain not in ONNX_DEFAULT_DOMAINS or node.op_type not in convertible]
    if unsupported:
        listed = ", ".join(f"node {node!r} ({op})" for node, op in unsupported[:10])
        more = f" and {len(unsupported) - 10} more" if len(unsupported) > 10 else ""
        raise UnsupportedOpError(f"ONNX model {name!r} uses operators tvm_dse cannot import (TVM's ONNX importer "
                                 f"has no converter for them): {listed}{more}")


def _onnx_inputs(proto: onnx.ModelProto, overrides: InputShapes, name: str) -> list[ModelInput]:
    initializers = {init.name for init in proto.graph.initializer}
    graph_inputs = [value for value in proto.graph.input if value.name not in initializers]
    known = [value.name for value in graph_inputs]
    for override in overrides:
        if override not in known:
            raise ModelError(f"input_shapes names {override!r}, but model {name!r} has inputs: {', '.join(known)}")
    inputs = []
    for value in graph_inputs:
        tensor_type = value.type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else (dim.dim_param or "?")
                for dim in tensor_type.shape.dim]
        if value.name in overrides:
            shape = tuple(int(d) for d in overrides[value.name])
            if len(shape) != len(dims) or any(d <= 0 for d in shape):
                raise ModelError(f"input_shapes[{value.name!r}] = {shape} does not fit input {value.name!r} "
                                 f"of shape {dims}: give {len(dims)} positive dimensions")
        elif all(isinstance(d, int) for d in dims):
            shape = tuple(dims)
        else:
            # the example keeps the static dimensions; a batch of 1, 224 for the others
            example = tuple(d if isinstance(d, int) else 1 if axis == 0 else 224 for axis, d in enumerate(dims))
            raise ModelError(f"input {value.name!r} of model {name!r} has a dynamic shape {dims}; give a static "
                             f"one, e.g. input_shapes={{{value.name!r}: {example}}} (on the command line: "
                             f"--shape {value.name}={','.join(map(str, example))})")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        inputs.append(ModelInput(value.name, shape, dtype))
    return inputs


def _with_input_shapes(proto: onnx.ModelProto, inputs: list[ModelInput]) -> onnx.ModelProto:
    """A copy of ``proto`` whose graph inputs carry the bound static shapes (so its fingerprint does too)."""
    bound = onnx.ModelProto()
    bound.CopyFrom(proto)
    shapes = {i.name: i.shape for i in inputs}
    for value in bound.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.Clear()
                dim.dim_value = size
    if shapes != {value.name: tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
                  for value in proto.graph.input if value.name in shapes}:
        del bound.graph.value_info[:]  # intermediate shapes of the old binding would contradict the new one
    return bound


def _from_relax(mod: tvm.IRModule, input_shapes: InputShapes | None, name: str) -> Model:
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise ModelError(f"Relax module {name!r} has no 'main' function")
    main = mod["main"]
    params = list(main.params)
    known = [param.name for param in params]
    overrides = dict(input_shapes or {})
    for override in overrides:
        if override not in known:
            raise ModelError(f"input_shapes names {override!r}, but module {name!r} has inputs: {', '.join(known)}")
    bindings: dict[Any, int] = {}
    for param in params:
        if param.name not in overrides:
            continue
        shape = [int(d) for d in overrides[param.name]]
        declared = list(param.ty.shape)
        if len(shape) != len(declared):
            raise ModelError(f"input_shapes[{param.name!r}] has {len(shape)} dimensions, "
                             f"input {param.name!r} has {len(declared)}")
        for dim, size in zip(declared, shape):
            if isinstance(dim, tvm.tirx.Var):
                bindings[dim] = size
            elif int(dim) != size:
                raise ModelError(f"input_shapes[{param.name!r}] = {tuple(shape)} contradicts the static "
                                 f"shape {tuple(int(d) for d in declared)} of the module")
    if bindings:
        mod = relax.transform.BindSymbolicVars(bindings, "main")(mod)
    inputs = []
    for param in mod["main"].params:
        dims = list(param.ty.shape) if getattr(param.ty, "shape", None) is not None else None
        if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
            raise ModelError(f"input {param.name!r} of module {name!r} has a dynamic shape {dims}; "
                             f"give a static one with input_shapes")
        inputs.append(ModelInput(param.name, tuple(int(d) for d in dims), str(param.ty.dtype)))
    mod = normalize_for_inference(mod)
    digest = hashlib.sha256(str(tvm_ffi.structural_hash(mod)).encode()).hexdigest()
    return Model(name=name, mod=mod, inputs=inputs, fingerprint=digest, node_names=_generic_node_names(mod))


@relax.expr_functor.mutator
class _ScalarBoundsAsOps(relax.PyExprMutator):
    """ONNX Clip with tensor bounds imports as call_tir to TE ``maximum``/``minimum`` PrimFuncs; as the
    Relax ops they are, the DSE graph sees them as layout-transparent and FuseOps fuses them like relu."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir"):
            return call
        callee, operands = call.args[0], call.args[1]
        # the importer names them after the TOPI op (maximum, maximum1, ...)
        name = callee.name_hint.rstrip("0123456789")
        if name not in ("maximum", "minimum") or not isinstance(operands, relax.Tuple) or len(operands.fields) != 2:
            return call
        data, bound = operands.fields
        if not isinstance(bound, tvm.ir.Constant) or bound.value.numpy().size != 1:
            return call
        return (relax.op.maximum if name == "maximum" else relax.op.minimum)(data, bound)


def normalize_for_inference(mod: tvm.IRModule) -> tvm.IRModule:
    """Fold BatchNorm into the preceding conv, decompose what is left of it, fold constants, and turn
    scalar clip bounds into Relax ops."""
    mod = tvm.transform.Sequential([
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),
        relax.transform.CanonicalizeBindings(),
    ])(mod)
    mod = tvm.IRModule(dict(mod.functions))  # a copy, so the pass pipeline's input is never mutated
    mod["main"] = _ScalarBoundsAsOps().visit_expr(mod["main"])
    return relax.transform.DeadCodeElimination(["main"])(mod)


def tunable_calls(mod: tvm.IRModule) -> list[relax.Call]:
    """The conv2d and dense (matmul by a constant matrix) calls of ``main``, in binding order."""
    calls = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            if tunable_op(binding.value) is not None:
                calls.append(binding.value)
    return calls


def tunable_op(expr: relax.Expr) -> str | None:
    """``"conv2d"`` or ``"dense"`` when ``expr`` is a call tvm_dse chooses an implementation for."""
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
        return None
    if expr.op.name == "relax.nn.conv2d" and isinstance(expr.args[1], tvm.ir.Constant):
        return "conv2d"
    if (expr.op.name == "relax.matmul" and isinstance(expr.args[1], tvm.ir.Constant)
            and len(expr.args[1].ty.shape) == 2 and len(expr.args[0].ty.shape) == 2):
        return "dense"
    return None


def check_optimizable(model: Model) -> None:
    """Refuse a model tvm_dse has no choice to make for: no 2-D convolution or dense layer, or one whose
    tunable nodes compute in another precision than fp32 (the search chooses fp16 and int8 itself).

    Raises
    ------
    ModelError
        Naming the model's convolutions tvm_dse does not tune (1-D, 3-D, transposed, by a computed
        weight), or the first tunable node that is not fp32 with its dtype.
    """
    if not model.node_names:
        others = _untuned_convolutions(model)
        found = f"; it has {', '.join(others)}" if others else ""
        raise ModelError(f"model {model.name!r} has no node tvm_dse chooses an implementation for: its strategies "
                         f"are for 2-D convolutions with constant weights and dense layers{found}")
    for node, call in zip(model.node_names, tunable_calls(model.mod)):
        dtypes = {str(arg.ty.dtype) for arg in call.args[:2]}
        if dtypes != {"float32"}:
            raise ModelError(f"node {node!r} of model {model.name!r} computes in {', '.join(sorted(dtypes))}: tvm_dse "
                             "takes fp32 models and chooses each node's precision itself (--precisions "
                             "fp32,fp16,int8); give the fp32 model")


def _untuned_convolutions(model: Model) -> list[str]:
    """Readable names of the convolutions no strategy applies to."""
    if model.onnx_model is not None:
        graph = model.onnx_model.graph
        ranks = {init.name: len(init.dims) for init in graph.initializer}
        found = []
        for node in graph.node:
            if node.op_type not in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
                continue
            weight = node.input[3 if node.op_type == "QLinearConv" else 1]
            kind = ("a convolution by a computed weight" if weight not in ranks
                    else f"a {ranks[weight] - 2}-D convolution")
            if node.op_type != "Conv":
                kind = f"{kind} ({node.op_type})"
            found.append(f"node {node.name or node.output[0]!r}, {kind}")
        return found
    calls = [binding.value for block in model.mod["main"].body.blocks for binding in block.bindings]
    return [f"a call to {call.op.name}" for call in calls if isinstance(call, relax.Call)
            and isinstance(call.op, tvm.ir.Op) and call.op.name.startswith("relax.nn.conv")]


def _generic_node_names(mod: tvm.IRModule) -> list[str]:
    counts = {"conv2d": 0, "dense": 0}
    names = []
    for call in tunable_calls(mod):
        op = tunable_op(call)
        names.append(f"{op}_{counts[op]}")
        counts[op] += 1
    return names


def _onnx_node_names(proto: onnx.ModelProto, mod: tvm.IRModule) -> list[str]:
    """ONNX names of the tunable calls, when the ONNX graph's convs and dense layers line up with them."""
    initializer_shapes = {init.name: tuple(init.dims) for init in proto.graph.initializer}
    candidates = [node for node in proto.graph.node
                  if node.op_type in _ONNX_CONV_OPS + _ONNX_DENSE_OPS and len(node.input) > 1
                  and node.input[1] in initializer_shapes]
    calls = tunable_calls(mod)
    generic = _generic_node_names(mod)
    if len(candidates) != len(calls):
        return generic
    names = []
    for node, call, fallback in zip(candidates, calls, generic):
        onnx_op = "conv2d" if node.op_type in _ONNX_CONV_OPS else "dense"
        weight_elems = int(np.prod(initializer_shapes[node.input[1]]))
        call_elems = int(np.prod([int(d) for d in call.args[1].ty.shape]))
        if onnx_op != tunable_op(call) or weight_elems != call_elems:
            return generic
        names.append(node.name or fallback)
    return names
