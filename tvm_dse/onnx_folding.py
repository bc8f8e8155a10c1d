"""ONNX-level normalization before TVM's importer: what an exporter computes at run time but is constant
once the input shapes are bound, nodes that do nothing, paddings a convolution can do itself, and
BatchNorm beside a convolution.

Exporters write what their framework knew symbolically: PyTorch's TorchScript exporter computes a
TensorFlow-style "same" padding from the input's shape at run time (Shape -> Gather -> arithmetic ->
Concat -> Pad), `view(x.size(0), -1)` as a Reshape whose target is gathered from a Shape, Resize sizes from
Shape and Slice. TVM 0.27's importer takes these only as constants ("Dynamic pads are not supported yet").
With every input shape bound, onnx's shape inference gives every tensor's static shape, each Shape node
becomes a constant and each node whose inputs are all constant is evaluated by onnx's reference evaluator,
round after round until nothing changes (a folded Pad makes the shapes after it static, which folds the
next Shape). What still reads a shape or feeds a shape-taking input from run-time values is a truly
dynamic shape: :func:`normalize_onnx` refuses it, naming the node.

BatchNorm is folded here, in numpy, rather than by Relax's FoldBatchnormToConv2D, whose FoldConstant
compiles one kernel per folded constant (seconds per model).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError

# the domain names of ONNX's own operators
ONNX_DEFAULT_DOMAINS = ("", "ai.onnx")
# Evaluated once, these would fix one draw of a random stream or lose the model's quantization.
_NEVER_FOLDED = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                           "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# A folded constant may grow past its inputs (ConstantOfShape, Expand, Tile) up to this many elements; larger
# ones stay computed, as the exporter wrote them, instead of becoming weights the deployed module carries.
_MAX_GROWN_ELEMENTS = 1 << 16
# Initializers up to this size are given to shape inference with their values (shapes, axes, pads).
_DATA_PROPAGATED_ELEMENTS = 1024
# Operators whose output holds the input's values in the input's order: one whose output shape is its
# input's does nothing.
_SHAPE_ONLY_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"})
# Inputs TVM's importer (and a static-shape build) needs as constants: (operator, input index, what it is).
_STATIC_INPUTS = {
    "Pad": ((1, "pads"), (3, "axes")),
    "Reshape": ((1, "target shape"),),
    "Resize": ((1, "roi"), (2, "scales"), (3, "sizes")),
    "Upsample": ((1, "scales"),),
    "Expand": ((1, "shape"),),
    "Tile": ((1, "repeats"),),
    "ConstantOfShape": ((0, "shape"),),
    "Range": ((0, "start"), (1, "limit"), (2, "delta")),
}


def normalize_onnx(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``proto`` (every input shape static) as TVM's importer takes it.

    Folds shape computations and every other node whose inputs are constant once the shapes are bound
    (Constant nodes included), removes nodes that do nothing (Identity, Dropout, a Cast to the type it
    has, a Reshape/Flatten/Squeeze/Unsqueeze/Expand to the shape it has, a Pad of zeros, a Transpose in
    order, a Concat of one), moves a zero Pad of spatial dimensions into the Conv it feeds, folds
    BatchNorm (and a Mul, Add, Sub or Div by a per-channel constant) into the Conv before it, BatchNorm
    into the Conv after it where that Conv pads nothing, and drops what nothing uses. Node names of what
    stays are kept.

    Raises
    ------
    ModelError
        Naming the node, for a shape that depends on the values computed (not only on the input shapes):
        a Shape or Size node left unfolded, or a shape-taking input (pads, target shape, sizes, ...) left
        computed at run time.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    opset = next((entry.version for entry in model.opset_import if entry.domain in ONNX_DEFAULT_DOMAINS), 1)
    del model.graph.value_info[:]  # an exporter's intermediate shapes may be symbolic; inference redoes them
    for _ in range(len(model.graph.node) + 1):
        shapes, types = _inferred_tensors(model)
        folded = _fold_constants(model, shapes, opset)
        removed = _drop_noops(model, shapes, types)
        if not folded and not removed:
            break
    _move_pads_into_convs(model)
    _fold_channel_affine_after_convs(model)
    _fold_batchnorm_before_convs(model)
    _prune(model)
    _refuse_dynamic_shapes(model, name)
    return model


class _Constants:
    """The graph's initializers as arrays, each converted when first read: a large model's weights are
    hundreds of megabytes, and only the few a rule looks at need to be arrays."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._tensors = {init.name: init for init in graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._arrays or name in self._tensors

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self._tensors[name])
        return self._arrays[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._arrays[name] = value

    def rank(self, name: str) -> int:
        """The number of dimensions of constant ``name``, without converting it."""
        return self._arrays[name].ndim if name in self._arrays else len(self._tensors[name].dims)


def _inferred_tensors(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Static shapes and element types of the tensors onnx's shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), data_prop=True)
    except Exception:  # inference refuses some exporters' graphs; folding then goes by constants only
        inferred = model
    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, int] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type:
            types[value.name] = tensor_type.elem_type
        if tensor_type.HasField("shape") and all(dim.HasField("dim_value") for dim in tensor_type.shape.dim):
            shapes[value.name] = tuple(dim.dim_value for dim in tensor_type.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its large initializers declared as inputs of their type and shape instead: shape
    inference reads only the values of small ones (shape tensors), and serializing the weights of a large
    model for it would take seconds."""
    skeleton = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                               functions=model.functions)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    graph.input.extend(model.graph.input)
    declared = {value.name for value in model.graph.input}
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= _DATA_PROPAGATED_ELEMENTS:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton


def _fold_constants(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], opset: int) -> bool:
    """Replace every node whose outputs are known without running the model by initializers."""
    graph = model.graph
    constants = _Constants(graph)
    read_outside = _read_outside_nodes(graph)
    kept, new = [], {}
    for node in graph.node:
        values = _evaluate(node, constants, shapes, opset)
        if values is None or any(output in read_outside for output in node.output):
            kept.append(node)
            continue
        for output, value in zip(node.output, values):
            if output:  # an optional output left unnamed
                constants[output] = new[output] = value
    if not new:
        return False
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(value), output) for output, value in new.items())
    return True


def _evaluate(node: onnx.NodeProto, constants: _Constants, shapes: dict[str, tuple[int, ...]],
              opset: int) -> list[np.ndarray] | None:
    """The outputs of ``node`` when its inputs are constant or it only reads a static shape, else None."""
    if node.domain not in ONNX_DEFAULT_DOMAINS or node.op_type in _NEVER_FOLDED:
        return None
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape)), dtype=np.int64)]
        attrs = {attr.name: attr.i for attr in node.attribute}
        return [np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=np.int64)]
    inputs = [name for name in node.input if name]
    if not all(name in constants for name in inputs):
        return None
    from onnx.reference import ReferenceEvaluator

    try:
        values = ReferenceEvaluator(node, opsets={"": opset}).run(None, {name: constants[name] for name in inputs})
    except Exception:  # an operator the reference evaluator lacks stays for TVM to import
        return None
    grown_past = max(sum(constants[name].size for name in inputs), _MAX_GROWN_ELEMENTS)
    if any(np.asarray(value).size > grown_past for value in values):
        return None
    return [np.asarray(value) for value in values]


def _noop_source(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], types: dict[str, int],
                 constants: _Constants, used: set[str]) -> str | None:
    """The input ``node`` passes on unchanged, when it does nothing, else None."""
    if node.domain not in ONNX_DEFAULT_DOMAINS or not node.input:
        return None
    op, source, output = node.op_type, node.input[0], node.output[0]
    if op == "Identity":
        return source
    if op == "Dropout":
        training = node.input[2] if len(node.input) > 2 else ""
        if (training and not (training in constants and not constants[training].any())) \
                or any(extra in used for extra in node.output[1:]):
            return None
        return source
    if op == "Concat":
        return source if len(node.input) == 1 else None
    if op == "Cast":
        target = next(attr.i for attr in node.attribute if attr.name == "to")
        return source if types.get(source) == target else None
    if op in _SHAPE_ONLY_OPS:
        shape = shapes.get(source)
        return source if shape is not None and shapes.get(output) == shape else None
    if op == "Transpose":
        perm = next((list(attr.ints) for attr in node.attribute if attr.name == "perm"), None)
        return source if perm is not None and perm == sorted(perm) else None
    if op == "Pad":
        pads = _pad_amounts(node, constants, len(shapes.get(source, ())))
        return source if pads is not None and not any(pads) else None
    return None


def _drop_noops(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], types: dict[str, int]) -> bool:
    graph = model.graph
    constants = _Constants(graph)
    read_outside = _read_outside_nodes(graph)
    used = {name for node in graph.node for name in node.input} | read_outside
    renamed: dict[str, str] = {}
    kept = []
    for node in graph.node:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
        source = _noop_source(node, shapes, types, constants, used)
        if source is None or node.output[0] in read_outside:
            kept.append(node)
            continue
        renamed[node.output[0]] = source
    if not renamed:
        return False
    del graph.node[:]
    graph.node.extend(kept)
    return True


def _pad_amounts(pad: onnx.NodeProto, constants: _Constants, rank: int) -> list[int] | None:
    """The begin and end amounts of a constant zero-valued Pad for every axis (ONNX order), else None."""
    attrs = {attr.name: attr for attr in pad.attribute}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "constant"
    if mode != "constant":
        return None
    if "pads" in attrs:  # before opset 11 the amounts are an attribute
        pads, value = list(attrs["pads"].ints), attrs["value"].f if "value" in attrs else 0.0
    else:
        if len(pad.input) < 2 or pad.input[1] not in constants:
            return None
        pads = [int(p) for p in constants[pad.input[1]]]
        value_name = pad.input[2] if len(pad.input) > 2 else ""
        if value_name and value_name not in constants:
            return None
        value = float(constants[value_name]) if value_name else 0.0
        axes_name = pad.input[3] if len(pad.input) > 3 else ""
        if axes_name:
            if axes_name not in constants or not rank:
                return None
            axes = [int(a) % rank for a in constants[axes_name]]
            full = [0] * (2 * rank)
            for index, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[index], pads[len(axes) + index]
            pads = full
    return pads if value == 0.0 else None


def _move_pads_into_convs(model: onnx.ModelProto) -> None:
    """A zero Pad of the spatial dimensions whose only reader is a Conv becomes that Conv's padding."""
    graph = model.graph
    view = _GraphView(graph)
    moved = set()
    for conv in graph.node:
        pad = view.producers.get(conv.input[0]) if conv.op_type == "Conv" else None
        if pad is None or pad.op_type != "Pad" or not view.read_only_by(pad.output[0], conv):
            continue
        attrs = {attr.name: attr for attr in conv.attribute}
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"NOTSET", b""):
            continue
        rank = view.constants.rank(conv.input[1]) if conv.input[1] in view.constants else 0
        spatial = rank - 2
        pads = _pad_amounts(pad, view.constants, rank) if spatial > 0 else None
        if pads is None or len(pads) != 2 * rank or min(pads) < 0 or any(pads[a] or pads[rank + a] for a in (0, 1)):
            continue
        own = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * spatial)
        merged = [own[i] + pads[2 + i] for i in range(spatial)] + [own[spatial + i] + pads[rank + 2 + i]
                                                                    for i in range(spatial)]
        kept = [attr for attr in conv.attribute if attr.name not in ("pads", "auto_pad")]
        del conv.attribute[:]
        conv.attribute.extend(kept + [helper.make_attribute("pads", merged)])
        conv.input[0] = pad.input[0]
        moved.add(id(pad))
    _remove(graph, moved)


