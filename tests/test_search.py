"""Graph-level searchers on synthetic design spaces: exact optimum against brute force, Q-learning against the
exact optimum, memory bounds, the Pareto front, the contract checks on every registered searcher, errors."""

import ast
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tvm_dse.search import (Budget, BudgetExhausted, Evaluator, ExactSearcher, NoFeasiblePlan, QLearningSearcher,
                            Searcher, best_plans, compare, complete_plan, default_budget, get_searcher,
                            greedy_assignment, pareto_front, register_searcher, searcher_names, uniform_assignments,
                            uniform_plans)
from tvm_dse.search.base import RUNNERS_UP
from tvm_dse.space import DesignSpace, Edge, Option, SpaceNode
from tvm_dse.testing import parametrize_with_checks
from tvm_dse.testing.spaces import (SMALL_SPACES, brute_force_optimum, chain_space, enumerate_plans, memory_limits,
                                    plan_losses, residual_space, with_accuracy_losses)

SEARCH_PACKAGE = Path(__file__).resolve().parents[1] / "tvm_dse" / "search"

# the sizes the default Q-learning budget is promised for
FULL_SPACES = {
    "chain20": lambda: chain_space(20, seed=0),
    "resnet18": lambda: residual_space(seed=0),
    "resnet18_infeasible": lambda: residual_space(seed=11, infeasible=0.4),
}


@pytest.fixture(scope="module", params=list(SMALL_SPACES))
def small_space(request):
    return SMALL_SPACES[request.param]()


# ---------------------------------------------------------------- the synthetic spaces themselves

def test_generators_are_deterministic_and_shaped_like_resnet18():
    space = residual_space(seed=3)
    assert space.to_dict() == residual_space(seed=3).to_dict()
    assert space.to_dict() != residual_space(seed=4).to_dict()
    kinds = [node.kind for node in space.nodes]
    assert sum(node.is_tunable for node in space.nodes) == 21 and kinds.count("join") == 8
    assert all(4 <= len(node.options) <= 8 for node in space.nodes if node.kind == "conv2d")
    joins = [node for node in space.nodes if node.kind == "join"]
    assert all(len(join.inputs) == 2 and all(o.latency_ms == 0 for o in join.options) for join in joins)
    # conversions cost something somewhere, and nothing where layouts agree
    assert any(c > 0 for edge in space.edges for row in edge.cost for c in row)
    for edge in space.edges:
        producer, consumer = space.nodes[edge.source], space.nodes[edge.target]
        for p, row in enumerate(edge.cost):
            for q, cost in enumerate(row):
                same = producer.options[p].output_layout == consumer.options[q].input_layout
                assert (cost == 0) == same
    chain = chain_space(20, seed=1)
    assert [node.kind for node in chain.nodes] == ["input"] + ["conv2d"] * 20 + ["output"]


def test_brute_force_rejects_large_spaces():
    with pytest.raises(ValueError, match="brute-force limit"):
        enumerate_plans(residual_space())


def test_design_space_save_load_round_trip(tmp_path):
    space = residual_space((1, 1), seed=2, infeasible=0.5)
    assert any(math.isinf(c) for edge in space.edges for row in edge.cost for c in row)
    loaded = DesignSpace.load(space.save(tmp_path / "nested" / "space.json"))
    assert loaded.to_dict() == space.to_dict()
    plan = greedy_assignment(space)
    assert loaded.cost(plan) == space.cost(plan) and loaded.peak_memory(plan) == space.peak_memory(plan)


def test_what_no_choice_changes_adds_to_every_plan_and_survives_saving_and_restriction(tmp_path):
    space = residual_space((1, 1), seed=2)
    plan = greedy_assignment(space)
    fixed = space.repriced(lambda node, option: option, fixed_ms=1.5)
    assert fixed.cost(plan) == pytest.approx(space.cost(plan) + 1.5)
    assert DesignSpace.load(fixed.save(tmp_path / "space.json")).cost(plan) == fixed.cost(plan)
    restricted = fixed.restricted(lambda node, option: True)
    assert restricted.fixed_ms == 1.5 and restricted.cost(plan) == fixed.cost(plan)
    # the searchers' choice is the same: a constant moves every plan alike
    assert ExactSearcher().search(fixed).assignment == ExactSearcher().search(space).assignment
    doubled = space.repriced(lambda node, option: replace(option, latency_ms=2 * option.latency_ms), fixed_ms=0.0)
    assert doubled.node_cost(plan) == pytest.approx(2 * space.node_cost(plan))
    assert doubled.transform_cost(plan) == space.transform_cost(plan)


