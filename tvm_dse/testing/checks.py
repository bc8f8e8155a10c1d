"""The contract every strategy and every searcher must honour, as checks a third party can run on its own.

:func:`tvm_dse.strategies.register` and :func:`tvm_dse.search.register_searcher` take plug-ins; these are the
checks tvm_dse's own strategies and searchers pass, shipped so that a plug-in is held to the same ones (as
scikit-learn's ``check_estimator`` holds estimators). Each check is a plain function ``check_xxx(obj)``
(a strategy's also takes the target) listed in :data:`STRATEGY_CHECKS` or :data:`SEARCHER_CHECKS`; it
returns nothing and raises ``AssertionError`` on a breach.

A strategy is checked on a target this machine can run (the host by default): its kernels are built and
run against the float64 reference of :mod:`tvm_dse.testing.conformance` on every case of that suite. A
searcher is checked on the small synthetic spaces of :mod:`tvm_dse.testing.spaces`, against brute force.
Both must be registered (the registry is part of the contract).

Examples
--------
Every check on one object, stopping at the first that fails (its name in the error):

>>> from tvm_dse.strategies import get_strategy
>>> from tvm_dse.search import get_searcher
>>> from tvm_dse.testing import check_searcher, check_strategy
>>> check_strategy(get_strategy("my_conv"))  # doctest: +SKIP
>>> check_searcher(get_searcher("my_search"))  # doctest: +SKIP

One pytest test per object and check (and per case or space where a check covers several)::

    from tvm_dse.testing import parametrize_with_checks

    @parametrize_with_checks([get_strategy("my_conv"), get_searcher("my_search")])
    def test_contract(obj, check):
        check(obj)
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from tvm import s_tir

from ..layouts import Layout
from ..search import Budget, NoFeasiblePlan, SearchResult, Searcher, get_searcher
from ..space import INFEASIBLE, DesignSpace, Edge, Option, SpaceNode
from ..strategies import Strategy, build_kernel, get_strategy
from ..strategies.base import MAIN_BLOCK, PRECISIONS, Decider
from ..strategies.kernel import kernel_prim_func
from ..target import DseTarget, TargetLike, parse_target
from ..validation import relative_error
from . import conformance
from .conformance import CASES, Case, bound, input_quant, random_operands, strategy_reference
from .spaces import SMALL_SPACES, memory_limits, plan_losses, residual_space, with_accuracy_losses

if TYPE_CHECKING:
    import pytest

__all__ = ["SEARCHER_CHECKS", "STRATEGY_CHECKS", "check_searcher", "check_strategy", "parametrize_with_checks"]


def _target(target: TargetLike | None) -> DseTarget:
    return parse_target("host" if target is None else target)


def _first_case(strategy: Strategy, target: DseTarget, residual: bool = False) -> Case:
    """The first conformance case ``strategy`` applies to on ``target`` (with a residual input if asked)."""
    case = next((c for c in CASES if strategy.applies(c.workload, target) and (c.epilogue.residual or not residual)),
                None)
    assert case is not None, f"{strategy.name} applies to no case{' with a residual input' * residual}"
    return case


# ---------------------------------------------------------------- strategies

def check_exercised_by_the_suite(strategy: Strategy, target: TargetLike | None = None) -> None:
    """The strategy applies to at least one conformance case, so the suite checks its numbers."""
    target = _target(target)
    assert any(strategy.applies(c.workload, target) for c in CASES), f"{strategy.name} applies to no case"


def check_conformance(strategy: Strategy, target: TargetLike | None = None, *,
                      cases: Sequence[Case] = CASES) -> None:
    """On every case, the strategy's kernel with its default decisions matches the reference within
    :func:`~tvm_dse.testing.conformance.bound`, or the strategy declines the case with a reason."""
    target = _target(target)
    for case in cases:
        outcome = conformance.case_error(strategy, case, target)
        if isinstance(outcome, str):
            assert outcome, f"{strategy.name} declined {case.id} without a reason"
        else:
            assert outcome <= bound(strategy, target), f"{strategy.name} on {case.id}: relative error {outcome:.2e}"


def check_sampled_decisions(strategy: Strategy, target: TargetLike | None = None, *,
                            cases: Sequence[Case] = CASES) -> None:
    """The schedule is a tuning space: decisions drawn at random (as MetaSchedule draws them) compute the
    same result on every case the strategy applies to, unit-sized tiles included.

    ``cases`` is a selection of :data:`~tvm_dse.testing.conformance.CASES`: each case's position there
    seeds its draw.
    """
    target = _target(target)
    for case in cases:
        if not strategy.applies(case.workload, target):
            continue
        operands = random_operands(case.workload, case.epilogue)
        reference = strategy_reference(strategy, target, **operands, workload=case.workload, epilogue=case.epilogue)
        sampled = build_kernel(strategy, case.workload, target, case.epilogue, sample_seed=1 + CASES.index(case),
                               quant=input_quant(strategy, operands["data"]))
        assert relative_error(sampled.run(**operands), reference) <= bound(strategy, target), (
            f"{strategy.name} on {case.id} with the sampled decisions {sampled.decisions}")


def check_decisions_replay(strategy: Strategy, target: TargetLike | None = None) -> None:
    """The decisions a build records rebuild exactly the same kernel."""
    target = _target(target)
    case = _first_case(strategy, target)
    operands = random_operands(case.workload, case.epilogue)
    for seed in (1, 2):
        sampled = build_kernel(strategy, case.workload, target, case.epilogue, sample_seed=seed)
        replayed = build_kernel(strategy, case.workload, target, case.epilogue, decisions=sampled.decisions)
        assert replayed.decisions == sampled.decisions, (
            f"{strategy.name} on {case.id}: recorded {sampled.decisions}, replayed {replayed.decisions}")
        np.testing.assert_array_equal(replayed.run(**operands), sampled.run(**operands),
                                      err_msg=f"{strategy.name} on {case.id} replaying {sampled.decisions}")


def check_epilogue_fused(strategy: Strategy, target: TargetLike | None = None) -> None:
    """The epilogue (bias, residual add, clip) is computed in place on the main block's register tile, by
    one output stage."""
    target = _target(target)
    case = _first_case(strategy, target, residual=True)
    sch = s_tir.Schedule(kernel_prim_func(strategy, case.workload, target, case.epilogue))
    strategy.schedule(sch, case.workload, target, Decider(sch, {}))
    script = sch.mod.script()
    # the main block's accumulator is a register tile, consumed in place by the fused epilogue
    assert re.search(rf'\b{MAIN_BLOCK}\w* = T.sblock_alloc_buffer\([^\n]*scope="local"\)', script), (
        f"{strategy.name} on {case.id}: the {MAIN_BLOCK!r} block does not accumulate in a local buffer")
    stages = [name for name in ("T_add_bias", "T_add_residual", "T_relu", "T_clip") if f'T.sblock("{name}")' in script]
    # the last epilogue stage writes the output, the others inlined into it
    assert len(stages) == 1, f"{strategy.name} on {case.id}: epilogue stages {stages}, not one"


def check_strategy_registered(strategy: Strategy, target: TargetLike | None = None) -> None:
    """The registry hands out this very object under its name; it reads 8-bit codes exactly when it takes
    its input's quantization, writes fp32, needs no negative workspace and names a known precision."""
    target = _target(target)
    try:
        registered = get_strategy(strategy.name)
    except KeyError as error:
        raise AssertionError(f"{error.args[0]}: register the class with tvm_dse.strategies.register") from None
    assert registered is strategy, f"the registry holds another object under {strategy.name!r}: {registered!r}"
    case = _first_case(strategy, target)
    layouts = strategy.layouts(case.workload, target)
    # int8 strategies read 8-bit codes (quantizing is the conversion before them); every output is fp32
    assert (Layout.parse(layouts.data).dtype == "uint8") == strategy.takes_input_quant, (
        f"{strategy.name} ({strategy.precision}, takes_input_quant={strategy.takes_input_quant}) reads "
        f"{layouts.data}")
    assert Layout.parse(layouts.output).dtype == "float32", f"{strategy.name} writes {layouts.output}"
    assert strategy.workspace_bytes(case.workload, target) >= 0, f"{strategy.name}: negative workspace"
    assert strategy.precision in PRECISIONS, f"{strategy.name}: precision {strategy.precision!r} not in {PRECISIONS}"


