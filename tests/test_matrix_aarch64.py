"""The target matrix on aarch64 (tvm_dse.testing.matrix): the matrix models under uniform, random and
reduced-precision plans, cross-compiled for each aarch64 family, their assembly checked against the family's
facts, and run on the emulated board through the RPC tracker and compared with onnxruntime. The zoo models,
and the awkward models' uniform plans but one, are the longer sweep (``-m sweep``)."""

import pytest
from tvm import rpc

from tvm_dse.testing.matrix import FAMILIES, MATRIX_MODELS, ZOO_MODELS, family, matrix_plans, plan_failures, plan_kinds

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]

BOARD_FAMILIES = [f for f in FAMILIES if f.runs_on_board]
# the 4-lane concatenation of a 2- and a 6-channel branch is checked under every plan kind by default
DEFAULT_UNIFORM = {"concat_2_6"}


def _cases():
    """Every matrix model on the aarch64 families, one case per kind of plan; the sweep takes the zoo models
    and the awkward models' uniform plans but one."""
    for model in MATRIX_MODELS:
        for target_family in BOARD_FAMILIES:
            for kind in plan_kinds(target_family.precisions):
                sweep = model in ZOO_MODELS or (kind == "uniform" and model not in DEFAULT_UNIFORM)
                yield pytest.param(target_family.name, model, kind, marks=[pytest.mark.sweep] if sweep else [],
                                   id=f"{target_family.name}-{model}-{kind}")


@pytest.mark.parametrize("family_name, model_name, kind", list(_cases()))
def test_plans_cross_compiled_for_the_family_match_onnxruntime_on_the_board(emulated_boards, matrix_models, tmp_path,
                                                                            family_name, model_name, kind):
    target_family = family(family_name)
    model, graph = matrix_models(model_name)
    plans = matrix_plans(model, graph, target_family.dse_target, target_family.precisions, kinds=(kind,))
    assert plans
    session = rpc.connect_tracker("127.0.0.1", emulated_boards.tracker_port).request(emulated_boards.key,
                                                                                    session_timeout=600)
    names = {name: f"plan{index}.so" for index, name in enumerate(plans)}

    def run_on_the_board(built, name, feed):
        return built.upload(session, tmp_path, names[name]).run(feed)

    failures = plan_failures(model, graph, target_family.dse_target, plans, run_on_the_board)
    assert not failures, "\n".join(failures)