def test_outgoing_and_live_bytes_agree_with_the_space():
    space = residual_space((1, 1), seed=0)
    outgoing = space.outgoing()
    assert sorted((e.source, e.target) for edges in outgoing for e in edges) == sorted(
        (e.source, e.target) for e in space.edges)
    assert all(e.source == i for i, edges in enumerate(outgoing) for e in edges)
    plan = [0] * len(space.nodes)
    options = [node.options[0] for node in space.nodes]
    assert space.peak_memory(plan) == (sum(o.weight_bytes for o in options) + max(o.workspace_bytes for o in options)
                                       + space.live_bytes())


# ---------------------------------------------------------------- the exact solver

def test_exact_finds_the_brute_force_optimum(small_space):
    expected, _ = brute_force_optimum(small_space)
    result = ExactSearcher().search(small_space)
    assert result.info["optimal"] and result.evaluations == 1
    assert result.cost_ms == pytest.approx(expected, rel=1e-9)


def test_the_solvers_debugging_lines_on_standard_output_are_dropped_and_the_rest_kept(monkeypatch, capfd):
    """HiGHS prints a debugging line to file descriptor 1 now and then (from C++, past Python's streams)."""
    import os

    from tvm_dse.search import exact

    solve = exact.milp

    def printing(*args, **kwargs):
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
        os.write(1, b"a line of another library\n")
        return solve(*args, **kwargs)

    monkeypatch.setattr(exact, "milp", printing)
    space = chain_space(6, seed=0, options=(2, 3))
    expected, _ = brute_force_optimum(space)
    assert ExactSearcher().search(space).cost_ms == pytest.approx(expected, rel=1e-9)
    out = capfd.readouterr().out
    assert "HighsMipSolverData" not in out and "a line of another library" in out


def test_exact_under_a_memory_bound_is_the_brute_force_bounded_optimum(small_space):
    for limit in memory_limits(small_space):
        expected, _ = brute_force_optimum(small_space, limit)
        unbounded, _ = brute_force_optimum(small_space)
        result = ExactSearcher().search(small_space, memory_limit_bytes=limit)
        assert result.peak_memory_bytes <= limit
        assert result.cost_ms == pytest.approx(expected, rel=1e-9)
        assert expected >= unbounded


def test_exact_under_an_accuracy_bound_is_the_brute_force_bounded_optimum(small_space):
    space = with_accuracy_losses(small_space)
    costs, losses = plan_losses(space)
    unbounded_loss = float(losses[int(np.argmin(costs))])
    assert unbounded_loss > 0  # so half of it binds
    for limit in (0.0, unbounded_loss / 2):
        expected = float(np.min(np.where(losses <= limit + 1e-12, costs, math.inf)))
        if math.isinf(expected):
            with pytest.raises(NoFeasiblePlan, match="losing at most"):
                ExactSearcher().search(space, accuracy_loss_limit=limit)
            continue
        result = ExactSearcher().search(space, accuracy_loss_limit=limit)
        assert space.accuracy_loss(result.assignment) <= limit + 1e-9
        assert result.cost_ms == pytest.approx(expected, rel=1e-9)
        assert result.cost_ms > float(np.min(costs))


def test_exact_raises_when_no_plan_fits_the_memory_bound(small_space):
    _, _, memories = enumerate_plans(small_space)
    with pytest.raises(NoFeasiblePlan, match="within"):
        ExactSearcher().search(small_space, memory_limit_bytes=float(memories.min()) - 1)