STRATEGY_CHECKS: tuple[Callable[..., None], ...] = (
    check_exercised_by_the_suite, check_strategy_registered, check_conformance, check_sampled_decisions,
    check_decisions_replay, check_epilogue_fused,
)


# ---------------------------------------------------------------- searchers

# the spaces of the checks on one plain search: one with impossible conversions, one without
COMMON_SPACES = ("residual11_infeasible", "chain7")
_COMMON_BUDGET = Budget(max_evaluations=300)
_COMMON_SEED = 7
def _common_search(searcher: Searcher, space: DesignSpace) -> SearchResult:
    return searcher.search(space, _COMMON_BUDGET, seed=_COMMON_SEED)


def check_valid_plan(searcher: Searcher, *, spaces: Sequence[str] = COMMON_SPACES) -> None:
    """The result is a plan of the space, priced as the space prices it, and JSON-ready."""
    for name in spaces:
        space = SMALL_SPACES[name]()
        result = _common_search(searcher, space)
        assert isinstance(result, SearchResult), f"on {name}: a {type(result).__name__}, not a SearchResult"
        assert result.searcher == searcher.name, f"on {name}: the result names {result.searcher!r}"
        try:
            space.check(result.assignment)
        except ValueError as error:
            raise AssertionError(f"on {name}: {result.assignment} is not a plan of the space: {error}") from None
        assert result.cost_ms == space.cost(result.assignment) and math.isfinite(result.cost_ms), (
            f"on {name}: cost {result.cost_ms} for a plan of cost {space.cost(result.assignment)}")
        assert result.peak_memory_bytes == space.peak_memory(result.assignment), (
            f"on {name}: peak memory {result.peak_memory_bytes} for a plan of {space.peak_memory(result.assignment)}")
        assert result.seconds > 0, f"on {name}: {result.seconds} seconds"
        assert json.loads(json.dumps(result.to_dict()))["assignment"] == result.assignment, (
            f"on {name}: the assignment does not survive JSON")


