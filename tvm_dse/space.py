"""The design space of a model on a target, as plain data: what the graph-level search chooses from.

Every vertex of the DSE graph becomes a :class:`SpaceNode` with its :class:`Option` s: the applicable
strategies of a tunable node (measured latency, layouts, memory), the layouts a join may meet in
(free, or priced by the pools after it where modules were profiled: see profiling.py), the model's own
layout for inputs, layout-fixed operators and outputs (free). Every edge
carries the cost of each (producer option, consumer option) pair: the measured latency of converting
the producer's output from its layout to the consumer's input layout, zero when they agree.

A plan's cost is the sum of its options' latencies and its edges' conversion costs, plus the space's
``fixed_ms`` (what runs whatever the choices, where that was measured); its peak memory is
the transformed weights of every node (resident) plus the largest workspace (one scratch buffer shared
by nodes that run one at a time) plus the largest pair of live activations around one node. The space
saves to and loads from JSON, so searchers are tested and compared without TVM.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

INFEASIBLE = float("inf")


@dataclass
class Option:
    """One choice for a node: a strategy (with its decisions) or, for joins and fixed vertices, a layout."""

    name: str
    latency_ms: float = 0.0
    input_layout: str = ""
    output_layout: str = ""
    weight_bytes: int = 0
    workspace_bytes: int = 0
    decisions: dict[str, Any] | None = None
    accuracy_loss: float = 0.0  # the user metric's loss when this option alone replaces the fp32 one
    disturbed: bool = False  # priced by a kernel timing that stayed disturbed (see tvm_dse.timing)


@dataclass
class SpaceNode:
    """A vertex of the space: its options and the vertices feeding it."""

    name: str
    kind: str  # "conv2d", "dense", "join", "input", "fixed", "output"
    options: list[Option]
    inputs: list[int] = field(default_factory=list)
    activation_bytes: int = 0  # its output tensor's size

    @property
    def is_tunable(self) -> bool:
        return self.kind in ("conv2d", "dense")


@dataclass
class Edge:
    """Producer -> consumer, with ``cost[p][q]``: ms to convert the producer's output under option p into
    what the consumer's option q reads."""

    source: int
    target: int
    cost: list[list[float]]