def _assert_pareto_optimal(space, front):
    """Every point is a plan of the space that no plan beats on both latency and memory, in monotone order,
    and the front reaches from the leanest plan's memory to the unconstrained optimum's latency."""
    _, costs, memories = enumerate_plans(space)
    finite = np.isfinite(costs)
    costs, memories = costs[finite], memories[finite]
    # monotone: more memory buys strictly less latency
    assert all(a.peak_memory_bytes < b.peak_memory_bytes and a.cost_ms > b.cost_ms for a, b in zip(front, front[1:]))
    for point in front:
        assert space.cost(point.assignment) == point.cost_ms
        assert space.peak_memory(point.assignment) == point.peak_memory_bytes
        tol = 1e-9 * point.cost_ms
        dominating = ((costs <= point.cost_ms + tol) & (memories <= point.peak_memory_bytes)
                      & ((costs < point.cost_ms - tol) | (memories < point.peak_memory_bytes)))
        assert not dominating.any(), f"{point} is dominated"
    assert front[0].peak_memory_bytes == memories.min()
    assert front[-1].cost_ms == pytest.approx(costs.min(), rel=1e-9)


def test_pareto_front_is_non_dominated_monotone_and_spans_the_trade_off(small_space):
    _assert_pareto_optimal(small_space, pareto_front(small_space, points=6))


def test_pareto_front_takes_the_leanest_of_equally_fast_plans():
    def options():
        return [Option("heavy_tie", 1.0, "NCHW", "NCHW", 100), Option("light_tie", 1.0, "NCHW", "NCHW", 50),
                Option("slow", 2.0, "NCHW", "NCHW", 10), Option("fast", 0.5, "NCHW", "NCHW", 400)]

    nodes = [SpaceNode("a", "conv2d", options()), SpaceNode("b", "conv2d", options(), [0])]
    space = DesignSpace("ties", "synthetic", nodes, [Edge(0, 1, [[0.0] * 4 for _ in range(4)])])
    # bounds at 20, 280, 540 and 800 bytes: 280 admits both ties at 2 ms (100 and 200 bytes)
    front = pareto_front(space, points=4)
    _assert_pareto_optimal(space, front)
    assert (2.0, 100) in [(p.cost_ms, p.peak_memory_bytes) for p in front]


def test_pareto_front_of_a_measured_vgg16_space():
    """The leanest plan of VGG-16 needs 592 MB; a memory bound of exactly that, in bytes, is infeasible to
    the solver's tolerances, so the sweep starts just above it."""
    space = DesignSpace.load(Path(__file__).with_name("data") / "vgg16_host_space.json")
    front = pareto_front(space)
    assert len(front) >= 2
    with pytest.raises(NoFeasiblePlan):  # the front starts at the leanest plan
        ExactSearcher().search(space, memory_limit_bytes=front[0].peak_memory_bytes * (1 - 1e-4))
    assert all(a.peak_memory_bytes < b.peak_memory_bytes and a.cost_ms > b.cost_ms for a, b in zip(front, front[1:]))
    assert front[-1].cost_ms == pytest.approx(ExactSearcher().search(space).cost_ms, rel=1e-9)


def test_pareto_front_needs_two_points():
    with pytest.raises(ValueError, match="points"):
        pareto_front(chain_space(5), points=1)


# ---------------------------------------------------------------- Q-learning and the baselines

@pytest.fixture(scope="module", params=list(FULL_SPACES))
def full_space(request):
    space = FULL_SPACES[request.param]()
    return space, ExactSearcher().search(space).cost_ms


def test_qlearning_default_budget_reaches_2_percent_of_the_optimum(full_space):
    space, optimum = full_space
    for seed in range(3):
        result = QLearningSearcher().search(space, seed=seed)
        assert result.evaluations == default_budget(space).max_evaluations == result.info["episodes"]
        assert result.cost_ms <= optimum * 1.02, f"seed {seed}: {100 * (result.cost_ms / optimum - 1):.2f}% gap"


def test_qlearning_beats_random_search_at_the_same_budget():
    space = residual_space(seed=2)
    budget = Budget(max_evaluations=2000)
    assert (QLearningSearcher().search(space, budget, seed=0).cost_ms
            < get_searcher("random").search(space, budget, seed=0).cost_ms)