def check_budget_respected(searcher: Searcher, *, spaces: Sequence[str] = COMMON_SPACES) -> None:
    """The search prices at least one plan and no more than its budget allows."""
    for name in spaces:
        result = _common_search(searcher, SMALL_SPACES[name]())
        assert 1 <= result.evaluations <= _COMMON_BUDGET.max_evaluations, (
            f"on {name}: {result.evaluations} evaluations for a budget of {_COMMON_BUDGET.max_evaluations}")


def check_convergence_history(searcher: Searcher, *, spaces: Sequence[str] = COMMON_SPACES) -> None:
    """The history is a convergence curve: evaluations and seconds grow, the best cost never rises and it
    ends at the result."""
    for name in spaces:
        result = _common_search(searcher, SMALL_SPACES[name]())
        evaluations, seconds, best = zip(*result.history)
        assert list(evaluations) == sorted(evaluations) and evaluations[-1] == result.evaluations, (
            f"on {name}: evaluations {evaluations} for a search of {result.evaluations}")
        assert all(a >= b for a, b in zip(best, best[1:])) and best[-1] == result.cost_ms, (
            f"on {name}: best costs {best} for a result of {result.cost_ms}")
        assert list(seconds) == sorted(seconds), f"on {name}: seconds {seconds}"


def check_space_unmodified(searcher: Searcher, *, spaces: Sequence[str] = COMMON_SPACES) -> None:
    """The search leaves the space as it found it."""
    for name in spaces:
        space = SMALL_SPACES[name]()
        before = copy.deepcopy(space.to_dict())
        _common_search(searcher, space)
        assert space.to_dict() == before, f"on {name}: the searcher modified the space"


def check_seed_reproducible(searcher: Searcher, *, spaces: Sequence[str] = COMMON_SPACES) -> None:
    """The same seed and an evaluation budget give the same search, from the same instance (which keeps no
    state between searches) or a new one with the same parameters."""
    for name in spaces:
        space = SMALL_SPACES[name]()
        result = _common_search(searcher, space)
        for again in (_common_search(type(searcher)(**searcher.get_params()), space),
                      _common_search(searcher, space)):
            assert (again.assignment, again.evaluations, again.info) == (
                result.assignment, result.evaluations, result.info), f"on {name}: {again} after {result}"
            assert [h[::2] for h in again.history] == [h[::2] for h in result.history], (
                f"on {name}: history {again.history} after {result.history}")


