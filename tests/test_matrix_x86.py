"""The target matrix on x86 (tvm_dse.testing.matrix): every matrix model under uniform, random and
reduced-precision plans, built for this machine's CPU and for each x86 family; run and compared with
onnxruntime where this machine runs the family's code, and the assembly checked against the family's facts
everywhere. The longer sweep (``-m sweep``) takes the zoo models on the host and the families, and the
awkward models' uniform plans on the families."""

import pytest

from tvm_dse.quant.intrinsics import dot_intrinsic
from tvm_dse.testing.matrix import (FAMILIES, HOST_FAMILY, MATRIX_MODELS, ZOO_MODELS, family, matrix_plans,
                                    plan_failures, plan_kinds)

X86_FAMILIES = [f for f in FAMILIES if f.dse_target.is_x86]


# the 16-lane concatenation of an 8-channel branch is checked under every plan kind by default
DEFAULT_UNIFORM = {"concat_8"}


def _sweeps(target_family, model, kind):
    """Whether a case is the sweep's: the zoo models everywhere (the host's optimize tests run zoo models
    by default), and the awkward models' uniform plans on the families but one."""
    if model in ZOO_MODELS:
        return True
    return target_family is not HOST_FAMILY and kind == "uniform" and model not in DEFAULT_UNIFORM


def _cases():
    for model in MATRIX_MODELS:
        for target_family in (HOST_FAMILY, *X86_FAMILIES):
            for kind in plan_kinds(target_family.precisions):
                marks = [pytest.mark.sweep] if _sweeps(target_family, model, kind) else []
                yield pytest.param(target_family.name, model, kind, marks=marks,
                                   id=f"{target_family.name}-{model}-{kind}")


@pytest.mark.parametrize("family_name, model_name, kind", list(_cases()))
def test_plans_build_for_the_family_and_match_onnxruntime_where_they_run(matrix_models, family_name, model_name,
                                                                          kind):
    target_family = family(family_name)
    model, graph = matrix_models(model_name)
    plans = matrix_plans(model, graph, target_family.dse_target, target_family.precisions, kinds=(kind,))
    assert plans
    run = (lambda built, name, feed: built.run(feed)) if target_family.runs_here else None
    failures = plan_failures(model, graph, target_family.dse_target, plans, run)
    assert not failures, "\n".join(failures)


def test_the_matrix_covers_every_lane_count_and_dot_product():
    """The families span 4, 8 and 16 fp32 lanes, every int8 dot product tvm_dse uses and fp16 arithmetic."""
    assert {f.dse_target.fp32_lanes for f in FAMILIES} == {4, 8, 16}
    assert {dot_intrinsic(f.dse_target).name for f in FAMILIES if dot_intrinsic(f.dse_target)} == \
        {"tvm_dse_dot_avx2", "tvm_dse_dot_vnni", "tvm_dse_dot_sdot"}
    assert any(f.dse_target.has_fp16 for f in FAMILIES)