def test_greedy_loses_to_exact_when_conversions_are_costly():
    space = chain_space(20, seed=0, conversion_ms_per_mib=4.0)
    greedy, exact = get_searcher("greedy").search(space), ExactSearcher().search(space)
    assert greedy.cost_ms > exact.cost_ms * 1.05
    # each node alone greedy's choice is the fastest: what it loses is in the conversions
    assert space.node_cost(greedy.assignment) <= space.node_cost(exact.assignment)
    assert space.transform_cost(greedy.assignment) > space.transform_cost(exact.assignment)


def test_complete_plan_gives_joins_their_cheapest_layout():
    space = residual_space((1, 1), seed=0)
    plan = greedy_assignment(space)
    incoming, outgoing = space.incoming(), space.outgoing()
    for index, node in enumerate(space.nodes):
        if node.is_tunable:
            assert plan[index] == min(range(len(node.options)), key=lambda i: node.options[i].latency_ms)
        else:
            def around(option):
                fixed_consumers = [e for e in outgoing[index] if space.nodes[e.target].is_tunable]
                return (sum(e.cost[plan[e.source]][option] for e in incoming[index])
                        + sum(e.cost[option][plan[e.target]] for e in fixed_consumers))
            assert around(plan[index]) == min(around(o) for o in range(len(node.options)))
    with pytest.raises(ValueError, match="one entry per node"):
        complete_plan(space, [None])


def test_uniform_plans_use_their_strategy_wherever_it_exists():
    space = residual_space(seed=1)
    plans = uniform_plans(space)
    assert [p.cost_ms for p in plans] == sorted(p.cost_ms for p in plans)
    assert {p.name for p in plans} == {o.name for n in space.nodes if n.is_tunable for o in n.options}
    for name, plan in uniform_assignments(space).items():
        for node, choice in zip(space.nodes, plan):
            names = [o.name for o in node.options]
            if node.is_tunable and name in names:
                assert node.options[choice].name == name
    result = get_searcher("uniform").search(space)
    assert result.cost_ms == plans[0].cost_ms
    assert result.info["plans"] == {p.name: p.cost_ms for p in plans}
    # the winner is the strategy that is fastest on most nodes here, not the reference one
    assert result.cost_ms < result.info["plans"]["direct_nchw"]


# ---------------------------------------------------------------- the contract checks on every registered searcher

@parametrize_with_checks([get_searcher(name) for name in searcher_names()])
def test_contract(obj, check):
    check(obj)


def test_qlearning_finds_the_bounded_optimum_of_a_residual_network():
    space = residual_space(seed=3)
    unbounded = ExactSearcher().search(space)
    limit = 0.85 * unbounded.peak_memory_bytes
    bounded = ExactSearcher().search(space, memory_limit_bytes=limit)
    assert bounded.cost_ms > unbounded.cost_ms  # the bound binds
    result = QLearningSearcher().search(space, memory_limit_bytes=limit, seed=0)
    assert result.peak_memory_bytes <= limit
    assert result.cost_ms <= bounded.cost_ms * 1.02


def test_a_time_budget_stops_the_search():
    space = residual_space(seed=0)
    start = time.perf_counter()
    result = get_searcher("random").search(space, Budget(max_evaluations=None, max_seconds=0.3), seed=0)
    assert 0.3 <= result.seconds < 1.0 and time.perf_counter() - start < 1.5
    assert result.evaluations > 10


def test_the_time_budget_reaches_the_exact_solver():
    space = residual_space(seed=0)
    # a millisecond is not enough to find any plan: the solver's own status says why there is none
    with pytest.raises(NoFeasiblePlan, match="Time limit"):
        ExactSearcher().search(space, Budget(max_evaluations=1, max_seconds=0.001))
    assert ExactSearcher().search(space, Budget(max_evaluations=1, max_seconds=30.0)).info["optimal"]


def test_evaluator_enforces_the_evaluation_budget():
    space = chain_space(5)
    evaluator = Evaluator(space, Budget(max_evaluations=2))
    plan = [0] * len(space.nodes)
    evaluator.evaluate(plan)
    assert not evaluator.exhausted and evaluator.remaining_evaluations == 1
    evaluator.evaluate(plan)
    assert evaluator.exhausted and evaluator.progress == 1.0
    with pytest.raises(BudgetExhausted):
        evaluator.evaluate(plan)