def check_memory_limit(searcher: Searcher, *, spaces: Sequence[str] = tuple(SMALL_SPACES)) -> None:
    """Under a memory limit that binds, the plan fits; only a searcher that ignores memory may find none."""
    for name in spaces:
        space = SMALL_SPACES[name]()
        limit = memory_limits(space, (0.3,))[0]
        try:
            result = searcher.search(space, Budget(max_evaluations=500), memory_limit_bytes=limit, seed=1)
        except NoFeasiblePlan as error:
            assert "memory" in searcher.ignores, f"on {name}: no plan within {limit:.0f} bytes: {error}"
            continue
        assert result.peak_memory_bytes <= limit, f"on {name}: {result.peak_memory_bytes} bytes above {limit:.0f}"
        assert space.peak_memory(result.assignment) <= limit, f"on {name}: the plan needs more than {limit:.0f} bytes"


def check_accuracy_limit(searcher: Searcher, *, spaces: Sequence[str] = tuple(SMALL_SPACES)) -> None:
    """Under an accuracy-loss limit that binds, the plan keeps to it; only a searcher that ignores accuracy
    may find none."""
    for name in spaces:
        space = with_accuracy_losses(SMALL_SPACES[name](), seed=1)
        limit = float(np.quantile(plan_losses(space)[1], 0.3))
        try:
            result = searcher.search(space, Budget(max_evaluations=500), seed=1, accuracy_loss_limit=limit)
        except NoFeasiblePlan as error:
            assert "accuracy" in searcher.ignores, f"on {name}: no plan losing at most {limit:g}: {error}"
            continue
        loss = space.accuracy_loss(result.assignment)
        assert loss <= limit, f"on {name}: the plan loses {loss:g}, more than {limit:g}"


def check_impossible_conversions(searcher: Searcher) -> None:
    """Where some layout conversions are impossible, the plan found has a finite cost; only a searcher that
    ignores conversions may find none."""
    space = residual_space(seed=10, infeasible=0.6)
    assert any(math.isinf(c) for edge in space.edges for row in edge.cost for c in row), "no impossible pair"
    try:
        result = searcher.search(space, Budget(max_evaluations=300), seed=0)
    except NoFeasiblePlan as error:
        assert "conversions" in searcher.ignores, f"no plan found: {error}"
    else:
        assert math.isfinite(result.cost_ms), f"a plan of cost {result.cost_ms}"


def check_no_feasible_plan_raises(searcher: Searcher) -> None:
    """A space without a plan of finite cost is a :class:`~tvm_dse.search.NoFeasiblePlan` error, not an
    infinite result."""
    # two nodes whose only pair of options cannot be converted
    nodes = [SpaceNode("a", "conv2d", [Option("x", 1.0)]), SpaceNode("b", "conv2d", [Option("y", 1.0)], [0])]
    space = DesignSpace("impossible", "synthetic", nodes, [Edge(0, 1, [[INFEASIBLE]])])
    try:
        result = searcher.search(space, Budget(max_evaluations=20), seed=0)
    except NoFeasiblePlan as error:
        assert "no plan of finite cost" in str(error), f"NoFeasiblePlan says {error}"
    else:
        raise AssertionError(f"a space without a finite plan gave {result}")


def check_searcher_registered(searcher: Searcher) -> None:
    """The registry makes a searcher of this class under its name, with the same parameters."""
    try:
        fresh = get_searcher(searcher.name, **searcher.get_params())
    except ValueError as error:
        raise AssertionError(f"{error}: register the class with tvm_dse.search.register_searcher") from None
    assert type(fresh) is type(searcher), f"the registry makes a {type(fresh).__name__} as {searcher.name!r}"
    assert fresh.get_params() == searcher.get_params(), f"{fresh.get_params()} from {searcher.get_params()}"


SEARCHER_CHECKS: tuple[Callable[..., None], ...] = (
    check_searcher_registered, check_valid_plan, check_budget_respected, check_convergence_history,
    check_space_unmodified, check_seed_reproducible, check_memory_limit, check_accuracy_limit,
    check_impossible_conversions, check_no_feasible_plan_raises,
)


