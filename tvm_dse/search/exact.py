"""The exact solver: an integer linear program over the whole space (TASO's formulation), through HiGHS.

Variables: ``x[l,p]`` (binary) picks option p of node l; for every edge (u, v) and option pair (p, q) with a
positive finite conversion cost, ``y >= x[u,p] + x[v,q] - 1`` (continuous in [0, 1]: minimization keeps it
at the product of the two binaries); ``W`` (continuous) is at least the workspace of every chosen option.
Pairs of infinite cost are forbidden (``x[u,p] + x[v,q] <= 1``), options of infinite latency fixed to 0.
Per edge and option, one more valid inequality ties the pair variables to the choices (see
``_Program._add_marginal_cuts``): the same optimum, but a tighter LP relaxation that makes HiGHS about ten
times faster on ResNet-18-sized spaces (0.5 s to 0.05 s).
The peak-memory bound is exactly :meth:`DesignSpace.peak_memory`: chosen weights + ``W`` + the constant
live-activation term.

:func:`pareto_front` sweeps the memory bound between the smallest feasible peak memory and the
unconstrained optimum's for the latency/memory trade-off.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from ..native_output import lines_dropped
from ..space import DesignSpace
from .base import Budget, Evaluator, Searcher, check_number

# A debugging line HiGHS's MIP solver prints to standard output now and then, whatever its output options
HIGHS_DEBUG_LINE = re.compile(rb"^HighsMipSolverData::\w+ tmpSolver\.run\(\);\s*$")


class _Program:
    """The ILP of one space, built once and solved under different objectives and bounds."""

    def __init__(self, space: DesignSpace) -> None:
        self.offsets = np.cumsum([0] + space.sizes)
        n_x = int(self.offsets[-1])
        options = [o for node in space.nodes for o in node.options]
        latency = np.array([o.latency_ms for o in options])
        weights = np.array([o.weight_bytes for o in options], dtype=float)
        workspace = np.array([o.workspace_bytes for o in options], dtype=float)
        self.live = space.live_bytes()

        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        lower: list[float] = []
        upper: list[float] = []

        def add_row(entries: list[tuple[int, float]], low: float, high: float) -> int:
            for col, value in entries:
                rows.append(len(lower))
                cols.append(col)
                values.append(value)
            lower.append(low)
            upper.append(high)
            return len(lower) - 1

        for l in range(len(space.nodes)):
            add_row([(c, 1.0) for c in range(self.offsets[l], self.offsets[l + 1])], 1.0, 1.0)
        pair_costs: list[float] = []
        for edge in space.edges:
            pairs: dict[tuple[int, int], int] = {}
            for p, row in enumerate(edge.cost):
                for q, cost in enumerate(row):
                    if cost == 0.0:
                        continue
                    if cost < 0:
                        # a negative cost would pull y up to 1 whatever the x: the linearization needs >= 0
                        raise ValueError(f"edge {edge.source}->{edge.target}: conversion cost [{p}][{q}] is "
                                         f"negative ({cost}); the exact solver needs costs >= 0")
                    up, vq = int(self.offsets[edge.source] + p), int(self.offsets[edge.target] + q)
                    if math.isinf(cost):
                        add_row([(up, 1.0), (vq, 1.0)], -np.inf, 1.0)
                    else:
                        pairs[p, q] = n_x + len(pair_costs)
                        add_row([(up, 1.0), (vq, 1.0), (pairs[p, q], -1.0)], -np.inf, 1.0)
                        pair_costs.append(cost)
            self._add_marginal_cuts(add_row, edge.cost, pairs, int(self.offsets[edge.source]),
                                    int(self.offsets[edge.target]))
        n_y = len(pair_costs)
        self.w_col = n_x + n_y
        for l in range(len(space.nodes)):
            entries = [(c, workspace[c]) for c in range(self.offsets[l], self.offsets[l + 1]) if workspace[c]]
            if entries:
                add_row(entries + [(self.w_col, -1.0)], -np.inf, 0.0)
        # rows whose bounds change between solves: memory (weights + W), latency (nodes + conversions)
        self.memory_row = add_row([(c, weights[c]) for c in range(n_x) if weights[c]] + [(self.w_col, 1.0)],
                                  -np.inf, np.inf)
        self.latency_row = add_row([(c, latency[c]) for c in range(n_x) if math.isfinite(latency[c])]
                                   + [(n_x + k, cost) for k, cost in enumerate(pair_costs)], -np.inf, np.inf)
        losses = [(c, option.accuracy_loss) for c, option in enumerate(o for node in space.nodes for o in node.options)
                  if option.accuracy_loss]
        self.accuracy_row = add_row(losses, -np.inf, np.inf) if losses else None

        n = self.w_col + 1
        self.matrix = coo_array((values, (rows, cols)), shape=(len(lower), n)).tocsr()
        self.lower, self.upper = np.array(lower), np.array(upper)
        self.integrality = np.concatenate([np.ones(n_x), np.zeros(n_y + 1)])
        # options that cost infinite latency can never be chosen
        x_upper = np.where(np.isfinite(latency), 1.0, 0.0)
        self.bounds = Bounds(np.zeros(n), np.concatenate([x_upper, np.ones(n_y), [np.inf]]))
        self.latency_objective = np.concatenate([np.where(np.isfinite(latency), latency, 0.0), pair_costs, [0.0]])
        self.memory_objective = np.concatenate([weights, np.zeros(n_y), [1.0]])

    @staticmethod
    def _add_marginal_cuts(add_row: Any, cost: list[list[float]], pairs: dict[tuple[int, int], int],
                           source: int, target: int) -> None:
        """Valid inequalities that tighten the LP relaxation (the pair rows alone let it put every y at 0).

        If the consumer takes option q, the producer's option is free to convert from (zero cost), or
        impossible, or one of the positive pairs, whose y is then 1: sum_p y[p,q] >= x[v,q] - sum of the
        free x[u,p]. The same holds the other way round for every producer option p.
        """
        rows, cols = len(cost), len(cost[0])
        for q in range(cols):
            positive = [(pairs[p, q], -1.0) for p in range(rows) if (p, q) in pairs]
            if positive:
                free = [(source + p, -1.0) for p in range(rows) if cost[p][q] == 0.0]
                add_row(positive + free + [(target + q, 1.0)], -np.inf, 0.0)
        for p in range(rows):
            positive = [(pairs[p, q], -1.0) for q in range(cols) if (p, q) in pairs]
            if positive:
                free = [(target + q, -1.0) for q in range(cols) if cost[p][q] == 0.0]
                add_row(positive + free + [(source + p, 1.0)], -np.inf, 0.0)

    def solve(self, objective: str, memory_limit: float | None = None, latency_limit: float | None = None,
              time_limit: float | None = None, mip_rel_gap: float = 0.0,
              accuracy_loss_limit: float | None = None) -> tuple[list[int] | None, str, bool]:
        """Minimize "latency" or "memory" under optional bounds: (assignment or None, status, proven optimal)."""
        upper = self.upper.copy()
        if accuracy_loss_limit is not None and self.accuracy_row is not None:
            upper[self.accuracy_row] = accuracy_loss_limit
        if memory_limit is not None:
            # peak memory is an integer number of bytes: flooring the bound keeps solver tolerances harmless
            upper[self.memory_row] = math.floor(memory_limit) - self.live
        if latency_limit is not None:
            upper[self.latency_row] = latency_limit
        options: dict[str, Any] = {"mip_rel_gap": mip_rel_gap}
        if time_limit is not None:
            options["time_limit"] = time_limit
        c = self.latency_objective if objective == "latency" else self.memory_objective
        with lines_dropped(1, HIGHS_DEBUG_LINE):
            result = milp(c, integrality=self.integrality, bounds=self.bounds,
                          constraints=LinearConstraint(self.matrix, self.lower, upper), options=options)
        if result.x is None:
            return None, result.message, False
        assignment = [int(np.argmax(result.x[start:end])) for start, end in zip(self.offsets, self.offsets[1:])]
        return assignment, result.message, result.status == 0


class ExactSearcher(Searcher):
    """The optimal plan (under the memory limit) by integer linear programming with HiGHS.

    Parameters
    ----------
    mip_rel_gap
        Relative optimality gap at which HiGHS may stop; 0 proves optimality.

    Notes
    -----
    One solve, one evaluation (the solution priced through the evaluator). ``budget.max_seconds`` is the
    solver's time limit: when it stops there the best plan found so far is returned with
    ``info["optimal"]`` False.

    Examples
    --------
    >>> from tvm_dse.testing.spaces import chain_space
    >>> result = ExactSearcher().search(chain_space(8))
    >>> result.info["optimal"], result.evaluations
    (True, 1)
    """

    name = "exact"

    def __init__(self, mip_rel_gap: float = 0.0) -> None:
        check_number("mip_rel_gap", mip_rel_gap, low=0.0, high=1.0)
        self.mip_rel_gap = mip_rel_gap

    def default_budget(self, space: DesignSpace) -> Budget:
        return Budget(max_evaluations=1)

    def explore(self, space: DesignSpace, evaluator: Evaluator, rng: np.random.Generator) -> dict[str, Any]:
        assignment, status, optimal = _Program(space).solve(
            "latency", evaluator.memory_limit_bytes, time_limit=evaluator.remaining_seconds,
            mip_rel_gap=self.mip_rel_gap, accuracy_loss_limit=evaluator.accuracy_loss_limit)
        if assignment is None:
            raise evaluator.no_plan(self.name, status)
        evaluator.evaluate(assignment)
        return {"status": status, "optimal": optimal, "solves": 1}


# Latencies closer than this (relative) are one latency to the Pareto front: below solver tolerances.
_TIE = 1e-9
# relative slack on the smallest memory bound of a Pareto sweep (see pareto_front)
_BOUND_SLACK = 1e-6


@dataclass(frozen=True)
class ParetoPoint:
    """One latency/memory trade-off: a plan no other plan beats on both."""

    cost_ms: float
    peak_memory_bytes: int
    assignment: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"cost_ms": self.cost_ms, "peak_memory_bytes": self.peak_memory_bytes,
                "assignment": list(self.assignment)}


def pareto_front(space: DesignSpace, points: int = 10, time_limit: float | None = None) -> list[ParetoPoint]:
    """The latency/peak-memory Pareto front, by sweeping the memory bound of the exact solver.

    The bound goes in ``points`` even steps from the smallest feasible peak memory to the peak memory of
    the unconstrained optimum. Each step takes the fastest plan within the bound, then the plan of least
    memory among the equally fast ones (so no returned plan is beaten on memory at equal latency).

    Parameters
    ----------
    space
        The design space (not modified).
    points
        Memory bounds to sweep (at least 2: the two ends); the front may have fewer distinct plans.
    time_limit
        Seconds per solve; ``None`` for none (a solve stopped by it may make a point not quite optimal).

    Returns
    -------
    list of ParetoPoint
        By increasing memory and strictly decreasing latency.

    Raises
    ------
    ValueError
        If no plan has a finite cost.
    """
    check_number("points", points, integer=True, low=2)
    if time_limit is not None:
        check_number("time_limit", time_limit, low=0, low_open=True)
    program = _Program(space)

    def fastest_within(memory: float | None) -> ParetoPoint:
        assignment, status, _ = program.solve("latency", memory_limit=memory, time_limit=time_limit)
        if assignment is None:
            raise ValueError(f"no plan of finite cost within {memory} bytes: {status}")
        cost = space.cost(assignment)
        # the latency bound allows for the solver's tolerances; a plan it lets through that is slower in
        # fact (by rounding) is not equally fast
        leanest, _, _ = program.solve("memory", memory_limit=memory, latency_limit=cost + _TIE * max(1.0, cost),
                                      time_limit=time_limit)
        chosen = leanest if leanest is not None and space.cost(leanest) <= cost else assignment
        return ParetoPoint(space.cost(chosen), space.peak_memory(chosen), chosen)

    leanest = leanest_plan(space, time_limit, program)
    fastest = fastest_within(None)
    # The solver may call a bound of exactly the leanest plan's memory infeasible (its tolerances, with
    # coefficients in bytes: seen at ~600 MB): start just above it.
    low = space.peak_memory(leanest) * (1 + _BOUND_SLACK)
    sweep = [fastest_within(bound) for bound in np.linspace(low, max(low, fastest.peak_memory_bytes), points)[:-1]]
    front: list[ParetoPoint] = []
    for point in sorted(sweep + [fastest], key=lambda p: (p.peak_memory_bytes, p.cost_ms)):
        if not front or point.cost_ms < front[-1].cost_ms - _TIE * max(1.0, front[-1].cost_ms):
            front.append(point)
    return front


def leanest_plan(space: DesignSpace, time_limit: float | None = None, program: "_Program | None" = None) -> list[int]:
    """The plan of least peak memory (whatever its latency) among those of finite cost; ValueError if none."""
    leanest, status, _ = (program or _Program(space)).solve("memory", time_limit=time_limit)
    if leanest is None:
        raise ValueError(f"no plan of finite cost: {status}")
    return leanest
