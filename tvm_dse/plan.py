"""Plans: the graph-level schedule of a network, one strategy (and its schedule decisions) per tunable
node, as plain JSON that can be diffed, stored under ``schedules/`` and rebuilt.

A plan is tied to one model (its fingerprint) and one target (its key): loading it for another model,
another target or with a strategy this version does not know fails with an error naming the mismatch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Protocol

import tvm

from .errors import TvmDseError
from .frontend import Model
from .graph import DseGraph
from .quant.scheme import ActivationQuant
from .target import DseTarget, TargetLike, parse_target
from .version import __version__

SCHEMA_VERSION = 1


class NodeQuantization(Protocol):
    """Where each node's input quantization comes from (a :class:`tvm_dse.accuracy.Calibration`)."""

    def quant(self, node: str) -> ActivationQuant:
        """The quantization of ``node``'s input."""


class PlanError(TvmDseError, ValueError):
    """A plan that does not fit the model, the target or this version of tvm_dse."""


@dataclass
class NodeChoice:
    """The implementation chosen for one tunable node; ``decisions`` None means the strategy's defaults.
    ``quant`` is the quantization of the node's input (``scale``, ``zero_point``), set for int8 strategies."""

    strategy: str
    decisions: dict[str, Any] | None = None
    quant: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"strategy": self.strategy}
        if self.decisions is not None:
            data["decisions"] = self.decisions
        if self.quant is not None:
            data["quant"] = self.quant
        return data


