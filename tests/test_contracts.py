"""The shipped contract checks as a third party uses them: on a strategy and a searcher registered from
outside the package, and on broken ones they must reject, naming the check that failed."""

import pytest
from tvm import te

import tvm_dse.search as search
import tvm_dse.strategies.registry as strategy_registry
from tvm_dse.search import Searcher, get_searcher, register_searcher
from tvm_dse.strategies import get_strategy, register
from tvm_dse.strategies.dense import DensePacked
from tvm_dse.testing import check_searcher, check_strategy


class ThirdPartyDense(DensePacked):
    """A plug-in strategy: the packed dense layer under a name of its own (few cases apply, so it is quick)."""

    name = "third_party_dense"


class NegatedWeights(ThirdPartyDense):
    """A broken strategy: its weight transform flips every weight's sign."""

    name = "negated_weights_dense"

    def transform_weight(self, weight, workload, target):
        packed = super().transform_weight(weight, workload, target)
        return te.compute(packed.shape, lambda *i: -packed(*i), name="weight_negated")


class CoordinateDescent(Searcher):
    """A plug-in searcher: from every node's first option, try each node's other options in turn (in an order
    drawn from ``rng``), keeping a change when it lowers the cost."""

    name = "coordinate_descent_test"
    # it starts from one plan and never looks ahead, so a limit may leave it without any plan that meets it
    ignores = frozenset({"memory", "accuracy", "conversions"})

    def explore(self, space, evaluator, rng):
        plan = [0] * len(space.nodes)
        best = evaluator.evaluate(plan)
        for index in rng.permutation(len(space.nodes)):
            for option in range(1, len(space.nodes[index].options)):
                if evaluator.exhausted:
                    return {"complete": False}
                trial = plan.copy()
                trial[index] = option
                cost = evaluator.evaluate(trial)
                if cost < best:
                    plan, best = trial, cost
        return {"complete": True}


class OutOfRange(CoordinateDescent):
    """A broken searcher: its result names one option past every node's last."""

    name = "out_of_range_test"

    def search(self, space, *args, **kwargs):
        result = super().search(space, *args, **kwargs)
        result.assignment = [len(node.options) for node in space.nodes]
        return result


@pytest.fixture
def registries(monkeypatch):
    """Both registries as they are, restored after the test, so no plug-in registered in it outlives it."""
    monkeypatch.setattr(strategy_registry, "_REGISTRY", dict(strategy_registry._REGISTRY))
    monkeypatch.setattr(search, "_SEARCHERS", dict(search._SEARCHERS))
    monkeypatch.setattr(search, "_ALIASES", dict(search._ALIASES))


def test_a_third_party_strategy_passes_the_checks(registries):
    register(ThirdPartyDense)
    check_strategy(get_strategy("third_party_dense"))


def test_a_third_party_searcher_passes_the_checks(registries):
    register_searcher(CoordinateDescent)
    check_searcher(get_searcher("coordinate_descent_test"))


def test_a_broken_strategy_fails_the_check_it_breaks(registries):
    register(NegatedWeights)
    with pytest.raises(AssertionError, match=r"check_conformance failed for strategy 'negated_weights_dense': "
                                             r".*negated_weights_dense on dense_64_10: relative error"):
        check_strategy(get_strategy("negated_weights_dense"))


def test_a_broken_searcher_fails_the_check_it_breaks(registries):
    register_searcher(OutOfRange)
    with pytest.raises(AssertionError, match=r"check_valid_plan failed for searcher 'out_of_range_test': .*"
                                             r"is not a plan of the space"):
        check_searcher(get_searcher("out_of_range_test"))


def test_an_unregistered_plug_in_fails_the_registry_check():
    with pytest.raises(AssertionError, match="check_strategy_registered failed for strategy 'third_party_dense'"):
        check_strategy(ThirdPartyDense())
    with pytest.raises(AssertionError, match="check_searcher_registered failed for searcher 'coordinate_descent_test'"):
        check_searcher(CoordinateDescent())


def test_the_checks_take_instances_not_classes():
    with pytest.raises(TypeError, match="Strategy instance"):
        check_strategy(ThirdPartyDense)
    with pytest.raises(TypeError, match="Searcher instance"):
        check_searcher(CoordinateDescent)
