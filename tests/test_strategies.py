"""Every registered strategy against the contract checks (the conformance suite, decisions, epilogue fusion,
registry), plus the registry itself, the target matrix and the behaviours of particular strategies."""

import pytest

from tvm_dse.strategies import all_strategies, build_kernel, default_decisions, get_strategy
from tvm_dse.strategies.base import MIN_PARALLEL_TASKS, max_accumulators
from tvm_dse.strategies.spatial_pack import PixelTiling, default_ic_chunks, pixel_tiling
from tvm_dse.target import parse_target
from tvm_dse.quant.intrinsics import dot_intrinsic
from tvm_dse.testing import parametrize_with_checks, relative_error
from tvm_dse.testing.conformance import CASES, FP32_BOUND, random_operands, reference_output
from tvm_dse.testing.matrix import FAMILIES, HOST_FAMILY, family
from tvm_dse.workload import Workload

HOST = parse_target("host")
STRATEGIES = all_strategies()


@parametrize_with_checks(STRATEGIES)
def test_contract(obj, check):
    check(obj)


def test_unit_register_tiles_stay_correct():
    """A 1x1x1 register tile once made reverse_compute_at drop the tile loops and the epilogue vectorize
    the wrong loop (silently wrong output); every strategy with tile decisions must survive unit tiles."""
    case = next(c for c in CASES if c.id == "5x5_s1_nonsquare")
    operands = random_operands(case.workload, case.epilogue)
    reference = reference_output(**operands, workload=case.workload, epilogue=case.epilogue)
    unit = {"direct_nchw": {"k": [8, 1], "y": [11, 1], "x": [13, 1]},
            "direct_nhwc": {"k": [8, 1], "y": [11, 1], "x": [13, 1]}}
    for name, decisions in unit.items():
        built = build_kernel(name, case.workload, HOST, case.epilogue, decisions=decisions)
        assert relative_error(built.run(**operands), reference) <= FP32_BOUND, name


def test_a_decision_that_does_not_fit_is_refused():
    case = next(c for c in CASES if c.id == "3x3_s1_at28")
    with pytest.raises(ValueError, match=r"decision 'x'=\[5, 5\] does not split a loop of extent 28"):
        build_kernel("direct_nchw", case.workload, HOST, decisions={"x": [5, 5]})
    # the spatial pack computes whole register tiles (on AVX2 ten of 3 columns: 30, two cropped)
    width = pixel_tiling(case.workload, HOST, HOST.fp32_lanes).extent
    with pytest.raises(ValueError, match=rf"decision 'ow'=\[5, 5\] does not split a loop of extent {width}"):
        build_kernel("spatial_pack_nchwc", case.workload, HOST, decisions={"ow": [5, 5]})


def test_registry_contracts():
    """What the registry promises as a whole; what it promises of each strategy is a contract check."""
    names = [s.name for s in STRATEGIES]
    assert len(names) == len(set(names))
    with pytest.raises(KeyError, match="unknown strategy 'nope'.*direct_nchw"):
        get_strategy("nope")


def test_default_decisions_follow_the_target_family():
    case = next(c for c in CASES if c.id == "3x3_s1_at28")
    for target in ("rpi4", "llvm -mcpu=skylake-avx512", "llvm -mcpu=haswell"):
        parsed = parse_target(target)
        layouts = get_strategy("spatial_pack_nchwc").layouts(case.workload, parsed)
        assert layouts.output == f"NCHW{parsed.fp32_lanes}c"


def test_spatial_pack_tiling_follows_the_registers():
    """AVX2 (16 registers) takes 3 pixels x 4 channel blocks beyond 1x1 windows, rows padded to whole
    tiles, or the tiles along the flattened pixels where a padded row would waste over an eighth (clamped
    where the convolution is unpadded); channel blocks in fives but not fours take 2 x 5 tiles along the
    flattened pixels; 1x1 windows on wider rows and 32-register targets keep tiles that divide the output."""
    case = {c.id: c.workload for c in CASES}
    haswell, avx512 = parse_target("llvm -mcpu=haswell"), parse_target("llvm -mcpu=skylake-avx512")
    assert pixel_tiling(case["3x3_s1_at28"], haswell, 8) == PixelTiling(1, 3, 4, False, 30)
    assert pixel_tiling(case["3x3_s1_at7"], haswell, 8) == PixelTiling(1, 3, 4, True, 51)  # 49 pixels
    # an unpadded flat tiling reads the last pixel's input past the output (no padded copy of the input)
    assert pixel_tiling(case["1x1_s2_batch2"], haswell, 8).clamped
    assert not pixel_tiling(case["3x3_s1_at7"], haswell, 8).clamped
    chunked = case["1x1_s1_at7_chunked"]
    assert pixel_tiling(chunked, haswell, 8).clamped and default_ic_chunks(chunked, haswell, 8, 4, flat=True) == [4, 5]
    assert pixel_tiling(case["3x3_asym_pad_odd_channels"], haswell, 8) == PixelTiling(1, 2, 5, True, 50)
    for workload, target in ((case["1x1_s1_odd"], haswell), (case["3x3_s1_at28"], avx512)):
        tiling = pixel_tiling(workload, target, target.fp32_lanes)
        assert not tiling.flat and tiling.extent == workload.out_width
        assert workload.out_width % tiling.pixels == 0 and workload.out_height % tiling.rows == 0