@pytest.mark.parametrize("name", ["qlearning", "exact"])
def test_search_progress_reaches_the_whole_budget_with_the_best_cost(name, capsys):
    space = residual_space(seed=0)
    result = get_searcher(name).search(space, seed=0, show_progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith(f"searching with {name} (% of budget) [") for line in lines)
    assert "100/100" in lines[-1] and f"best {result.cost_ms:.3f} ms" in lines[-1]
    get_searcher(name).search(space, seed=0)
    assert capsys.readouterr().err == ""  # silent by default


def test_searchers_that_look_at_conversions_find_a_plan_on_a_small_budget():
    space = residual_space(seed=10, infeasible=0.6)
    assert math.isfinite(get_searcher("qlearning").search(space, Budget(max_evaluations=50), seed=0).cost_ms)
    assert math.isfinite(get_searcher("exact").search(space).cost_ms)


# ---------------------------------------------------------------- registry, comparison, interface

def test_registry_names_aliases_and_plugins(monkeypatch):
    import tvm_dse.search as search

    # the plug-in registered below must not outlive this test
    monkeypatch.setattr(search, "_SEARCHERS", dict(search._SEARCHERS))
    monkeypatch.setattr(search, "_ALIASES", dict(search._ALIASES))
    assert searcher_names()[:5] == ["qlearning", "exact", "greedy", "random", "uniform"]
    assert isinstance(get_searcher("ilp"), ExactSearcher)
    assert get_searcher("qlearning", learning_rate=0.05).get_params()["learning_rate"] == 0.05
    assert "learning_rate=0.05" in repr(get_searcher("qlearning", learning_rate=0.05))

    class FirstOptions(Searcher):
        name = "first_options_test"

        def explore(self, space, evaluator, rng):
            evaluator.evaluate([0] * len(space.nodes))
            return {}

    register_searcher(FirstOptions, "first_test")
    assert get_searcher("first_test").search(chain_space(4)).assignment == [0] * 6
    with pytest.raises(ValueError, match="already registered"):
        register_searcher(FirstOptions)


def test_compare_runs_every_searcher_at_one_budget():
    space = residual_space(seed=1)
    rows = compare(space, ["exact", "greedy", "uniform", "random", QLearningSearcher()],
                   Budget(max_evaluations=1500), seed=0)
    assert [row["searcher"] for row in rows] == ["exact", "greedy", "uniform", "random", "qlearning"]
    by_name = {row["searcher"]: row for row in rows}
    assert by_name["exact"]["gap_percent"] == 0.0
    assert all(row["gap_percent"] >= 0 and row["evaluations"] <= 1500 and row["error"] is None for row in rows)
    assert by_name["qlearning"]["gap_percent"] < by_name["random"]["gap_percent"]
    qlearning = by_name["qlearning"]
    assert qlearning["history"][-1] == [1500, qlearning["seconds"], qlearning["cost_ms"]]
    json.dumps(rows)
    # without an exact searcher the optimum is solved for the gap anyway; a failure is a row, not a crash
    limit = ExactSearcher().search(space).peak_memory_bytes * 0.8
    rows = compare(space, ["greedy", "qlearning"], Budget(max_evaluations=800), seed=0, memory_limit_bytes=limit)
    greedy, qlearning = rows
    assert greedy["error"] is not None and math.isinf(greedy["gap_percent"])
    assert qlearning["error"] is None and qlearning["gap_percent"] >= 0


