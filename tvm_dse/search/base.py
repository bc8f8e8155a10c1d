"""The searcher interface: what a graph-level search receives, how it prices plans and what it returns.

A :class:`Searcher` sees only a :class:`~tvm_dse.space.DesignSpace` (plain data, no TVM). It prices every
full plan through the :class:`Evaluator` it is handed, the one counter shared by all searchers, so a
:class:`Budget` of evaluations means the same for all of them and every result carries the same
convergence history. Writing a searcher means implementing :meth:`Searcher.explore`; :meth:`Searcher.search`
validates the inputs, creates the evaluator, calls ``explore`` and turns the best plan into a
:class:`SearchResult`.
"""

from __future__ import annotations

import abc
import inspect
import math
import time
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Sequence

import numpy as np

from ..progress import Progress
from ..space import DesignSpace

# Without a limit of its own, no search runs longer than this: a run that forgot its budget ends.
DEFAULT_MAX_SECONDS = 60.0
# The cheapest distinct plans a search keeps beside its best, for measuring them end to end.
RUNNERS_UP = 8


class BudgetExhausted(RuntimeError):
    """A searcher asked for an evaluation beyond its budget's ``max_evaluations`` (a bug in the searcher)."""


class NoFeasiblePlan(ValueError):
    """The search ended without a plan of finite cost within the memory limit.

    ``evaluations`` and ``seconds`` say what the search spent before giving up.
    """

    def __init__(self, message: str, evaluations: int = 0, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.evaluations = evaluations
        self.seconds = seconds


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False) -> None:
    """Raise a ``ValueError`` (``TypeError`` for a non-number) unless ``value`` lies in [low, high].

    Parameters
    ----------
    name
        The parameter's name, quoted in the message.
    value
        The value to check; ``bool`` is never accepted as a number.
    integer
        Require an integer (Python or numpy).
    low, high
        Inclusive bounds, ``None`` for none; ``low_open`` makes the lower bound exclusive.
    """
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        left = "(" if low_open else "["
        raise ValueError(f"{name} must be in {left}{low if low is not None else '-inf'}, "
                         f"{high if high is not None else 'inf'}], got {value!r}")


@dataclass(frozen=True)
class Budget:
    """How much a search may spend: full-plan cost evaluations and/or wall-clock seconds.

    Parameters
    ----------
    max_evaluations
        The most plans the searcher may price through its :class:`Evaluator`; ``None`` for no limit.
    max_seconds
        Wall-clock seconds from the start of the search, checked between evaluations (an exact solver
        passes it to its solver as a time limit); ``None`` for no limit. At least one limit is required.

    Examples
    --------
    >>> Budget(max_evaluations=2000)
    Budget(max_evaluations=2000, max_seconds=60.0)
    >>> Budget(max_seconds=5.0, max_evaluations=None).max_evaluations is None
    True
    """

    max_evaluations: int | None = None
    max_seconds: float | None = DEFAULT_MAX_SECONDS

    def __post_init__(self) -> None:
        if self.max_evaluations is None and self.max_seconds is None:
            raise ValueError("a budget needs max_evaluations and/or max_seconds; both are None")
        if self.max_evaluations is not None:
            check_number("max_evaluations", self.max_evaluations, integer=True, low=1)
        if self.max_seconds is not None:
            check_number("max_seconds", self.max_seconds, low=0, low_open=True)
            if math.isinf(self.max_seconds):
                raise ValueError("max_seconds must be finite; use None for no time limit")

    def to_dict(self) -> dict[str, Any]:
        return {"max_evaluations": self.max_evaluations, "max_seconds": self.max_seconds}


