"""The DSE graph: the tunable nodes of a model (conv2d and dense) and how their outputs reach each other.

Between two tunable nodes there are usually only layout-transparent operators (bias add, relu, clip,
pooling, ...): they work in whatever layout their input has, so a producer and a consumer that pick the
same layout need no conversion. Which operators those are is :mod:`tvm_dse.ops`'s to say, for lowering too.
The graph keeps exactly what the search needs to price layouts:

- ``conv2d`` / ``dense`` vertices, one per tunable call, with their :class:`~tvm_dse.workload.Workload`;
- ``join`` vertices for residual adds and concats fed by several producers: all their inputs must be in
  one layout (or pay a conversion), and their consumers see that layout;
- ``input``, ``fixed`` and ``output`` vertices where the layout is the model's own (NCHW): model inputs,
  operators that depend on the layout (reshape, flatten, softmax, ...) and model outputs.

Each vertex lists the vertices whose outputs reach its data input through transparent operators only,
the logical shape of what arrives from each (a concatenation's operands are narrower than its result), and
what writes that activation and how many operators read it (:func:`tvm_dse.ops.activation_writers`:
whether a conversion there folds into its writer).
Vertex ids are positions in a topological order. The graph is plain data: save it, load it, diff it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import tvm
from tvm import relax

from .frontend import Model, tunable_op
from .layouts import holds
from .ops import JOINING, Writer, activation_writers, call_class, passes_layout, tensor_args, tensor_shape
from .workload import Workload

VERTEX_KINDS = ("input", "conv2d", "dense", "join", "fixed", "output")
TUNABLE_KINDS = ("conv2d", "dense")


@dataclass
class Vertex:
    """One vertex of the DSE graph (see the module docstring for the kinds)."""

    id: int
    kind: str
    name: str
    inputs: list[int] = field(default_factory=list)
    op: str = ""
    workload: Workload | None = None
    binding: int | None = None  # position of its binding among main's bindings (all blocks, in order)
    # logical shape of the activation it reads (an input: the one it provides; a join: its result)
    shape: list[int] | None = None
    # the logical shape arriving from each of ``inputs``, where one differs from ``shape``; else None
    input_shapes: list[list[int] | None] | None = None
    # per input: what writes the activation arriving from it (a Writer's value) and how often it is read
    input_writers: list[str] = field(default_factory=list)
    input_readers: list[int] = field(default_factory=list)

    @property
    def is_tunable(self) -> bool:
        return self.kind in TUNABLE_KINDS

    def input_shape(self, source: int) -> list[int] | None:
        """The logical shape of the activation that reaches this vertex from vertex ``source``."""
        if self.input_shapes is None:
            return self.shape
        return self.input_shapes[self.inputs.index(source)]

    def arrival(self, source: int) -> tuple[Writer, int]:
        """What writes the activation arriving from vertex ``source`` and how many operators read it."""
        index = self.inputs.index(source)
        return Writer(self.input_writers[index]), self.input_readers[index]

    def holds(self, layout: str) -> bool:
        """Whether this vertex may read (and, a join, write) its activations in ``layout``: the layout
        holds every one of them (a concatenation's operands and result alike)."""
        shapes = [self.input_shape(source) for source in self.inputs] + [self.shape]
        return holds(layout, *(shape for shape in shapes if shape is not None))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "kind": self.kind, "name": self.name, "inputs": list(self.inputs)}
        if self.op:
            data["op"] = self.op
        if self.workload is not None:
            data["workload"] = self.workload.to_dict()
        if self.binding is not None:
            data["binding"] = self.binding
        if self.shape is not None:
            data["shape"] = list(self.shape)
        if self.input_shapes is not None:
            data["input_shapes"] = [list(shape) if shape is not None else None for shape in self.input_shapes]
        if self.inputs:
            data["input_writers"], data["input_readers"] = list(self.input_writers), list(self.input_readers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vertex":
        if data["kind"] not in VERTEX_KINDS:
            raise ValueError(f"unknown vertex kind {data['kind']!r}; accepted: {', '.join(VERTEX_KINDS)}")
        workload = Workload.from_dict(data["workload"]) if "workload" in data else None
        inputs = list(data["inputs"])
        return cls(data["id"], data["kind"], data["name"], inputs, data.get("op", ""), workload,
                   data.get("binding"), data.get("shape"), data.get("input_shapes"),
                   list(data.get("input_writers", [Writer.NONE.value] * len(inputs))),
                   list(data.get("input_readers", [0] * len(inputs))))


@dataclass
class DseGraph:
    """Tunable nodes and the layout-carrying edges between them, in topological order."""

    model_name: str
    vertices: list[Vertex]

    @property
    def nodes(self) -> list[Vertex]:
        """The tunable vertices (conv2d and dense), in topological order."""
        return [v for v in self.vertices if v.is_tunable]

    @property
    def joins(self) -> list[Vertex]:
        return [v for v in self.vertices if v.kind == "join"]

    @property
    def edges(self) -> list[tuple[int, int]]:
        """(producer id, consumer id) for every vertex input."""
        return [(source, v.id) for v in self.vertices for source in v.inputs]

    def consumers(self, vertex_id: int) -> list[int]:
        return [v.id for v in self.vertices if vertex_id in v.inputs]

    def node(self, name: str) -> Vertex:
        for vertex in self.vertices:
            if vertex.name == name:
                return vertex
        raise KeyError(f"no vertex named {name!r} in the DSE graph of {self.model_name!r}")

    def workloads(self) -> list[Workload]:
        """Distinct workloads of the tunable nodes, in order of first appearance."""
        return list(dict.fromkeys(v.workload for v in self.nodes))

    @property
    def flops(self) -> int:
        return sum(v.workload.flops for v in self.nodes)

    def summary(self) -> str:
        """A table of the tunable nodes and joins, one line each."""
        names = {v.id: v.name for v in self.vertices}
        lines = [f"DSE graph of {self.model_name}: {len(self.nodes)} tunable nodes, {len(self.joins)} joins, "
                 f"{len(self.workloads())} distinct workloads, {self.flops / 1e9:.3f} GFLOP"]
        for vertex in self.vertices:
            if vertex.is_tunable or vertex.kind == "join":
                what = vertex.workload.describe() if vertex.workload else vertex.op.removeprefix("relax.")
                sources = ", ".join(names[i] for i in vertex.inputs)
                lines.append(f"  {vertex.id:4d} {vertex.kind:7s} {vertex.name:28s} {what:34s} <- {sources}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_name, "vertices": [v.to_dict() for v in self.vertices]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DseGraph":
        vertices = [Vertex.from_dict(v) for v in data["vertices"]]
        for position, vertex in enumerate(vertices):
            if vertex.id != position or any(not 0 <= i < position for i in vertex.inputs):
                raise ValueError(f"vertex {vertex.name!r}: ids must be positions in a topological order")
        return cls(data["model"], vertices)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "DseGraph":
        return cls.from_dict(json.loads(Path(path).read_text()))


def build_graph(model: Model) -> DseGraph:
    """Extract the DSE graph from an imported model's ``main`` function."""
    return _GraphBuilder(model).build()


class _GraphBuilder:
    def __init__(self, model: Model):
        self.model = model
        self.vertices: list[Vertex] = []
        # For every Relax variable: the vertices whose outputs reach it through transparent operators.
        self.origins: dict[relax.Var, tuple[int, ...]] = {}
        self.tunable_names = iter(model.node_names)
        self.binding: int | None = None
        self.writers, self.readers = activation_writers(model.mod["main"])

    def add(self, kind: str, name: str, operands: Iterable[relax.Expr], op: str = "",
            workload: Workload | None = None, shape: list[int] | None = None) -> int:
        """A new vertex reading ``operands``: its inputs are their origins, each with its operand's shape."""
        arriving: dict[int, tuple[list[int] | None, Writer, int]] = {}
        for operand in operands:
            for origin in self.origins_of(operand):
                arriving.setdefault(origin, (tensor_shape(operand), self.writers.get(operand, Writer.NONE),
                                             self.readers[operand]))
        inputs = sorted(arriving)
        input_shapes = [arriving[i][0] for i in inputs]
        differs = any(s != shape for s in input_shapes)
        vertex = Vertex(len(self.vertices), kind, name, inputs, op, workload, self.binding, shape,
                        input_shapes if differs else None, [arriving[i][1].value for i in inputs],
                        [arriving[i][2] for i in inputs])
        self.vertices.append(vertex)
        return vertex.id

    def build(self) -> DseGraph:
        main = self.model.mod["main"]
        for param, model_input in zip(main.params, self.model.inputs):
            self.origins[param] = (self.add("input", model_input.name, [], shape=list(model_input.shape)),)
        fixed_count = 0
        for self.binding, binding in enumerate(b for block in main.body.blocks for b in block.bindings):
            value = binding.value
            origins = self.transparent_origins(value)
            if origins is None:
                kind = tunable_op(value)
                if kind is not None:
                    workload = _workload(kind, value)
                    origins = (self.add(kind, next(self.tunable_names), [value.args[0]],
                                        "relax.nn.conv2d" if kind == "conv2d" else "relax.matmul", workload,
                                        tensor_shape(value.args[0])),)
                else:
                    op_name = value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) \
                        else type(value).__name__
                    tensors = tensor_args(value)
                    origins = (self.add("fixed", f"{op_name.removeprefix('relax.')}_{fixed_count}", tensors,
                                        op_name, shape=tensor_shape(tensors[0]) if tensors else None),)
                    fixed_count += 1
            self.origins[binding.var] = origins
        self.binding = None
        outputs = main.body.body
        output_exprs = list(outputs.fields) if isinstance(outputs, relax.Tuple) else [outputs]
        for index, expr in enumerate(output_exprs):
            self.add("output", f"output_{index}", [expr], shape=tensor_shape(expr))
        return DseGraph(self.model.name, self.vertices)

    def origins_of(self, expr: relax.Expr) -> tuple[int, ...]:
        if isinstance(expr, relax.Tuple):
            return tuple(o for field_ in expr.fields for o in self.origins_of(field_))
        return self.origins.get(expr, ())  # constants and shapes carry no layout

    def transparent_origins(self, value: relax.Expr) -> tuple[int, ...] | None:
        """Origins of the output of an operator that passes a layout (:func:`tvm_dse.ops.passes_layout`);
        None when ``value`` is not one."""
        if not passes_layout(value):
            return None
        if call_class(value) not in JOINING:
            return self.origins_of(value.args[0])
        activations = [t for t in tensor_args(value) if not isinstance(t, tvm.ir.Constant)]
        operand_origins = [self.origins_of(t) for t in activations]
        distinct = {frozenset(o) for o in operand_origins}
        if len(distinct) <= 1:
            return operand_origins[0] if operand_origins else ()
        op = value.op.name
        name = f"{op.removeprefix('relax.')}_{sum(v.kind == 'join' for v in self.vertices)}"
        return (self.add("join", name, activations, op, shape=tensor_shape(value)),)


def _workload(kind: str, call: relax.Call) -> Workload:
    data_shape = tensor_shape(call.args[0])
    weight_shape = tensor_shape(call.args[1])
    dtype = str(call.args[0].ty.dtype)
    if kind == "dense":
        return Workload.dense(data_shape[0], data_shape[1], weight_shape[1], dtype=dtype)
    attrs = call.attrs
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW":
        raise ValueError(f"conv2d in layout {attrs.data_layout}/{attrs.kernel_layout}: the imported model is "
                         "expected in NCHW/OIHW")
    n, c, h, w = data_shape
    k, _, r, s = weight_shape
    return Workload("conv2d", n, c, h, w, k, kernel=(r, s), stride=tuple(attrs.strides),
                    padding=tuple(attrs.padding), dilation=tuple(attrs.dilation), groups=int(attrs.groups),
                    dtype=dtype)
