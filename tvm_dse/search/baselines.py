"""Baselines every search is compared with: greedy, random search and uniform (one strategy everywhere) plans.

Greedy and uniform plans choose the tunable nodes only; :func:`complete_plan` then gives every other node
(join, input, layout-fixed operator, output) its cheapest option next to the choices already made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..space import DesignSpace
from .base import Budget, Evaluator, Searcher


def complete_plan(space: DesignSpace, partial: Sequence[int | None]) -> list[int]:
    """Fill the unassigned (``None``) nodes of ``partial`` in node order, each with its cheapest option.

    An unassigned node takes the option minimizing its own latency plus the conversions on its edges to
    neighbours already assigned: its producers (assigned or filled before it, by the topological order)
    and those consumers ``partial`` assigns. A join thus meets in the layout that is cheapest given the
    strategies around it. Ties go to the first option.

    Parameters
    ----------
    space
        The design space (not modified).
    partial
        One option index or ``None`` per node.

    Returns
    -------
    list of int
        A full assignment that agrees with ``partial`` where it assigns.
    """
    if len(partial) != len(space.nodes):
        raise ValueError(f"partial needs one entry per node ({len(space.nodes)}), got {len(partial)}")
    plan = list(partial)
    incoming, outgoing = space.incoming(), space.outgoing()
    for index, node in enumerate(space.nodes):
        if plan[index] is not None:
            continue
        total = np.array([option.latency_ms for option in node.options])
        for edge in incoming[index]:
            total = total + np.array(edge.cost[plan[edge.source]])
        for edge in outgoing[index]:
            if plan[edge.target] is not None:
                total = total + np.array([row[plan[edge.target]] for row in edge.cost])
        plan[index] = int(np.argmin(total))
    return plan


def _fastest(options: Sequence[Any], among: Sequence[int]) -> int:
    return min(among, key=lambda i: options[i].latency_ms)


def greedy_assignment(space: DesignSpace) -> list[int]:
    """Each tunable node's fastest option, conversions ignored; the other nodes by :func:`complete_plan`."""
    return complete_plan(space, [_fastest(node.options, range(len(node.options))) if node.is_tunable else None
                                 for node in space.nodes])


def uniform_assignments(space: DesignSpace) -> dict[str, list[int]]:
    """One plan per strategy name found on the tunable nodes: that strategy wherever a node has it.

    A node without it takes its fastest option with the strategy's output layout (so its consumers read
    what they would have), otherwise its fastest option; the other nodes by :func:`complete_plan`. Names
    come in order of first appearance.
    """
    layouts: dict[str, str] = {}
    for node in space.nodes:
        if node.is_tunable:
            for option in node.options:
                layouts.setdefault(option.name, option.output_layout)
    plans = {}
    for name, layout in layouts.items():
        partial: list[int | None] = []
        for node in space.nodes:
            if not node.is_tunable:
                partial.append(None)
                continue
            named = [i for i, o in enumerate(node.options) if o.name == name]
            same_layout = [i for i, o in enumerate(node.options) if o.output_layout == layout]
            partial.append(_fastest(node.options, named or same_layout or range(len(node.options))))
        plans[name] = complete_plan(space, partial)
    return plans


@dataclass(frozen=True)
class UniformPlan:
    """A uniform plan for reports: the strategy name, its assignment, its cost and peak memory."""

    name: str
    assignment: list[int]
    cost_ms: float
    peak_memory_bytes: int


def uniform_plans(space: DesignSpace) -> list[UniformPlan]:
    """Every uniform plan of :func:`uniform_assignments` with its cost, cheapest first (for reports)."""
    plans = [UniformPlan(name, assignment, space.cost(assignment), space.peak_memory(assignment))
             for name, assignment in uniform_assignments(space).items()]
    return sorted(plans, key=lambda plan: plan.cost_ms)


class GreedySearcher(Searcher):
    """The fastest option of every tunable node, layout conversions ignored: TVM's per-op default.

    One evaluation. It does not look at the memory limit: if its plan breaks it, the search raises
    :class:`~tvm_dse.search.base.NoFeasiblePlan`.
    """

    name = "greedy"
    ignores = frozenset({"memory", "accuracy", "conversions"})

    def default_budget(self, space: DesignSpace) -> Budget:
        return Budget(max_evaluations=1)

    def explore(self, space: DesignSpace, evaluator: Evaluator, rng: np.random.Generator) -> dict[str, Any]:
        evaluator.evaluate(greedy_assignment(space))
        return {}


class UniformSearcher(Searcher):
    """The best of the uniform plans (one strategy everywhere it applies) that fits the memory limit.

    One evaluation per plan, in :func:`uniform_assignments` order while the budget lasts; ``info["plans"]``
    maps each evaluated strategy name to its plan's cost (``inf`` beyond the memory limit).
    """

    name = "uniform"
    ignores = frozenset({"memory", "accuracy", "conversions"})

    def default_budget(self, space: DesignSpace) -> Budget:
        return Budget(max_evaluations=len(uniform_assignments(space)))

    def explore(self, space: DesignSpace, evaluator: Evaluator, rng: np.random.Generator) -> dict[str, Any]:
        costs = {}
        for name, assignment in uniform_assignments(space).items():
            if evaluator.exhausted:
                break
            costs[name] = evaluator.evaluate(assignment)
        return {"plans": costs}


class RandomSearcher(Searcher):
    """Uniformly random plans until the budget is spent; the best one (within the memory limit) wins."""

    name = "random"
    ignores = frozenset({"memory", "conversions"})

    def explore(self, space: DesignSpace, evaluator: Evaluator, rng: np.random.Generator) -> dict[str, Any]:
        sizes = np.array(space.sizes)
        while not evaluator.exhausted:
            evaluator.evaluate(rng.integers(0, sizes).tolist())
        return {}