@dataclass
class SearchResult:
    """The best plan a search found, what it cost to find it and how the best cost evolved.

    Attributes
    ----------
    searcher
        The searcher's registered name.
    assignment
        One option index per node of the space, in the space's node order.
    cost_ms
        ``space.cost(assignment)``: predicted latency of the plan.
    peak_memory_bytes
        ``space.peak_memory(assignment)``.
    evaluations
        Full-plan cost evaluations spent (an exact solver: the plans it priced, one per solve).
    seconds
        Wall-clock seconds of the search.
    history
        ``(evaluations, seconds, best cost so far)`` whenever the best improved, and once at the end:
        the convergence curve.
    info
        Searcher-specific details (episodes run, solver status, the cost of every uniform plan, ...).
    runners_up
        The next cheapest distinct plans within the limits the search priced (at most
        :data:`RUNNERS_UP`), cheapest first.
    """

    searcher: str
    assignment: list[int]
    cost_ms: float
    peak_memory_bytes: int
    evaluations: int
    seconds: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    runners_up: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {"searcher": self.searcher, "assignment": list(self.assignment), "cost_ms": self.cost_ms,
                "peak_memory_bytes": self.peak_memory_bytes, "evaluations": self.evaluations,
                "seconds": self.seconds, "history": [list(point) for point in self.history],
                "info": dict(self.info), "runners_up": [list(a) for a in self.runners_up]}


class Evaluator:
    """The shared evaluation counter: prices full plans for a searcher and keeps the best one within budget.

    Every searcher calls :meth:`evaluate` for each plan it wants priced (never ``space.cost`` directly), so
    evaluations are counted, budgets enforced and the best plan and its history recorded identically.

    Parameters
    ----------
    space
        The space being searched (read, never modified).
    budget
        The limits; asking for an evaluation beyond ``max_evaluations`` raises :class:`BudgetExhausted`.
    memory_limit_bytes
        Plans whose ``space.peak_memory`` exceeds it price as infinite and are never the best.
    progress
        When given, advanced to the percentage of the budget spent, with the best cost so far.
    accuracy_loss_limit
        Plans whose ``space.accuracy_loss`` exceeds it price as infinite and are never the best.
    """

    def __init__(self, space: DesignSpace, budget: Budget, memory_limit_bytes: float | None = None,
                 progress: Progress | None = None, accuracy_loss_limit: float | None = None) -> None:
        self.space = space
        self.budget = budget
        self.memory_limit_bytes = memory_limit_bytes
        self.accuracy_loss_limit = accuracy_loss_limit
        self._progress = progress
        self.evaluations = 0
        self.best_cost = math.inf
        self.best_assignment: list[int] | None = None
        self.history: list[tuple[int, float, float]] = []
        self._cheapest: dict[tuple[int, ...], float] = {}  # the best and its runners-up
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Wall-clock seconds since the search started."""
        return time.perf_counter() - self._start

    @property
    def remaining_evaluations(self) -> int | None:
        """Evaluations left, ``None`` without an evaluation limit."""
        if self.budget.max_evaluations is None:
            return None
        return self.budget.max_evaluations - self.evaluations

    @property
    def remaining_seconds(self) -> float | None:
        """Seconds left (never negative), ``None`` without a time limit."""
        if self.budget.max_seconds is None:
            return None
        return max(0.0, self.budget.max_seconds - self.seconds)

    @property
    def exhausted(self) -> bool:
        """Whether either limit is reached: a searcher checks this before every evaluation it plans."""
        return self.remaining_evaluations == 0 or self.remaining_seconds == 0.0

    @property
    def progress(self) -> float:
        """The fraction of the budget spent, in [0, 1], for schedules such as an exploration rate.

        Counted in evaluations where the budget limits them (so a seeded search does not depend on the
        machine's speed), else in seconds.
        """
        if self.budget.max_evaluations is not None:
            return self.evaluations / self.budget.max_evaluations
        return min(1.0, self.seconds / self.budget.max_seconds)

    def fits(self, assignment: Sequence[int]) -> bool:
        """Whether the plan's peak memory and accuracy loss are within their limits (always, without
        them); not an evaluation."""
        return fits_limits(self.space, assignment, self.memory_limit_bytes, self.accuracy_loss_limit)

    def evaluate(self, assignment: Sequence[int]) -> float:
        """Price one full plan: ``space.cost(assignment)``, or ``inf`` if it breaks a limit.

        Counts one evaluation and records the plan if it is the best so far.
        """
        if self.remaining_evaluations == 0:
            raise BudgetExhausted(f"the budget allows {self.budget.max_evaluations} evaluations, all spent")
        self.evaluations += 1
        cost = self.space.cost(assignment) if self.fits(assignment) else math.inf
        if cost < math.inf:
            self._keep_cheapest(tuple(int(choice) for choice in assignment), cost)
        if cost < self.best_cost:
            self.best_cost = cost
            self.best_assignment = [int(choice) for choice in assignment]
            self.history.append((self.evaluations, self.seconds, cost))
        if self._progress is not None:
            percent = int(100 * self.progress)
            if percent > self._progress.done:
                self._progress.advance(percent - self._progress.done, note=f"best {self.best_cost:.3f} ms")
        return cost

    def _keep_cheapest(self, plan: tuple[int, ...], cost: float) -> None:
        if plan in self._cheapest or len(self._cheapest) <= RUNNERS_UP:
            self._cheapest[plan] = cost
            return
        dearest = max(self._cheapest, key=self._cheapest.__getitem__)
        if cost < self._cheapest[dearest]:
            del self._cheapest[dearest]
            self._cheapest[plan] = cost

    def no_plan(self, searcher: str, reason: str) -> NoFeasiblePlan:
        """The error of a search that found no feasible plan, saying why and what it spent."""
        limit = "" if self.memory_limit_bytes is None else f" within {self.memory_limit_bytes:.0f} bytes"
        if self.accuracy_loss_limit is not None:
            limit += f" losing at most {self.accuracy_loss_limit:g} accuracy"
        return NoFeasiblePlan(f"{searcher}: no plan of finite cost{limit}: {reason}", self.evaluations, self.seconds)

    def result(self, searcher: str, info: dict[str, Any]) -> SearchResult:
        """The best plan as a :class:`SearchResult`; :class:`NoFeasiblePlan` if none was found."""
        if self._progress is not None:
            if self._progress.done < self._progress.total:  # a search may stop before its budget is spent
                self._progress.advance(self._progress.total - self._progress.done,
                                       note=f"best {self.best_cost:.3f} ms")
            self._progress.close()
        if self.best_assignment is None:
            raise self.no_plan(searcher, f"none among the {self.evaluations} evaluated")
        history = list(self.history)
        seconds = self.seconds
        if history[-1][0] != self.evaluations:
            history.append((self.evaluations, seconds, self.best_cost))
        runners_up = [list(plan) for plan in sorted(self._cheapest, key=self._cheapest.__getitem__)
                      if list(plan) != self.best_assignment]
        return SearchResult(searcher, self.best_assignment, self.best_cost,
                            self.space.peak_memory(self.best_assignment), self.evaluations, seconds, history, info,
                            runners_up[:RUNNERS_UP])


def fits_limits(space: DesignSpace, assignment: Sequence[int], memory_limit_bytes: float | None = None,
                accuracy_loss_limit: float | None = None) -> bool:
    """Whether a plan's peak memory and accuracy loss are within the limits (always, without them)."""
    if memory_limit_bytes is not None and space.peak_memory(assignment) > memory_limit_bytes:
        return False
    return accuracy_loss_limit is None or space.accuracy_loss(assignment) <= accuracy_loss_limit