def _read_outside_nodes(graph: onnx.GraphProto) -> set[str]:
    """Tensors read other than as a node's input: the model's outputs and what the subgraphs of control
    flow (If, Loop, Scan) read from the outer scope. Rules leave their names in place."""
    names = {value.name for value in graph.output}
    for node in graph.node:
        for attr in node.attribute:
            for subgraph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                names.update(name for inner in subgraph.node for name in inner.input)
                names.update(_read_outside_nodes(subgraph))
    return names


class _GraphView:
    """What the rewriting rules look up about a graph: its constants, each tensor's producer and readers,
    and what is read outside the nodes (:func:`_read_outside_nodes`)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants = _Constants(graph)
        self.producers = {output: node for node in graph.node for output in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self.readers.setdefault(name, []).append(node)
        self.read_outside = _read_outside_nodes(graph)

    def read_only_by(self, name: str, node: onnx.NodeProto) -> bool:
        """Whether ``node`` is all that reads tensor ``name`` (so a rule may rename or remove it)."""
        readers = self.readers.get(name, [])
        return len(readers) == 1 and readers[0] is node and name not in self.read_outside


def _batchnorm_scale_shift(node: onnx.NodeProto, constants: _Constants) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm's inference transform as ``x * scale + shift`` per channel (float64)."""
    gamma, beta, mean, var = (constants[name].astype(np.float64) for name in node.input[1:5])
    epsilon = next((attr.f for attr in node.attribute if attr.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + epsilon)
    return scale, beta - mean * scale


def _foldable_batchnorm(node: onnx.NodeProto, constants: _Constants) -> bool:
    return (node.op_type == "BatchNormalization" and node.domain in ONNX_DEFAULT_DOMAINS
            and len(node.output) == 1 and len(node.input) == 5 and all(name in constants for name in node.input[1:5]))


def _conv_weight_and_bias(conv: onnx.NodeProto, constants: _Constants) -> tuple[np.ndarray, np.ndarray] | None:
    if conv.op_type != "Conv" or conv.input[1] not in constants:
        return None
    weight = constants[conv.input[1]]
    bias_name = conv.input[2] if len(conv.input) > 2 else ""
    if bias_name and bias_name not in constants:
        return None
    bias = constants[bias_name].astype(np.float64) if bias_name else np.zeros(weight.shape[0])
    return weight, bias


def _set_conv_constants(graph: onnx.GraphProto, constants: _Constants, conv: onnx.NodeProto, weight: np.ndarray,
                        bias: np.ndarray, suffix: str) -> None:
    """Give ``conv`` new weight and bias initializers (the old ones may be shared with other nodes)."""
    weight_name, bias_name = f"{conv.input[1]}.{suffix}", f"{conv.output[0]}.{suffix}_bias"
    bias = bias.astype(weight.dtype)
    graph.initializer.extend([numpy_helper.from_array(weight, weight_name), numpy_helper.from_array(bias, bias_name)])
    constants[weight_name], constants[bias_name] = weight, bias
    inputs = [conv.input[0], weight_name, bias_name]
    del conv.input[:]
    conv.input.extend(inputs)


def _channel_affine(node: onnx.NodeProto, tensor: str, constants: _Constants, weight: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """``node`` applied to the convolution output ``tensor`` as ``x * scale + shift`` per output channel
    (float64), when it is one: a BatchNorm, or a Mul, Add, Sub or Div by a constant that varies along the
    channels only (TensorFlow converters write a BatchNorm as a Mul and an Add)."""
    if node.domain not in ONNX_DEFAULT_DOMAINS or len(node.output) != 1:
        return None
    if node.op_type == "BatchNormalization":
        foldable = _foldable_batchnorm(node, constants) and node.input[0] == tensor
        return _batchnorm_scale_shift(node, constants) if foldable else None
    if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2 or tensor not in node.input:
        return None
    position = list(node.input).index(tensor)
    other = node.input[1 - position]
    if other not in constants or (position == 1 and node.op_type in ("Sub", "Div")):
        return None
    channels = weight.shape[0]
    per_channel = (1, channels) + (1,) * (weight.ndim - 2)
    value = constants[other].astype(np.float64)
    if value.ndim > len(per_channel) or np.broadcast_shapes(value.shape, per_channel) != per_channel:
        return None
    vector = np.broadcast_to(value, per_channel).reshape(channels)
    if node.op_type == "Div" and not vector.all():
        return None
    ones, zeros = np.ones(channels), np.zeros(channels)
    return {"Mul": (vector, zeros), "Add": (ones, vector), "Sub": (ones, -vector), "Div": (1.0 / vector, zeros)
            }[node.op_type]


def _fold_channel_affine_after_convs(model: onnx.ModelProto) -> None:
    """Conv -> BatchNorm (or a per-channel Mul, Add, Sub or Div by a constant), the Conv's output read by
    nothing else: the Conv computes both; a chain of them folds link by link."""
    graph = model.graph
    view = _GraphView(graph)
    removed = set()
    for node in graph.node:
        conv = next((view.producers[name] for name in node.input if name in view.producers
                     and view.producers[name].op_type == "Conv" and view.read_only_by(name, node)), None)
        found = _conv_weight_and_bias(conv, view.constants) if conv is not None else None
        affine = _channel_affine(node, conv.output[0], view.constants, found[0]) if found is not None else None
        if affine is None:
            continue
        (weight, bias), (scale, shift) = found, affine
        folded = (weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(weight.dtype)
        _set_conv_constants(graph, view.constants, conv, folded, bias * scale + shift, "folded")
        conv.output[0] = node.output[0]
        view.producers[node.output[0]] = conv
        removed.add(id(node))
    _remove(graph, removed)


def _fold_batchnorm_before_convs(model: onnx.ModelProto) -> None:
    """BatchNorm -> Conv that pads nothing (padding would meet the zeros the BatchNorm never saw), the
    BatchNorm's output read by nothing else: the Conv's weights scale its input and its bias shifts it."""
    graph = model.graph
    view = _GraphView(graph)
    constants = view.constants
    removed = set()
    for node in graph.node:
        conv = next(iter(view.readers.get(node.output[0], [])), None)
        if (not _foldable_batchnorm(node, constants) or conv is None or not view.read_only_by(node.output[0], conv)
                or list(conv.input).count(node.output[0]) != 1 or conv.input[0] != node.output[0]):
            continue
        attrs = {attr.name: attr for attr in conv.attribute}
        found = _conv_weight_and_bias(conv, constants)
        pads = any(attrs["pads"].ints) if "pads" in attrs else False
        auto_pad = attrs["auto_pad"].s if "auto_pad" in attrs else b"NOTSET"
        if found is None or pads or auto_pad not in (b"NOTSET", b"VALID", b""):
            continue
        weight, bias = found
        scale, shift = _batchnorm_scale_shift(node, constants)
        groups = attrs["group"].i if "group" in attrs else 1
        per_group_in, per_group_out = weight.shape[1], weight.shape[0] // groups
        # input channel read by weight[o, i]: group (o // per_group_out), its i-th channel
        channel = (np.arange(weight.shape[0])[:, None] // per_group_out) * per_group_in + np.arange(per_group_in)
        spatial = (1,) * (weight.ndim - 2)
        folded = (weight * scale[channel].reshape(channel.shape + spatial)).astype(weight.dtype)
        shifted = bias + (weight.astype(np.float64) * shift[channel].reshape(channel.shape + spatial)).sum(
            axis=tuple(range(1, weight.ndim)))
        _set_conv_constants(graph, constants, conv, folded, shifted, "bn_input_folded")
        conv.input[0] = node.input[0]
        removed.add(id(node))
    _remove(graph, removed)


def _remove(graph: onnx.GraphProto, removed: set[int]) -> None:
    if removed:
        nodes = [node for node in graph.node if id(node) not in removed]
        del graph.node[:]
        graph.node.extend(nodes)


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nothing reads and initializers no node reads."""
    graph = model.graph
    needed = _read_outside_nodes(graph)
    kept = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializer_names = {init.name for init in graph.initializer}
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in needed:
            del graph.initializer[index]  # in place: rebuilding the list would copy every weight
    # the model's own inputs stay; inputs that only declared an initializer go with it
    inputs = [value for value in graph.input if value.name not in initializer_names or value.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)


def _refuse_dynamic_shapes(model: onnx.ModelProto, name: str) -> None:
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    for node in graph.node:
        label = f"node {node.name or node.output[0]!r} ({node.op_type})"
        if node.op_type in ("Shape", "Size") and node.domain in ONNX_DEFAULT_DOMAINS:
            raise ModelError(f"ONNX model {name!r} has a shape that depends on the values computed, not only on "
                             f"the input shapes: {label} reads the shape of {node.input[0]!r}, which is not static "
                             "once the input shapes are bound; tvm_dse builds static shapes only")
        for index, what in _STATIC_INPUTS.get(node.op_type, ()) if node.domain in ONNX_DEFAULT_DOMAINS else ():
            tensor = node.input[index] if index < len(node.input) else ""
            if tensor and tensor not in constants:
                source = producers.get(tensor)
                origin = f" (from node {source.name or tensor!r}, {source.op_type})" if source is not None else ""
                raise ModelError(f"ONNX model {name!r}: the {what} of {label} come from {tensor!r}{origin}, "
                                 "computed at run time, and stay dynamic once the input shapes are bound; "
                                 "tvm_dse builds static shapes only")
    _refuse_data_dependent_outputs(model, name)


def _refuse_data_dependent_outputs(model: onnx.ModelProto, name: str) -> None:
    """Refuse a node whose output size depends on the data (NonMaxSuppression, NonZero, Unique, ...): with
    every input shape bound, shape inference leaves a dimension of its output unknown. TVM's importer
    would pad such an output to its largest size, which is not the model's result."""
    undeclared = onnx.ModelProto()
    undeclared.CopyFrom(_without_weights(model))
    for value in undeclared.graph.output:  # an output's declared dimension may be a symbol the inputs fixed
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(undeclared, data_prop=True)
    except Exception:  # inference refuses some exporters' graphs; the importer then decides alone
        return
    partial = {value.name: [dim.dim_value if dim.HasField("dim_value") else "?" for dim in
                            value.type.tensor_type.shape.dim]
               for value in list(inferred.graph.value_info) + list(inferred.graph.output)
               if value.type.tensor_type.HasField("shape")}
    for node in model.graph.node:
        for output in node.output:
            if output in partial and "?" in partial[output]:
                raise ModelError(f"ONNX model {name!r}: the size of {output!r}, the output of node "
                                 f"{node.name or output!r} ({node.op_type}), depends on the values computed "
                                 f"(its shape is {partial[output]} once the input shapes are bound); tvm_dse "
                                 f"builds static shapes only: run {node.op_type} on the module's outputs instead")