@dataclass
class DesignSpace:
    """Nodes in topological order (inputs before their consumers) and the edges between them."""

    model: str
    target: str
    nodes: list[SpaceNode]
    edges: list[Edge]
    metadata: dict[str, Any] = field(default_factory=dict)
    fixed_ms: float = 0.0  # time no choice changes (see profiling.py); 0 where only kernels were measured

    def __post_init__(self) -> None:
        for index, node in enumerate(self.nodes):
            if not node.options:
                raise ValueError(f"node {node.name!r} has no options")
            if any(not 0 <= i < index for i in node.inputs):
                raise ValueError(f"node {node.name!r}: inputs must come earlier in the node order")
        for edge in self.edges:
            rows, cols = len(self.nodes[edge.source].options), len(self.nodes[edge.target].options)
            if len(edge.cost) != rows or any(len(row) != cols for row in edge.cost):
                raise ValueError(f"edge {edge.source}->{edge.target}: cost must be {rows}x{cols}")

    @property
    def sizes(self) -> list[int]:
        """Number of options of every node."""
        return [len(node.options) for node in self.nodes]

    def incoming(self) -> list[list[Edge]]:
        """Edges into every node, by node index."""
        by_target: list[list[Edge]] = [[] for _ in self.nodes]
        for edge in self.edges:
            by_target[edge.target].append(edge)
        return by_target

    def outgoing(self) -> list[list[Edge]]:
        """Edges out of every node, by node index."""
        by_source: list[list[Edge]] = [[] for _ in self.nodes]
        for edge in self.edges:
            by_source[edge.source].append(edge)
        return by_source

    def live_bytes(self) -> int:
        """The plan-independent term of :meth:`peak_memory`: the largest output plus inputs around one node."""
        return max((node.activation_bytes + sum(self.nodes[i].activation_bytes for i in node.inputs)
                    for node in self.nodes), default=0)

    def check(self, assignment: Sequence[int]) -> None:
        if len(assignment) != len(self.nodes):
            raise ValueError(f"an assignment needs one option per node ({len(self.nodes)}), got {len(assignment)}")
        for node, choice in zip(self.nodes, assignment):
            if not 0 <= choice < len(node.options):
                raise ValueError(f"node {node.name!r} has {len(node.options)} options, not option {choice}")

    def node_cost(self, assignment: Sequence[int]) -> float:
        return sum(node.options[choice].latency_ms for node, choice in zip(self.nodes, assignment))

    def transform_cost(self, assignment: Sequence[int]) -> float:
        return sum(edge.cost[assignment[edge.source]][assignment[edge.target]] for edge in self.edges)

    def cost(self, assignment: Sequence[int]) -> float:
        """Predicted latency (ms) of the plan: node latencies, conversions and ``fixed_ms`` (inf if
        infeasible)."""
        self.check(assignment)
        return self.node_cost(assignment) + self.transform_cost(assignment) + self.fixed_ms

    def accuracy_loss(self, assignment: Sequence[int]) -> float:
        """The plan's estimated accuracy loss: the sum of its options' losses (each measured alone)."""
        self.check(assignment)
        return sum(node.options[choice].accuracy_loss for node, choice in zip(self.nodes, assignment))

    def peak_memory(self, assignment: Sequence[int]) -> int:
        """Bytes: every node's transformed weights + the largest workspace + the largest input+output pair."""
        self.check(assignment)
        options = [node.options[choice] for node, choice in zip(self.nodes, assignment)]
        weights = sum(o.weight_bytes for o in options)
        workspace = max((o.workspace_bytes for o in options), default=0)
        live = max((node.activation_bytes + sum(self.nodes[i].activation_bytes for i in node.inputs)
                    for node in self.nodes), default=0)
        return weights + workspace + live

    def describe(self, assignment: Sequence[int]) -> dict[str, str]:
        """Node name -> option name, for the tunable nodes and joins."""
        return {node.name: node.options[choice].name for node, choice in zip(self.nodes, assignment)
                if node.is_tunable or node.kind == "join"}

    def restricted(self, keep: Callable[[SpaceNode, Option], bool]) -> "DesignSpace":
        """The same space with only the tunable nodes' options ``keep`` accepts (every node keeps at least
        one: ValueError otherwise); joins and fixed nodes keep theirs."""
        kept = [[i for i, option in enumerate(node.options) if not node.is_tunable or keep(node, option)]
                for node in self.nodes]
        nodes = [SpaceNode(node.name, node.kind, [node.options[i] for i in indices], list(node.inputs),
                           node.activation_bytes) for node, indices in zip(self.nodes, kept)]
        edges = [Edge(edge.source, edge.target,
                      [[edge.cost[p][q] for q in kept[edge.target]] for p in kept[edge.source]])
                 for edge in self.edges]
        return DesignSpace(self.model, self.target, nodes, edges, dict(self.metadata), self.fixed_ms)

    def repriced(self, price: Callable[[SpaceNode, Option], Option], fixed_ms: float) -> "DesignSpace":
        """The same space with every option replaced by ``price(node, option)`` (same layouts: the edges
        stay) and ``fixed_ms``."""
        nodes = [SpaceNode(node.name, node.kind, [price(node, option) for option in node.options], list(node.inputs),
                           node.activation_bytes) for node in self.nodes]
        return DesignSpace(self.model, self.target, nodes, self.edges, dict(self.metadata), fixed_ms)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DesignSpace":
        nodes = [SpaceNode(n["name"], n["kind"], [Option(**o) for o in n["options"]], list(n["inputs"]),
                           n.get("activation_bytes", 0)) for n in data["nodes"]]
        edges = [Edge(e["source"], e["target"], [list(map(float, row)) for row in e["cost"]]) for e in data["edges"]]
        return cls(data["model"], data["target"], nodes, edges, dict(data.get("metadata", {})),
                   float(data.get("fixed_ms", 0.0)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), allow_nan=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DesignSpace":
        return cls.from_dict(json.loads(Path(path).read_text()))