def best_plans(space: DesignSpace, result: SearchResult, count: int, memory_limit_bytes: float | None = None,
               accuracy_loss_limit: float | None = None) -> list[list[int]]:
    """The ``count`` cheapest distinct plans within the limits among a search's best, its runners-up and,
    where those are too few (an exact solver prices one plan), the best plan with one node's option changed;
    cheapest first by predicted latency."""
    costs = {tuple(plan): space.cost(plan) for plan in [result.assignment, *result.runners_up]}
    if len(costs) < count:
        for index, node in enumerate(space.nodes):
            for option in range(len(node.options)):
                neighbour = list(result.assignment)
                neighbour[index] = option
                if tuple(neighbour) not in costs and fits_limits(space, neighbour, memory_limit_bytes,
                                                                 accuracy_loss_limit):
                    costs[tuple(neighbour)] = space.cost(neighbour)
    ranked = sorted((plan for plan, cost in costs.items() if cost < math.inf), key=costs.__getitem__)
    return [list(plan) for plan in ranked[:count]]


def default_budget(space: DesignSpace) -> Budget:
    """The default budget of a search: 40 evaluations per option of the space (and 60 s at most).

    Enough for Q-learning to come within 2% of the optimum on ResNet-18-sized spaces (29 searched nodes,
    4-8 options each: about 6,000 evaluations, a second or two).
    """
    return Budget(max_evaluations=40 * sum(space.sizes))