# ---------------------------------------------------------------- running them

def _run_checks(obj: Strategy | Searcher, kind: type, checks: Sequence[Callable[..., None]], *args: Any) -> None:
    """Run ``checks`` on ``obj`` (an instance of ``kind``) in order, any failure an ``AssertionError`` naming
    the check and the object."""
    if not isinstance(obj, kind):
        raise TypeError(f"the checks take a {kind.__name__} instance (as the registry hands out), got {obj!r}")
    for check in checks:
        try:
            check(obj, *args)
        except Exception as error:
            detail = error if isinstance(error, AssertionError) else f"{type(error).__name__}: {error}"
            what = f"{kind.__name__.lower()} {obj.name!r}"
            raise AssertionError(f"{check.__name__} failed for {what}: {detail}") from error


def check_strategy(strategy: Strategy, target: TargetLike | None = None) -> None:
    """Run every check of :data:`STRATEGY_CHECKS` on ``strategy``, in order.

    Parameters
    ----------
    strategy
        A registered strategy instance (``get_strategy(name)``).
    target
        A target whose code this machine runs (the kernels are run and compared); the host by default.

    Raises
    ------
    AssertionError
        At the first check that fails, naming the check and the strategy.
    """
    _run_checks(strategy, Strategy, STRATEGY_CHECKS, _target(target))


def check_searcher(searcher: Searcher) -> None:
    """Run every check of :data:`SEARCHER_CHECKS` on ``searcher``, in order.

    A searcher that by design does not look at some limit (as greedy ignores memory) declares it in a class
    attribute ``ignores``, a set among ``"memory"``, ``"accuracy"`` and ``"conversions"``: the checks then
    let it end without a plan that meets that limit (raising :class:`~tvm_dse.search.NoFeasiblePlan`), while
    a plan it does return must still meet it.

    Parameters
    ----------
    searcher
        An instance of a registered searcher class (``get_searcher(name)``).

    Raises
    ------
    AssertionError
        At the first check that fails, naming the check and the searcher.
    """
    _run_checks(searcher, Searcher, SEARCHER_CHECKS)


def _split(obj: Strategy | Searcher, check: Callable[..., None]) -> list[tuple[str, Callable[[Any], None]]]:
    """``check`` on ``obj`` as (id, check) pairs, one per case or space where it covers several, so each is
    a test of its own."""
    parameters = inspect.signature(check).parameters
    if "cases" in parameters:
        host = _target(None)
        # declining is part of conformance; the other checks of one case only run where the strategy applies
        cases = CASES if check is check_conformance else [c for c in CASES if obj.applies(c.workload, host)]
        return [(case.id, functools.partial(check, cases=(case,))) for case in cases]
    if "spaces" in parameters:
        return [(name, functools.partial(check, spaces=(name,))) for name in parameters["spaces"].default]
    return [("", check)]


def parametrize_with_checks(objects: Iterable[Strategy | Searcher]) -> "pytest.MarkDecorator":
    """A ``pytest.mark.parametrize`` over ``(obj, check)``: every check of every object (strategies on the
    host), one test per case or space where a check covers several.

    The decorated test takes ``obj`` and ``check`` and calls ``check(obj)``; ids read
    ``<name>-<check>[-<case or space>]``.

    Examples
    --------
    >>> @parametrize_with_checks([get_strategy("my_conv")])  # doctest: +SKIP
    ... def test_contract(obj, check):
    ...     check(obj)
    """
    import pytest  # only the tests that parametrize need pytest, not the package

    params = []
    for obj in objects:
        if isinstance(obj, Strategy):
            checks = STRATEGY_CHECKS
        elif isinstance(obj, Searcher):
            checks = SEARCHER_CHECKS
        else:
            raise TypeError(f"parametrize_with_checks takes Strategy and Searcher instances, got {obj!r}")
        for check in checks:
            for part, runnable in _split(obj, check):
                params.append(pytest.param(obj, runnable, id="-".join(filter(None, (obj.name, check.__name__, part)))))
    return pytest.mark.parametrize("obj, check", params)
