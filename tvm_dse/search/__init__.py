"""Graph-level search: pick one option per node of a :class:`~tvm_dse.space.DesignSpace`.

Every searcher implements the small :class:`Searcher` interface, prices plans through the shared
:class:`Evaluator` and returns a :class:`SearchResult`; none of them needs TVM. They are registered by name:

- ``"qlearning"``: QS-DNN's reinforcement learning (:class:`QLearningSearcher`);
- ``"exact"`` (alias ``"ilp"``): the optimum by integer linear programming (:class:`ExactSearcher`), and
  :func:`pareto_front` for the latency/memory trade-off;
- ``"greedy"``, ``"random"``, ``"uniform"``: the baselines.

Examples
--------
>>> from tvm_dse.search import Budget, compare, get_searcher
>>> from tvm_dse.testing.spaces import chain_space
>>> space = chain_space(8)
>>> result = get_searcher("qlearning", learning_rate=0.1).search(space, Budget(max_evaluations=500), seed=0)
>>> rows = compare(space, ["exact", "greedy"])
>>> rows[0]["gap_percent"]
0.0
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..space import DesignSpace
from .base import (Budget, BudgetExhausted, Evaluator, NoFeasiblePlan, SearchResult, Searcher, best_plans,
                   default_budget, fits_limits)
from .baselines import (GreedySearcher, RandomSearcher, UniformPlan, UniformSearcher, complete_plan,
                        greedy_assignment, uniform_assignments, uniform_plans)
from .exact import ExactSearcher, ParetoPoint, leanest_plan, pareto_front
from .qlearning import QLearningSearcher

__all__ = [
    "Budget", "BudgetExhausted", "Evaluator", "ExactSearcher", "GreedySearcher", "NoFeasiblePlan", "ParetoPoint",
    "QLearningSearcher", "RandomSearcher", "SearchResult", "Searcher", "UniformPlan", "UniformSearcher",
    "best_plans", "compare", "complete_plan", "default_budget", "fits_limits", "get_searcher", "greedy_assignment",
    "leanest_plan", "pareto_front", "register_searcher", "searcher_names", "uniform_assignments", "uniform_plans",
]

_SEARCHERS: dict[str, type[Searcher]] = {}
_ALIASES: dict[str, str] = {}


def register_searcher(cls: type[Searcher], *aliases: str) -> type[Searcher]:
    """Make ``cls`` available to :func:`get_searcher` under ``cls.name`` and ``aliases``."""
    if not (isinstance(cls, type) and issubclass(cls, Searcher)):
        raise TypeError(f"only Searcher subclasses can be registered, got {cls!r}")
    if not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls.__name__} needs a class attribute `name` (a str) to be registered")
    for name in (cls.name, *aliases):
        if name in _SEARCHERS or name in _ALIASES:
            raise ValueError(f"a searcher is already registered as {name!r}")
    _SEARCHERS[cls.name] = cls
    _ALIASES.update({alias: cls.name for alias in aliases})
    return cls


register_searcher(QLearningSearcher)
register_searcher(ExactSearcher, "ilp")
register_searcher(GreedySearcher)
register_searcher(RandomSearcher)
register_searcher(UniformSearcher)


def searcher_names() -> list[str]:
    """The registered names (aliases not included), in registration order."""
    return list(_SEARCHERS)


def get_searcher(name: str, **params: Any) -> Searcher:
    """A new searcher by registered name or alias, with hyperparameters ``params``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones) or a parameter the searcher does not take
        (the message lists those it takes); hyperparameters out of range raise from the searcher itself.
    """
    key = _ALIASES.get(name, name)
    if key not in _SEARCHERS:
        known = ", ".join(searcher_names() + [f"{alias} (= {target})" for alias, target in _ALIASES.items()])
        raise ValueError(f"unknown searcher {name!r}; known searchers: {known}")
    cls = _SEARCHERS[key]
    accepted = cls.param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"searcher {key!r} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(accepted) or 'none'}")
    return cls(**params)


def compare(space: DesignSpace, searchers: Sequence[str | Searcher] | None = None, budget: Budget | None = None,
            seed: int | None = None, memory_limit_bytes: float | None = None,
            accuracy_loss_limit: float | None = None) -> list[dict[str, Any]]:
    """Run several searchers on one space at the same budget, seed and memory limit, for reports.

    Parameters
    ----------
    space
        The design space.
    searchers
        Names or instances; all registered searchers by default.
    budget
        The budget every searcher gets; :func:`default_budget` of the space by default.
    seed, memory_limit_bytes, accuracy_loss_limit
        As for :meth:`Searcher.search`.

    Returns
    -------
    list of dict
        One row per searcher, in the order given: ``searcher``, ``cost_ms``, ``gap_percent`` (above the
        exact optimum under the same memory limit, solved once more if no exact searcher proved it),
        ``evaluations``, ``seconds``, ``history`` (the convergence curve; empty without a plan) and
        ``error`` (``None``, or why the searcher found no plan, its cost and gap then ``inf``).
    """
    instances = [get_searcher(s) if isinstance(s, str) else s for s in (searchers or searcher_names())]
    budget = budget or default_budget(space)
    results: list[SearchResult | NoFeasiblePlan] = []
    for searcher in instances:
        try:
            results.append(searcher.search(space, budget, memory_limit_bytes, seed,
                                           accuracy_loss_limit=accuracy_loss_limit))
        except NoFeasiblePlan as error:
            results.append(error)
    proven = [r.cost_ms for r in results if isinstance(r, SearchResult) and r.info.get("optimal")]
    optimum = proven[0] if proven else ExactSearcher().search(space, memory_limit_bytes=memory_limit_bytes,
                                                              accuracy_loss_limit=accuracy_loss_limit).cost_ms
    rows = []
    for searcher, result in zip(instances, results):
        if isinstance(result, NoFeasiblePlan):
            rows.append({"searcher": searcher.name, "cost_ms": math.inf, "gap_percent": math.inf,
                         "evaluations": result.evaluations, "seconds": result.seconds, "error": str(result),
                         "history": []})
        else:
            # a zero optimum (a space of free options) leaves no gap to speak of
            gap = 100.0 * (result.cost_ms - optimum) / optimum if optimum else 0.0
            rows.append({"searcher": result.searcher, "cost_ms": result.cost_ms, "gap_percent": gap,
                         "evaluations": result.evaluations, "seconds": result.seconds, "error": None,
                         "history": [list(point) for point in result.history]})
    return rows