class Searcher(abc.ABC):
    """A graph-level search over a :class:`~tvm_dse.space.DesignSpace`: one option per node.

    Subclasses set :attr:`name`, validate their hyperparameters in ``__init__`` (stored under attributes of
    the same names, so :meth:`get_params` finds them) and implement :meth:`explore`. A searcher instance
    holds no state between searches, so one instance may search several spaces, one after another or in
    parallel, each with its own seed.
    """

    name: ClassVar[str]
    # The limits this searcher does not look at, among "memory", "accuracy" and "conversions": by design it
    # may end without a plan meeting them (as a fixed plan does), which the shipped contract checks allow.
    ignores: ClassVar[frozenset[str]] = frozenset()

    def search(self, space: DesignSpace, budget: Budget | None = None, memory_limit_bytes: float | None = None,
               seed: int | None = None, show_progress: bool = False,
               accuracy_loss_limit: float | None = None) -> SearchResult:
        """Find a low-latency plan of ``space`` within ``budget``.

        Parameters
        ----------
        space
            The design space; not modified.
        budget
            Evaluation and time limits; ``None`` for :meth:`default_budget`.
        memory_limit_bytes
            Upper bound on ``space.peak_memory`` of the returned plan; ``None`` for none.
        seed
            Seed of the searcher's random generator: the same seed and an evaluation-only budget give the
            same result.
        show_progress
            Show a progress line (percentage of the budget spent, best cost so far) on stderr.
        accuracy_loss_limit
            Upper bound on ``space.accuracy_loss`` of the returned plan (the options' measured losses of
            the user's metric, summed); ``None`` for none.

        Returns
        -------
        SearchResult
            The best plan found, never one beyond the memory limit or of infinite cost.

        Raises
        ------
        NoFeasiblePlan
            If no plan of finite cost within the memory limit was found.
        """
        if not isinstance(space, DesignSpace):
            raise TypeError(f"space must be a DesignSpace, got {type(space).__name__}")
        if budget is None:
            budget = self.default_budget(space)
        elif not isinstance(budget, Budget):
            raise TypeError(f"budget must be a Budget or None, got {type(budget).__name__}")
        if memory_limit_bytes is not None:
            check_number("memory_limit_bytes", memory_limit_bytes, low=0, low_open=True)
        if accuracy_loss_limit is not None:
            check_number("accuracy_loss_limit", accuracy_loss_limit, low=0)
        if seed is not None:
            check_number("seed", seed, integer=True, low=0)
        progress = Progress(100, f"searching with {self.name} (% of budget)") if show_progress else None
        evaluator = Evaluator(space, budget, memory_limit_bytes, progress, accuracy_loss_limit)
        info = self.explore(space, evaluator, np.random.default_rng(seed))
        return evaluator.result(self.name, info)

    @abc.abstractmethod
    def explore(self, space: DesignSpace, evaluator: Evaluator, rng: np.random.Generator) -> dict[str, Any]:
        """Search ``space``, pricing every full plan through ``evaluator.evaluate``.

        Called once per :meth:`search`, after the inputs were validated. The evaluator keeps the best plan,
        so this method returns only searcher-specific details for :attr:`SearchResult.info`.

        It must stop when ``evaluator.exhausted`` (or, for an exact solver, when done, handing it
        ``evaluator.remaining_seconds`` as a time limit), draw every random number from ``rng`` (for
        reproducibility), respect ``evaluator.memory_limit_bytes`` and ``evaluator.accuracy_loss_limit`` as far
        as its method allows, and never
        modify ``space`` (copy what it needs to change). Reading the space's option latencies and edge costs
        to build partial costs is allowed; only full plans count as evaluations.

        Parameters
        ----------
        space
            The design space (read only).
        evaluator
            The shared counter: budget, memory limit, best plan so far.
        rng
            The searcher's random generator, seeded by :meth:`search`.

        Returns
        -------
        dict
            JSON-ready details of the run (may be empty).
        """

    def default_budget(self, space: DesignSpace) -> Budget:
        """The budget used when :meth:`search` gets none: :func:`default_budget` of the space.

        Hook: override for a searcher that needs a different default (an exact solver needs one evaluation).
        """
        return default_budget(space)

    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the hyperparameters ``__init__`` takes."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters by name, as given to ``__init__`` (scikit-learn style)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"