def test_search_package_imports_no_tvm():
    # tvm_dse/__init__.py imports TVM, so importing the package proves nothing: read the import statements
    modules = sorted(SEARCH_PACKAGE.glob("*.py")) + [SEARCH_PACKAGE.parent / "space.py",
                                                      SEARCH_PACKAGE.parent / "progress.py",
                                                      SEARCH_PACKAGE.parent / "native_output.py",
                                                      SEARCH_PACKAGE.parent / "testing" / "spaces.py"]
    assert len(modules) >= 9
    allowed_relative = {"space", "progress", "native_output", "base", "baselines", "exact", "qlearning"}
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    # inside the package, the space, the progress lines and the solver's output filter only:
                    # nothing that reaches TVM
                    assert (node.module or "").split(".")[-1] in allowed_relative, f"{path.name}: {node.module}"
                    continue
                names = [node.module]
            else:
                continue
            roots = {name.split(".")[0] for name in names}
            assert not roots & {"tvm", "tvm_ffi", "tvm_dse"}, f"{path.name}: {names}"


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_evaluations": 0}, ValueError, "max_evaluations"),
    ({"max_evaluations": -5}, ValueError, "max_evaluations"),
    ({"max_evaluations": 2.5}, TypeError, "max_evaluations must be an integer"),
    ({"max_evaluations": "100"}, TypeError, "max_evaluations"),
    ({"max_evaluations": True}, TypeError, "max_evaluations"),
    ({"max_seconds": 0}, ValueError, "max_seconds"),
    ({"max_seconds": -1.0}, ValueError, "max_seconds"),
    ({"max_seconds": math.inf}, ValueError, "finite"),
    ({"max_seconds": math.nan}, ValueError, "NaN"),
    ({"max_evaluations": None, "max_seconds": None}, ValueError, "both are None"),
])
def test_bad_budgets_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        Budget(**kwargs)


def test_budget_defaults():
    assert Budget().max_evaluations is None and Budget().max_seconds == 60.0
    assert Budget(max_evaluations=10).to_dict() == {"max_evaluations": 10, "max_seconds": 60.0}


@pytest.mark.parametrize("params, error, match", [
    ({"learning_rate": 0}, ValueError, r"learning_rate must be in \(0"),
    ({"learning_rate": 1.5}, ValueError, "learning_rate"),
    ({"learning_rate": "fast"}, TypeError, "learning_rate must be a number"),
    ({"discount": 1.1}, ValueError, "discount"),
    ({"epsilon_start": -0.1}, ValueError, "epsilon_start"),
    ({"epsilon_start": 0.2, "epsilon_end": 0.5}, ValueError, "must not exceed"),
    ({"replay_batch": -1}, ValueError, "replay_batch"),
    ({"replay_batch": 1.0}, TypeError, "replay_batch must be an integer"),
    ({"replay_memory": 0}, ValueError, "replay_memory"),
])
def test_bad_qlearning_hyperparameters_are_clear_errors(params, error, match):
    with pytest.raises(error, match=match):
        get_searcher("qlearning", **params)


def test_bad_names_parameters_and_search_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown searcher 'annealing'.*qlearning, exact, greedy, random, uniform"):
        get_searcher("annealing")
    with pytest.raises(ValueError, match="takes no parameter 'alpha'; it takes: learning_rate"):
        get_searcher("qlearning", alpha=0.1)
    with pytest.raises(ValueError, match="takes no parameter 'seed'; it takes: none"):
        get_searcher("greedy", seed=1)
    with pytest.raises(ValueError, match="mip_rel_gap"):
        get_searcher("exact", mip_rel_gap=-1.0)
    space = chain_space(4)
    searcher = get_searcher("random")
    with pytest.raises(TypeError, match="space must be a DesignSpace"):
        searcher.search(space.to_dict())
    with pytest.raises(TypeError, match="budget must be a Budget"):
        searcher.search(space, 100)
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        searcher.search(space, memory_limit_bytes=0)
    with pytest.raises(ValueError, match="seed"):
        searcher.search(space, seed=-1)


@pytest.mark.parametrize("searcher", ["qlearning", "exact"])
def test_the_best_plans_of_a_search_are_distinct_within_the_limits_and_cheapest_first(searcher):
    space = chain_space(5, seed=3)
    limit = memory_limits(space)[1]
    result = get_searcher(searcher).search(space, memory_limit_bytes=limit, seed=0)
    assert result.assignment not in result.runners_up and len(result.runners_up) <= RUNNERS_UP
    runner_costs = [space.cost(plan) for plan in result.runners_up]
    assert runner_costs == sorted(runner_costs) and all(cost >= result.cost_ms for cost in runner_costs)
    plans = best_plans(space, result, 4, memory_limit_bytes=limit)
    costs = [space.cost(plan) for plan in plans]
    assert len(plans) == 4 and len({tuple(plan) for plan in plans}) == 4 and result.assignment in plans
    assert costs == sorted(costs) and costs[0] <= result.cost_ms and max(costs) < math.inf
    assert all(space.peak_memory(plan) <= limit for plan in plans)