def test_dense_default_accumulates_several_blocks_per_task():
    """A block of outputs accumulates over every input, one chain of dependent FMAs: with one block per task
    the classifiers of MobileNetV2 and ResNet-18 ran 1.4-1.6x slower. On every family the default gives a
    task several blocks, no more than its registers hold, and still leaves the cores enough tasks."""
    classifier = Workload.dense(1, 1280, 1000)
    for target_family in (*FAMILIES, HOST_FAMILY):
        target = target_family.dse_target
        tasks, per_task = default_decisions("dense_packed", classifier, target)["k_blocks"]
        assert 1 < per_task <= max_accumulators(target), target_family.name
        assert tasks >= MIN_PARALLEL_TASKS, target_family.name


def test_declining_names_the_reason():
    dense_case = next(c for c in CASES if c.workload.op == "dense")
    reason = get_strategy("direct_nchw").applies(dense_case.workload, HOST).reason
    assert "dense" in reason
    with pytest.raises(ValueError, match="does not apply"):
        build_kernel("direct_nchw", dense_case.workload, HOST)


# Each strategy on every family of the target matrix where it applies to a conformance case (int8 needs a
# dot product: AVX2's, VNNI's or sdot; fp16 F16C or fp16 arithmetic), the host's CPU among them.
FAMILY_PAIRS = [(s, f.name) for s in STRATEGIES for f in (*FAMILIES, HOST_FAMILY)
                if any(s.applies(c.workload, f.dse_target) for c in CASES)]


@pytest.mark.parametrize("strategy, family_name", FAMILY_PAIRS, ids=[f"{s.name}-{f}" for s, f in FAMILY_PAIRS])
def test_default_schedules_compile_for_every_target_family(strategy, family_name):
    """4, 8 and 16 lanes change the layouts and tiles; the schedules must still build."""
    parsed = family(family_name).dse_target
    case = next((c for c in CASES if strategy.applies(c.workload, parsed) and c.epilogue.bias), None)
    if case is None:
        case = next(c for c in CASES if strategy.applies(c.workload, parsed))
    built = build_kernel(strategy, case.workload, parsed, case.epilogue)
    assert built.decisions  # the defaults were chosen through the decider, so a plan can record them


def test_measure_strategy_on_the_host():
    from tvm_dse.strategies import measure_strategy

    case = next(c for c in CASES if c.id == "3x3_s1_at28")
    measurement = measure_strategy("spatial_pack_nchwc", case.workload, HOST, repeat=3)
    assert measurement.latency.repeats == 3 and measurement.latency.median_ms > 0
    assert measurement.gflops == pytest.approx(case.workload.flops / measurement.latency.median_ms / 1e6)
    assert measurement.decisions == build_kernel("spatial_pack_nchwc", case.workload, HOST).decisions


INT8_FAMILIES = [f.name for f in (*FAMILIES, HOST_FAMILY) if dot_intrinsic(f.dse_target) is not None]


@pytest.mark.parametrize("family_name", INT8_FAMILIES)
def test_int8_kernels_use_the_targets_dot_product(family_name):
    """LLVM forms none of these from a plain loop: the tensorized kernel must contain the instruction of the
    target's dot product (AVX2's vpmaddubsw and vpmaddwd, VNNI's vpdpbusd, Arm's sdot)."""
    target = family(family_name).dse_target
    case = next(c for c in CASES if c.id == "3x3_s1_at28")
    built = build_kernel("spatial_pack_nchwc_int8", case.workload, target, case.epilogue)
    assembly = built.kernel.mod.inspect_source("asm")
    for instruction in dot_intrinsic(target).instruction.split("+"):
        assert instruction in assembly, instruction


def test_int8_strategies_decline_targets_without_a_dot_product():
    case = next(c for c in CASES if c.id == "3x3_s1_at28")
    reason = get_strategy("spatial_pack_nchwc_int8").applies(case.workload, parse_target("rpi4")).reason
    assert "no int8 dot-product instruction" in reason