@dataclass
class Plan:
    """One strategy per tunable node of a model, for one target.

    Attributes
    ----------
    model_name, model_fingerprint
        Which model the plan is for (see :attr:`tvm_dse.frontend.Model.fingerprint`).
    target
        The target's options (as :meth:`DseTarget.to_dict`); ``target_key`` is its canonical key.
    nodes
        Node name -> :class:`NodeChoice`, for every tunable node of the model's DSE graph.
    join_layouts
        Join name -> the layout its inputs meet in; joins not named take their first input's layout.
    metrics
        What is known of the plan: e.g. ``predicted_ms``, ``measured_ms``, ``peak_memory_bytes``.
    provenance
        Who made it and how: tvm_dse and TVM versions, searcher, budget, date.
    """

    model_name: str
    model_fingerprint: str
    target: dict[str, Any]
    target_key: str
    nodes: dict[str, NodeChoice]
    join_layouts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, model: Model, target: TargetLike, choices: Mapping[str, NodeChoice | str],
               join_layouts: Mapping[str, str] | None = None, **provenance: Any) -> "Plan":
        """A plan for ``model`` on ``target``; ``choices`` maps node names to choices or strategy names."""

        dse_target = parse_target(target)
        nodes = {name: choice if isinstance(choice, NodeChoice) else NodeChoice(choice)
                 for name, choice in choices.items()}
        stamp = {"tvm_dse": __version__, "tvm": tvm.__version__,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **provenance}
        return cls(model.name, model.fingerprint, dse_target.to_dict(), dse_target.key, nodes,
                   dict(join_layouts or {}), {}, stamp)

    @classmethod
    def uniform(cls, model: Model, graph: DseGraph, target: TargetLike, strategy: str, **provenance: Any) -> "Plan":
        """Every node gets ``strategy`` where it applies; the others a strategy writing the same layout
        (so no conversions appear between them), else their first applicable one."""
        from .strategies import applicable_strategies, get_strategy

        dse_target = parse_target(target)
        family = get_strategy(strategy)
        choices = {}
        for node in graph.nodes:
            applicable = applicable_strategies(node.workload, dse_target)
            if not applicable:
                raise PlanError(f"no strategy applies to node {node.name!r} ({node.workload.describe()})")
            same_layout = [s for s in applicable if node.workload.op == family.op and
                           s.layouts(node.workload, dse_target).output == family.layouts(node.workload, dse_target).output]
            chosen = [s for s in applicable if s is family] or same_layout or applicable
            choices[node.name] = chosen[0].name
        return cls.create(model, dse_target, choices, uniform=strategy, **provenance)

    def calibrate(self, calibration: NodeQuantization) -> "Plan":
        """Give every node whose strategy reads 8-bit codes (int8) its input's quantization from
        ``calibration`` (in place; returns the plan)."""
        from .strategies import get_strategy

        for name, choice in self.nodes.items():
            if get_strategy(choice.strategy).takes_input_quant:
                choice.quant = calibration.quant(name).to_dict()
        return self

    def reduced_precision_nodes(self) -> list[str]:
        """The nodes whose strategy computes in another precision than fp32 (int8, fp16)."""
        from .strategies import get_strategy

        return [name for name, choice in self.nodes.items() if get_strategy(choice.strategy).reduced_precision]

    def validate(self, model: Model, graph: DseGraph, target: TargetLike) -> DseTarget:
        """Check the plan fits ``model`` on ``target``; returns the parsed target. Raises PlanError."""
        from .strategies import get_strategy

        dse_target = parse_target(target)
        if self.model_fingerprint != model.fingerprint:
            raise PlanError(f"this plan is for model {self.model_name!r} (fingerprint {self.model_fingerprint[:12]}), "
                            f"not for {model.name!r} (fingerprint {model.fingerprint[:12]})")
        if self.target_key != dse_target.key:
            raise PlanError(f"this plan is for target {self.target_key}, not {dse_target.key}")
        names = [node.name for node in graph.nodes]
        missing = [n for n in names if n not in self.nodes]
        unknown = [n for n in self.nodes if n not in names]
        if missing or unknown:
            raise PlanError(f"plan nodes do not match model {model.name!r}: missing {missing[:5]}, unknown {unknown[:5]}")
        for node in graph.nodes:
            choice = self.nodes[node.name]
            try:
                strategy = get_strategy(choice.strategy)
            except KeyError as error:
                raise PlanError(f"node {node.name!r}: {error.args[0]}") from None
            applicability = strategy.applies(node.workload, dse_target)
            if not applicability:
                raise PlanError(f"node {node.name!r}: strategy {choice.strategy} does not apply "
                                f"({applicability.reason})")
            if strategy.takes_input_quant:
                if choice.quant is None:
                    raise PlanError(f"node {node.name!r}: {strategy.precision} strategy {choice.strategy} needs its "
                                    "input's quantization (calibrate the model; see tvm_dse.accuracy.calibrate)")
                try:
                    ActivationQuant.from_dict(choice.quant)
                except (KeyError, TypeError, ValueError) as error:
                    raise PlanError(f"node {node.name!r}: bad quantization {choice.quant}: {error}") from None
        joins = {v.name: v for v in graph.joins}
        for join, layout in self.join_layouts.items():
            if join not in joins:
                raise PlanError(f"join_layouts names {join!r}, which is not a join of model {model.name!r}")
            if not joins[join].holds(layout):
                shapes = [joins[join].input_shape(i) for i in joins[join].inputs] + [joins[join].shape]
                raise PlanError(f"join {join!r} cannot meet in {layout}: it does not hold all of its operands and "
                                f"result (logical shapes {shapes})")
        return dse_target

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": {"name": self.model_name,
                                                            "fingerprint": self.model_fingerprint},
                "target": {"key": self.target_key, "options": self.target},
                "nodes": {name: choice.to_dict() for name, choice in self.nodes.items()},
                "join_layouts": self.join_layouts, "metrics": self.metrics, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        if not isinstance(data, Mapping):
            raise PlanError(f"malformed plan: a JSON object is needed, not {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PlanError(f"plan schema version {version!r} is not supported; this tvm_dse reads version "
                            f"{SCHEMA_VERSION}")
        if not isinstance(data.get("nodes"), Mapping) or not data["nodes"]:
            raise PlanError(f"malformed plan: nodes must map each tunable node to its choice; got {data.get('nodes')!r}")
        try:
            nodes = {name: NodeChoice(choice["strategy"], choice.get("decisions"), choice.get("quant"))
                     for name, choice in data["nodes"].items()}
            return cls(data["model"]["name"], data["model"]["fingerprint"], dict(data["target"]["options"]),
                       data["target"]["key"], nodes, dict(data.get("join_layouts", {})),
                       dict(data.get("metrics", {})), dict(data.get("provenance", {})))
        except (KeyError, TypeError) as error:
            raise PlanError(f"malformed plan: missing or wrong field {error}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PlanError(f"plan file not found: {path}") from None
        except json.JSONDecodeError as error:
            raise PlanError(f"{path} is not a JSON plan: {error}") from None
        return cls.from_dict(data)
